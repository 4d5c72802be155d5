# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# shellcheck disable=SC2153 # P11T_WORK, P11T_CONF, ... come from tests/lib.sh
#
# tests/e2e/oop_lib.sh - helpers for the out-of-process tests (oop_*.sh):
# the SoftHSM token lives in a `p11-kit server` process, and p11ticket-server
# and the setup tool reach it through p11-kit's client module, so that no
# key byte is ever in their memory (docs/out-of-process.md).  Source it
# after tests/lib.sh:
#
#   . "$(dirname "$0")/../lib.sh"
#   . "$(dirname "$0")/oop_lib.sh"
#   oop_begin "scenario name"
#   oop_token_empty --set "refresh-interval = 1"  # token, p11-kit server, confs
#   oop_tool_ok create1 create                     # the tool through p11-kit
#   oop_server_start a -www                        # p11ticket-server, remote token
#   oop_assert_remote a                            # no SoftHSM in its memory map
#   p11t_reconnect "$(p11t_port a)" "$P11T_WORK/r.out" -tls1_2
#   p11t_pass
#
# Processes and environment:
#   - the p11-kit server runs in its own session and process group (setsid),
#     with the test's SOFTHSM2_CONF; it forks one p11-kit-remote (which loads
#     SoftHSM) per client connection into that group.  oop_p11kit_stop and
#     the EXIT trap end the whole group, and a watchdog ends it if the script
#     dies without its trap (a ctest timeout);
#   - everything else runs with SOFTHSM2_CONF naming a file that does not
#     exist (OOP_NO_SOFTHSM_CONF), so a process that loaded SoftHSM itself
#     would find no token, and with P11_KIT_SERVER_ADDRESS set to the test's
#     socket.  Only oop_init_token and oop_local_server_start (the in-process
#     SoftHSM server of the mixed scenarios) get the real SOFTHSM2_CONF;
#   - two configuration files: OOP_REMOTE_CONF (pkcs11-module = p11-kit's
#     client module; also P11T_CONF, so tests/lib.sh's helpers use it) and
#     OOP_LOCAL_CONF (pkcs11-module = SoftHSM), identical otherwise.

# Run directly (the valgrind loop of scripts/test.sh runs every e2e/*.sh):
# there is nothing to test here.
if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    echo "oop_lib.sh is sourced by tests/e2e/oop_*.sh; it runs no test itself"
    exit 0
fi

OOP_P11KIT=${P11T_P11KIT:-$(command -v p11-kit || true)}
OOP_CLIENT_MODULE=${P11T_P11KIT_CLIENT:-/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so}
P11T_MEMSCAN=${P11T_MEMSCAN:-$P11T_BUILD/bin/memscan}
OOP_SOFTHSM_CONF=
OOP_NO_SOFTHSM_CONF=
OOP_SOCKET=
OOP_ADDRESS=
OOP_P11KIT_PID=
OOP_P11KIT_RUNS=0
OOP_LOCAL_CONF=
OOP_REMOTE_CONF=
OOP_WATCHDOG=
declare -a OOP_BG_PIDS=()

# ---- set-up and clean-up ---------------------------------------------------

# oop_begin NAME: p11t_begin, the checks for p11-kit, the environment above.
oop_begin() {
    p11t_begin "$1"
    trap oop_exit EXIT
    [[ -n "$OOP_P11KIT" && -x "$OOP_P11KIT" ]] ||
        fail "p11-kit not found: the out-of-process tests need 'p11-kit server' (Debian: apt-get install p11-kit)"
    "$OOP_P11KIT" server --help >"$P11T_WORK/p11kit-help.txt" 2>&1 || true
    grep -q -- '--provider' "$P11T_WORK/p11kit-help.txt" ||
        fail "'$OOP_P11KIT server' is not available (p11-kit 0.23.x has no server; 0.24 or later needed)"
    [[ -f "$OOP_CLIENT_MODULE" ]] ||
        fail "p11-kit's client module $OOP_CLIENT_MODULE is missing (set P11T_P11KIT_CLIENT)"
    command -v setsid >/dev/null || fail "setsid not found (util-linux)"
    OOP_SOFTHSM_CONF=$SOFTHSM2_CONF
    OOP_NO_SOFTHSM_CONF=$P11T_WORK/no-softhsm2.conf
    export SOFTHSM2_CONF=$OOP_NO_SOFTHSM_CONF
    # A unix socket path must fit in sun_path (108 bytes).
    OOP_SOCKET=$P11T_WORK/p11kit.sock
    ((${#OOP_SOCKET} < 100)) || fail "socket path too long for AF_UNIX: $OOP_SOCKET (set TMPDIR shorter)"
    OOP_ADDRESS=unix:path=$OOP_SOCKET
    export P11_KIT_SERVER_ADDRESS=$OOP_ADDRESS
    oop_watchdog_start
}

# A process that ends the p11-kit server's process group (the server and its
# p11-kit-remote children) and the background helpers if this script dies
# without running its EXIT trap.  It reads process group ids and pids from
# WORK/oop-kill, one "group ID" or "pid ID" a line.
oop_watchdog_start() {
    : >"$P11T_WORK/oop-kill"
    local parent=$$ list=$P11T_WORK/oop-kill
    (
        trap '' INT TERM
        while kill -0 "$parent" 2>/dev/null; do
            sleep 1
        done
        if [[ -f "$list" ]]; then
            while read -r kind id; do
                case $kind in
                group) kill -KILL -- "-$id" 2>/dev/null || true ;;
                pid) kill -KILL "$id" 2>/dev/null || true ;;
                esac
            done <"$list"
        fi
    ) </dev/null >/dev/null 2>&1 &
    OOP_WATCHDOG=$!
}

# oop_bg_add PID: a background helper that oop_exit (and the watchdog) kill.
oop_bg_add() {
    OOP_BG_PIDS+=("$1")
    echo "pid $1" >>"$P11T_WORK/oop-kill"
}

# oop_bg_stop PID: end a background helper started by this script.
oop_bg_stop() {
    kill -TERM "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

oop_exit() {
    local rc=$? pid name
    set +e
    for pid in "${OOP_BG_PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null
        wait "$pid" 2>/dev/null
    done
    # The TLS servers first, so that their p11-kit-remote processes see
    # their connections close; p11t_cleanup would do it after us.
    for name in "${!P11T_PID[@]}"; do
        kill -KILL "${P11T_PID[$name]}" 2>/dev/null
        wait "${P11T_PID[$name]}" 2>/dev/null
    done
    if [[ -n "$OOP_P11KIT_PID" ]]; then
        if [[ $rc -ne 0 ]]; then
            echo "--- p11-kit server (group $OOP_P11KIT_PID):" >&2
            ps -o pid,ppid,stat,comm,args -g "$OOP_P11KIT_PID" >&2
            tail -n 20 "$P11T_WORK/p11kit.$OOP_P11KIT_RUNS.err" >&2
        fi
        kill -KILL -- "-$OOP_P11KIT_PID" 2>/dev/null
        wait "$OOP_P11KIT_PID" 2>/dev/null
    fi
    if [[ -n "$OOP_WATCHDOG" ]]; then
        # It ignores INT and TERM (so that it outlives a signal to the
        # whole process group and cleans up after us).
        kill -KILL "$OOP_WATCHDOG" 2>/dev/null
        wait "$OOP_WATCHDOG" 2>/dev/null
    fi
    # p11t_cleanup takes the test's status from $?.
    (exit "$rc")
    p11t_cleanup
}

# ---- the p11-kit server ------------------------------------------------------

# oop_p11kit_start: `p11-kit server -f` for the test token on WORK/p11kit.sock,
# in its own process group, with the real SOFTHSM2_CONF.  Waits for its
# P11_KIT_SERVER_ADDRESS line (and checks it, the PID line and the socket).
oop_p11kit_start() {
    [[ -z "$OOP_P11KIT_PID" ]] || fail "oop_p11kit_start: the p11-kit server is already running"
    OOP_P11KIT_RUNS=$((OOP_P11KIT_RUNS + 1))
    local out=$P11T_WORK/p11kit.$OOP_P11KIT_RUNS.out err=$P11T_WORK/p11kit.$OOP_P11KIT_RUNS.err
    : >"$out"
    rm -f "$OOP_SOCKET"
    SOFTHSM2_CONF=$OOP_SOFTHSM_CONF setsid "$OOP_P11KIT" server -f \
        --provider "$P11T_PKCS11_MODULE" -n "$OOP_SOCKET" \
        "pkcs11:token=$P11T_TOKEN_LABEL" >"$out" 2>"$err" </dev/null &
    local pid=$!
    OOP_P11KIT_PID=$pid
    echo "group $pid" >>"$P11T_WORK/oop-kill"
    local deadline=$((SECONDS + 10 * P11T_WAIT_SCALE)) line
    while :; do
        line=$(grep -m1 -E '^P11_KIT_SERVER_ADDRESS=' "$out" 2>/dev/null) || true
        [[ -n "$line" ]] && break
        if ! kill -0 "$pid" 2>/dev/null; then
            local rc=0
            wait "$pid" || rc=$?
            OOP_P11KIT_PID=
            cat "$err" >&2
            fail "p11-kit server exited with status $rc before printing its address"
        fi
        ((SECONDS < deadline)) || fail "p11-kit server printed no address within $((10 * P11T_WAIT_SCALE)) s"
        sleep 0.05
    done
    [[ "$line" == "P11_KIT_SERVER_ADDRESS=$OOP_ADDRESS; export P11_KIT_SERVER_ADDRESS;" ]] ||
        fail "p11-kit server: unexpected address line '$line' (expected $OOP_ADDRESS)"
    # With -f it does not fork: the PID it prints is the one we started
    # (setsid execs in place), so the process group is ours.
    local spid
    spid=$(sed -nE 's/^P11_KIT_SERVER_PID=([0-9]+);.*/\1/p' "$out")
    [[ -z "$spid" || "$spid" == "$pid" ]] ||
        fail "p11-kit server reports pid $spid, we started $pid"
    [[ "$(ps -o pgid= -p "$pid" | tr -d ' ')" == "$pid" ]] ||
        fail "p11-kit server $pid is not the leader of its own process group"
    [[ -S "$OOP_SOCKET" ]] || fail "p11-kit server: no socket at $OOP_SOCKET"
    note "p11-kit server: pid $pid, $OOP_ADDRESS (socket mode $(stat -c %A "$OOP_SOCKET"))"
}

# oop_p11kit_stop: SIGTERM to the server's process group (the server and
# every p11-kit-remote, as systemd stops a service); all must be gone
# within 5 s.  Connected clients lose the token.
oop_p11kit_stop() {
    local pid=${OOP_P11KIT_PID:?no p11-kit server} i
    kill -0 "$pid" 2>/dev/null || fail "the p11-kit server (pid $pid) had already exited"
    kill -TERM -- "-$pid" 2>/dev/null || true
    for ((i = 0; i < 100 * P11T_WAIT_SCALE; i++)); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 -- "-$pid" 2>/dev/null; then
        ps -o pid,stat,comm -g "$pid" >&2
        kill -KILL -- "-$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        OOP_P11KIT_PID=
        fail "the p11-kit server's process group ignored SIGTERM for $((5 * P11T_WAIT_SCALE)) s"
    fi
    wait "$pid" 2>/dev/null || true
    OOP_P11KIT_PID=
    note "p11-kit server stopped (process group $pid gone)"
}

# oop_remotes: pids of the p11-kit server's p11-kit-remote children.
oop_remotes() {
    local pid=${OOP_P11KIT_PID:?no p11-kit server}
    { ps -o pid=,comm= --ppid "$pid" || true; } | awk '$2 == "p11-kit-remote" { print $1 }'
}

# ---- token and configuration -------------------------------------------------

# oop_token_empty [p11t_write_conf options]: the user PIN (0600), both
# configuration files, the token initialised in process (p11-kit forwards
# no C_InitToken for a token it does not serve yet), then the p11-kit
# server.  P11T_CONF is the remote configuration.
# shellcheck disable=SC2120 # the options are optional
oop_token_empty() {
    (umask 077 && p11t_random_pin >"$P11T_WORK/pin")
    chmod 0600 "$P11T_WORK/pin"
    OOP_LOCAL_CONF=$P11T_WORK/local.cnf
    OOP_REMOTE_CONF=$P11T_WORK/remote.cnf
    p11t_write_conf "$OOP_LOCAL_CONF" "$@" --pkcs11-module "$P11T_PKCS11_MODULE"
    p11t_write_conf "$OOP_REMOTE_CONF" "$@" --pkcs11-module "$OOP_CLIENT_MODULE"
    grep -qx "pkcs11-module = $OOP_CLIENT_MODULE" "$OOP_REMOTE_CONF" ||
        fail "remote.cnf does not name p11-kit's client module"
    SOFTHSM2_CONF=$OOP_SOFTHSM_CONF p11t_init_token "$OOP_LOCAL_CONF"
    # tests/lib.sh's helpers (p11t_gens_load, p11t_key_names) read it.
    # shellcheck disable=SC2034
    P11T_CONF=$OOP_REMOTE_CONF
    oop_p11kit_start
}

# oop_tool_ok / oop_tool_rc NAME [args]: the setup tool through p11-kit
# (p11t_tool_ok / p11t_tool_rc with the remote configuration).
oop_tool_ok() { P11T_CONF=$OOP_REMOTE_CONF p11t_tool_ok "$@"; }
oop_tool_rc() { P11T_CONF=$OOP_REMOTE_CONF p11t_tool_rc "$@"; }

# oop_tool_libs NAME [args]: run the tool through p11-kit with the dynamic
# loader's log (LD_DEBUG=files) and check what it loaded: p11-kit's client
# module, never SoftHSM.  Not under valgrind (its loader logs nothing).
oop_tool_libs() {
    local name=$1
    shift
    rm -f "$P11T_WORK/$name.ld".*
    LD_DEBUG=files LD_DEBUG_OUTPUT=$P11T_WORK/$name.ld \
        "$P11T_TOOL_BIN" --config "$OOP_REMOTE_CONF" "$@" >"$P11T_WORK/$name.out" \
        2>"$P11T_WORK/$name.tool" </dev/null ||
        fail "p11ticket $* through p11-kit failed: $(cat "$P11T_WORK/$name.tool")"
    cat "$P11T_WORK/$name.ld".* >"$P11T_WORK/$name.ldlog" 2>/dev/null ||
        fail "the loader wrote no log for p11ticket $*"
    assert_grep "$P11T_WORK/$name.ldlog" "calling init: $OOP_CLIENT_MODULE\$" \
        "p11ticket $* loaded p11-kit's client module"
    assert_no_grep "$P11T_WORK/$name.ldlog" 'libsofthsm2' "p11ticket $* never loaded SoftHSM"
}

# ---- servers -------------------------------------------------------------------

# oop_server_start NAME [server args...]: p11ticket-server with the remote
# configuration (SOFTHSM2_CONF points nowhere).
oop_server_start() {
    local name=$1
    shift
    p11t_server_start "$name" --conf "$OOP_REMOTE_CONF" "$@"
}

# oop_local_server_start NAME [server args...]: p11ticket-server with
# SoftHSM in process, on the same token directory (no p11-kit involved).
oop_local_server_start() {
    local name=$1
    shift
    SOFTHSM2_CONF=$OOP_SOFTHSM_CONF P11_KIT_SERVER_ADDRESS='' \
        p11t_server_start "$name" --conf "$OOP_LOCAL_CONF" "$@"
}

# oop_assert_remote NAME: the server's memory map holds p11-kit's client
# module (so it has reached the token) and no SoftHSM.
oop_assert_remote() {
    local pid
    pid=$(p11t_pid "$1")
    cp "/proc/$pid/maps" "$P11T_WORK/$1.maps" || fail "cannot read /proc/$pid/maps of $1"
    assert_grep "$P11T_WORK/$1.maps" " $OOP_CLIENT_MODULE\$" "$1 (pid $pid) maps p11-kit-client.so"
    assert_no_grep "$P11T_WORK/$1.maps" 'libsofthsm2' "$1 (pid $pid) has no SoftHSM in its memory map"
}

# oop_assert_local NAME: the in-process server maps SoftHSM, not p11-kit's
# client (so the mixed scenarios really mix).
oop_assert_local() {
    local pid
    pid=$(p11t_pid "$1")
    cp "/proc/$pid/maps" "$P11T_WORK/$1.maps" || fail "cannot read /proc/$pid/maps of $1"
    assert_grep "$P11T_WORK/$1.maps" "libsofthsm2\.so\$" "$1 (pid $pid) has SoftHSM in process"
    assert_no_grep "$P11T_WORK/$1.maps" 'p11-kit-client' "$1 (pid $pid) does not use p11-kit's client"
}

# oop_current_key: the current generation's name (from list --json).
oop_current_key() {
    p11t_gens_load
    p11t_gens_current
}

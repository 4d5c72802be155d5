# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
#
# tests/lib.sh - helpers for the p11ticket end-to-end tests.
#
# Source it from a test script:
#
#   . "$(dirname "$0")/../lib.sh"
#   p11t_begin "scenario name"
#   p11t_token                      # token + pin file + openssl.cnf + key
#   p11t_server_start a -www        # background server, waits for ACCEPT
#   p11t_sclient "$(p11t_port a)" out.txt -tls1_3 -sess_out s.pem
#   assert_eq New "$(p11t_result out.txt)" "first connection"
#   p11t_server_stop a
#   p11t_pass
#
# Environment:
#   P11T_BUILD          build directory (bin/ and lib/ below it); required
#   P11T_TICKET_CLIENT  the ticket_client binary (default BUILD/bin/ticket_client)
#   P11T_PKCS11_MODULE  SoftHSM module (default /usr/lib/softhsm/libsofthsm2.so)
#   P11T_KEEP=1         keep the work directory after the test
#   P11T_VALGRIND=1     run p11ticket-server and p11ticket under valgrind
#
# Every test gets its own work directory, SoftHSM configuration and token.
# The openssl CLI (the client side) always runs with OPENSSL_CONF=/dev/null
# so it never loads the provider; only the server and the tool do.
# Tests talk to 127.0.0.1 only.

set -euo pipefail

P11T_LIB_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

if [[ -z "${P11T_BUILD:-}" ]]; then
    echo "FAIL: P11T_BUILD is not set (the cmake build directory)" >&2
    exit 1
fi
P11T_BUILD=$(cd "$P11T_BUILD" && pwd)
P11T_SERVER_BIN=$P11T_BUILD/bin/p11ticket-server
P11T_TOOL_BIN=$P11T_BUILD/bin/p11ticket
P11T_PROVIDER_SO=$P11T_BUILD/lib/p11ticket.so
P11T_TICKET_CLIENT=${P11T_TICKET_CLIENT:-$P11T_BUILD/bin/ticket_client}
P11T_PKCS11_MODULE=${P11T_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
P11T_TEMPLATE=$P11T_LIB_DIR/conf/openssl.cnf.in
P11T_TOKEN_LABEL=tickets

# Valgrind makes start-up about 20x slower.
P11T_WAIT_SCALE=1
P11T_WRAP=()
if [[ "${P11T_VALGRIND:-0}" == 1 ]]; then
    P11T_WAIT_SCALE=10
    P11T_WRAP=(valgrind -q --error-exitcode=99 --leak-check=full
        --errors-for-leak-kinds=definite --track-origins=yes)
fi

P11T_TEST_NAME=
P11T_WORK=
P11T_CONF=
P11T_FAILED=0
declare -A P11T_PID=() P11T_PORT=()

# ---- messages and assertions ---------------------------------------------

info() { printf '== %s\n' "$*"; }
note() { printf '   %s\n' "$*"; }

# Print a failure message, dump the logs, and stop the test with status 1.
fail() {
    P11T_FAILED=1
    printf 'FAIL: %s: %s\n' "${P11T_TEST_NAME:-test}" "$*" >&2
    printf 'FAIL: %s\n' "${P11T_TEST_NAME:-test}"
    exit 1
}

# Long values (tickets) are shown abbreviated.
short() {
    local v=$1
    ((${#v} > 72)) && v="${v:0:64}...(${#1} chars)"
    printf '%s' "$v"
}

assert_eq() { # expected actual what
    [[ "$1" == "$2" ]] || fail "$3: expected '$(short "$1")', got '$(short "$2")'"
    note "ok: $3 = '$(short "$2")'"
}

assert_ne() { # unexpected actual what
    [[ "$1" != "$2" ]] || fail "$3: did not expect '$(short "$2")'"
    note "ok: $3 != '$(short "$1")'"
}

assert_ge() { # min actual what
    [[ "$2" =~ ^[0-9]+$ ]] || fail "$3: '$2' is not a number"
    (($2 >= $1)) || fail "$3: expected at least $1, got $2"
    note "ok: $3 = $2 (>= $1)"
}

# assert_grep FILE ERE what: FILE must contain a line matching ERE.
assert_grep() {
    grep -Eq -- "$2" "$1" || {
        echo "--- $1:" >&2
        tail -n 40 "$1" >&2 || true
        fail "$3: no line matches /$2/ in $(basename "$1")"
    }
    note "ok: $3"
}

# assert_no_grep FILE ERE what: no line of FILE may match ERE.
assert_no_grep() {
    if grep -Eq -- "$2" "$1"; then
        echo "--- matching lines of $1:" >&2
        grep -E -- "$2" "$1" | head -n 10 >&2
        fail "$3: unexpected /$2/ in $(basename "$1")"
    fi
    note "ok: $3"
}

# Number of lines of FILE matching ERE (0 if none or no file).
count_lines() {
    local n
    n=$(grep -Ec -- "$2" "$1" 2>/dev/null) || true
    echo "${n:-0}"
}

# ---- work directory and clean-up ------------------------------------------

p11t_cleanup() {
    local rc=$? name
    for name in "${!P11T_PID[@]}"; do
        if kill -0 "${P11T_PID[$name]}" 2>/dev/null; then
            kill -KILL "${P11T_PID[$name]}" 2>/dev/null || true
            wait "${P11T_PID[$name]}" 2>/dev/null || true
        fi
    done
    if [[ $rc -ne 0 || $P11T_FAILED -ne 0 ]] && [[ -n "$P11T_WORK" ]]; then
        local f
        for f in "$P11T_WORK"/*.err "$P11T_WORK"/*.tool; do
            [[ -s "$f" ]] || continue
            echo "--- last lines of $(basename "$f"):" >&2
            tail -n 25 "$f" >&2
        done
    fi
    if [[ -n "$P11T_WORK" && -d "$P11T_WORK" ]]; then
        if [[ "${P11T_KEEP:-0}" == 1 ]]; then
            echo "work directory kept: $P11T_WORK" >&2
        else
            rm -rf "$P11T_WORK"
        fi
    fi
    return "$rc"
}

# p11t_begin NAME: create the work directory and check the binaries.
p11t_begin() {
    P11T_TEST_NAME=$1
    P11T_WORK=$(mktemp -d "${TMPDIR:-/tmp}/p11t-e2e.XXXXXX")
    trap p11t_cleanup EXIT
    trap 'exit 130' INT TERM
    umask 077
    info "$P11T_TEST_NAME (work dir $P11T_WORK)"
    local b
    for b in "$P11T_SERVER_BIN" "$P11T_TOOL_BIN"; do
        [[ -x "$b" ]] || fail "missing binary $b (build first)"
    done
    [[ -f "$P11T_PROVIDER_SO" ]] || fail "missing provider $P11T_PROVIDER_SO"
    [[ -f "$P11T_PKCS11_MODULE" ]] || fail "missing SoftHSM module $P11T_PKCS11_MODULE"
    command -v openssl >/dev/null || fail "openssl CLI not found"
    # The SoftHSM configuration of this test; the server and tool inherit it.
    mkdir -p "$P11T_WORK/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
        "$P11T_WORK/tokens" >"$P11T_WORK/softhsm2.conf"
    export SOFTHSM2_CONF=$P11T_WORK/softhsm2.conf
    # Never let a system-wide configuration leak into a test.
    unset OPENSSL_CONF OPENSSL_MODULES
}

p11t_pass() {
    printf 'PASS: %s\n' "$P11T_TEST_NAME"
    exit 0
}

# ---- random secrets --------------------------------------------------------

p11t_random_pin() {
    # 16 hex digits from the kernel; never printed.
    od -An -N8 -tx1 /dev/urandom | tr -d ' \n'
}

# ---- openssl.cnf ------------------------------------------------------------

# p11t_write_conf OUT [options]
#   --routing            alg_section with default_properties = ?p11ticket.token=yes
#   --swap               list p11ticket before default in [provider_sect]
#   --token-uri V        (default pkcs11:token=tickets)
#   --pkcs11-module V    (default the SoftHSM module)
#   --pin-source V       (default file:WORK/pin)
#   --set 'key = value'  an extra line in [p11ticket_sect] (repeatable)
# An empty value drops the key's line altogether.
p11t_write_conf() {
    local out=$1
    shift
    local routing=0 swap=0 extra=""
    local token_uri="pkcs11:token=$P11T_TOKEN_LABEL"
    local module=$P11T_PKCS11_MODULE
    local pin_source="file:$P11T_WORK/pin"
    while (($#)); do
        case $1 in
        --routing) routing=1 ;;
        --swap) swap=1 ;;
        --token-uri) token_uri=$2; shift ;;
        --pkcs11-module) module=$2; shift ;;
        --pin-source) pin_source=$2; shift ;;
        --set) extra+="$2"$'\n'; shift ;;
        *) fail "p11t_write_conf: unknown option $1" ;;
        esac
        shift
    done
    local providers=$'default = default_sect\np11ticket = p11ticket_sect'
    ((swap)) && providers=$'p11ticket = p11ticket_sect\ndefault = default_sect'
    local alg_ref="" alg_sect=""
    if ((routing)); then
        alg_ref="alg_section = algs"
        alg_sect=$'[algs]\ndefault_properties = ?p11ticket.token=yes'
    fi
    local t
    # Comment lines go first: they mention the placeholders too.
    t=$(grep -v '^#' "$P11T_TEMPLATE")
    t=${t//@ALG_SECTION_REF@/$alg_ref}
    t=${t//@PROVIDERS@/$providers}
    t=${t//@PROVIDER_MODULE@/$P11T_PROVIDER_SO}
    t=${t//@PKCS11_MODULE@/$module}
    t=${t//@TOKEN_URI@/$token_uri}
    t=${t//@PIN_SOURCE@/$pin_source}
    t=${t//@EXTRA@/$extra}
    t=${t//@ALG_SECTION@/$alg_sect}
    # Drop keys whose value was left empty.
    printf '%s\n' "$t" | grep -Ev '^[A-Za-z0-9_-]+ = $' >"$out"
}

# ---- token and keys -----------------------------------------------------------

# The setup tool (under valgrind with P11T_VALGRIND=1); pass --config yourself.
p11t_tool() {
    "${P11T_WRAP[@]}" "$P11T_TOOL_BIN" "$@"
}

# p11t_token [conf options]: user PIN file (0600), openssl.cnf in
# WORK/openssl.cnf, a token initialised by the setup tool, one key generation.
# Sets P11T_CONF.
# shellcheck disable=SC2120 # the options are optional
p11t_token() {
    p11t_token_empty "$@"
    p11t_create_key "$P11T_CONF"
}

# p11t_token_empty [conf options]: like p11t_token, but no key generation
# (the lifecycle scenarios).
# shellcheck disable=SC2120 # the options are optional
p11t_token_empty() {
    P11T_CONF=$P11T_WORK/openssl.cnf
    (umask 077 && p11t_random_pin >"$P11T_WORK/pin")
    chmod 0600 "$P11T_WORK/pin"
    p11t_write_conf "$P11T_CONF" "$@"
    p11t_init_token "$P11T_CONF"
}

# p11t_init_token CONF: initialise the SoftHSM token through the setup tool.
# The SO PIN travels in the environment, never on a command line; the user
# PIN comes from the configuration's pin-source.
p11t_init_token() {
    local conf=$1 so_pin
    so_pin=$(p11t_random_pin)
    if ! P11T_TEST_SO_PIN=$so_pin p11t_tool --config "$conf" init-token \
        --label "$P11T_TOKEN_LABEL" --so-pin-source env:P11T_TEST_SO_PIN \
        >"$P11T_WORK/init-token.tool" 2>&1; then
        cat "$P11T_WORK/init-token.tool" >&2
        fail "p11ticket init-token failed"
    fi
    note "token '$P11T_TOKEN_LABEL' initialised by p11ticket init-token"
}

# p11t_create_key [CONF]: provision one key generation.
p11t_create_key() {
    local conf=${1:-$P11T_CONF} log
    log=$P11T_WORK/create.$RANDOM.tool
    if ! p11t_tool --config "$conf" create >"$log.out" 2>"$log"; then
        cat "$log.out" "$log" >&2
        fail "p11ticket create failed"
    fi
    note "key generation created: $(tr '\n' ' ' <"$log.out")"
}

# Lowercase hex names of every key generation `p11ticket list` shows, one a
# line, sorted and unique.
p11t_key_names() {
    local out
    out=$(p11t_tool --config "$P11T_CONF" list 2>"$P11T_WORK/list.tool") ||
        fail "p11ticket list failed: $(cat "$P11T_WORK/list.tool")"
    printf '%s\n' "$out" | tr 'A-F' 'a-f' | grep -oE '\b[0-9a-f]{32}\b' | sort -u || true
}

# ---- certificate ------------------------------------------------------------

# p11t_cert: WORK/cert.pem + WORK/key.pem, a self-signed P-256 certificate.
p11t_cert() {
    [[ -f "$P11T_WORK/cert.pem" ]] && return 0
    OPENSSL_CONF=/dev/null openssl req -x509 -newkey ec \
        -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=localhost \
        -keyout "$P11T_WORK/key.pem" -out "$P11T_WORK/cert.pem" \
        >"$P11T_WORK/cert.log" 2>&1 || {
        cat "$P11T_WORK/cert.log" >&2
        fail "cannot create a test certificate"
    }
}

# ---- servers ----------------------------------------------------------------

# p11t_proc_start [--wrap] [--label TEXT] NAME CONF BINARY [args...]: start
# a server binary that takes "-accept HOST:PORT -cert FILE -key FILE" and
# prints "ACCEPT 127.0.0.1:PORT", with OPENSSL_CONF=CONF; wait for that line
# and record PID and port in P11T_PID/P11T_PORT (so p11t_port, p11t_pid,
# p11t_server_alive and p11t_server_stop work on it).  Logs: WORK/NAME.out
# (stdout), WORK/NAME.err.  --wrap runs BINARY under P11T_WRAP (valgrind
# with P11T_VALGRIND=1); --label names it in messages (default the
# binary's base name).  p11t_server_start is this for p11ticket-server.
p11t_proc_start() {
    local wrap=() label=
    while :; do
        case ${1:-} in
        --wrap) wrap=("${P11T_WRAP[@]}"); shift ;;
        --label) label=$2; shift 2 ;;
        *) break ;;
        esac
    done
    local name=$1 conf=$2 bin=$3
    shift 3
    label=${label:-$(basename "$bin")}
    p11t_cert
    local out=$P11T_WORK/$name.out err=$P11T_WORK/$name.err
    : >"$out"
    : >"$err"
    OPENSSL_CONF=$conf "${wrap[@]}" "$bin" -accept 127.0.0.1:0 \
        -cert "$P11T_WORK/cert.pem" -key "$P11T_WORK/key.pem" "$@" \
        >"$out" 2>"$err" </dev/null &
    local pid=$!
    P11T_PID[$name]=$pid
    local deadline=$((SECONDS + 20 * P11T_WAIT_SCALE)) line
    while :; do
        line=$(grep -m1 -E '^ACCEPT ' "$out" 2>/dev/null) || true
        [[ -n "$line" ]] && break
        if ! kill -0 "$pid" 2>/dev/null; then
            local rc=0
            wait "$pid" || rc=$?
            unset "P11T_PID[$name]"
            echo "--- $name stderr:" >&2
            tail -n 40 "$err" >&2
            fail "$label $name exited with status $rc before printing ACCEPT"
        fi
        if ((SECONDS >= deadline)); then
            echo "--- $name stderr:" >&2
            tail -n 40 "$err" >&2
            fail "$label $name printed no ACCEPT line within $((20 * P11T_WAIT_SCALE)) s"
        fi
        sleep 0.05
    done
    [[ "$line" =~ ^ACCEPT\ 127\.0\.0\.1:([0-9]+)$ ]] ||
        fail "$label $name: malformed ACCEPT line '$line'"
    P11T_PORT[$name]=${BASH_REMATCH[1]}
    note "$label $name: pid $pid, port ${P11T_PORT[$name]} ($*)"
}

# p11t_server_start NAME [--conf FILE] [server args...]
# Starts p11ticket-server on 127.0.0.1:0 with OPENSSL_CONF=FILE (default the
# test's openssl.cnf), waits for its "ACCEPT 127.0.0.1:PORT" line, and
# records PID and port.  Logs: WORK/NAME.out (stdout), WORK/NAME.err.
p11t_server_start() {
    local name=$1 conf=$P11T_CONF
    shift
    if [[ "${1:-}" == --conf ]]; then
        conf=$2
        shift 2
    fi
    p11t_proc_start --wrap --label server "$name" "$conf" "$P11T_SERVER_BIN" "$@"
}

p11t_port() { echo "${P11T_PORT[$1]:?no server $1}"; }
p11t_pid() { echo "${P11T_PID[$1]:?no server $1}"; }

# p11t_server_alive NAME: fail unless the server process is still running.
p11t_server_alive() {
    local pid=${P11T_PID[$1]:-}
    if [[ -z "$pid" ]] || ! kill -0 "$pid" 2>/dev/null; then
        fail "server $1 is no longer running (crashed?)"
    fi
    note "ok: server $1 still running"
}

# p11t_server_stop NAME: SIGTERM, then the exit status must be 0.
p11t_server_stop() {
    local name=$1 pid rc=0 i
    pid=${P11T_PID[$name]:?no server $name}
    kill -0 "$pid" 2>/dev/null || {
        wait "$pid" || rc=$?
        unset "P11T_PID[$name]"
        fail "server $name had already exited (status $rc) before SIGTERM"
    }
    kill -TERM "$pid"
    for ((i = 0; i < 200 * P11T_WAIT_SCALE; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 "$pid" 2>/dev/null; then
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        unset "P11T_PID[$name]"
        fail "server $name ignored SIGTERM for $((10 * P11T_WAIT_SCALE)) s"
    fi
    wait "$pid" || rc=$?
    unset "P11T_PID[$name]"
    [[ $rc -eq 0 ]] || fail "server $name exited with status $rc after SIGTERM (expected 0)"
    note "ok: server $name stopped cleanly (exit 0)"
}

# Count the server's "conn N: ... New|Reused" log lines of a kind.
p11t_server_count() { # NAME New|Reused
    count_lines "$P11T_WORK/$1.err" "^conn [0-9]+: .* $2\$"
}

# ---- clients ------------------------------------------------------------------

# p11t_sclient PORT OUT [s_client args...]
# One connection to a -www server: sends a request and reads the answer
# until the server closes, so TLS 1.3 tickets (sent after the handshake)
# are received before s_client exits.
p11t_sclient() {
    local port=$1 out=$2
    shift 2
    printf 'GET / HTTP/1.0\r\n\r\n' |
        OPENSSL_CONF=/dev/null timeout 20 openssl s_client \
            -connect "127.0.0.1:$port" -ign_eof "$@" >"$out" 2>&1 || {
        local rc=$?
        echo "--- s_client output:" >&2
        tail -n 30 "$out" >&2
        fail "openssl s_client $* exited with status $rc"
    }
}

# p11t_reconnect PORT OUT [s_client args...]: s_client -reconnect (one full
# handshake then five resumptions of the same session); stdin is /dev/null.
p11t_reconnect() {
    local port=$1 out=$2
    shift 2
    OPENSSL_CONF=/dev/null timeout 20 openssl s_client \
        -connect "127.0.0.1:$port" -reconnect "$@" </dev/null >"$out" 2>&1 || {
        local rc=$?
        echo "--- s_client output:" >&2
        tail -n 30 "$out" >&2
        fail "openssl s_client -reconnect $* exited with status $rc"
    }
}

# "New" or "Reused": the first handshake result s_client printed.
p11t_result() {
    grep -m1 -oE '^(New|Reused), ' "$1" | tr -d ', ' || true
}

# All handshake results of an s_client -reconnect run, space separated.
p11t_results() {
    grep -oE '^(New|Reused), ' "$1" | tr -d ', ' | tr '\n' ' ' | sed 's/ $//' || true
}

# p11t_ticket_hex SESSION.pem: the session's ticket as lowercase hex, or
# nothing when the session carries no ticket ("NO-SESSION-FILE" when the
# file is missing, so that a test never passes on an absent session).
p11t_ticket_hex() {
    [[ -s "$1" ]] || { echo NO-SESSION-FILE; return 0; }
    OPENSSL_CONF=/dev/null openssl sess_id -in "$1" -noout -text 2>/dev/null |
        awk '/TLS session ticket:/ { on = 1; next }
             on && /^ *[0-9a-f][0-9a-f][0-9a-f][0-9a-f] - / {
                 sub(/^ *[0-9a-f][0-9a-f][0-9a-f][0-9a-f] - /, "")
                 print substr($0, 1, 47)
                 next
             }
             on { exit }' |
        tr -d ' \n-' | tr 'A-F' 'a-f'
}

# p11t_ticket_client [args...]: the C client (tests/e2e/ticket_client.c).
p11t_ticket_client() {
    [[ -x "$P11T_TICKET_CLIENT" ]] || fail "missing $P11T_TICKET_CLIENT"
    OPENSSL_CONF=/dev/null timeout 60 "$P11T_TICKET_CLIENT" "$@"
}

# p11t_expect_full_handshake PORT what: a fresh TLS 1.3 and TLS 1.2
# connection must both complete.
p11t_expect_handshakes() {
    local port=$1 what=$2 v
    for v in -tls1_3 -tls1_2; do
        p11t_sclient "$port" "$P11T_WORK/hs.out" "$v"
        assert_eq New "$(p11t_result "$P11T_WORK/hs.out")" "$what: fresh $v handshake"
    done
}

# p11t_assert_token_ticket TICKET_HEX what: the ticket's first 16 bytes must
# be the name of a key generation that `p11ticket list` shows.
p11t_assert_token_ticket() {
    local hex=$1 what=$2 names
    [[ ${#hex} -ge 64 ]] || fail "$what: no ticket or a ticket shorter than 32 bytes ('$hex')"
    names=$(p11t_key_names)
    [[ -n "$names" ]] || fail "$what: p11ticket list shows no key"
    grep -qx -- "${hex:0:32}" <<<"$names" ||
        fail "$what: ticket key name ${hex:0:32} is not on the token (list: ${names//$'\n'/ })"
    note "ok: $what: ticket key name ${hex:0:32} is a token key"
}

# ---- key lifecycle (lifecycle_*.sh) ------------------------------------------
#
# Helpers for the lifecycle scenarios: tokens without keys, the setup tool's
# exit status and output, `list --json` parsed into a table, waiting for a
# key's time window to pass, and a second kind of server (the plain OpenSSL
# server of tests/e2e/plain_ticket_server.c).

P11T_PLAIN_SERVER=${P11T_PLAIN_SERVER:-$P11T_BUILD/bin/plain_ticket_server}

# p11t_tool_rc NAME [tool args...]: run `p11ticket --config P11T_CONF ARGS`
# with stdout in WORK/NAME.out and stderr in WORK/NAME.tool; never fails.
# Sets P11T_RC to the exit status.
P11T_RC=0
p11t_tool_rc() {
    local name=$1
    shift
    P11T_RC=0
    p11t_tool --config "$P11T_CONF" "$@" >"$P11T_WORK/$name.out" \
        2>"$P11T_WORK/$name.tool" </dev/null || P11T_RC=$?
}

# p11t_tool_ok NAME [tool args...]: like p11t_tool_rc, but the command must
# exit 0; its standard output is shown.
p11t_tool_ok() {
    local name=$1
    shift
    p11t_tool_rc "$name" "$@"
    if [[ $P11T_RC -ne 0 ]]; then
        cat "$P11T_WORK/$name.out" "$P11T_WORK/$name.tool" >&2
        fail "p11ticket $* exited with status $P11T_RC"
    fi
    note "ok: p11ticket $* (exit 0)"
    sed 's/^/      | /' "$P11T_WORK/$name.out"
}

# p11t_gens_load: `p11ticket list --json`, parsed into WORK/gens.txt with one
# line per generation:
#   NAME STATE CURRENT(yes|no) COMPLETE(yes|no) EF EU DU
# (times in seconds since the epoch, "never" for null).  Needs python3.
p11t_gens_load() {
    local json=$P11T_WORK/gens.json
    p11t_tool --config "$P11T_CONF" list --json >"$json" \
        2>"$P11T_WORK/list-json.tool" ||
        fail "p11ticket list --json failed: $(cat "$P11T_WORK/list-json.tool")"
    command -v python3 >/dev/null ||
        fail "python3 is needed to parse p11ticket list --json"
    python3 - "$json" >"$P11T_WORK/gens.txt" <<'PY' || fail "cannot parse p11ticket list --json"
import json, sys
def t(v):
    return "never" if v is None else str(int(v))
with open(sys.argv[1]) as f:
    gens = json.load(f)
for g in gens:
    print(g["name"].lower(), g["state"], "yes" if g["current"] else "no",
          "yes" if g["complete"] else "no", t(g["encrypt_from_unix"]),
          t(g["encrypt_until_unix"]), t(g["decrypt_until_unix"]))
PY
}

# p11t_gens_show: print the last loaded table.
p11t_gens_show() {
    if [[ -s "$P11T_WORK/gens.txt" ]]; then
        sed 's/^/      | /' "$P11T_WORK/gens.txt"
    else
        note "   | (no generation on the token)"
    fi
}

# p11t_gen NAME FIELD: a field of the last loaded table (state, current,
# complete, ef, eu, du); "absent" when the generation is not on the token.
p11t_gen() {
    local col
    case $2 in
    state) col=2 ;; current) col=3 ;; complete) col=4 ;;
    ef) col=5 ;; eu) col=6 ;; du) col=7 ;;
    *) fail "p11t_gen: unknown field $2" ;;
    esac
    awk -v n="$1" -v c="$col" '$1 == n { print $c; f = 1; exit }
        END { if (!f) print "absent" }' "$P11T_WORK/gens.txt"
}

# p11t_gens_count [STATE]: number of generations (in STATE) in the table.
# shellcheck disable=SC2120 # the state is optional
p11t_gens_count() {
    awk -v s="${1:-}" 's == "" || $2 == s { n++ } END { print n + 0 }' \
        "$P11T_WORK/gens.txt"
}

# p11t_gens_names [STATE]: their names, one a line.
# shellcheck disable=SC2120 # the state is optional
p11t_gens_names() {
    awk -v s="${1:-}" 's == "" || $2 == s { print $1 }' "$P11T_WORK/gens.txt"
}

# p11t_gens_current: the generation marked current, or "none".
p11t_gens_current() {
    awk '$3 == "yes" { print $1; f = 1; exit } END { if (!f) print "none" }' \
        "$P11T_WORK/gens.txt"
}

# p11t_wait_past UNIX MARGIN what: sleep until the clock has passed UNIX by
# at least MARGIN seconds (whole seconds; the clock only, nothing else).
p11t_wait_past() {
    local t=$1 margin=$2 now
    [[ "$t" =~ ^[0-9]+$ ]] || fail "p11t_wait_past: '$t' is not a time"
    now=$(date +%s)
    note "waiting $((t + margin - now > 0 ? t + margin - now : 0)) s: $3"
    while (($(date +%s) < t + margin)); do
        sleep 0.2
    done
}

# p11t_sess_key SESSION.pem: the key name (first 16 bytes, hex) of the
# session's ticket, "none" when it has no ticket of at least 32 bytes,
# "NO-SESSION-FILE" when the file is missing or empty.
p11t_sess_key() {
    local hex
    hex=$(p11t_ticket_hex "$1")
    if [[ "$hex" == NO-SESSION-FILE ]]; then
        echo "$hex"
    elif ((${#hex} >= 64)); then
        echo "${hex:0:32}"
    else
        echo none
    fi
}

# p11t_plain_start NAME FORMAT KEYFILE [args...]: the plain OpenSSL server
# (no provider: OPENSSL_CONF=/dev/null) with the ticket keys of KEYFILE.
p11t_plain_start() {
    local name=$1 format=$2 keys=$3
    shift 3
    [[ -x "$P11T_PLAIN_SERVER" ]] || fail "missing $P11T_PLAIN_SERVER (build first)"
    p11t_proc_start "$name" /dev/null "$P11T_PLAIN_SERVER" \
        -format "$format" -keys "$keys" "$@"
}

# p11t_get_ticket PORT TAG VERSION [s_client args]: a fresh connection that
# must be a full handshake; the session goes to WORK/TAG.pem, the output to
# WORK/TAG.out.  Prints nothing; use p11t_sess_key on the .pem.
p11t_get_ticket() {
    local port=$1 tag=$2 v=$3
    shift 3
    p11t_sclient "$port" "$P11T_WORK/$tag.out" "-$v" -sess_out "$P11T_WORK/$tag.pem" "$@"
    assert_eq New "$(p11t_result "$P11T_WORK/$tag.out")" "$tag: $v full handshake"
}

# p11t_resume PORT TAG_IN TAG_OUT VERSION: resume WORK/TAG_IN.pem; the
# s_client output goes to WORK/TAG_OUT.out, and the session s_client saves
# to WORK/TAG_OUT.pem.  Prints New or Reused.  s_client saves the session
# of a full handshake, and in TLS 1.3 the tickets sent after a resumption,
# but nothing after a resumed TLS 1.2 handshake (see p11t_out_ticket_key).
p11t_resume() {
    local port=$1 in=$2 out=$3 v=$4
    rm -f "$P11T_WORK/$out.pem"
    p11t_sclient "$port" "$P11T_WORK/$out.out" "-$v" -sess_in "$P11T_WORK/$in.pem" \
        -sess_out "$P11T_WORK/$out.pem"
    p11t_result "$P11T_WORK/$out.out"
}

# p11t_created_name NAME: the key name `p11ticket create` printed into
# WORK/NAME.out (after p11t_tool_ok NAME create ...).
p11t_created_name() {
    local k
    k=$(tr -d ' \n' <"$P11T_WORK/$1.out" | tr 'A-F' 'a-f')
    [[ "$k" =~ ^[0-9a-f]{32}$ ]] || fail "create printed no key name: '$k'"
    echo "$k"
}

# p11t_out_ticket_key S_CLIENT_OUT: the key name of the ticket in the
# session s_client printed after the handshake ("none" if it shows none).
# For a resumed TLS 1.2 connection this is the renewed ticket, which
# -sess_out does not save (libssl calls no new-session callback on a
# resumed TLS 1.2 client connection).  Not for TLS 1.3, whose tickets
# arrive after the handshake.
p11t_out_ticket_key() {
    local hex
    hex=$(awk '/TLS session ticket:/ { on = 1; next }
             on && /^ *[0-9a-f][0-9a-f][0-9a-f][0-9a-f] - / {
                 sub(/^ *[0-9a-f][0-9a-f][0-9a-f][0-9a-f] - /, "")
                 print substr($0, 1, 47)
                 next
             }
             on { exit }' "$1" | tr -d ' \n-' | tr 'A-F' 'a-f')
    if ((${#hex} >= 64)); then
        echo "${hex:0:32}"
    else
        echo none
    fi
}

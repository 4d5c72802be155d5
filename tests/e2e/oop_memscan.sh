#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# oop_memscan: the proof that ticket keys never sit in the TLS server's
# memory when the token is in another process (docs/out-of-process.md).
#
#   - a random 80-byte key file in the openssl80 layout (name 16 | HMAC 32 |
#     AES 32), mode 0600, imported through p11-kit as the current key;
#   - p11ticket-server on the remote token (p11-kit's client module, no
#     SoftHSM in its memory map) issues and accepts tickets under it, while
#     a client loop runs TLS 1.2 and 1.3 connections, full and resumed, in
#     the background;
#   - tests/e2e/memscan.c reads the server's whole memory (every readable
#     mapping, through /proc/PID/mem) 10 times during that traffic, looking
#     for the HMAC key, the AES key, each 16-byte half of both, and the AES
#     halves as the 32-bit words of a software AES key schedule: 8 patterns,
#     0 hits expected in every scan;
#   - positive control (a): every one of those scans finds the key's
#     (public) 16-byte name, so the scanner does see the server's heap;
#   - positive control (b): the same scanner finds all 6 key patterns in a
#     process that holds the key file's bytes (memscan --hold);
#   - reported, not asserted: the p11-kit-remote process that runs SoftHSM
#     for the server, and, as the flip side, an in-process SoftHSM
#     p11ticket-server under the same traffic.
# Needs root (reading another process's memory).  The key bytes never
# appear on a command line: the scanner reads them from a 0600 file.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/e2e/oop_lib.sh
. "$(dirname "$0")/oop_lib.sh"
oop_begin oop_memscan
[[ $EUID -eq 0 ]] || fail "oop_memscan must run as root (it reads /proc/PID/mem of other processes)"
[[ -x "$P11T_MEMSCAN" ]] || fail "missing $P11T_MEMSCAN (build the memscan target)"
NSCANS=10
oop_token_empty --set "refresh-interval = 1"

# ---- the key file and the patterns -----------------------------------------------
keyf=$P11T_WORK/ticket.key
(umask 077 && head -c 80 /dev/urandom >"$keyf")
chmod 0600 "$keyf"
assert_eq "600 80" "$(stat -c '%a %s' "$keyf")" "key file mode and size"
hx() { od -An -tx1 -j "$1" -N "$2" "$keyf" | tr -d ' \n'; }
# The same bytes as 32-bit words loaded big-endian and stored little-endian
# (OpenSSL's portable AES key schedule starts with the key in that form).
hxw() { od -An -tx4 --endian=little -j "$1" -N "$2" "$keyf" | tr -d ' \n'; }
name=$(hx 0 16)
declare -A PAT=(
    [hmac]=$(hx 16 32) [aes]=$(hx 48 32)
    [hmac_lo]=$(hx 16 16) [hmac_hi]=$(hx 32 16)
    [aes_lo]=$(hx 48 16) [aes_hi]=$(hx 64 16)
    [aes_lo_w32]=$(hxw 48 16) [aes_hi_w32]=$(hxw 64 16)
)
SECRETS=(hmac aes hmac_lo hmac_hi aes_lo aes_hi aes_lo_w32 aes_hi_w32)
KEYPATS=(hmac aes hmac_lo hmac_hi aes_lo aes_hi)
for l in "${SECRETS[@]}"; do
    [[ "${PAT[$l]}" =~ ^[0-9a-f]+$ ]] || fail "pattern $l could not be read from the key file"
done
# Pattern files (0600 under umask 077): for the TLS server, the 8 secrets
# and the name that must be seen; for the holder, the 6 key patterns that
# must all be seen.
{
    for l in "${SECRETS[@]}"; do printf 'secret %s %s\n' "$l" "${PAT[$l]}"; done
    printf 'expect name %s\n' "$name"
} >"$P11T_WORK/server.pat"
{
    for l in "${KEYPATS[@]}"; do printf 'expect %s %s\n' "$l" "${PAT[$l]}"; done
    printf 'expect name %s\n' "$name"
} >"$P11T_WORK/holder.pat"
assert_eq 600 "$(stat -c %a "$P11T_WORK/server.pat")" "pattern file mode"

# scan_field FILE KEY: a value of the summary line; scan_hits FILE LABEL.
scan_field() { sed -nE "s/^summary .*[ ]$2=([0-9]+).*/\1/p" "$1"; }
scan_hits() { sed -nE "s/^pattern label=$2 kind=[a-z]+ len=[0-9]+ hits=([0-9]+)\$/\1/p" "$1"; }
# num V: V if it is a number, else -1 (an absent count fails a comparison).
num() { if [[ "$1" =~ ^[0-9]+$ ]]; then echo "$1"; else echo -1; fi; }

# scan PID OUT: run the scanner; sets SCAN_RC (0 expected, 1 unexpected).
SCAN_RC=0
scan() {
    SCAN_RC=0
    "$P11T_MEMSCAN" "$1" "$3" >"$2" 2>"$2.err" || SCAN_RC=$?
    [[ $SCAN_RC -le 1 ]] || {
        cat "$2" "$2.err" >&2
        fail "memscan $1 failed (status $SCAN_RC)"
    }
}

# A sanitizer runtime's shadow memory (terabytes, mapped read-write) is the
# only mapping the scanner skips as "huge"; it holds allocation state, not
# data.  Anywhere else no mapping may be skipped.
sanitized() { grep -Eq 'lib(asan|tsan)\.so' "/proc/$1/maps"; }

# ---- the client loop -----------------------------------------------------------------
# traffic_start TAG PORT: TLS 1.2 and 1.3 connections in a loop, each a full
# handshake that saves its ticket and a resumption of it, until WORK/TAG.stop
# exists.  One line per connection in WORK/TAG.loop: "VERSION KIND RESULT".
traffic_start() {
    local tag=$1 port=$2
    rm -f "$P11T_WORK/$tag.stop"
    : >"$P11T_WORK/$tag.loop"
    (
        set +e
        conn() { # VERSION KIND s_client args...
            local v=$1 kind=$2 out r
            shift 2
            out=$(printf 'GET / HTTP/1.0\r\n\r\n' | OPENSSL_CONF=/dev/null timeout 10 \
                openssl s_client -connect "127.0.0.1:$port" -ign_eof "-$v" "$@" 2>&1)
            r=$(grep -m1 -oE '^(New|Reused), ' <<<"$out" | tr -d ', ')
            echo "$v $kind ${r:-FAILED}" >>"$P11T_WORK/$tag.loop"
        }
        while [[ ! -e "$P11T_WORK/$tag.stop" ]]; do
            for v in tls1_2 tls1_3; do
                s=$P11T_WORK/$tag.$v.pem
                rm -f "$s"
                conn "$v" full -sess_out "$s"
                conn "$v" resume -sess_in "$s"
            done
        done
    ) </dev/null >/dev/null 2>&1 &
    TRAFFIC_PID=$!
    oop_bg_add "$TRAFFIC_PID"
    # Wait for the first resumption, so that scans see a busy server.
    local deadline=$((SECONDS + 20 * P11T_WAIT_SCALE))
    until grep -q ' resume ' "$P11T_WORK/$tag.loop"; do
        ((SECONDS < deadline)) || fail "$tag: the client loop made no connection"
        sleep 0.1
    done
}

# traffic_stop TAG PID: ask the loop to stop after its current connection.
traffic_stop() {
    touch "$P11T_WORK/$1.stop"
    wait "$2" 2>/dev/null || true
}

# ---- import and the server -------------------------------------------------------
info "import the key file through p11-kit as the current key"
oop_tool_ok import import --format openssl80 --encrypt-for 10m --decrypt-for 10m "$keyf"
assert_grep "$P11T_WORK/import.out" "^imported $name .*: active" "imported as active"
assert_eq "$name" "$(oop_current_key)" "current key on the token"

oop_server_start s -www
ps_=$(p11t_port s)
spid=$(p11t_pid s)
for v in tls1_2 tls1_3; do
    p11t_get_ticket "$ps_" "s-$v" "$v"
    assert_eq "$name" "$(p11t_sess_key "$P11T_WORK/s-$v.pem")" "$v: the server's tickets are under the imported key"
    assert_eq Reused "$(p11t_resume "$ps_" "s-$v" "s-$v-r" "$v")" "$v: and resume"
done
oop_assert_remote s

# ---- positive control (b): a process that holds the key bytes --------------------
info "positive control: the scanner finds the key in a process that holds it"
"$P11T_MEMSCAN" --hold "$keyf" >"$P11T_WORK/holder.out" 2>&1 &
hpid=$!
oop_bg_add "$hpid"
deadline=$((SECONDS + 10 * P11T_WAIT_SCALE))
until grep -q '^holding 80 bytes' "$P11T_WORK/holder.out"; do
    kill -0 "$hpid" 2>/dev/null || fail "memscan --hold exited: $(cat "$P11T_WORK/holder.out")"
    ((SECONDS < deadline)) || fail "memscan --hold did not start"
    sleep 0.05
done
scan "$hpid" "$P11T_WORK/scan-holder.out" "$P11T_WORK/holder.pat"
sed 's/^/      | /' "$P11T_WORK/scan-holder.out"
assert_eq 0 "$SCAN_RC" "memscan exit status on the holder (every key pattern found)"
for l in "${KEYPATS[@]}" name; do
    assert_ge 1 "$(scan_hits "$P11T_WORK/scan-holder.out" "$l")" "holder: hits of $l"
done
oop_bg_stop "$hpid"

# ---- the scans of the remote-token server under traffic ---------------------------
info "$NSCANS scans of p11ticket-server (remote token) under TLS traffic"
traffic_start st "$ps_"
st_pid=$TRAFFIC_PID
conns_before=$(wc -l <"$P11T_WORK/st.loop")
declare -A TOTAL=()
scanned=0
for ((i = 1; i <= NSCANS; i++)); do
    out=$P11T_WORK/scan-s.$i.out
    scan "$spid" "$out" "$P11T_WORK/server.pat"
    scanned=$((scanned + $(num "$(scan_field "$out" bytes)")))
    line="scan $i: bytes $(scan_field "$out" bytes), regions $(scan_field "$out" regions),"
    line+=" unreadable pages $(scan_field "$out" pages_unreadable), name $(scan_hits "$out" name)"
    for l in "${SECRETS[@]}"; do
        h=$(scan_hits "$out" "$l")
        [[ "$h" =~ ^[0-9]+$ ]] || fail "scan $i: no count for pattern $l"
        TOTAL[$l]=$((${TOTAL[$l]:-0} + h))
        line+=", $l $h"
    done
    note "$line"
    if [[ $SCAN_RC -ne 0 ]]; then
        grep -E '^(hit|pattern)' "$out" >&2
        fail "scan $i of the remote-token server: unexpected result (a key pattern found, or the name not)"
    fi
    for l in "${SECRETS[@]}"; do
        [[ "$(scan_hits "$out" "$l")" == 0 ]] || fail "scan $i: $l found in the server's memory"
    done
    # Positive control (a): the scanner saw the heap, where the name is.
    (($(num "$(scan_hits "$out" name)") >= 1)) || fail "scan $i: the key name was not found: the scan missed the heap"
    (($(num "$(scan_field "$out" bytes)") >= 1000000)) || fail "scan $i: only $(scan_field "$out" bytes) bytes read"
    huge=$(scan_field "$out" skipped_huge)
    if ! sanitized "$spid"; then
        [[ "$huge" == 0 ]] || fail "scan $i: $huge mappings skipped as huge in a build without sanitizers"
    elif ((i == 1)); then
        note "sanitizer build: $huge shadow mappings skipped ($(scan_field "$out" huge_rss_kb) kB resident)"
    fi
    sleep 0.3
done
conns_after=$(wc -l <"$P11T_WORK/st.loop")
note "ok: every scan: 0 hits for ${SECRETS[*]}; the key name found; >= 1 MB read ($scanned bytes in $NSCANS scans)"
for l in "${SECRETS[@]}"; do
    assert_eq 0 "${TOTAL[$l]}" "total hits of $l in $NSCANS scans"
done
assert_ge 4 "$((conns_after - conns_before))" "connections made while the scans ran"

# Which process does hold the keys: the p11-kit-remote running SoftHSM.
info "the p11-kit-remote process of the server (reported, not asserted)"
remotes=$(oop_remotes)
[[ -n "$remotes" ]] || fail "no p11-kit-remote process while the server is connected"
for r in $remotes; do
    rt=0
    rhits=""
    for ((i = 1; i <= NSCANS; i++)); do
        out=$P11T_WORK/scan-remote.$r.$i.out
        scan "$r" "$out" "$P11T_WORK/server.pat"
        for l in "${SECRETS[@]}"; do
            h=$(scan_hits "$out" "$l")
            [[ "$h" =~ ^[0-9]+$ ]] || fail "remote scan $i: no count for pattern $l"
            rt=$((rt + h))
            ((h == 0)) || rhits+=" scan$i:$l=$h"
        done
        sleep 0.1
    done
    grep -q libsofthsm2 "/proc/$r/maps" || fail "p11-kit-remote $r has no SoftHSM loaded"
    note "p11-kit-remote $r (SoftHSM in process): $rt key-pattern hits in $NSCANS scans${rhits:- (none)}; bytes per scan $(scan_field "$out" bytes)"
done
traffic_stop st "$st_pid"
assert_eq 0 "$(count_lines "$P11T_WORK/st.loop" ' FAILED$')" "failed connections in the client loop"
assert_ge 1 "$(count_lines "$P11T_WORK/st.loop" '^tls1_2 resume Reused$')" "TLS 1.2 resumptions in the loop"
assert_ge 1 "$(count_lines "$P11T_WORK/st.loop" '^tls1_3 resume Reused$')" "TLS 1.3 resumptions in the loop"
assert_eq 0 "$(count_lines "$P11T_WORK/st.loop" ' resume New$')" "resumptions that fell back to a full handshake"
note "client loop: $(wc -l <"$P11T_WORK/st.loop") connections, $(count_lines "$P11T_WORK/st.loop" ' Reused$') resumed"
p11t_server_alive s
oop_assert_remote s

# ---- the flip side: SoftHSM in the TLS server -------------------------------------
info "flip side: an in-process SoftHSM p11ticket-server under the same traffic (reported, not asserted)"
oop_local_server_start l -www
pl=$(p11t_port l)
lpid=$(p11t_pid l)
p11t_get_ticket "$pl" l-tls1_3 tls1_3
assert_eq "$name" "$(p11t_sess_key "$P11T_WORK/l-tls1_3.pem")" "the in-process server issues under the imported key"
oop_assert_local l
traffic_start lt "$pl"
lt_pid=$TRAFFIC_PID
declare -A LTOTAL=()
lscans=0
for ((i = 1; i <= NSCANS; i++)); do
    out=$P11T_WORK/scan-l.$i.out
    scan "$lpid" "$out" "$P11T_WORK/server.pat"
    lscans=$((lscans + 1))
    line="in-process scan $i: bytes $(scan_field "$out" bytes), name $(scan_hits "$out" name)"
    for l in "${SECRETS[@]}"; do
        h=$(scan_hits "$out" "$l")
        [[ "$h" =~ ^[0-9]+$ ]] || fail "in-process scan $i: no count for pattern $l"
        LTOTAL[$l]=$((${LTOTAL[$l]:-0} + h))
        line+=", $l $h"
    done
    note "$line"
    (($(num "$(scan_hits "$out" name)") >= 1)) || fail "in-process scan $i: the key name was not found"
    sleep 0.1
done
traffic_stop lt "$lt_pid"
line="in-process totals over $lscans scans:"
for l in "${SECRETS[@]}"; do line+=" $l ${LTOTAL[$l]}"; done
note "$line"
assert_eq 0 "$(count_lines "$P11T_WORK/lt.loop" ' FAILED$')" "failed connections to the in-process server"

p11t_server_alive s
p11t_server_alive l
p11t_server_stop s
p11t_server_stop l
oop_p11kit_stop
p11t_pass

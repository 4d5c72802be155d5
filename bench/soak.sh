#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# bench/soak.sh - a long run, not a test: two p11ticket-server processes
# share one SoftHSM token under a mixed TLS load while the key is rotated
# every 10 seconds.
#
#   P11T_BUILD=build/werror bash bench/soak.sh [MINUTES]   (default 10)
#
# Two client loops connect to the two servers in turn with openssl s_client
# (TLS 1.2 and 1.3; every other connection presents the newest ticket the
# loop holds, from either server); a third loop runs `p11ticket rotate`
# every 10 s with a short policy (encrypt 20 s, decrypt 40 s more, lead
# 10 s), so keys come and go all the time.  Reported at the end:
#   - failed connections (no handshake at all; must be 0),
#   - resumption rate of the connections that presented a ticket,
#   - rotations run and generations created,
#   - each server's RSS and open file descriptors after a 15 s warm-up and
#     at the end.
# Uses tests/lib.sh for the token, the servers and the client; talks to
# 127.0.0.1 only.
set -euo pipefail
minutes=${1:-10}
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../tests/lib.sh"
p11t_begin "soak ($minutes min)"
p11t_token_empty --set "refresh-interval = 5"
# The first generation on the same short policy, so rotate has work to do.
p11t_tool_ok create create --encrypt-for 20s --decrypt-for 40s
p11t_server_start a -www
p11t_server_start b -www
ports=("$(p11t_port a)" "$(p11t_port b)")
pids=("$(p11t_pid a)" "$(p11t_pid b)")
stop=$P11T_WORK/stop

usage_of() { # PID: "RSS_kB FDS"
    echo "$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status") $(find "/proc/$1/fd" -mindepth 1 2>/dev/null | wc -l)"
}

client_loop() { # ID
    local id=$1 i=0 v port in res sess
    while [[ ! -e $stop ]]; do
        i=$((i + 1))
        v=tls1_$((2 + i % 2))
        # One session per version: a TLS 1.3 session never resumes TLS 1.2.
        sess=$P11T_WORK/sess-$id-$v.pem
        port=${ports[$(((i / 2) % 2))]}
        in=()
        ((i % 4 < 2)) && [[ -s $sess ]] && in=(-sess_in "$sess")
        printf 'GET / HTTP/1.0\r\n\r\n' |
            OPENSSL_CONF=/dev/null timeout 30 openssl s_client -connect "127.0.0.1:$port" \
                -ign_eof "-$v" "${in[@]}" -sess_out "$P11T_WORK/new-$id.pem" \
                >"$P11T_WORK/client-$id.out" 2>&1 || true
        res=$(grep -m1 -oE '^(New|Reused), ' "$P11T_WORK/client-$id.out" | tr -d ', ') || true
        [[ -n $res ]] || res=FAIL
        [[ -s $P11T_WORK/new-$id.pem ]] && mv -f "$P11T_WORK/new-$id.pem" "$sess"
        echo "$v ${#in[@]} $res" >>"$P11T_WORK/load-$id.log"
    done
}

rotate_loop() {
    while [[ ! -e $stop ]]; do
        if p11t_tool --config "$P11T_CONF" rotate --encrypt-for 20s \
            --decrypt-for 40s --lead 10s >>"$P11T_WORK/rotate.out" 2>&1; then
            echo ok >>"$P11T_WORK/rotations"
        else
            echo failed >>"$P11T_WORK/rotations"
        fi
        sleep 10
    done
}

client_loop 1 &
P11T_PID[c1]=$!
client_loop 2 &
P11T_PID[c2]=$!
rotate_loop &
P11T_PID[rot]=$!

sleep 15
start_a=$(usage_of "${pids[0]}")
start_b=$(usage_of "${pids[1]}")
info "warm: server a RSS/fds $start_a, server b $start_b; running $minutes min"
sleep $((minutes * 60 - 15))
end_a=$(usage_of "${pids[0]}")
end_b=$(usage_of "${pids[1]}")
touch "$stop"
for p in c1 c2 rot; do
    wait "${P11T_PID[$p]}" || true
    unset "P11T_PID[$p]"
done
p11t_server_alive a
p11t_server_alive b

cat "$P11T_WORK"/load-*.log >"$P11T_WORK/load.log"
total=$(wc -l <"$P11T_WORK/load.log")
failed=$(awk '$3 == "FAIL"' "$P11T_WORK/load.log" | wc -l)
offered=$(awk '$2 == 2' "$P11T_WORK/load.log" | wc -l)
reused=$(awk '$2 == 2 && $3 == "Reused"' "$P11T_WORK/load.log" | wc -l)
rot_ok=$(grep -c '^ok' "$P11T_WORK/rotations" || true)
rot_bad=$(grep -c '^failed' "$P11T_WORK/rotations" || true)
created=$(grep -c 'created' "$P11T_WORK/rotate.out" || true)
echo
echo "soak: $minutes min, 2 servers, 2 client loops, rotate every 10 s"
echo "  connections:      $total ($failed failed)"
echo "  resumption:       $reused of $offered connections that presented a ticket ($(awk -v r="$reused" -v o="$offered" 'BEGIN { printf "%.1f%%", o ? 100 * r / o : 0 }'))"
echo "  rotations:        $rot_ok run, $rot_bad failed, $created generations created"
echo "  server a RSS kB / fds: $start_a -> $end_a"
echo "  server b RSS kB / fds: $start_b -> $end_b"
echo "  token errors logged: $(grep -hc 'token' "$P11T_WORK"/a.err "$P11T_WORK"/b.err | paste -sd+ | bc)"
assert_eq 0 "$failed" "failed connections"
p11t_server_stop a
p11t_server_stop b
p11t_pass

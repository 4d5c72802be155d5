#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# token_unreachable: whatever is wrong with the token configuration, the
# server starts, serves full handshakes, never crashes, exits cleanly on
# SIGTERM, and logs ONE clear error that names the openssl.cnf key at fault.
# Also: the token directory disappears while the server runs.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin token_unreachable
p11t_token

# The right PIN, but in a file that others can read.
cp "$P11T_WORK/pin" "$P11T_WORK/pin.0644"
chmod 0644 "$P11T_WORK/pin.0644"
# A wrong PIN (SoftHSM does not lock; the provider must not retry anyway).
(umask 077 && p11t_random_pin >"$P11T_WORK/pin.wrong")

# name | config key named in the error | p11t_write_conf options
cases=(
    "no-such-token|token-uri|--token-uri pkcs11:token=no-such-token"
    "malformed-uri|token-uri|--token-uri not-a-pkcs11-uri"
    "no-such-module|pkcs11-module|--pkcs11-module $P11T_WORK/no-such-module.so"
    "wrong-pin|pin-source|--pin-source file:$P11T_WORK/pin.wrong"
    "pin-file-0644|pin-source|--pin-source file:$P11T_WORK/pin.0644"
    "pin-file-missing|pin-source|--pin-source file:$P11T_WORK/no-such-pin-file"
    "pin-env-unset|pin-source|--pin-source env:P11T_TEST_UNSET_PIN_VAR"
)
unset P11T_TEST_UNSET_PIN_VAR

info "tickets from a healthy server on the same token"
p11t_server_start good -www
for v in tls1_3 tls1_2; do
    p11t_sclient "$(p11t_port good)" "$P11T_WORK/good-$v.out" "-$v" -sess_out "$P11T_WORK/good-$v.pem"
    p11t_assert_token_ticket "$(p11t_ticket_hex "$P11T_WORK/good-$v.pem")" "healthy server: $v ticket"
done
p11t_server_stop good

for c in "${cases[@]}"; do
    IFS='|' read -r name key opts <<<"$c"
    read -r -a opts <<<"$opts"
    info "$name: expect one error naming '$key'"
    conf=$P11T_WORK/$name.cnf
    p11t_write_conf "$conf" "${opts[@]}"
    p11t_server_start "$name" --conf "$conf" -www
    port=$(p11t_port "$name")
    for i in 1 2; do
        p11t_expect_handshakes "$port" "$name (round $i)"
    done
    p11t_reconnect "$port" "$P11T_WORK/$name-reconnect.out" -tls1_2
    assert_grep "$P11T_WORK/$name-reconnect.out" '^New, TLSv1\.2' "$name: s_client -reconnect completes"
    for v in tls1_3 tls1_2; do
        p11t_sclient "$port" "$P11T_WORK/$name-$v.out" "-$v" -sess_in "$P11T_WORK/good-$v.pem"
        assert_eq New "$(p11t_result "$P11T_WORK/$name-$v.out")" "$name: $v token ticket gets a full handshake"
    done
    p11t_server_alive "$name"
    p11t_server_stop "$name"
    err=$P11T_WORK/$name.err
    n=$(count_lines "$err" "$key")
    if [[ "$n" != 1 ]]; then
        echo "--- $name stderr:" >&2
        grep -v '^conn [0-9]*: ' "$err" | head -n 20 >&2
        fail "$name: expected exactly one log line naming '$key', found $n"
    fi
    note "ok: $name: error logged once: $(grep -m1 -- "$key" "$err")"
done

info "token directory removed while the server runs"
p11t_server_start gone -www
port=$(p11t_port gone)
p11t_sclient "$port" "$P11T_WORK/gone-1.out" -tls1_3 -sess_out "$P11T_WORK/gone.pem"
p11t_sclient "$port" "$P11T_WORK/gone-2.out" -tls1_3 -sess_in "$P11T_WORK/gone.pem"
assert_eq Reused "$(p11t_result "$P11T_WORK/gone-2.out")" "resumption before the removal"
rm -rf "$P11T_WORK/tokens"
note "removed $P11T_WORK/tokens"
for i in 1 2 3; do
    for v in -tls1_3 -tls1_2; do
        p11t_sclient "$port" "$P11T_WORK/gone-3.out" "$v" -sess_in "$P11T_WORK/gone.pem"
        r=$(p11t_result "$P11T_WORK/gone-3.out")
        [[ "$r" == New || "$r" == Reused ]] || fail "no handshake after the token removal ($v)"
        note "ok: $v handshake after the removal: $r"
    done
done
p11t_server_alive gone
p11t_server_stop gone
p11t_pass

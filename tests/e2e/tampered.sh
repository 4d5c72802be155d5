#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# tampered: a ticket with a flipped byte (key name, IV, ciphertext, MAC) or
# truncated (20 bytes: below libssl's 32-byte minimum; 40 bytes: passes it)
# gets a full handshake, never an error, and the server stays up.  The C
# client rewrites the ticket inside the session's DER encoding.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin tampered
p11t_token
p11t_server_start a -www
port=$(p11t_port a)

for v in tls1_3 tls1_2; do
    info "$v control: untampered tickets resume"
    out=$P11T_WORK/$v-none.out
    p11t_ticket_client -connect "127.0.0.1:$port" "-$v" -www >"$out" 2>&1 ||
        { cat "$out" >&2; fail "ticket_client ($v) failed"; }
    assert_ge 1 "$(count_lines "$out" '^ticket [0-9]+: Reused$')" "$v untampered tickets resumed"
    assert_eq 0 "$(count_lines "$out" '^ticket [0-9]+: (New|FAILED)')" "$v untampered tickets not resumed"
    for mode in flip-name flip-iv flip-mid flip-mac trunc:20 trunc:40; do
        info "$v ticket tampered: $mode"
        out=$P11T_WORK/$v-$mode.out
        p11t_ticket_client -connect "127.0.0.1:$port" "-$v" -www -tamper "$mode" \
            >"$out" 2>&1 || { cat "$out" >&2; fail "ticket_client ($v, $mode) failed"; }
        assert_ge 1 "$(count_lines "$out" '^ticket [0-9]+: tampered')" "$v $mode: tampered tickets sent"
        assert_eq 0 "$(count_lines "$out" '^ticket [0-9]+: (Reused|FAILED)')" "$v $mode: tickets resumed or failed"
        assert_eq "$(count_lines "$out" '^ticket [0-9]+: tampered')" \
            "$(count_lines "$out" '^ticket [0-9]+: New$')" "$v $mode: full handshakes"
        p11t_server_alive a
    done
done

info "the server still resumes good tickets afterwards"
p11t_sclient "$port" "$P11T_WORK/after1.out" -tls1_3 -sess_out "$P11T_WORK/after.pem"
p11t_sclient "$port" "$P11T_WORK/after2.out" -tls1_3 -sess_in "$P11T_WORK/after.pem"
assert_eq Reused "$(p11t_result "$P11T_WORK/after2.out")" "resumption after the tampering"
p11t_server_stop a
p11t_pass

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# timeout: with -timeout 2 a ticket resumes at once but, after 3 s, the
# next connection is a full handshake.  (Under valgrind a handshake alone
# takes about a second: there the timeout is 8 s and the wait 9 s.)
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin timeout
p11t_token
secs=2
((P11T_WAIT_SCALE > 1)) && secs=8
p11t_server_start a -www -timeout "$secs"
port=$(p11t_port a)

for v in tls1_3 tls1_2; do
    p11t_sclient "$port" "$P11T_WORK/$v-1.out" "-$v" -sess_out "$P11T_WORK/$v.pem"
    assert_eq New "$(p11t_result "$P11T_WORK/$v-1.out")" "$v first connection"
    p11t_assert_token_ticket "$(p11t_ticket_hex "$P11T_WORK/$v.pem")" "$v ticket"
    p11t_sclient "$port" "$P11T_WORK/$v-2.out" "-$v" -sess_in "$P11T_WORK/$v.pem"
    assert_eq Reused "$(p11t_result "$P11T_WORK/$v-2.out")" "$v resumption within the timeout"
done

info "waiting $((secs + 1)) s for the $secs s session timeout"
sleep $((secs + 1))
for v in tls1_3 tls1_2; do
    p11t_sclient "$port" "$P11T_WORK/$v-3.out" "-$v" -sess_in "$P11T_WORK/$v.pem"
    assert_eq New "$(p11t_result "$P11T_WORK/$v-3.out")" "$v after the timeout"
done
p11t_server_alive a
p11t_server_stop a
p11t_pass

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# restart: a ticket issued by a server resumes on the same server after a
# restart (the keys live in the token, not in the process).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin restart
p11t_token

p11t_server_start run1 -www
port=$(p11t_port run1)
for v in tls1_3 tls1_2; do
    p11t_sclient "$port" "$P11T_WORK/$v-1.out" "-$v" -sess_out "$P11T_WORK/$v.pem"
    assert_eq New "$(p11t_result "$P11T_WORK/$v-1.out")" "run 1: $v first connection"
    p11t_assert_token_ticket "$(p11t_ticket_hex "$P11T_WORK/$v.pem")" "run 1: $v ticket"
done
p11t_server_stop run1

info "restarted server"
p11t_server_start run2 -www
port=$(p11t_port run2)
for v in tls1_3 tls1_2; do
    p11t_sclient "$port" "$P11T_WORK/$v-2.out" "-$v" -sess_in "$P11T_WORK/$v.pem"
    assert_eq Reused "$(p11t_result "$P11T_WORK/$v-2.out")" "run 2: $v ticket from run 1"
done
assert_eq 2 "$(p11t_server_count run2 Reused)" "run 2 log: Reused connections"
p11t_server_stop run2
p11t_pass

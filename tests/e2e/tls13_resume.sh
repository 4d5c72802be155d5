#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# tls13_resume: TLS 1.3 resumption with a token ticket.  s_client -sess_out
# then -sess_in: the second connection must be Reused, and the saved
# ticket must start with a key name that `p11ticket list` shows.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin tls13_resume
p11t_token
p11t_server_start a -www
port=$(p11t_port a)

info "first connection saves its session"
p11t_sclient "$port" "$P11T_WORK/c1.out" -tls1_3 -sess_out "$P11T_WORK/s1.pem"
assert_eq New "$(p11t_result "$P11T_WORK/c1.out")" "first connection"
assert_grep "$P11T_WORK/c1.out" '^Protocol *: TLSv1\.3|TLSv1\.3, Cipher' "negotiated TLS 1.3"
tick=$(p11t_ticket_hex "$P11T_WORK/s1.pem")
p11t_assert_token_ticket "$tick" "TLS 1.3 ticket"

info "second connection resumes it"
p11t_sclient "$port" "$P11T_WORK/c2.out" -tls1_3 -sess_in "$P11T_WORK/s1.pem" \
    -sess_out "$P11T_WORK/s2.pem"
assert_eq Reused "$(p11t_result "$P11T_WORK/c2.out")" "second connection"

info "the ticket issued on resumption resumes as well"
tick2=$(p11t_ticket_hex "$P11T_WORK/s2.pem")
p11t_assert_token_ticket "$tick2" "renewed TLS 1.3 ticket"
assert_ne "$tick" "$tick2" "renewed ticket differs from the first"
p11t_sclient "$port" "$P11T_WORK/c3.out" -tls1_3 -sess_in "$P11T_WORK/s2.pem"
assert_eq Reused "$(p11t_result "$P11T_WORK/c3.out")" "third connection"

assert_ge 2 "$(p11t_server_count a Reused)" "server log: Reused connections"
p11t_server_alive a
p11t_server_stop a
p11t_pass

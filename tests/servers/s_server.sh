#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# s_server: `openssl s_server -www` (no session-ID cache) with nothing but
# OPENSSL_CONF naming the openssl.cnf that loads p11ticket: TLS 1.2
# -reconnect 1 New 5 Reused, TLS 1.3 -sess_out / -sess_in Reused, tickets
# under the token's current key; a second s_server resumes the first one's
# tickets.  s_server itself has no option that could install a ticket
# callback.  Control: without p11ticket, tickets under a key the token does
# not have.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/servers/lib_servers.sh
. "$(dirname "$0")/lib_servers.sh"
srv_begin s_server

info "openssl s_server -www with p11ticket from openssl.cnf"
srv_s_server_start a "$(srv_free_port)"
pa=$(p11t_port a)
srv_basic_checks "$pa" a "s_server"

info "a second s_server resumes the first one's tickets"
srv_s_server_start b "$(srv_free_port)"
for v in 2 3; do
    assert_eq Reused "$(p11t_resume "$(p11t_port b)" "a-t1$v" "b-from-a-1$v" "tls1_$v")" \
        "second s_server: TLS 1.$v ticket of the first"
done
srv_alive a
srv_alive b
assert_no_grep "$P11T_WORK/a.err" 'p11ticket' "s_server: no p11ticket error"
srv_stop b
srv_stop a

info "control: s_server without p11ticket (OPENSSL_CONF=/dev/null)"
srv_s_server_start c "$(srv_free_port)" OPENSSL_CONF=/dev/null
pc=$(p11t_port c)
p11t_get_ticket "$pc" c-tls1_2 tls1_2
kc=$(p11t_sess_key "$P11T_WORK/c-tls1_2.pem")
[[ "$kc" =~ ^[0-9a-f]{32}$ ]] || fail "control: no ticket from s_server without p11ticket ($kc)"
assert_ne "$(srv_current_key)" "$kc" "control: ticket key name"
srv_stop c
p11t_pass

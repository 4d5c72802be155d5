#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# nginx_basic: Debian's unmodified nginx 1.22 (master + 2 workers as
# www-data) issues and resumes tickets under the token's key when
# openssl.cnf loads p11ticket; nothing in nginx.conf names p11ticket.
#   - TLS 1.2 s_client -reconnect: 1 New, 5 Reused; TLS 1.3 -sess_out /
#     -sess_in: Reused; both tickets (and the renewed TLS 1.3 one) under the
#     token's current key;
#   - the workers cannot read the PIN file and still use the token;
#   - ssl_session_tickets off: no ticket, no resumption;
#   - ssl_session_ticket_key FILE (80 bytes): nginx installs its legacy
#     ticket callback with that key, but libssl 3 calls the EVP callback
#     that p11ticket installed instead, so the tickets are under the token
#     key, not under the file's key name.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/servers/lib_servers.sh
. "$(dirname "$0")/lib_servers.sh"
srv_begin nginx_basic
srv_need nginx "Debian's nginx"

info "nginx with p11ticket from openssl.cnf"
srv_nginx_conf a "$(srv_free_port)"
srv_nginx_start a
pa=$(p11t_port a)
srv_basic_checks "$pa" a "nginx"
srv_alive a
srv_nginx_no_crash a
srv_stop a

info "ssl_session_tickets off: no ticket"
srv_nginx_conf off "$(srv_free_port)" "ssl_session_tickets off;"
srv_nginx_start off
p11t_reconnect "$(p11t_port off)" "$P11T_WORK/off-reconnect.out" -tls1_2
assert_eq "New New New New New New" "$(p11t_results "$P11T_WORK/off-reconnect.out")" \
    "tickets off: s_client -reconnect handshakes"
p11t_get_ticket "$(p11t_port off)" off-tls1_2 tls1_2
assert_eq none "$(p11t_sess_key "$P11T_WORK/off-tls1_2.pem")" "tickets off: TLS 1.2 ticket"
# TLS 1.3 with SSL_OP_NO_TICKET: libssl sends a stateful "ticket", the
# 32-byte session ID, and never calls the ticket callback; nginx's default
# ssl_session_cache (none) stores nothing, so it never resumes.
p11t_get_ticket "$(p11t_port off)" off-tls1_3 tls1_3
t=$(p11t_ticket_hex "$P11T_WORK/off-tls1_3.pem")
assert_eq 64 "${#t}" "tickets off: TLS 1.3 ticket length in hex digits (a 32-byte session ID)"
assert_ne "$(srv_current_key)" "${t:0:32}" "tickets off: TLS 1.3 ticket"
assert_eq New "$(p11t_resume "$(p11t_port off)" off-tls1_3 off-tls1_3-r tls1_3)" "tickets off: TLS 1.3 resumption"
srv_nginx_no_crash off
srv_stop off

info "ssl_session_ticket_key FILE (80 bytes) as well"
head -c 80 /dev/urandom >"$P11T_WORK/nginx-ticket.key"
file_key=$(od -An -N16 -tx1 "$P11T_WORK/nginx-ticket.key" | tr -d ' \n')
note "the key file's key name: $file_key"
srv_nginx_conf k "$(srv_free_port)" "ssl_session_ticket_key $P11T_WORK/nginx-ticket.key;"
srv_nginx_start k
pk=$(p11t_port k)
p11t_reconnect "$pk" "$P11T_WORK/k-reconnect.out" -tls1_2
srv_assert_reconnect "$P11T_WORK/k-reconnect.out" "nginx with ssl_session_ticket_key"
for v in tls1_2 tls1_3; do
    p11t_get_ticket "$pk" "k-$v" "$v"
    key=$(p11t_sess_key "$P11T_WORK/k-$v.pem")
    assert_ne "$file_key" "$key" "ssl_session_ticket_key: $v ticket key name (not the file's)"
    srv_assert_token_key "$P11T_WORK/k-$v.pem" "ssl_session_ticket_key: $v"
    assert_eq Reused "$(p11t_resume "$pk" "k-$v" "k-$v-r" "$v")" "ssl_session_ticket_key: $v resumption"
done
srv_nginx_no_crash k
srv_stop k

info "control: the same nginx without p11ticket (OPENSSL_CONF=/dev/null) uses the file's key"
srv_nginx_conf kc "$(srv_free_port)" "ssl_session_ticket_key $P11T_WORK/nginx-ticket.key;"
srv_nginx_start kc OPENSSL_CONF=/dev/null
p11t_get_ticket "$(p11t_port kc)" kc-tls1_2 tls1_2
assert_eq "$file_key" "$(p11t_sess_key "$P11T_WORK/kc-tls1_2.pem")" "without p11ticket: ticket key name"
srv_stop kc
p11t_pass

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# apache: Debian's unmodified Apache httpd 2.4 (mpm_event, two children as
# www-data) issues and resumes tickets under the token's key when the
# openssl.cnf in its environment loads p11ticket.  Apache hands its own
# process environment to its children (PassEnv/SetEnv only affect CGI and
# SSI), so OPENSSL_CONF and SOFTHSM2_CONF are set when apache2 starts.
#   - no SSLSessionCache: TLS 1.2 -reconnect 1 New 5 Reused, TLS 1.3
#     resumption, token key names;
#   - SSLSessionCache shmcb as well: the session cache does not take the
#     tickets' place: the same checks pass and the tickets are still under
#     the token key (OpenSSL looks a session ID up only when the client sent
#     no ticket);
#   - two Apache instances resume each other's tickets only with the same
#     ServerName:port (mod_ssl's session id context is the hex MD5 of it;
#     without a port in ServerName, the virtual host's port counts);
#   - SSLSessionTicketKeyFile: mod_ssl's own callback replaces p11ticket's,
#     the tickets are under the file's key (recorded, asserted);
#   - control without p11ticket: tickets under a key the token does not have.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/servers/lib_servers.sh
. "$(dirname "$0")/lib_servers.sh"
srv_begin apache
srv_need apache2 "Debian's apache2"

info "Apache httpd with p11ticket from openssl.cnf, no session cache"
srv_apache_conf a "$(srv_free_port)"
srv_apache_start a
srv_basic_checks "$(p11t_port a)" a "Apache"
srv_alive a
srv_apache_no_crash a
assert_no_grep "$P11T_WORK/a.err" 'p11ticket' "Apache: no p11ticket error"

info "Apache httpd with SSLSessionCache shmcb"
srv_apache_conf b "$(srv_free_port)"
# The cache is a server-wide directive: it goes before the virtual host.
sed -i "/^<VirtualHost/i SSLSessionCache shmcb:$P11T_WORK/b/run/scache(512000)" "$P11T_WORK/b/apache2.conf"
srv_apache_start b
srv_basic_checks "$(p11t_port b)" b "Apache with SSLSessionCache"
srv_alive b
srv_apache_no_crash b

info "Apache farms: the session id context is the hex MD5 of ServerName:port"
# a and b listen on different ports and their ServerName names no port, so
# their sid_ctx differ: b decrypts a's ticket (same token key) but does not
# resume it.
for v in 2 3; do
    assert_eq New "$(p11t_resume "$(p11t_port b)" "a-t1$v" "b-from-a-1$v" "tls1_$v")" \
        "another port, ServerName without port: TLS 1.$v ticket of the first"
done
srv_stop b
srv_stop a
# With the same ServerName:port in both virtual hosts they resume each
# other's tickets, whatever port they listen on.
srv_apache_conf c "$(srv_free_port)" "ServerName localhost:443"
srv_apache_start c
srv_apache_conf d "$(srv_free_port)" "ServerName localhost:443"
srv_apache_start d
for v in 2 3; do
    p11t_get_ticket "$(p11t_port c)" "c-1$v" "tls1_$v"
    assert_eq Reused "$(p11t_resume "$(p11t_port d)" "c-1$v" "d-from-c-1$v" "tls1_$v")" \
        "same ServerName localhost:443: TLS 1.$v ticket of the other Apache"
done
srv_apache_no_crash c
srv_apache_no_crash d
srv_stop d
srv_stop c

info "SSLSessionTicketKeyFile (48 bytes) as well: Apache's own key wins"
# mod_ssl (2.4.71, OpenSSL 3) installs its own EVP ticket callback for
# SSLSessionTicketKeyFile after SSL_CTX_new(), replacing p11ticket's: the
# tickets are under the file's key name and p11ticket is not used.
head -c 48 /dev/urandom >"$P11T_WORK/apache-ticket.key"
file_key=$(od -An -N16 -tx1 "$P11T_WORK/apache-ticket.key" | tr -d ' \n')
srv_apache_conf k "$(srv_free_port)" "SSLSessionTicketKeyFile $P11T_WORK/apache-ticket.key"
srv_apache_start k
for v in tls1_2 tls1_3; do
    p11t_get_ticket "$(p11t_port k)" "k-$v" "$v"
    assert_eq "$file_key" "$(p11t_sess_key "$P11T_WORK/k-$v.pem")" "SSLSessionTicketKeyFile: $v ticket key name (the file's, not the token's)"
    assert_eq Reused "$(p11t_resume "$(p11t_port k)" "k-$v" "k-$v-r" "$v")" "SSLSessionTicketKeyFile: $v resumption"
done
srv_apache_no_crash k
srv_stop k

info "control: Apache without p11ticket (OPENSSL_CONF=/dev/null)"
srv_apache_conf e "$(srv_free_port)"
srv_apache_start e OPENSSL_CONF=/dev/null
p11t_get_ticket "$(p11t_port e)" e-tls1_2 tls1_2
ke=$(p11t_sess_key "$P11T_WORK/e-tls1_2.pem")
[[ "$ke" =~ ^[0-9a-f]{32}$ ]] || fail "control: no ticket from Apache without p11ticket ($ke)"
assert_ne "$(srv_current_key)" "$ke" "control: ticket key name"
srv_stop e
p11t_pass

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# haproxy: Debian's unmodified HAProxy 2.6 (master-worker, nbthread 2,
# worker as www-data, no session-ID cache) issues and resumes tickets under
# the token's key when openssl.cnf loads p11ticket: TLS 1.2 -reconnect 1 New
# 5 Reused, TLS 1.3 resumption, token key names; a second HAProxy resumes
# the first one's tickets (HAProxy's session id context is a constant).
# With tls-ticket-keys FILE on the bind line HAProxy's own callback replaces
# p11ticket's: the tickets are under the file's key (recorded, asserted).
# Control: without p11ticket the tickets are under a key the token does not
# have and a second HAProxy cannot resume them.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/servers/lib_servers.sh
. "$(dirname "$0")/lib_servers.sh"
srv_begin haproxy
srv_need haproxy "Debian's haproxy"

info "HAProxy with p11ticket from openssl.cnf"
srv_haproxy_conf a "$(srv_free_port)"
srv_haproxy_start a
pa=$(p11t_port a)
worker=$(srv_children a)
assert_eq 2 "$(find "/proc/$worker/task" -mindepth 1 -maxdepth 1 | wc -l)" "HAProxy worker threads (nbthread 2)"
srv_basic_checks "$pa" a "HAProxy"

info "a second HAProxy resumes the first one's tickets"
srv_haproxy_conf b "$(srv_free_port)"
srv_haproxy_start b
for v in tls1_2 tls1_3; do
    assert_eq Reused "$(p11t_resume "$(p11t_port b)" "a-t1${v#tls1_}" "b-from-a-$v" "$v")" \
        "second HAProxy: $v ticket of the first"
done
srv_alive a
srv_alive b
srv_haproxy_no_crash a
srv_haproxy_no_crash b
srv_stop b
srv_stop a

info "tls-ticket-keys FILE as well: HAProxy's own keys win"
# HAProxy 2.6 installs its own EVP ticket callback for tls-ticket-keys
# after SSL_CTX_new(), replacing the one p11ticket installed there: the
# tickets are under the file's encryption key (the penultimate of the file)
# and p11ticket is not used.  Nothing is logged.
for i in 1 2 3; do
    head -c 48 /dev/urandom >"$P11T_WORK/hk$i"
    base64 -w0 "$P11T_WORK/hk$i"
    echo
done >"$P11T_WORK/haproxy-ticket.keys"
file_key=$(od -An -N16 -tx1 "$P11T_WORK/hk2" | tr -d ' \n')
srv_haproxy_conf k "$(srv_free_port)" tls-ticket-keys "$P11T_WORK/haproxy-ticket.keys"
srv_haproxy_start k
for v in tls1_2 tls1_3; do
    p11t_get_ticket "$(p11t_port k)" "k-$v" "$v"
    assert_eq "$file_key" "$(p11t_sess_key "$P11T_WORK/k-$v.pem")" "tls-ticket-keys: $v ticket key name (the file's, not the token's)"
    assert_eq Reused "$(p11t_resume "$(p11t_port k)" "k-$v" "k-$v-r" "$v")" "tls-ticket-keys: $v resumption"
done
srv_haproxy_no_crash k
srv_stop k

info "control: HAProxy without p11ticket (OPENSSL_CONF=/dev/null)"
srv_haproxy_conf c "$(srv_free_port)"
srv_haproxy_start c OPENSSL_CONF=/dev/null
p11t_get_ticket "$(p11t_port c)" c-tls1_2 tls1_2
kc=$(p11t_sess_key "$P11T_WORK/c-tls1_2.pem")
[[ "$kc" =~ ^[0-9a-f]{32}$ ]] || fail "control: no ticket from HAProxy without p11ticket ($kc)"
assert_ne "$(srv_current_key)" "$kc" "control: ticket key name"
srv_haproxy_conf d "$(srv_free_port)"
srv_haproxy_start d OPENSSL_CONF=/dev/null
assert_eq New "$(p11t_resume "$(p11t_port d)" c-tls1_2 d-from-c tls1_2)" "control: a second HAProxy with its own keys"
srv_stop d
srv_stop c
p11t_pass

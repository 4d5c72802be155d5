#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# node: Debian's Node.js 18 (libnode108 links the system libssl3; unpacked by
# scripts/install-deps.sh, since the machine's NodeSource node links OpenSSL
# statically and can never load a provider) runs a plain https server
# (tests/servers/server.js: https.createServer({key, cert})) as
# `node --openssl-shared-config server.js`: Node 18 otherwise reads its own
# nodejs_conf section, not openssl_conf.
#   - with OPENSSL_CONF: TLS 1.2 -reconnect 1 New 5 Reused, TLS 1.3
#     resumption, tickets under the token's current key; a second node
#     process with the same command line resumes the first one's tickets;
#     one with another command line does not: Node's default
#     sessionIdContext is a hash of process.argv (see server.js);
#   - with Node's ticketKeys option as well: still the token key (Node's
#     callback is the legacy one, which libssl 3 ignores when p11ticket's
#     EVP callback is set);
#   - control without OPENSSL_CONF: tickets under Node's own in-memory key,
#     which the token does not have.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/servers/lib_servers.sh
. "$(dirname "$0")/lib_servers.sh"
srv_begin node
srv_node_setup

info "node --openssl-shared-config with p11ticket from openssl.cnf"
srv_node_start a "$(srv_free_port)"
pa=$(p11t_port a)
srv_basic_checks "$pa" a "Node.js"

info "a second node process resumes the first one's tickets"
srv_node_start b "$(srv_free_port)"
for v in 2 3; do
    assert_eq Reused "$(p11t_resume "$(p11t_port b)" "a-t1$v" "b-from-a-1$v" "tls1_$v")" \
        "second node: TLS 1.$v ticket of the first"
done
info "a node process with other arguments has another session id context"
srv_node_start o "$(srv_free_port)" -- other
for v in 2 3; do
    assert_eq New "$(p11t_resume "$(p11t_port o)" "a-t1$v" "o-from-a-1$v" "tls1_$v")" \
        "node with other argv: TLS 1.$v ticket of the first"
    assert_eq "$(srv_current_key)" "$(p11t_sess_key "$P11T_WORK/o-from-a-1$v.pem")" \
        "node with other argv: TLS 1.$v new ticket under the token key"
done
srv_stop o
srv_alive a
srv_alive b
assert_no_grep "$P11T_WORK/a.err" 'p11ticket|Error' "node: no p11ticket error"
srv_stop b
srv_stop a

info "ticketKeys (48 bytes) as well: the token key still wins"
# Node installs the legacy ticket callback, also for its ticketKeys option,
# and libssl 3 calls the EVP callback p11ticket installed instead.
head -c 48 /dev/urandom >"$P11T_WORK/node-ticket.keys"
file_key=$(od -An -N16 -tx1 "$P11T_WORK/node-ticket.keys" | tr -d ' \n')
srv_node_start k "$(srv_free_port)" P11T_NODE_TICKET_KEYS="$P11T_WORK/node-ticket.keys"
for v in tls1_2 tls1_3; do
    p11t_get_ticket "$(p11t_port k)" "k-$v" "$v"
    key=$(p11t_sess_key "$P11T_WORK/k-$v.pem")
    assert_ne "$file_key" "$key" "ticketKeys: $v ticket key name (not the option's)"
    srv_assert_token_key "$P11T_WORK/k-$v.pem" "ticketKeys: $v"
    assert_eq Reused "$(p11t_resume "$(p11t_port k)" "k-$v" "k-$v-r" "$v")" "ticketKeys: $v resumption"
done
srv_stop k

info "control: node without OPENSSL_CONF"
srv_node_start c "$(srv_free_port)" OPENSSL_CONF=
p11t_reconnect "$(p11t_port c)" "$P11T_WORK/c-reconnect.out" -tls1_2
srv_assert_reconnect "$P11T_WORK/c-reconnect.out" "node without p11ticket"
p11t_get_ticket "$(p11t_port c)" c-tls1_2 tls1_2
kc=$(p11t_sess_key "$P11T_WORK/c-tls1_2.pem")
[[ "$kc" =~ ^[0-9a-f]{32}$ ]] || fail "control: no ticket from node without p11ticket ($kc)"
assert_ne "$(srv_current_key)" "$kc" "control: ticket key name"
srv_stop c
srv_node_start kc "$(srv_free_port)" OPENSSL_CONF= P11T_NODE_TICKET_KEYS="$P11T_WORK/node-ticket.keys"
p11t_get_ticket "$(p11t_port kc)" kc-tls1_2 tls1_2
assert_eq "$file_key" "$(p11t_sess_key "$P11T_WORK/kc-tls1_2.pem")" "control with ticketKeys: ticket key name (the option's)"
srv_stop kc
p11t_pass

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# check_connect: `p11ticket check --connect HOST:PORT` verifies a running
# server from the outside, and `check` refuses a configuration whose
# auto-enable (default yes) is not backed by the ticket-HMAC routing.
#   - p11ticket-server with a token key: exit 0, both versions report a
#     ticket under the token's current key and resumed: yes;
#   - a TLS 1.3-only p11ticket-server: TLS 1.2 is reported as not offered
#     and not counted (exit 0);
#   - plain_ticket_server (in-memory keys from a key file): exit 1, "NOT a
#     token key";
#   - p11ticket-server -no_ticket: exit 1, "no ticket issued" (TLS 1.3 gets
#     a 32-byte stateful session reference, which is not a ticket);
#   - a closed port: exit 2, the address named;
#   - without alg_section routing: exit 2 and the auto-enable message, with
#     and without --connect; with --routing no such message; a mandatory
#     default_properties is refused; auto-enable = no needs no routing;
#   - after `create` + `rotate` (the new key current, the old one retired to
#     decrypt-only), a server that has not rescanned yet (refresh-interval
#     = 3600) still issues under the old key: check reports it decrypt-only
#     and warns that it is not the current key.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin check_connect
p11t_token --routing --set "refresh-interval = 3600"
k1=$(p11t_key_names)
assert_eq 1 "$(grep -c . <<<"$k1")" "key generations listed"

# check_connect NAME PORT [args]: `check --connect 127.0.0.1:PORT` into
# WORK/NAME.out (stdout) and WORK/NAME.tool (stderr); P11T_RC its status.
# NAME must differ from the servers' names (their logs are WORK/NAME.*).
check_connect() {
    local name=$1 port=$2
    shift 2
    local t0=$SECONDS
    p11t_tool_rc "$name" check --connect "127.0.0.1:$port" "$@"
    note "check --connect 127.0.0.1:$port $* -> exit $P11T_RC ($((SECONDS - t0)) s)"
    sed 's/^/      | /' "$P11T_WORK/$name.out"
    sed 's/^/      ! /' "$P11T_WORK/$name.tool"
}

# version_line NAME V: the line of stdout for TLSv1.V.
version_line() { grep -E "^TLSv1\.$2: " "$P11T_WORK/$1.out" || true; }

info "p11ticket-server with a token key"
p11t_server_start a
pa=$(p11t_port a)
check_connect token "$pa"
assert_eq 0 "$P11T_RC" "exit status against p11ticket-server"
p11t_gens_load
assert_eq "$k1" "$(p11t_gens_current)" "the token's current key"
for v in 2 3; do
    line=$(version_line token $v)
    [[ "$line" == "TLSv1.$v: ticket under token key $k1 (active, current); resumed: yes"* ]] ||
        fail "TLSv1.$v line: '$line'"
    note "ok: TLSv1.$v: ticket under the current key $k1, resumed"
done
# TLS 1.3 renews after every resumption; TLS 1.2 only for a key that is
# no longer current.
assert_grep "$P11T_WORK/token.out" "^TLSv1\.3: .*; new ticket under token key $k1 \(active, current\)\$" "TLSv1.3 new ticket under $k1"
assert_grep "$P11T_WORK/token.out" '^TLSv1\.2: .*; no new ticket$' "TLSv1.2: no new ticket"
assert_eq 2 "$(grep -c . "$P11T_WORK/token.out")" "result lines"
assert_no_grep "$P11T_WORK/token.tool" 'auto-enable|routed' "no routing error with --routing"
p11t_server_alive a

info "--servername is sent as SNI (the server does not care)"
check_connect sni "$pa" --servername tickets.example
assert_eq 0 "$P11T_RC" "exit status with --servername"

info "a TLS 1.3-only p11ticket-server: TLS 1.2 is not counted"
p11t_server_start t13 -tls1_3
check_connect tls13only "$(p11t_port t13)"
assert_eq 0 "$P11T_RC" "exit status against a TLS 1.3-only server"
assert_grep "$P11T_WORK/tls13only.out" '^TLSv1\.2: no handshake \(.*\): the server may not offer TLSv1\.2$' "TLSv1.2 reported as not offered"
assert_grep "$P11T_WORK/tls13only.out" "^TLSv1\.3: ticket under token key $k1 \(active, current\); resumed: yes" "TLSv1.3 still checked"
p11t_server_stop t13

info "plain_ticket_server: tickets under in-memory keys"
OPENSSL_CONF=/dev/null openssl rand -out "$P11T_WORK/plain.keys" 80
plain_name=$(od -An -tx1 -N16 "$P11T_WORK/plain.keys" | tr -d ' \n')
p11t_plain_start plain openssl80 "$P11T_WORK/plain.keys"
check_connect c-plain "$(p11t_port plain)"
assert_eq 1 "$P11T_RC" "exit status against plain_ticket_server"
for v in 2 3; do
    assert_grep "$P11T_WORK/c-plain.out" "^TLSv1\.$v: ticket under key $plain_name: NOT a token key \(the server uses in-memory ticket keys.*\); resumed: yes" "TLSv1.$v: NOT a token key"
done
assert_grep "$P11T_WORK/c-plain.tool" "127\.0\.0\.1:$(p11t_port plain): TLSv1\.2: the ticket's key is not on the token" "diagnostic on stderr"
p11t_server_stop plain

info "p11ticket-server -no_ticket"
p11t_server_start nt -no_ticket
check_connect noticket "$(p11t_port nt)"
assert_eq 1 "$P11T_RC" "exit status against a server without tickets"
assert_grep "$P11T_WORK/noticket.out" '^TLSv1\.2: no ticket issued; ' "TLSv1.2: no ticket"
assert_grep "$P11T_WORK/noticket.out" '^TLSv1\.3: no ticket issued \(only a 32-byte session reference' "TLSv1.3: no ticket (stateful only)"
assert_grep "$P11T_WORK/noticket.tool" "127\.0\.0\.1:$(p11t_port nt): TLSv1\.3: the server issued no ticket" "diagnostic on stderr"
p11t_server_stop nt

info "a closed port"
p11t_server_start gone
pg=$(p11t_port gone)
p11t_server_stop gone
check_connect closed "$pg"
assert_eq 2 "$P11T_RC" "exit status for a closed port"
assert_grep "$P11T_WORK/closed.tool" "cannot connect to 127\.0\.0\.1:$pg: Connection refused" "the address and the reason are named"
assert_eq 0 "$(grep -c . "$P11T_WORK/closed.out")" "no result lines"

info "bad usage"
p11t_tool_rc usage check --connect 127.0.0.1
assert_eq 2 "$P11T_RC" "exit status for --connect without a port"
assert_grep "$P11T_WORK/usage.tool" "not HOST:PORT" "the operand is named"
p11t_tool_rc usage2 check --servername x
assert_eq 2 "$P11T_RC" "exit status for --servername without --connect"

info "auto-enable (default yes) without routing"
p11t_write_conf "$P11T_WORK/norouting.cnf"
for mode in memory connect; do
    args=(check)
    [[ $mode == connect ]] && args+=(--connect "127.0.0.1:$pa")
    rc=0
    p11t_tool --config "$P11T_WORK/norouting.cnf" "${args[@]}" \
        >"$P11T_WORK/norouting-$mode.out" 2>"$P11T_WORK/norouting-$mode.tool" || rc=$?
    sed 's/^/      ! /' "$P11T_WORK/norouting-$mode.tool"
    assert_eq 2 "$rc" "exit status of check ($mode) without routing"
    assert_grep "$P11T_WORK/norouting-$mode.tool" 'auto-enable is on by default, but the ticket HMAC is not routed to the provider: unmodified servers .* would issue no session tickets at all' "check ($mode) explains the missing routing"
    assert_grep "$P11T_WORK/norouting-$mode.tool" "add 'alg_section = algs' to \[openssl_init\] and a section \[algs\] with 'default_properties = \?p11ticket\.token=yes'" "check ($mode) says how to fix it"
    assert_eq 0 "$(grep -c . "$P11T_WORK/norouting-$mode.out")" "check ($mode): no result lines"
done

info "a mandatory default_properties is refused"
sed 's/^default_properties = ?p11ticket/default_properties = p11ticket/' \
    "$P11T_CONF" >"$P11T_WORK/mandatory.cnf"
rc=0
p11t_tool --config "$P11T_WORK/mandatory.cnf" check >/dev/null 2>"$P11T_WORK/mandatory.tool" || rc=$?
sed 's/^/      ! /' "$P11T_WORK/mandatory.tool"
assert_eq 2 "$rc" "exit status with a mandatory property"
assert_grep "$P11T_WORK/mandatory.tool" "makes p11ticket.token=yes mandatory" "check names the mandatory property"

info "auto-enable = no needs no routing"
p11t_write_conf "$P11T_WORK/noauto.cnf" --set "auto-enable = no"
rc=0
p11t_tool --config "$P11T_WORK/noauto.cnf" check >"$P11T_WORK/noauto.out" 2>"$P11T_WORK/noauto.tool" || rc=$?
cat "$P11T_WORK/noauto.out"
sed 's/^/      ! /' "$P11T_WORK/noauto.tool"
assert_eq 0 "$rc" "exit status of check with auto-enable = no and no routing"
assert_no_grep "$P11T_WORK/noauto.tool" 'routed' "no routing error with auto-enable = no"

info "after rotate: the old key is decrypt-only, the server has not rescanned"
sleep 1 # K2's encrypt-from must be later than K1's
p11t_tool_ok create2 create
k2=$(p11t_created_name create2)
# rotate leaves the overlap alone while the current key is less than 2 s
# old (racing rotators may still be creating objects): wait that out.
sleep 3
p11t_tool_ok rotate rotate
p11t_gens_load
p11t_gens_show
assert_eq decrypt-only "$(p11t_gen "$k1" state)" "K1 after rotate"
assert_eq "$k2" "$(p11t_gens_current)" "K2 is current"
check_connect rotated "$pa"
assert_eq 0 "$P11T_RC" "exit status: token tickets, resumed"
for v in 2 3; do
    assert_grep "$P11T_WORK/rotated.out" "^TLSv1\.$v: ticket under token key $k1 \(decrypt-only\); resumed: yes" "TLSv1.$v: ticket under K1, decrypt-only"
done
assert_grep "$P11T_WORK/rotated.tool" "issued its ticket under $k1, not under the token's current key $k2" "warning: not the current key"
p11t_server_alive a
p11t_server_stop a
p11t_pass

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# auto_rotate: with auto-rotate = yes the provider creates the successor
# generation itself (here at once: rotate-lead 13h is longer than the
# current key's 12h encrypt window).  The successor is pending: tickets are
# still issued under the current key, and old tickets keep resuming, on
# this server and on a server without auto-rotate.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin auto_rotate
p11t_token
first=$(p11t_key_names)
assert_eq 1 "$(grep -c . <<<"$first")" "key generations before the server starts"

p11t_write_conf "$P11T_WORK/rotate.cnf" --set "auto-rotate = yes" --set "rotate-lead = 13h"
p11t_server_start rot --conf "$P11T_WORK/rotate.cnf" -www
p11t_server_start plain -www
pr=$(p11t_port rot)
pp=$(p11t_port plain)

info "a connection makes the provider scan the token, and rotate"
p11t_sclient "$pr" "$P11T_WORK/1.out" -tls1_3 -sess_out "$P11T_WORK/1.pem"
assert_eq New "$(p11t_result "$P11T_WORK/1.out")" "first connection"
tick=$(p11t_ticket_hex "$P11T_WORK/1.pem")
assert_eq "$first" "${tick:0:32}" "ticket issued under the current key"

p11t_tool --config "$P11T_CONF" list >"$P11T_WORK/list.out" 2>&1 || fail "p11ticket list failed"
cat "$P11T_WORK/list.out"
names=$(p11t_key_names)
assert_eq 2 "$(grep -c . <<<"$names")" "key generations after auto-rotation"
second=$(grep -vx -- "$first" <<<"$names")
assert_eq 2 "$(count_lines "$P11T_WORK/list.out" "^$second .* pending ")" "successor $second is pending (aes + hmac)"
assert_eq 2 "$(count_lines "$P11T_WORK/list.out" "^$first .* active ")" "current key $first is active (aes + hmac)"

info "tickets keep resuming, here and on a server without auto-rotate"
for port in "$pr" "$pp"; do
    p11t_sclient "$port" "$P11T_WORK/r.out" -tls1_3 -sess_in "$P11T_WORK/1.pem" -sess_out "$P11T_WORK/r.pem"
    assert_eq Reused "$(p11t_result "$P11T_WORK/r.out")" "resumption on port $port"
    tick=$(p11t_ticket_hex "$P11T_WORK/r.pem")
    assert_eq "$first" "${tick:0:32}" "renewed ticket still under the current key"
done
p11t_server_stop rot
p11t_server_stop plain
assert_eq 2 "$(p11t_key_names | grep -c .)" "key generations at the end (no duplicate successor)"
p11t_pass

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# two_servers: two servers sharing one token, both running at once, accept
# each other's tickets (the load-balancer case).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin two_servers
p11t_token
p11t_server_start a -www
p11t_server_start b -www
pa=$(p11t_port a)
pb=$(p11t_port b)

for v in tls1_3 tls1_2; do
    info "$v: ticket from A on B"
    p11t_sclient "$pa" "$P11T_WORK/$v-a.out" "-$v" -sess_out "$P11T_WORK/$v-a.pem"
    assert_eq New "$(p11t_result "$P11T_WORK/$v-a.out")" "$v: first connection to A"
    p11t_sclient "$pb" "$P11T_WORK/$v-ab.out" "-$v" -sess_in "$P11T_WORK/$v-a.pem"
    assert_eq Reused "$(p11t_result "$P11T_WORK/$v-ab.out")" "$v: A's ticket on B"

    info "$v: ticket from B on A"
    p11t_sclient "$pb" "$P11T_WORK/$v-b.out" "-$v" -sess_out "$P11T_WORK/$v-b.pem"
    assert_eq New "$(p11t_result "$P11T_WORK/$v-b.out")" "$v: first connection to B"
    p11t_sclient "$pa" "$P11T_WORK/$v-ba.out" "-$v" -sess_in "$P11T_WORK/$v-b.pem"
    assert_eq Reused "$(p11t_result "$P11T_WORK/$v-ba.out")" "$v: B's ticket on A"
done

p11t_server_alive a
p11t_server_alive b
p11t_server_stop a
p11t_server_stop b
p11t_pass

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# lifecycle_pickup: a long-running server picks up generations the tool
# creates, without a restart: servers rescan the token on their own, so
# every change reaches them within the refresh bound (docs/rotation.md).
#
#   1. the server starts on a token without any key: no tickets; after
#      `create` K1 it issues tickets under K1 within the refresh bound;
#   2. `create --start +5s` makes K2, pending: tickets stay under K1 until
#      K2's encrypt-from, and within the refresh bound after it they are
#      under K2; K1's tickets keep resuming (K1 is still active, only no
#      longer the newest);
#   3. a plain `create` (K3, starting now) takes over within the bound.
# The server's pid is the same throughout.  refresh-interval = 1; each
# "within the bound" check waits 2 s (rescan-interval is the default 1 s).
# K2's start is scaled by P11T_WAIT_SCALE (valgrind).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin lifecycle_pickup
p11t_token_empty --set "refresh-interval = 1"
p11t_server_start a -www
pa=$(p11t_port a)
pid=$(p11t_pid a)

# ticket_key TAG VERSION: a fresh full handshake; prints its ticket's key.
ticket_key() {
    p11t_get_ticket "$pa" "$1" "$2" >/dev/null
    p11t_sess_key "$P11T_WORK/$1.pem"
}

info "1. no key yet: no tickets"
for v in tls1_3 tls1_2; do
    k=$(ticket_key "none-$v" "$v")
    [[ "$k" == none || "$k" == NO-SESSION-FILE ]] || fail "$v: a ticket under $k on an empty token"
    note "ok: $v: no ticket ($k)"
done
p11t_tool_ok create1 create --encrypt-for 10m --decrypt-for 10m
k1=$(p11t_created_name create1)
note "K1 = $k1"
sleep 2
for v in tls1_3 tls1_2; do
    assert_eq "$k1" "$(ticket_key "k1-$v" "$v")" "$v: ticket key 2 s after K1 was created"
done

info "2. K2 starts encrypting 5 s from now"
p11t_tool_ok create2 create --start +$((5 * P11T_WAIT_SCALE))s --encrypt-for 10m --decrypt-for 10m
k2=$(p11t_created_name create2)
note "K2 = $k2"
p11t_gens_load
p11t_gens_show
assert_eq pending "$(p11t_gen "$k2" state)" "K2 state"
assert_eq "$k1" "$(p11t_gens_current)" "current key while K2 is pending"
ef2=$(p11t_gen "$k2" ef)
# Still before K2's start (or nothing is shown): the server sees K2 within
# 1 s, pending, and must not encrypt with it.
sleep 1.2
(($(date +%s) + 2 * P11T_WAIT_SCALE < ef2)) || fail "the machine is too slow: K2 starts before the pending check is done"
for v in tls1_3 tls1_2; do
    assert_eq "$k1" "$(ticket_key "pend-$v" "$v")" "$v: ticket key while K2 is pending"
done
p11t_wait_past "$ef2" 2 "K2's encrypt-from ($ef2) has passed, plus the refresh bound"
p11t_gens_load
p11t_gens_show
assert_eq "$k2" "$(p11t_gens_current)" "current key after K2's start"
for v in tls1_3 tls1_2; do
    assert_eq "$k2" "$(ticket_key "k2-$v" "$v")" "$v: ticket key after K2's start"
    assert_eq Reused "$(p11t_resume "$pa" "k1-$v" "k1r-$v" "$v")" "$v: a K1 ticket still resumes"
    assert_eq Reused "$(p11t_resume "$pa" "k2-$v" "k2r-$v" "$v")" "$v: a K2 ticket resumes"
done

info "3. K3, created to start now, takes over"
p11t_tool_ok create3 create --encrypt-for 10m --decrypt-for 10m
k3=$(p11t_created_name create3)
note "K3 = $k3"
p11t_gens_load
p11t_gens_show
# K3 starts at least 2 s after K2 (the wait above), so it is the newest.
assert_eq "$k3" "$(p11t_gens_current)" "current key by the tool"
sleep 2
for v in tls1_3 tls1_2; do
    assert_eq "$k3" "$(ticket_key "k3-$v" "$v")" "$v: ticket key 2 s after K3 was created"
    for t in k1 k2; do
        assert_eq Reused "$(p11t_resume "$pa" "$t-$v" "$t-late-$v" "$v")" "$v: a ${t^^} ticket still resumes"
    done
done

assert_eq "$pid" "$(p11t_pid a)" "server pid (never restarted)"
p11t_server_alive a
assert_eq 1 "$(count_lines "$P11T_WORK/a.out" '^ACCEPT ')" "ACCEPT lines printed by the server (one start)"
p11t_server_stop a
p11t_pass

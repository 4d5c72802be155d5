#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# lifecycle_expiry: after K1's decrypt-until has passed, a ticket under K1
# gives a full handshake (servers refuse expired keys: docs/design.md,
# "Key states"), the server keeps working, and `p11ticket purge` destroys K1
# in the token.
#
# K1 encrypts for 2 s and decrypts for 3 s more.  It is created pending
# (--start +2s) on a running server, and the tickets are fetched as soon as
# its encrypt window opens, so the short window does not depend on how fast
# the server starts.  A second generation, K0 (long windows), is created
# once K1's tickets are out, so that the server still has a key to issue
# tickets with after K1 expires: the full handshake must come from K1's
# expiry, not from a server that can no longer issue tickets at all.
# refresh-interval = 1; the script waits 2 s beyond decrypt-until.  K1's
# windows are scaled by P11T_WAIT_SCALE (valgrind).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin lifecycle_expiry
p11t_token_empty --set "refresh-interval = 1"

p11t_server_start a -www
pa=$(p11t_port a)

info "create K1: starts in 2 s, encrypts for 2 s, then decrypts for 3 s"
p11t_tool_ok create1 create --start +2s --encrypt-for $((2 * P11T_WAIT_SCALE))s --decrypt-for $((3 * P11T_WAIT_SCALE))s
k1=$(p11t_created_name create1)
note "K1 = $k1"
p11t_gens_load
p11t_gens_show
p11t_wait_past "$(p11t_gen "$k1" ef)" 0 "K1's encrypt window opens"

info "tickets under K1; they resume while K1 is valid"
for v in tls1_3 tls1_2; do
    p11t_get_ticket "$pa" "k1-$v" "$v"
    assert_eq "$k1" "$(p11t_sess_key "$P11T_WORK/k1-$v.pem")" "$v ticket key name"
done
for v in tls1_3 tls1_2; do
    assert_eq Reused "$(p11t_resume "$pa" "k1-$v" "early-$v" "$v")" "$v: resumption while K1 is valid"
done

info "K0: a long-lived generation, so the server can still issue tickets later"
p11t_tool_ok create0 create --encrypt-for 10m --decrypt-for 10m
k0=$(p11t_created_name create0)
note "K0 = $k0"
p11t_gens_load
p11t_gens_show
du=$(p11t_gen "$k1" du)

info "K1 expires"
p11t_wait_past "$du" 2 "K1's decrypt-until ($du) has passed, plus a refresh"
p11t_gens_load
p11t_gens_show
assert_eq expired "$(p11t_gen "$k1" state)" "K1 state"
assert_eq "$k0" "$(p11t_gens_current)" "current key"

for v in tls1_3 tls1_2; do
    assert_eq New "$(p11t_resume "$pa" "k1-$v" "late-$v" "$v")" "$v: the K1 ticket after expiry gives a full handshake"
    assert_eq "$k0" "$(p11t_sess_key "$P11T_WORK/late-$v.pem")" "$v: that full handshake got a ticket under K0"
    assert_eq Reused "$(p11t_resume "$pa" "late-$v" "k0-$v" "$v")" "$v: the K0 ticket resumes"
done
p11t_server_alive a
assert_no_grep "$P11T_WORK/a.err" "handshake failed" "no failed handshake in the server log"

info "purge destroys K1 (and only K1)"
p11t_tool_ok purge purge
assert_grep "$P11T_WORK/purge.out" "^destroyed $k1: expired" "purge reports K1 destroyed"
p11t_gens_load
p11t_gens_show
assert_eq absent "$(p11t_gen "$k1" state)" "K1 after purge"
assert_eq 1 "$(p11t_gens_count)" "generations left"
assert_eq active "$(p11t_gen "$k0" state)" "K0 after purge"
assert_eq "" "$(p11t_key_names | grep -x -- "$k1" || true)" "K1 in the plain list output"
p11t_tool_ok purge2 purge
assert_grep "$P11T_WORK/purge2.out" "^nothing to do" "purge again: nothing to do"

info "after the purge the server still refuses K1's ticket and serves K0's"
sleep 2
for v in tls1_3 tls1_2; do
    assert_eq New "$(p11t_resume "$pa" "k1-$v" "gone-$v" "$v")" "$v: the K1 ticket after the purge"
    assert_eq Reused "$(p11t_resume "$pa" "late-$v" "k0b-$v" "$v")" "$v: a K0 ticket after the purge"
done
p11t_server_alive a
p11t_server_stop a
p11t_pass

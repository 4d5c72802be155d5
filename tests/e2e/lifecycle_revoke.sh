#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# lifecycle_revoke: after `p11ticket revoke K1`, tickets under K1 stop
# resuming within the refresh bound, and the client gets a full handshake
# (revoke destroys the key in the token); `rotate` then creates a new
# active key and new tickets are issued, and resume, under it.
#
# refresh-interval = 1, so the documented bound is 1 s; the script waits 2 s.
# Two servers run: one that used K1 a moment before the revoke (its cached
# handles go stale) and one that has not touched the token since start-up.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin lifecycle_revoke
p11t_token_empty --set "refresh-interval = 1"

p11t_tool_ok create1 create --encrypt-for 10m --decrypt-for 10m
k1=$(p11t_created_name create1)
note "K1 = $k1"
p11t_server_start a -www
p11t_server_start b -www
pa=$(p11t_port a)
pb=$(p11t_port b)

info "tickets under K1 resume on both servers"
for v in tls1_3 tls1_2; do
    p11t_get_ticket "$pa" "k1-$v" "$v"
    assert_eq "$k1" "$(p11t_sess_key "$P11T_WORK/k1-$v.pem")" "$v ticket key name"
    assert_eq Reused "$(p11t_resume "$pa" "k1-$v" "pre-a-$v" "$v")" "$v: resumes on A before the revoke"
done

info "revoke K1"
p11t_tool_ok revoke revoke "$k1"
assert_grep "$P11T_WORK/revoke.out" "^revoked $k1" "revoke reports K1"
sed 's/^/      | /' "$P11T_WORK/revoke.tool"
assert_grep "$P11T_WORK/revoke.out" "within 1 ?s \\(refresh-interval\\)" "revoke states the configured refresh bound (1 s)"
assert_grep "$P11T_WORK/revoke.tool" "rotate" "revoke asks to run rotate (K1 was the encrypting key)"
p11t_gens_load
p11t_gens_show
assert_eq absent "$(p11t_gen "$k1" state)" "K1 on the token after revoke"
assert_eq 0 "$(p11t_gens_count)" "generations on the token"
p11t_tool_rc revoke2 revoke "$k1"
assert_eq 1 "$P11T_RC" "exit status of a second revoke of K1 (unknown name)"

info "within the refresh bound, K1's tickets give a full handshake on both servers"
sleep 2
for v in tls1_3 tls1_2; do
    for s in a b; do
        assert_eq New "$(p11t_resume "$(p11t_port $s)" "k1-$v" "post-$s-$v" "$v")" "$v: K1 ticket on $s after the revoke"
        # No key is active now: the full handshake issues no ticket (TLS 1.3
        # then sends no NewSessionTicket, so s_client saves no session).
        k=$(p11t_sess_key "$P11T_WORK/post-$s-$v.pem")
        [[ "$k" == none || "$k" == NO-SESSION-FILE ]] || fail "$v: $s issued a ticket under $k with no active key"
        note "ok: $v: $s issued no ticket ($k)"
    done
done
p11t_server_alive a
p11t_server_alive b

info "rotate creates a new active key; new tickets are issued under it"
p11t_tool_ok rotate rotate --encrypt-for 10m --decrypt-for 10m --lead 1m
p11t_gens_load
p11t_gens_show
k2=$(p11t_gens_current)
[[ "$k2" =~ ^[0-9a-f]{32}$ ]] || fail "no current key after rotate"
assert_ne "$k1" "$k2" "new current key"
assert_eq 1 "$(p11t_gens_count active)" "active generations"
sleep 2
for v in tls1_3 tls1_2; do
    for s in a b; do
        p11t_get_ticket "$(p11t_port $s)" "k2-$s-$v" "$v"
        assert_eq "$k2" "$(p11t_sess_key "$P11T_WORK/k2-$s-$v.pem")" "$v: ticket from $s after rotate"
    done
    # Each server's new ticket resumes on the other one.
    assert_eq Reused "$(p11t_resume "$pb" "k2-a-$v" "x-ab-$v" "$v")" "$v: A's new ticket on B"
    assert_eq Reused "$(p11t_resume "$pa" "k2-b-$v" "x-ba-$v" "$v")" "$v: B's new ticket on A"
    # The revoked key stays refused.
    assert_eq New "$(p11t_resume "$pa" "k1-$v" "still-$v" "$v")" "$v: K1 ticket still refused"
done

p11t_server_stop a
p11t_server_stop b
p11t_pass

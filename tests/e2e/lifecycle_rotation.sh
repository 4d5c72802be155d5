#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# lifecycle_rotation: a ticket issued under K1 resumes after rotation,
# because K1 is then decrypt-only, and the client gets a new ticket under
# K2: a server accepts a decrypt-only key's tickets and renews them under
# the current key (docs/design.md, "Key states").
#
# K1 encrypts for 4 s and decrypts for 20 s more; the server starts right
# after K1 is created (its start-up probe finds K1), so the tickets are
# issued well inside K1's short encrypt window.  refresh-interval = 1, so
# the server sees every later change within 1 s; the script waits 2 s.
# Windows are scaled by P11T_WAIT_SCALE (valgrind).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin lifecycle_rotation
p11t_token_empty --set "refresh-interval = 1"

info "create K1: encrypts for 4 s, then decrypts for 20 s"
p11t_tool_ok create1 create --encrypt-for $((4 * P11T_WAIT_SCALE))s --decrypt-for $((20 * P11T_WAIT_SCALE))s
k1=$(p11t_created_name create1)
note "K1 = $k1"
p11t_server_start a -www
pa=$(p11t_port a)

info "tickets under K1 (TLS 1.3 and TLS 1.2)"
for v in tls1_3 tls1_2; do
    p11t_get_ticket "$pa" "k1-$v" "$v"
    assert_eq "$k1" "$(p11t_sess_key "$P11T_WORK/k1-$v.pem")" "$v ticket key name"
done
p11t_gens_load
p11t_gens_show
assert_eq active "$(p11t_gen "$k1" state)" "K1 state while its tickets were issued"
eu=$(p11t_gen "$k1" eu)
du=$(p11t_gen "$k1" du)

info "K1 leaves its encrypt window; rotate creates K2"
p11t_wait_past "$eu" 1 "K1's encrypt-until ($eu) has passed"
# Still inside K1's decrypt window, or the test cannot show anything.
(($(date +%s) + 8 < du)) || fail "the machine is too slow: K1's decrypt window is nearly over before rotate"
p11t_tool_ok rotate rotate --encrypt-for 60s --decrypt-for 60s --lead 5s
assert_grep "$P11T_WORK/rotate.out" "^created [0-9a-f]{32}: active" "rotate created an active generation"
p11t_gens_load
p11t_gens_show
assert_eq decrypt-only "$(p11t_gen "$k1" state)" "K1 state after rotate"
assert_eq no "$(p11t_gen "$k1" current)" "K1 is not current"
k2=$(p11t_gens_current)
assert_ne "$k1" "$k2" "current key after rotate"
[[ "$k2" != none ]] || fail "no current key after rotate"
assert_eq active "$(p11t_gen "$k2" state)" "K2 state"
assert_eq yes "$(p11t_gen "$k2" complete)" "K2 is complete"
assert_eq 1 "$(p11t_gens_count active)" "number of active generations"

info "within the refresh bound, K1's tickets resume and are renewed under K2"
sleep 2
# TLS 1.3: the renewed ticket comes after the handshake; -sess_out saves it.
assert_eq Reused "$(p11t_resume "$pa" k1-tls1_3 renew-tls1_3 tls1_3)" "tls1_3: resumption with the K1 ticket"
assert_eq "$k2" "$(p11t_sess_key "$P11T_WORK/renew-tls1_3.pem")" "tls1_3: key name of the renewed ticket"
# The renewed ticket is a good K2 ticket: it resumes too.
assert_eq Reused "$(p11t_resume "$pa" renew-tls1_3 renew2-tls1_3 tls1_3)" "tls1_3: resumption with the renewed ticket"
# TLS 1.2: the NewSessionTicket is part of the abbreviated handshake, so the
# session s_client prints carries it (-sess_out saves nothing on a resumed
# TLS 1.2 connection).
assert_eq Reused "$(p11t_resume "$pa" k1-tls1_2 renew-tls1_2 tls1_2)" "tls1_2: resumption with the K1 ticket"
assert_eq "$k2" "$(p11t_out_ticket_key "$P11T_WORK/renew-tls1_2.out")" "tls1_2: key name of the renewed ticket"

info "TLS 1.3 check with ticket_client: every ticket of the resumed connection is under K2"
p11t_ticket_client -connect "127.0.0.1:$pa" -tls1_3 -www -sess_in "$P11T_WORK/k1-tls1_3.pem" \
    >"$P11T_WORK/tc.out" 2>&1 || { cat "$P11T_WORK/tc.out" >&2; fail "ticket_client failed"; }
cat "$P11T_WORK/tc.out"
assert_grep "$P11T_WORK/tc.out" '^connection 0: Reused$' "ticket_client resumed with the K1 ticket"
assert_ge 1 "$(count_lines "$P11T_WORK/tc.out" "^ticket [0-9]+: len [0-9]+ name $k2\$")" "renewed tickets under K2"
assert_eq 0 "$(count_lines "$P11T_WORK/tc.out" "^ticket [0-9]+: len [0-9]+ name (-|$k1)\$")" "tickets not under K2"

info "fresh connections get K2 tickets"
for v in tls1_3 tls1_2; do
    p11t_get_ticket "$pa" "k2-$v" "$v"
    assert_eq "$k2" "$(p11t_sess_key "$P11T_WORK/k2-$v.pem")" "$v: key name of a new ticket"
done

p11t_server_alive a
p11t_server_stop a
p11t_pass

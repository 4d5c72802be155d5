#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# nginx_lifecycle: tickets of an unmodified nginx survive what operators do
# to nginx and to the token (refresh-interval = 1):
#   - `nginx -s reload`: new workers resume the old workers' tickets;
#   - a restarted nginx, and a second nginx instance with the same
#     certificate, resume the first one's tickets (and the other way round);
#   - rotation while nginx runs: `p11ticket retire K1` + `p11ticket rotate`
#     make K2 current at once; within twice refresh-interval a K1 ticket
#     still resumes and the renewed ticket is under K2, and fresh tickets
#     are under K2.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/servers/lib_servers.sh
. "$(dirname "$0")/lib_servers.sh"
refresh=1
srv_begin nginx_lifecycle --set "refresh-interval = $refresh"
srv_need nginx "Debian's nginx"

srv_nginx_conf a "$(srv_free_port)"
srv_nginx_start a
pa=$(p11t_port a)
k1=$(srv_current_key)
note "K1 = $k1"
for v in tls1_2 tls1_3; do
    p11t_get_ticket "$pa" "a-$v" "$v"
    assert_eq "$k1" "$(p11t_sess_key "$P11T_WORK/a-$v.pem")" "first nginx: $v ticket key name"
done

info "nginx -s reload: new workers resume the old workers' tickets"
srv_nginx_reload a
srv_assert_workers a 2 "$SRV_USER"
for v in tls1_2 tls1_3; do
    assert_eq Reused "$(p11t_resume "$pa" "a-$v" "reload-$v" "$v")" "after reload: $v resumption"
done
p11t_reconnect "$pa" "$P11T_WORK/reload-reconnect.out" -tls1_2
srv_assert_reconnect "$P11T_WORK/reload-reconnect.out" "after reload"
srv_nginx_no_crash a

info "a second nginx instance (same certificate) resumes the first one's tickets"
srv_nginx_conf b "$(srv_free_port)"
srv_nginx_start b
pb=$(p11t_port b)
for v in tls1_2 tls1_3; do
    assert_eq Reused "$(p11t_resume "$pb" "a-$v" "b-from-a-$v" "$v")" "second nginx: $v ticket of the first"
    p11t_get_ticket "$pb" "b-$v" "$v"
    assert_eq Reused "$(p11t_resume "$pa" "b-$v" "a-from-b-$v" "$v")" "first nginx: $v ticket of the second"
done
srv_nginx_no_crash b
srv_stop b

info "restart: a new nginx resumes the tickets of the stopped one"
srv_stop a
srv_nginx_start a
for v in tls1_2 tls1_3; do
    assert_eq Reused "$(p11t_resume "$pa" "a-$v" "restart-$v" "$v")" "restarted nginx: $v resumption"
done

info "rotation while nginx runs"
srv_tool retire retire "$k1"
srv_tool rotate rotate --encrypt-for 1h --decrypt-for 1h --lead 5m
assert_grep "$P11T_WORK/rotate.out" "^created [0-9a-f]{32}: active" "rotate created an active generation"
rotated=$(date +%s)
p11t_gens_load
p11t_gens_show
k2=$(p11t_gens_current)
[[ "$k2" =~ ^[0-9a-f]{32}$ ]] || fail "no current key after rotate ($k2)"
assert_ne "$k1" "$k2" "current key after rotate"
assert_eq decrypt-only "$(p11t_gen "$k1" state)" "K1 state after retire + rotate"
# Every worker rescans within twice refresh-interval (docs/configuration.md).
p11t_wait_past "$rotated" $((2 * refresh + 1)) "the refresh bound (2 x refresh-interval) after rotate"
assert_eq Reused "$(p11t_resume "$pa" a-tls1_3 rot-tls1_3 tls1_3)" "TLS 1.3 K1 ticket after rotate"
assert_eq "$k2" "$(p11t_sess_key "$P11T_WORK/rot-tls1_3.pem")" "TLS 1.3: renewed ticket key name"
assert_eq Reused "$(p11t_resume "$pa" a-tls1_2 rot-tls1_2 tls1_2)" "TLS 1.2 K1 ticket after rotate"
assert_eq "$k2" "$(p11t_out_ticket_key "$P11T_WORK/rot-tls1_2.out")" "TLS 1.2: renewed ticket key name"
# Both workers: several fresh connections, all under K2.
for i in 1 2 3 4; do
    p11t_get_ticket "$pa" "k2-$i" tls1_2
    assert_eq "$k2" "$(p11t_sess_key "$P11T_WORK/k2-$i.pem")" "fresh ticket $i after rotate"
done
assert_eq Reused "$(p11t_resume "$pa" k2-1 k2-1-r tls1_2)" "a K2 ticket resumes"
srv_alive a
srv_nginx_no_crash a
srv_stop a
p11t_pass

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# oop_tickets: session tickets with the token in another process.  SoftHSM
# runs only inside `p11-kit server` (its p11-kit-remote children); the setup
# tool and p11ticket-server load p11-kit's client module and reach the token
# over a unix socket (docs/out-of-process.md).  Checks:
#   1. the setup tool through p11-kit: list (loads p11-kit-client.so, never
#      SoftHSM), create, import (openssl80, decrypt-only), rotate ("nothing
#      to do" while the current key is far from its end);
#   2. p11ticket-server on the remote token: TLS 1.2 -reconnect gives New
#      then 5 x Reused; TLS 1.3 -sess_out/-sess_in gives Reused; every ticket
#      is under the token's current key; its memory map has p11-kit's client
#      and no SoftHSM;
#   3. a plain OpenSSL server's ticket under the imported key resumes;
#   4. a restarted server resumes the first one's tickets;
#   5. a second server resumes them too, and both resume each other's; each
#      server has its own p11-kit-remote;
#   6. an in-process SoftHSM server on the same token directory, alongside:
#      its tickets resume on the remote server and the other way round;
#   7. the token daemon stopped (its whole process group, as systemd does):
#      the in-process server keeps issuing tickets, the remote one keeps
#      serving full handshakes; once the daemon is back, the remote server
#      resumes the ticket issued during the outage, without a restart;
#   8. rotation through p11-kit: `p11ticket rotate` creates the successor
#      (pending) 25 s before the current key's encrypt window ends; at the
#      end every server issues under it, and tickets under the old key
#      resume and are renewed under the new one.
# refresh-interval = 1.  Times scale with P11T_WAIT_SCALE (valgrind).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/e2e/oop_lib.sh
. "$(dirname "$0")/oop_lib.sh"
oop_begin oop_tickets
oop_token_empty --set "refresh-interval = 1"
W=$P11T_WAIT_SCALE
ENCRYPT=$((35 * W))
LEAD=$((25 * W))

# ---- 1. the setup tool --------------------------------------------------------
info "the setup tool through p11-kit"
if [[ "${P11T_VALGRIND:-0}" == 1 ]]; then
    oop_tool_ok list0 list
else
    oop_tool_libs list0 list
fi
p11t_gens_load
assert_eq 0 "$(p11t_gens_count)" "generations on the new token"

oop_tool_ok create1 create --encrypt-for "${ENCRYPT}s" --decrypt-for 10m
k1=$(p11t_created_name create1)
note "K1 = $k1"

keys=$P11T_WORK/old.keys
OPENSSL_CONF=/dev/null openssl rand -out "$keys" 80
x=$(od -An -tx1 -N16 "$keys" | tr -d ' \n')
oop_tool_ok import import --format openssl80 --state decrypt-only --decrypt-for 10m "$keys"
assert_grep "$P11T_WORK/import.out" "^imported $x" "import names the file's key $x"

oop_tool_ok rotate0 rotate --encrypt-for 10m --decrypt-for 10m --lead "${LEAD}s"
assert_grep "$P11T_WORK/rotate0.out" '^nothing to do$' "rotate while K1 is far from its end"

p11t_gens_load
p11t_gens_show
assert_eq 2 "$(p11t_gens_count)" "generations after create, import and rotate"
assert_eq active "$(p11t_gen "$k1" state)" "K1 state"
assert_eq yes "$(p11t_gen "$k1" complete)" "K1 complete"
assert_eq "$k1" "$(p11t_gens_current)" "current key"
assert_eq decrypt-only "$(p11t_gen "$x" state)" "imported key state"
assert_eq yes "$(p11t_gen "$x" complete)" "imported key complete"
k1_eu=$(p11t_gen "$k1" eu)

# ---- 2. one server -------------------------------------------------------------
info "p11ticket-server on the remote token"
oop_server_start a -www
pa=$(p11t_port a)
p11t_reconnect "$pa" "$P11T_WORK/reconnect.out" -tls1_2
assert_eq "New Reused Reused Reused Reused Reused" "$(p11t_results "$P11T_WORK/reconnect.out")" \
    "TLS 1.2 -reconnect"
assert_eq "$k1" "$(p11t_out_ticket_key "$P11T_WORK/reconnect.out")" "TLS 1.2 -reconnect: ticket key name"
for v in tls1_2 tls1_3; do
    p11t_get_ticket "$pa" "a-$v" "$v"
    assert_eq "$k1" "$(p11t_sess_key "$P11T_WORK/a-$v.pem")" "$v: ticket key name (K1)"
done
assert_eq Reused "$(p11t_resume "$pa" a-tls1_3 a-tls1_3-r tls1_3)" "tls1_3: -sess_in resumption"
assert_eq "$k1" "$(p11t_sess_key "$P11T_WORK/a-tls1_3-r.pem")" "tls1_3: renewed ticket key name"
assert_eq Reused "$(p11t_resume "$pa" a-tls1_2 a-tls1_2-r tls1_2)" "tls1_2: -sess_in resumption"
assert_eq "$k1" "$(oop_current_key)" "the token's current key (list --json) is the tickets' key"
p11t_assert_token_ticket "$(p11t_ticket_hex "$P11T_WORK/a-tls1_3.pem")" "tls1_3 ticket"
assert_ge 7 "$(p11t_server_count a Reused)" "server a log: Reused connections"
oop_assert_remote a

# ---- 3. the imported key -------------------------------------------------------
info "a plain OpenSSL server's ticket under the imported key"
p11t_plain_start plain openssl80 "$keys" -www
for v in tls1_2 tls1_3; do
    p11t_get_ticket "$(p11t_port plain)" "plain-$v" "$v"
    assert_eq "$x" "$(p11t_sess_key "$P11T_WORK/plain-$v.pem")" "$v: plain server's ticket key name"
    assert_eq Reused "$(p11t_resume "$pa" "plain-$v" "plain-$v-a" "$v")" "$v: resumes on the remote-token server"
done
p11t_server_stop plain

# ---- 4. restart ------------------------------------------------------------------
info "restarted server"
p11t_server_stop a
oop_server_start a2 -www
pa2=$(p11t_port a2)
for v in tls1_2 tls1_3; do
    assert_eq Reused "$(p11t_resume "$pa2" "a-$v" "a-$v-a2" "$v")" "$v: a's ticket on the restarted server"
done
oop_assert_remote a2

# ---- 5. a second server --------------------------------------------------------
info "a second server"
oop_server_start b -www
pb=$(p11t_port b)
for v in tls1_2 tls1_3; do
    assert_eq Reused "$(p11t_resume "$pb" "a-$v" "a-$v-b" "$v")" "$v: a's ticket on b"
    p11t_get_ticket "$pb" "b-$v" "$v"
    assert_eq "$k1" "$(p11t_sess_key "$P11T_WORK/b-$v.pem")" "$v: b's ticket key name"
    assert_eq Reused "$(p11t_resume "$pa2" "b-$v" "b-$v-a2" "$v")" "$v: b's ticket on a2"
    p11t_get_ticket "$pa2" "a2-$v" "$v"
    assert_eq Reused "$(p11t_resume "$pb" "a2-$v" "a2-$v-b" "$v")" "$v: a2's ticket on b"
done
oop_assert_remote b
remotes=$(oop_remotes | wc -l)
assert_ge 2 "$remotes" "p11-kit-remote processes (one per connected server)"

# ---- 6. in-process SoftHSM alongside -------------------------------------------
info "an in-process SoftHSM server on the same token directory, alongside"
oop_local_server_start l -www
pl=$(p11t_port l)
for v in tls1_2 tls1_3; do
    p11t_get_ticket "$pl" "l-$v" "$v"
    assert_eq "$k1" "$(p11t_sess_key "$P11T_WORK/l-$v.pem")" "$v: in-process server's ticket key name"
    assert_eq Reused "$(p11t_resume "$pa2" "l-$v" "l-$v-a2" "$v")" "$v: in-process ticket on the remote a2"
    assert_eq Reused "$(p11t_resume "$pl" "a2-$v" "a2-$v-l" "$v")" "$v: remote a2's ticket in process"
done
oop_assert_local l

# ---- 7. the token daemon away and back -----------------------------------------
info "the p11-kit server stopped"
oop_p11kit_stop
for v in tls1_2 tls1_3; do
    p11t_get_ticket "$pl" "down-$v" "$v"
    assert_eq "$k1" "$(p11t_sess_key "$P11T_WORK/down-$v.pem")" "$v: the in-process server issues tickets"
    assert_eq New "$(p11t_resume "$pa2" "down-$v" "down-$v-a2" "$v")" "$v: a2 without its token: full handshake"
done
p11t_server_alive a2
p11t_server_alive b

# wait_reused NAME TAG_IN VERSION: resume WORK/TAG_IN.pem on server NAME
# until it is Reused, for at most 15 s; each try is a complete handshake.
wait_reused() {
    local name=$1 in=$2 v=$3 r=New t0=$SECONDS tries=0
    while ((SECONDS - t0 < 15 * W)); do
        tries=$((tries + 1))
        r=$(p11t_resume "$(p11t_port "$name")" "$in" "back-$in-$name" "$v")
        [[ $r == Reused ]] && break
        sleep 0.2
    done
    assert_eq Reused "$r" "$v: $name resumes the outage's ticket (try $tries, $((SECONDS - t0)) s after the daemon's return)"
}

info "the p11-kit server back"
oop_p11kit_start
for v in tls1_2 tls1_3; do
    wait_reused a2 "down-$v" "$v"
done
# b had no connection during the outage: its first token call after the
# restart finds the old connection dead and starts the recovery.
wait_reused b down-tls1_3 tls1_3
oop_assert_remote a2
oop_assert_remote b

# ---- 8. rotation ------------------------------------------------------------------
info "rotation through p11-kit"
now=$(date +%s)
((now + 3 * W < k1_eu)) || fail "the machine is too slow: K1's encrypt window ends in $((k1_eu - now)) s, before rotation can be shown"
p11t_wait_past "$((k1_eu - LEAD))" 1 "K1's successor is due ($LEAD s before K1's encrypt-until $k1_eu)"
oop_tool_ok rotate1 rotate --encrypt-for 10m --decrypt-for 10m --lead "${LEAD}s"
assert_grep "$P11T_WORK/rotate1.out" "^created [0-9a-f]{32}: pending" "rotate created a pending successor"
p11t_gens_load
p11t_gens_show
k2=$(awk '$2 == "pending" { print $1 }' "$P11T_WORK/gens.txt")
[[ "$k2" =~ ^[0-9a-f]{32}$ ]] || fail "no single pending generation after rotate: '$k2'"
assert_eq "$k1_eu" "$(p11t_gen "$k2" ef)" "K2 starts when K1 stops encrypting"
assert_eq "$k1" "$(p11t_gens_current)" "current key before K2's start"
(($(date +%s) + 1 < k1_eu)) || fail "the machine is too slow: K1 stopped encrypting during the checks"
p11t_get_ticket "$pa2" pre-tls1_3 tls1_3
assert_eq "$k1" "$(p11t_sess_key "$P11T_WORK/pre-tls1_3.pem")" "tls1_3: a pending key is not used yet"

p11t_wait_past "$k1_eu" 2 "K1's encrypt-until ($k1_eu) has passed"
p11t_gens_load
p11t_gens_show
assert_eq "$k2" "$(p11t_gens_current)" "current key after K1's encrypt window"
assert_eq decrypt-only "$(p11t_gen "$k1" state)" "K1 state"
for s in a2 b l; do
    p=$(p11t_port "$s")
    for v in tls1_2 tls1_3; do
        p11t_get_ticket "$p" "k2-$s-$v" "$v"
        assert_eq "$k2" "$(p11t_sess_key "$P11T_WORK/k2-$s-$v.pem")" "$s $v: new ticket under K2"
    done
done
assert_eq Reused "$(p11t_resume "$pb" a-tls1_3 renew-tls1_3 tls1_3)" "tls1_3: a K1 ticket resumes on b"
assert_eq "$k2" "$(p11t_sess_key "$P11T_WORK/renew-tls1_3.pem")" "tls1_3: renewed under K2"
assert_eq Reused "$(p11t_resume "$pa2" a-tls1_2 renew-tls1_2 tls1_2)" "tls1_2: a K1 ticket resumes on a2"
assert_eq "$k2" "$(p11t_out_ticket_key "$P11T_WORK/renew-tls1_2.out")" "tls1_2: renewed under K2"
assert_eq Reused "$(p11t_resume "$pl" k2-a2-tls1_3 k2-l tls1_3)" "tls1_3: a2's K2 ticket in process"
assert_eq Reused "$(p11t_resume "$pa2" k2-l-tls1_3 k2-a2 tls1_3)" "tls1_3: the in-process K2 ticket on a2"

for s in a2 b l; do
    p11t_server_alive "$s"
done
oop_assert_remote a2
oop_assert_remote b
for s in a2 b l; do
    p11t_server_stop "$s"
done
oop_p11kit_stop
p11t_pass

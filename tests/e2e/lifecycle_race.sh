#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# lifecycle_race: two `p11ticket rotate` processes started at the same
# moment: afterwards exactly one key is active, every server agrees, and
# every ticket issued in between still resumes (docs/rotation.md, racing
# rotators under "Many hosts").  Two servers run throughout, and a client
# keeps fetching tickets from both while the rotators race and until the
# check.
#
# A. Token without any key, 5 rounds: each rotator may create a key that
#    starts now.  Afterwards exactly one generation is active (the other
#    one, if any, was retired to decrypt-only, never destroyed), both
#    servers issue tickets under that key, and every ticket issued in
#    between resumes on both servers.
# B. Token whose only key K ends its encrypt window a few seconds later,
#    3 rounds: each rotator may create the successor, pending, starting at
#    K's encrypt-until, with identical times (rotate(1): duplicates that
#    start within 60 s are not destroyed, because a server with a fast
#    clock may already use them).  When the racers are done exactly one
#    generation is active (K); once the successors start, both servers
#    issue tickets under the same one, the tie-break winner that `list`
#    marks current (greatest name); the next `rotate` retires the other
#    duplicates, so exactly one is active again; every ticket issued in
#    between resumes on both servers.
#
# SoftHSM keeps the token in files that are not made for concurrent
# writers (rotation.md documents both effects):
#   - a rotate that starts while another process logs in or writes
#     occasionally fails with "no token matches" or another token error
#     (exit status 1).  Such a racer must leave no half-made generation
#     (every generation on the token is complete);
#   - a rotator occasionally does not see the key the other one has just
#     created, so in A both keys can stay active although both racers exit
#     0 (about 1 round in 20 here).  The servers must still agree on one of
#     them (the tie-break), checked before anything else happens.
# In both cases one more `rotate` - the next scheduled run - settles the
# token, and then exactly one generation must be active; the script counts
# these rounds.  Exit statuses other than 0 and 1 fail.
# refresh-interval = 1; the script waits 2 s for the servers to agree.
#
# Known intermittent failure (found by this test, reported): in A, a
# rotator may retire the other racer's key, by rewriting its CKA_LABEL,
# milliseconds after that key was generated.  With SoftHSM 2.6.1 a
# C_SetAttributeValue on a freshly generated key by another process can
# make the key lose its value (a later C_Sign fails with
# CKR_KEY_SIZE_RANGE); tickets the servers issued under it meanwhile then
# fail with "did not resume on server ..." below.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin lifecycle_race
p11t_token_empty --set "refresh-interval = 1"
S=$P11T_WAIT_SCALE # valgrind: everything takes longer
POLICY=(--encrypt-for $((30 * S))s --decrypt-for $((30 * S))s --lead $((10 * S))s)
ROUNDS_A=5
ROUNDS_B=3
SETTLED=0

p11t_server_start a -www
p11t_server_start b -www

# collect TAG STOPFILE: until STOPFILE exists, fetch a ticket from each
# server every 0.6 s (TLS 1.2 and 1.3 in turn) into WORK/TAG-N-SERVER.pem.
# Runs in the background; never fails (the check below judges the files).
collect() {
    local tag=$1 stop=$2 i=0 s v
    # Also stop when the test has ended (failed) without creating STOPFILE.
    while [[ ! -e "$stop" && -d "$P11T_WORK" ]] && kill -0 $$ 2>/dev/null; do
        i=$((i + 1))
        v=tls1_3
        ((i % 2)) && v=tls1_2
        for s in a b; do
            printf 'GET / HTTP/1.0\r\n\r\n' |
                OPENSSL_CONF=/dev/null timeout 20 openssl s_client \
                    -connect "127.0.0.1:${P11T_PORT[$s]}" -ign_eof "-$v" \
                    -sess_out "$P11T_WORK/$tag-$i-$s-$v.pem" \
                    >"$P11T_WORK/$tag-$i-$s-$v.log" 2>&1 || true
        done
        sleep 0.6
    done
}

# collect_start TAG: start collect for round TAG (STOPFILE WORK/TAG.stop) in
# the background; collect_stop TAG stops it and waits for it.
collect_start() {
    rm -f "$P11T_WORK/$1.stop"
    collect "$1" "$P11T_WORK/$1.stop" &
    COLLECT_PID=$!
}
collect_stop() {
    touch "$P11T_WORK/$1.stop"
    wait "$COLLECT_PID" || true
}

# race TAG: two rotators, released together; sets RC1 RC2.  Their output
# is in WORK/TAG.rotN.out / .tool.
race() {
    local tag=$1 go=$P11T_WORK/$1.go p1 p2 n
    rm -f "$go"
    for n in 1 2; do
        (
            while [[ ! -e "$go" ]]; do sleep 0.005; done
            exec "$P11T_TOOL_BIN" --config "$P11T_CONF" rotate "${POLICY[@]}"
        ) >"$P11T_WORK/$tag.rot$n.out" 2>"$P11T_WORK/$tag.rot$n.tool" </dev/null &
        eval "p$n=\$!"
    done
    sleep 0.2
    touch "$go"
    RC1=0
    RC2=0
    wait "$p1" || RC1=$?
    wait "$p2" || RC2=$?
    RACE_END=$(date +%s)
    note "racers exited $RC1 and $RC2"
    for n in 1 2; do
        sed "s/^/      | rotator $n: /" "$P11T_WORK/$tag.rot$n.out" "$P11T_WORK/$tag.rot$n.tool"
    done
}

# after_race TAG [agree]: exit statuses, no half-made generation, and one
# more rotate when a racer failed or (with "agree") when more than one
# generation was left active.  In the latter case the servers must agree
# on the tie-break winner before the extra rotate.
after_race() {
    local tag=$1 agree=${2:-} n rc nact
    for n in 1 2; do
        rc=RC$n
        rc=${!rc}
        [[ $rc == 0 || $rc == 1 ]] || fail "$tag: rotator $n exited with status $rc"
    done
    p11t_gens_load
    p11t_gens_show
    assert_eq 0 "$(awk '$4 != "yes"' "$P11T_WORK/gens.txt" | grep -c . || true)" \
        "$tag: incomplete (half-made) generations after the race"
    nact=$(p11t_gens_count active)
    if [[ -n "$agree" && $nact -gt 1 ]]; then
        # Both racers created a key and neither saw the other's when it
        # re-read the token (the SoftHSM effect rotation.md documents).
        # The servers must agree on the tie-break winner meanwhile.
        note "$nact generations left active by racers that exited $RC1/$RC2 (SoftHSM, see above)"
        sleep 2
        servers_agree "$tag-unsettled" "$(p11t_gens_current)"
    fi
    if [[ $RC1 != 0 || $RC2 != 0 || ( -n "$agree" && $nact -ne 1 ) ]]; then
        note "the next rotate settles the token"
        SETTLED=$((SETTLED + 1))
        # rotate leaves keys younger than 2 s alone (SoftHSM loses a key's
        # value if its label is rewritten while a racer is still creating).
        sleep 3
        p11t_tool_ok "$tag.settle" rotate "${POLICY[@]}"
        p11t_gens_load
        p11t_gens_show
        assert_eq 0 "$(awk '$4 != "yes"' "$P11T_WORK/gens.txt" | grep -c . || true)" \
            "$tag: incomplete generations after the extra rotate"
    fi
}

# active_at T: generations whose stored times make them active at T.
active_at() {
    awk -v t="$1" '$5 != "never" && $5 <= t && ($6 == "never" || t < $6)' \
        "$P11T_WORK/gens.txt" | grep -c . || true
}

# revoke_all: an empty token again (tickets of earlier rounds die).  The
# names go to REVOKED: within the refresh bound a server may still issue a
# ticket under a key revoked a moment ago (observed with SoftHSM: a cached
# handle of a destroyed object can keep working for a moment), and such a
# ticket is no ticket "issued in between".
declare -A REVOKED=()
revoke_all() {
    local k
    p11t_gens_load
    for k in $(p11t_gens_names); do
        p11t_tool_rc revoke revoke "$k"
        [[ $P11T_RC == 0 ]] || fail "revoke $k: exit $P11T_RC: $(cat "$P11T_WORK/revoke.tool")"
        REVOKED[$k]=1
    done
    p11t_gens_load
    assert_eq 0 "$(p11t_gens_count)" "generations after revoking all"
}

# sclient_bg OUTPREFIX PORT VERSION [s_client args]: one -www connection
# in the background (the machine has 2 cores: the checks below run their
# connections two to four at a time).  Output in OUTPREFIX.out.
BG_PIDS=()
sclient_bg() {
    local out=$1 port=$2 v=$3
    shift 3
    printf 'GET / HTTP/1.0\r\n\r\n' |
        OPENSSL_CONF=/dev/null timeout 20 openssl s_client \
            -connect "127.0.0.1:$port" -ign_eof "-$v" "$@" >"$out.out" 2>&1 &
    BG_PIDS+=($!)
}

# wait_bg: wait for the connections sclient_bg started.
wait_bg() {
    local j
    for j in "${BG_PIDS[@]}"; do
        wait "$j" || true
    done
    BG_PIDS=()
}

# servers_agree TAG WANT: fresh tickets from A and B are all under WANT.
servers_agree() {
    local tag=$1 want=$2 s v f
    for s in a b; do
        for v in tls1_3 tls1_2; do
            f=$P11T_WORK/$tag-now-$s-$v
            rm -f "$f.pem"
            sclient_bg "$f" "$(p11t_port $s)" "$v" -sess_out "$f.pem"
        done
    done
    wait_bg
    for s in a b; do
        for v in tls1_3 tls1_2; do
            f=$P11T_WORK/$tag-now-$s-$v
            assert_eq New "$(p11t_result "$f.out")" "$tag: $v full handshake with server $s"
            assert_eq "$want" "$(p11t_sess_key "$f.pem")" "$tag: $v ticket from server $s"
        done
    done
}

# all_resume TAG: every ticket collected during round TAG resumes on both
# servers, including tickets under a racer's key that was retired
# afterwards.  Prints how many tickets there were per key name.
all_resume() {
    local tag=$1 f k v s n=0 base late=0
    declare -A per=()
    for f in "$P11T_WORK/$tag"-[0-9]*-[ab]-tls1_[23].pem; do
        [[ -e "$f" ]] || continue
        k=$(p11t_sess_key "$f")
        [[ "$k" =~ ^[0-9a-f]{32}$ ]] || continue # issued while no key was active
        if [[ -n "${REVOKED[$k]:-}" ]]; then
            late=$((late + 1)) # under a key revoked before the round
            continue
        fi
        per[$k]=$((${per[$k]:-0} + 1))
        n=$((n + 1))
        base=$(basename "$f" .pem)
        v=${base##*-}
        for s in a b; do
            sclient_bg "$P11T_WORK/$base.on-$s" "$(p11t_port $s)" "$v" -sess_in "$f"
        done
        wait_bg
        for s in a b; do
            [[ "$(p11t_result "$P11T_WORK/$base.on-$s.out")" == Reused ]] || {
                tail -n 20 "$P11T_WORK/$base.on-$s.out" >&2
                fail "$tag: ticket $base (key $k, $v) did not resume on server $s"
            }
        done
    done
    assert_ge 1 "$n" "$tag: tickets issued during the round"
    ((late == 0)) || note "$tag: $late ticket(s) under a key revoked just before the round (not checked)"
    for k in "${!per[@]}"; do
        note "ok: $tag: ${per[$k]} ticket(s) under $k resumed on both servers"
    done
}

for ((r = 1; r <= ROUNDS_A; r++)); do
    tag=A$r
    info "$tag: two rotators race on a token without a key"
    revoke_all
    collect_start "$tag"
    race "$tag"
    after_race "$tag" agree
    assert_eq 1 "$(p11t_gens_count active)" "$tag: active generations"
    cur=$(p11t_gens_current)
    assert_eq active "$(p11t_gen "$cur" state)" "$tag: state of the current key $cur"
    for k in $(p11t_gens_names); do
        [[ "$k" == "$cur" ]] ||
            assert_eq decrypt-only "$(p11t_gen "$k" state)" "$tag: the other racer's key $k"
    done
    # Let the client run across the servers' refresh, then stop it.
    sleep 1.5
    collect_stop "$tag"
    servers_agree "$tag" "$cur"
    all_resume "$tag"
done

for ((r = 1; r <= ROUNDS_B; r++)); do
    tag=B$r
    info "$tag: two rotators race while the only key is about to stop encrypting"
    revoke_all
    p11t_tool_ok "$tag.create" create --encrypt-for $((4 * S))s --decrypt-for $((30 * S))s
    k=$(p11t_created_name "$tag.create")
    p11t_gens_load
    eu=$(p11t_gen "$k" eu)
    collect_start "$tag"
    race "$tag"
    after_race "$tag"
    ((RACE_END < eu)) || fail "$tag: the machine is too slow: the race ended after K's encrypt window"
    assert_eq 1 "$(active_at "$RACE_END")" "$tag: generations active when the race ended (by their stored times)"
    assert_eq "$k" "$(awk -v t="$RACE_END" '$5 <= t && t < $6 { print $1 }' "$P11T_WORK/gens.txt")" \
        "$tag: the generation active when the race ended"
    succ=$(awk -v k="$k" '$1 != k { print $1 }' "$P11T_WORK/gens.txt" | sort)
    nsucc=$(grep -c . <<<"$succ" || true)
    [[ $nsucc == 1 || $nsucc == 2 ]] || fail "$tag: expected 1 or 2 successors, found $nsucc"
    note "successors: ${succ//$'\n'/ }"
    # Identical times, chained from K's encrypt-until.
    assert_eq 1 "$(awk -v k="$k" '$1 != k { print $5, $6, $7 }' "$P11T_WORK/gens.txt" | sort -u | grep -c .)" \
        "$tag: distinct (encrypt-from, encrypt-until, decrypt-until) among the successors"
    for s in $succ; do
        assert_eq "$eu" "$(p11t_gen "$s" ef)" "$tag: successor $s starts at K's encrypt-until"
    done
    winner=$(tail -n 1 <<<"$succ") # the greatest name wins the tie

    # The servers have known the pending successors for a while (refresh 1 s),
    # so they switch at K's encrypt-until by their clocks alone.
    p11t_wait_past "$eu" 1 "the successors start (K's encrypt-until $eu)"
    collect_stop "$tag"
    p11t_gens_load
    p11t_gens_show
    assert_eq "$winner" "$(p11t_gens_current)" "$tag: current key (tie-break: greatest name)"
    servers_agree "$tag" "$winner"
    info "$tag: the next rotate leaves exactly one active generation"
    # rotate leaves generations that started less than 2 s ago alone (see
    # RETIRE_SETTLE_S in tools/p11ticket/cmd_rotate.c); a scheduled run
    # comes minutes later.
    sleep 3
    p11t_tool_ok "$tag.next" rotate "${POLICY[@]}"
    p11t_gens_load
    p11t_gens_show
    assert_eq 1 "$(p11t_gens_count active)" "$tag: active generations"
    assert_eq "$winner" "$(p11t_gens_current)" "$tag: current key"
    assert_eq $((nsucc + 1)) "$(p11t_gens_count)" "$tag: generations (nothing destroyed)"
    servers_agree "$tag-next" "$winner"
    all_resume "$tag"
done

note "rounds settled by one more rotate (a failed racer, or two keys left active): $SETTLED of $((ROUNDS_A + ROUNDS_B))"
p11t_server_alive a
p11t_server_alive b
p11t_server_stop a
p11t_server_stop b
p11t_pass

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# nginx_token_unreachable: the token is missing when nginx starts (its
# directory is moved away and an empty one put in its place, so SoftHSM
# shows no initialised token).  nginx starts, serves full handshakes without
# tickets, logs the problem once per worker that met it, naming the
# openssl.cnf key (token-uri); once the token directory is back, tickets
# under the token key work again without a restart (the provider retries
# with a backoff starting at 1 s; refresh-interval = 2).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/servers/lib_servers.sh
. "$(dirname "$0")/lib_servers.sh"
srv_begin nginx_token_unreachable --set "refresh-interval = 2"
srv_need nginx "Debian's nginx"
key=$(srv_current_key)

info "the token directory is moved away before nginx starts"
mv "$P11T_WORK/tokens" "$P11T_WORK/tokens.away"
mkdir "$P11T_WORK/tokens"
srv_share_token
srv_nginx_conf a "$(srv_free_port)"
srv_nginx_start a
pa=$(p11t_port a)
for i in 1 2 3; do
    for v in tls1_2 tls1_3; do
        p11t_get_ticket "$pa" "gone-$v-$i" "$v"
        srv_assert_no_ticket "gone-$v-$i" "token missing: $v ($i)"
    done
done
p11t_reconnect "$pa" "$P11T_WORK/gone-reconnect.out" -tls1_2
assert_eq "New New New New New New" "$(p11t_results "$P11T_WORK/gone-reconnect.out")" \
    "token missing: s_client -reconnect handshakes (no ticket, no resumption)"
srv_alive a
srv_assert_workers a 2 "$SRV_USER"
# One line per worker that tried the token, at most one per worker; only
# the workers touch the token (the master never handshakes).
errs=$(count_lines "$P11T_WORK/a.err" 'token-uri')
grep -- 'token-uri' "$P11T_WORK/a.err" | sed 's/^/      | /'
assert_ge 1 "$errs" "error lines naming token-uri"
((errs <= 2)) || fail "expected at most one error line per worker (2), got $errs"

info "the token directory comes back; nginx keeps running"
rm -rf "$P11T_WORK/tokens"
mv "$P11T_WORK/tokens.away" "$P11T_WORK/tokens"
back=$SECONDS
# Wait for 6 token tickets in a row (both workers, very likely), bounded by
# the first backoff steps plus refresh-interval and a margin.
ok=0
for ((i = 0; i < 100 && SECONDS - back < 20; i++)); do
    p11t_sclient "$pa" "$P11T_WORK/back.out" -tls1_2 -sess_out "$P11T_WORK/back.pem"
    if [[ "$(p11t_sess_key "$P11T_WORK/back.pem")" == "$key" ]]; then
        ok=$((ok + 1))
        ((ok >= 6)) && break
    else
        ok=0
        sleep 0.2
    fi
done
((ok >= 6)) || fail "no run of 6 token tickets within 20 s of the token's return"
note "ok: token tickets again $((SECONDS - back)) s after the token came back"
p11t_reconnect "$pa" "$P11T_WORK/back-reconnect.out" -tls1_2
srv_assert_reconnect "$P11T_WORK/back-reconnect.out" "token back"
srv_tls13_resume "$pa" back13 "token back"
srv_assert_token_key "$P11T_WORK/back13.pem" "token back: TLS 1.3"
after=$(count_lines "$P11T_WORK/a.err" 'token-uri')
assert_eq "$errs" "$after" "error lines naming token-uri after the token came back"
srv_alive a
srv_nginx_no_crash a
srv_stop a
p11t_pass

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# no_ticket: with -no_ticket the server issues no token ticket.
#   TLS 1.2: the saved session carries no ticket at all.
#   TLS 1.3: libssl may still send stateful tickets (a session-cache id,
#   docs/design.md, "When libssl does not call the callback"); none of
#   them may start with a token key name.
#   TLS 1.2 -reconnect with stdin closed: New, then Reused five times from
#   the session-ID cache (the server answers the client's close_notify).
# A token ticket issued by a normal server on the same token is not
# accepted by the -no_ticket server either.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin no_ticket
p11t_token
p11t_server_start nt -www -no_ticket
p11t_server_start normal -www
pnt=$(p11t_port nt)
pn=$(p11t_port normal)
names=$(p11t_key_names)
[[ -n "$names" ]] || fail "p11ticket list shows no key"

info "TLS 1.2: no ticket"
p11t_sclient "$pnt" "$P11T_WORK/12.out" -tls1_2 -sess_out "$P11T_WORK/12.pem"
assert_eq New "$(p11t_result "$P11T_WORK/12.out")" "TLS 1.2 connection"
assert_eq "" "$(p11t_ticket_hex "$P11T_WORK/12.pem")" "TLS 1.2 session ticket"
assert_no_grep "$P11T_WORK/12.out" 'TLS session ticket lifetime hint' "no NewSessionTicket in TLS 1.2"

info "TLS 1.2 -reconnect, stdin closed: resumed by session ID, never by a ticket"
# s_client sends no request and closes with close_notify; the server must
# answer with its own, or OpenSSL drops the session from the cache and
# every reconnect is New (openssl s_server -no_ticket -www resumes).
p11t_reconnect "$pnt" "$P11T_WORK/12r.out" -tls1_2 -sess_out "$P11T_WORK/12r.pem"
assert_eq "New Reused Reused Reused Reused Reused" "$(p11t_results "$P11T_WORK/12r.out")" \
    "TLS 1.2 -reconnect results (session-ID cache)"
assert_eq "" "$(p11t_ticket_hex "$P11T_WORK/12r.pem")" "ticket after -reconnect"

info "TLS 1.3: no token ticket"
p11t_sclient "$pnt" "$P11T_WORK/13.out" -tls1_3 -sess_out "$P11T_WORK/13.pem"
assert_eq New "$(p11t_result "$P11T_WORK/13.out")" "TLS 1.3 connection"
hex=$(p11t_ticket_hex "$P11T_WORK/13.pem")
if [[ -n "$hex" ]]; then
    if grep -qx -- "${hex:0:32}" <<<"$names"; then
        fail "TLS 1.3 ticket starts with token key name ${hex:0:32}"
    fi
    note "ok: the TLS 1.3 ticket (${#hex} hex digits) is a stateful one, not a token ticket"
else
    note "ok: no TLS 1.3 ticket at all"
fi

info "a token ticket from another server is ignored by the -no_ticket server"
for v in tls1_3 tls1_2; do
    p11t_sclient "$pn" "$P11T_WORK/$v-n.out" "-$v" -sess_out "$P11T_WORK/$v-n.pem"
    p11t_assert_token_ticket "$(p11t_ticket_hex "$P11T_WORK/$v-n.pem")" "$v ticket of the normal server"
    p11t_sclient "$pnt" "$P11T_WORK/$v-x.out" "-$v" -sess_in "$P11T_WORK/$v-n.pem"
    assert_eq New "$(p11t_result "$P11T_WORK/$v-x.out")" "$v token ticket on the -no_ticket server"
done

p11t_server_alive nt
p11t_server_stop nt
p11t_server_stop normal
p11t_pass

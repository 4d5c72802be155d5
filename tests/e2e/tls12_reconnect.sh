#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# tls12_reconnect: TLS 1.2 session tickets encrypted and MACed in the token.
# `openssl s_client -tls1_2 -reconnect` makes one full handshake and five
# resumptions: expect New then 5 x Reused, with GCM and with CBC ciphers
# (with and without encrypt-then-MAC; the CBC record MAC is routed through
# the provider too).  The ticket's key name must be a token key.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin tls12_reconnect
p11t_token
p11t_server_start a -www
port=$(p11t_port a)

for variant in "gcm:-cipher ECDHE-ECDSA-AES128-GCM-SHA256" \
    "cbc:-cipher ECDHE-ECDSA-AES128-SHA256" \
    "cbc-no-etm:-cipher ECDHE-ECDSA-AES128-SHA -no_etm"; do
    label=${variant%%:*}
    read -r -a args <<<"${variant#*:}"
    info "s_client -tls1_2 -reconnect ($label)"
    p11t_reconnect "$port" "$P11T_WORK/reconnect-$label.out" -tls1_2 "${args[@]}"
    assert_eq "New Reused Reused Reused Reused Reused" \
        "$(p11t_results "$P11T_WORK/reconnect-$label.out")" "handshake results ($label)"
done

info "the session's ticket comes from the token"
p11t_sclient "$port" "$P11T_WORK/s12.out" -tls1_2 -sess_out "$P11T_WORK/s12.pem"
tick=$(p11t_ticket_hex "$P11T_WORK/s12.pem")
p11t_assert_token_ticket "$tick" "TLS 1.2 ticket"

info "the server saw the same"
assert_ge 15 "$(p11t_server_count a Reused)" "server log: Reused connections"
p11t_server_alive a
p11t_server_stop a
p11t_pass

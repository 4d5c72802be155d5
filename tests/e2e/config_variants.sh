#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# config_variants: resumption works with every supported openssl.cnf shape:
#   - default_properties = ?p11ticket.token=yes (routing for unmodified servers),
#   - p11ticket listed before default in [provider_sect],
#   - both together,
# and with refresh-interval / rescan-interval set.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin config_variants
p11t_token

for name in routing swapped routing-swapped intervals; do
    case $name in
    routing) opts=(--routing) ;;
    swapped) opts=(--swap) ;;
    routing-swapped) opts=(--routing --swap) ;;
    intervals) opts=(--set "refresh-interval = 5" --set "rescan-interval = 2") ;;
    esac
    info "variant $name"
    conf=$P11T_WORK/$name.cnf
    p11t_write_conf "$conf" "${opts[@]}"
    p11t_server_start "$name" --conf "$conf" -www
    port=$(p11t_port "$name")
    for v in tls1_3 tls1_2; do
        p11t_sclient "$port" "$P11T_WORK/$name-$v-1.out" "-$v" -sess_out "$P11T_WORK/$name-$v.pem"
        assert_eq New "$(p11t_result "$P11T_WORK/$name-$v-1.out")" "$name: $v first connection"
        p11t_assert_token_ticket "$(p11t_ticket_hex "$P11T_WORK/$name-$v.pem")" "$name: $v ticket"
        p11t_sclient "$port" "$P11T_WORK/$name-$v-2.out" "-$v" -sess_in "$P11T_WORK/$name-$v.pem"
        assert_eq Reused "$(p11t_result "$P11T_WORK/$name-$v-2.out")" "$name: $v resumption"
    done
    p11t_reconnect "$port" "$P11T_WORK/$name-cbc.out" -tls1_2 -cipher ECDHE-ECDSA-AES128-SHA256
    assert_eq "New Reused Reused Reused Reused Reused" \
        "$(p11t_results "$P11T_WORK/$name-cbc.out")" "$name: TLS 1.2 CBC -reconnect"
    p11t_server_stop "$name"
done
p11t_pass

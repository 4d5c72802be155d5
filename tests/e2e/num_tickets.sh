#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# num_tickets: TLS 1.3 with -num_tickets 4.  The C client keeps every
# ticket of the first connection (s_client -sess_out keeps only the last)
# and resumes each one on a new connection: all four must resume, and all
# must carry a token key name.  The server runs in echo mode (no -www).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin num_tickets
p11t_token
p11t_server_start a -num_tickets 4
port=$(p11t_port a)
out=$P11T_WORK/client.out

p11t_ticket_client -connect "127.0.0.1:$port" -tls1_3 >"$out" 2>"$P11T_WORK/client.err" ||
    { cat "$out" "$P11T_WORK/client.err" >&2; fail "ticket_client failed"; }
cat "$out"
assert_grep "$out" '^connection 0: New$' "first connection is a full handshake"
assert_grep "$out" '^tickets: 4$' "four tickets received"
names=$(p11t_key_names)
while read -r i name; do
    grep -qx -- "$name" <<<"$names" || fail "ticket $i: key name $name is not on the token"
    note "ok: ticket $i key name $name is a token key"
done < <(sed -nE 's/^ticket ([0-9]+): len [0-9]+ name ([0-9a-f]{32})$/\1 \2/p' "$out")
assert_eq 4 "$(count_lines "$out" '^ticket [0-9]+: len [0-9]+ name [0-9a-f]{32}$')" "tickets with a key name"
assert_eq 4 "$(count_lines "$out" '^ticket [0-3]: Reused$')" "tickets that resumed"
assert_eq 0 "$(count_lines "$out" '^ticket [0-9]+: (New|FAILED)')" "tickets that did not resume"
assert_eq 4 "$(p11t_server_count a Reused)" "server log: Reused connections"
p11t_server_alive a
p11t_server_stop a
p11t_pass

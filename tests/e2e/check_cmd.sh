#!/bin/bash
# check_cmd: `p11ticket check` exits 0 on a healthy configuration and
# names the current key; it exits non-zero and names the config key at
# fault when the configuration is broken.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin check_cmd
p11t_token --routing # check refuses auto-enable (default yes) without routing
name=$(p11t_key_names)
assert_eq 1 "$(grep -c . <<<"$name")" "key generations listed"

info "p11ticket check (healthy)"
rc=0
p11t_tool --config "$P11T_CONF" check >"$P11T_WORK/check.out" 2>&1 || rc=$?
cat "$P11T_WORK/check.out"
assert_eq 0 "$rc" "exit status of p11ticket check"
assert_grep "$P11T_WORK/check.out" "$name" "check names the key $name"

info "p11ticket check (broken token-uri)"
p11t_write_conf "$P11T_WORK/bad.cnf" --routing --token-uri pkcs11:token=no-such-token
rc=0
p11t_tool --config "$P11T_WORK/bad.cnf" check >"$P11T_WORK/bad.out" 2>&1 || rc=$?
cat "$P11T_WORK/bad.out"
assert_ne 0 "$rc" "exit status of p11ticket check"
assert_grep "$P11T_WORK/bad.out" 'token-uri' "check names token-uri"
p11t_pass

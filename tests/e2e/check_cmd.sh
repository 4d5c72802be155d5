#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# check_cmd: `p11ticket check` exits 0 on a healthy configuration and
# names the current key; it exits non-zero and names the config key at
# fault when the configuration is broken, the token refuses the PIN or holds
# no active key, each time in exactly one line on stderr (the library's
# own report of the same cause is not repeated) and nothing on stdout.
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

# check_one_error NAME CONF ERE what: check fails with exit 1, one line on
# stderr matching ERE, nothing on stdout.
check_one_error() {
    local name=$1 conf=$2 ere=$3 what=$4 rc=0
    p11t_tool --config "$conf" check >"$P11T_WORK/$name.out" 2>"$P11T_WORK/$name.err" || rc=$?
    sed 's/^/      | /' "$P11T_WORK/$name.err"
    assert_eq 1 "$rc" "$what: exit status"
    assert_eq 0 "$(wc -c <"$P11T_WORK/$name.out")" "$what: bytes on stdout"
    assert_eq 1 "$(grep -c . "$P11T_WORK/$name.err")" "$what: lines on stderr"
    assert_grep "$P11T_WORK/$name.err" "$ere" "$what: the error"
}

info "one error line each"
check_one_error bad1 "$P11T_WORK/bad.cnf" \
    "^p11ticket: check: the token is not usable: token-uri: no token matches pkcs11:token=no-such-token \\(tokens present: 'tickets'\\)\$" \
    "check, broken token-uri"
(umask 077 && echo wrong-pin >"$P11T_WORK/wrong-pin")
p11t_write_conf "$P11T_WORK/pin.cnf" --routing --pin-source "file:$P11T_WORK/wrong-pin"
check_one_error pin "$P11T_WORK/pin.cnf" \
    '^p11ticket: check: the token is not usable: pin-source: the token rejected the PIN \(CKR_PIN_INCORRECT\)' \
    "check, wrong PIN"
p11t_tool --config "$P11T_CONF" retire "$name" >/dev/null 2>&1 || fail "retire $name failed"
check_one_error nokey "$P11T_CONF" \
    '^p11ticket: check: the token is not usable: no active key on the token' \
    "check, no active key"
p11t_pass

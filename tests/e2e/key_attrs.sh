#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# key_attrs: the key generation lives in the token as private, sensitive,
# non-extractable objects whose value cannot be read.
#   - `p11ticket list` marks every object "ok" (CHECK column) and shows
#     SENS yes / EXTR no;
#   - pkcs11-tool (OpenSC, independent of our code) shows the same
#     attributes, and --read-object of the value fails.
# pkcs11-tool takes the user PIN only on its command line; that is
# acceptable here because the token is a throwaway test token.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin key_attrs
p11t_token
command -v pkcs11-tool >/dev/null || fail "pkcs11-tool (package opensc) is required"

info "p11ticket list"
p11t_tool --config "$P11T_CONF" list >"$P11T_WORK/list.out" 2>"$P11T_WORK/list.tool" ||
    fail "p11ticket list failed: $(cat "$P11T_WORK/list.tool")"
cat "$P11T_WORK/list.out"
names=$(p11t_key_names)
assert_eq 1 "$(grep -c . <<<"$names")" "key generations listed"
name=$names
assert_eq 2 "$(count_lines "$P11T_WORK/list.out" "^$name ")" "objects of generation $name (aes + hmac)"
# Columns: NAME ROLE TYPE STATE FROM UNTIL DECRYPT-UNTIL TOK PRIV SENS EXTR ASENS NEXTR CHECK
hdr=$(head -n 1 "$P11T_WORK/list.out")
read -r -a cols <<<"$hdr"
col() { local i; for i in "${!cols[@]}"; do [[ "${cols[$i]}" == "$1" ]] && { echo $((i + 1)); return; }; done; fail "list has no column $1"; }
c_sens=$(col SENS); c_extr=$(col EXTR); c_check=$(col CHECK); c_priv=$(col PRIV)
c_tok=$(col TOK)
while read -r line; do
    read -r -a f <<<"$line"
    role=${f[1]}
    # FROM/UNTIL hold dates with a space? Count from the end for the flags.
    nf=${#f[@]}
    nc=${#cols[@]}
    off=$((nf - nc))
    assert_eq yes "${f[$((c_tok - 1 + off))]}" "$role: CKA_TOKEN"
    assert_eq yes "${f[$((c_priv - 1 + off))]}" "$role: CKA_PRIVATE"
    assert_eq yes "${f[$((c_sens - 1 + off))]}" "$role: CKA_SENSITIVE"
    assert_eq no "${f[$((c_extr - 1 + off))]}" "$role: CKA_EXTRACTABLE"
    assert_eq ok "${f[$((c_check - 1 + off))]}" "$role: CHECK column"
done < <(grep "^$name " "$P11T_WORK/list.out")

info "p11ticket list --json"
p11t_tool --config "$P11T_CONF" list --json >"$P11T_WORK/list.json" 2>"$P11T_WORK/list.tool" ||
    fail "p11ticket list --json failed"
json=$P11T_WORK/list.json
assert_eq 2 "$(grep -o '"role": *"[a-z]*"' "$json" | wc -l)" "JSON: token objects"
assert_eq 2 "$(grep -o '"extractable": *false' "$json" | wc -l)" "JSON: objects not extractable"
assert_eq 2 "$(grep -o '"sensitive": *true' "$json" | wc -l)" "JSON: objects sensitive"
assert_eq 2 "$(grep -o '"value_readable": *false' "$json" | wc -l)" "JSON: objects whose value cannot be read"
assert_no_grep "$json" '"check": *"WEAK"' "JSON: nothing marked WEAK"
assert_grep "$json" '"check": *"ok"' "JSON: check ok"

info "pkcs11-tool's view"
pin=$(<"$P11T_WORK/pin")
p11() {
    pkcs11-tool --module "$P11T_PKCS11_MODULE" --token-label "$P11T_TOKEN_LABEL" \
        --login --pin "$pin" "$@"
}
p11 --list-objects --type secrkey --id "$name" >"$P11T_WORK/objects.out" 2>&1 ||
    fail "pkcs11-tool --list-objects failed: $(cat "$P11T_WORK/objects.out")"
cat "$P11T_WORK/objects.out"
assert_eq 2 "$(count_lines "$P11T_WORK/objects.out" '^Secret Key Object')" "secret key objects with id $name"
assert_eq 2 "$(count_lines "$P11T_WORK/objects.out" 'Access: *sensitive, always sensitive, never extractable')" \
    "objects sensitive, always sensitive, never extractable"

info "reading the key value must fail"
rm -f "$P11T_WORK/value.bin"
if p11 --read-object --type secrkey --id "$name" -o "$P11T_WORK/value.bin" \
    >"$P11T_WORK/read.out" 2>&1; then
    fail "pkcs11-tool --read-object returned the key value"
fi
note "pkcs11-tool: $(grep -m1 -E 'CKR_|error' "$P11T_WORK/read.out" || echo refused)"
[[ ! -s "$P11T_WORK/value.bin" ]] || fail "a key value was written to $P11T_WORK/value.bin"
note "ok: the key value cannot be read"
p11t_pass

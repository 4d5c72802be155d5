#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# tool_tokens: `p11ticket tokens` lists the module's slots and tokens like
# pkcs11-tool -L and says which one token-uri selects, without a PIN:
#   - the token-uri of the test selects the 'tickets' token (marker, last
#     line, exit 0); pin-source pointing nowhere changes nothing, and
#     through faultmod (which counts calls) not one C_OpenSession or
#     C_Login is made;
#   - a wrong token-uri: exit 1, one error naming the tokens there, the
#     listing still on stdout; its uri line, put into token-uri, works
#     (tokens and list);
#   - two tokens and a token-uri that matches both: exit 2, add serial=;
#   - a token that reports CKF_USER_PIN_LOCKED / _FINAL_TRY (faultmod):
#     shown in the flags, and a warning;
#   - a pkcs11-module that does not load: exit 2, one error;
#   - tokens --json: format 1, the same facts.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin tool_tokens
FAULTMOD=$P11T_BUILD/lib/libp11t_faultmod.so
FAULTCTL=$P11T_BUILD/bin/p11t_faultctl
[[ -f $FAULTMOD && -x $FAULTCTL ]] || fail "missing $FAULTMOD or $FAULTCTL (build first)"
p11t_token

# tokens_rc NAME CONF [args]: p11ticket --config CONF tokens ARGS, stdout in
# NAME.out, stderr in NAME.tool, status in P11T_RC; the output is shown.
tokens_rc() {
    local name=$1 conf=$2
    shift 2
    P11T_RC=0
    p11t_tool --config "$conf" tokens "$@" >"$P11T_WORK/$name.out" \
        2>"$P11T_WORK/$name.tool" </dev/null || P11T_RC=$?
    sed 's/^/      | /' "$P11T_WORK/$name.out" "$P11T_WORK/$name.tool"
}
stderr_lines() { grep -c . "$P11T_WORK/$1.tool" || true; }

info "token-uri selects the test token"
tokens_rc ok "$P11T_CONF"
out=$P11T_WORK/ok.out
assert_eq 0 "$P11T_RC" "tokens: exit status"
assert_eq 0 "$(stderr_lines ok)" "tokens: lines on stderr"
assert_grep "$out" "^module     $P11T_PKCS11_MODULE\$" "tokens: module line"
assert_grep "$out" '^token-uri  pkcs11:token=tickets$' "tokens: token-uri line"
assert_eq 1 "$(count_lines "$out" '^  token         tickets   <- token-uri$')" "tokens: the selected token"
assert_ge 1 "$(count_lines "$out" '^  token         \(not initialised\)$')" "tokens: SoftHSM's free slot"
serial=$(awk '/^  token         tickets/ { f = 1 } f && /^  serial / { print $2; exit }' "$out")
[[ "$serial" =~ ^[0-9a-f]{16}$ ]] || fail "tokens: no serial number for 'tickets' ('$serial')"
assert_grep "$out" '^  manufacturer  SoftHSM project$' "tokens: manufacturer"
assert_grep "$out" '^  model         SoftHSM v2$' "tokens: model"
assert_grep "$out" '^  flags         initialised, user PIN set, login required$' "tokens: flags of 'tickets'"
assert_grep "$out" "^  uri           pkcs11:serial=$serial;token=tickets\$" "tokens: the token's own uri"
slot=$(grep -B1 '^  token         tickets' "$out" | grep -oE '^slot [0-9]+' | cut -d' ' -f2)
assert_grep "$out" "^token-uri selects slot $slot: token 'tickets', serial $serial\$" "tokens: last line"

info "no PIN: pin-source names no file, and no session or login at all"
p11t_write_conf "$P11T_WORK/nopin.cnf" --pin-source "file:$P11T_WORK/no-such-pin"
tokens_rc nopin "$P11T_WORK/nopin.cnf"
assert_eq 0 "$P11T_RC" "tokens without a readable PIN: exit status"
assert_eq "$(cat "$out")" "$(cat "$P11T_WORK/nopin.out")" "tokens without a readable PIN: the same output"
p11t_write_conf "$P11T_WORK/fault.cnf" --pkcs11-module "$FAULTMOD" --pin-source "file:$P11T_WORK/no-such-pin"
export P11T_FAULT_MODULE=$P11T_PKCS11_MODULE P11T_FAULT_COUNTS=$P11T_WORK/counts
: >"$P11T_WORK/faults"
export P11T_FAULT_CONTROL=$P11T_WORK/faults
tokens_rc fault "$P11T_WORK/fault.cnf"
assert_eq 0 "$P11T_RC" "tokens through faultmod: exit status"
count() { "$FAULTCTL" counts "$P11T_WORK/counts" "$1" | awk '{ print $2 }'; }
assert_ge 1 "$(count C_GetTokenInfo)" "tokens: C_GetTokenInfo calls (faultmod counts)"
assert_eq 0 "$(count C_OpenSession)" "tokens: C_OpenSession calls"
assert_eq 0 "$(count C_Login)" "tokens: C_Login calls"

info "PIN flags the token reports (faultmod token-flags)"
echo 'token-flags 0x40000' >"$P11T_WORK/faults" # CKF_USER_PIN_LOCKED
tokens_rc locked "$P11T_WORK/fault.cnf"
assert_eq 0 "$P11T_RC" "tokens, user PIN locked: exit status"
assert_grep "$P11T_WORK/locked.out" '^  flags         initialised, user PIN set, login required, user PIN locked$' \
    "tokens: 'user PIN locked' in the flags"
assert_eq 1 "$(stderr_lines locked)" "tokens, user PIN locked: lines on stderr"
assert_grep "$P11T_WORK/locked.tool" '^p11ticket: warning: the token has locked the user PIN' \
    "tokens, user PIN locked: warning"
echo 'token-flags 0x20000' >"$P11T_WORK/faults" # CKF_USER_PIN_FINAL_TRY
tokens_rc final "$P11T_WORK/fault.cnf"
assert_grep "$P11T_WORK/final.out" '^  flags         .*, user PIN final try$' "tokens: 'user PIN final try' in the flags"
assert_grep "$P11T_WORK/final.tool" '^p11ticket: warning: one more wrong user PIN locks the token' \
    "tokens, final try: warning"
unset P11T_FAULT_CONTROL P11T_FAULT_COUNTS P11T_FAULT_MODULE

info "a token-uri that matches no token"
p11t_write_conf "$P11T_WORK/wrong.cnf" --token-uri 'pkcs11:token=ticket'
tokens_rc wrong "$P11T_WORK/wrong.cnf"
assert_eq 1 "$P11T_RC" "tokens, wrong token-uri: exit status"
assert_eq 1 "$(stderr_lines wrong)" "tokens, wrong token-uri: lines on stderr"
assert_grep "$P11T_WORK/wrong.tool" "^p11ticket: tokens: no token matches token-uri pkcs11:token=ticket \(initialised tokens: 'tickets' \(slot $slot\)\)" \
    "tokens, wrong token-uri: the error names the tokens there"
assert_eq 0 "$(count_lines "$P11T_WORK/wrong.out" '<- token-uri')" "tokens, wrong token-uri: tokens marked"
assert_eq 0 "$(count_lines "$P11T_WORK/wrong.out" '^token-uri selects')" "tokens, wrong token-uri: a 'selects' line"
uri=$(awk '/^  uri / { print $2; exit }' "$P11T_WORK/wrong.out")
assert_eq "pkcs11:serial=$serial;token=tickets" "$uri" "tokens, wrong token-uri: the uri line to use instead"
p11t_write_conf "$P11T_WORK/fixed.cnf" --token-uri "$uri"
tokens_rc fixed "$P11T_WORK/fixed.cnf"
assert_eq 0 "$P11T_RC" "tokens with the suggested uri: exit status"
rc=0
p11t_tool --config "$P11T_WORK/fixed.cnf" list >"$P11T_WORK/fixed-list.out" 2>&1 || rc=$?
assert_eq 0 "$rc" "list with the suggested uri: exit status"
assert_eq 2 "$(count_lines "$P11T_WORK/fixed-list.out" '^[0-9a-f]{32} ')" "list with the suggested uri: the key's objects"

info "a pkcs11-module that does not load"
p11t_write_conf "$P11T_WORK/nomod.cnf" --pkcs11-module "$P11T_WORK/no-such-module.so"
tokens_rc nomod "$P11T_WORK/nomod.cnf"
assert_eq 2 "$P11T_RC" "tokens, missing module: exit status"
assert_eq 0 "$(wc -c <"$P11T_WORK/nomod.out")" "tokens, missing module: bytes on stdout"
assert_eq 1 "$(stderr_lines nomod)" "tokens, missing module: lines on stderr"
assert_grep "$P11T_WORK/nomod.tool" '^p11ticket: tokens: pkcs11-module: cannot load .*no-such-module\.so' \
    "tokens, missing module: the error names pkcs11-module"

info "two tokens, a token-uri that matches both"
so_pin=$(p11t_random_pin)
P11T_TEST_SO_PIN=$so_pin p11t_tool --config "$P11T_CONF" init-token --label tickets2 \
    --so-pin-source env:P11T_TEST_SO_PIN >"$P11T_WORK/init2.tool" 2>&1 ||
    fail "init-token --label tickets2: $(cat "$P11T_WORK/init2.tool")"
p11t_write_conf "$P11T_WORK/both.cnf" --token-uri 'pkcs11:model=SoftHSM%20v2'
tokens_rc both "$P11T_WORK/both.cnf"
assert_eq 2 "$P11T_RC" "tokens, token-uri matches two: exit status"
assert_eq 2 "$(count_lines "$P11T_WORK/both.out" '<- token-uri$')" "tokens, token-uri matches two: tokens marked"
assert_eq 1 "$(stderr_lines both)" "tokens, token-uri matches two: lines on stderr"
assert_grep "$P11T_WORK/both.tool" '^p11ticket: tokens: token-uri pkcs11:model=SoftHSM%20v2 matches 2 tokens \(slots [0-9]+, [0-9]+\): add serial=' \
    "tokens, token-uri matches two: the error says add serial="
# The original token-uri still selects exactly one of them.
tokens_rc one "$P11T_CONF"
assert_eq 0 "$P11T_RC" "tokens with two tokens: exit status"
assert_eq 1 "$(count_lines "$P11T_WORK/one.out" '<- token-uri$')" "tokens with two tokens: tokens marked"
assert_eq 2 "$(count_lines "$P11T_WORK/one.out" '^  uri ')" "tokens with two tokens: uri lines"

info "tokens --json"
tokens_rc json "$P11T_CONF" --json
assert_eq 0 "$P11T_RC" "tokens --json: exit status"
python3 - "$P11T_WORK/json.out" "$serial" "$slot" "$P11T_PKCS11_MODULE" <<'PY' || fail "tokens --json"
import json, sys
d = json.load(open(sys.argv[1]))
serial, slot, module = sys.argv[2], int(sys.argv[3]), sys.argv[4]
assert list(d)[0] == "format" and d["format"] == 1, d.get("format")
assert d["module"] == module and d["token_uri"] == "pkcs11:token=tickets", d
assert d["selected"] == 1, d["selected"]
sel = [s for s in d["slots"] if s["token"] and s["token"]["selected"]]
assert len(sel) == 1 and sel[0]["id"] == slot, sel
t = sel[0]["token"]
assert t["label"] == "tickets" and t["serial"] == serial, t
assert t["initialized"] and t["user_pin_initialized"] and t["login_required"], t
assert not t["user_pin_locked"] and not t["user_pin_final_try"], t
assert t["uri"] == "pkcs11:serial=%s;token=tickets" % serial, t["uri"]
labels = sorted(s["token"]["label"] for s in d["slots"] if s["token"])
assert labels == ["", "tickets", "tickets2"], labels
free = [s for s in d["slots"] if s["token"] and not s["token"]["initialized"]]
assert free and free[0]["token"]["uri"] is None, free
PY
note "ok: tokens --json: format 1, module, token_uri, the selected token, every slot"
p11t_pass

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# tool_status: `p11ticket status` as an operator reads it, on generations
# created with known times (create --start/--encrypt-for/--decrypt-for,
# retire):
#   EXP  1 s encrypt, 1 s decrypt          -> expired, "Ns ago"
#   DEC  2 h encrypt, 9 h decrypt, retired -> decrypt-only, 11 h more
#   CUR  3 h encrypt, 1 d decrypt          -> active (current)
#   PEN  starts in 2 h, 3 h encrypt, 5 h decrypt -> pending
# Checks the lines (state, relative times, order, the current one), when a
# new key is needed (and the warning when that is within rotate-lead), the
# 24 h timeline column by column (E, a, P, d, ., the no-key row), --span,
# status --json (format 1, the same generations) and an empty token.
# Relative times are rounded to the minute, so a check accepts the value a
# minute early as well (the keys are a few seconds old when status runs).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin tool_status
p11t_token_empty

abbrev() { echo "${1:0:4}..${1:28:4}"; }
# status_ok NAME [args]: p11ticket status ARGS, exit 0, nothing on stderr.
status_ok() {
    local name=$1
    shift
    p11t_tool_ok "$name" status "$@"
    [[ ! -s "$P11T_WORK/$name.tool" ]] ||
        fail "status $*: unexpected standard error: $(cat "$P11T_WORK/$name.tool")"
    note "ok: status $*: nothing on standard error"
}
# line_of FILE SHORTNAME: the status line of that generation (exactly one;
# its timeline row starts with the name too).
line_of() {
    local n re="^$2  (expired|decrypt-only|active|pending|incomplete) "
    n=$(grep -cE "$re" "$1") || true
    [[ "$n" == 1 ]] || fail "$(basename "$1"): $n lines for $2, expected 1"
    grep -E "$re" "$1"
}
# assert_match VALUE ERE what
assert_match() {
    [[ "$1" =~ $2 ]] || fail "$3: '$1' does not match /$2/"
    note "ok: $3: '$1'"
}

info "empty token"
p11t_tool_rc empty status
assert_eq 0 "$P11T_RC" "status on an empty token: exit status"
assert_eq 0 "$(wc -c <"$P11T_WORK/empty.out")" "status on an empty token: bytes on stdout"
assert_grep "$P11T_WORK/empty.tool" 'no p11ticket keys on the token' "status on an empty token: says so on stderr"
p11t_tool_ok empty-json status --json
python3 - "$P11T_WORK/empty-json.out" <<'PY' || fail "status --json on an empty token"
import json, sys
d = json.load(open(sys.argv[1]))
assert d["format"] == 1, d
assert d["current"] is None and d["generations"] == [], d
assert d["issuing_until_unix"] == d["now_unix"], d
PY
note "ok: status --json on an empty token: format 1, no current key, no generation"

info "generations with known times"
# A second apart, so that their encrypt-from (whole seconds) differ and
# the order is theirs, not their names'.
p11t_tool_ok exp create --encrypt-for 1s --decrypt-for 1s
EXP=$(<"$P11T_WORK/exp.out")
sleep 1
p11t_tool_ok dec create --encrypt-for 2h --decrypt-for 9h
DEC=$(<"$P11T_WORK/dec.out")
p11t_tool_ok retire retire "$DEC"
sleep 1
p11t_tool_ok cur create --encrypt-for 3h --decrypt-for 1d
CUR=$(<"$P11T_WORK/cur.out")
sleep 1
p11t_tool_ok pen create --start +2h --encrypt-for 3h --decrypt-for 5h
PEN=$(<"$P11T_WORK/pen.out")
for v in EXP DEC CUR PEN; do
    [[ "${!v}" =~ ^[0-9a-f]{32}$ ]] || fail "create printed '${!v}' for $v, not a key name"
done
sleep 1 # every key is at least a second old; EXP has expired

info "p11ticket status"
status_ok status
out=$P11T_WORK/status.out
assert_match "$(line_of "$out" "$(abbrev "$EXP")")" \
    '^.{10}  expired {9}  [0-9]+s ago$' "EXP line"
assert_match "$(line_of "$out" "$(abbrev "$DEC")")" \
    '^.{10}  decrypt-only {4}  decrypts (11h|10h59m) more$' "DEC line"
assert_match "$(line_of "$out" "$(abbrev "$CUR")")" \
    '^.{10}  active \(current\)  encrypts (3h|2h59m) more, decrypts until \+1d03h$' "CUR line"
assert_match "$(line_of "$out" "$(abbrev "$PEN")")" \
    '^.{10}  pending {9}  starts encrypting in (2h|1h59m), for 3h$' "PEN line"
assert_eq 1 "$(count_lines "$out" '\(current\)')" "generations marked current"
# Ordered by encrypt-from, as list orders them.
order=$(grep -oE '^[0-9a-f]{4}\.\.[0-9a-f]{4}  (expired|decrypt-only|active|pending)' "$out" |
    awk '{ print $1 }' | tr '\n' ' ')
assert_eq "$(abbrev "$EXP") $(abbrev "$DEC") $(abbrev "$CUR") $(abbrev "$PEN") " "$order" \
    "order of the generation lines"
# PEN takes over from CUR at +2h and encrypts until +5h: then none does.
assert_match "$(grep '^next key needed' "$out")" \
    '^next key needed in (5h|4h59m) \(rotate creates it 1h ahead\)$' "when a new key is needed"

info "the timeline (24 h, 30 min a column)"
assert_grep "$out" '^next 24h from [0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z, 30m a column:$' "timeline header"
assert_grep "$out" '^            now   \+3h   \+6h   \+9h   \+12h  \+15h  \+18h  \+21h  \+24h$' "scale labels"
assert_grep "$out" '^            (\|-----){8}\|$' "scale ruler"
row() { grep -E "^$(abbrev "$1")  [EPad.]+$" "$out" | cut -c13-; }
# CUR encrypts until PEN starts (+2h), is then active but unused until its
# end (+3h), then decrypt-only beyond the 24 h.
assert_eq "EEEEaa$(printf 'd%.0s' {1..42})" "$(row "$CUR")" "timeline row of CUR"
assert_eq "PPPPEEEEEEdddddddddd$(printf '.%.0s' {1..28})" "$(row "$PEN")" "timeline row of PEN"
assert_eq "$(printf 'd%.0s' {1..22})$(printf '.%.0s' {1..26})" "$(row "$DEC")" "timeline row of DEC"
assert_eq "" "$(row "$EXP")" "no timeline row for the expired EXP"
# From PEN's end (+5h, inside the column that starts at +4h30) no key.
assert_eq "         $(printf '!%.0s' {1..39})" "$(grep '^no key  ' "$out" | cut -c13-)" \
    "timeline row 'no key'"
assert_grep "$out" '^E encrypts  P pending  d decrypt-only  a active, a newer one encrypts  \. expired$' "legend"
assert_grep "$out" '^! no key encrypts' "legend of the no-key row"
long=$(awk 'length($0) > 80' "$out" | head -n 1)
assert_eq "" "$long" "a status line longer than 80 columns"

info "p11ticket status --span 6h (10 min a column)"
status_ok span --span 6h
out=$P11T_WORK/span.out
assert_grep "$out" '^next 6h from .*, 10m a column:$' "--span 6h: header"
assert_grep "$out" '^            now   \+1h   \+2h   \+3h   \+4h   \+5h   \+6h$' "--span 6h: scale labels"
assert_eq "$(printf 'E%.0s' {1..12})aaaaaa$(printf 'd%.0s' {1..18})" "$(row "$CUR")" "--span 6h: row of CUR"
for bad in 0 30s 61d 2x; do
    p11t_tool_rc badspan status --span "$bad"
    assert_eq 2 "$P11T_RC" "status --span $bad: exit status"
    assert_eq 0 "$(wc -c <"$P11T_WORK/badspan.out")" "status --span $bad: bytes on stdout"
done

info "p11ticket status --json"
status_ok json --json
python3 - "$P11T_WORK/json.out" "$EXP" "$DEC" "$CUR" "$PEN" <<'PY' || fail "status --json"
import json, sys
d = json.load(open(sys.argv[1]))
exp, dec, cur, pen = sys.argv[2:6]
assert list(d)[0] == "format" and d["format"] == 1, "format: %r" % d.get("format")
g = d["generations"]
assert [x["name"] for x in g] == [exp, dec, cur, pen], [x["name"] for x in g]
assert [x["state"] for x in g] == ["expired", "decrypt-only", "active", "pending"], g
assert [x["current"] for x in g] == [False, False, True, False], g
assert d["current"] == cur, d["current"]
assert d["issuing_until_unix"] == g[3]["encrypt_until_unix"], d["issuing_until"]
assert g[2]["encrypt_until_unix"] - d["now_unix"] in range(3 * 3600 - 60, 3 * 3600 + 1)
for x in g:
    assert x["complete"] and x["check"] == "ok" and x["aes_bits"] == 256, x
    assert "objects" not in x, "status --json lists objects"
    for k in ("encrypt_from", "encrypt_until", "decrypt_until"):
        assert isinstance(x[k + "_unix"], int) and x[k].endswith("Z"), (k, x)
PY
note "ok: status --json: format 1, generations in order, states, current, issuing_until"
# list --json stays the bare array scripts (tests/lib.sh) read.
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert isinstance(d, list) and len(d) == 4, d' \
    <(p11t_tool --config "$P11T_CONF" list --json 2>/dev/null) ||
    fail "list --json is no longer the array of 4 generations"
note "ok: list --json: the unversioned array, 4 generations"

info "a rotation that is late: rotate-lead longer than the time left"
p11t_write_conf "$P11T_WORK/lead.cnf" --set 'rotate-lead = 6h'
rc=0
p11t_tool --config "$P11T_WORK/lead.cnf" status >"$P11T_WORK/lead.out" 2>"$P11T_WORK/lead.tool" || rc=$?
assert_eq 0 "$rc" "status with rotate-lead 6h: exit status"
assert_grep "$P11T_WORK/lead.out" '^next key needed in (5h|4h59m) \(rotate creates it 6h ahead\)$' \
    "status with rotate-lead 6h: when a new key is needed"
assert_eq 1 "$(grep -c . "$P11T_WORK/lead.tool")" "status with rotate-lead 6h: lines on stderr"
assert_grep "$P11T_WORK/lead.tool" "^p11ticket: warning: no generation encrypts from .* \(in (5h|4h59m)\) and rotate creates the next one 6h ahead: run 'p11ticket rotate'" \
    "status with rotate-lead 6h: the late-rotation warning"
p11t_pass

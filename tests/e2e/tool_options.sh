#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# tool_options: the setup tool's command line reads the same everywhere.
#   - Global options (--config, --section, --verbose; -c, -s, -v) work after
#     the command as well as before it, and -s is --section even after
#     create and import (whose --start and --state have no letter).
#   - One letter means one thing: the "-X, --long" pairs of every command's
#     help and of the global help never give a letter two meanings, and the
#     parser of every command agrees with its help for every letter a-z,
#     A-Z (an option with an argument, one without, or an invalid option).
#   - -h, --help and `help CMD` print the same help on stdout, exit 0.
#   - Results on stdout, diagnostics on stderr, for every command: on
#     success list/status/tokens/check/rotate/purge/retire/revoke/import
#     print nothing on stderr (create prints its description there, and
#     only its key name on stdout); on a token-uri that matches no token
#     every command prints exactly one line on stderr and nothing on stdout
#     (tokens: its listing), and usage errors print nothing on stdout.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin tool_options
p11t_token --routing # check wants the ticket HMAC routed
TOOL=$P11T_TOOL_BIN  # the parser probes run it directly: ~600 runs

# run NAME [args]: the tool with ARGS as given (no --config added), stdout
# in NAME.out, stderr in NAME.err, status in P11T_RC.
run() {
    local name=$1
    shift
    P11T_RC=0
    p11t_tool "$@" >"$P11T_WORK/$name.out" 2>"$P11T_WORK/$name.err" </dev/null || P11T_RC=$?
}
lines() { grep -c . "$P11T_WORK/$1" || true; }
C=$P11T_CONF
OPENSSL_CONF=/dev/null openssl rand -out "$P11T_WORK/k80" 80 # an openssl80 key file

info "global options after the command"
run before --config "$C" list
run after list --config "$C"
assert_eq 0 "$P11T_RC" "list --config F: exit status"
assert_eq "$(cat "$P11T_WORK/before.out")" "$(cat "$P11T_WORK/after.out")" "list --config F = --config F list"
assert_ge 3 "$(lines after.out)" "list --config F: lines on stdout"
run short status -c "$C" -s p11ticket
assert_eq 0 "$P11T_RC" "status -c F -s p11ticket: exit status"
assert_grep "$P11T_WORK/short.out" 'active \(current\)' "status -c F -s p11ticket: the current key"
for cmd in "list" "status" "create" "import --format openssl80 $P11T_WORK/k80" "tokens"; do
    # shellcheck disable=SC2086 # word splitting of cmd is intended
    run sect $cmd -s nosuch -c "$C"
    assert_eq 2 "$P11T_RC" "$cmd -s nosuch: exit status"
    assert_grep "$P11T_WORK/sect.err" "has no 'nosuch' entry" "$cmd -s nosuch: -s is --section"
done
assert_eq 1 "$(p11t_key_names | grep -c .)" "key generations after 'create -s nosuch'"
run verbose check -v --config "$C"
assert_eq 0 "$P11T_RC" "check -v --config F: exit status"
assert_grep "$P11T_WORK/verbose.err" '^p11ticket: provider status: ok; current key: [0-9a-f]{32}$' \
    "check -v: --verbose after the command"
run empty list --config ''
assert_eq 2 "$P11T_RC" "list --config '': exit status"
assert_grep "$P11T_WORK/empty.err" '^p11ticket: --config: empty file name$' "list --config '': the error"

info "one letter, one meaning"
mapfile -t cmds < <("$TOOL" --help | awk '/^Commands:/ { f = 1; next } f && /^  [a-z]/ { print $1 }')
assert_ge 11 "${#cmds[@]}" "commands in p11ticket --help"
# "-X, --long [ARG]" lines of a help text: "X long arg|-".
pairs() {
    awk '/^ +-[a-zA-Z], --[a-z-]+/ {
        print substr($1, 2, 1), substr($2, 3), ($3 ~ /^[A-Z]+$/ ? "arg" : "-")
    }'
}
"$TOOL" --help | pairs >"$P11T_WORK/global.pairs"
assert_eq "c config arg
s section arg
v verbose -
h help -
V version -" "$(cat "$P11T_WORK/global.pairs")" "global options"
: >"$P11T_WORK/all.pairs"
for cmd in "${cmds[@]}"; do
    "$TOOL" help "$cmd" >"$P11T_WORK/help-$cmd.txt"
    pairs <"$P11T_WORK/help-$cmd.txt" | sed "s/^/$cmd /" >>"$P11T_WORK/all.pairs"
    for h in -h --help; do
        run h "$cmd" "$h"
        assert_eq 0 "$P11T_RC" "$cmd $h: exit status"
        assert_eq 0 "$(lines h.err)" "$cmd $h: lines on stderr"
        cmp -s "$P11T_WORK/h.out" "$P11T_WORK/help-$cmd.txt" ||
            fail "$cmd $h differs from 'p11ticket help $cmd'"
    done
done
sed 's/^/global /' "$P11T_WORK/global.pairs" >>"$P11T_WORK/all.pairs"
assert_ge 25 "$(lines all.pairs)" "option letters documented"
grep -q '^rotate l lead arg$' "$P11T_WORK/all.pairs" || fail "rotate's -l, --lead is not in its help"
grep -q '^import f format arg$' "$P11T_WORK/all.pairs" || fail "import's -f, --format is not in its help"
conflicts=$(awk '{ m[$2] = m[$2] ? m[$2] : $3 "/" $4; if (m[$2] != $3 "/" $4) print $1 ": -" $2 " is --" $3 ", elsewhere --" m[$2] }' \
    "$P11T_WORK/all.pairs")
assert_eq "" "$conflicts" "letters with two meanings"
note "ok: letters: $(awk '{ print "-" $2 "=" $3 }' "$P11T_WORK/all.pairs" | sort -u | tr '\n' ' ')"

info "each command's parser agrees with its help, letter by letter"
probes=0
for cmd in "${cmds[@]}"; do
    for l in {a..z} {A..Z}; do
        [[ $l == h ]] && continue # prints the help before any error
        kind=$(awk -v c="$cmd" -v l="$l" '($1 == c || ($1 == "global" && l != "V")) && $2 == l { print $4; exit }' \
            "$P11T_WORK/all.pairs")
        case $kind in
        arg) args=("$cmd" "-$l") want="option requires an argument -- '$l'" ;;
        -) args=("$cmd" "-$l" --no-such-option) want="unrecognized option '--no-such-option'" ;;
        *) args=("$cmd" "-$l") want="invalid option -- '$l'" ;;
        esac
        rc=0
        "$TOOL" "${args[@]}" >"$P11T_WORK/probe.out" 2>"$P11T_WORK/probe.err" </dev/null || rc=$?
        if [[ $rc != 2 || -s "$P11T_WORK/probe.out" ]] || ! grep -qF -- "$want" "$P11T_WORK/probe.err"; then
            fail "p11ticket ${args[*]}: expected exit 2 and \"$want\" on stderr only, got $rc: $(head -c 300 "$P11T_WORK/probe.err")"
        fi
        probes=$((probes + 1))
    done
done
assert_eq $((51 * ${#cmds[@]})) "$probes" "parser probes that behaved as the help says"

info "results on stdout, nothing on stderr, on success"
quiet_ok() { # NAME what [args]: exit 0, nothing on stderr, something on stdout
    local name=$1 what=$2
    shift 2
    run "$name" "$@"
    assert_eq 0 "$P11T_RC" "$what: exit status"
    assert_eq 0 "$(lines "$name.err")" "$what: lines on stderr"
    assert_ge 1 "$(lines "$name.out")" "$what: lines on stdout"
}
quiet_ok list "list" list -c "$C"
assert_grep "$P11T_WORK/list.out" '^NAME +ROLE +TYPE +STATE' "list 2>/dev/null: the table"
quiet_ok status "status" status -c "$C"
quiet_ok tokens "tokens" tokens -c "$C"
quiet_ok check "check" check -c "$C"
assert_eq 2 "$(count_lines "$P11T_WORK/check.out" '^TLSv1\.[23]: ticket issued under key [0-9a-f]{32}, resumed: yes$')" "check: result lines"
quiet_ok rotate "rotate" rotate -c "$C"
assert_eq "nothing to do" "$(cat "$P11T_WORK/rotate.out")" "rotate: stdout"
quiet_ok purge "purge" purge -c "$C"
run create create --start +1h -c "$C"
assert_eq 0 "$P11T_RC" "create: exit status"
name=$(cat "$P11T_WORK/create.out")
[[ "$name" =~ ^[0-9a-f]{32}$ ]] || fail "create: stdout is '$name', not one key name"
note "ok: create: stdout is the key name alone"
assert_eq 1 "$(lines create.err)" "create: lines on stderr (its description)"
assert_grep "$P11T_WORK/create.err" "^p11ticket: created $name: pending" "create: the description"
quiet_ok retire "retire" retire "$name" -c "$C"
quiet_ok revoke "revoke" revoke "$name" -c "$C"
quiet_ok import "import --dry-run" import --dry-run --format openssl80 "$P11T_WORK/k80" -c "$C"

info "one error line and nothing on stdout, for every command"
p11t_write_conf "$P11T_WORK/bad.cnf" --routing --token-uri pkcs11:token=no-such-token
for cmd in list status create rotate purge "retire $name" "revoke $name" \
    "import --format openssl80 $P11T_WORK/k80" check tokens; do
    # shellcheck disable=SC2086 # word splitting of cmd is intended
    run bad $cmd --config "$P11T_WORK/bad.cnf"
    assert_eq 1 "$P11T_RC" "$cmd, no token: exit status"
    assert_eq 1 "$(lines bad.err)" "$cmd, no token: lines on stderr"
    assert_grep "$P11T_WORK/bad.err" "^p11ticket: ${cmd%% *}: .*token-uri" "$cmd, no token: the error names token-uri"
    if [[ $cmd == tokens ]]; then
        assert_ge 1 "$(count_lines "$P11T_WORK/bad.out" '^  token         tickets$')" "tokens, no token: the listing"
    else
        assert_eq 0 "$(wc -c <"$P11T_WORK/bad.out")" "$cmd, no token: bytes on stdout"
    fi
done
for args in "list --no-such-option" "status --span" "no-such-command" "retire" "create --start soon"; do
    # shellcheck disable=SC2086 # word splitting of args is intended
    run usage $args -c "$C"
    assert_eq 2 "$P11T_RC" "p11ticket $args: exit status"
    assert_eq 0 "$(wc -c <"$P11T_WORK/usage.out")" "p11ticket $args: bytes on stdout"
    assert_ge 1 "$(lines usage.err)" "p11ticket $args: lines on stderr"
done
p11t_pass

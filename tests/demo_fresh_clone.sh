#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# tests/demo_fresh_clone.sh - the README's first command, as a newcomer runs it.
#
# Copies the project's files (what `git clone` would give: tracked files plus
# new files not ignored, no build/ and no .demo/) into an empty directory and
# runs scripts/demo.sh there without installing packages.  Fails unless the
# demo exits 0 and shows a full handshake, then "Reused" for the token-
# decrypted ticket, after the restart and on the second server.
set -euo pipefail

src=${P11T_SOURCE:?P11T_SOURCE (the source tree) is not set}
work=$(mktemp -d "${TMPDIR:-/tmp}/p11t-demo.XXXXXX")
trap 'rm -rf "$work"' EXIT

fail() {
    printf 'FAIL: demo_fresh_clone: %s\n' "$*"
    [[ -f $work/demo.log ]] && sed 's/^/    demo| /' "$work/demo.log" | tail -n 40
    exit 1
}

mkdir "$work/p11ticket"
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Working-tree contents of every file a clone would have (uncommitted
    # edits included, so the test checks what is about to be committed).
    (cd "$src" && git ls-files -z --cached --others --exclude-standard |
        xargs -0 cp --parents -t "$work/p11ticket" 2>/dev/null) ||
        fail "cannot copy the source tree"
else
    (cd "$src" && tar --exclude=./build --exclude=./.demo -cf - .) |
        (cd "$work/p11ticket" && tar -xf -) || fail "cannot copy the source tree"
fi
[[ ! -e $work/p11ticket/build ]] || fail "the copy has a build/ directory"

rc=0
(cd "$work/p11ticket" && P11T_NO_APT=1 timeout 240 bash scripts/demo.sh </dev/null) \
    >"$work/demo.log" 2>&1 || rc=$?
((rc == 0)) || fail "scripts/demo.sh exited with status $rc"
grep -q -- '-> New, TLSv1.3' "$work/demo.log" || fail "no full handshake shown"
reused=$(grep -c -- '-> Reused, TLSv1.3' "$work/demo.log" || true)
((reused >= 2)) || fail "expected the TLS 1.3 ticket to resume (and after a restart); saw $reused"
grep -q 'presented to the second: *Reused' "$work/demo.log" ||
    fail "the second server did not resume the first one's ticket"
grep -q -- '-> Reused, TLSv1.2' "$work/demo.log" || fail "TLS 1.2 -reconnect never resumed"
echo "demo_fresh_clone: scripts/demo.sh on a fresh copy: New, then Reused ($reused TLS 1.3 resumptions)"
echo "PASS: demo_fresh_clone"

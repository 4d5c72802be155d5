#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# tests/version.sh VERSION SOVERSION BUILD_DIR - the one version number of
# CMakeLists.txt (project(VERSION), P11T_SOVERSION) is what every built and
# installed piece reports:
#   - the provider's version and buildinfo parameters (openssl list);
#   - `p11ticket --version`;
#   - P11TICKET_VERSION_STR in the generated and the installed p11ticket.h;
#   - Version: of p11ticket.pc;
#   - libp11ticket.so.VERSION, its SONAME libp11ticket.so.SOVERSION, and the
#     symbol version P11TICKET_SOVERSION on every exported symbol; the
#     provider exports OSSL_provider_init only;
#   - an install tree (DESTDIR): the header, the .pc file, the man pages'
#     .TH lines, the systemd units and the sysusers.d file.
# Needs no token.  Prints "PASS: version" or "FAIL: version: why".
set -euo pipefail

version=$1 soversion=$2 build=$3
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

fail() {
    echo "FAIL: version: $*" >&2
    exit 1
}
ok() { echo "   ok: $*"; }
expect() { # expected actual what
    [[ "$1" == "$2" ]] || fail "$3: expected '$1', got '$2'"
    ok "$3 = '$2'"
}

provider=$build/lib/p11ticket.so
lib=$build/lib/libp11ticket.so.$version
[[ -f "$provider" ]] || fail "no provider at $provider"
[[ -f "$lib" ]] || fail "no $lib (the library's file name carries the version)"

# The project() line itself (what tests/e2e/provider_status.sh reads).
expect "$version" "$(sed -nE 's/^project\(p11ticket VERSION ([0-9.]+).*/\1/p' "$src/CMakeLists.txt")" \
    "project() in CMakeLists.txt"

# A sanitizer build's provider needs its runtime first in the openssl CLI.
runtime=$(readelf -d "$provider" | grep -oE 'lib[a-z]*san\.so[.0-9]*' | head -n 1) || true
openssl_env=(env)
if [[ -n "$runtime" ]]; then
    openssl_env=(env "LD_PRELOAD=$(${CC:-cc} -print-file-name="$runtime")"
        ASAN_OPTIONS=detect_leaks=0 TSAN_OPTIONS=report_bugs=0)
fi

# The provider, loaded by path; without a token it is inactive, and still
# answers its version parameters.
cat >"$work/openssl.cnf" <<EOF
openssl_conf = init
[init]
providers = provs
[provs]
default = dflt
p11ticket = p11t
[dflt]
activate = 1
[p11t]
module = $provider
activate = 1
EOF
"${openssl_env[@]}" OPENSSL_CONF="$work/openssl.cnf" openssl list -providers -verbose \
    >"$work/list.txt" 2>"$work/list.err" || { cat "$work/list.err" >&2; fail "openssl list failed"; }
field() {
    awk -v f="$1" '/^  p11ticket$/ { p = 1; next } /^  [^ ]/ { p = 0 }
        p && index($0, "    " f ": ") == 1 { sub("^ *" f ": ", ""); print; exit }' "$work/list.txt"
}
expect "$version" "$(field version)" "provider version"
expect "p11ticket $version" "$(field "build info")" "provider build info"

expect "p11ticket $version" "$("$build/bin/p11ticket" --version)" "p11ticket --version"

header_version() {
    sed -nE 's/^#define P11TICKET_VERSION_STR "([^"]*)".*/\1/p' "$1"
}
expect "$version" "$(header_version "$build/include/p11ticket.h")" "generated p11ticket.h"
expect "$version" "$(sed -n 's/^Version: //p' "$build/lib/p11ticket.pc")" "p11ticket.pc Version"

# Names and symbol versions of the library.
soname=$(readelf -d "$lib" | sed -nE 's/.*\(SONAME\).*\[(.*)\]/\1/p')
expect "libp11ticket.so.$soversion" "$soname" "SONAME"
# objdump -T: defined dynamic symbols are those not in *UND*; the version
# column precedes the name.
objdump -T "$lib" | awk '$0 ~ /^[0-9a-f]+ / && $0 !~ /\*UND\*/ { print $(NF-1), $NF }' \
    >"$work/lib.syms"
[[ -s "$work/lib.syms" ]] || fail "libp11ticket exports no symbol"
grep -q '^P11TICKET_'"$soversion"' p11ticket_enable$' "$work/lib.syms" ||
    fail "p11ticket_enable is not exported as p11ticket_enable@@P11TICKET_$soversion"
# The version node definition itself appears as an absolute symbol.
bad=$(awk -v v="P11TICKET_$soversion" '!($1 == v && ($2 ~ /^p11ticket_/ || $2 == v))' \
    "$work/lib.syms")
[[ -z "$bad" ]] || fail "libp11ticket exports symbols without P11TICKET_$soversion or outside p11ticket_*: $bad"
ok "$(grep -c ' p11ticket_' "$work/lib.syms") exported functions, all p11ticket_*@@P11TICKET_$soversion"

objdump -T "$provider" | awk '$0 ~ /^[0-9a-f]+ / && $0 !~ /\*UND\*/ { print $NF }' |
    sort -u >"$work/prov.syms"
expect "OSSL_provider_init" "$(tr '\n' ' ' <"$work/prov.syms" | sed 's/ $//')" \
    "provider's exported symbols"

# An install tree.
DESTDIR=$work/root cmake --install "$build" >"$work/install.log" 2>&1 ||
    { cat "$work/install.log" >&2; fail "cmake --install failed"; }
find "$work/root" \( -type f -o -type l \) >"$work/files"
one() { # ERE what: the one installed file matching ERE
    local f
    f=$(grep -E -- "$1" "$work/files") || fail "not installed: $2 (/$1/)"
    [[ $(wc -l <<<"$f") == 1 ]] || fail "$2 installed more than once: $f"
    echo "$f"
}
expect "$version" "$(header_version "$(one '/include/p11ticket\.h$' header)")" "installed p11ticket.h"
expect "$version" "$(sed -n 's/^Version: //p' "$(one '/pkgconfig/p11ticket\.pc$' .pc)")" \
    "installed p11ticket.pc"
one '/ossl-modules/p11ticket\.so$' provider >/dev/null
one "/libp11ticket\.so\.$version\$" library >/dev/null
n=0
while read -r page; do
    th=$(sed -n '/^\.TH /{p;q}' "$page")
    [[ "$th" == *"\"p11ticket $version\""* ]] ||
        fail "$(basename "$page"): .TH line without \"p11ticket $version\": $th"
    n=$((n + 1))
done < <(grep -E '/man/man[1-8]/[^/]+\.[1-8]$' "$work/files" | xargs grep -l '^\.TH ')
((n >= 5)) || fail "only $n man pages with a .TH line installed"
ok "$n man pages say p11ticket $version"
unit=$(one '/systemd/system/p11ticket-rotate\.service$' "the rotation service")
one '/systemd/system/p11ticket-rotate\.timer$' "the rotation timer" >/dev/null
grep -Eq '^ExecStart=/[^ ]*/bin/p11ticket --config /etc/p11ticket/openssl\.cnf rotate' "$unit" ||
    fail "installed service: ExecStart: $(grep ExecStart= "$unit")"
ok "installed service: $(grep '^ExecStart=' "$unit")"
grep -q '^u p11ticket ' "$(one '/sysusers\.d/p11ticket\.conf$' "sysusers.d file")" ||
    fail "sysusers.d/p11ticket.conf does not create the user p11ticket"
ok "units and sysusers.d file installed"

echo "PASS: version"

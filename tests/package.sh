#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# tests/package.sh - the Debian packages, end to end:
#   1. build them with `dpkg-buildpackage -us -uc -b` from a copy of the
#      source tree (the files git tracks plus untracked, not ignored ones: a
#      fresh clone's content), so the tree itself stays as it was;
#   2. lintian on the .changes: no error and no warning;
#   3. dpkg -i the three packages, then use only installed paths: the
#      provider named by its installed path in a temporary openssl.cnf, a
#      SoftHSM token in a temporary directory, /usr/bin/p11ticket init-token
#      and create, `openssl s_server -www` with only OPENSSL_CONF
#      (auto-enable), `p11ticket check --connect` (exit 0); the rotation
#      command of p11ticket-rotate.service as the system user p11ticket the
#      package created; a program built with pkg-config against
#      libp11ticket-dev; systemd-analyze on the installed units;
#   4. dpkg --purge the packages and check that none of their files is left.
#
# Step 3 and 4 run, by default, in a private mount namespace whose /usr, /etc
# and /var are overlays on the real ones: dpkg really installs and removes
# the packages, but the machine's own files, users and dpkg database never
# change, even if the test dies halfway, and a p11ticket installed by other
# means (cmake --install) is neither overwritten nor removed.
# P11T_PACKAGE_ISOLATE=0 installs into the real system instead (a fresh CI
# machine); it refuses to start if any file of the packages exists already,
# and removes the p11ticket user again if it created it.
#
# Needs root, dpkg-dev, debhelper, lintian, softhsm2, openssl, python3 and
# the build dependencies of debian/control.  P11T_KEEP=1 keeps the work
# directory.  The last line is "PASS: package" or "FAIL: package: why".
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
self=$src/tests/package.sh

fail() {
    echo "FAIL: package: $*" >&2
    echo "FAIL: package"
    exit 1
}
info() { printf '== %s\n' "$*"; }
ok() { printf '   ok: %s\n' "$*"; }

# ---- step 3 and 4: install, use, remove (WORK holds the .debs) -------------

softhsm_module() {
    local m
    for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so; do
        [[ -f "$m" ]] && { echo "$m"; return 0; }
    done
    return 1
}

free_port() {
    python3 - <<'PY'
import random, socket, sys
for _ in range(200):
    port = random.randrange(20000, 32000)
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    sys.exit(0)
sys.exit(1)
PY
}

# install_and_use WORK: everything between dpkg -i and dpkg --purge.
install_and_use() {
    local work=$1 t=$1/use module provider version port pid user_created=0 f
    mkdir -p "$t"
    # Traversable by the p11ticket user (the rotation check below).
    chmod 0755 "$work" "$t"
    version=$(dpkg-deb -f "$work"/p11ticket_*.deb Version)
    module=$(softhsm_module) || fail "SoftHSM (libsofthsm2.so) is not installed"

    info "dpkg -i $(cd "$work" && echo p11ticket_*.deb libp11ticket0_*.deb libp11ticket-dev_*.deb)"
    getent passwd p11ticket >/dev/null || user_created=1
    dpkg -i "$work"/p11ticket_*.deb "$work"/libp11ticket0_*.deb "$work"/libp11ticket-dev_*.deb \
        >"$t/dpkg-i.log" 2>&1 || { cat "$t/dpkg-i.log" >&2; fail "dpkg -i failed"; }
    dpkg -L p11ticket libp11ticket0 libp11ticket-dev | sort -u >"$t/files"
    provider=$(grep -E '/ossl-modules/p11ticket\.so$' "$t/files") ||
        fail "p11ticket ships no ossl-modules/p11ticket.so"
    ok "installed $version; provider $provider"
    getent passwd p11ticket >/dev/null || fail "the postinst did not create the user p11ticket"
    ok "system user: $(getent passwd p11ticket)"

    # Everything below uses installed files only.
    export SOFTHSM2_CONF=$t/softhsm2.conf
    mkdir -p "$t/tokens"
    printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
        "$t/tokens" >"$SOFTHSM2_CONF"
    chmod 0644 "$SOFTHSM2_CONF"
    (umask 077 && printf '1234\n' >"$t/pin" && printf '87654321\n' >"$t/so-pin")
    cat >"$t/openssl.cnf" <<EOF
openssl_conf = openssl_init
[openssl_init]
providers = provider_sect
alg_section = algs
[provider_sect]
default = default_sect
p11ticket = p11ticket_sect
[default_sect]
activate = 1
[p11ticket_sect]
module = $provider
pkcs11-module = $module
token-uri = pkcs11:token=pkgtest
pin-source = file:$t/pin
activate = 1
[algs]
default_properties = ?p11ticket.token=yes
EOF

    info "p11ticket init-token and create (/usr/bin/p11ticket)"
    /usr/bin/p11ticket --config "$t/openssl.cnf" init-token --so-pin-source "file:$t/so-pin" \
        >"$t/init.log" 2>&1 || { cat "$t/init.log" >&2; fail "p11ticket init-token failed"; }
    # Encrypting for 30 min, less than the default rotate-lead (1 h): the
    # rotation below has a successor to create.
    /usr/bin/p11ticket --config "$t/openssl.cnf" create --encrypt-for 30m >"$t/create.log" 2>&1 ||
        { cat "$t/create.log" >&2; fail "p11ticket create failed"; }
    ok "$(head -n 1 "$t/create.log")"

    info "the provider, loaded by openssl through OPENSSL_CONF"
    OPENSSL_CONF=$t/openssl.cnf openssl list -providers -verbose >"$t/list.txt" 2>&1 ||
        { cat "$t/list.txt" >&2; fail "openssl list -providers failed"; }
    awk '/^  p11ticket$/ { p = 1; next } /^  [^ ]/ { p = 0 } p' "$t/list.txt" >"$t/prov.txt"
    grep -q "version: ${version%%[-+~]*}\$" "$t/prov.txt" ||
        { cat "$t/list.txt" >&2; fail "the provider does not report version ${version%%[-+~]*}"; }
    grep -q 'status: active' "$t/prov.txt" ||
        { cat "$t/list.txt" >&2; fail "the provider is not active"; }
    ok "p11ticket provider active, version ${version%%[-+~]*}"

    info "openssl s_server -www with OPENSSL_CONF only, checked by p11ticket check --connect"
    OPENSSL_CONF=/dev/null openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -nodes -days 2 -subj /CN=localhost -keyout "$t/key.pem" -out "$t/cert.pem" \
        >/dev/null 2>&1 || fail "cannot make a test certificate"
    port=$(free_port) || fail "no free port"
    OPENSSL_CONF=$t/openssl.cnf openssl s_server -accept "127.0.0.1:$port" -www \
        -cert "$t/cert.pem" -key "$t/key.pem" -no_cache </dev/null >"$t/s_server.log" 2>&1 &
    pid=$!
    for _ in $(seq 100); do
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
        kill -0 "$pid" 2>/dev/null || { cat "$t/s_server.log" >&2; fail "s_server exited"; }
        sleep 0.1
    done
    if ! /usr/bin/p11ticket --config "$t/openssl.cnf" check --connect "127.0.0.1:$port" \
        >"$t/check.log" 2>&1; then
        kill "$pid" 2>/dev/null || true
        cat "$t/check.log" "$t/s_server.log" >&2
        fail "p11ticket check --connect failed"
    fi
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    sed 's/^/   /' "$t/check.log"
    grep -q 'TLSv1.3: .*resumed: yes' "$t/check.log" || fail "no TLS 1.3 resumption"
    grep -q 'TLSv1.2: .*resumed: yes' "$t/check.log" || fail "no TLS 1.2 resumption"
    ok "tickets under the token's key resume (TLS 1.2 and 1.3)"

    info "the rotation service's command, as the user p11ticket"
    # As p11ticket-rotate.service runs it: User=p11ticket, OPENSSL_CONF and
    # --config naming the same file, whose PIN file belongs to p11ticket
    # (0600).  SoftHSM's object files are their writer's (0600).
    chown -R p11ticket: "$t/tokens"
    install -o p11ticket -g p11ticket -m 0600 "$t/pin" "$t/rotate.pin"
    sed "s|^pin-source = .*|pin-source = file:$t/rotate.pin|" "$t/openssl.cnf" >"$t/rotate.cnf"
    chmod 0644 "$t/rotate.cnf"
    exec_start=$(sed -n 's/^ExecStart=//p' "$(grep -E '/p11ticket-rotate\.service$' "$t/files")")
    read -r -a cmd <<<"${exec_start//\/etc\/p11ticket\/openssl.cnf/$t/rotate.cnf}"
    setpriv --reuid=p11ticket --regid=p11ticket --clear-groups \
        env -i PATH=/usr/bin:/bin SOFTHSM2_CONF="$SOFTHSM2_CONF" OPENSSL_CONF="$t/rotate.cnf" \
        "${cmd[@]}" >"$t/rotate.log" 2>&1 ||
        { cat "$t/rotate.log" >&2; fail "'${cmd[*]}' as p11ticket failed"; }
    sed 's/^/   /' "$t/rotate.log"
    grep -q 'created' "$t/rotate.log" || fail "rotate as p11ticket created no successor"
    ok "${cmd[*]}, as p11ticket, created the successor key in the token"

    info "the installed units"
    if command -v systemd-analyze >/dev/null; then
        systemd-analyze verify "$(grep -E '/p11ticket-rotate\.service$' "$t/files")" \
            "$(grep -E '/p11ticket-rotate\.timer$' "$t/files")" >"$t/verify.log" 2>&1 ||
            { cat "$t/verify.log" >&2; fail "systemd-analyze verify"; }
        systemd-analyze security --offline=yes --threshold=30 \
            "$(grep -E '/p11ticket-rotate\.service$' "$t/files")" >"$t/security.log" 2>&1 ||
            { tail -n 30 "$t/security.log" >&2; fail "systemd-analyze security: exposure above 3.0"; }
        ok "$(grep -o 'Overall exposure level.*' "$t/security.log")"
    else
        echo "   (no systemd-analyze: units not analysed)"
    fi

    info "a program built against libp11ticket-dev (pkg-config p11ticket)"
    cat >"$t/api.c" <<'EOF'
#include <stdio.h>
#include <p11ticket.h>
int main(void)
{
    SSL_CTX *ctx = p11ticket_SSL_CTX_new(NULL, TLS_server_method());
    printf("%s %s\n", P11TICKET_VERSION_STR, ctx != NULL ? "ctx" : "no-ctx");
    SSL_CTX_free(ctx);
    return 0;
}
EOF
    # shellcheck disable=SC2046 # pkg-config's words
    cc -o "$t/api" "$t/api.c" $(pkg-config --cflags --libs p11ticket) >"$t/cc.log" 2>&1 ||
        { cat "$t/cc.log" >&2; fail "cannot build against libp11ticket-dev"; }
    out=$(OPENSSL_CONF=$t/openssl.cnf "$t/api") || fail "the program failed: $out"
    [[ "$out" == "${version%%[-+~]*} ctx" ]] || fail "the program printed '$out'"
    ok "pkg-config $(pkg-config --modversion p11ticket); program prints '$out'"

    info "dpkg --purge"
    dpkg --purge p11ticket libp11ticket-dev libp11ticket0 >"$t/dpkg-r.log" 2>&1 ||
        { cat "$t/dpkg-r.log" >&2; fail "dpkg --purge failed"; }
    while read -r f; do
        [[ -d "$f" ]] && continue # directories (and /lib -> usr/lib) are shared
        [[ -e "$f" || -L "$f" ]] && fail "left after dpkg --purge: $f"
    done <"$t/files"
    ok "no file of the packages is left"
    if ((user_created)) && [[ "${P11T_PACKAGE_INNER:-0}" != 1 ]]; then
        # Debian keeps system users on purge; this test made it, so it goes.
        userdel p11ticket 2>/dev/null || true
    fi
}

if [[ "${1:-}" == --inner ]]; then
    # Inside the private mount namespace: overlays, then step 3 and 4.
    work=$2
    for d in usr etc var; do
        mkdir -p "$work/overlay/$d/upper" "$work/overlay/$d/work"
        mount -t overlay "overlay-$d" \
            -o "lowerdir=/$d,upperdir=$work/overlay/$d/upper,workdir=$work/overlay/$d/work" "/$d"
    done
    P11T_PACKAGE_INNER=1 install_and_use "$work"
    exit 0
fi

# ---- step 1 and 2 -----------------------------------------------------------

[[ "$(id -u)" == 0 ]] || fail "needs root (dpkg -i)"
for tool in dpkg-buildpackage dh lintian git softhsm2-util openssl python3 setpriv; do
    command -v "$tool" >/dev/null || fail "$tool is not installed (scripts/install-deps.sh)"
done
start=$SECONDS
work=$(mktemp -d /tmp/p11t-package.XXXXXX)
cleanup() {
    local rc=$?
    if [[ "${P11T_KEEP:-0}" == 1 || $rc -ne 0 ]]; then
        echo "work directory kept: $work" >&2
    else
        rm -rf "$work"
    fi
}
trap cleanup EXIT

mkdir -p "$work/src"
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    info "source: a copy of $src (tracked and untracked, not ignored files)"
    (cd "$src" && git ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do [[ -e "$f" || -L "$f" ]] && printf '%s\0' "$f"; done |
        tar --null -T - -cf -) | tar -C "$work/src" -xf -
else
    info "source: a copy of $src (not a git checkout: all but build trees)"
    tar -C "$src" --exclude=./build --exclude='./build-*' --exclude=./.demo \
        --exclude='./obj-*' --exclude=./debian/tmp --exclude=./debian/.debhelper -cf - . |
        tar -C "$work/src" -xf -
fi

info "dpkg-buildpackage -us -uc -b"
(cd "$work/src" && dpkg-buildpackage -us -uc -b -j"${P11T_JOBS:-2}") >"$work/build.log" 2>&1 ||
    { tail -n 60 "$work/build.log" >&2; fail "dpkg-buildpackage failed (log: $work/build.log)"; }
ls "$work"/p11ticket_*.deb "$work"/libp11ticket0_*.deb "$work"/libp11ticket-dev_*.deb >/dev/null ||
    fail "dpkg-buildpackage made no p11ticket, libp11ticket0 or libp11ticket-dev package"
for f in "$work"/*.deb; do
    ok "$(basename "$f"): $(dpkg-deb -c "$f" | grep -vc '/$') files"
done
ok "built in $((SECONDS - start)) s"

info "lintian (as nobody)"
# lintian warns when it runs as root; it reads the packages only.
mkdir -p "$work/lintian-home"
chown nobody "$work/lintian-home"
chmod 0755 "$work"
changes=$(echo "$work"/p11ticket_*.changes)
if ! setpriv --reuid=nobody --regid=nogroup --clear-groups \
    env HOME="$work/lintian-home" TMPDIR="$work/lintian-home" \
    lintian --fail-on error,warning --info "$changes" >"$work/lintian.log" 2>&1; then
    cat "$work/lintian.log" >&2
    fail "lintian found errors or warnings"
fi
if [[ -s "$work/lintian.log" ]]; then sed 's/^/   /' "$work/lintian.log"; fi
ok "lintian: no error, no warning"

isolate=${P11T_PACKAGE_ISOLATE:-auto}
if [[ "$isolate" == auto ]]; then
    isolate=0
    if unshare --mount --propagation private true 2>/dev/null &&
        grep -qw overlay /proc/filesystems; then
        isolate=1
    fi
fi
if [[ "$isolate" == 1 ]]; then
    info "install, use and remove in a private mount namespace (overlays on /usr, /etc, /var)"
    unshare --mount --propagation private bash "$self" --inner "$work" ||
        fail "the installed packages failed (see above)"
else
    info "install, use and remove on this machine"
    # Never overwrite (and then remove) files that another installation owns.
    present=$(for f in "$work"/p11ticket_*.deb "$work"/libp11ticket0_*.deb \
        "$work"/libp11ticket-dev_*.deb; do dpkg-deb -c "$f"; done |
        awk '$1 !~ /^d/ { sub(/^\./, "", $6); print $6 }' |
        while read -r f; do [[ -e "$f" || -L "$f" ]] && echo "$f"; done) || true
    [[ -z "$present" ]] || fail "files of the packages exist already (installed another way?): $(echo "$present" | head -n 5 | tr '\n' ' ')"
    install_and_use "$work"
fi

echo "package test: $((SECONDS - start)) s in all"
echo "PASS: package"

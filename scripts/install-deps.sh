#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# scripts/install-deps.sh - install what p11ticket needs to build and test
# on Debian 12.  Sourced by scripts/test.sh and scripts/demo.sh; also runs
# on its own.  Does nothing unless it runs as root, and nothing when
# P11T_NO_APT=1.
#
# Besides the build and test packages it installs the unmodified servers of
# tests/servers/ (nginx, HAProxy, Apache httpd) without letting their
# packages start a service on port 80/443, and Debian's own Node.js 18 (which
# links the system libssl3) next to whatever `node` the machine has, in
# P11T_NODE18_DIR (see p11t_install_node18).
set -euo pipefail

# What scripts/demo.sh needs: build p11ticket and run it on SoftHSM.
P11T_APT_CORE=(
    build-essential cmake pkg-config
    libssl-dev openssl
    softhsm2 p11-kit libp11-kit-dev
)
# What the test suite needs on top.
P11T_APT_PACKAGES=(
    "${P11T_APT_CORE[@]}"
    opensc gnutls-bin
    valgrind clang libclang-rt-14-dev
    python3
    # tests/package.sh: dpkg-buildpackage (dpkg-dev comes with
    # build-essential), dh with the sysusers addon, lintian.
    debhelper lintian
    # tests/servers: unmodified TLS servers, libp11's engine (full-HSM
    # variant), pgrep/ps, and the shared libraries libnode108 links.
    nginx haproxy apache2 libengine-pkcs11-openssl procps
    libbrotli1 libc-ares2 libicu72 libnghttp2-14 libuv1 zlib1g
)

# Debian's Node.js 18 for tests/servers/node.sh.  The machine may carry
# another nodejs package (NodeSource's, which links OpenSSL statically and so
# can never load the provider); it is left alone.  Debian's node binary and
# libnode are unpacked into this directory and run with LD_LIBRARY_PATH; the
# JavaScript modules libnode loads from /usr/share/nodejs are unpacked into /.
P11T_NODE18_DIR=${P11T_NODE18_DIR:-/var/cache/p11ticket/node18}
P11T_NODE18_VERSION_GLOB='18.*'
P11T_NODE18_MODULES=(node-acorn node-cjs-module-lexer node-undici node-busboy)

# The candidate version of PACKAGE matching GLOB among those apt knows.
p11t_apt_version() {
    local pkg=$1 glob=$2 v
    # `apt-cache madison` lists every version, newest first.
    while read -r v; do
        # shellcheck disable=SC2053 # GLOB is a pattern on purpose
        [[ "$v" == $glob ]] && { echo "$v"; return 0; }
    done < <(apt-cache madison "$pkg" | awk -F'|' '{ gsub(/ /, "", $2); print $2 }')
    return 1
}

p11t_install_node18() {
    local v stamp tmp f
    v=$(p11t_apt_version nodejs "$P11T_NODE18_VERSION_GLOB") || {
        echo "install-deps: apt knows no nodejs $P11T_NODE18_VERSION_GLOB; not unpacking Node.js 18" >&2
        return 1
    }
    stamp=$P11T_NODE18_DIR/.version
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$v" && -x "$P11T_NODE18_DIR/usr/bin/node" &&
        -f /usr/share/nodejs/cjs-module-lexer/lexer.js ]]; then
        echo "install-deps: Debian nodejs $v already in $P11T_NODE18_DIR"
        return 0
    fi
    echo "install-deps: unpacking Debian nodejs $v into $P11T_NODE18_DIR"
    tmp=$(mktemp -d)
    # apt-get download writes as _apt when it can; the directory must let it.
    chmod 0755 "$tmp"
    chown _apt "$tmp" 2>/dev/null || true
    if ! (cd "$tmp" && apt-get download -q "nodejs=$v" "libnode108=$v" \
        "${P11T_NODE18_MODULES[@]}" >/dev/null); then
        rm -rf "$tmp"
        echo "install-deps: apt-get download of nodejs $v failed" >&2
        return 1
    fi
    rm -rf "$P11T_NODE18_DIR"
    mkdir -p "$P11T_NODE18_DIR"
    for f in "$tmp"/nodejs_*.deb "$tmp"/libnode108_*.deb; do
        dpkg -x "$f" "$P11T_NODE18_DIR"
    done
    # These only add files below /usr/share/nodejs (and their docs).
    for f in "${P11T_NODE18_MODULES[@]}"; do
        dpkg -x "$tmp/${f}"_*.deb /
    done
    rm -rf "$tmp"
    printf '%s\n' "$v" >"$stamp"
}

# p11t_install_deps [core]: everything the tests need, or with "core" only
# what the demo needs (no servers, no packaging tools, no Node.js).
p11t_install_deps() {
    local core=0
    [[ "${1:-}" == core ]] && core=1
    if [[ "${P11T_NO_APT:-0}" == 1 ]]; then
        echo "install-deps: P11T_NO_APT=1, not installing packages"
        return 0
    fi
    if [[ "$(id -u)" != 0 ]]; then
        echo "install-deps: not root, not installing packages (needs: ${P11T_APT_PACKAGES[*]})"
        return 0
    fi
    export DEBIAN_FRONTEND=noninteractive
    if ((core)); then
        echo "install-deps: apt-get install ${P11T_APT_CORE[*]}"
        apt-get update -q >/dev/null
        apt-get install -y -q --no-install-recommends "${P11T_APT_CORE[@]}" >/dev/null
        return 0
    fi
    echo "install-deps: apt-get install ${P11T_APT_PACKAGES[*]}"
    apt-get update -q >/dev/null
    # The server packages start their services on port 80/443 unless
    # invoke-rc.d is told not to (exit status 101: "action forbidden").
    # A policy file that was already there is left as it is.  The subshell's
    # trap removes ours even when the install fails or is interrupted.
    (
        policy=/usr/sbin/policy-rc.d
        if [[ ! -e "$policy" ]]; then
            trap 'rm -f "$policy"' EXIT
            trap 'exit 130' INT TERM
            printf '#!/bin/sh\n# scripts/install-deps.sh: no service starts during the install\nexit 101\n' >"$policy"
            chmod 0755 "$policy"
        fi
        apt-get install -y -q --no-install-recommends "${P11T_APT_PACKAGES[@]}" >/dev/null
    )
    p11t_install_node18
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    p11t_install_deps
fi

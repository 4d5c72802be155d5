#!/bin/bash
# scripts/install-deps.sh - install what p11ticket needs to build and test
# on Debian 12.  Sourced by scripts/test.sh and scripts/demo.sh; also runs
# on its own.  Does nothing unless it runs as root, and nothing when
# P11T_NO_APT=1.
set -euo pipefail

P11T_APT_PACKAGES=(
    build-essential cmake pkg-config
    libssl-dev openssl
    softhsm2 p11-kit libp11-kit-dev
    opensc gnutls-bin
    valgrind clang libclang-rt-14-dev
    python3
)

p11t_install_deps() {
    if [[ "${P11T_NO_APT:-0}" == 1 ]]; then
        echo "install-deps: P11T_NO_APT=1, not installing packages"
        return 0
    fi
    if [[ "$(id -u)" != 0 ]]; then
        echo "install-deps: not root, not installing packages (needs: ${P11T_APT_PACKAGES[*]})"
        return 0
    fi
    echo "install-deps: apt-get install ${P11T_APT_PACKAGES[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${P11T_APT_PACKAGES[@]}" >/dev/null
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    p11t_install_deps
fi

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# bench/token.sh - sourced by run_quick.sh and profile.sh: a throwaway
# SoftHSM token with random PINs under mktemp -d, and an openssl.cnf whose
# p11ticket section points at it.
#
#   bench_token PROVIDER_MODULE    sets $dir (0700, removed at exit) with
#                                  $dir/openssl.cnf; exports SOFTHSM2_CONF
#
# softhsm2-util and the module come from P11T_SOFTHSM2_UTIL and
# P11T_PKCS11_MODULE when set (ctest passes them), else from PATH and
# /usr/lib/softhsm.  The PINs exist only in the 0600 pin file and the token.

bench_token() {
    local provider=$1 me=${0##*/} softhsm_util pkcs11 pin so_pin
    usable() { [[ -n $1 && $1 != *-NOTFOUND ]]; }
    softhsm_util=${P11T_SOFTHSM2_UTIL:-}
    usable "$softhsm_util" || softhsm_util=$(command -v softhsm2-util || true)
    pkcs11=${P11T_PKCS11_MODULE:-}
    usable "$pkcs11" || pkcs11=/usr/lib/softhsm/libsofthsm2.so
    [[ -x $softhsm_util ]] || { echo "$me: softhsm2-util not found" >&2; exit 1; }
    [[ -e $pkcs11 ]] || { echo "$me: $pkcs11 not found" >&2; exit 1; }
    [[ -e $provider ]] || { echo "$me: $provider not found" >&2; exit 1; }

    dir=$(mktemp -d "${TMPDIR:-/tmp}/p11t-bench-XXXXXX")
    trap 'rm -rf "$dir"' EXIT
    chmod 0700 "$dir"
    mkdir "$dir/tokens"
    cat >"$dir/softhsm2.conf" <<EOF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
    export SOFTHSM2_CONF=$dir/softhsm2.conf

    pin=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    so_pin=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
    (umask 077 && printf '%s\n' "$pin" >"$dir/pin")
    "$softhsm_util" --init-token --free --label tickets --so-pin "$so_pin" \
        --pin "$pin" >"$dir/init.log" 2>&1 ||
        { cat "$dir/init.log" >&2; echo "$me: token init failed" >&2; exit 1; }
    unset pin so_pin

    cat >"$dir/openssl.cnf" <<EOF
openssl_conf = openssl_init

[openssl_init]
providers = provider_sect

[provider_sect]
default = default_sect
p11ticket = p11ticket_sect

[default_sect]
activate = 1

[p11ticket_sect]
module = $provider
pkcs11-module = $pkcs11
token-uri = pkcs11:token=tickets
pin-source = file:$dir/pin
activate = 1
EOF
    chmod 0600 "$dir/openssl.cnf"
}

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# provider_status: what `openssl list -providers -verbose` shows for the
# p11ticket provider loaded from OPENSSL_CONF tells a working configuration
# (status: active) from a broken one (status: inactive): a token-uri that
# matches no token, a missing PIN file, a token without a current key, and
# auto-enable that cannot hand over.  The provider's version is the
# project's version.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin provider_status
p11t_token_empty

# provider_status CONF: "active" or "inactive" (the p11ticket entry's status).
provider_status() {
    OPENSSL_CONF=$1 openssl list -providers -verbose 2>"$P11T_WORK/list.err" |
        awk '/^  p11ticket$/ { p = 1; next } /^  [^ ]/ { p = 0 }
             p && /status:/ { print $2; exit }'
}

info "a token without a current key: inactive"
assert_eq inactive "$(provider_status "$P11T_CONF")" "no key generation yet"

p11t_create_key "$P11T_CONF"
info "a working configuration: active, with the project's version"
assert_eq active "$(provider_status "$P11T_CONF")" "working configuration"
version=$(OPENSSL_CONF=$P11T_CONF openssl list -providers -verbose |
    awk '/^  p11ticket$/ { p = 1; next } p && /version:/ { print $2; exit }')
expected=$(sed -nE 's/^project\(p11ticket VERSION ([0-9.]+).*/\1/p' \
    "$P11T_LIB_DIR/../CMakeLists.txt")
assert_eq "$expected" "$version" "provider version"

info "a token-uri that matches no token: inactive"
p11t_write_conf "$P11T_WORK/wrong-token.cnf" --token-uri "pkcs11:token=not-there"
assert_eq inactive "$(provider_status "$P11T_WORK/wrong-token.cnf")" "wrong token-uri"

info "a PIN file that does not exist: inactive"
p11t_write_conf "$P11T_WORK/no-pin.cnf" --pin-source "file:$P11T_WORK/no-such-pin"
assert_eq inactive "$(provider_status "$P11T_WORK/no-pin.cnf")" "missing PIN file"

info "auto-enable cannot find libp11ticket: inactive"
# A copy of the provider alone in a directory, with the install libdir and
# the loader's search path unable to supply libp11ticket.so.0.
mkdir -p "$P11T_WORK/lonely"
cp "$P11T_PROVIDER_SO" "$P11T_WORK/lonely/p11ticket.so"
p11t_write_conf "$P11T_WORK/lonely.cnf"
p11t_write_conf "$P11T_WORK/lonely-no.cnf" --set "auto-enable = no"
sed -i "s|^module = .*|module = $P11T_WORK/lonely/p11ticket.so|" \
    "$P11T_WORK/lonely.cnf" "$P11T_WORK/lonely-no.cnf"
if [[ -e /usr/local/lib/libp11ticket.so.0 || -e /usr/lib/libp11ticket.so.0 ]] ||
    ldconfig -p | grep -q 'libp11ticket\.so\.0'; then
    note "libp11ticket is installed system-wide: the lonely provider finds it; checking it is active"
    assert_eq active "$(provider_status "$P11T_WORK/lonely.cnf")" "lonely provider, installed library"
else
    assert_eq inactive "$(provider_status "$P11T_WORK/lonely.cnf")" "lonely provider"
    assert_eq active "$(provider_status "$P11T_WORK/lonely-no.cnf")" "lonely provider, auto-enable = no"
fi
p11t_pass

#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# nginx_full_hsm: nothing secret outside the token.  nginx's ECDSA
# certificate key is generated inside the same SoftHSM token and used
# through libp11's engine (ssl_certificate_key "engine:pkcs11:URI", the
# engine configured in the same openssl.cnf that loads p11ticket), while
# p11ticket keeps the ticket keys there: both use one PKCS#11 module in the
# nginx master and in its www-data workers.
#   - TLS 1.2 -reconnect 1 New 5 Reused, TLS 1.3 resumption, tickets under
#     the token key; the server's certificate is the one whose key is in the
#     token (every full handshake signs with it);
#   - 20 more full handshakes: no error in nginx's log, no worker crash;
#   - afterwards `p11ticket list` still shows the ticket generation, and
#     the certificate key is still on the token.
# The engine's PIN comes from the URI's pin-source=file: attribute, read by
# the nginx master as root when it loads the key.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/servers/lib_servers.sh
. "$(dirname "$0")/lib_servers.sh"
srv_begin nginx_full_hsm
srv_need nginx "Debian's nginx"
srv_need p11tool "gnutls-bin (generates the certificate key in the token)"
engine_so=$(find /usr/lib -path '*/engines-3/pkcs11.so' -print -quit 2>/dev/null)
[[ -n "$engine_so" ]] || fail "libp11's engine (engines-3/pkcs11.so) not found (libengine-pkcs11-openssl)"
key=$(srv_current_key)

info "an ECDSA P-256 key generated inside the token"
# p11tool takes the PIN from GNUTLS_PIN, never from its command line.
GNUTLS_PIN=$(cat "$P11T_WORK/pin") p11tool --provider "$P11T_PKCS11_MODULE" --login \
    --generate-privkey=ECDSA --curve=secp256r1 --label srvkey --id 01 \
    "pkcs11:token=$P11T_TOKEN_LABEL" >"$P11T_WORK/genkey.log" 2>&1 ||
    { cat "$P11T_WORK/genkey.log" >&2; fail "p11tool could not generate the key"; }
srv_share_token
uri="pkcs11:token=$P11T_TOKEN_LABEL;object=srvkey;type=private?pin-source=file:$P11T_WORK/pin"

engine_section() {
    cat <<EOF

[engine_sect]
pkcs11 = pkcs11_sect

[pkcs11_sect]
engine_id = pkcs11
dynamic_path = $engine_so
MODULE_PATH = $P11T_PKCS11_MODULE
# nginx calls ENGINE_load_private_key() without ENGINE_init().
init = 1
EOF
}
# The engine alone, for `openssl req`; the engine plus p11ticket for nginx.
{
    printf 'openssl_conf = openssl_init\n\n[openssl_init]\nengines = engine_sect\n'
    engine_section
} >"$P11T_WORK/engine.cnf"
{
    sed 's/^providers = provider_sect$/providers = provider_sect\nengines = engine_sect/' "$SRV_CONF"
    engine_section
} >"$P11T_WORK/full-hsm.cnf"
grep -q '^engines = engine_sect$' "$P11T_WORK/full-hsm.cnf" || fail "cannot add the engine to $SRV_CONF"

OPENSSL_CONF=$P11T_WORK/engine.cnf openssl req -new -x509 -engine pkcs11 -keyform engine \
    -key "$uri" -subj /CN=localhost -days 2 -out "$P11T_WORK/hsm-cert.pem" \
    >"$P11T_WORK/hsm-cert.log" 2>&1 ||
    { cat "$P11T_WORK/hsm-cert.log" >&2; fail "openssl req with the token key failed"; }
srv_share_token
fp=$(OPENSSL_CONF=/dev/null openssl x509 -in "$P11T_WORK/hsm-cert.pem" -noout -fingerprint -sha256)
note "certificate signed by the token key: $fp"

info "nginx: certificate key and ticket keys in one token"
SRV_CONF=$P11T_WORK/full-hsm.cnf
SRV_NGINX_CERT=$P11T_WORK/hsm-cert.pem SRV_NGINX_KEY="engine:pkcs11:$uri" \
    srv_nginx_conf n "$(srv_free_port)"
srv_nginx_start n
pn=$(p11t_port n)
srv_basic_checks "$pn" n "full-HSM nginx"
p11t_sclient "$pn" "$P11T_WORK/cert.out" -tls1_3 -showcerts
OPENSSL_CONF=/dev/null openssl x509 -in "$P11T_WORK/cert.out" -noout -fingerprint -sha256 \
    >"$P11T_WORK/peer-fp.txt" 2>&1 || fail "no certificate in the s_client output"
assert_eq "$fp" "$(cat "$P11T_WORK/peer-fp.txt")" "the server's certificate (its key is in the token)"

info "20 more full handshakes (each signs with the token key)"
for ((i = 1; i <= 10; i++)); do
    for v in tls1_2 tls1_3; do
        p11t_get_ticket "$pn" "more-$v-$i" "$v"
        assert_eq "$key" "$(p11t_sess_key "$P11T_WORK/more-$v-$i.pem")" "$v ticket $i"
    done
done >"$P11T_WORK/more.log"
note "ok: 20 full handshakes, 20 tickets under the token key"
srv_alive n
srv_nginx_no_crash n
assert_no_grep "$P11T_WORK/n.err" '\[(error|crit)\]|p11ticket' "nginx: no error logged"
srv_stop n

info "the token afterwards"
p11t_gens_load
p11t_gens_show
assert_eq "$key" "$(p11t_gens_current)" "p11ticket list: the current key"
assert_eq yes "$(p11t_gen "$key" complete)" "p11ticket list: the generation is complete"
GNUTLS_PIN=$(cat "$P11T_WORK/pin") p11tool --provider "$P11T_PKCS11_MODULE" --login \
    --list-privkeys "pkcs11:token=$P11T_TOKEN_LABEL" >"$P11T_WORK/privkeys.txt" 2>&1 ||
    { cat "$P11T_WORK/privkeys.txt" >&2; fail "p11tool --list-privkeys failed"; }
assert_grep "$P11T_WORK/privkeys.txt" 'Label: srvkey' "the certificate key is still on the token"
p11t_pass

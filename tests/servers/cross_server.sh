#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# cross_server: nginx, HAProxy, Apache httpd, p11ticket-server and openssl
# s_server on one token share the ticket keys, so any of them can decrypt
# any other's tickets.  Whether a decrypted ticket RESUMES is decided by
# libssl's session id context (sid_ctx): the session inside a ticket
# carries the sid_ctx of the server that issued it, and libssl treats a
# session whose sid_ctx differs from its own like an unknown one
# (ssl_get_prev_session: "we don't want to use it in this context"): a
# full handshake and a fresh ticket.  Each server sets its own sid_ctx and
# none of them can be configured to another's:
#   nginx 1.22       SHA-1("HTTP" | SHA-1(DER of each certificate) | client
#                    CA names), 20 bytes: equal for nginx instances with the
#                    same certificates;
#   HAProxy 2.6      "haproxy": equal for every HAProxy;
#   Apache 2.4       hex MD5 of "ServerName:port" (the virtual host's port
#                    when ServerName names none): equal only for the same
#                    name and port (see apache.sh);
#   p11ticket-server "p11ticket-server";
#   Node.js 18       hex SHA-1 of process.argv (see node.sh);
#   s_server         -context STRING.
# So a ticket issued by nginx does NOT resume on HAProxy, Apache or
# p11ticket-server (asserted below: New, and the ticket they issue instead
# is under the same token key).  s_server -context set to the issuer's
# sid_ctx resumes the tickets of each of them, and each of them resumes the
# tickets of such an s_server: across server software, the token key is
# shared and the sid_ctx is the only thing that must match.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
# shellcheck source=tests/servers/lib_servers.sh
. "$(dirname "$0")/lib_servers.sh"
srv_begin cross_server
srv_need nginx "Debian's nginx"
srv_need haproxy "Debian's haproxy"
srv_need apache2 "Debian's apache2"
key=$(srv_current_key)

# nginx's sid_ctx for a certificate (no client CA list), as hex.
nginx_sid_hex() {
    (printf HTTP && OPENSSL_CONF=/dev/null openssl x509 -in "$1" -outform DER |
        OPENSSL_CONF=/dev/null openssl sha1 -binary) |
        OPENSSL_CONF=/dev/null openssl sha1 -binary | od -An -tx1 | tr -d ' \n'
}

# s_server takes -context as a C string: nginx's binary sid_ctx must have no
# zero byte.  Make nginx its own certificate until it has none.
for ((i = 0; i < 20; i++)); do
    OPENSSL_CONF=/dev/null openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
        -nodes -days 2 -subj /CN=localhost -keyout "$P11T_WORK/nginx-key.pem" \
        -out "$P11T_WORK/nginx-cert.pem" >"$P11T_WORK/nginx-cert.log" 2>&1 ||
        fail "cannot create nginx's certificate"
    nsid=$(nginx_sid_hex "$P11T_WORK/nginx-cert.pem")
    [[ ${#nsid} -eq 40 ]] || fail "nginx sid_ctx: '$nsid'"
    grep -qE '^(..)*00' <<<"$nsid" || break
done
grep -qE '^(..)*00' <<<"$nsid" && fail "no certificate without a zero byte in nginx's sid_ctx in 20 tries"
# printf -v keeps every byte, trailing newlines too.
esc=
for ((i = 0; i < ${#nsid}; i += 2)); do
    esc+="\\x${nsid:i:2}"
done
printf -v nginx_ctx '%b' "$esc"
note "nginx sid_ctx: $nsid"

info "nginx, HAProxy, Apache and p11ticket-server on one token"
SRV_NGINX_CERT=$P11T_WORK/nginx-cert.pem SRV_NGINX_KEY=$P11T_WORK/nginx-key.pem \
    srv_nginx_conf n "$(srv_free_port)"
srv_nginx_start n
srv_haproxy_conf h "$(srv_free_port)"
srv_haproxy_start h
srv_apache_conf a "$(srv_free_port)"
srv_apache_start a
p11t_server_start p -www
apache_ctx=$(printf 'localhost:%s' "$(p11t_port a)" | md5sum | cut -c1-32)
declare -A ctx=([n]=$nginx_ctx [h]=haproxy [a]=$apache_ctx [p]=p11ticket-server)
declare -A label=([n]=nginx [h]=HAProxy [a]=Apache [p]=p11ticket-server)

for s in n h a p; do
    for v in 2 3; do
        p11t_get_ticket "$(p11t_port "$s")" "$s-1$v" "tls1_$v"
        assert_eq "$key" "$(p11t_sess_key "$P11T_WORK/$s-1$v.pem")" "${label[$s]}: TLS 1.$v ticket key name"
    done
done

info "nginx's tickets on HAProxy, Apache, p11ticket-server: another sid_ctx, a full handshake"
for s in h a p; do
    for v in 2 3; do
        assert_eq New "$(p11t_resume "$(p11t_port "$s")" "n-1$v" "$s-from-n-1$v" "tls1_$v")" \
            "${label[$s]}: TLS 1.$v ticket of nginx"
    done
    # The fresh ticket comes from the same token key.
    assert_eq "$key" "$(p11t_out_ticket_key "$P11T_WORK/$s-from-n-12.out")" "${label[$s]}: its new TLS 1.2 ticket"
    assert_eq "$key" "$(p11t_sess_key "$P11T_WORK/$s-from-n-13.pem")" "${label[$s]}: its new TLS 1.3 ticket"
done
info "a second nginx with another certificate: another sid_ctx, a full handshake"
srv_nginx_conf n2 "$(srv_free_port)"
srv_nginx_start n2
for v in 2 3; do
    assert_eq New "$(p11t_resume "$(p11t_port n2)" "n-1$v" "n2-from-n-1$v" "tls1_$v")" \
        "nginx with another certificate: TLS 1.$v ticket of nginx"
done
srv_stop n2

info "s_server with the issuer's sid_ctx resumes every server's tickets, and they resume its"
for s in n h a p; do
    srv_s_server_start "s-$s" "$(srv_free_port)" -context "${ctx[$s]}"
    ps=$(p11t_port "s-$s")
    for v in 2 3; do
        assert_eq Reused "$(p11t_resume "$ps" "$s-1$v" "s-from-$s-1$v" "tls1_$v")" \
            "s_server -context (${label[$s]}'s): TLS 1.$v ticket of ${label[$s]}"
        p11t_get_ticket "$ps" "s-$s-1$v" "tls1_$v"
        assert_eq Reused "$(p11t_resume "$(p11t_port "$s")" "s-$s-1$v" "$s-from-s-1$v" "tls1_$v")" \
            "${label[$s]}: TLS 1.$v ticket of s_server -context (${label[$s]}'s)"
    done
    srv_stop "s-$s"
done

srv_nginx_no_crash n
srv_haproxy_no_crash h
srv_apache_no_crash a
p11t_server_alive p
for s in n h a; do
    srv_stop "$s"
done
p11t_server_stop p
p11t_pass

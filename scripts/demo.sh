#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# scripts/demo.sh - see p11ticket work, start to finish, in about a minute.
#
# Installs the dependencies (Debian 12, as root; P11T_NO_APT=1 skips that),
# builds p11ticket into build/demo, creates a SoftHSM token in ./.demo/,
# provisions ticket keys with the setup tool, runs p11ticket-server on
# 127.0.0.1 and shows, with `openssl s_client`, that:
#   1. the first connection is a full handshake;
#   2. a reconnect resumes with the ticket, decrypted inside the token;
#   3. after a server restart the old ticket still resumes;
#   4. a second server sharing the token resumes the first one's ticket.
# Servers are stopped on exit.  ./.demo/ is recreated on every run.
set -euo pipefail

cd "$(dirname "$0")/.."
root=$(pwd)
# shellcheck source=scripts/install-deps.sh
. scripts/install-deps.sh
p11t_install_deps core

build=$root/build/demo
demo=$root/.demo
softhsm_module=${P11T_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}

if [[ -t 1 ]]; then
    step() { printf '\n\033[1m%s\033[0m\n' "$*"; }
else
    step() { printf '\n%s\n' "$*"; }
fi
say() { printf '   %s\n' "$*"; }
die() {
    printf 'demo: %s\n' "$*" >&2
    exit 1
}

step "Building p11ticket (build/demo)"
# The logs live inside the build tree, created first: on a fresh clone
# neither build/ nor build/demo exists yet.
mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DP11T_BUILD_TESTS=OFF >"$build/cmake.log" 2>&1 ||
    { cat "$build/cmake.log" >&2; die "cmake configure failed (log: build/demo/cmake.log)"; }
cmake --build "$build" -j "${P11T_JOBS:-2}" >"$build/build.log" 2>&1 ||
    { tail -n 40 "$build/build.log" >&2; die "build failed (log: build/demo/build.log)"; }
say "done: $build/bin/p11ticket-server, $build/bin/p11ticket, $build/lib/p11ticket.so"

servers=()
cleanup() {
    local pid
    for pid in "${servers[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT

step "Creating a SoftHSM token in .demo/"
rm -rf "$demo"
mkdir -p "$demo/tokens"
chmod 0700 "$demo"
printf 'directories.tokendir = %s\nobjectstore.backend = file\nlog.level = ERROR\n' \
    "$demo/tokens" >"$demo/softhsm2.conf"
export SOFTHSM2_CONF=$demo/softhsm2.conf
(umask 077 && od -An -N8 -tx1 /dev/urandom | tr -d ' \n' >"$demo/pin")
cat >"$demo/openssl.cnf" <<EOF
# The provider section p11ticket-server and the setup tool read.
openssl_conf = openssl_init

[openssl_init]
providers = provider_sect

[provider_sect]
default = default_sect
p11ticket = p11ticket_sect

[default_sect]
activate = 1

[p11ticket_sect]
module = $build/lib/p11ticket.so
pkcs11-module = $softhsm_module
token-uri = pkcs11:token=tickets
pin-source = file:$demo/pin
activate = 1
EOF
# The SO PIN is only needed once; it goes through the environment, never argv.
P11T_DEMO_SO_PIN=$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n') \
    "$build/bin/p11ticket" --config "$demo/openssl.cnf" init-token --label tickets \
    --so-pin-source env:P11T_DEMO_SO_PIN
say "token 'tickets' ready; its user PIN is in .demo/pin (mode 0600)"

step "Provisioning a ticket key generation inside the token"
"$build/bin/p11ticket" --config "$demo/openssl.cnf" create
"$build/bin/p11ticket" --config "$demo/openssl.cnf" list
say "The keys are sensitive and non-extractable: they never leave the token."

OPENSSL_CONF=/dev/null openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -nodes -days 2 -subj /CN=localhost -keyout "$demo/key.pem" -out "$demo/cert.pem" \
    >/dev/null 2>&1 || die "cannot create a certificate"

# start_server NAME: sets $port
start_server() {
    local name=$1 i
    OPENSSL_CONF=$demo/openssl.cnf "$build/bin/p11ticket-server" -accept 127.0.0.1:0 \
        -cert "$demo/cert.pem" -key "$demo/key.pem" -www \
        >"$demo/$name.out" 2>"$demo/$name.err" </dev/null &
    servers+=("$!")
    for ((i = 0; i < 200; i++)); do
        port=$(sed -nE 's/^ACCEPT 127\.0\.0\.1:([0-9]+)$/\1/p' "$demo/$name.out")
        [[ -n "$port" ]] && return 0
        kill -0 "$!" 2>/dev/null || { cat "$demo/$name.err" >&2; die "server $name exited"; }
        sleep 0.05
    done
    die "server $name did not start"
}

stop_last_server() {
    local pid=${servers[-1]} rc=0
    kill -TERM "$pid"
    wait "$pid" || rc=$?
    unset 'servers[-1]'
    ((rc == 0)) || say "warning: the server exited with status $rc (see .demo/*.err)"
}

# connect PORT ARGS...: one s_client connection; prints New or Reused.
# The client never loads the provider (OPENSSL_CONF=/dev/null): it is an
# ordinary TLS client.
connect() {
    local port=$1
    shift
    printf 'GET / HTTP/1.0\r\n\r\n' |
        OPENSSL_CONF=/dev/null timeout 20 openssl s_client -connect "127.0.0.1:$port" \
            -ign_eof "$@" 2>&1 | grep -m1 -oE '^(New|Reused), [^,]+' || echo "no handshake"
}

step "Starting p11ticket-server"
start_server first
say "listening on 127.0.0.1:$port"

step "1. First connection: New"
say "openssl s_client -tls1_3 -sess_out .demo/session.pem"
say "-> $(connect "$port" -tls1_3 -sess_out "$demo/session.pem")  (full handshake; the server issued a ticket)"
name=$(OPENSSL_CONF=/dev/null openssl sess_id -in "$demo/session.pem" -noout -text |
    awk '/TLS session ticket:/ { getline; sub(/^ *0000 - /, ""); print substr($0, 1, 47); exit }' |
    tr -d ' -')
say "the ticket starts with key name $name, the token key that encrypted it"

step "2. Reconnect: Reused (ticket decrypted inside the token)"
say "openssl s_client -tls1_3 -sess_in .demo/session.pem"
say "-> $(connect "$port" -tls1_3 -sess_in "$demo/session.pem")"
say "TLS 1.2 too: openssl s_client -tls1_2 -reconnect"
OPENSSL_CONF=/dev/null timeout 20 openssl s_client -connect "127.0.0.1:$port" -tls1_2 \
    -reconnect </dev/null 2>&1 | grep -E '^(New|Reused), ' | sed 's/^/   -> /'

step "3. Server restart: the old ticket still resumes"
stop_last_server
say "server stopped"
start_server restarted
say "restarted on 127.0.0.1:$port (a new process: no ticket key in its memory)"
say "-> $(connect "$port" -tls1_3 -sess_in "$demo/session.pem")"

step "4. A second server sharing the token resumes the first one's ticket"
first_port=$port
start_server second
say "second server on 127.0.0.1:$port, first still on 127.0.0.1:$first_port"
say "ticket from the first server: $(connect "$first_port" -tls1_3 -sess_out "$demo/first.pem")"
say "presented to the second:      $(connect "$port" -tls1_3 -sess_in "$demo/first.pem")"

step "Done"
say "Server logs: .demo/*.err.  Everything is in .demo/; run again to start over."

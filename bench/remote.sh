#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# bench/remote.sh - p11ticket-bench against a token in another process
# (docs/performance.md, section 10).
#
#   remote.sh BENCH PROVIDER_MODULE [--local] [--set 'KEY = VALUE']...
#             [p11ticket-bench options]
#
# Under mktemp -d (0700, removed at exit) it:
#   1. initialises a throwaway SoftHSM token with `p11ticket init-token`: the
#      SO PIN travels in the environment (--so-pin-source env:VAR), the user
#      PIN in a 0600 file named by pin-source; no PIN is ever on argv;
#   2. starts `p11-kit server -f` for that token on DIR/p11kit.sock, in its
#      own process group (setsid), and stops that group by its PID at exit;
#   3. writes DIR/openssl.cnf whose pkcs11-module is p11-kit's client module,
#      so that the provider, the setup tool and the bench's floor all reach
#      the token through p11-kit-remote;
#   4. provisions one key generation through it (`p11ticket create`), then
#   5. runs BENCH --config DIR/openssl.cnf with the remaining options.
#
#   --local            no p11-kit server: the same token, in process (for the
#                      side-by-side comparison in section 10)
#   --set 'K = V'      one more line of the provider section, e.g.
#                      --set 'aes-mechanism = ecb' (repeatable)
#
# The setup tool is BENCH's sibling `p11ticket` (or $P11T_TOOL).  p11-kit and
# the client module come from $P11T_P11KIT and $P11T_P11KIT_CLIENT when set.
set -euo pipefail

me=${0##*/}
bench=${1:?usage: remote.sh BENCH PROVIDER_MODULE [--local] [--set LINE]... [options]}
provider=${2:?usage: remote.sh BENCH PROVIDER_MODULE [--local] [--set LINE]... [options]}
shift 2
local_only=0
extra=()
while (($#)); do
    case $1 in
    --local) local_only=1; shift ;;
    --set) extra+=("${2:?--set needs 'KEY = VALUE'}"); shift 2 ;;
    *) break ;;
    esac
done

tool=${P11T_TOOL:-$(dirname "$bench")/p11ticket}
p11kit=${P11T_P11KIT:-$(command -v p11-kit || true)}
client=${P11T_P11KIT_CLIENT:-/usr/lib/x86_64-linux-gnu/pkcs11/p11-kit-client.so}
softhsm=${P11T_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
for f in "$bench" "$provider" "$tool" "$softhsm"; do
    [[ -e $f ]] || { echo "$me: $f not found" >&2; exit 1; }
done
if ((!local_only)); then
    [[ -x $p11kit ]] || { echo "$me: p11-kit not found" >&2; exit 1; }
    [[ -e $client ]] || { echo "$me: $client not found" >&2; exit 1; }
fi

dir=$(mktemp -d "${TMPDIR:-/tmp}/p11t-remote-XXXXXX")
chmod 0700 "$dir"
server_pid=
cleanup() {
    # Only the process group we started: p11-kit server and its
    # p11-kit-remote children (one per client connection).
    if [[ -n $server_pid ]]; then
        kill -TERM -- "-$server_pid" 2>/dev/null || true
        for _ in $(seq 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL -- "-$server_pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

mkdir "$dir/tokens"
cat >"$dir/softhsm2.conf" <<EOF
directories.tokendir = $dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
(umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$dir/pin")

# write_cnf FILE MODULE: the provider section for MODULE.
write_cnf() {
    (umask 077 && cat >"$1" <<EOF
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
pkcs11-module = $2
token-uri = pkcs11:token=tickets
pin-source = file:$dir/pin
activate = 1
$(printf '%s\n' "${extra[@]+"${extra[@]}"}")
EOF
    )
}
write_cnf "$dir/local.cnf" "$softhsm"

# 1. The token, initialised in process (SoftHSM's own C_InitToken).
so_pin=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
P11T_BENCH_SO_PIN=$so_pin SOFTHSM2_CONF=$dir/softhsm2.conf \
    "$tool" --config "$dir/local.cnf" init-token --label tickets \
    --so-pin-source env:P11T_BENCH_SO_PIN >"$dir/init.log" 2>&1 ||
    { cat "$dir/init.log" >&2; echo "$me: init-token failed" >&2; exit 1; }
unset so_pin

if ((local_only)); then
    export SOFTHSM2_CONF=$dir/softhsm2.conf
    cnf=$dir/local.cnf
else
    # 2. p11-kit server, in its own process group; it prints the address.
    SOFTHSM2_CONF=$dir/softhsm2.conf setsid "$p11kit" server -f \
        --provider "$softhsm" -n "$dir/p11kit.sock" "pkcs11:token=tickets" \
        >"$dir/p11kit.out" 2>"$dir/p11kit.err" </dev/null &
    server_pid=$!
    for _ in $(seq 100); do
        grep -q '^P11_KIT_SERVER_ADDRESS=' "$dir/p11kit.out" && break
        kill -0 "$server_pid" 2>/dev/null ||
            { cat "$dir/p11kit.err" >&2; echo "$me: p11-kit server died" >&2; exit 1; }
        sleep 0.1
    done
    addr=$(sed -nE 's/^P11_KIT_SERVER_ADDRESS=([^;]*);.*/\1/p' "$dir/p11kit.out")
    [[ -n $addr ]] || { echo "$me: p11-kit server printed no address" >&2; exit 1; }
    export P11_KIT_SERVER_ADDRESS=$addr
    # The clients must not find the token through SoftHSM directly.
    unset SOFTHSM2_CONF
    # 3. The configuration the bench reads: the token through p11-kit.
    write_cnf "$dir/openssl.cnf" "$client"
    cnf=$dir/openssl.cnf
    echo "$me: p11-kit server pid $server_pid at $addr" >&2
fi

# 4. One key generation, provisioned through the same module.
"$tool" --config "$cnf" create >"$dir/create.log" 2>&1 ||
    { cat "$dir/create.log" >&2; echo "$me: p11ticket create failed" >&2; exit 1; }

# 5. The bench.
rc=0
"$bench" --config "$cnf" "$@" || rc=$?
exit "$rc"

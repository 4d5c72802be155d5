#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# NAME
#     bench/servers.sh - stock nginx issuing tickets under a p11ticket token
#     key, against the same nginx with its built-in in-memory ticket keys
#
# SYNOPSIS
#     bench/servers.sh [--rounds N] [--time T] [--warmup S] [--build DIR]
#                      [--nginx PATH] [--json] [--keep] [--help]
#
# DESCRIPTION
#     A benchmark, not a test: it checks its set-up and aborts when that is
#     wrong, but it never judges the numbers.  Debian 12, as root.
#
#     It creates a throwaway SoftHSM token under mktemp -d (PINs random, in
#     0600 files and the environment of one setup-tool command, never on a
#     command line), provisions one key generation with
#     `p11ticket --config CNF create`, a self-signed P-256 certificate, and
#     starts the unmodified nginx twice from one configuration template:
#
#       A (token)      OPENSSL_CONF = an openssl.cnf that loads p11ticket.so
#                      with `default_properties = ?p11ticket.token=yes`;
#                      the provider's auto-enable gives every SSL_CTX the
#                      ticket callback, so tickets are sealed in the token.
#       B (in-memory)  OPENSSL_CONF=/dev/null: libssl's own ticket keys.
#
#     Both: worker_processes 2, workers as ROOT (`user root;`, the simplest
#     way to let them open the root-owned token), ssl_protocols TLSv1.2
#     TLSv1.3, ssl_session_cache off (only tickets can resume),
#     ssl_session_tickets on, access_log off, `return 200 "ok\n"`, listening
#     on 127.0.0.1 only, each in its own prefix directory with its own pid
#     file and error log, `env SOFTHSM2_CONF;`.  They are stopped on every
#     way out (EXIT, INT, TERM traps).
#
#     Before measuring it checks, with `openssl s_client -sess_out` (every
#     client runs with OPENSSL_CONF=/dev/null), that A's TLS 1.2 and TLS 1.3
#     tickets start with the token's current key name, that B's do not, and
#     that both servers resume their own tickets (-sess_in).  Otherwise it
#     aborts.
#
#     Then N rounds.  A round measures four kinds, `openssl s_time -connect
#     127.0.0.1:PORT -www /` with -tls1_2 -new, -tls1_2 -reuse, -tls1_3 -new
#     and -tls1_3 -reuse, and gives each server T seconds of each kind, as
#     two s_time runs of T/2 s in ABBA or BAAB order (A B once each when
#     T = 1).  The order flips from one kind to the next and from one round
#     to the next, so a drift in the machine's load favours neither server.
#     One s_time client runs at a time.
#
# WHAT IS MEASURED
#     Throughput: connections per second of wall-clock time, the connections
#     s_time reports divided by the wall-clock time of the s_time processes
#     measured by this script (nanosecond clock).  Not s_time's own figures:
#       - "connections/user sec" divides by the CLIENT's user CPU time
#         (times(2)), which says nothing about the server;
#       - "N real seconds" is whole seconds from time(2): the loop runs until
#         the second after T has passed, so it always prints T+1 while the
#         loop really ran between T and T+1 s (up to 50% off with T = 2).
#     The wall-clock time also covers process start and, with -reuse, the
#     one full handshake that fetches the session: a few ms, alike for A
#     and B.
#
#     Server CPU: the user + system CPU time of the server's nginx workers
#     (/proc/PID/stat; SoftHSM runs inside them) per connection, over the
#     same runs.  On a shared machine this is steadier than throughput, and
#     A - B is what the token tickets add per connection.
#
#     Resumption is checked, not assumed: s_time prints one character per
#     connection, `r` when SSL_session_reused() is true; the script counts
#     them and prints the share of resumed connections of every -reuse run.
#
#     The ratio of a round is A's rate / B's rate in that round; the summary
#     gives, for TLS 1.2 new, TLS 1.2 reuse, TLS 1.3 new and TLS 1.3 reuse,
#     the median over rounds with the minimum and maximum, then the median
#     CPU per connection of A and B, and the median over rounds of A - B and
#     of A / B.
#
#     One client connects at a time, so at most one worker is busy, and the
#     client spends as much CPU per connection as the server or more (its
#     own key exchange, the server's signature to check in a full
#     handshake).  Throughput ratios are therefore closer to 1 than the
#     server-side ratios of p11ticket-bench or the CPU ratios here.
#
# OPTIONS
#     --rounds N    rounds (default 3)
#     --time T      seconds each server gets per kind and round, a whole
#                   number (default 4; split into two s_time runs of T/2)
#     --warmup S    seconds of s_time -new per server and protocol before
#                   the first round, 0 for none (default 1)
#     --build DIR   build directory with bin/p11ticket and lib/p11ticket.so
#                   (default: build/werror next to this script's bench/)
#     --nginx PATH  the nginx binary (default: nginx from PATH, /usr/sbin)
#     --json        print one JSON object as the last line of stdout
#     --keep        keep the work directory (token, configurations, logs)
#     -h, --help    show this text
#
#     Environment: P11T_PKCS11_MODULE (default
#     /usr/lib/softhsm/libsofthsm2.so), TMPDIR.
#
# EXAMPLE
#     bash bench/servers.sh                       # 3 rounds of 4 s, ~2.5 min
#     bash bench/servers.sh --build build/release # another build directory
#     bash bench/servers.sh --rounds 5 --time 6 --json
#
# EXIT STATUS
#     0 done; 1 set-up or verification failed; 2 usage; 130/143 interrupted.
#     p11ticket lines in either server's logs are printed as warnings at the
#     end (they do not change the status).
set -euo pipefail

me=${0##*/}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/.." && pwd)

usage() {
    # The comment block above, without its leading "# ".
    awk 'NR == 1 { next } /^#/ { sub(/^# ?/, ""); print; next } { exit }' "${BASH_SOURCE[0]}"
}
die() {
    printf '%s: %s\n' "$me" "$*" >&2
    exit 1
}
usage_error() {
    printf '%s: %s (see --help)\n' "$me" "$*" >&2
    exit 2
}

rounds=3
seconds=4
warmup=1
build=$root/build/werror
nginx_bin=
json=0
keep=0
while (($#)); do
    case $1 in
    --rounds | --time | --warmup | --build | --nginx)
        (($# >= 2)) || usage_error "$1 needs a value"
        case $1 in
        --rounds) rounds=$2 ;;
        --time) seconds=$2 ;;
        --warmup) warmup=$2 ;;
        --build) build=$2 ;;
        --nginx) nginx_bin=$2 ;;
        esac
        shift 2
        ;;
    --json) json=1; shift ;;
    --keep) keep=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage_error "unknown argument: $1" ;;
    esac
done
[[ $rounds =~ ^[1-9][0-9]*$ ]] || usage_error "--rounds wants a positive integer"
[[ $seconds =~ ^[1-9][0-9]*$ ]] || usage_error "--time wants a positive whole number of seconds"
[[ $warmup =~ ^[0-9]+$ ]] || usage_error "--warmup wants a whole number of seconds"

# ---- prerequisites ----------------------------------------------------------

((EUID == 0)) || die "run as root (nginx's workers run as root to reach the token)"
if [[ -z $nginx_bin ]]; then
    nginx_bin=$(command -v nginx || true)
    [[ -n $nginx_bin ]] || nginx_bin=/usr/sbin/nginx
fi
[[ -x $nginx_bin ]] || die "nginx not found ($nginx_bin); apt-get install nginx"
command -v openssl >/dev/null || die "openssl not found"
command -v setsid >/dev/null || die "setsid not found (util-linux)"
[[ -d $build ]] || die "no build directory $build (cmake --build it first, or --build DIR)"
build=$(cd "$build" && pwd)
tool=$build/bin/p11ticket
provider=$build/lib/p11ticket.so
pkcs11=${P11T_PKCS11_MODULE:-/usr/lib/softhsm/libsofthsm2.so}
[[ -x $tool ]] || die "$tool not found (build the p11ticket target)"
[[ -e $provider ]] || die "$provider not found (build the p11ticket_provider target)"
[[ -e $pkcs11 ]] || die "$pkcs11 not found (apt-get install softhsm2)"
# The commit the build was made from: its CMake source directory's HEAD
# ("+dirty" with uncommitted changes there), or "unknown".
src=$(sed -n 's/^CMAKE_HOME_DIRECTORY:INTERNAL=//p' "$build/CMakeCache.txt" 2>/dev/null || true)
commit=$(git -C "${src:-/nonexistent}" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $commit != unknown ]] && [[ -n $(git -C "$src" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
    commit+="+dirty"
fi

# ---- clean-up -----------------------------------------------------------------

work=
declare -A pid_of=()

stop_server() { # NAME: graceful stop, then the whole process group
    local name=$1 pid=${pid_of[$1]:-} i sig
    [[ -n $pid ]] || return 0
    # Graceful (QUIT), then fast (TERM), 5 s each, then SIGKILL below.
    for sig in QUIT TERM; do
        kill -0 "$pid" 2>/dev/null || break
        kill "-$sig" "$pid" 2>/dev/null || true
        for ((i = 0; i < 100; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.05
        done
    done
    kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
    wait "$pid" 2>/dev/null || true
    # The master led its own process group (setsid): its workers, if any
    # outlived it.
    kill -KILL -- "-$pid" 2>/dev/null || true
    unset "pid_of[$name]"
}

cleanup() {
    local rc=$? name
    set +e
    trap - EXIT INT TERM
    for name in "${!pid_of[@]}"; do
        stop_server "$name"
    done
    if [[ -n $work && -d $work ]]; then
        if ((keep)); then
            printf '%s: work directory kept: %s\n' "$me" "$work" >&2
        else
            rm -rf "$work"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- token, key, certificate ------------------------------------------------

work=$(mktemp -d "${TMPDIR:-/tmp}/p11t-servers-XXXXXX")
chmod 0700 "$work"
mkdir "$work/tokens"
cat >"$work/softhsm2.conf" <<EOF
directories.tokendir = $work/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
export SOFTHSM2_CONF=$work/softhsm2.conf

(umask 077 && od -An -N16 -tx1 /dev/urandom | tr -d ' \n' >"$work/pin")
cnf=$work/openssl.cnf
(umask 077 && cat >"$cnf" <<EOF
openssl_conf = openssl_init

[openssl_init]
providers = provider_sect
alg_section = alg_sect

[alg_sect]
default_properties = ?p11ticket.token=yes

[provider_sect]
default = default_sect
p11ticket = p11ticket_sect

[default_sect]
activate = 1

[p11ticket_sect]
module = $provider
pkcs11-module = $pkcs11
token-uri = pkcs11:token=tickets
pin-source = file:$work/pin
activate = 1
EOF
)

# The SO PIN reaches the tool through its environment only; the user PIN
# comes from the pin file named by pin-source.
P11T_SERVERS_SO_PIN=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n') \
    "$tool" --config "$cnf" init-token --label tickets --so-pin-source env:P11T_SERVERS_SO_PIN \
    >"$work/init-token.log" 2>&1 ||
    { cat "$work/init-token.log" >&2; die "p11ticket init-token failed"; }
"$tool" --config "$cnf" create >"$work/create.log" 2>&1 ||
    { cat "$work/create.log" >&2; die "p11ticket create failed"; }
"$tool" --config "$cnf" list >"$work/list.log" 2>&1 ||
    { cat "$work/list.log" >&2; die "p11ticket list failed"; }
# The generation every server encrypts with now (column CUR).
key_name=$(awk 'length($1) == 32 && $1 ~ /^[0-9a-f]+$/ && $5 == "yes" { print $1; exit }' "$work/list.log")
[[ -n $key_name ]] || { cat "$work/list.log" >&2; die "no current key on the token after create"; }

OPENSSL_CONF=/dev/null openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -nodes -days 2 -subj /CN=localhost -keyout "$work/key.pem" -out "$work/cert.pem" \
    >"$work/req.log" 2>&1 || { cat "$work/req.log" >&2; die "cannot create a certificate"; }

# ---- the two nginx instances --------------------------------------------------

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() { # a port below the ephemeral range that nothing listens on
    local p i
    for ((i = 0; i < 200; i++)); do
        p=$((20000 + RANDOM % 12000))
        port_open "$p" || { echo "$p"; return 0; }
    done
    die "no free port found"
}

declare -A port_of=() label_of=([A]="A (token)" [B]="B (in-memory)")

nginx_conf() { # NAME PORT
    local d=$work/$1
    mkdir -p "$d/logs" "$d/tmp"
    cat >"$d/nginx.conf" <<EOF
# $1: generated by bench/servers.sh
user root;
worker_processes 2;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/logs/error.log notice;
env SOFTHSM2_CONF;

events {
    worker_connections 512;
}

http {
    access_log off;
    client_body_temp_path $d/tmp/client_body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;

    server {
        listen 127.0.0.1:$2 ssl;
        ssl_certificate $work/cert.pem;
        ssl_certificate_key $work/key.pem;
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        ssl_session_tickets on;
        location / {
            return 200 "ok\n";
        }
    }
}
EOF
}

# start_server NAME OPENSSL_CONF: up to 3 tries on fresh ports (another
# process may take the port between the check and nginx's bind).
start_server() {
    local name=$1 conf=$2 d=$work/$1 port pid i try
    for ((try = 1; try <= 3; try++)); do
        port=$(free_port)
        nginx_conf "$name" "$port"
        rm -f "$d/nginx.pid"
        env OPENSSL_CONF="$conf" SOFTHSM2_CONF="$SOFTHSM2_CONF" \
            setsid "$nginx_bin" -p "$d" -c "$d/nginx.conf" -e "$d/logs/error.log" \
            </dev/null >"$d/logs/stderr.log" 2>&1 &
        pid=$!
        pid_of[$name]=$pid
        # nginx writes its pid file after binding its listening socket, so
        # the port is ours once the file names our process.
        for ((i = 0; i < 200; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            if [[ $(cat "$d/nginx.pid" 2>/dev/null) == "$pid" ]] && port_open "$port"; then
                port_of[$name]=$port
                return 0
            fi
            sleep 0.05
        done
        if kill -0 "$pid" 2>/dev/null; then
            die "nginx $name does not accept connections on 127.0.0.1:$port after 10 s"
        fi
        wait "$pid" 2>/dev/null || true
        unset "pid_of[$name]"
        grep -qs 'Address already in use' "$d/logs/error.log" "$d/logs/stderr.log" || break
    done
    cat "$d/logs/stderr.log" "$d/logs/error.log" >&2 2>/dev/null || true
    die "nginx $name exited at start (logs above)"
}

start_server A "$cnf"
start_server B /dev/null

# ---- verification -------------------------------------------------------------

# sclient NAME OUT [s_client options]: one HTTP request; the client never
# loads the provider.
sclient() {
    local name=$1 out=$2 rc=0
    shift 2
    printf 'GET / HTTP/1.0\r\n\r\n' |
        OPENSSL_CONF=/dev/null timeout 20 openssl s_client -connect "127.0.0.1:${port_of[$name]}" \
            -ign_eof "$@" >"$out" 2>&1 || rc=$?
    if ((rc == 124)); then
        tail -n 20 "$work/$name/logs/error.log" >&2 2>/dev/null || true
        die "${label_of[$name]} did not finish a TLS connection within 20 s: a hung worker? (--keep keeps its logs)"
    fi
}

# ticket_name SESSION_FILE: the first 16 bytes of the session's ticket, hex.
ticket_name() {
    [[ -s $1 ]] || return 0
    OPENSSL_CONF=/dev/null openssl sess_id -in "$1" -noout -text 2>/dev/null |
        awk '/TLS session ticket:/ { getline; sub(/^ *0000 - /, ""); print substr($0, 1, 47); exit }' |
        tr -d ' -'
}

result() { grep -m1 -oE '^(New|Reused), ' "$1" | tr -d ', ' || echo none; }

echo "p11ticket servers bench: nginx $("$nginx_bin" -v 2>&1 | sed 's|.*/||'), $(openssl version | cut -d' ' -f1-2), commit $commit"
echo "build: $build (p11ticket.so, p11ticket), source ${src:-unknown}"
echo "token key (current generation): $key_name"
echo "A (token)     127.0.0.1:${port_of[A]}  OPENSSL_CONF=$cnf"
echo "B (in-memory) 127.0.0.1:${port_of[B]}  OPENSSL_CONF=/dev/null"
echo "workers: 2 per server, running as root; client: openssl s_time, OPENSSL_CONF=/dev/null"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
echo "load average: $load_start"
echo
echo "checks:"
for proto in tls1_2 tls1_3; do
    for name in A B; do
        s=$work/$name-$proto.sess
        sclient "$name" "$work/$name-$proto.new" "-$proto" -sess_out "$s"
        got=$(ticket_name "$s")
        [[ -n $got ]] || { cat "$work/$name-$proto.new" >&2; die "${label_of[$name]} issued no $proto ticket"; }
        if [[ $name == A && $got != "$key_name" ]]; then
            tail -n 20 "$work/A/logs/error.log" "$work/A/logs/stderr.log" >&2 2>/dev/null || true
            die "A's $proto ticket is under key name $got, not the token's key $key_name: p11ticket's auto-enable did not take (A's logs above; --keep keeps them)"
        fi
        if [[ $name == B && $got == "$key_name" ]]; then
            die "B's $proto ticket carries the token's key name: B is not using in-memory tickets"
        fi
        sclient "$name" "$work/$name-$proto.again" "-$proto" -sess_in "$s"
        r=$(result "$work/$name-$proto.again")
        [[ $r == Reused ]] || die "${label_of[$name]} did not resume its own $proto ticket (s_client said: $r)"
        printf '  %-14s %-7s ticket key name %s%s, -sess_in: %s\n' "${label_of[$name]}" "$proto" "$got" \
            "$([[ $name == A ]] && echo " = token key" || echo " (not the token's)")" "$r"
    done
done

# ---- measurement ---------------------------------------------------------------

now_ns() { date +%s%N; }
clk_tck=$(getconf CLK_TCK)

# worker_ticks NAME: CPU time (user + system, clock ticks) the server's
# workers have used so far; SoftHSM runs inside them, so it is included.
worker_ticks() {
    local w t total=0
    for w in $(ps -o pid= --ppid "${pid_of[$1]}"); do
        t=$(awk '{ print $14 + $15 }' "/proc/$w/stat" 2>/dev/null) || continue
        total=$((total + ${t:-0}))
    done
    echo "$total"
}

# stime NAME PROTO MODE SECONDS: one s_time run; sets conns, resumed
# (connections s_time marked 'r'), wall_ns (the s_time process's wall-clock
# time) and ticks (the workers' CPU clock ticks meanwhile).
stime() {
    local name=$1 proto=$2 mode=$3 t=$4 out=$work/stime.out t0 t1 c0 c1
    c0=$(worker_ticks "$name")
    t0=$(now_ns)
    if ! OPENSSL_CONF=/dev/null openssl s_time -connect "127.0.0.1:${port_of[$name]}" \
        "-$proto" "-$mode" -www / -time "$t" >"$out" 2>"$work/stime.err"; then
        cat "$out" "$work/stime.err" >&2
        die "s_time against ${label_of[$name]} ($proto -$mode) failed"
    fi
    t1=$(now_ns)
    c1=$(worker_ticks "$name")
    conns=$(awk '/connections in [0-9]+ real seconds/ { n = $1 } END { print n + 0 }' "$out")
    ((conns > 0)) || { cat "$out" "$work/stime.err" >&2; die "s_time against ${label_of[$name]} made no connection"; }
    # One progress character per connection: 'r' = SSL_session_reused().
    resumed=$(grep -E '^[rt3*]+$' "$out" | tr -cd r | wc -c)
    wall_ns=$((t1 - t0))
    ticks=$((c1 - c0))
}

kinds=(tls1_2:new tls1_2:reuse tls1_3:new tls1_3:reuse)
declare -A kind_label=([tls1_2:new]="TLS 1.2 new" [tls1_2:reuse]="TLS 1.2 reuse"
    [tls1_3:new]="TLS 1.3 new" [tls1_3:reuse]="TLS 1.3 reuse")
declare -A ratios=() rates_a=() rates_b=() res_a=() res_b=() cpu_a=() cpu_b=() cpu_ratios=() cpu_diffs=()

if ((warmup > 0)); then
    for proto in tls1_2 tls1_3; do
        for name in A B; do
            stime "$name" "$proto" new "$warmup"
        done
    done
fi

# Each server gets T seconds per kind and round: two s_time runs of T/2 in
# ABBA (or BAAB) order, or one run each when T is 1.
half1=$((seconds / 2))
half2=$((seconds - half1))
echo
if ((half1 > 0)); then
    echo "$rounds rounds; per kind and round each server runs ${half1}+${half2} s, in ABBA or BAAB order"
else
    echo "$rounds rounds; per kind and round each server runs $seconds s, in AB or BA order"
fi
echo "rates: connections per wall-clock second; ratio = A / B; CPU: nginx workers' user+system per connection"
for ((r = 0; r < rounds; r++)); do
    echo "round $((r + 1))/$rounds"
    for ((k = 0; k < ${#kinds[@]}; k++)); do
        kind=${kinds[k]}
        proto=${kind%%:*}
        mode=${kind#*:}
        if (((r + k) % 2 == 0)); then x=A y=B; else x=B y=A; fi
        if ((half1 > 0)); then
            plan=("$x:$half1" "$y:$half1" "$y:$half2" "$x:$half2")
        else
            plan=("$x:$seconds" "$y:$seconds")
        fi
        declare -A n_of=([A]=0 [B]=0) ns_of=([A]=0 [B]=0) tk_of=([A]=0 [B]=0) res_of=([A]=0 [B]=0)
        seq=
        for step in "${plan[@]}"; do
            name=${step%%:*}
            stime "$name" "$proto" "$mode" "${step#*:}"
            n_of[$name]=$((n_of[$name] + conns))
            ns_of[$name]=$((ns_of[$name] + wall_ns))
            tk_of[$name]=$((tk_of[$name] + ticks))
            res_of[$name]=$((res_of[$name] + resumed))
            seq+=$name
        done
        declare -A rate_of=() cpu_of=()
        for name in A B; do
            rate_of[$name]=$(awk -v n="${n_of[$name]}" -v ns="${ns_of[$name]}" 'BEGIN { printf "%.1f", n / (ns / 1e9) }')
            cpu_of[$name]=$(awk -v n="${n_of[$name]}" -v c="${tk_of[$name]}" -v hz="$clk_tck" \
                'BEGIN { printf "%.1f", c * 1e6 / hz / n }')
        done
        ratio=$(awk -v a="${rate_of[A]}" -v b="${rate_of[B]}" 'BEGIN { printf "%.3f", a / b }')
        ratios[$kind]+="$ratio "
        rates_a[$kind]+="${rate_of[A]} "
        rates_b[$kind]+="${rate_of[B]} "
        cpu_a[$kind]+="${cpu_of[A]} "
        cpu_b[$kind]+="${cpu_of[B]} "
        cpu_ratios[$kind]+=$(awk -v a="${cpu_of[A]}" -v b="${cpu_of[B]}" 'BEGIN { printf "%.3f ", (b > 0) ? a / b : 0 }')
        cpu_diffs[$kind]+=$(awk -v a="${cpu_of[A]}" -v b="${cpu_of[B]}" 'BEGIN { printf "%.1f ", a - b }')
        extra=
        if [[ $mode == reuse ]]; then
            res_a[$kind]+="${res_of[A]}/${n_of[A]} "
            res_b[$kind]+="${res_of[B]}/${n_of[B]} "
            extra=$(awk -v ra="${res_of[A]}" -v na="${n_of[A]}" -v rb="${res_of[B]}" -v nb="${n_of[B]}" \
                'BEGIN { printf "  resumed A %.1f%% B %.1f%%", 100 * ra / na, 100 * rb / nb }')
        fi
        printf '  %-13s %-4s A %7s/s  B %7s/s  ratio %s   CPU/conn A %6s us  B %6s us%s\n' \
            "${kind_label[$kind]}" "$seq" "${rate_of[A]}" "${rate_of[B]}" "$ratio" \
            "${cpu_of[A]}" "${cpu_of[B]}" "$extra"
        unset n_of ns_of tk_of res_of rate_of cpu_of
    done
done

# ---- summary -------------------------------------------------------------------

# stats V...: "median min max"
stats() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%.3f %.3f %.3f", m, v[1], v[NR] }'
}
# resumed_share "R/N R/N ...": resumed connections / connections, all rounds
resumed_share() {
    tr -s ' ' '\n' <<<"$1" | awk -F/ '{ r += $1; n += $2 } END { printf "%.4f", n ? r / n : 0 }'
}

load_end=$(cut -d' ' -f1-3 /proc/loadavg)
key_of() { # tls1_2:new -> tls12_new
    local k=${1/tls1_2/tls12}
    k=${k/tls1_3/tls13}
    echo "${k/:/_}"
}

echo
echo "throughput, token / in-memory: median over $rounds rounds (min-max), median conn/s"
json_out="{\"bench\":\"servers\",\"commit\":\"$commit\",\"rounds\":$rounds,\"time_s\":$seconds"
json_out+=",\"token_key\":\"$key_name\",\"loadavg_start\":\"$load_start\",\"loadavg_end\":\"$load_end\""
warnings=()
for kind in "${kinds[@]}"; do
    key=$(key_of "$kind")
    # shellcheck disable=SC2086 # word splitting of the space-separated lists
    read -r med lo hi <<<"$(stats ${ratios[$kind]})"
    # shellcheck disable=SC2086
    read -r ma _ _ <<<"$(stats ${rates_a[$kind]})"
    # shellcheck disable=SC2086
    read -r mb _ _ <<<"$(stats ${rates_b[$kind]})"
    line=$(printf '  %-13s %.3f  (%.3f-%.3f)   A %7.1f/s  B %7.1f/s' "${kind_label[$kind]}" "$med" "$lo" "$hi" "$ma" "$mb")
    json_out+=",\"${key}_ratio\":$med,\"${key}_ratio_min\":$lo,\"${key}_ratio_max\":$hi"
    json_out+=",\"${key}_token_conn_s\":$ma,\"${key}_mem_conn_s\":$mb"
    if [[ $kind == *:reuse ]]; then
        sa=$(resumed_share "${res_a[$kind]}")
        sb=$(resumed_share "${res_b[$kind]}")
        line+=$(awk -v a="$sa" -v b="$sb" 'BEGIN { printf "   resumed A %.1f%% B %.1f%%", 100 * a, 100 * b }')
        json_out+=",\"${key}_resumed_token\":$sa,\"${key}_resumed_mem\":$sb"
        if awk -v a="$sa" -v b="$sb" 'BEGIN { exit !(a < 0.99 || b < 0.99) }'; then
            warnings+=("${kind_label[$kind]}: not every s_time -reuse connection resumed (A $sa, B $sb): that ratio mixes full handshakes in")
        fi
    fi
    echo "$line"
done

echo
echo "nginx workers' CPU per connection (user + system, SoftHSM included), medians over rounds;"
echo "A-B and A/B are taken within each round"
printf '  %-13s %9s %9s %9s   %s\n' "" "A us" "B us" "A-B us" "A/B (min-max)"
for kind in "${kinds[@]}"; do
    key=$(key_of "$kind")
    # shellcheck disable=SC2086
    read -r ca _ _ <<<"$(stats ${cpu_a[$kind]})"
    # shellcheck disable=SC2086
    read -r cb _ _ <<<"$(stats ${cpu_b[$kind]})"
    # shellcheck disable=SC2086
    read -r cmed clo chi <<<"$(stats ${cpu_ratios[$kind]})"
    # shellcheck disable=SC2086
    read -r cdiff _ _ <<<"$(stats ${cpu_diffs[$kind]})"
    printf '  %-13s %9.1f %9.1f %+9.1f   %.3f (%.3f-%.3f)\n' "${kind_label[$kind]}" "$ca" "$cb" \
        "$cdiff" "$cmed" "$clo" "$chi"
    json_out+=",\"${key}_cpu_us_token\":$ca,\"${key}_cpu_us_mem\":$cb"
    json_out+=",\"${key}_cpu_us_added\":$cdiff,\"${key}_cpu_ratio\":$cmed"
done
json_out+="}"

# Anything p11ticket (or OpenSSL on its behalf) logged in either server.
for name in A B; do
    hits=$(cat "$work/$name/logs/error.log" "$work/$name/logs/stderr.log" 2>/dev/null |
        grep -icE 'p11ticket|pkcs11|softhsm|\[(alert|crit|emerg)\]' || true)
    if ((hits > 0)); then
        warnings+=("${label_of[$name]} logged $hits p11ticket/PKCS#11/critical lines, first: $(cat "$work/$name/logs/error.log" "$work/$name/logs/stderr.log" 2>/dev/null |
            grep -iE -m1 'p11ticket|pkcs11|softhsm|\[(alert|crit|emerg)\]')")
    fi
done
if ((${#warnings[@]})); then
    echo
    for w in "${warnings[@]}"; do
        printf 'warning: %s\n' "$w"
    done
fi
if ((json)); then
    echo "$json_out"
fi

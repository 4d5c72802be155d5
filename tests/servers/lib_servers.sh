# SPDX-License-Identifier: Apache-2.0
# shellcheck shell=bash
# shellcheck disable=SC2153 # P11T_WORK, P11T_CONF, ... come from tests/lib.sh
#
# tests/servers/lib_servers.sh - helpers for the tests that run UNMODIFIED
# TLS servers (Debian's nginx, HAProxy, Apache httpd, openssl s_server and
# Node.js 18) configured through openssl.cnf alone.  Source it after
# tests/lib.sh:
#
#   . "$(dirname "$0")/../lib.sh"
#   . "$(dirname "$0")/lib_servers.sh"
#   srv_begin "scenario name"            # token, key, cert, shared work dir
#   port=$(srv_free_port)
#   srv_nginx_conf a "$port"
#   srv_nginx_start a
#   p11t_reconnect "$port" "$P11T_WORK/a.out" -tls1_2
#   srv_assert_reconnect "$P11T_WORK/a.out" "nginx TLS 1.2"
#   srv_stop a
#   p11t_pass
#
# What the servers get:
#   - OPENSSL_CONF=$SRV_CONF: WORK/openssl.cnf as tests/lib.sh writes it with
#     --routing (default_properties = ?p11ticket.token=yes), which loads the
#     provider; SOFTHSM2_CONF=WORK/softhsm2.conf.  Nothing else: no preload,
#     no changed binary, no server option naming p11ticket.
#   - Workers run as www-data (nginx, Apache, HAProxy).  They can traverse
#     the work directory, read softhsm2.conf and read/write the token
#     directory, but NOT read the PIN file (0600 root): the provider reads it
#     when the configuration is loaded, as root, before privileges drop.
#
# SoftHSM creates every object file 0600 and every directory 0700 whatever
# the umask, so group permissions cannot share a token: the token directory
# is OWNED by www-data (root can use it all the same), and srv_share_token
# gives files that root created since (the setup tool's new keys) back to
# www-data.  Use srv_tool for setup-tool commands that create objects.
#
# Every server runs in its own session and process group (setsid), so that
# srv_stop and the EXIT trap end the master and all its workers, and a
# watchdog process ends them even if this script is killed.

SRV_USER=www-data
SRV_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SRV_NODE18_DIR=${P11T_NODE18_DIR:-/var/cache/p11ticket/node18}
SRV_CONF=
SRV_WATCHDOG=
declare -A SRV_PID=() SRV_KIND=()

# ---- set-up and clean-up ---------------------------------------------------

# srv_begin NAME [p11t_write_conf options]: p11t_begin, a token with one key
# generation, the routed openssl.cnf (SRV_CONF), a certificate, and the work
# directory opened up for www-data.
srv_begin() {
    local name=$1
    shift
    p11t_begin "$name"
    trap srv_exit EXIT
    id -u "$SRV_USER" >/dev/null 2>&1 || fail "user $SRV_USER does not exist (install nginx or apache2)"
    command -v setsid >/dev/null || fail "setsid not found (util-linux)"
    command -v python3 >/dev/null || fail "python3 not found (port picker, list --json)"
    p11t_token --routing "$@"
    SRV_CONF=$P11T_CONF
    p11t_cert
    srv_share_work
    srv_watchdog_start
}

# The work directory: root:www-data 0710 (www-data may traverse it, not list
# it); softhsm2.conf 0640 root:www-data; the token directory owned by
# www-data; the PIN file stays 0600 root.  Fails unless www-data can read
# the SoftHSM configuration and cannot read the PIN file.
srv_share_work() {
    local d=$P11T_WORK
    # Every parent directory must let www-data through as well.
    while [[ "$d" != / ]]; do
        d=$(dirname "$d")
        runuser -u "$SRV_USER" -- test -x "$d" ||
            fail "$SRV_USER cannot traverse $d (set TMPDIR to a directory it can reach)"
    done
    chgrp "$SRV_USER" "$P11T_WORK" "$P11T_WORK/softhsm2.conf"
    chmod 0710 "$P11T_WORK"
    chmod 0640 "$P11T_WORK/softhsm2.conf"
    srv_share_token
    runuser -u "$SRV_USER" -- test -r "$P11T_WORK/softhsm2.conf" ||
        fail "$SRV_USER cannot read $P11T_WORK/softhsm2.conf"
    if runuser -u "$SRV_USER" -- test -r "$P11T_WORK/pin"; then
        fail "$SRV_USER can read the PIN file; it must not"
    fi
    [[ "$(stat -c '%a %U' "$P11T_WORK/pin")" == "600 root" ]] ||
        fail "the PIN file is not 0600 root: $(stat -c '%a %U' "$P11T_WORK/pin")"
}

# srv_share_token: the token directory and everything in it belong to
# www-data (after every setup-tool command that creates objects).
srv_share_token() {
    chown -R "$SRV_USER:$SRV_USER" "$P11T_WORK/tokens"
}

# srv_tool NAME [tool args...]: p11t_tool_ok, then srv_share_token.
srv_tool() {
    p11t_tool_ok "$@"
    srv_share_token
}

# srv_mkdir DIR: a directory root:www-data 0750 (server prefix, run dirs).
srv_mkdir() {
    mkdir -p "$1"
    chgrp "$SRV_USER" "$1"
    chmod 0750 "$1"
}

# A process that ends every server's process group if this script dies
# without running its EXIT trap (ctest's timeout kills it outright).  It
# reads the process group ids from WORK/srv-groups, one a line.
srv_watchdog_start() {
    : >"$P11T_WORK/srv-groups"
    local parent=$$ groups=$P11T_WORK/srv-groups
    (
        trap '' INT
        while kill -0 "$parent" 2>/dev/null; do
            sleep 1
        done
        if [[ -f "$groups" ]]; then
            while read -r g; do
                if [[ -n "$g" ]]; then
                    kill -KILL -- "-$g" 2>/dev/null || true
                fi
            done <"$groups"
        fi
    ) </dev/null >/dev/null 2>&1 &
    SRV_WATCHDOG=$!
}

srv_exit() {
    local rc=$? name
    set +e
    for name in "${!SRV_PID[@]}"; do
        if [[ $rc -ne 0 ]]; then
            # What each process was doing: a hung worker shows its wait.
            echo "--- processes of ${SRV_KIND[$name]} $name:" >&2
            ps -o pid,user,stat,wchan:24,args -g "${SRV_PID[$name]}" >&2
        fi
        srv_kill_group "$name"
    done
    if [[ -n "$SRV_WATCHDOG" ]]; then
        kill "$SRV_WATCHDOG" 2>/dev/null
        wait "$SRV_WATCHDOG" 2>/dev/null
    fi
    # p11t_cleanup takes the test's status from $?.
    (exit "$rc")
    p11t_cleanup
}

# ---- ports and processes -----------------------------------------------------

# srv_free_port: a TCP port on 127.0.0.1 that nothing listens on, below the
# kernel's ephemeral range (so no client connection holds it either).
srv_free_port() {
    python3 - <<'PY' || fail "no free port found"
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

# srv_set_port NAME PORT: record the port where tests/lib.sh's p11t_port finds
# it (P11T_PORT is an associative array of tests/lib.sh).
srv_set_port() {
    # P11T_PORT is tests/lib.sh's associative array: not arithmetic, and used.
    # shellcheck disable=SC2004,SC2034
    P11T_PORT[$1]=$2
}

# srv_port_open PORT: true if something accepts TCP connections there.
srv_port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# srv_spawn NAME KIND LOG [VAR=VALUE...] -- COMMAND [args...]: start COMMAND
# in its own session with OPENSSL_CONF=SRV_CONF, SOFTHSM2_CONF and the
# given variables; stdout and stderr go to LOG.  Records SRV_PID[NAME].
# OPENSSL_CONF=/dev/null among the variables runs it without the provider;
# OPENSSL_CONF= (empty) runs it with OPENSSL_CONF unset (the system's
# openssl.cnf).
srv_spawn() {
    local name=$1 kind=$2 log=$3 conf=(OPENSSL_CONF="$SRV_CONF") envs=()
    shift 3
    while [[ "$1" != -- ]]; do
        if [[ "$1" == OPENSSL_CONF= ]]; then
            conf=(-u OPENSSL_CONF)
        else
            envs+=("$1")
        fi
        shift
    done
    shift
    [[ -z "${SRV_PID[$name]:-}" ]] || fail "server $name is already running"
    env "${conf[@]}" SOFTHSM2_CONF="$SOFTHSM2_CONF" "${envs[@]}" \
        setsid "$@" </dev/null >>"$log" 2>&1 &
    local pid=$!
    SRV_PID[$name]=$pid
    SRV_KIND[$name]=$kind
    echo "$pid" >>"$P11T_WORK/srv-groups"
}

# srv_pid NAME: the server's main process (nginx/HAProxy/Apache master).
srv_pid() { echo "${SRV_PID[$1]:?no server $1}"; }

# srv_wait_port NAME PORT LOG: wait until the server accepts connections;
# fail if it exits first or takes longer than 20 s.
srv_wait_port() {
    local name=$1 port=$2 log=$3 pid i
    pid=$(srv_pid "$name")
    for ((i = 0; i < 400 * P11T_WAIT_SCALE; i++)); do
        srv_port_open "$port" && {
            note "${SRV_KIND[$name]} $name: pid $pid, listening on 127.0.0.1:$port"
            return 0
        }
        if ! kill -0 "$pid" 2>/dev/null; then
            local rc=0
            wait "$pid" || rc=$?
            srv_forget "$name"
            echo "--- $log:" >&2
            tail -n 40 "$log" >&2
            fail "${SRV_KIND[$name]} $name exited with status $rc before listening on $port"
        fi
        sleep 0.05
    done
    echo "--- $log:" >&2
    tail -n 40 "$log" >&2
    fail "${SRV_KIND[$name]} $name does not accept connections on $port after 20 s"
}

# srv_children NAME: pids of the main process's children (the workers).
srv_children() {
    pgrep -P "$(srv_pid "$1")" | sort -n || true
}

# srv_alive NAME: the main process is still running.
srv_alive() {
    local pid
    pid=$(srv_pid "$1")
    kill -0 "$pid" 2>/dev/null || fail "${SRV_KIND[$1]} $1 (pid $pid) is no longer running"
    note "ok: ${SRV_KIND[$1]} $1 still running"
}

# srv_assert_workers NAME COUNT USER: COUNT children, all running as USER.
srv_assert_workers() {
    local name=$1 want=$2 user=$3 pids users i
    # Workers may still be starting (or old ones leaving after a reload).
    for ((i = 0; i < 100; i++)); do
        pids=$(srv_children "$name")
        [[ $(wc -w <<<"$pids") -eq $want ]] && break
        sleep 0.05
    done
    assert_eq "$want" "$(wc -w <<<"$pids")" "${SRV_KIND[$name]} $name: number of workers"
    users=$(ps -o user= -p "$(tr '\n' ',' <<<"$pids" | sed 's/,$//')" | sort -u | tr -d ' ')
    assert_eq "$user" "$users" "${SRV_KIND[$name]} $name: user of the workers"
}

# srv_kill_group NAME: TERM the process group, KILL what is left after 5 s.
srv_kill_group() {
    local name=$1 pid i
    pid=${SRV_PID[$name]:-}
    [[ -n "$pid" ]] || return 0
    kill -TERM -- "-$pid" 2>/dev/null || true
    for ((i = 0; i < 100; i++)); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.05
    done
    kill -KILL -- "-$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    srv_forget "$name"
}

# srv_forget NAME: the server's processes are gone; the watchdog must not
# signal its (reusable) process group id any more.
srv_forget() {
    local pid=${SRV_PID[$1]:-}
    unset "SRV_PID[$1]"
    [[ -n "$pid" && -f "$P11T_WORK/srv-groups" ]] || return 0
    grep -vx -- "$pid" "$P11T_WORK/srv-groups" >"$P11T_WORK/srv-groups.new" || true
    mv "$P11T_WORK/srv-groups.new" "$P11T_WORK/srv-groups"
}

# srv_stop NAME: SIGTERM to the main process; the whole process group (the
# workers too) must be gone within 10 s.  Fails if the main process had
# already exited.
srv_stop() {
    local name=$1 pid i
    pid=$(srv_pid "$name")
    kill -0 "$pid" 2>/dev/null || {
        local rc=0
        wait "$pid" || rc=$?
        srv_forget "$name"
        fail "${SRV_KIND[$name]} $name had already exited (status $rc) before SIGTERM"
    }
    kill -TERM "$pid"
    for ((i = 0; i < 200 * P11T_WAIT_SCALE; i++)); do
        kill -0 -- "-$pid" 2>/dev/null || break
        sleep 0.05
    done
    if kill -0 -- "-$pid" 2>/dev/null; then
        srv_kill_group "$name"
        fail "${SRV_KIND[$name]} $name: processes left 10 s after SIGTERM"
    fi
    wait "$pid" 2>/dev/null || true
    srv_forget "$name"
    note "ok: ${SRV_KIND[$name]} $name stopped (no process left)"
}

# srv_need BINARY what: fail (never skip) when a server binary is missing.
srv_need() {
    command -v "$1" >/dev/null 2>&1 ||
        fail "$1 not found: $2 (scripts/install-deps.sh installs it)"
}

# ---- tickets and the token -----------------------------------------------------

# srv_current_key: the key generation the token marks current (lowercase hex).
srv_current_key() {
    local k
    p11t_gens_load
    k=$(p11t_gens_current)
    [[ "$k" =~ ^[0-9a-f]{32}$ ]] || fail "the token has no current key ($k)"
    echo "$k"
}

# srv_assert_token_key SESSION.pem what: the key name of the session's ticket
# (its first 16 bytes: p11t_sess_key of tests/lib.sh, which reads `openssl
# sess_id -text` like scripts/demo.sh) is the token's current key (`p11ticket
# list --json`: p11t_gens_load).
srv_assert_token_key() {
    local key cur
    key=$(p11t_sess_key "$1")
    cur=$(srv_current_key)
    assert_eq "$cur" "$key" "$2: ticket key name (the token's current key)"
}

# srv_assert_no_ticket TAG what: the connection of p11t_get_ticket TAG got no
# ticket: none in the session s_client printed (WORK/TAG.out) and none in
# WORK/TAG.pem (which s_client does not even write when the server sent no
# ticket and no session ID).
srv_assert_no_ticket() {
    local tag=$1 what=$2 k
    assert_eq none "$(p11t_out_ticket_key "$P11T_WORK/$tag.out")" "$what: ticket in the handshake"
    k=$(p11t_sess_key "$P11T_WORK/$tag.pem")
    [[ "$k" == none || "$k" == NO-SESSION-FILE ]] ||
        fail "$what: expected no ticket, got one under $k"
    note "ok: $what: no ticket in the saved session ($k)"
}

# srv_assert_reconnect OUT what: an s_client -reconnect output shows one full
# handshake and five resumptions.
srv_assert_reconnect() {
    local out=$1 what=$2
    assert_eq "New Reused Reused Reused Reused Reused" "$(p11t_results "$out")" \
        "$what: s_client -reconnect handshakes"
    assert_eq 1 "$(count_lines "$out" '^New, ')" "$what: New lines"
    assert_eq 5 "$(count_lines "$out" '^Reused, ')" "$what: Reused lines"
}

# srv_tls13_resume PORT TAG what: a TLS 1.3 full handshake that saves its
# ticket in WORK/TAG.pem, then a resumption with it (WORK/TAG-r.pem).
srv_tls13_resume() {
    local port=$1 tag=$2 what=$3
    p11t_get_ticket "$port" "$tag" tls1_3
    assert_eq Reused "$(p11t_resume "$port" "$tag" "$tag-r" tls1_3)" "$what: TLS 1.3 resumption"
}

# srv_basic_checks PORT NAME what: the checks every server must pass with
# p11ticket: TLS 1.2 -reconnect 1 New + 5 Reused; TLS 1.2 and TLS 1.3
# tickets under the token's current key; TLS 1.3 resumption.
srv_basic_checks() {
    local port=$1 name=$2 what=$3
    info "$what: TLS 1.2 s_client -reconnect"
    p11t_reconnect "$port" "$P11T_WORK/$name-reconnect.out" -tls1_2
    srv_assert_reconnect "$P11T_WORK/$name-reconnect.out" "$what"
    info "$what: ticket key names and TLS 1.3 resumption"
    p11t_get_ticket "$port" "$name-t12" tls1_2
    srv_assert_token_key "$P11T_WORK/$name-t12.pem" "$what TLS 1.2"
    assert_eq Reused "$(p11t_resume "$port" "$name-t12" "$name-t12-r" tls1_2)" "$what: TLS 1.2 resumption with -sess_in"
    srv_tls13_resume "$port" "$name-t13" "$what"
    srv_assert_token_key "$P11T_WORK/$name-t13.pem" "$what TLS 1.3"
    srv_assert_token_key "$P11T_WORK/$name-t13-r.pem" "$what TLS 1.3 (renewed)"
}

# ---- nginx -------------------------------------------------------------------------

# srv_nginx_conf NAME PORT [directive...]: WORK/NAME/nginx.conf, master + 2
# workers as www-data, daemon off, error log WORK/NAME.err (notice).  Each
# extra argument is one more directive of the server block ("ssl_... x;").
# The certificate defaults to WORK/cert.pem; SRV_NGINX_CERT / _KEY change it.
srv_nginx_conf() {
    local name=$1 port=$2 dir=$P11T_WORK/$1 d extra=""
    shift 2
    for d in "$@"; do
        extra+="        $d"$'\n'
    done
    srv_mkdir "$dir"
    cat >"$dir/nginx.conf" <<EOF
# nginx for tests/servers ($name)
daemon off;
master_process on;
worker_processes 2;
user $SRV_USER;
pid $dir/nginx.pid;
error_log $P11T_WORK/$name.err notice;
# nginx clears its workers' environment; SoftHSM finds its token through it.
env SOFTHSM2_CONF;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $dir/client_body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    server {
        listen 127.0.0.1:$port ssl;
        ssl_certificate "${SRV_NGINX_CERT:-$P11T_WORK/cert.pem}";
        ssl_certificate_key "${SRV_NGINX_KEY:-$P11T_WORK/key.pem}";
        # nginx 1.22's default lacks TLSv1.3.
        ssl_protocols TLSv1.2 TLSv1.3;
$extra        location / { return 200 "ok\\n"; }
    }
}
EOF
    srv_set_port "$name" "$port"
}

# srv_nginx_start NAME [VAR=VALUE...]: nginx -p WORK/NAME -c WORK/NAME/nginx.conf
srv_nginx_start() {
    local name=$1 dir=$P11T_WORK/$1
    shift
    srv_need nginx "Debian's nginx"
    # Its standard error (where it reports errors before it opens the error
    # log) goes to the error log too: both append.
    srv_spawn "$name" nginx "$P11T_WORK/$name.err" "$@" -- \
        nginx -p "$dir" -c "$dir/nginx.conf"
    srv_wait_port "$name" "$(p11t_port "$name")" "$P11T_WORK/$name.err"
    srv_assert_workers "$name" 2 "$SRV_USER"
}

# srv_nginx_reload NAME: `nginx -s reload`; waits until two new workers
# replaced the old ones.
srv_nginx_reload() {
    local name=$1 dir=$P11T_WORK/$1 old new i
    old=$(srv_children "$name")
    OPENSSL_CONF=$SRV_CONF nginx -p "$dir" -c "$dir/nginx.conf" -s reload \
        >"$P11T_WORK/$name-reload.log" 2>&1 ||
        fail "nginx -s reload failed: $(cat "$P11T_WORK/$name-reload.log")"
    for ((i = 0; i < 200; i++)); do
        new=$(srv_children "$name")
        if [[ $(wc -w <<<"$new") -eq 2 ]] && ! grep -qxF -f <(echo "$old") <<<"$new"; then
            note "ok: nginx $name reloaded: workers $(echo "$old" | tr '\n' ' ')-> $(echo "$new" | tr '\n' ' ')"
            return 0
        fi
        sleep 0.05
    done
    fail "nginx $name: the workers were not replaced within 10 s of the reload (now: $(echo "$new" | tr '\n' ' '))"
}

# srv_nginx_no_crash NAME: no worker died on a signal.
srv_nginx_no_crash() {
    assert_no_grep "$P11T_WORK/$1.err" 'exited on signal|\[(alert|emerg)\]' "nginx $1: no worker crashed"
}

# ---- HAProxy ---------------------------------------------------------------------------

# srv_haproxy_conf NAME PORT [bind option...]: WORK/NAME/haproxy.cfg,
# master-worker, 2 threads, workers as www-data, no session-ID cache
# (resumption only by ticket), a frontend that answers every request itself.
# Extra arguments are appended to the bind line.
srv_haproxy_conf() {
    local name=$1 port=$2 dir=$P11T_WORK/$1 bind_extra=""
    shift 2
    (($#)) && bind_extra=" $*"
    srv_mkdir "$dir"
    cat "$P11T_WORK/cert.pem" "$P11T_WORK/key.pem" >"$dir/haproxy.pem"
    cat >"$dir/haproxy.cfg" <<EOF
# HAProxy for tests/servers ($name)
global
    master-worker
    nbthread 2
    user $SRV_USER
    group $SRV_USER
    pidfile $dir/haproxy.pid
    log stderr format raw local0 notice
    # No session-ID cache: a resumption can only come from a ticket.
    tune.ssl.cachesize 0

defaults
    mode http
    log global
    timeout connect 5s
    timeout client 10s
    timeout server 10s

frontend fe
    bind 127.0.0.1:$port ssl crt $dir/haproxy.pem ssl-min-ver TLSv1.2$bind_extra
    http-request return status 200 content-type text/plain string "ok"
EOF
    srv_set_port "$name" "$port"
}

# srv_haproxy_start NAME [VAR=VALUE...]: haproxy -W -db -f WORK/NAME/haproxy.cfg
srv_haproxy_start() {
    local name=$1 dir=$P11T_WORK/$1
    shift
    srv_need haproxy "Debian's haproxy"
    haproxy -c -f "$dir/haproxy.cfg" >"$P11T_WORK/$name-check.log" 2>&1 ||
        fail "haproxy -c: $(cat "$P11T_WORK/$name-check.log")"
    srv_spawn "$name" haproxy "$P11T_WORK/$name.err" "$@" -- \
        haproxy -W -db -f "$dir/haproxy.cfg"
    srv_wait_port "$name" "$(p11t_port "$name")" "$P11T_WORK/$name.err"
    srv_assert_workers "$name" 1 "$SRV_USER"
}

# srv_haproxy_no_crash NAME: before srv_stop, no worker exited (the master
# logs "exited with code" for every worker it loses) and no p11ticket error.
srv_haproxy_no_crash() {
    assert_no_grep "$P11T_WORK/$1.err" 'exited with code|\[ALERT\]|p11ticket' "haproxy $1: no worker died, no alert"
}

# ---- Apache httpd ------------------------------------------------------------------------

SRV_APACHE_MODULES=/usr/lib/apache2/modules

# srv_apache_conf NAME PORT [directive...]: WORK/NAME/apache2.conf, mpm_event,
# children as www-data, its own pid, mutex, runtime and log files.  Extra
# arguments go into the virtual host.
srv_apache_conf() {
    local name=$1 port=$2 dir=$P11T_WORK/$1 d extra=""
    shift 2
    for d in "$@"; do
        extra+="    $d"$'\n'
    done
    srv_mkdir "$dir"
    srv_mkdir "$dir/run"
    srv_mkdir "$dir/htdocs"
    echo ok >"$dir/htdocs/index.html"
    chmod 0644 "$dir/htdocs/index.html"
    cat >"$dir/apache2.conf" <<EOF
# Apache httpd for tests/servers ($name)
ServerRoot $dir
DefaultRuntimeDir $dir/run
PidFile $dir/run/apache2.pid
Mutex file:$dir/run default
ErrorLog $P11T_WORK/$name.err
LogLevel notice ssl:info
LoadModule mpm_event_module $SRV_APACHE_MODULES/mod_mpm_event.so
LoadModule authz_core_module $SRV_APACHE_MODULES/mod_authz_core.so
LoadModule socache_shmcb_module $SRV_APACHE_MODULES/mod_socache_shmcb.so
LoadModule ssl_module $SRV_APACHE_MODULES/mod_ssl.so
User $SRV_USER
Group $SRV_USER
StartServers 2
MinSpareThreads 2
MaxSpareThreads 50
ThreadsPerChild 25
ServerLimit 4
MaxRequestWorkers 100
ServerName localhost
Listen 127.0.0.1:$port https
DocumentRoot $dir/htdocs
<Directory />
    AllowOverride None
    Require all granted
</Directory>
<VirtualHost 127.0.0.1:$port>
    SSLEngine on
    SSLCertificateFile $P11T_WORK/cert.pem
    SSLCertificateKeyFile $P11T_WORK/key.pem
    SSLProtocol -all +TLSv1.2 +TLSv1.3
$extra</VirtualHost>
EOF
    srv_set_port "$name" "$port"
}

# srv_apache_start NAME [VAR=VALUE...]: apache2 -d WORK/NAME -f apache2.conf
# -DFOREGROUND.  Apache passes its own environment on to its children, so
# SOFTHSM2_CONF and OPENSSL_CONF come from the process environment.
srv_apache_start() {
    local name=$1 dir=$P11T_WORK/$1
    shift
    srv_need apache2 "Debian's apache2"
    srv_spawn "$name" apache2 "$P11T_WORK/$name.err" "$@" -- \
        apache2 -d "$dir" -f "$dir/apache2.conf" -DFOREGROUND
    srv_wait_port "$name" "$(p11t_port "$name")" "$P11T_WORK/$name.err"
    srv_assert_workers "$name" 2 "$SRV_USER"
}

srv_apache_no_crash() {
    assert_no_grep "$P11T_WORK/$1.err" 'exit signal|\[core:(emerg|alert)\]' "apache2 $1: no child crashed"
}

# ---- openssl s_server ----------------------------------------------------------------------

# srv_s_server_start NAME PORT [VAR=VALUE...] [s_server args...]: `openssl
# s_server -www -no_cache` (no session-ID cache) with OPENSSL_CONF only.
srv_s_server_start() {
    local name=$1 port=$2 envs=()
    shift 2
    while [[ "${1:-}" =~ ^[A-Z_][A-Z0-9_]*= ]]; do
        envs+=("$1")
        shift
    done
    srv_spawn "$name" s_server "$P11T_WORK/$name.err" "${envs[@]}" -- \
        openssl s_server -accept "127.0.0.1:$port" -cert "$P11T_WORK/cert.pem" \
        -key "$P11T_WORK/key.pem" -www -no_cache "$@"
    srv_set_port "$name" "$port"
    srv_wait_port "$name" "$port" "$P11T_WORK/$name.err"
}

# ---- Node.js -------------------------------------------------------------------------------

# Debian's node 18 (links the system libssl3), unpacked by
# scripts/install-deps.sh; SRV_NODE is the binary, SRV_NODE_LIB its libnode.
srv_node_setup() {
    SRV_NODE=$SRV_NODE18_DIR/usr/bin/node
    local lib
    [[ -x "$SRV_NODE" ]] ||
        fail "Debian's node 18 is not in $SRV_NODE18_DIR (run scripts/install-deps.sh as root)"
    lib=$(find "$SRV_NODE18_DIR/usr/lib" -name 'libnode.so.108' -print -quit 2>/dev/null)
    [[ -n "$lib" ]] || fail "libnode.so.108 is not below $SRV_NODE18_DIR/usr/lib"
    SRV_NODE_LIB=$(dirname "$lib")
    local v
    v=$(OPENSSL_CONF=/dev/null LD_LIBRARY_PATH=$SRV_NODE_LIB "$SRV_NODE" -p process.versions.openssl 2>&1) ||
        fail "$SRV_NODE does not run: $v"
    [[ "$v" == 3.0.* ]] || fail "node's OpenSSL is '$v', not the system's 3.0.x"
    note "node $("$SRV_NODE" --version 2>/dev/null || LD_LIBRARY_PATH=$SRV_NODE_LIB "$SRV_NODE" --version) with OpenSSL $v"
}

# srv_node_start NAME PORT [VAR=VALUE...] [-- extra argv...]: `node
# --openssl-shared-config server.js CERT KEY` listening on PORT (given in
# P11T_NODE_PORT: Node's default session id context hashes argv, so servers
# started with the same arguments resume each other's tickets).
srv_node_start() {
    local name=$1 port=$2 envs=()
    shift 2
    while [[ "${1:-}" =~ ^[A-Z_][A-Z0-9_]*= ]]; do
        envs+=("$1")
        shift
    done
    [[ "${1:-}" == -- ]] && shift
    srv_spawn "$name" node "$P11T_WORK/$name.err" LD_LIBRARY_PATH="$SRV_NODE_LIB" \
        P11T_NODE_PORT="$port" "${envs[@]}" -- \
        "$SRV_NODE" --openssl-shared-config "$SRV_DIR/server.js" \
        "$P11T_WORK/cert.pem" "$P11T_WORK/key.pem" "$@"
    srv_set_port "$name" "$port"
    srv_wait_port "$name" "$port" "$P11T_WORK/$name.err"
}

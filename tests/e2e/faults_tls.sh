#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# faults_tls SCENARIO: p11ticket-server under a steady TLS load (one client
# loop of openssl s_client, TLS 1.2 and 1.3 in turn, each connection
# presenting the newest ticket it has) while the token fails, then comes
# back.  Scenarios (the fault lasts FAULT_S = 20 s unless noted):
#   one-error   one CKR_DEVICE_ERROR from C_Sign (instantaneous)
#   all-fail    every token call fails with CKR_DEVICE_ERROR
#   slow        every token call takes 500 ms more
#   removed     the token is removed (faultmod's `removed`) and comes back
#   dir-moved   the SoftHSM token directory is moved away and back (real)
#   dir-locked  the token directory is made unreadable (chmod 000) and
#               restored, with the server running as an unprivileged user
# The first four reach SoftHSM through tests/faultmod.
#
# Asserted, for every scenario:
#   - no handshake fails (a full handshake instead of a resumption is fine);
#   - resumption worked before the fault;
#   - after the fault ends, a ticket issued after that moment is resumed
#     within refresh-interval (REFRESH_S);
#   - the server is still running and the token's keys are intact;
#   - it logged a few lines, not one per connection, and one line when
#     tickets worked again;
#   - for one-error: at most one re-login (C_Login counted by faultmod).
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
scenario=${1:?usage: faults_tls.sh SCENARIO}
p11t_begin "faults_tls $scenario"

REFRESH_S=6
FAULT_S=20
FAULTMOD=$P11T_BUILD/lib/libp11t_faultmod.so
FAULTCTL=$P11T_BUILD/bin/p11t_faultctl
[[ -f $FAULTMOD && -x $FAULTCTL ]] || fail "missing $FAULTMOD or $FAULTCTL (build first)"

p11t_token
names_before=$(p11t_key_names "$P11T_CONF")
[[ -n $names_before ]] || fail "no key generation on the token"

# The server's own configuration: the same token, refresh-interval shortened,
# through faultmod for the injected scenarios.
server_conf=$P11T_WORK/server.cnf
control=$P11T_WORK/faults.control
counts=$P11T_WORK/faults.counts
case $scenario in
one-error | all-fail | slow | removed)
    p11t_write_conf "$server_conf" --pkcs11-module "$FAULTMOD" \
        --set "refresh-interval = $REFRESH_S"
    export P11T_FAULT_MODULE=$P11T_PKCS11_MODULE P11T_FAULT_CONTROL=$control \
        P11T_FAULT_COUNTS=$counts
    : >"$control"
    ;;
dir-moved | dir-locked)
    p11t_write_conf "$server_conf" --set "refresh-interval = $REFRESH_S"
    ;;
*) fail "unknown scenario $scenario" ;;
esac

set_faults() { # RULES: replace the control file atomically
    printf '%s' "$1" >"$control.new"
    mv -f "$control.new" "$control"
}

now_ms() { date +%s%3N; }

# ---- the server (as an unprivileged user for dir-locked) --------------------
if [[ $scenario == dir-locked ]]; then
    runas=nobody
    id "$runas" >/dev/null 2>&1 || fail "no user '$runas' to run the server as"
    # The user reaches the work dir, owns the token and its PIN file (the
    # provider refuses a PIN file another user owns, root excepted).
    p11t_cert
    chmod 0711 "$P11T_WORK"
    chown -R "$runas" "$P11T_WORK/tokens" "$P11T_WORK/pin" "$P11T_WORK/key.pem"
    chmod 0644 "$P11T_WORK/softhsm2.conf" "$server_conf" "$P11T_WORK/cert.pem"
    # setpriv executes the server itself (runuser would stay its parent).
    saved_wrap=("${P11T_WRAP[@]}")
    P11T_WRAP=(setpriv --reuid="$runas" --regid="$(id -g "$runas")"
        --clear-groups -- "${P11T_WRAP[@]}")
fi
[[ $scenario == dir-locked ]] || saved_wrap=("${P11T_WRAP[@]}")
p11t_server_start srv --conf "$server_conf" -www
P11T_WRAP=("${saved_wrap[@]}") # the setup tool runs as root
port=$(p11t_port srv)
pid=$(p11t_pid srv)
if [[ $scenario == dir-locked ]]; then
    [[ $(stat -c %U "/proc/$pid") == "$runas" ]] ||
        fail "the server does not run as $runas"
fi

# ---- the load: one client loop, logging every connection ---------------------
# Line: T_MS VERSION RESULT PRESENTED_ISSUED_MS NEW_TICKET_KEY
load_log=$P11T_WORK/load.log
stop_file=$P11T_WORK/load.stop
: >"$load_log"
client_loop() {
    local i=0 v res key in t presented
    while [[ ! -e $stop_file ]]; do
        i=$((i + 1))
        v=tls1_$((2 + i % 2))
        in=()
        presented=-
        if [[ -s $P11T_WORK/sess-$v.pem ]]; then
            in=(-sess_in "$P11T_WORK/sess-$v.pem")
            presented=$(cat "$P11T_WORK/sess-$v.t")
        fi
        t=$(now_ms)
        printf 'GET / HTTP/1.0\r\n\r\n' |
            OPENSSL_CONF=/dev/null timeout 60 openssl s_client -connect "127.0.0.1:$port" \
                -ign_eof "-$v" "${in[@]}" -sess_out "$P11T_WORK/new-$v.pem" \
                >"$P11T_WORK/client.out" 2>&1 || true
        res=$(grep -m1 -oE '^(New|Reused), ' "$P11T_WORK/client.out" | tr -d ', ') || true
        [[ -n $res ]] || res=FAIL
        key=$(p11t_ticket_hex "$P11T_WORK/new-$v.pem")
        key=${key:0:32}
        # Keep the newest session that has a ticket; note when it came.
        if [[ ${#key} == 32 ]]; then
            mv -f "$P11T_WORK/new-$v.pem" "$P11T_WORK/sess-$v.pem"
            echo "$t" >"$P11T_WORK/sess-$v.t"
        else
            key=-
        fi
        echo "$t $v $res $presented $key" >>"$load_log"
        if [[ $res == FAIL ]]; then
            { echo "--- failed connection at $t:"; tail -n 20 "$P11T_WORK/client.out"; } \
                >>"$P11T_WORK/failures.txt"
        fi
    done
}
client_loop &
loop_pid=$!
P11T_PID[load]=$loop_pid

sleep 4 # a baseline with tickets
fault_start=$(now_ms)
case $scenario in
one-error) set_faults $'fail C_Sign nth=3 rv=CKR_DEVICE_ERROR\n' ;;
all-fail) set_faults $'fail * every rv=CKR_DEVICE_ERROR\n' ;;
slow) set_faults $'delay * ms=500\n' ;;
removed) set_faults $'removed\n' ;;
dir-moved) mv "$P11T_WORK/tokens" "$P11T_WORK/tokens.away" ;;
dir-locked) chmod 000 "$P11T_WORK/tokens" ;;
esac
info "fault '$scenario' on at $fault_start"
[[ $scenario == one-error ]] || sleep "$FAULT_S"
case $scenario in
one-error) sleep 2 ;;
all-fail | slow | removed) set_faults "" ;;
dir-moved) mv "$P11T_WORK/tokens.away" "$P11T_WORK/tokens" ;;
dir-locked) chmod 0700 "$P11T_WORK/tokens" ;;
esac
fault_end=$(now_ms)
info "fault off at $fault_end"
sleep $((REFRESH_S + 2))
touch "$stop_file"
wait "$loop_pid" || true
unset 'P11T_PID[load]'

# ---- the verdict ----------------------------------------------------------------
total=$(wc -l <"$load_log")
failed=$(awk '$3 == "FAIL"' "$load_log" | wc -l)
base_reused=$(awk -v s="$fault_start" '$1 < s && $3 == "Reused"' "$load_log" | wc -l)
during=$(awk -v s="$fault_start" -v e="$fault_end" '$1 >= s && $1 < e' "$load_log" | wc -l)
first_back=$(awk -v e="$fault_end" '$3 == "Reused" && $4 != "-" && $4 >= e { print $1; exit }' "$load_log")
note "$total connections ($during during the fault), $failed failed, $base_reused resumed before the fault"
[[ -s $P11T_WORK/failures.txt ]] && head -n 40 "$P11T_WORK/failures.txt" >&2
assert_eq 0 "$failed" "failed handshakes"
assert_ge 1 "$base_reused" "resumptions before the fault"
assert_ge 1 "$during" "connections during the fault"
[[ -n $first_back ]] || {
    tail -n 30 "$load_log" >&2
    fail "no ticket issued after the fault was resumed within $((REFRESH_S + 2)) s"
}
back_ms=$((first_back - fault_end))
note "tickets resumed $back_ms ms after the fault ended"
((back_ms <= REFRESH_S * 1000)) ||
    fail "tickets resumed only $back_ms ms after the fault ended (refresh-interval ${REFRESH_S} s)"
p11t_server_alive srv

# The log: a line or two when the token is lost (one per cause, not one per
# connection) and one when tickets work again.
log_lines=$(grep '^p11ticket: ' "$P11T_WORK/srv.err" | grep -vc 'tickets enabled' || true)
note "p11ticket log lines: $log_lines"
grep '^p11ticket: ' "$P11T_WORK/srv.err" | sed 's/^/      | /'
((log_lines <= 4)) || fail "$log_lines log lines for one fault (expected a few, not one per connection)"
case $scenario in
all-fail | removed | dir-moved | dir-locked)
    assert_eq 1 "$(count_lines "$P11T_WORK/srv.err" '^p11ticket: tickets work again')" \
        "'tickets work again' lines"
    ;;
esac

if [[ $scenario == one-error ]]; then
    logins=$("$FAULTCTL" counts "$counts" C_Login | awk '{ print $2 }')
    closeall=$("$FAULTCTL" counts "$counts" C_CloseAllSessions | awk '{ print $2 }')
    note "C_Login $logins, C_CloseAllSessions $closeall"
    ((logins <= 2)) || fail "$logins logins for one error (the first and at most one more)"
    assert_eq 0 "$closeall" "C_CloseAllSessions calls"
fi

# The setup tool runs as root: the PIN file must be root's again for it.
[[ $scenario != dir-locked ]] || chown root "$P11T_WORK/pin"
assert_eq "$names_before" "$(p11t_key_names "$P11T_CONF")" "key generations on the token afterwards"
p11t_server_stop srv
p11t_pass

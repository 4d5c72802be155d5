#!/bin/bash
# SPDX-License-Identifier: Apache-2.0
# lifecycle_import: `p11ticket import` migrates the ticket-key files of other
# servers into the token, so the tickets those servers issued keep resuming:
# for every supported format (they differ even at equal sizes:
# docs/design.md, "Key files and rotation elsewhere"), a ticket a plain
# OpenSSL server issued under a key file resumes on p11ticket-server once
# that file is imported.
#
# The old server is tests/e2e/plain_ticket_server.c: plain OpenSSL, no
# provider, ticket keys in memory from the file (SSL_CTX_set_tlsext_ticket_keys
# for the 80-byte OpenSSL layout, an nginx/Node.js/HAProxy-style ticket
# callback for the others).  For every format and alias:
#   - a random key file; the plain server issues a TLS 1.2 and a TLS 1.3
#     ticket under the file's (encrypting) key and resumes them itself
#     (for HAProxy also tickets under the first and the last line's keys,
#     from plain servers whose files are one rotation older and newer);
#   - before the import, p11ticket-server does not resume them;
#   - importing a truncated copy fails (exit != 0) and imports nothing;
#   - the import succeeds and warns that the file must be destroyed;
#   - the plain server's tickets resume on p11ticket-server, and the ticket
#     p11ticket-server now issues (under the imported active key) resumes on
#     the plain server: old and new servers run side by side;
#   - the imported key is retired, so that the next format's key becomes
#     the only active one.
# At the end a freshly started p11ticket-server resumes every plain ticket.
# refresh-interval = 1; the script waits 2 s after each import.
# shellcheck source=tests/lib.sh
. "$(dirname "$0")/../lib.sh"
p11t_begin lifecycle_import
p11t_token_empty --set "refresh-interval = 1"
p11t_server_start p -www
pp=$(p11t_port p)

hex16() { od -An -tx1 -N16 "$1" | tr -d ' \n'; }

# make_keys FORMAT SIZE FILE: a random key file; sets ENC (the name of the
# encrypting key) and NAMES (every key name in the file).
make_keys() {
    local fmt=$1 size=$2 file=$3 i rec=$P11T_WORK/rec.bin
    NAMES=()
    LINES=()
    if [[ "$fmt" == haproxy ]]; then
        printf '# tls-ticket-keys for the import test\n\n' >"$file"
        for i in 1 2 3; do
            OPENSSL_CONF=/dev/null openssl rand -out "$rec" "$size"
            LINES+=("$(base64 -w0 "$rec")")
            printf '%s\n' "${LINES[-1]}" >>"$file"
            NAMES+=("$(hex16 "$rec")")
        done
        # HAProxy encrypts with the penultimate of its last three keys.
        ENC=${NAMES[1]}
    else
        OPENSSL_CONF=/dev/null openssl rand -out "$file" "$size"
        NAMES+=("$(hex16 "$file")")
        ENC=${NAMES[0]}
    fi
    rm -f "$rec"
}

# gens_names: the sorted names on the token (from a fresh list --json).
gens_names() {
    p11t_gens_load
    p11t_gens_names | sort | tr '\n' ' '
}

PLAIN_TICKETS=()
n=0
for spec in openssl80:80 nginx80:80 envoy:80 nginx48:48 haproxy:48 haproxy:80 node48:48 apache48:48; do
    fmt=${spec%:*}
    size=${spec#*:}
    tag=$fmt-$size
    n=$((n + 1))
    info "$tag: format $fmt, $size-byte keys"
    keys=$P11T_WORK/$tag.keys
    make_keys "$fmt" "$size" "$keys"
    note "key names in the file: ${NAMES[*]} (encrypting: $ENC)"
    p11t_plain_start "plain$n" "$fmt" "$keys" -www
    pl=$(p11t_port "plain$n")
    assert_grep "$P11T_WORK/plain$n.err" "encrypting key name $ENC" "plain server loaded the file"

    for v in tls1_2 tls1_3; do
        p11t_get_ticket "$pl" "$tag-$v" "$v"
        assert_eq "$ENC" "$(p11t_sess_key "$P11T_WORK/$tag-$v.pem")" "$v: plain server's ticket key name"
        assert_eq Reused "$(p11t_resume "$pl" "$tag-$v" "$tag-$v-self" "$v")" "$v: the plain server resumes its own ticket"
        assert_eq New "$(p11t_resume "$pp" "$tag-$v" "$tag-$v-pre" "$v")" "$v: before the import, p11ticket-server does not resume it"
        PLAIN_TICKETS+=("$tag-$v")
    done

    if [[ "$fmt" == haproxy ]]; then
        # HAProxy accepts all three keys.  Tickets under the first line were
        # issued before the last reload (the first line was penultimate
        # then); tickets under the last line are issued after the next one.
        # Both must resume on p11ticket-server after the import, which
        # imports these lines decrypt-only.
        printf '%s\n' "${LINES[0]}" "${LINES[1]}" >"$keys.prev"
        OPENSSL_CONF=/dev/null openssl rand -out "$P11T_WORK/rec.bin" "$size"
        printf '%s\n' "${LINES[1]}" "${LINES[2]}" "$(base64 -w0 "$P11T_WORK/rec.bin")" >"$keys.next"
        rm -f "$P11T_WORK/rec.bin"
        for when in prev next; do
            [[ $when == prev ]] && want=${NAMES[0]} || want=${NAMES[2]}
            p11t_plain_start "plain$n$when" "$fmt" "$keys.$when" -www
            for v in tls1_2 tls1_3; do
                p11t_get_ticket "$(p11t_port "plain$n$when")" "$tag-$when-$v" "$v"
                assert_eq "$want" "$(p11t_sess_key "$P11T_WORK/$tag-$when-$v.pem")" "$v: $when HAProxy key name"
                PLAIN_TICKETS+=("$tag-$when-$v")
            done
            p11t_server_stop "plain$n$when"
        done
    fi

    # A truncated file: an error, and nothing imported.
    before=$(gens_names)
    bad=$P11T_WORK/$tag.truncated
    head -c "$(($(stat -c %s "$keys") - 7))" "$keys" >"$bad"
    p11t_tool_rc "imp-bad-$tag" import --format "$fmt" "$bad"
    [[ $P11T_RC -ne 0 ]] || fail "import of a truncated $fmt file exited 0"
    note "ok: import of a truncated file: exit $P11T_RC: $(head -n 1 "$P11T_WORK/imp-bad-$tag.tool")"
    assert_eq 1 "$P11T_RC" "exit status for a malformed file (p11ticket(1): 1)"
    [[ -s "$P11T_WORK/imp-bad-$tag.tool" ]] || fail "import of a truncated file printed no error"
    assert_eq "$before" "$(gens_names)" "generations on the token after the failed import"

    # The real import.
    p11t_tool_ok "imp-$tag" import --format "$fmt" --encrypt-for 10m --decrypt-for 10m "$keys"
    for k in "${NAMES[@]}"; do
        assert_grep "$P11T_WORK/imp-$tag.out" "^imported $k" "import lists $k"
    done
    assert_grep "$P11T_WORK/imp-$tag.tool" "destroy $keys now" "import warns that the key file must be destroyed"
    p11t_gens_load
    p11t_gens_show
    assert_eq active "$(p11t_gen "$ENC" state)" "state of the encrypting key"
    assert_eq "$ENC" "$(p11t_gens_current)" "current key after the import"
    assert_eq 1 "$(p11t_gens_count active)" "active generations"
    for k in "${NAMES[@]}"; do
        assert_eq yes "$(p11t_gen "$k" complete)" "generation $k is complete"
        [[ "$k" == "$ENC" ]] ||
            assert_eq decrypt-only "$(p11t_gen "$k" state)" "state of the other HAProxy key $k"
    done

    sleep 2
    for v in tls1_2 tls1_3; do
        assert_eq Reused "$(p11t_resume "$pp" "$tag-$v" "$tag-$v-post" "$v")" "$v: the plain server's ticket resumes on p11ticket-server"
        # And the other way round: p11ticket-server's ticket on the old server.
        p11t_get_ticket "$pp" "$tag-$v-p11" "$v"
        assert_eq "$ENC" "$(p11t_sess_key "$P11T_WORK/$tag-$v-p11.pem")" "$v: p11ticket-server's ticket is under the imported key"
        assert_eq Reused "$(p11t_resume "$pl" "$tag-$v-p11" "$tag-$v-back" "$v")" "$v: p11ticket-server's ticket resumes on the plain server"
        if [[ "$fmt" == haproxy ]]; then
            for when in prev next; do
                assert_eq Reused "$(p11t_resume "$pp" "$tag-$when-$v" "$tag-$when-$v-post" "$v")" "$v: ticket under the $when HAProxy key resumes on p11ticket-server"
            done
        fi
    done
    p11t_server_stop "plain$n"

    # Importing the same file again: the names are on the token already.
    before=$(gens_names)
    p11t_tool_rc "imp-again-$tag" import --format "$fmt" "$keys"
    assert_eq 1 "$P11T_RC" "exit status of a second import of the same file"
    assert_eq "$before" "$(gens_names)" "generations after the second import"

    p11t_tool_ok "retire-$tag" retire "$ENC"
done

info "every plain ticket resumes on a freshly started p11ticket-server"
p11t_server_start fresh -www
pf=$(p11t_port fresh)
for t in "${PLAIN_TICKETS[@]}"; do
    assert_eq Reused "$(p11t_resume "$pf" "$t" "$t-fresh" "${t##*-}")" "$t on the fresh server"
done
p11t_server_alive p
p11t_server_stop p
p11t_server_stop fresh
p11t_pass

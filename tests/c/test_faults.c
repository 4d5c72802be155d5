/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_faults.c - the provider on a token that fails: SoftHSM behind the
 * fault-injection module (tests/faultmod), driven through its control file.
 *
 * 1. One CKR_DEVICE_ERROR from C_Sign while 8 threads do token HMACs on a
 *    slow token (20 ms C_SignInit): at most one re-login, no
 *    C_CloseAllSessions, every thread's HMACs right again afterwards, and
 *    the token intact (key still there, token file not emptied).  A login
 *    storm after one error used to rewrite SoftHSM's token.object hundreds of
 *    times and, with a crash, emptied it.
 * 2. 1,000 faults spread over every function (random, seeded) under the same
 *    load: afterwards every key is listed and gives its known tag again.
 * 3. A token that reports CKF_USER_PIN_FINAL_TRY or CKF_USER_PIN_LOCKED gets
 *    no C_Login, and the status says why.
 * 4. A key object planted with known bytes (not sensitive, extractable) and
 *    a later encrypt-from than the real key is neither the current key nor
 *    usable by name.
 * 5. Mechanisms the token does not offer (hide-mech), as behind p11-kit's
 *    client module (docs/design.md, "p11-kit remoting"): without
 *    CKM_AES_CBC_PAD, aes-mechanism = auto runs the ticket cipher on
 *    CKM_AES_ECB and tickets round-trip; without both AES mechanisms (or
 *    without CKM_SHA256_HMAC, or without the one aes-mechanism forces) the
 *    status names pkcs11-module and the mechanisms, and neither C_Login
 *    nor any cipher call is attempted, nor a second look within the
 *    backoff.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#include "hsm.h"
#include "p11ticket.h"
#include "support.h"

#ifndef P11T_TEST_FAULTMOD
#error "P11T_TEST_FAULTMOD (path of libp11t_faultmod.so) is not defined"
#endif

#define THREADS 8

static t_env env;
static char control[400];
static unsigned long long (*fault_calls)(const char *);

/* The control file, replaced atomically (rename), as faultmod advises. */
static void set_faults(const char *rules)
{
    t_write_file_atomic(control, rules);
}

static unsigned long long calls(const char *fn)
{
    return fault_calls != NULL ? fault_calls(fn) : 0;
}

/* A library context whose provider reaches SoftHSM through faultmod. */
static OSSL_LIB_CTX *faulty_libctx(const char *file, const char *extra)
{
    char cnf[512], module_line[600];
    t_cnf o = {0};
    OSSL_LIB_CTX *libctx;
    void *dl;

    snprintf(module_line, sizeof(module_line), "%s%s", extra ? extra : "",
             "");
    o.extra = module_line[0] ? module_line : NULL;
    o.pkcs11_module = P11T_TEST_FAULTMOD;
    REQUIRE(t_write_cnf(&env, file, &o, cnf, sizeof(cnf)));
    libctx = t_libctx_load(cnf);
    REQUIRE(libctx != NULL);
    /* The provider loads faultmod at its first token operation; its
     * counters are read through the same (already mapped) object. */
    dl = dlopen(P11T_TEST_FAULTMOD, RTLD_NOW | RTLD_LOCAL);
    REQUIRE(dl != NULL);
    fault_calls = (unsigned long long (*)(const char *))dlsym(
        dl, "p11t_fault_calls");
    REQUIRE(fault_calls != NULL);
    return libctx;
}

static int hmac(EVP_MAC *mac, const uint8_t name[16], const char *msg,
                unsigned char tag[32])
{
    return t_token_hmac(mac, name, msg, tag);
}

/* The provider's status line and current key, as p11ticket_status() asks. */
static void provider_status(OSSL_LIB_CTX *libctx, char *status, size_t slen,
                            char *key, size_t klen)
{
    OSSL_PROVIDER *p = OSSL_PROVIDER_load(libctx, "p11ticket");
    OSSL_PARAM params[3];

    status[0] = key[0] = '\0';
    REQUIRE(p != NULL);
    params[0] = OSSL_PARAM_construct_utf8_string(P11TICKET_PARAM_STATUS, status,
                                                 slen - 1);
    params[1] = OSSL_PARAM_construct_utf8_string(P11TICKET_PARAM_CURRENT_KEY,
                                                 key, klen - 1);
    params[2] = OSSL_PARAM_construct_end();
    CHECK(OSSL_PROVIDER_get_params(p, params) == 1);
    OSSL_PROVIDER_unload(p);
}

/* ---- load: threads doing token HMACs -------------------------------------- */

typedef struct load {
    EVP_MAC *mac;
    const uint8_t *name;
    const unsigned char *ref; /* the right tag */
    atomic_int stop;
    atomic_long ok, wrong;
    atomic_long ok_late; /* right tags after `late` was set */
    atomic_int late;
} load;

static void *load_thread(void *arg)
{
    load *l = arg;
    unsigned char tag[32];

    while (!atomic_load(&l->stop)) {
        /* A token failure gives a random tag, never an error: libssl then
         * simply does not resume (docs/design.md, "libssl's ticket path"). */
        if (hmac(l->mac, l->name, "fault load", tag) &&
            memcmp(tag, l->ref, 32) == 0) {
            atomic_fetch_add(&l->ok, 1);
            if (atomic_load(&l->late))
                atomic_fetch_add(&l->ok_late, 1);
        } else {
            atomic_fetch_add(&l->wrong, 1);
        }
    }
    return NULL;
}

static void run_load(load *l, int seconds_fault, int seconds_after,
                     const char *fault_rules, const char *after_rules)
{
    pthread_t th[THREADS];

    for (int i = 0; i < THREADS; i++)
        REQUIRE(pthread_create(&th[i], NULL, load_thread, l) == 0);
    set_faults(fault_rules);
    sleep((unsigned)seconds_fault);
    set_faults(after_rules);
    /* Give recovery a moment, then count only what follows. */
    sleep(1);
    atomic_store(&l->late, 1);
    sleep((unsigned)seconds_after);
    atomic_store(&l->stop, 1);
    for (int i = 0; i < THREADS; i++)
        pthread_join(th[i], NULL);
}

static off_t token_object_size(void)
{
    char cmd[700], line[600];
    FILE *p;
    off_t size = -1;

    /* SoftHSM keeps each token in a directory of its own under tokens/. */
    snprintf(cmd, sizeof(cmd), "find '%s/tokens' -name token.object", env.dir);
    p = popen(cmd, "r");
    if (p == NULL)
        return -1;
    if (fgets(line, sizeof(line), p) != NULL) {
        struct stat st;

        line[strcspn(line, "\n")] = '\0';
        if (stat(line, &st) == 0)
            size = st.st_size;
    }
    pclose(p);
    return size;
}

static void one_error(EVP_MAC *mac, const uint8_t key[16],
                      const unsigned char ref[32])
{
    static load l;
    unsigned long long logins0, closeall0, signs0;
    off_t before = token_object_size();

    t_section("one CKR_DEVICE_ERROR, %d threads, a 20 ms C_SignInit",
              THREADS);
    l.mac = mac;
    l.name = key;
    l.ref = ref;
    logins0 = calls("C_Login");
    closeall0 = calls("C_CloseAllSessions");
    signs0 = calls("C_Sign");
    run_load(&l, 2, 2,
             "delay C_SignInit ms=20\n"
             "fail C_Sign nth=40 rv=CKR_DEVICE_ERROR\n",
             "delay C_SignInit ms=20\n");
    fprintf(stderr, "  %ld right tags (%ld after recovery), %ld wrong; "
            "C_Login %llu, C_CloseAllSessions %llu, C_Sign %llu\n",
            atomic_load(&l.ok), atomic_load(&l.ok_late),
            atomic_load(&l.wrong), calls("C_Login") - logins0,
            calls("C_CloseAllSessions") - closeall0, calls("C_Sign") - signs0);
    CHECKF(calls("C_Login") - logins0 <= 1,
           "%llu logins after one error (at most one re-login)",
           calls("C_Login") - logins0);
    CHECKF(calls("C_CloseAllSessions") == closeall0,
           "C_CloseAllSessions called %llu times",
           calls("C_CloseAllSessions") - closeall0);
    CHECKF(atomic_load(&l.ok_late) > 20,
           "token HMACs did not resume after the error (%ld right)",
           atomic_load(&l.ok_late));
    CHECKF(token_object_size() > 0 && token_object_size() >= before / 2,
           "token.object shrank from %lld to %lld bytes",
           (long long)before, (long long)token_object_size());
}

static void many_faults(EVP_MAC *mac, const uint8_t *keys, int nkeys,
                        unsigned char (*refs)[32])
{
    static load l;
    unsigned long long logins0 = calls("C_Login");

    t_section("1000 faults across every token function");
    l.mac = mac;
    l.name = keys;
    l.ref = refs[0];
    run_load(&l, 3, 1, "fail * random=0.05 rv=CKR_DEVICE_ERROR max=1000 seed=7\n",
             "");
    fprintf(stderr, "  %ld right tags (%ld after), %ld wrong, C_Login %llu\n",
            atomic_load(&l.ok), atomic_load(&l.ok_late), atomic_load(&l.wrong),
            calls("C_Login") - logins0);
    CHECKF(atomic_load(&l.ok_late) > 0, "no right tag after the faults");
    /* Every key still there and still the same key. */
    for (int i = 0; i < nkeys; i++) {
        unsigned char tag[32];

        CHECKF(hmac(mac, keys + 16 * i, "fault load", tag) &&
                   memcmp(tag, refs[i], 32) == 0,
               "key %d lost or changed after the faults", i);
    }
    CHECKF(token_object_size() > 0, "token.object emptied");
}

static void pin_flags(void)
{
    OSSL_LIB_CTX *libctx;
    char status[400], key[80];
    unsigned long long logins0;

    t_section("CKF_USER_PIN_FINAL_TRY: no C_Login");
    set_faults("token-flags 0x20000\n");
    libctx = faulty_libctx("final-try.cnf", NULL);
    logins0 = calls("C_Login");
    provider_status(libctx, status, sizeof(status), key, sizeof(key));
    CHECKF(strstr(status, "FINAL_TRY") != NULL && strstr(status, "pin-source"),
           "status: %s", status);
    CHECK_EQ(calls("C_Login") - logins0, 0);
    OSSL_LIB_CTX_free(libctx);

    t_section("CKF_USER_PIN_LOCKED: no C_Login");
    set_faults("token-flags 0x40000\n");
    libctx = faulty_libctx("locked.cnf", NULL);
    logins0 = calls("C_Login");
    provider_status(libctx, status, sizeof(status), key, sizeof(key));
    CHECKF(strstr(status, "locked") != NULL, "status: %s", status);
    CHECK_EQ(calls("C_Login") - logins0, 0);
    OSSL_LIB_CTX_free(libctx);
    set_faults("");
}

/* ---- a planted weak key ---------------------------------------------------- */

static CK_FUNCTION_LIST_PTR softhsm(void)
{
    void *dl = dlopen(env.pkcs11, RTLD_NOW | RTLD_LOCAL);
    CK_C_GetFunctionList getfl;
    CK_FUNCTION_LIST_PTR f = NULL;

    REQUIRE(dl != NULL);
    getfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
    REQUIRE(getfl != NULL && getfl(&f) == CKR_OK);
    return f;
}

/* Creates one weak object (known value, not sensitive, extractable). */
static void plant(CK_FUNCTION_LIST_PTR f, CK_SESSION_HANDLE s,
                  const uint8_t name[16], p11t_role role, const p11t_times *t)
{
    static const uint8_t value[32] = "known bytes known bytes known by";
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE kt = role == P11T_ROLE_AES ? CKK_AES : CKK_GENERIC_SECRET;
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    char label[200];
    CK_OBJECT_HANDLE o;
    CK_ATTRIBUTE tmpl[] = {
        {CKA_CLASS, &cls, sizeof(cls)},
        {CKA_KEY_TYPE, &kt, sizeof(kt)},
        {CKA_TOKEN, &yes, sizeof(yes)},
        {CKA_PRIVATE, &yes, sizeof(yes)},
        {CKA_SENSITIVE, &no, sizeof(no)},
        {CKA_EXTRACTABLE, &yes, sizeof(yes)},
        {CKA_ENCRYPT, &yes, sizeof(yes)},
        {CKA_DECRYPT, &yes, sizeof(yes)},
        {CKA_SIGN, &yes, sizeof(yes)},
        {CKA_VERIFY, &yes, sizeof(yes)},
        {CKA_VALUE, (void *)value, sizeof(value)},
        {CKA_ID, (void *)name, 16},
        {CKA_LABEL, label, 0},
    };

    REQUIRE(p11t_label_format(label, sizeof(label), role, t) > 0);
    tmpl[12].ulValueLen = (CK_ULONG)strlen(label);
    REQUIRE(f->C_CreateObject(s, tmpl, 13, &o) == CKR_OK);
}

static void planted(const uint8_t real[16])
{
    CK_FUNCTION_LIST_PTR f = softhsm();
    CK_C_INITIALIZE_ARGS args = {.flags = CKF_OS_LOCKING_OK};
    CK_SLOT_ID slots[8];
    CK_ULONG n = 8;
    CK_SESSION_HANDLE s;
    CK_TOKEN_INFO ti;
    uint8_t name[16];
    char hex[33], status[400], key[80];
    p11t_times t;
    OSSL_LIB_CTX *libctx;
    EVP_CIPHER *c;
    EVP_CIPHER_CTX *cctx;
    unsigned char iv[16] = {0}, nm[16];
    OSSL_PARAM params[2];
    int64_t now = (int64_t)time(NULL);

    t_section("a planted extractable key with a later encrypt-from");
    set_faults("");
    /* Plant from a child: it owns its own SoftHSM instance and exits. */
    fflush(NULL);
    {
        pid_t pid = fork();

        REQUIRE(pid >= 0);
        if (pid == 0) {
            /* SoftHSM is already initialised in this process (faultmod
             * loaded it), so the inherited state is used as it is. */
            CK_RV irv = f->C_Initialize(&args), lrv;
            int ok = (irv == CKR_OK || irv == CKR_CRYPTOKI_ALREADY_INITIALIZED) &&
                     f->C_GetSlotList(CK_TRUE, slots, &n) == CKR_OK;
            CK_ULONG i;

            for (i = 0; ok && i < n; i++)
                if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
                    memcmp(ti.label, "tickets ", 8) == 0)
                    break;
            ok = ok && i < n &&
                 f->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION,
                                  NULL, NULL, &s) == CKR_OK &&
                 ((lrv = f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)env.pin,
                                    strlen(env.pin))) == CKR_OK ||
                  lrv == CKR_USER_ALREADY_LOGGED_IN);
            if (ok) {
                memset(name, 0xEE, sizeof(name));
                t.encrypt_from = now - 10; /* later than the real key's */
                t.encrypt_until = P11T_TIME_NEVER;
                t.decrypt_until = P11T_TIME_NEVER;
                plant(f, s, name, P11T_ROLE_AES, &t);
                plant(f, s, name, P11T_ROLE_HMAC, &t);
            }
            _exit(ok ? 0 : 1);
        }
        REQUIRE(t_wait_child(pid));
    }
    memset(name, 0xEE, sizeof(name));
    t_hexstr(name, 16, hex);

    libctx = faulty_libctx("planted.cnf", NULL);
    provider_status(libctx, status, sizeof(status), key, sizeof(key));
    CHECKF(strcmp(status, "ok") == 0, "status: %s", status);
    t_hexstr(real, 16, hex);
    CHECKF(strcmp(key, hex) == 0, "current key %s, expected the real %s", key,
           hex);
    /* By name: unknown, as if it were not there. */
    c = EVP_CIPHER_fetch(libctx, P11TICKET_CIPHER_NAME, NULL);
    cctx = EVP_CIPHER_CTX_new();
    REQUIRE(c != NULL && cctx != NULL);
    memcpy(nm, name, 16);
    params[0] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME, nm,
                                                  16);
    params[1] = OSSL_PARAM_construct_end();
    CHECKF(!EVP_DecryptInit_ex2(cctx, c, NULL, iv, params),
           "the planted key was accepted by name");
    ERR_clear_error();
    EVP_CIPHER_CTX_free(cctx);
    EVP_CIPHER_free(c);
    OSSL_LIB_CTX_free(libctx);
}

/* ---- mechanisms the token does not offer ----------------------------------- */

/* Encrypts msg under key name (AES-CBC through the provider), decrypts it
 * again and compares; 1 if the round trip gave msg back. */
static int cipher_roundtrip(OSSL_LIB_CTX *libctx, const uint8_t name[16],
                            int init_only)
{
    static const char msg[] = "a TLS session state, more than one block long, "
                              "to chain a few CBC blocks together";
    unsigned char iv[16], nm[16], ct[256], pt[256];
    EVP_CIPHER *c = EVP_CIPHER_fetch(libctx, P11TICKET_CIPHER_NAME, NULL);
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    OSSL_PARAM params[2];
    int l1 = 0, l2 = 0, l3 = 0, l4 = 0, ok = 0;

    if (c == NULL || ctx == NULL)
        goto done;
    memset(iv, 0x3c, sizeof(iv));
    memcpy(nm, name, 16);
    params[0] = OSSL_PARAM_construct_octet_string(P11TICKET_PARAM_KEY_NAME, nm,
                                                  16);
    params[1] = OSSL_PARAM_construct_end();
    if (init_only) { /* only whether an encryption can start */
        ok = EVP_EncryptInit_ex2(ctx, c, NULL, iv, params);
        goto done;
    }
    ok = EVP_EncryptInit_ex2(ctx, c, NULL, iv, params) &&
         EVP_EncryptUpdate(ctx, ct, &l1, (const unsigned char *)msg,
                           (int)sizeof(msg)) &&
         EVP_EncryptFinal_ex(ctx, ct + l1, &l2) &&
         l1 + l2 == (int)(sizeof(msg) + 16 - sizeof(msg) % 16) &&
         EVP_DecryptInit_ex2(ctx, c, NULL, iv, params) &&
         EVP_DecryptUpdate(ctx, pt, &l3, ct, l1 + l2) &&
         EVP_DecryptFinal_ex(ctx, pt + l3, &l4) &&
         l3 + l4 == (int)sizeof(msg) && memcmp(pt, msg, sizeof(msg)) == 0;
done:
    ERR_clear_error();
    EVP_CIPHER_CTX_free(ctx);
    EVP_CIPHER_free(c);
    return ok;
}

/* OpenSSL's own provider status (1 active, 0 inactive, -1 no answer). */
static int ossl_status(OSSL_LIB_CTX *libctx)
{
    OSSL_PROVIDER *p = OSSL_PROVIDER_load(libctx, "p11ticket");
    int st = -1;
    OSSL_PARAM params[2];

    REQUIRE(p != NULL);
    params[0] = OSSL_PARAM_construct_int(OSSL_PROV_PARAM_STATUS, &st);
    params[1] = OSSL_PARAM_construct_end();
    if (OSSL_PROVIDER_get_params(p, params) != 1)
        st = -1;
    OSSL_PROVIDER_unload(p);
    return st;
}

/* Calls that a token p11ticket cannot use must never see. */
static const char *const never_fns[] = {
    "C_Login",         "C_EncryptInit", "C_Encrypt", "C_EncryptUpdate",
    "C_EncryptFinal",  "C_DecryptInit", "C_Decrypt", "C_SignInit",
    "C_Sign",          NULL};

/*
 * A fresh provider instance with `extra` in its section, while the token
 * hides what `rules` says: its status must contain every string of
 * `want`, the cipher must not start, no call of never_fns may reach the
 * token, and the mechanisms are looked at once only (the backoff).
 */
static void refused(const char *what, const char *rules, const char *extra,
                    const uint8_t key[16], const char *const *want)
{
    static int seq;
    unsigned long long before[16], list0;
    char status[400], cur[80], file[64];
    OSSL_LIB_CTX *libctx;
    size_t i;

    t_section("%s", what);
    set_faults(rules);
    snprintf(file, sizeof(file), "mech-%d.cnf", ++seq);
    for (i = 0; never_fns[i] != NULL; i++)
        before[i] = calls(never_fns[i]);
    list0 = calls("C_GetMechanismList");
    libctx = faulty_libctx(file, extra);
    provider_status(libctx, status, sizeof(status), cur, sizeof(cur));
    fprintf(stderr, "  status: %s\n", status);
    CHECKF(strncmp(status, "pkcs11-module: ", 15) == 0, "status: %s", status);
    for (i = 0; want[i] != NULL; i++)
        CHECKF(strstr(status, want[i]) != NULL, "status lacks %s: %s",
               want[i], status);
    CHECK_EQ(ossl_status(libctx), 0);
    CHECKF(!cipher_roundtrip(libctx, key, 1), "a ticket encryption started");
    /* Asked again within the backoff: the same answer, no new look. */
    provider_status(libctx, status, sizeof(status), cur, sizeof(cur));
    CHECKF(strncmp(status, "pkcs11-module: ", 15) == 0, "status: %s", status);
    CHECK_EQ(calls("C_GetMechanismList") - list0, 2); /* size, then list */
    for (i = 0; never_fns[i] != NULL; i++)
        CHECKF(calls(never_fns[i]) == before[i], "%s called %llu times",
               never_fns[i], calls(never_fns[i]) - before[i]);
    OSSL_LIB_CTX_free(libctx);
    set_faults("");
}

static void mechanisms(const uint8_t key[16], const unsigned char ref[32])
{
    static const char *const both[] = {"neither CKM_AES_CBC_PAD",
                                       "nor CKM_AES_ECB", NULL};
    static const char *const forced_cbc[] = {"CKM_AES_CBC_PAD",
                                             "aes-mechanism = cbc-pad", NULL};
    static const char *const forced_ecb[] = {"CKM_AES_ECB",
                                             "aes-mechanism = ecb", NULL};
    static const char *const no_hmac[] = {"CKM_SHA256_HMAC", NULL};
    unsigned long long upd0, enc0, dec0;
    char status[400], cur[80];
    unsigned char tag[32];
    OSSL_LIB_CTX *libctx;
    EVP_MAC *mac;

    t_section("CKM_AES_CBC_PAD hidden, aes-mechanism = auto: CBC on ECB");
    set_faults("hide-mech CKM_AES_CBC_PAD\n");
    libctx = faulty_libctx("no-cbc-pad.cnf", NULL);
    provider_status(libctx, status, sizeof(status), cur, sizeof(cur));
    CHECKF(strcmp(status, "ok") == 0, "status: %s", status);
    CHECK_EQ(ossl_status(libctx), 1);
    mac = EVP_MAC_fetch(libctx, "HMAC", "provider=p11ticket");
    REQUIRE(mac != NULL);
    CHECK(hmac(mac, key, "fault load", tag) && memcmp(tag, ref, 32) == 0);
    EVP_MAC_free(mac);
    upd0 = calls("C_EncryptUpdate");
    enc0 = calls("C_Encrypt");
    dec0 = calls("C_Decrypt");
    CHECK(cipher_roundtrip(libctx, key, 0));
    /* 81 bytes: 6 blocks, one C_EncryptUpdate each; one C_Decrypt. */
    CHECK_EQ(calls("C_EncryptUpdate") - upd0, 6);
    CHECK_EQ(calls("C_Encrypt") - enc0, 0);
    CHECK_EQ(calls("C_Decrypt") - dec0, 1);
    OSSL_LIB_CTX_free(libctx);

    refused("CKM_AES_CBC_PAD and CKM_AES_ECB hidden: unusable",
            "hide-mech CKM_AES_CBC_PAD\nhide-mech CKM_AES_ECB\n", NULL, key,
            both);
    refused("aes-mechanism = cbc-pad, CKM_AES_CBC_PAD hidden",
            "hide-mech CKM_AES_CBC_PAD\n", "aes-mechanism = cbc-pad", key,
            forced_cbc);
    refused("aes-mechanism = ecb, CKM_AES_ECB hidden",
            "hide-mech CKM_AES_ECB\n", "aes-mechanism = ecb", key, forced_ecb);
    refused("CKM_SHA256_HMAC hidden", "hide-mech CKM_SHA256_HMAC\n", NULL, key,
            no_hmac);
}

int main(void)
{
    uint8_t keys[2 * 16];
    unsigned char refs[2][32];
    OSSL_LIB_CTX *libctx;
    EVP_MAC *mac;
    int64_t now = (int64_t)time(NULL);

    REQUIRE(t_env_init(&env, "faults"));
    snprintf(control, sizeof(control), "%s/faults.control", env.dir);
    setenv("P11T_FAULT_CONTROL", control, 1);
    setenv("P11T_FAULT_MODULE", env.pkcs11, 1);
    set_faults("");
    /* Two generations: the older decrypt-only, the newer current. */
    REQUIRE(t_key_create(&env, NULL, now - 7200, now - 3600, INT64_MAX, keys));
    REQUIRE(t_key_create(&env, NULL, now - 60, INT64_MAX, INT64_MAX,
                         keys + 16));

    libctx = faulty_libctx("openssl.cnf", "refresh-interval = 2");
    mac = EVP_MAC_fetch(libctx, "HMAC", "provider=p11ticket");
    REQUIRE(mac != NULL);
    for (int i = 0; i < 2; i++)
        REQUIRE(hmac(mac, keys + 16 * i, "fault load", refs[i]));
    {
        unsigned char again[32];

        REQUIRE(hmac(mac, keys, "fault load", again));
        REQUIRE(memcmp(again, refs[0], 32) == 0); /* deterministic: real */
    }

    one_error(mac, keys + 16, refs[1]);
    many_faults(mac, keys, 2, refs);
    EVP_MAC_free(mac);
    OSSL_LIB_CTX_free(libctx);

    pin_flags();
    planted(keys + 16);
    mechanisms(keys + 16, refs[1]);

    t_env_cleanup(&env);
    fflush(NULL);
    /* No OPENSSL_cleanup-driven teardown of SoftHSM (docs/design.md,
     * "Never C_Finalize at exit"). */
    _exit(t_finish("test_faults"));
}

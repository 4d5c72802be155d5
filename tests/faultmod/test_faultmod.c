/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_faultmod.c - the fault-injection PKCS#11 module (faultmod.c) itself,
 * over a real SoftHSM token.
 *
 * The test loads libp11t_faultmod.so with dlopen, as p11ticket would, with
 * P11T_FAULT_MODULE pointing at SoftHSM, and rewrites the control file
 * between calls.  Every rule of the syntax is checked for its effect and
 * for the end of its effect, and the call counters (the exported
 * functions, and the shared file through p11t_faultctl) against what the
 * test did.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#include "support.h"

#ifndef P11T_FAULTMOD
#define P11T_FAULTMOD "libp11t_faultmod.so"
#endif
#ifndef P11T_FAULTCTL
#define P11T_FAULTCTL "p11t_faultctl"
#endif

static t_env env;
static const char *faultmod, *faultctl;
static CK_FUNCTION_LIST_PTR f;
static CK_C_GetFunctionList getfl;
static unsigned long long (*n_calls)(const char *);
static unsigned long long (*n_fails)(const char *);
static char control[400], counts_file[400], err_file[400];
static CK_SLOT_ID slot;

/* A session with its own session keys. */
typedef struct tok {
    CK_SESSION_HANDLE s;
    CK_OBJECT_HANDLE aes, hmac;
} tok;

static int64_t mono_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};

    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

/*
 * Replaces the control file (a new file renamed over the old one, as the
 * module wants it); text NULL removes it.
 */
static int rules(const char *text)
{
    char tmp[420];
    size_t len;
    int fd;

    if (text == NULL)
        return unlink(control) == 0 || errno == ENOENT;
    snprintf(tmp, sizeof(tmp), "%s.tmp", control);
    len = strlen(text);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || write(fd, text, len) != (ssize_t)len || close(fd) != 0 ||
        rename(tmp, control) != 0) {
        fprintf(stderr, "writing %s: %s\n", control, strerror(errno));
        return 0;
    }
    return 1;
}

#define RULES(text) REQUIRE(rules(text))

/* Rewrites the control file in place (same inode). */
static int rules_in_place(const char *text)
{
    size_t len = strlen(text);
    int fd = open(control, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);

    if (fd < 0 || write(fd, text, len) != (ssize_t)len || close(fd) != 0) {
        fprintf(stderr, "writing %s: %s\n", control, strerror(errno));
        return 0;
    }
    return 1;
}

/* ---- token helpers ------------------------------------------------------- */

/* Number of slots with a token; *found set if one is labelled "tickets". */
static CK_ULONG present_slots(int *found)
{
    CK_SLOT_ID ids[16];
    CK_ULONG n = 16;
    CK_TOKEN_INFO ti;

    *found = 0;
    if (f->C_GetSlotList(CK_TRUE, ids, &n) != CKR_OK)
        return (CK_ULONG)-1;
    for (CK_ULONG i = 0; i < n; i++)
        if (f->C_GetTokenInfo(ids[i], &ti) == CKR_OK &&
            memcmp(ti.label, "tickets ", 8) == 0) {
            slot = ids[i];
            *found = 1;
        }
    return n;
}

static CK_RV gen_keys(tok *t)
{
    CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
    CK_ULONG len = 32;
    CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
    CK_KEY_TYPE gen = CKK_GENERIC_SECRET;
    CK_MECHANISM aes_gen = {CKM_AES_KEY_GEN, NULL, 0};
    CK_MECHANISM sec_gen = {CKM_GENERIC_SECRET_KEY_GEN, NULL, 0};
    CK_ATTRIBUTE a[] = {{CKA_VALUE_LEN, &len, sizeof(len)},
                        {CKA_TOKEN, &no, sizeof(no)},
                        {CKA_ENCRYPT, &yes, sizeof(yes)},
                        {CKA_DECRYPT, &yes, sizeof(yes)}};
    CK_ATTRIBUTE h[] = {
        {CKA_CLASS, &cls, sizeof(cls)},     {CKA_KEY_TYPE, &gen, sizeof(gen)},
        {CKA_VALUE_LEN, &len, sizeof(len)}, {CKA_TOKEN, &no, sizeof(no)},
        {CKA_SIGN, &yes, sizeof(yes)},      {CKA_VERIFY, &yes, sizeof(yes)}};
    CK_RV rv = f->C_GenerateKey(t->s, &aes_gen, a, 4, &t->aes);

    return rv != CKR_OK ? rv : f->C_GenerateKey(t->s, &sec_gen, h, 6, &t->hmac);
}

/* A new logged-in session with its own keys. */
static int open_tok(tok *t)
{
    CK_RV rv;

    memset(t, 0, sizeof(*t));
    rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL, NULL,
                          &t->s);
    if (!CHECKF(rv == CKR_OK, "C_OpenSession: 0x%lx", rv))
        return 0;
    rv = f->C_Login(t->s, CKU_USER, (CK_UTF8CHAR_PTR)env.pin, strlen(env.pin));
    if (!CHECKF(rv == CKR_OK || rv == CKR_USER_ALREADY_LOGGED_IN,
                "C_Login: 0x%lx", rv))
        return 0;
    rv = gen_keys(t);
    return CHECKF(rv == CKR_OK, "C_GenerateKey: 0x%lx", rv);
}

static CK_BYTE plain[100] = "the session state of a TLS ticket";
static CK_BYTE iv[16];

/* AES-CBC-PAD encryption of plain into out; C_Encrypt's (or the init's)
 * result. */
static CK_RV enc_to(tok *t, CK_BYTE *out, CK_ULONG *outl)
{
    CK_MECHANISM m = {CKM_AES_CBC_PAD, iv, sizeof(iv)};
    CK_RV rv = f->C_EncryptInit(t->s, &m, t->aes);

    return rv != CKR_OK ? rv
                        : f->C_Encrypt(t->s, plain, sizeof(plain), out, outl);
}

static CK_RV enc(tok *t)
{
    CK_BYTE out[128];
    CK_ULONG outl = sizeof(out);

    return enc_to(t, out, &outl);
}

/* Encrypts then decrypts; the decryption's result, and 0x7fffffff when the
 * round trip gives other bytes. */
static CK_RV roundtrip(tok *t)
{
    CK_MECHANISM m = {CKM_AES_CBC_PAD, iv, sizeof(iv)};
    CK_BYTE ct[128], pt[128];
    CK_ULONG ctl = sizeof(ct), ptl = sizeof(pt);
    CK_RV rv = enc_to(t, ct, &ctl);

    if (rv == CKR_OK)
        rv = f->C_DecryptInit(t->s, &m, t->aes);
    if (rv == CKR_OK)
        rv = f->C_Decrypt(t->s, ct, ctl, pt, &ptl);
    if (rv == CKR_OK &&
        (ptl != sizeof(plain) || memcmp(pt, plain, sizeof(plain)) != 0))
        rv = 0x7fffffff;
    return rv;
}

static CK_RV sign(tok *t)
{
    CK_MECHANISM m = {CKM_SHA256_HMAC, NULL, 0};
    CK_BYTE mac[32];
    CK_ULONG macl = sizeof(mac);
    CK_RV rv = f->C_SignInit(t->s, &m, t->hmac);

    return rv != CKR_OK ? rv
                        : f->C_Sign(t->s, plain, sizeof(plain), mac, &macl);
}

static CK_RV session_info(CK_SESSION_HANDLE s)
{
    CK_SESSION_INFO si;

    return f->C_GetSessionInfo(s, &si);
}

/* 1 if the object (a session key of another session) still exists. */
static int object_alive(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE o)
{
    CK_OBJECT_CLASS cls = 0;
    CK_ATTRIBUTE a = {CKA_CLASS, &cls, sizeof(cls)};

    return f->C_GetAttributeValue(s, o, &a, 1) == CKR_OK &&
           cls == CKO_SECRET_KEY;
}

/* The token's mechanisms (at most 256); count, or -1 on error. */
static long mechanisms(CK_MECHANISM_TYPE *list)
{
    CK_ULONG n = 256;

    return f->C_GetMechanismList(slot, list, &n) == CKR_OK ? (long)n : -1;
}

static int has_mech(const CK_MECHANISM_TYPE *list, long n, CK_MECHANISM_TYPE m)
{
    for (long i = 0; i < n; i++)
        if (list[i] == m)
            return 1;
    return 0;
}

/* ---- counters ------------------------------------------------------------ */

typedef struct snap {
    unsigned long long calls, fails;
} snap;

static snap at(const char *fn)
{
    snap s = {n_calls(fn), n_fails(fn)};

    return s;
}

#define CHECK_COUNTS(s0, fn, dcalls, dfails)                                   \
    do {                                                                       \
        CHECK_EQ(n_calls(fn) - (s0).calls, (dcalls));                          \
        CHECK_EQ(n_fails(fn) - (s0).fails, (dfails));                          \
    } while (0)

/* ---- sections ------------------------------------------------------------ */

static void check_setup(tok *main_tok)
{
    CK_C_INITIALIZE_ARGS args = {0};
    CK_FUNCTION_LIST_PTR again = NULL;
    void (**fp)(void);
    size_t nfp;
    int found, all = 1;
    void *dl;
    CK_RV rv;

    t_section("loading the module");
    dl = dlopen(faultmod, RTLD_NOW | RTLD_LOCAL);
    if (dl == NULL)
        fprintf(stderr, "dlopen %s: %s\n", faultmod, dlerror());
    REQUIRE(dl != NULL);
    getfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
    n_calls =
        (unsigned long long (*)(const char *))dlsym(dl, "p11t_fault_calls");
    n_fails =
        (unsigned long long (*)(const char *))dlsym(dl, "p11t_fault_failures");
    REQUIRE(getfl != NULL && n_calls != NULL && n_fails != NULL);
    /* What a test gets when the provider loaded the module. */
    CHECK(dlopen(faultmod, RTLD_NOW | RTLD_NOLOAD) == dl);
    CHECK_EQ(n_calls(NULL), 0);

    REQUIRE(getfl(&f) == CKR_OK && f != NULL);
    CHECK(getfl(&again) == CKR_OK && again == f);
    CHECK_EQ(f->version.major, 2);
    CHECK_EQ(f->version.minor, 40);
    CHECK((void *)f->C_GetFunctionList == (void *)getfl);
    /* Every entry is there (the struct is the version, then pointers). */
    fp =
        (void (**)(void))((char *)f + offsetof(CK_FUNCTION_LIST, C_Initialize));
    nfp =
        (sizeof(CK_FUNCTION_LIST) - offsetof(CK_FUNCTION_LIST, C_Initialize)) /
        sizeof(*fp);
    CHECK_EQ(nfp, 68);
    for (size_t i = 0; i < nfp; i++)
        all &= fp[i] != NULL;
    CHECK(all);
    CHECK_EQ(n_calls("C_GetFunctionList"), 2);
    CHECK_EQ(n_calls("*"), 2);
    CHECK_EQ(n_calls("C_NoSuchFunction"), 0);

    args.flags = CKF_OS_LOCKING_OK;
    rv = f->C_Initialize(&args);
    REQUIRE(rv == CKR_OK);
    CHECK_EQ(n_calls("C_Initialize"), 1);
    REQUIRE(present_slots(&found) >= 1 && found);
    REQUIRE(open_tok(main_tok));
}

static void check_passthrough(tok *t)
{
    snap e = at("C_Encrypt"), d = at("C_Decrypt");
    CK_INFO info;

    t_section("no control file: everything is forwarded");
    CHECK_EQ(roundtrip(t), CKR_OK);
    CHECK_EQ(sign(t), CKR_OK);
    CHECK_EQ(f->C_GetInfo(&info), CKR_OK);
    CHECK(memcmp(info.manufacturerID, "SoftHSM", 7) == 0);
    CHECK_COUNTS(e, "C_Encrypt", 1, 0);
    CHECK_COUNTS(d, "C_Decrypt", 1, 0);

    RULES("# only a comment\n\n   \n");
    CHECK_EQ(roundtrip(t), CKR_OK);
    RULES(NULL);
}

static void check_nth(tok *t)
{
    snap e = at("C_Encrypt"), ei = at("C_EncryptInit"), gi;
    CK_RV r[4];
    CK_INFO info;

    t_section("fail C_Encrypt nth=2");
    RULES("fail C_Encrypt nth=2 rv=CKR_DEVICE_ERROR\n");
    for (int i = 0; i < 4; i++)
        r[i] = enc(t);
    CHECK_EQ(r[0], CKR_OK);
    CHECK_EQ(r[1], CKR_DEVICE_ERROR);
    /* The real operation was ended: no CKR_OPERATION_ACTIVE now. */
    CHECK_EQ(r[2], CKR_OK);
    CHECK_EQ(r[3], CKR_OK);
    CHECK_COUNTS(e, "C_Encrypt", 4, 1);
    CHECK_COUNTS(ei, "C_EncryptInit", 4, 0);

    t_section("fail * nth=3, hex rv, comments, C_Sign and C_Decrypt");
    RULES("# any function\nfail * nth=3 rv=CKR_FUNCTION_FAILED # third\n");
    gi = at("C_GetInfo");
    for (int i = 0; i < 4; i++)
        r[i] = f->C_GetInfo(&info);
    CHECK_EQ(r[0], CKR_OK);
    CHECK_EQ(r[1], CKR_OK);
    CHECK_EQ(r[2], CKR_FUNCTION_FAILED);
    CHECK_EQ(r[3], CKR_OK);
    CHECK_COUNTS(gi, "C_GetInfo", 4, 1);

    RULES("fail C_Encrypt nth=1 rv=0x30\n"
          "fail C_Sign nth=1 rv=CKR_DEVICE_MEMORY\n"
          "fail C_Decrypt nth=1 rv=CKR_SESSION_CLOSED\n");
    CHECK_EQ(enc(t), CKR_DEVICE_ERROR);
    CHECK_EQ(enc(t), CKR_OK);
    CHECK_EQ(sign(t), CKR_DEVICE_MEMORY);
    CHECK_EQ(sign(t), CKR_OK);
    CHECK_EQ(roundtrip(t), CKR_SESSION_CLOSED);
    CHECK_EQ(roundtrip(t), CKR_OK);
    RULES(NULL);
}

static void check_every(tok *t)
{
    snap e = at("C_Encrypt");

    t_section("fail C_Encrypt every, then the rule removed");
    RULES("fail C_Encrypt every rv=CKR_GENERAL_ERROR\n");
    for (int i = 0; i < 3; i++)
        CHECK_EQ(enc(t), CKR_GENERAL_ERROR);
    CHECK_EQ(sign(t), CKR_OK);
    RULES(NULL);
    CHECK_EQ(enc(t), CKR_OK);
    CHECK_COUNTS(e, "C_Encrypt", 4, 3);

    /*
     * In place, same size, right after the module read it: on a kernel with
     * coarse file timestamps the stat() key stays the same, and only the
     * module's text comparison of a recently changed file sees the change.
     */
    t_section("fail C_Encrypt every, rewritten in place");
    REQUIRE(rules_in_place("fail C_Encrypt every rv=0x30\n"));
    CHECK_EQ(enc(t), CKR_DEVICE_ERROR);
    REQUIRE(rules_in_place("fail C_Encrypt every rv=0x31\n"));
    CHECK_EQ(enc(t), CKR_DEVICE_MEMORY);
    REQUIRE(rules_in_place("fail C_Encrypt every rv=0x32\n"));
    CHECK_EQ(enc(t), CKR_DEVICE_REMOVED);
    RULES(NULL);

    t_section("fail C_Encrypt every max=2");
    RULES("fail C_Encrypt every max=2 rv=CKR_HOST_MEMORY\n");
    CHECK_EQ(enc(t), CKR_HOST_MEMORY);
    CHECK_EQ(enc(t), CKR_HOST_MEMORY);
    CHECK_EQ(enc(t), CKR_OK);
    CHECK_EQ(enc(t), CKR_OK);
    RULES(NULL);
}

static void check_for_ms(tok *t)
{
    int64_t t0;
    CK_RV r;

    t_section("fail C_Encrypt every for_ms=200 ends by itself");
    RULES("fail C_Encrypt every for_ms=200 rv=CKR_DEVICE_MEMORY\n");
    t0 = mono_ms();
    r = enc(t); /* loads the rule set: the window starts here */
    if (mono_ms() - t0 < 150)
        CHECK_EQ(r, CKR_DEVICE_MEMORY);
    else
        fprintf(stderr, "  (slow machine: first call outside the window)\n");
    sleep_ms(300 - (long)(mono_ms() - t0));
    CHECK_EQ(enc(t), CKR_OK);
    CHECK_EQ(enc(t), CKR_OK);
    RULES(NULL);
}

static void check_delay(tok *t)
{
    int64_t t0, took;
    CK_RV rv;

    t_section("delay C_SignInit ms=50");
    t0 = mono_ms();
    rv = sign(t);
    took = mono_ms() - t0;
    CHECK_EQ(rv, CKR_OK);
    CHECKF(took < 50, "an undelayed C_SignInit + C_Sign took %lld ms",
           (long long)took);

    RULES("delay C_SignInit ms=50\n");
    t0 = mono_ms();
    rv = sign(t);
    took = mono_ms() - t0;
    CHECK_EQ(rv, CKR_OK);
    CHECKF(took >= 50, "delayed C_SignInit + C_Sign took %lld ms",
           (long long)took);
    t0 = mono_ms();
    rv = enc(t);
    took = mono_ms() - t0;
    CHECK_EQ(rv, CKR_OK);
    CHECKF(took < 50, "C_EncryptInit + C_Encrypt took %lld ms (not delayed)",
           (long long)took);

    /* Two delays add up; a delay applies to failed calls too. */
    RULES("delay C_SignInit ms=30\ndelay * ms=30\n"
          "fail C_SignInit every rv=CKR_DEVICE_ERROR\n");
    t0 = mono_ms();
    rv = sign(t);
    took = mono_ms() - t0;
    CHECK_EQ(rv, CKR_DEVICE_ERROR);
    CHECKF(took >= 60, "two delays took %lld ms", (long long)took);
    RULES(NULL);
}

static void check_removed(tok *t)
{
    snap ti, os, cs = at("C_CloseSession");
    CK_SESSION_HANDLE s2, s4;
    CK_SLOT_INFO si;
    CK_TOKEN_INFO info;
    CK_ULONG n = 0;
    tok t3;
    int found;

    t_section("removed");
    REQUIRE(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s2) ==
            CKR_OK);
    CHECK_EQ(session_info(s2), CKR_OK);
    ti = at("C_GetTokenInfo");
    os = at("C_OpenSession");
    RULES("removed\n");
    CHECK_EQ(present_slots(&found), 0);
    CHECK(!found);
    CHECK_EQ(f->C_GetSlotList(CK_FALSE, NULL, &n), CKR_OK);
    CHECK(n >= 1);
    CHECK_EQ(f->C_GetSlotInfo(slot, &si), CKR_OK);
    CHECK(!(si.flags & CKF_TOKEN_PRESENT));
    CHECK_EQ(f->C_GetTokenInfo(slot, &info), CKR_TOKEN_NOT_PRESENT);
    CHECK_EQ(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &s4),
             CKR_TOKEN_NOT_PRESENT);
    CHECK_EQ(enc(t), CKR_DEVICE_REMOVED);
    CHECK_EQ(sign(t), CKR_DEVICE_REMOVED);
    CHECK_EQ(session_info(s2), CKR_DEVICE_REMOVED);
    CHECK_COUNTS(ti, "C_GetTokenInfo", 1, 1);
    CHECK_COUNTS(os, "C_OpenSession", 1, 1);

    t_section("the token back: new sessions work, old ones stay invalid");
    RULES(NULL);
    CHECK(present_slots(&found) >= 1); /* SoftHSM also has an empty slot */
    CHECK(found);
    CHECK_EQ(f->C_GetSlotInfo(slot, &si), CKR_OK);
    CHECK(si.flags & CKF_TOKEN_PRESENT);
    CHECK_EQ(session_info(s2), CKR_SESSION_HANDLE_INVALID);
    CHECK_EQ(enc(t), CKR_SESSION_HANDLE_INVALID);
    REQUIRE(open_tok(&t3));
    CHECK_EQ(roundtrip(&t3), CKR_OK);
    CHECK_EQ(session_info(t3.s), CKR_OK);
    /* The dead session is still open in SoftHSM (its key lives) until it
     * is closed; closing it closes the real one (the key goes). */
    CHECK(object_alive(t3.s, t->aes));
    CHECK_EQ(f->C_CloseSession(t->s), CKR_SESSION_HANDLE_INVALID);
    CHECK(!object_alive(t3.s, t->aes));
    CHECK_EQ(f->C_CloseSession(s2), CKR_SESSION_HANDLE_INVALID);
    /* Forgotten: a second close goes to SoftHSM, which no longer knows it
     * either (and is not counted as a failure). */
    CHECK_EQ(f->C_CloseSession(s2), CKR_SESSION_HANDLE_INVALID);
    CHECK_COUNTS(cs, "C_CloseSession", 3, 2);
    CHECK_EQ(roundtrip(&t3), CKR_OK);
    *t = t3;
}

static void check_invalidate(tok *t)
{
    CK_SESSION_HANDLE b0;
    tok nt;

    t_section("invalidate-sessions");
    REQUIRE(f->C_OpenSession(slot, CKF_SERIAL_SESSION, NULL, NULL, &b0) ==
            CKR_OK);
    RULES("invalidate-sessions\n");
    CHECK_EQ(session_info(b0), CKR_SESSION_HANDLE_INVALID);
    CHECK_EQ(enc(t), CKR_SESSION_HANDLE_INVALID);
    CHECK_EQ(f->C_Logout(t->s), CKR_SESSION_HANDLE_INVALID);
    REQUIRE(open_tok(&nt));
    CHECK_EQ(roundtrip(&nt), CKR_OK);
    CHECK_EQ(sign(&nt), CKR_OK);

    t_section("invalidate-sessions removed: the dead stay dead");
    RULES(NULL);
    CHECK_EQ(session_info(b0), CKR_SESSION_HANDLE_INVALID);
    CHECK_EQ(enc(t), CKR_SESSION_HANDLE_INVALID);
    CHECK_EQ(roundtrip(&nt), CKR_OK);
    CHECK(object_alive(nt.s, t->aes));
    CHECK_EQ(f->C_CloseSession(t->s), CKR_SESSION_HANDLE_INVALID);
    CHECK(!object_alive(nt.s, t->aes));
    CHECK_EQ(f->C_CloseSession(b0), CKR_SESSION_HANDLE_INVALID);
    CHECK_EQ(session_info(nt.s), CKR_OK);
    *t = nt;
}

static void check_hide_mech(tok *t)
{
    CK_MECHANISM_TYPE list[256];
    CK_MECHANISM_INFO mi;
    CK_MECHANISM cbc = {CKM_AES_CBC, iv, sizeof(iv)};
    CK_BYTE out[64];
    CK_ULONG outl = sizeof(out), n;
    long n0, n1;

    t_section("hide-mech CKM_AES_CBC_PAD");
    n0 = mechanisms(list);
    CHECK(n0 > 2);
    CHECK(has_mech(list, n0, CKM_AES_CBC_PAD));
    CHECK(has_mech(list, n0, CKM_SHA256_HMAC));

    RULES("hide-mech CKM_AES_CBC_PAD\n");
    n = 0;
    CHECK_EQ(f->C_GetMechanismList(slot, NULL, &n), CKR_OK);
    CHECK_EQ(n, n0 - 1);
    n1 = mechanisms(list);
    CHECK_EQ(n1, n0 - 1);
    CHECK(!has_mech(list, n1, CKM_AES_CBC_PAD));
    CHECK(has_mech(list, n1, CKM_AES_CBC));
    n = (CK_ULONG)n1 - 1;
    CHECK_EQ(f->C_GetMechanismList(slot, list, &n), CKR_BUFFER_TOO_SMALL);
    CHECK_EQ(n, n1);
    CHECK_EQ(f->C_GetMechanismInfo(slot, CKM_AES_CBC_PAD, &mi),
             CKR_MECHANISM_INVALID);
    CHECK_EQ(f->C_GetMechanismInfo(slot, CKM_AES_CBC, &mi), CKR_OK);
    CHECK_EQ(enc(t), CKR_MECHANISM_INVALID);
    CHECK_EQ(f->C_EncryptInit(t->s, &cbc, t->aes), CKR_OK);
    CHECK_EQ(f->C_Encrypt(t->s, plain, 32, out, &outl), CKR_OK);
    CHECK_EQ(sign(t), CKR_OK);

    t_section("hide-mech by number, two mechanisms");
    RULES("hide-mech 0x1085\nhide-mech CKM_SHA256_HMAC\n");
    CHECK_EQ(mechanisms(list), n0 - 2);
    CHECK_EQ(enc(t), CKR_MECHANISM_INVALID);
    CHECK_EQ(sign(t), CKR_MECHANISM_INVALID);

    RULES(NULL);
    CHECK_EQ(mechanisms(list), n0);
    CHECK(has_mech(list, n0, CKM_AES_CBC_PAD));
    CHECK_EQ(f->C_GetMechanismInfo(slot, CKM_AES_CBC_PAD, &mi), CKR_OK);
    CHECK_EQ(enc(t), CKR_OK);
    CHECK_EQ(sign(t), CKR_OK);
}

/* 40 C_GenerateRandom calls: bit i set when call i failed (with rv). */
static uint64_t random_pattern(tok *t, CK_RV rv, int *fails, int *other)
{
    uint64_t bits = 0;
    CK_BYTE b[8];

    *fails = *other = 0;
    for (int i = 0; i < 40; i++) {
        CK_RV r = f->C_GenerateRandom(t->s, b, sizeof(b));

        if (r == rv) {
            bits |= (uint64_t)1 << i;
            (*fails)++;
        } else if (r != CKR_OK) {
            (*other)++;
        }
    }
    return bits;
}

static void check_random(tok *t)
{
    static const char r42[] =
        "fail C_GenerateRandom random=0.5 rv=CKR_FUNCTION_FAILED max=5 "
        "seed=42\n";
    uint64_t p1, p2, p3;
    int k, other, total = 0;
    CK_BYTE b[8];

    t_section("fail random=0.5 max=5 seed=42: deterministic and bounded");
    RULES(r42);
    p1 = random_pattern(t, CKR_FUNCTION_FAILED, &k, &other);
    CHECK_EQ(k, 5);
    CHECK_EQ(other, 0);
    CHECKF(p1 != 0x1f, "the 5 failures are not simply the first 5 calls");
    /* The same rules again (a new file: counters start over). */
    RULES(r42);
    p2 = random_pattern(t, CKR_FUNCTION_FAILED, &k, &other);
    CHECK_EQ(k, 5);
    CHECKF(p2 == p1, "%#llx != %#llx", (unsigned long long)p2,
           (unsigned long long)p1);
    RULES("fail C_GenerateRandom random=0.5 rv=CKR_FUNCTION_FAILED max=5 "
          "seed=43\n");
    p3 = random_pattern(t, CKR_FUNCTION_FAILED, &k, &other);
    CHECK_EQ(k, 5);
    CHECKF(p3 != p1, "seed 43 fails the same calls as seed 42");

    t_section("fail random=0, random=1 max=3, random=0.25 unbounded");
    RULES("fail C_GenerateRandom random=0 rv=CKR_FUNCTION_FAILED\n");
    random_pattern(t, CKR_FUNCTION_FAILED, &k, &other);
    CHECK_EQ(k + other, 0);
    RULES("fail C_GenerateRandom random=1 rv=CKR_DEVICE_ERROR max=3\n");
    CHECK_EQ(random_pattern(t, CKR_DEVICE_ERROR, &k, &other), 0x7);
    RULES("fail C_GenerateRandom random=0.25 rv=CKR_DEVICE_ERROR seed=7\n");
    for (int i = 0; i < 400; i++)
        total += f->C_GenerateRandom(t->s, b, sizeof(b)) == CKR_DEVICE_ERROR;
    CHECKF(total > 50 && total < 150, "%d of 400 failed at p=0.25", total);
    RULES(NULL);
}

/* Redirects stderr into err_file around the calls of a check. */
static int saved_stderr = -1;

static void capture_begin(void)
{
    int fd;

    fflush(stderr);
    saved_stderr = dup(2);
    fd = open(err_file, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (saved_stderr < 0 || fd < 0) {
        fprintf(stderr, "cannot capture stderr: %s\n", strerror(errno));
        exit(1);
    }
    dup2(fd, 2);
    close(fd);
}

static void capture_end(char *buf, size_t len)
{
    FILE *fp;
    size_t n = 0;

    fflush(stderr);
    dup2(saved_stderr, 2);
    close(saved_stderr);
    buf[0] = '\0';
    if ((fp = fopen(err_file, "r")) != NULL) {
        n = fread(buf, 1, len - 1, fp);
        fclose(fp);
    }
    buf[n] = '\0';
}

static void check_malformed(tok *t)
{
    static const struct {
        const char *text;
        unsigned line;
    } bad[] = {
        {"fail C_Encrypt every rv=CKR_DEVICE_ERROR\n"
         "fail C_Encrypt nth=abc rv=CKR_DEVICE_ERROR\n",
         2},
        {"# comment\nfail C_Nope every rv=CKR_DEVICE_ERROR\n", 2},
        {"fail C_Encrypt every rv=CKR_NO_SUCH_THING\n", 1},
        {"fail C_Encrypt random=1.5 rv=CKR_DEVICE_ERROR\n", 1},
        {"fail C_Encrypt nth=0 rv=CKR_DEVICE_ERROR\n", 1},
        {"fail C_Encrypt every nth=2 rv=CKR_DEVICE_ERROR\n", 1},
        {"fail C_Encrypt every\n", 1},
        {"fail C_Encrypt every rv=CKR_DEVICE_ERROR seed=1\n", 1},
        {"fail C_Encrypt every rv=CKR_DEVICE_ERROR\nexplode\n", 2},
        {"removed now\n", 1},
        {"fail C_Encrypt every rv=CKR_DEVICE_ERROR\nhide-mech CKM_NOPE\n", 2},
        {"delay C_Encrypt\n", 1},
        {"delay C_Encrypt ms=-5\n", 1},
        {"fail C_Encrypt every rv=0x\n", 1},
        {"fail\n", 1},
        {"\n\n\x01\x02\xff fail\n", 3},
    };
    snap e = at("C_Encrypt");
    char out[2048], want[520];

    t_section("malformed control files inject nothing and say so once");
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        int lines = 0;
        CK_RV r1, r2;

        capture_begin();
        if (!rules(bad[i].text))
            exit(1);
        r1 = enc(t);
        r2 = enc(t);
        capture_end(out, sizeof(out));
        for (char *p = out; *p != '\0'; p++)
            lines += *p == '\n';
        snprintf(want, sizeof(want), "%s:%u: ", control, bad[i].line);
        CHECKF(r1 == CKR_OK && r2 == CKR_OK, "case %zu: 0x%lx 0x%lx", i, r1,
               r2);
        CHECKF(lines == 1, "case %zu: %d lines: %s", i, lines, out);
        CHECKF(strstr(out, want) != NULL, "case %zu: no '%s' in: %s", i, want,
               out);
    }
    CHECK_COUNTS(e, "C_Encrypt", 2 * sizeof(bad) / sizeof(bad[0]), 0);
    /* A good file after a bad one works again. */
    RULES("fail C_Encrypt every rv=CKR_DEVICE_ERROR\n");
    CHECK_EQ(enc(t), CKR_DEVICE_ERROR);
    RULES(NULL);
    CHECK_EQ(enc(t), CKR_OK);
}

/* ---- threads ------------------------------------------------------------- */

typedef struct worker {
    pthread_t th;
    tok t;
    int *stop; /* atomic */
    unsigned long encs, ok, errors, other;
    CK_RV first_other;
} worker;

static void *work(void *arg)
{
    worker *w = arg;

    while (!__atomic_load_n(w->stop, __ATOMIC_ACQUIRE)) {
        CK_MECHANISM m = {CKM_AES_CBC_PAD, iv, sizeof(iv)};
        CK_BYTE out[128];
        CK_ULONG outl = sizeof(out);
        CK_RV rv = f->C_EncryptInit(w->t.s, &m, w->t.aes);

        if (rv == CKR_OK) {
            w->encs++;
            rv = f->C_Encrypt(w->t.s, plain, sizeof(plain), out, &outl);
        }
        if (rv == CKR_OK) {
            w->ok++;
        } else if (rv == CKR_DEVICE_ERROR) {
            w->errors++;
        } else {
            if (w->other++ == 0)
                w->first_other = rv;
        }
    }
    return NULL;
}

static void check_threads(void)
{
    enum { NW = 4 };
    worker w[NW];
    int stop = 0, started = 0;
    unsigned long encs = 0, ok = 0, errors = 0, other = 0;
    snap e = at("C_Encrypt");

    t_section("%d threads while the rules change", NW);
    memset(w, 0, sizeof(w));
    for (int i = 0; i < NW; i++) {
        w[i].stop = &stop;
        if (!open_tok(&w[i].t))
            break;
        if (pthread_create(&w[i].th, NULL, work, &w[i]) != 0)
            break;
        started++;
    }
    CHECK_EQ(started, NW);
    sleep_ms(40);
    RULES("fail C_Encrypt random=0.3 rv=CKR_DEVICE_ERROR seed=1\n");
    sleep_ms(80);
    RULES("fail C_Encrypt every rv=CKR_DEVICE_ERROR max=10\n"
          "delay C_EncryptInit ms=1\n");
    sleep_ms(80);
    RULES(NULL);
    sleep_ms(40);
    __atomic_store_n(&stop, 1, __ATOMIC_RELEASE);
    for (int i = 0; i < started; i++) {
        pthread_join(w[i].th, NULL);
        encs += w[i].encs;
        ok += w[i].ok;
        errors += w[i].errors;
        other += w[i].other;
        CHECKF(w[i].other == 0, "thread %d: %lu other errors, first 0x%lx", i,
               w[i].other, w[i].first_other);
        CHECK_EQ(enc(&w[i].t), CKR_OK);
    }
    fprintf(stderr, "  %lu encryptions, %lu injected errors\n", encs, errors);
    CHECK(ok > 0);
    CHECK(errors > 10);
    CHECK_EQ(ok + errors + other, encs);
    /* Counters: the threads' calls plus the checks' one per thread. */
    CHECK_COUNTS(e, "C_Encrypt", encs + started, errors);
}

/* ---- counters ------------------------------------------------------------ */

static int child_calls(void *arg)
{
    CK_FUNCTION_LIST_PTR l;

    (void)arg;
    for (int i = 0; i < 7; i++)
        if (getfl(&l) != CKR_OK)
            return 0;
    return 1;
}

static void check_counts(void)
{
    char *argv[] = {(char *)faultctl, "counts", counts_file, NULL, NULL};
    static char out[16384];
    char name[64], want[128];
    unsigned long long c, fl, sum_c = 0, sum_f = 0;
    int lines = 0, bad = 0, pos, rc;
    const char *p;

    t_section("counters: exported functions and the shared file");
    CHECK(t_in_child("7 calls in a child", child_calls, NULL));
    rc = t_run(argv, out, sizeof(out));
    CHECK_EQ(rc, 0);
    for (p = out; sscanf(p, "%63s %llu %llu\n%n", name, &c, &fl, &pos) == 3;
         p += pos) {
        unsigned long long expect =
            n_calls(name) + (strcmp(name, "C_GetFunctionList") == 0 ? 7 : 0);

        lines++;
        sum_c += c;
        sum_f += fl;
        if (c != expect || fl != n_fails(name)) {
            bad++;
            fprintf(stderr, "  %s: file %llu %llu, process %llu %llu\n", name,
                    c, fl, expect, n_fails(name));
        }
    }
    CHECK_EQ(*p, '\0');
    CHECK_EQ(bad, 0);
    CHECK(lines > 20);
    CHECK_EQ(sum_c, n_calls(NULL) + 7);
    CHECK_EQ(sum_f, n_fails(NULL));
    CHECK(n_fails("*") > 50);

    argv[3] = "C_Encrypt";
    CHECK_EQ(t_run(argv, out, sizeof(out)), 0);
    snprintf(want, sizeof(want), "C_Encrypt %llu %llu\n", n_calls("C_Encrypt"),
             n_fails("C_Encrypt"));
    CHECKF(strcmp(out, want) == 0, "'%s' != '%s'", out, want);
    argv[3] = "C_CancelFunction"; /* never called: still one line */
    CHECK_EQ(t_run(argv, out, sizeof(out)), 0);
    CHECK(strcmp(out, "C_CancelFunction 0 0\n") == 0);
    argv[3] = "C_NoSuchFunction";
    CHECK_EQ(t_run(argv, out, sizeof(out)), 2);
    argv[2] = control; /* not a counters file (absent) */
    argv[3] = NULL;
    CHECK_EQ(t_run(argv, out, sizeof(out)), 1);
    argv[2] = err_file; /* a file, but not a counters file */
    CHECK_EQ(t_run(argv, out, sizeof(out)), 1);
}

int main(void)
{
    const char *v;
    tok t;
    int64_t t0 = mono_ms();

    REQUIRE(t_env_init(&env, "faultmod"));
    faultmod = (v = getenv("P11T_FAULTMOD")) != NULL ? v : P11T_FAULTMOD;
    faultctl = (v = getenv("P11T_FAULTCTL")) != NULL ? v : P11T_FAULTCTL;
    snprintf(control, sizeof(control), "%s/faults", env.dir);
    snprintf(counts_file, sizeof(counts_file), "%s/counts", env.dir);
    snprintf(err_file, sizeof(err_file), "%s/stderr", env.dir);
    setenv("P11T_FAULT_MODULE", env.pkcs11, 1);
    setenv("P11T_FAULT_CONTROL", control, 1);
    setenv("P11T_FAULT_COUNTS", counts_file, 1);

    check_setup(&t);
    check_passthrough(&t);
    check_nth(&t);
    check_every(&t);
    check_for_ms(&t);
    check_delay(&t);
    check_removed(&t);
    check_invalidate(&t);
    check_hide_mech(&t);
    check_random(&t);
    check_malformed(&t);
    check_threads();
    check_counts();

    fprintf(stderr, "took %lld ms\n", (long long)(mono_ms() - t0));
    /* No C_Finalize: SoftHSM is never finalised at exit (docs/design.md,
     * "Never C_Finalize at exit"). */
    t_env_cleanup(&env);
    return t_finish("test_faultmod");
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_shared_module.c - p11ticket shares its PKCS#11 module with another
 * user in the process and never finalises it.
 *
 * A full-HSM server keeps its certificate key in the same token through
 * libp11's engine, which initialises the module itself when the
 * configuration loads.  This test plays that other user: it initialises
 * SoftHSM directly before p11ticket's first token operation and checks,
 * after each thing that used to finalise the library (a token that is not
 * found, which restarts the library when p11ticket owns it; a forked child,
 * which starts the library over when p11ticket owns it), that its own view
 * of the library is still initialised and p11ticket still works.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/params.h>
#include <openssl/provider.h>

#include <p11-kit/pkcs11.h>

#include "p11ticket.h"
#include "support.h"

static CK_FUNCTION_LIST_PTR other; /* the other user's view */
static CK_SESSION_HANDLE other_session;
static CK_OBJECT_HANDLE other_object;
static char other_label[] = "the other user's session object";

/*
 * 1 if the other user's session object is still there: a C_Finalize, even
 * one followed by C_Initialize, destroys every session and session object.
 * (Session handles alone do not tell: a restarted SoftHSM numbers new
 * sessions from 1 again.)
 */
static int other_alive(void)
{
    char label[sizeof(other_label)] = "";
    CK_ATTRIBUTE a = {CKA_LABEL, label, sizeof(label) - 1};

    return other->C_GetAttributeValue(other_session, other_object, &a, 1) ==
               CKR_OK &&
           a.ulValueLen == sizeof(other_label) - 1 &&
           memcmp(label, other_label, a.ulValueLen) == 0;
}

/* The other user's session, with a session object, on the token labelled
 * "tickets". */
static int other_open_session(void)
{
    CK_SLOT_ID slots[16];
    CK_ULONG n = 16;
    CK_TOKEN_INFO ti;
    CK_OBJECT_CLASS cls = CKO_DATA;
    CK_BBOOL no = CK_FALSE;
    CK_ATTRIBUTE t[] = {{CKA_CLASS, &cls, sizeof(cls)},
                        {CKA_TOKEN, &no, sizeof(no)},
                        {CKA_PRIVATE, &no, sizeof(no)},
                        {CKA_LABEL, other_label, sizeof(other_label) - 1}};

    if (other->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
        return 0;
    for (CK_ULONG i = 0; i < n; i++) {
        if (other->C_GetTokenInfo(slots[i], &ti) != CKR_OK ||
            memcmp(ti.label, "tickets ", 8) != 0)
            continue;
        return other->C_OpenSession(slots[i], CKF_SERIAL_SESSION, NULL, NULL,
                                    &other_session) == CKR_OK &&
               other->C_CreateObject(other_session, t, 4, &other_object) ==
                   CKR_OK &&
               other_alive();
    }
    return 0;
}

static unsigned char ref_tag[32]; /* the first tag, from a working token */

/*
 * One token HMAC under key `name`, through the provider, into tag.  A token
 * failure still yields a tag (a random one, so that libssl falls back to a
 * full handshake), so success means "equals the reference tag".
 */
static int token_hmac_tag(OSSL_LIB_CTX *libctx, const uint8_t name[16],
                          unsigned char tag[32])
{
    EVP_MAC *mac = EVP_MAC_fetch(libctx, "HMAC", "provider=p11ticket");
    int ok = mac != NULL && t_token_hmac(mac, name, "ticket", tag);

    EVP_MAC_free(mac);
    return ok;
}

static int token_hmac(OSSL_LIB_CTX *libctx, const uint8_t name[16])
{
    unsigned char tag[32];

    return token_hmac_tag(libctx, name, tag) &&
           memcmp(tag, ref_tag, sizeof(tag)) == 0;
}

struct child_arg {
    OSSL_LIB_CTX *libctx;
    const uint8_t *name;
};

/* t_in_child() convention: 1 = passed. */
static int child_uses_token(void *p)
{
    struct child_arg *a = p;
    int ok = token_hmac(a->libctx, a->name);

    if (!ok)
        fprintf(stderr, "child: token HMAC failed\n");
    if (!other_alive()) {
        fprintf(stderr, "child: the other user's library was finalised\n");
        ok = 0;
    }
    return ok;
}

int main(void)
{
    t_env env;
    char cnf[512], missing[512];
    uint8_t name[16];
    OSSL_LIB_CTX *libctx = NULL, *lost = NULL;
    CK_C_GetFunctionList getfl;
    CK_C_INITIALIZE_ARGS args = {0};
    void *dl;
    struct child_arg ca;
    t_cnf opts = {0};

    if (!t_env_init(&env, "shared_module"))
        return 1;
    REQUIRE(t_key_create(&env, NULL, 0, INT64_MAX, INT64_MAX, name));
    REQUIRE(t_write_cnf(&env, "openssl.cnf", &opts, cnf, sizeof(cnf)));
    opts.token_uri = "pkcs11:token=not-there";
    REQUIRE(t_write_cnf(&env, "missing.cnf", &opts, missing,
                          sizeof(missing)));

    t_section("another user initialises the module first");
    dl = dlopen(env.pkcs11, RTLD_NOW | RTLD_LOCAL);
    REQUIRE(dl != NULL);
    getfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
    REQUIRE(getfl != NULL && getfl(&other) == CKR_OK);
    args.flags = CKF_OS_LOCKING_OK;
    REQUIRE(other->C_Initialize(&args) == CKR_OK);
    REQUIRE(other_open_session());

    t_section("a token that is not found does not restart a shared library");
    lost = t_libctx_load(missing);
    REQUIRE(lost != NULL);
    /* Slot discovery retries, and restarts the library between tries when
     * p11ticket is its only user in the process; here another user has it. */
    {
        unsigned char tag[32];

        (void)token_hmac_tag(lost, name, tag);
    }
    CHECKF(other_alive(), "the library was restarted by the slot retries");

    t_section("p11ticket works on the shared module");
    libctx = t_libctx_load(cnf);
    REQUIRE(libctx != NULL);
    REQUIRE(token_hmac_tag(libctx, name, ref_tag));
    CHECKF(token_hmac(libctx, name), "token HMAC on the shared module "
           "(the same tag twice)");
    CHECKF(!token_hmac(lost, name), "a missing token answered");
    CHECKF(other_alive(), "the library was finalised by the first use");

    t_section("a forked child does not finalise a shared library");
    ca.libctx = libctx;
    ca.name = name;
    CHECKF(t_in_child("token HMAC in a child", child_uses_token, &ca),
           "the child failed");
    CHECKF(other_alive(), "the parent's library is gone after the child");
    CHECKF(token_hmac(libctx, name), "token HMAC in the parent after fork");

    OSSL_LIB_CTX_free(lost);
    OSSL_LIB_CTX_free(libctx);
    /* No C_Finalize here either: SoftHSM crashes when finalised at exit
     * (docs/design.md, "Never C_Finalize at exit"). */
    t_env_cleanup(&env);
    return t_finish("test_shared_module");
}

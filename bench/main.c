/* SPDX-License-Identifier: Apache-2.0 */
/*
 * p11ticket-bench - how much a session ticket costs when its keys live in a
 * PKCS#11 token, next to the token's own floor and to OpenSSL's in-memory
 * tickets.  See docs/performance.md.
 *
 *   p11ticket-bench --config FILE [--section NAME] [--quick] [--seconds S]
 *   p11ticket-bench --config FILE [--ring N] --loop WAY N  (perf, callgrind)
 *
 * Sections, in order: seal/open per ticket (provider, bare PKCS#11, in
 * memory), server-side handshakes (p11ticket, the token's floor, built-in
 * tickets), one process against two, a ring of 100 generations against 2,
 * then a table of the performance targets (docs/performance.md, section 5).
 * Human-readable tables go to stdout as each section finishes; the last
 * line of stdout is one JSON object.  The exit status reports errors only
 * (1 error, 2 usage, 130 interrupted), never whether a target was met.
 */
#include <getopt.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>

#include "bench.h"
#include "p11ticket.h"

#define DEFAULT_SECONDS 10.0
#define QUICK_SECONDS 2.0
#define RING_SMALL 2
#define RING_BIG 100
#define BATCH 32

enum way_id { W_PROV_COPIES, W_PROV_TOKEN, W_FLOOR_SESSION, W_FLOOR_TOKEN,
              W_FLOOR_PUBLIC, W_INMEM, W_COUNT };

static const char *const way_names[W_COUNT] = {
    "provider, session-copies=yes", "provider, session-copies=no",
    "PKCS#11 floor, session objects", "PKCS#11 floor, token objects",
    "floor, public session keys *", "OpenSSL in memory"};
static const char *const way_keys[W_COUNT] = {"prov-copies", "prov-token",
                                              "floor-session", "floor-token",
                                              "floor-public", "inmem"};

/*
 * One phase of the ring test: the provider with the interleaved references,
 * the bare token (its own growth with the ring) and in-memory work (which
 * no token state touches: pure machine drift).
 */
enum { RING_SMALL_A, RING_BIG_B, RING_SMALL_C, RING_PHASES };

typedef struct ring_result {
    size_t gens;
    double prov_us, prov_mean_us, floor_us, mem_us; /* medians (mean) */
    double prov_vs_mem, floor_vs_mem, prov_vs_floor; /* paired per round */
    double cold_ms;                                  /* first ticket */
} ring_result;

typedef struct results {
    bench_sealopen way[W_COUNT];
    bench_tls_result tls[BENCH_HS_COUNT];
    bench_scale_result scale;
    ring_result ring[RING_PHASES]; /* small, big, small again */
    double ring_create_s, ring_destroy_s;
    double total_s;
    int floor_aes_ecb; /* the floor's AES: 1 CBC on CKM_AES_ECB, 0 CBC_PAD */
} results;

typedef struct options {
    const char *config;
    const char *section;
    double seconds;
    int quick;
    const char *loop_way;
    long loop_n;
    long loop_ring; /* --ring: generations on the token during --loop */
} options;

static void usage(FILE *fp)
{
    fputs("usage: p11ticket-bench --config FILE [--section NAME] [--quick] "
          "[--seconds S]\n"
          "       p11ticket-bench --config FILE [--section NAME] [--ring N] "
          "--loop WAY N\n"
          "\n"
          "Benchmarks p11ticket on the token that FILE's provider section "
          "names.\nIt adds its own key generations to the token and removes "
          "them again.\n\n"
          "  -c, --config FILE    openssl.cnf with the p11ticket provider "
          "section\n"
          "                       (default: $OPENSSL_CONF)\n"
          "  -s, --section NAME   provider entry in the providers section "
          "(default p11ticket)\n"
          "  -q, --quick          short run for CI (about 30 s)\n"
          "  -t, --seconds S      measuring time unit (default 10, quick 2); "
          "a run\n"
          "                       takes about 9*S plus provisioning\n"
          "  -l, --loop WAY N     only WAY, N times, for profiling: seal+open "
          "with\n"
          "                       prov-copies prov-token floor-session "
          "floor-token\n"
          "                       floor-public inmem\n"
          "                       (each also as WAY-cold: caches flushed "
          "before each pair),\n"
          "                       or server handshakes with "
          "KIND-p11, KIND-floor,\n"
          "                       KIND-floor-public, KIND-mem\n"
          "                       where KIND is tls13-resume, tls12-resume or "
          "tls13-full\n"
          "  -r, --ring N         with --loop: first fill the token up to N "
          "generations\n"
          "  -h, --help           this text\n",
          fp);
}

static int parse_options(int argc, char **argv, options *o)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"section", required_argument, NULL, 's'},
        {"quick", no_argument, NULL, 'q'},
        {"seconds", required_argument, NULL, 't'},
        {"loop", required_argument, NULL, 'l'},
        {"ring", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    char *end;
    int c;

    memset(o, 0, sizeof(*o));
    o->section = "p11ticket";
    while ((c = getopt_long(argc, argv, "c:s:qt:l:r:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'c':
            o->config = optarg;
            break;
        case 's':
            o->section = optarg;
            break;
        case 'q':
            o->quick = 1;
            break;
        case 't':
            o->seconds = strtod(optarg, &end);
            if (*end != '\0' || !(o->seconds > 0) || o->seconds > 600) {
                fprintf(stderr, "p11ticket-bench: --seconds: '%s' is not a "
                        "number of seconds between 0 and 600\n", optarg);
                return 0;
            }
            break;
        case 'l':
            o->loop_way = optarg;
            break;
        case 'r':
            o->loop_ring = strtol(optarg, &end, 10);
            if (*end != '\0' || o->loop_ring < 1 || o->loop_ring > 1000) {
                fprintf(stderr, "p11ticket-bench: --ring: '%s' is not a number "
                        "of generations between 1 and 1000\n", optarg);
                return 0;
            }
            break;
        case 'h':
            usage(stdout);
            exit(0);
        default:
            usage(stderr);
            return 0;
        }
    }
    if (o->loop_way != NULL) {
        if (optind >= argc || (o->loop_n = strtol(argv[optind], &end, 10)) <= 0 ||
            *end != '\0') {
            fprintf(stderr, "p11ticket-bench: --loop WAY N: N must be a "
                    "positive number of tickets\n");
            return 0;
        }
        optind++;
    }
    if (optind != argc || (o->loop_ring > 0 && o->loop_way == NULL)) {
        usage(stderr);
        return 0;
    }
    if (o->config == NULL)
        o->config = getenv("OPENSSL_CONF");
    if (o->config == NULL || *o->config == '\0') {
        fprintf(stderr, "p11ticket-bench: no configuration: use --config FILE "
                "or set OPENSSL_CONF\n");
        return 0;
    }
    if (o->seconds == 0)
        o->seconds = o->quick ? QUICK_SECONDS : DEFAULT_SECONDS;
    return 1;
}

/* ---- printing ---------------------------------------------------------------- */

static void print_machine(const bench_floor *fl)
{
    char model[128] = "unknown";
    FILE *fp = fopen("/proc/cpuinfo", "r");
    CK_INFO info;

    if (fp != NULL) {
        char line[256];

        while (fgets(line, sizeof(line), fp) != NULL)
            if (strncmp(line, "model name", 10) == 0) {
                char *v = strchr(line, ':');

                if (v != NULL) {
                    snprintf(model, sizeof(model), "%s", v + 2);
                    model[strcspn(model, "\n")] = '\0';
                }
                break;
            }
        fclose(fp);
    }
    printf("machine: %ld cores, %s\n", sysconf(_SC_NPROCESSORS_ONLN), model);
    printf("OpenSSL: %s\n", OpenSSL_version(OPENSSL_VERSION));
    if (fl->f != NULL && fl->f->C_GetInfo(&info) == CKR_OK)
        printf("PKCS#11: %.32s %.32s %u.%u\n", (const char *)info.manufacturerID,
               (const char *)info.libraryDescription,
               info.libraryVersion.major, info.libraryVersion.minor);
}

static void print_sealopen(const results *r)
{
    const bench_sealopen *fs = &r->way[W_FLOOR_SESSION];

    printf("\n== 1. Seal and open one ticket (200-byte session, 208-byte "
           "ciphertext, HMAC over 240 bytes)\n");
    printf("   medians over %zu interleaved rounds of %d tickets\n",
           r->way[0].rounds, BATCH);
    printf("%-32s %9s %9s %11s %11s %9s\n", "way", "seal us", "open us",
           "seal+open", "pairs/s", "vs floor");
    for (int i = 0; i < W_COUNT; i++) {
        const bench_sealopen *w = &r->way[i];
        const bench_sealopen *floor =
            i == W_PROV_TOKEN ? &r->way[W_FLOOR_TOKEN] : fs;

        printf("%-32s %9.2f %9.2f %11.2f %11.0f %9.3f\n", way_names[i],
               w->seal_us, w->open_us, w->pair_us, 1e6 / w->pair_us,
               bench_paired(w, floor));
    }
    printf("   (vs floor: median over rounds of the per-round ratio; provider "
           "with copies and\n    the others against the floor on session "
           "objects, provider without copies\n    against the floor on token "
           "objects)\n");
    printf("   * random keys with CKA_PRIVATE false: what the token costs when "
           "it need not\n     unwrap the key per operation.  A reference only: "
           "a copy of a private token\n     key cannot drop CKA_PRIVATE, so "
           "p11ticket cannot use such objects.\n");
}

static void print_tls(const results *r)
{
    printf("\n== 2. Server-side handshakes over memory BIOs (server's SSL "
           "calls only)\n");
    printf("%-24s %9s %9s %9s %7s %7s %7s %8s %8s %8s\n", "handshakes/s",
           "p11ticket", "floor", "in-mem", "ratio", "bound", "bound*",
           "p11 us", "floor us", "mem us");
    for (int k = 0; k < BENCH_HS_COUNT; k++) {
        const bench_tls_result *t = &r->tls[k];

        printf("%-24s %9.0f %9.0f %9.0f %7.3f %7.3f %7.3f %8.1f %8.1f %8.1f\n",
               bench_hs_name((enum bench_hs)k), t->hs_s[BENCH_V_P11],
               t->hs_s[BENCH_V_FLOOR], t->hs_s[BENCH_V_MEM], t->ratio,
               t->bound, t->bound_pub, t->us[BENCH_V_P11],
               t->us[BENCH_V_FLOOR], t->us[BENCH_V_MEM]);
    }
    printf("   ratio = p11ticket / in-memory; bound = floor / in-memory, where "
           "floor is\n   in-memory tickets plus the same bare PKCS#11 calls "
           "on the objects p11ticket\n   uses (the best a token design can "
           "do here); bound* = the same calls on public\n   session keys "
           "(see * above; not reachable); medians over %zu interleaved\n"
           "   rounds; new sessions per handshake (p11ticket / floor / "
           "floor* / in-memory):", r->tls[0].rounds);
    for (int k = 0; k < BENCH_HS_COUNT; k++)
        printf(" %.2f/%.2f/%.2f/%.2f", r->tls[k].tickets[BENCH_V_P11],
               r->tls[k].tickets[BENCH_V_FLOOR],
               r->tls[k].tickets[BENCH_V_FLOOR_PUB],
               r->tls[k].tickets[BENCH_V_MEM]);
    printf("\n");
}

static void print_scale(const results *r)
{
    printf("\n== 3. Scaling: seal+open pairs per second, 1 process against 2\n");
    printf("%-28s %12s %12s %8s\n", "", "1 process", "2 processes",
           "speedup");
    printf("%-28s %12.0f %12.0f %8.2f\n", "provider, shared token",
           r->scale.procs1_ops_s, r->scale.procs2_ops_s, r->scale.speedup);
    printf("%-28s %12.0f %12.0f %8.2f\n", "in memory (machine ref.)",
           r->scale.mem1_ops_s, r->scale.mem2_ops_s, r->scale.mem_speedup);
    printf("   (medians over %zu rounds of alternating segments)\n",
           r->scale.rounds);
}

static void print_ring(const results *r)
{
    static const char *const phase[RING_PHASES] = {"small", "big", "small"};
    const ring_result *a = &r->ring[RING_SMALL_A], *b = &r->ring[RING_BIG_B],
                      *c = &r->ring[RING_SMALL_C];

    printf("\n== 4. Ring size: seal+open pairs, fresh library context per "
           "phase\n");
    printf("%-6s %5s %10s %10s %10s %9s %9s %12s\n", "phase", "gens",
           "p11 us", "floor us", "inmem us", "p11/mem", "floor/mem",
           "1st ticket ms");
    for (int i = 0; i < RING_PHASES; i++) {
        const ring_result *p = &r->ring[i];

        printf("%-6s %5zu %10.2f %10.2f %10.2f %9.3f %9.3f %12.1f\n",
               phase[i], p->gens, p->prov_us, p->floor_us, p->mem_us,
               p->prov_vs_mem, p->floor_vs_mem, p->cold_ms);
    }
    printf("   big vs small (small = mean of both small phases), drift taken "
           "out with the\n   interleaved in-memory work: p11ticket %.3f, bare "
           "token %.3f; raw medians %.3f\n",
           b->prov_vs_mem / ((a->prov_vs_mem + c->prov_vs_mem) / 2),
           b->floor_vs_mem / ((a->floor_vs_mem + c->floor_vs_mem) / 2),
           b->prov_us / ((a->prov_us + c->prov_us) / 2));
    printf("   adding %zu generations took %.1f s, removing them %.1f s; 1st "
           "ticket: login, scan\n   and session copies of a fresh library "
           "context\n",
           b->gens - a->gens, r->ring_create_s, r->ring_destroy_s);
}

/*
 * Each target with what this run says is reachable at all: for the TLS
 * ratios the floor server's ratio, for seal/open the floor itself (1.00),
 * for the ring the bare token's own growth, for scaling the in-memory
 * work's speedup (the machine's).
 */
typedef struct target {
    const char *key;
    double value;
    int at_most; /* 1: value <= limit passes; 0: value >= limit */
    double limit;
    double reach;
    const char *reach_what;
} target;

/* Big phase against the mean of the two small phases, of one paired
 * ratio (offset into ring_result). */
static double ring_growth(const results *r, size_t off)
{
    const double *a = (const double *)((const char *)&r->ring[RING_SMALL_A] + off);
    const double *b = (const double *)((const char *)&r->ring[RING_BIG_B] + off);
    const double *c = (const double *)((const char *)&r->ring[RING_SMALL_C] + off);

    return *b / ((*a + *c) / 2);
}

static void targets_of(const results *r, target t[6])
{
    t[0] = (target){"seal_open_vs_floor",
                    bench_paired(&r->way[W_PROV_COPIES],
                                 &r->way[W_FLOOR_SESSION]),
                    1, 1.10, 1.0, "the floor itself"};
    t[1] = (target){"tls13_resume_ratio", r->tls[BENCH_TLS13_RESUME].ratio, 0,
                    0.85, r->tls[BENCH_TLS13_RESUME].bound, "floor server"};
    t[2] = (target){"tls12_resume_ratio", r->tls[BENCH_TLS12_RESUME].ratio, 0,
                    0.70, r->tls[BENCH_TLS12_RESUME].bound, "floor server"};
    t[3] = (target){"tls13_full_ratio", r->tls[BENCH_TLS13_FULL].ratio, 0,
                    0.88, r->tls[BENCH_TLS13_FULL].bound, "floor server"};
    t[4] = (target){"ring100_vs_ring2",
                    ring_growth(r, offsetof(ring_result, prov_vs_mem)), 1, 1.05,
                    ring_growth(r, offsetof(ring_result, floor_vs_mem)),
                    "bare token's own growth"};
    t[5] = (target){"procs2_speedup", r->scale.speedup, 0, 1.8,
                    r->scale.mem_speedup, "in-memory work"};
}

static void print_targets(const target t[6])
{
    printf("\n== Targets\n");
    printf("%-22s %8s %10s  %-6s %8s  %s\n", "key", "value", "target",
           "result", "compare", "(what this run allows)");
    for (int i = 0; i < 6; i++) {
        int pass = t[i].at_most ? t[i].value <= t[i].limit
                                : t[i].value >= t[i].limit;

        printf("%-22s %8.3f %4s %5.2f  %-6s %8.3f  %s\n", t[i].key,
               t[i].value, t[i].at_most ? "<=" : ">=", t[i].limit,
               isnan(t[i].value) ? "n/a" : pass ? "PASS" : "MISS", t[i].reach,
               t[i].reach_what);
    }
}

static void json_num(FILE *fp, int *first, const char *key, double v)
{
    fprintf(fp, "%s\"%s\":", *first ? "" : ",", key);
    *first = 0;
    if (isfinite(v))
        fprintf(fp, "%.6g", v);
    else
        fputs("null", fp);
}

static void print_json(const results *r, const target t[6], const options *o)
{
    static const char *const hs_keys[BENCH_HS_COUNT] = {"tls13_resume",
                                                        "tls12_resume",
                                                        "tls13_full"};
    char key[64];
    int first = 1;

    putchar('{');
    for (int i = 0; i < 6; i++)
        json_num(stdout, &first, t[i].key, t[i].value);
    json_num(stdout, &first, "seal_open_vs_floor_token",
             bench_paired(&r->way[W_PROV_TOKEN], &r->way[W_FLOOR_TOKEN]));
    json_num(stdout, &first, "prov_seal_us", r->way[W_PROV_COPIES].seal_us);
    json_num(stdout, &first, "prov_open_us", r->way[W_PROV_COPIES].open_us);
    json_num(stdout, &first, "prov_us", r->way[W_PROV_COPIES].pair_us);
    json_num(stdout, &first, "prov_nocopies_seal_us", r->way[W_PROV_TOKEN].seal_us);
    json_num(stdout, &first, "prov_nocopies_open_us", r->way[W_PROV_TOKEN].open_us);
    json_num(stdout, &first, "prov_nocopies_us", r->way[W_PROV_TOKEN].pair_us);
    json_num(stdout, &first, "floor_session_seal_us",
             r->way[W_FLOOR_SESSION].seal_us);
    json_num(stdout, &first, "floor_session_open_us",
             r->way[W_FLOOR_SESSION].open_us);
    json_num(stdout, &first, "floor_session_us", r->way[W_FLOOR_SESSION].pair_us);
    json_num(stdout, &first, "floor_token_seal_us", r->way[W_FLOOR_TOKEN].seal_us);
    json_num(stdout, &first, "floor_token_open_us", r->way[W_FLOOR_TOKEN].open_us);
    json_num(stdout, &first, "floor_token_us", r->way[W_FLOOR_TOKEN].pair_us);
    json_num(stdout, &first, "floor_public_us", r->way[W_FLOOR_PUBLIC].pair_us);
    json_num(stdout, &first, "inmem_seal_us", r->way[W_INMEM].seal_us);
    json_num(stdout, &first, "inmem_open_us", r->way[W_INMEM].open_us);
    json_num(stdout, &first, "inmem_us", r->way[W_INMEM].pair_us);
    for (int k = 0; k < BENCH_HS_COUNT; k++) {
        static const char *const v[BENCH_V_COUNT] = {"p11", "floor",
                                                     "floor_public", "mem"};

        snprintf(key, sizeof(key), "%s_bound", hs_keys[k]);
        json_num(stdout, &first, key, r->tls[k].bound);
        snprintf(key, sizeof(key), "%s_bound_public", hs_keys[k]);
        json_num(stdout, &first, key, r->tls[k].bound_pub);
        snprintf(key, sizeof(key), "%s_vs_floor", hs_keys[k]);
        json_num(stdout, &first, key, r->tls[k].vs_floor);
        for (int i = 0; i < BENCH_V_COUNT; i++) {
            snprintf(key, sizeof(key), "%s_%s_hs_s", hs_keys[k], v[i]);
            json_num(stdout, &first, key, r->tls[k].hs_s[i]);
            snprintf(key, sizeof(key), "%s_%s_server_us", hs_keys[k], v[i]);
            json_num(stdout, &first, key, r->tls[k].us[i]);
        }
    }
    json_num(stdout, &first, "procs1_ops_s", r->scale.procs1_ops_s);
    json_num(stdout, &first, "procs2_ops_s", r->scale.procs2_ops_s);
    json_num(stdout, &first, "inmem_procs2_speedup", r->scale.mem_speedup);
    json_num(stdout, &first, "ring2_us", r->ring[RING_SMALL_A].prov_us);
    json_num(stdout, &first, "ring2_again_us", r->ring[RING_SMALL_C].prov_us);
    json_num(stdout, &first, "ring100_us", r->ring[RING_BIG_B].prov_us);
    json_num(stdout, &first, "ring100_vs_ring2_raw",
             ring_growth(r, offsetof(ring_result, prov_us)));
    json_num(stdout, &first, "ring100_vs_ring2_token",
             ring_growth(r, offsetof(ring_result, floor_vs_mem)));
    json_num(stdout, &first, "ring100_vs_ring2_floor_normalized",
             ring_growth(r, offsetof(ring_result, prov_vs_floor)));
    json_num(stdout, &first, "ring_small_gens", (double)r->ring[RING_SMALL_A].gens);
    json_num(stdout, &first, "ring_big_gens", (double)r->ring[RING_BIG_B].gens);
    json_num(stdout, &first, "ring_create_s", r->ring_create_s);
    json_num(stdout, &first, "ring_destroy_s", r->ring_destroy_s);
    json_num(stdout, &first, "ring2_first_ticket_ms", r->ring[RING_SMALL_A].cold_ms);
    json_num(stdout, &first, "ring100_first_ticket_ms", r->ring[RING_BIG_B].cold_ms);
    json_num(stdout, &first, "floor_aes_ecb", r->floor_aes_ecb);
    json_num(stdout, &first, "seconds", o->seconds);
    json_num(stdout, &first, "quick", o->quick);
    json_num(stdout, &first, "cores", (double)sysconf(_SC_NPROCESSORS_ONLN));
    json_num(stdout, &first, "total_s", r->total_s);
    printf("}\n");
}

/* ---- the sections ------------------------------------------------------------ */

typedef struct bench {
    options opt;
    bench_setup setup;
    bench_prov prov_main, prov_alt; /* the file; session-copies flipped */
    bench_prov *copies, *token;     /* which of the two has copies on/off */
    bench_floor floor, floor_tok;   /* floor_tok: same session, token keys */
    bench_floor floor_pub;          /* same session, public session keys */
    bench_inmem inmem;
    bench_tls tls;
    results r;
    char err[512];
} bench;

static void section_title(const char *what, double seconds)
{
    fprintf(stderr, "p11ticket-bench: %s (%.0f s)...\n", what, seconds);
}

static int run_sealopen(bench *b)
{
    bench_way ways[W_COUNT];
    int check[W_COUNT] = {1, 1, 0, 0, 0, 0};

    bench_way_prov(&ways[W_PROV_COPIES], way_names[W_PROV_COPIES], b->copies);
    bench_way_prov(&ways[W_PROV_TOKEN], way_names[W_PROV_TOKEN], b->token);
    bench_way_floor(&ways[W_FLOOR_SESSION], way_names[W_FLOOR_SESSION], &b->floor);
    bench_way_floor(&ways[W_FLOOR_TOKEN], way_names[W_FLOOR_TOKEN], &b->floor_tok);
    bench_way_floor(&ways[W_FLOOR_PUBLIC], way_names[W_FLOOR_PUBLIC],
                    &b->floor_pub);
    bench_way_inmem(&ways[W_INMEM], way_names[W_INMEM], &b->inmem);
    section_title("seal/open per ticket", 2 * b->opt.seconds);
    /* Warm-up round: first scans, session copies, caches. */
    if (!bench_sealopen_run(ways, W_COUNT, 0, 2, BATCH, b->setup.key, check,
                            b->r.way, b->err, sizeof(b->err)) ||
        !bench_sealopen_run(ways, W_COUNT, 2 * b->opt.seconds, 5, BATCH,
                            b->setup.key, check, b->r.way, b->err,
                            sizeof(b->err)))
        return 0;
    print_sealopen(&b->r);
    return 1;
}

/* The floor that works on what the file's provider works on (session copies
 * or token objects), for the TLS floor server and the ring's reference. */
static bench_floor *file_floor(bench *b)
{
    return b->setup.session_copies ? &b->floor : &b->floor_tok;
}

static int run_tls(bench *b)
{
    if (!bench_tls_init(&b->tls, &b->prov_main, file_floor(b), &b->floor_pub,
                        b->setup.key, b->err, sizeof(b->err)))
        return 0;
    if (b->tls.mem_propq != NULL)
        fprintf(stderr, "p11ticket-bench: note: 'HMAC' without properties "
                "resolves to p11ticket in this file; the in-memory server "
                "uses \"%s\"\n", b->tls.mem_propq);
    for (int k = 0; k < BENCH_HS_COUNT; k++) {
        section_title(bench_hs_name((enum bench_hs)k), b->opt.seconds);
        if (!bench_tls_run(&b->tls, (enum bench_hs)k, b->opt.seconds,
                           &b->r.tls[k], b->err, sizeof(b->err)))
            return 0;
    }
    print_tls(&b->r);
    return 1;
}

static int run_scale(bench *b)
{
    /* Short segments, many rounds: about 20 in a default run, so that the
     * median ratio stands against bursts of load from other processes. */
    double round_s = b->opt.seconds / 40;

    if (round_s < 0.1)
        round_s = 0.1;
    section_title("1 process against 2", 2 * b->opt.seconds);
    if (!bench_scale_run(b->opt.config, b->setup.key,
                         2 * b->opt.seconds, round_s, &b->r.scale, b->err,
                         sizeof(b->err)))
        return 0;
    print_scale(&b->r);
    return 1;
}

/* A fresh library context sees the ring as it is now: its first ticket pays
 * for login, the scan and the session copies. */
static int ring_phase(bench *b, double seconds, ring_result *out)
{
    bench_prov p;
    bench_way ways[3];
    bench_sealopen res[3] = {{0}};
    int check[3] = {1, 0, 0};
    double t0;
    int ok;

    t0 = bench_now();
    if (!bench_prov_load(&p, b->opt.config, b->err, sizeof(b->err))) {
        bench_prov_free(&p);
        return 0;
    }
    bench_way_prov(&ways[0], "provider (ring)", &p);
    bench_way_floor(&ways[1], "PKCS#11 floor (ring reference)", file_floor(b));
    bench_way_inmem(&ways[2], "in memory (ring reference)", &b->inmem);
    ok = bench_sealopen_loop(&ways[0], 1, 0, b->err, sizeof(b->err)) == 1;
    out->cold_ms = (bench_now() - t0) * 1e3;
    ok = ok &&
         bench_sealopen_run(ways, 3, 0, 2, BATCH, b->setup.key, check, res,
                            b->err, sizeof(b->err)) &&
         bench_sealopen_run(ways, 3, seconds, 5, BATCH, b->setup.key, check,
                            res, b->err, sizeof(b->err));
    if (ok) {
        out->prov_us = res[0].pair_us;
        out->prov_mean_us = res[0].pair_mean_us;
        out->floor_us = res[1].pair_us;
        out->mem_us = res[2].pair_us;
        out->prov_vs_mem = bench_paired(&res[0], &res[2]);
        out->floor_vs_mem = bench_paired(&res[1], &res[2]);
        out->prov_vs_floor = bench_paired(&res[0], &res[1]);
    }
    for (int i = 0; i < 3; i++)
        bench_sealopen_free(&res[i]);
    bench_prov_free(&p);
    return ok;
}

/*
 * small ring, big ring, small ring again: the two small phases bracket the
 * big one, so a linear drift of the machine cancels in their mean, and the
 * in-memory work interleaved in every phase takes out the rest.  The
 * generations added for the big ring are removed before the second small
 * phase (they would be removed at the end anyway).
 */
static int run_ring(bench *b)
{
    ring_result *r = b->r.ring;
    double s = b->opt.seconds, t0;
    size_t have, mark;

    section_title("ring of 2 generations", s / 2);
    if (!bench_setup_ring(&b->setup, RING_SMALL, &have, b->err, sizeof(b->err)))
        return 0;
    r[RING_SMALL_A].gens = r[RING_SMALL_C].gens = have;
    mark = b->setup.n_created;
    if (!ring_phase(b, s / 2, &r[RING_SMALL_A]))
        return 0;
    fprintf(stderr, "p11ticket-bench: adding generations up to %d...\n",
            RING_BIG);
    t0 = bench_now();
    if (!bench_setup_ring(&b->setup, RING_BIG, &have, b->err, sizeof(b->err)))
        return 0;
    b->r.ring_create_s = bench_now() - t0;
    r[RING_BIG_B].gens = have;
    section_title("ring of 100 generations", s);
    if (!ring_phase(b, s, &r[RING_BIG_B]))
        return 0;
    fprintf(stderr, "p11ticket-bench: removing them again...\n");
    t0 = bench_now();
    if (!bench_setup_unring(&b->setup, mark, b->err, sizeof(b->err)))
        return 0;
    b->r.ring_destroy_s = bench_now() - t0;
    section_title("ring of 2 generations again", s / 2);
    if (!ring_phase(b, s / 2, &r[RING_SMALL_C]))
        return 0;
    print_ring(&b->r);
    return 1;
}

static const char *const hs_loop_names[BENCH_HS_COUNT] = {
    "tls13-resume", "tls12-resume", "tls13-full"};

/*
 * WAY-cold: every pair starts with caches full of other data, as inside a
 * handshake, where libssl's own work runs between two ticket operations.
 * Only the seal and the open are timed.
 */
static int cold_loop(bench *b, bench_way *w)
{
    enum { EVICT = 32 << 20 };
    unsigned char *junk = calloc(1, EVICT);
    double spent = 0;
    long n;

    if (junk == NULL) {
        snprintf(b->err, sizeof(b->err), "out of memory");
        return 0;
    }
    for (n = 0; n < b->opt.loop_n && !bench_stop; n++) {
        double t0;

        /* Loads and stores through the cache (a large memset may use
         * non-temporal stores that leave the cache alone). */
        for (size_t i = 0; i < EVICT; i += 64)
            junk[i] = (unsigned char)(junk[i] + 1);
        t0 = bench_now();
        if (bench_sealopen_loop(w, 1, 0, b->err, sizeof(b->err)) != 1) {
            free(junk);
            return 0;
        }
        spent += bench_now() - t0;
    }
    free(junk);
    printf("%s, cold caches: %ld seal+open pairs, %.2f us per pair\n", w->name,
           n, spent * 1e6 / (double)n);
    return 1;
}

/* --loop WAY N: one way only, nothing interleaved, for perf and callgrind. */
static int run_loop(bench *b)
{
    bench_way w;
    char way[64];
    double t0, us;
    size_t len;
    long n;
    int cold;

    for (int k = 0; k < BENCH_HS_COUNT; k++) {
        static const char *const sfx[BENCH_V_COUNT] = {"-p11", "-floor",
                                                       "-floor-public", "-mem"};
        size_t nlen = strlen(hs_loop_names[k]);
        const char *v = b->opt.loop_way + nlen;
        int variant = -1;

        if (strncmp(b->opt.loop_way, hs_loop_names[k], nlen) != 0)
            continue;
        for (int i = 0; i < BENCH_V_COUNT; i++)
            if (strcmp(v, sfx[i]) == 0)
                variant = i;
        if (variant < 0)
            continue;
        if (!bench_tls_init(&b->tls, &b->prov_main, file_floor(b),
                            &b->floor_pub, b->setup.key, b->err,
                            sizeof(b->err)) ||
            !bench_tls_loop(&b->tls, (enum bench_hs)k, variant, 50, &us,
                            b->err, sizeof(b->err)) ||
            !bench_tls_loop(&b->tls, (enum bench_hs)k, variant, b->opt.loop_n,
                            &us, b->err, sizeof(b->err)))
            return 0;
        printf("%s, %s server: %ld handshakes, %.1f us server time each\n",
               bench_hs_name((enum bench_hs)k), sfx[variant] + 1,
               b->opt.loop_n, us);
        return 1;
    }
    len = strlen(b->opt.loop_way);
    cold = len > 5 && strcmp(b->opt.loop_way + len - 5, "-cold") == 0;
    snprintf(way, sizeof(way), "%.*s", (int)(cold ? len - 5 : len),
             b->opt.loop_way);
    if (strcmp(way, way_keys[W_PROV_COPIES]) == 0)
        bench_way_prov(&w, way_names[W_PROV_COPIES], b->copies);
    else if (strcmp(way, way_keys[W_PROV_TOKEN]) == 0)
        bench_way_prov(&w, way_names[W_PROV_TOKEN], b->token);
    else if (strcmp(way, way_keys[W_FLOOR_SESSION]) == 0)
        bench_way_floor(&w, way_names[W_FLOOR_SESSION], &b->floor);
    else if (strcmp(way, way_keys[W_FLOOR_TOKEN]) == 0)
        bench_way_floor(&w, way_names[W_FLOOR_TOKEN], &b->floor_tok);
    else if (strcmp(way, way_keys[W_FLOOR_PUBLIC]) == 0)
        bench_way_floor(&w, way_names[W_FLOOR_PUBLIC], &b->floor_pub);
    else if (strcmp(way, way_keys[W_INMEM]) == 0)
        bench_way_inmem(&w, way_names[W_INMEM], &b->inmem);
    else {
        snprintf(b->err, sizeof(b->err), "--loop: unknown way '%s'",
                 b->opt.loop_way);
        return 0;
    }
    if (bench_sealopen_loop(&w, 64, 0, b->err, sizeof(b->err)) < 0)
        return 0;
    if (cold)
        return cold_loop(b, &w);
    t0 = bench_now();
    n = bench_sealopen_loop(&w, b->opt.loop_n, 0, b->err, sizeof(b->err));
    if (n < 0)
        return 0;
    printf("%s: %ld seal+open pairs, %.2f us per pair\n", w.name, n,
           (bench_now() - t0) * 1e6 / (double)n);
    return 1;
}

static int prepare(bench *b)
{
    char hex[33];

    if (!bench_setup_load(&b->setup, b->err, sizeof(b->err)) ||
        !bench_setup_write_alt(&b->setup, b->err, sizeof(b->err)))
        return 0;
    if (b->setup.auto_rotate)
        fprintf(stderr, "p11ticket-bench: warning: auto-rotate = yes in [%s]: "
                "the provider may add a successor of the bench's key to the "
                "token; prefer a throwaway token or auto-rotate = no\n",
                b->setup.file.section);
    if (!bench_setup_key(&b->setup, b->err, sizeof(b->err)))
        return 0;
    p11t_hex(b->setup.key, hex);
    fprintf(stderr, "p11ticket-bench: created key %s (%zu generation%s "
            "already on the token)\n", hex, b->setup.gens_before,
            b->setup.gens_before == 1 ? "" : "s");
    if (b->opt.loop_ring > 0) {
        size_t have;

        if (!bench_setup_ring(&b->setup, (size_t)b->opt.loop_ring, &have,
                              b->err, sizeof(b->err)))
            return 0;
        fprintf(stderr, "p11ticket-bench: %zu generations on the token\n",
                have);
    }
    if (!bench_prov_load(&b->prov_main, b->opt.config, b->err, sizeof(b->err)) ||
        !bench_prov_load(&b->prov_alt, b->setup.alt_config, b->err,
                         sizeof(b->err)))
        return 0;
    b->copies = b->setup.session_copies ? &b->prov_main : &b->prov_alt;
    b->token = b->setup.session_copies ? &b->prov_alt : &b->prov_main;
    if (!bench_floor_open(&b->floor, &b->setup, b->err, sizeof(b->err)))
        return 0;
    b->floor.keys = BENCH_KEYS_COPY;
    b->floor_tok = b->floor;
    b->floor_tok.keys = BENCH_KEYS_TOKEN;
    b->floor_pub = b->floor;
    b->floor_pub.keys = BENCH_KEYS_PUBLIC;
    return bench_inmem_init(&b->inmem, b->prov_main.libctx, b->err,
                            sizeof(b->err));
}

int main(int argc, char **argv)
{
    static bench b;
    double t_start = bench_now();
    target t[6];
    int ok;

    if (!parse_options(argc, argv, &b.opt))
        return 2;
    b.setup.config_file = b.opt.config;
    b.setup.provider_name = b.opt.section;
    bench_signals_install();
    setvbuf(stdout, NULL, _IOLBF, 0);

    ok = prepare(&b);
    if (ok && b.opt.loop_way != NULL) {
        ok = run_loop(&b);
    } else if (ok) {
        print_machine(&b.floor);
        printf("config: %s [%s], session-copies=%s, refresh-interval=%u s\n",
               b.opt.config, b.setup.file.section,
               b.setup.session_copies ? "yes" : "no", b.setup.refresh_s);
        /* The floor's AES mechanism follows the provider's choice. */
        printf("floor AES: %s\n", b.floor.ecb
               ? "CBC built on CKM_AES_ECB (as the provider without CBC_PAD)"
               : "CKM_AES_CBC_PAD");
        ok = run_sealopen(&b) && run_tls(&b) && run_scale(&b) && run_ring(&b);
    }

    bench_tls_free(&b.tls);
    bench_inmem_free(&b.inmem);
    bench_floor_close(&b.floor);
    bench_prov_free(&b.prov_main);
    bench_prov_free(&b.prov_alt);
    bench_setup_cleanup(&b.setup);
    if (ok && b.opt.loop_way == NULL) {
        b.r.total_s = bench_now() - t_start;
        b.r.floor_aes_ecb = b.floor_tok.ecb;
        targets_of(&b.r, t);
        print_targets(t);
        printf("\ntotal %.0f s\n", b.r.total_s);
        print_json(&b.r, t, &b.opt);
    }
    for (int i = 0; i < W_COUNT; i++)
        bench_sealopen_free(&b.r.way[i]);
    if (!ok) {
        fprintf(stderr, "p11ticket-bench: %s\n",
                b.err[0] != '\0' ? b.err : "failed");
        return bench_stop ? 130 : 1;
    }
    return 0;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * scale.c - ticket operations per second with one server process and with
 * two, on the shared token.
 *
 * Two workers are forked, one after the other.  Each loads its own
 * OSSL_LIB_CTX from the configuration after the fork; hsm/ notices the new
 * process and re-initialises the PKCS#11 library in it (C_Finalize, then
 * C_Initialize; docs/design.md, "fork()"), so each worker is a server
 * process of its own as far as the token is concerned.
 *
 * A round has four segments of round_s each: worker 0 alone, both workers,
 * then the same two with OpenSSL's in-memory AES + HMAC instead of the
 * provider (in odd rounds "both" comes first).  Each worker seals and opens tickets (ticket.c) and reports the
 * pairs it did and its own elapsed time; a segment's rate is the sum of the
 * workers' pairs/s.  The in-memory work has no token in it, so its speedup
 * is what this machine gives two processes at best (on a shared VM, much
 * less than 2).  Speedups are paired per round (bench_median_ratio).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench.h"

#define MIN_ROUNDS 2

typedef struct worker_msg {
    int ok;
    long pairs;
    double secs;
    char why[240];
} worker_msg;

typedef struct worker {
    pid_t pid;
    int to, from; /* pipe ends in the parent */
} worker;

static int write_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;

    while (len > 0) {
        ssize_t w = write(fd, p, len);

        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return 0;
        p += w;
        len -= (size_t)w;
    }
    return 1;
}

static int read_all(int fd, void *buf, size_t len)
{
    char *p = buf;

    while (len > 0) {
        ssize_t r = read(fd, p, len);

        if (r < 0 && errno == EINTR) {
            if (bench_stop)
                return 0;
            continue;
        }
        if (r <= 0)
            return 0;
        p += r;
        len -= (size_t)r;
    }
    return 1;
}

static void worker_main(int in, int out, const char *cnf,
                        const uint8_t *expect_name, double round_s)
{
    worker_msg m;
    bench_prov p;
    bench_inmem mem;
    bench_way w, wm;
    uint8_t t[BENCH_TICKET_LEN], iv[P11T_IV_LEN] = {0};
    uint8_t session[BENCH_SESSION_LEN] = {0};
    char cmd;

    memset(&m, 0, sizeof(m));
    if (!bench_prov_load(&p, cnf, m.why, sizeof(m.why))) {
        write_all(out, &m, sizeof(m));
        _exit(1);
    }
    bench_way_prov(&w, "worker", &p);
    if (!bench_inmem_init(&mem, p.libctx, m.why, sizeof(m.why))) {
        write_all(out, &m, sizeof(m));
        _exit(1);
    }
    bench_way_inmem(&wm, "worker (in memory)", &mem);
    /* Warm up (first scan, session copies) and check the key. */
    if (bench_sealopen_loop(&w, 32, 0, m.why, sizeof(m.why)) != 32 ||
        !w.seal(w.ctx, iv, session, t) ||
        memcmp(t, expect_name, P11T_NAME_LEN) != 0) {
        if (m.why[0] == '\0')
            snprintf(m.why, sizeof(m.why), "worker: not sealing under the "
                     "bench's key");
        write_all(out, &m, sizeof(m));
        _exit(1);
    }
    m.ok = 1;
    if (!write_all(out, &m, sizeof(m)))
        _exit(1);
    while (read_all(in, &cmd, 1) && (cmd == 'G' || cmd == 'M')) {
        double t0 = bench_now();

        memset(&m, 0, sizeof(m));
        m.pairs = bench_sealopen_loop(cmd == 'G' ? &w : &wm, -1, t0 + round_s,
                                      m.why, sizeof(m.why));
        m.secs = bench_now() - t0;
        m.ok = m.pairs > 0;
        if (!write_all(out, &m, sizeof(m)) || !m.ok)
            break;
    }
    /* _exit: no atexit handlers, no C_Finalize at exit (docs/design.md,
     * "Never C_Finalize at exit"). */
    _exit(0);
}

static int spawn(worker *wk, const char *cnf, const uint8_t *expect_name,
                 double round_s)
{
    int down[2], up[2];

    if (pipe(down) != 0)
        return 0;
    if (pipe(up) != 0) {
        close(down[0]);
        close(down[1]);
        return 0;
    }
    fflush(NULL);
    wk->pid = fork();
    if (wk->pid < 0) {
        close(down[0]);
        close(down[1]);
        close(up[0]);
        close(up[1]);
        return 0;
    }
    if (wk->pid == 0) {
        close(down[1]);
        close(up[0]);
        worker_main(down[0], up[1], cnf, expect_name, round_s);
    }
    close(down[0]);
    close(up[1]);
    wk->to = down[1];
    wk->from = up[0];
    return 1;
}

static void reap(worker *wk)
{
    int status;

    if (wk->pid <= 0)
        return;
    write_all(wk->to, "Q", 1);
    close(wk->to);
    close(wk->from);
    if (bench_stop)
        kill(wk->pid, SIGTERM);
    while (waitpid(wk->pid, &status, 0) < 0 && errno == EINTR)
        ;
    wk->pid = 0;
}

static int collect(worker *wk, double *rate, char *err, size_t errlen)
{
    worker_msg m;

    if (!read_all(wk->from, &m, sizeof(m))) {
        snprintf(err, errlen, bench_stop ? "interrupted"
                                         : "a scaling worker died");
        return 0;
    }
    if (!m.ok) {
        snprintf(err, errlen, "scaling worker: %s", m.why);
        return 0;
    }
    *rate += (double)m.pairs / m.secs;
    return 1;
}

/* One segment: worker 0 alone, or both at once; returns the summed rate. */
static int segment(worker wk[2], int both, char cmd, double *rate, char *err,
                   size_t errlen)
{
    *rate = 0;
    for (int i = 0; i < 1 + both; i++)
        if (!write_all(wk[i].to, &cmd, 1)) {
            snprintf(err, errlen, "a scaling worker died");
            return 0;
        }
    for (int i = 0; i < 1 + both; i++)
        if (!collect(&wk[i], rate, err, errlen))
            return 0;
    return 1;
}

int bench_scale_run(const char *cnf, const uint8_t *expect_name,
                    double seconds, double round_s, bench_scale_result *out,
                    char *err, size_t errlen)
{
    worker wk[2] = {{0}, {0}};
    bench_series s[4] = {{0}}; /* token 1, token 2, memory 1, memory 2 */
    double end;
    size_t round;
    int ok = 0;

    memset(out, 0, sizeof(*out));
    /*
     * One after the other: SoftHSM instances initialising and logging in at
     * the same moment can miss the token ("no token matches") or fail
     * C_Login with CKR_USER_PIN_NOT_INITIALIZED (docs/design.md,
     * "Startup race and retries"); in forked children hsm/'s retries do
     * not always cover it (see docs/performance.md, section 8).
     */
    for (int i = 0; i < 2; i++) {
        worker_msg m;

        memset(&m, 0, sizeof(m));
        if (!spawn(&wk[i], cnf, expect_name, round_s)) {
            snprintf(err, errlen, "fork: %s", strerror(errno));
            goto done;
        }
        if (!read_all(wk[i].from, &m, sizeof(m)) || !m.ok) {
            snprintf(err, errlen, "scaling worker %d: %s", i,
                     bench_stop ? "interrupted" : m.why);
            goto done;
        }
    }
    end = bench_now() + seconds;
    for (round = 0; round < MIN_ROUNDS || bench_now() < end; round++) {
        for (int j = 0; j < 4; j++) {
            /* Odd rounds run "both" before "alone" (ABBA), so a drift in
             * the machine's load favours neither. */
            int k = round & 1 ? j ^ 1 : j;
            double rate;

            if (!segment(wk, k & 1, k < 2 ? 'G' : 'M', &rate, err, errlen))
                goto done;
            if (!bench_series_add(&s[k], rate)) {
                snprintf(err, errlen, "out of memory");
                goto done;
            }
        }
    }
    out->rounds = round;
    /* Paired per round first: the medians below sort the series. */
    out->speedup = bench_median_ratio(s[1].v, s[0].v, round);
    out->mem_speedup = bench_median_ratio(s[3].v, s[2].v, round);
    out->procs1_ops_s = bench_series_median(&s[0]);
    out->procs2_ops_s = bench_series_median(&s[1]);
    out->mem1_ops_s = bench_series_median(&s[2]);
    out->mem2_ops_s = bench_series_median(&s[3]);
    ok = 1;
done:
    for (int i = 0; i < 2; i++)
        reap(&wk[i]);
    for (int k = 0; k < 4; k++)
        bench_series_free(&s[k]);
    return ok;
}

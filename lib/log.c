/* SPDX-License-Identifier: Apache-2.0 */
/*
 * log.c - the library's only way to say something: the application's log
 * callback, or stderr for errors and warnings when none is set.
 */
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "internal.h"

/* The callback and its argument change together, so a mutex rather than two
 * atomics; it is held only to copy them, never while calling out. */
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static p11ticket_log_cb log_cb;
static void *log_arg;

P11TICKET_EXPORT void p11ticket_set_log_callback(p11ticket_log_cb cb, void *arg)
{
    pthread_mutex_lock(&log_lock);
    log_cb = cb;
    log_arg = arg;
    pthread_mutex_unlock(&log_lock);
}

static void vlog(int level, const char *fmt, va_list ap) P11T_PRINTF(2, 0);
static void vlog(int level, const char *fmt, va_list ap)
{
    char msg[512];
    p11ticket_log_cb cb;
    void *arg;

    vsnprintf(msg, sizeof(msg), fmt, ap);
    /* The contract is one line: OpenSSL error data may carry newlines. */
    for (char *p = msg; *p != '\0'; p++)
        if (*p == '\n' || *p == '\r')
            *p = ' ';

    pthread_mutex_lock(&log_lock);
    cb = log_cb;
    arg = log_arg;
    pthread_mutex_unlock(&log_lock);

    if (cb != NULL) {
        cb(level, msg, arg);
        return;
    }
    if (level > P11TICKET_LOG_WARNING)
        return;
    /* One fprintf call: stdio locks the stream, so lines do not interleave. */
    fprintf(stderr, "p11ticket: %s\n", msg);
}

void p11t_lib_log(int level, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

static long long monotonic_seconds(void)
{
    struct timespec ts;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0;
    return (long long)ts.tv_sec;
}

/*
 * A token that is down fails every handshake; one line per kind per
 * P11T_LOG_INTERVAL seconds is enough to tell, and a flood would hide it.
 * The compare-and-swap lets exactly one of the racing threads through.
 */
static bool rate_ok(struct p11t_lib_state *st, enum p11t_lib_limit kind)
{
    long long now, next;

    if (kind == P11T_LIMIT_NONE)
        return true;
    now = monotonic_seconds();
    next = atomic_load(&st->next_log[kind]);
    if (now < next)
        return false;
    return atomic_compare_exchange_strong(&st->next_log[kind], &next,
                                          now + P11T_LOG_INTERVAL);
}

void p11t_lib_log_limited(struct p11t_lib_state *st, enum p11t_lib_limit kind,
                          int level, const char *fmt, ...)
{
    va_list ap;

    if (!rate_ok(st, kind))
        return;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

/*
 * Logs a failure unless `problem` (its cause, e.g. the provider's one-line
 * error naming the configuration key) is the one reported last: a broken
 * token or configuration is then reported once, by p11ticket_enable() or by
 * the first handshake, not once more per handshake or per interval.
 */
void p11t_lib_log_problem(struct p11t_lib_state *st, enum p11t_lib_limit kind,
                          int level, const char *problem, const char *fmt, ...)
{
    bool report;
    va_list ap;

    pthread_mutex_lock(&st->problem_lock);
    report = strncmp(st->problem, problem, sizeof(st->problem) - 1) != 0 &&
             rate_ok(st, kind);
    if (report) {
        snprintf(st->problem, sizeof(st->problem), "%s", problem);
        atomic_store(&st->has_problem, true);
    }
    pthread_mutex_unlock(&st->problem_lock);
    if (!report)
        return;
    va_start(ap, fmt);
    vlog(level, fmt, ap);
    va_end(ap);
}

/*
 * Called on every success, hence the atomic test before the lock.  A
 * problem that was reported gets one line when it is over, so that a log
 * shows when tickets came back, not only when they stopped.
 */
void p11t_lib_problem_solved(struct p11t_lib_state *st)
{
    bool was;

    if (!atomic_load(&st->has_problem))
        return;
    pthread_mutex_lock(&st->problem_lock);
    was = atomic_exchange(&st->has_problem, false);
    st->problem[0] = '\0';
    pthread_mutex_unlock(&st->problem_lock);
    if (was)
        p11t_lib_log(P11TICKET_LOG_WARNING,
                     "tickets work again: the token problem reported above "
                     "is over");
}

/* out must hold 2 * len + 1 bytes. */
void p11t_lib_hex(const unsigned char *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";

    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 0x0f];
    }
    out[2 * len] = '\0';
}

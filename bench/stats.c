/* SPDX-License-Identifier: Apache-2.0 */
/*
 * stats.c - clocks, medians and OpenSSL error text.
 */
#include <math.h>
#include <stdlib.h>
#include <stdio.h>
#include <time.h>

#include <openssl/err.h>

#include "bench.h"

volatile sig_atomic_t bench_stop;

void bench_ossl_err(char *err, size_t errlen, const char *what)
{
    unsigned long e = ERR_get_error();
    char buf[256] = "no OpenSSL error";

    if (e != 0)
        ERR_error_string_n(e, buf, sizeof(buf));
    snprintf(err, errlen, "%s: %s", what, buf);
    ERR_clear_error();
}

double bench_now(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;

    return x < y ? -1 : x > y;
}

double bench_median(double *v, size_t n)
{
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof(*v), cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

double bench_median_ratio(const double *a, const double *b, size_t n)
{
    double *r = malloc((n ? n : 1) * sizeof(*r)), m;

    if (r == NULL)
        return NAN;
    for (size_t i = 0; i < n; i++)
        r[i] = a[i] / b[i];
    m = bench_median(r, n);
    free(r);
    return m;
}

double bench_mean(const double *v, size_t n)
{
    double sum = 0;

    if (n == 0)
        return NAN;
    for (size_t i = 0; i < n; i++)
        sum += v[i];
    return sum / (double)n;
}

int bench_series_add(bench_series *s, double x)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? s->cap * 2 : 64;
        double *p = realloc(s->v, cap * sizeof(*p));

        if (p == NULL)
            return 0;
        s->v = p;
        s->cap = cap;
    }
    s->v[s->n++] = x;
    return 1;
}

double bench_series_median(bench_series *s)
{
    return bench_median(s->v, s->n);
}

void bench_series_free(bench_series *s)
{
    free(s->v);
    s->v = NULL;
    s->n = s->cap = 0;
}

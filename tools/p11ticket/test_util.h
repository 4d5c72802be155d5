/* SPDX-License-Identifier: Apache-2.0 */
/*
 * test_util.h - what the tool's unit tests (test_*.c) share: the failure
 * count, CHECK, and main's report.  Header-only; include it once per test.
 */
#ifndef P11T_TEST_UTIL_H
#define P11T_TEST_UTIL_H

#include <stdio.h>

static int failures;

/* CHECK_AT names `line` (a helper's caller) instead of its own. */
#define CHECK_AT(cond, line)                                                   \
    do {                                                                       \
        if (!(cond)) {                                                         \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, line,       \
                    #cond);                                                    \
            failures++;                                                        \
        }                                                                      \
    } while (0)
#define CHECK(cond) CHECK_AT(cond, __LINE__)

/* main's return value: the number of failures of test `name`, or all passed. */
static inline int test_report(const char *name)
{
    if (failures) {
        fprintf(stderr, "%s: %d failure(s)\n", name, failures);
        return 1;
    }
    printf("%s: all passed\n", name);
    return 0;
}

#endif /* P11T_TEST_UTIL_H */

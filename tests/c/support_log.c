/* SPDX-License-Identifier: Apache-2.0 */
/*
 * support_log.c - captures libp11ticket's log callback (see support.h).
 * Linked only into the tests that link the TLS integration library.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "p11ticket.h"
#include "support.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

static void capture(int level, const char *msg, void *arg)
{
    t_log *log = arg;

    pthread_mutex_lock(&log_lock);
    if (level >= 0 && level <= 2)
        log->count[level]++;
    else
        log->count_other++;
    if (level == P11TICKET_LOG_ERROR) {
        if (log->first_error[0] == '\0')
            snprintf(log->first_error, sizeof(log->first_error), "%s", msg);
        if (log->want != NULL && strcasestr(msg, log->want) != NULL)
            log->matched++;
    }
    snprintf(log->last, sizeof(log->last), "%s", msg);
    fprintf(stderr, "  [p11ticket log %d] %s\n", level, msg);
    pthread_mutex_unlock(&log_lock);
}

void t_log_capture(t_log *log)
{
    if (log == NULL)
        p11ticket_set_log_callback(NULL, NULL);
    else
        p11ticket_set_log_callback(capture, log);
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz_config.c - p11t_config_set() with keys and values from the input.
 *
 * The input is read as lines of KEY=VALUE (split at the first '='; a line
 * without one is a key with an empty value), the shape of the openssl.cnf
 * provider section.  Every line goes to one configuration, then
 * p11t_config_check runs.  Invariants (abort() on violation):
 *   - a refused value comes with an error record: same rv, non-empty,
 *     NUL-terminated message;
 *   - an accepted refresh-interval is what refresh_interval reports and lies
 *     in 1..86400;
 *   - check() agrees with the error record it fills.
 */
#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "hsm.h"

#define MAX_INPUT 8192

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    p11t_config *cfg;
    char *text, *line, *save = NULL;
    p11t_err err;
    CK_RV rv;

    if (size > MAX_INPUT)
        return 0;
    text = malloc(size + 1);
    if (text == NULL)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    cfg = p11t_config_new();
    if (cfg == NULL) {
        free(text);
        return 0;
    }
    for (line = strtok_r(text, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        char *eq = strchr(line, '=');
        const char *value = "";

        if (eq != NULL) {
            *eq = '\0';
            value = eq + 1;
        }
        p11t_err_clear(&err);
        rv = p11t_config_set(cfg, line, value, &err);
        if (rv != CKR_OK) {
            if (err.rv != rv || err.msg[0] == '\0' ||
                memchr(err.msg, '\0', sizeof(err.msg)) == NULL)
                abort();
        } else if (err.rv != CKR_OK) {
            abort();
        } else if (strcmp(line, "refresh-interval") == 0) {
            unsigned r = p11t_config_refresh_interval(cfg);

            if (r < 1 || r > 86400 || r != strtoul(value, NULL, 10))
                abort();
        }
    }
    p11t_err_clear(&err);
    rv = p11t_config_check(cfg, &err);
    if ((rv == CKR_OK) != (err.rv == CKR_OK) ||
        (rv != CKR_OK && err.msg[0] == '\0'))
        abort();
    p11t_config_free(cfg);
    free(text);
    return 0;
}

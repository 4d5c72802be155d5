/* SPDX-License-Identifier: Apache-2.0 */
/*
 * replay.c - main() for ordinary builds: feeds every file named on the
 * command line (directories: every regular file in them, sorted) to
 * LLVMFuzzerTestOneInput, so the seed corpus and every crash reproducer
 * saved there run as a regression test under ctest.  A target that finds a
 * bug aborts, which fails the test.  An empty corpus fails too: a replay of
 * nothing would prove nothing.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int replay_file(const char *path)
{
    FILE *fp = fopen(path, "rb");
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;

    if (fp == NULL) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 0;
    }
    for (;;) {
        size_t r;

        if (len == cap) {
            uint8_t *n = realloc(buf, cap ? cap * 2 : 4096);

            if (n == NULL) {
                free(buf);
                fclose(fp);
                return 0;
            }
            buf = n;
            cap = cap ? cap * 2 : 4096;
        }
        r = fread(buf + len, 1, cap - len, fp);
        len += r;
        if (r == 0)
            break;
    }
    fclose(fp);
    /* An exact-size copy, so that ASan sees any read past the input. */
    {
        uint8_t *exact = malloc(len ? len : 1);

        if (exact == NULL) {
            free(buf);
            return 0;
        }
        memcpy(exact, buf, len);
        free(buf);
        LLVMFuzzerTestOneInput(exact, len);
        free(exact);
    }
    return 1;
}

static int cmp(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int replay_dir(const char *dir, unsigned *count)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char **names = NULL;
    size_t n = 0, cap = 0;
    int ok = 1;

    if (d == NULL) {
        fprintf(stderr, "%s: %s\n", dir, strerror(errno));
        return 0;
    }
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        if (n == cap) {
            char **nn =
                realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*nn));

            if (nn == NULL) {
                ok = 0;
                break;
            }
            names = nn;
        }
        names[n++] = strdup(de->d_name);
    }
    closedir(d);
    if (n > 0)
        qsort(names, n, sizeof(*names), cmp);
    for (size_t i = 0; i < n; i++) {
        char path[4096];
        struct stat st;

        snprintf(path, sizeof(path), "%s/%s", dir, names[i]);
        if (ok && stat(path, &st) == 0 && S_ISREG(st.st_mode)) {
            if (replay_file(path))
                (*count)++;
            else
                ok = 0;
        }
        free(names[i]);
    }
    free(names);
    return ok;
}

int main(int argc, char **argv)
{
    unsigned count = 0;
    int ok = 1;

    if (argc < 2) {
        fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) {
        struct stat st;

        if (stat(argv[i], &st) != 0) {
            fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
            ok = 0;
        } else if (S_ISDIR(st.st_mode)) {
            ok &= replay_dir(argv[i], &count);
        } else if (replay_file(argv[i])) {
            count++;
        } else {
            ok = 0;
        }
    }
    printf("%s: replayed %u inputs\n", argv[0], count);
    return ok && count > 0 ? 0 : 1;
}

/* SPDX-License-Identifier: Apache-2.0 */
/*
 * faultctl.c - p11t_faultctl, reads the counters file of the fault-injection
 * PKCS#11 module (faultmod.c; the file is named by P11T_FAULT_COUNTS).
 *
 *   p11t_faultctl counts FILE          one line per function called at least
 *                                      once: "FUNC calls failures"
 *   p11t_faultctl counts FILE FUNC     that function's line (also when 0 0)
 *
 * Exit status: 0 on success, 1 if FILE is missing or not a counters file,
 * 2 on a usage error or an unknown FUNC.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "faultmod.h"

static int usage(void)
{
    fprintf(stderr, "usage: p11t_faultctl counts FILE [FUNC]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const p11t_fault_counts_hdr *h;
    const p11t_fault_counts_entry *e;
    const char *path, *func;
    struct stat st;
    void *map;
    int fd, found = 0;

    if (argc < 3 || argc > 4 || strcmp(argv[1], "counts") != 0)
        return usage();
    path = argv[2];
    func = argc == 4 ? argv[3] : NULL;
    fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "p11t_faultctl: %s: %s\n", path, strerror(errno));
        return 1;
    }
    if (fstat(fd, &st) != 0 || (size_t)st.st_size < sizeof(*h)) {
        fprintf(stderr, "p11t_faultctl: %s: not a counters file\n", path);
        close(fd);
        return 1;
    }
    map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_SHARED, fd, 0);
    close(fd);
    if (map == MAP_FAILED) {
        fprintf(stderr, "p11t_faultctl: mmap %s: %s\n", path, strerror(errno));
        return 1;
    }
    h = map;
    if (memcmp(h->magic, P11T_FAULT_COUNTS_MAGIC, 8) != 0 ||
        h->entry_size != sizeof(*e) ||
        (size_t)st.st_size != sizeof(*h) + (size_t)h->nfuncs * sizeof(*e)) {
        fprintf(stderr, "p11t_faultctl: %s: not a counters file\n", path);
        return 1;
    }
    e = (const p11t_fault_counts_entry *)(h + 1);
    for (uint32_t i = 0; i < h->nfuncs; i++) {
        char name[sizeof(e[i].name) + 1];
        unsigned long long calls, failures;

        memcpy(name, e[i].name, sizeof(e[i].name));
        name[sizeof(e[i].name)] = '\0';
        calls = __atomic_load_n(&e[i].calls, __ATOMIC_RELAXED);
        failures = __atomic_load_n(&e[i].failures, __ATOMIC_RELAXED);
        if (func != NULL ? strcmp(func, name) == 0 : calls + failures > 0) {
            printf("%s %llu %llu\n", name, calls, failures);
            found = 1;
        }
    }
    if (func != NULL && !found) {
        fprintf(stderr, "p11t_faultctl: unknown function '%s'\n", func);
        return 2;
    }
    return fflush(stdout) == 0 ? 0 : 1;
}

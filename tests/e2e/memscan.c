/* SPDX-License-Identifier: Apache-2.0 */
/*
 * memscan.c - search another process's memory for byte patterns (the
 * out-of-process memory proof, tests/e2e/oop_memscan.sh).
 *
 *   memscan PID PATTERN_FILE     scan every readable mapping of PID
 *   memscan --hold FILE          read FILE into the heap and wait for a
 *                                signal (a process that surely holds the
 *                                bytes: the scanner's positive control)
 *
 * The patterns come from a file, never from the command line, because they
 * are key bytes (/proc/PID/cmdline is world-readable).  One pattern a line:
 *
 *   KIND LABEL HEX
 *
 * KIND is "secret" (must not be found) or "expect" (must be found at least
 * once); LABEL is a word for the report; HEX is 8 to 64 bytes.  Blank lines
 * and lines starting with '#' are ignored.  The report never shows pattern
 * bytes, only labels, counts and addresses.
 *
 * What is read: /proc/PID/maps lists the mappings; each readable one
 * ('r' in its permissions) is read through /proc/PID/mem, except [vvar],
 * [vvar_vclock] and [vsyscall] (kernel pages that cannot be read that way).
 * Anonymous mappings (inode 0: heap, stacks, malloc arenas, anonymous mmap)
 * are read only where /proc/PID/pagemap shows the page present or swapped:
 * any other page of such a mapping was never written (or was discarded) and
 * reads as zeroes, and reading it would only make the kernel map the zero
 * page into the target.  File-backed mappings are read in full.  A mapping
 * larger than 64 GiB (only sanitizer shadow memory, which holds allocation
 * state, not data) is skipped and counted as "huge" with its resident size.
 * Reads go 64 pages at a time; a failed read is retried page by page, and
 * pages that still fail (EIO: the mapping vanished or shrank while we read,
 * a guard page) are counted as unreadable.  A pattern that straddles two
 * reads, or two adjacent mappings, is found as well.
 *
 * The report, on standard output:
 *   summary pid=P regions=N bytes=B pages_unreadable=U pages_absent=A
 *           skipped_noread=R skipped_special=S skipped_huge=H huge_bytes=X
 *           huge_rss_kb=K                                    (one line)
 *   pattern label=L kind=secret|expect len=N hits=N          (one per pattern)
 *   hit label=L addr=0x... region=NAME                       (first 8 each)
 *   result ok|unexpected
 *
 * Exit status: 0 when no "secret" pattern was found and every "expect"
 * pattern was, and at least one byte was read; 1 otherwise; 2 on usage
 * errors, a bad pattern file, or a process whose maps or memory cannot be
 * opened (it exited, or we are not allowed: run as root).
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#define MAX_PATTERNS 32
#define MIN_PATLEN 8
#define MAX_PATLEN 64
#define MAX_HITS_SHOWN 8
#define CHUNK_PAGES 64
#define HUGE_LIMIT (64ULL << 30)

struct pattern {
    char label[64];
    int expect; /* 1: must be found; 0: secret, must not be found */
    size_t len;
    unsigned char bytes[MAX_PATLEN];
    unsigned long long hits;
};

static struct pattern g_pat[MAX_PATTERNS];
static int g_npat;
static size_t g_maxlen;
static size_t g_page;

static struct {
    unsigned long long regions, bytes, unreadable, absent;
    unsigned long long noread, special, huge, huge_bytes, huge_rss_kb;
} g_st;

/* The search stream: the last g_maxlen - 1 bytes of the previous read are
 * kept, so that a pattern crossing two reads is found when the second read
 * starts where the first ended. */
static unsigned char *g_buf;
static size_t g_carry;
static uint64_t g_next = UINT64_MAX; /* address right after g_buf's data */
static char g_region[256];

static void wipe(void *p, size_t n)
{
    volatile unsigned char *v = p;
    while (n--)
        *v++ = 0;
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static int load_patterns(const char *path)
{
    FILE *f = fopen(path, "r");
    char line[512];
    int lineno = 0, rc = 0;

    if (f == NULL) {
        fprintf(stderr, "memscan: %s: %s\n", path, strerror(errno));
        return -1;
    }
    while (fgets(line, sizeof(line), f) != NULL) {
        char kind[16], label[64], hex[2 * MAX_PATLEN + 2];
        int n;
        size_t i, hl;
        struct pattern *p;

        lineno++;
        if (strchr(line, '\n') == NULL && !feof(f)) {
            fprintf(stderr, "memscan: %s:%d: line too long\n", path, lineno);
            rc = -1;
            break;
        }
        for (i = 0; isspace((unsigned char)line[i]); i++)
            ;
        if (line[i] == '\0' || line[i] == '#')
            continue;
        n = sscanf(line, "%15s %63s %129s", kind, label, hex);
        if (n != 3) {
            fprintf(stderr, "memscan: %s:%d: expected 'KIND LABEL HEX'\n", path, lineno);
            rc = -1;
            break;
        }
        if (g_npat == MAX_PATTERNS) {
            fprintf(stderr, "memscan: %s: more than %d patterns\n", path, MAX_PATTERNS);
            rc = -1;
            break;
        }
        p = &g_pat[g_npat];
        if (strcmp(kind, "secret") == 0) {
            p->expect = 0;
        } else if (strcmp(kind, "expect") == 0) {
            p->expect = 1;
        } else {
            fprintf(stderr, "memscan: %s:%d: kind must be secret or expect\n", path, lineno);
            rc = -1;
            break;
        }
        hl = strlen(hex);
        if (hl % 2 != 0 || hl / 2 < MIN_PATLEN || hl / 2 > MAX_PATLEN) {
            fprintf(stderr, "memscan: %s:%d: pattern %s: %d to %d bytes of hex expected\n",
                    path, lineno, label, MIN_PATLEN, MAX_PATLEN);
            rc = -1;
            break;
        }
        for (i = 0; i < hl / 2; i++) {
            int hi = hexval((unsigned char)hex[2 * i]), lo = hexval((unsigned char)hex[2 * i + 1]);
            if (hi < 0 || lo < 0) {
                fprintf(stderr, "memscan: %s:%d: pattern %s: not hex\n", path, lineno, label);
                rc = -1;
                break;
            }
            p->bytes[i] = (unsigned char)(hi << 4 | lo);
        }
        if (rc != 0)
            break;
        p->len = hl / 2;
        snprintf(p->label, sizeof(p->label), "%s", label);
        if (p->len > g_maxlen)
            g_maxlen = p->len;
        g_npat++;
    }
    wipe(line, sizeof(line));
    fclose(f);
    if (rc == 0 && g_npat == 0) {
        fprintf(stderr, "memscan: %s: no pattern\n", path);
        rc = -1;
    }
    return rc;
}

/* Search buf[0..n), whose first g_carry bytes were searched already (as
 * the tail of the previous read); buf starts at address base. */
static void search(const unsigned char *buf, size_t n, uint64_t base)
{
    int i;

    for (i = 0; i < g_npat; i++) {
        struct pattern *p = &g_pat[i];
        const unsigned char *hit;
        size_t off = 0;

        while (off + p->len <= n && (hit = memmem(buf + off, n - off, p->bytes, p->len)) != NULL) {
            size_t at = (size_t)(hit - buf);
            /* Entirely inside the carried bytes: counted last time. */
            if (at + p->len > g_carry) {
                if (p->hits < MAX_HITS_SHOWN)
                    printf("hit label=%s addr=0x%" PRIx64 " region=%s\n", p->label,
                           base + at, g_region);
                p->hits++;
            }
            off = at + 1;
        }
    }
}

/* Feed len bytes read at address addr into the stream. */
static void feed(uint64_t addr, const unsigned char *data, size_t len)
{
    size_t keep = g_maxlen - 1;

    if (addr != g_next)
        g_carry = 0; /* not contiguous with the previous read */
    memcpy(g_buf + g_carry, data, len);
    search(g_buf, g_carry + len, addr - g_carry);
    g_st.bytes += len;
    g_next = addr + len;
    /* Keep the tail for the next read. */
    if (g_carry + len > keep) {
        memmove(g_buf, g_buf + g_carry + len - keep, keep);
        g_carry = keep;
    } else {
        g_carry += len;
    }
}

/* Read [addr, addr + npages pages) and feed it; on failure page by page. */
static void read_run(int memfd, uint64_t addr, size_t npages, unsigned char *tmp)
{
    size_t len = npages * g_page, i;
    ssize_t r = pread(memfd, tmp, len, (off_t)addr);

    if (r == (ssize_t)len) {
        feed(addr, tmp, len);
        return;
    }
    for (i = 0; i < npages; i++) {
        uint64_t a = addr + i * g_page;
        r = pread(memfd, tmp, g_page, (off_t)a);
        if (r == (ssize_t)g_page)
            feed(a, tmp, g_page);
        else
            g_st.unreadable++;
    }
}

static void scan_region(int memfd, int pmfd, uint64_t start, uint64_t end, int anon,
                        unsigned char *tmp)
{
    uint64_t a;
    uint64_t pm[CHUNK_PAGES];

    for (a = start; a < end; a += CHUNK_PAGES * g_page) {
        size_t n = (size_t)((end - a) / g_page), i, run = 0;
        uint64_t run_start = 0;

        if (n > CHUNK_PAGES)
            n = CHUNK_PAGES;
        if (!anon) {
            read_run(memfd, a, n, tmp);
            continue;
        }
        /* Anonymous: only pages present in RAM (bit 63) or swapped (62). */
        if (pread(pmfd, pm, n * sizeof(pm[0]), (off_t)(a / g_page * sizeof(pm[0]))) !=
            (ssize_t)(n * sizeof(pm[0]))) {
            /* No page map for this range (the mapping vanished?): try all. */
            read_run(memfd, a, n, tmp);
            continue;
        }
        for (i = 0; i <= n; i++) {
            int in = i < n && (pm[i] & (3ULL << 62)) != 0;
            if (in) {
                if (run == 0)
                    run_start = a + i * g_page;
                run++;
            } else {
                if (run > 0)
                    read_run(memfd, run_start, run, tmp);
                run = 0;
                if (i < n)
                    g_st.absent++;
            }
        }
    }
}

/* Resident size (kB) of the mapping at start, from /proc/PID/smaps. */
static unsigned long long smaps_rss(pid_t pid, uint64_t start)
{
    char path[64], line[512];
    FILE *f;
    int in = 0;
    unsigned long long rss = 0;

    snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
    f = fopen(path, "r");
    if (f == NULL)
        return 0;
    while (fgets(line, sizeof(line), f) != NULL) {
        uint64_t s, e;
        if (!isupper((unsigned char)line[0]) &&
            sscanf(line, "%" SCNx64 "-%" SCNx64 " ", &s, &e) == 2) {
            in = s == start;
            continue;
        }
        if (in && sscanf(line, "Rss: %llu kB", &rss) == 1)
            break;
    }
    fclose(f);
    return rss;
}

static int scan(pid_t pid)
{
    char path[64], line[8192];
    FILE *maps;
    int memfd, pmfd, i, ok = 1;
    unsigned char *tmp;

    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    maps = fopen(path, "r");
    if (maps == NULL) {
        fprintf(stderr, "memscan: %s: %s\n", path, strerror(errno));
        return 2;
    }
    snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
    memfd = open(path, O_RDONLY);
    if (memfd < 0) {
        fprintf(stderr, "memscan: %s: %s\n", path, strerror(errno));
        fclose(maps);
        return 2;
    }
    snprintf(path, sizeof(path), "/proc/%d/pagemap", (int)pid);
    pmfd = open(path, O_RDONLY);
    if (pmfd < 0) {
        fprintf(stderr, "memscan: %s: %s\n", path, strerror(errno));
        close(memfd);
        fclose(maps);
        return 2;
    }
    tmp = malloc(CHUNK_PAGES * g_page);
    g_buf = malloc(CHUNK_PAGES * g_page + MAX_PATLEN);
    if (tmp == NULL || g_buf == NULL) {
        fprintf(stderr, "memscan: out of memory\n");
        exit(2);
    }

    /* The maps file is read line by line while the target runs: a mapping
     * that changes meanwhile is read as it is now, or not at all. */
    while (fgets(line, sizeof(line), maps) != NULL) {
        uint64_t start, end;
        char perms[8] = "", dev[16] = "";
        unsigned long long off, inode;
        int name_at = 0, n;
        const char *name;

        n = sscanf(line, "%" SCNx64 "-%" SCNx64 " %7s %llx %15s %llu %n", &start, &end, perms,
                   &off, dev, &inode, &name_at);
        if (n < 6 || end <= start)
            continue;
        line[strcspn(line, "\n")] = '\0';
        name = name_at > 0 ? line + name_at : "";
        snprintf(g_region, sizeof(g_region), "%s", *name ? name : "[anon]");
        if (perms[0] != 'r') {
            g_st.noread++;
            continue;
        }
        if (strcmp(name, "[vvar]") == 0 || strcmp(name, "[vvar_vclock]") == 0 ||
            strcmp(name, "[vsyscall]") == 0) {
            g_st.special++;
            continue;
        }
        if (end - start > HUGE_LIMIT) {
            g_st.huge++;
            g_st.huge_bytes += end - start;
            g_st.huge_rss_kb += smaps_rss(pid, start);
            continue;
        }
        g_st.regions++;
        scan_region(memfd, pmfd, start, end, inode == 0, tmp);
    }

    printf("summary pid=%d regions=%llu bytes=%llu pages_unreadable=%llu pages_absent=%llu "
           "skipped_noread=%llu skipped_special=%llu skipped_huge=%llu huge_bytes=%llu "
           "huge_rss_kb=%llu\n",
           (int)pid, g_st.regions, g_st.bytes, g_st.unreadable, g_st.absent, g_st.noread,
           g_st.special, g_st.huge, g_st.huge_bytes, g_st.huge_rss_kb);
    for (i = 0; i < g_npat; i++) {
        struct pattern *p = &g_pat[i];
        printf("pattern label=%s kind=%s len=%zu hits=%llu\n", p->label,
               p->expect ? "expect" : "secret", p->len, p->hits);
        if (p->expect ? p->hits == 0 : p->hits != 0)
            ok = 0;
    }
    if (g_st.bytes == 0)
        ok = 0;
    printf("result %s\n", ok ? "ok" : "unexpected");

    wipe(g_buf, CHUNK_PAGES * g_page + MAX_PATLEN);
    wipe(tmp, CHUNK_PAGES * g_page);
    free(g_buf);
    free(tmp);
    close(pmfd);
    close(memfd);
    fclose(maps);
    return ok ? 0 : 1;
}

/* --hold FILE: the file's bytes in the heap until a signal ends us. */
static int hold(const char *path)
{
    int fd = open(path, O_RDONLY);
    unsigned char *buf;
    size_t cap = 1 << 16, len = 0;
    ssize_t r;

    if (fd < 0) {
        fprintf(stderr, "memscan: %s: %s\n", path, strerror(errno));
        return 2;
    }
    buf = malloc(cap);
    if (buf == NULL)
        return 2;
    while (len < cap && (r = read(fd, buf + len, cap - len)) > 0)
        len += (size_t)r;
    close(fd);
    printf("holding %zu bytes at %p\n", len, (void *)buf);
    fflush(stdout);
    for (;;)
        pause();
}

int main(int argc, char **argv)
{
    long pid;
    char *end;
    int rc;

    setvbuf(stdout, NULL, _IOLBF, 0);
    g_page = (size_t)sysconf(_SC_PAGESIZE);
    if (argc == 3 && strcmp(argv[1], "--hold") == 0)
        return hold(argv[2]);
    if (argc != 3 || argv[1][0] == '-') {
        fprintf(stderr, "usage: memscan PID PATTERN_FILE\n"
                        "       memscan --hold FILE\n");
        return 2;
    }
    errno = 0;
    pid = strtol(argv[1], &end, 10);
    if (errno != 0 || *end != '\0' || pid <= 0) {
        fprintf(stderr, "memscan: bad pid '%s'\n", argv[1]);
        return 2;
    }
    if (load_patterns(argv[2]) != 0)
        return 2;
    g_maxlen = g_maxlen < 1 ? 1 : g_maxlen;
    rc = scan((pid_t)pid);
    wipe(g_pat, sizeof(g_pat));
    return rc;
}

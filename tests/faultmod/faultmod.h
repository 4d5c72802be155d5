/* SPDX-License-Identifier: Apache-2.0 */
/*
 * faultmod.h - the exported functions of the fault-injection PKCS#11 module
 * (libp11t_faultmod.so, tests only, never installed) and the layout of its
 * shared counters file.  See faultmod.c for what the module does and the
 * rule syntax of its control file.
 */
#ifndef P11T_FAULTMOD_H
#define P11T_FAULTMOD_H

#include <stdint.h>

#define P11T_FAULT_EXPORT __attribute__((visibility("default")))

/*
 * Calls into the module (every entry of its function list, and
 * C_GetFunctionList itself) of PKCS#11 function `func` ("C_Encrypt") made in
 * this process, and how many of them the module answered with an error of
 * its own instead of the wrapped module's answer.  func NULL or "*": the
 * sum over every function.  An unknown name gives 0.  A process that loads
 * the module through someone else's dlopen gets these with
 * dlopen(path, RTLD_NOW | RTLD_NOLOAD) and dlsym.
 */
P11T_FAULT_EXPORT unsigned long long p11t_fault_calls(const char *func);
P11T_FAULT_EXPORT unsigned long long p11t_fault_failures(const char *func);

/*
 * The counters file (P11T_FAULT_COUNTS): a header, then one entry per
 * PKCS#11 function in the order of CK_FUNCTION_LIST.  The numbers are
 * 64-bit counters that every process using the file adds to with atomic
 * adds on a shared mapping.  The file is (re)initialised, under flock, by
 * the first process that finds it missing, of another size or without the
 * magic; delete it to start counting from zero.
 */
#define P11T_FAULT_COUNTS_MAGIC "P11TFC01"

typedef struct p11t_fault_counts_hdr {
    char magic[8]; /* P11T_FAULT_COUNTS_MAGIC, written last */
    uint32_t nfuncs;
    uint32_t entry_size; /* sizeof(p11t_fault_counts_entry) */
    uint64_t reserved[6];
} p11t_fault_counts_hdr; /* 64 bytes */

typedef struct p11t_fault_counts_entry {
    char name[40]; /* "C_Encrypt", NUL-padded */
    uint64_t calls;
    uint64_t failures;
} p11t_fault_counts_entry; /* 56 bytes */

#endif

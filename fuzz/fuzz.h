/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fuzz.h - the libFuzzer entry point, declared for -Werror=missing-prototypes.
 * Each fuzz_*.c defines it; libFuzzer (clang -fsanitize=fuzzer) or
 * replay.c (the regression test in ordinary builds) calls it.
 */
#ifndef P11T_FUZZ_H
#define P11T_FUZZ_H

#include <stddef.h>
#include <stdint.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif

/* fuzz.h: what the libFuzzer harnesses of tests/fuzz/ share (tools/fuzz.sh builds
 * them; docs/security.md "Fuzzing").
 *
 * A harness checks what must hold for every input with FUZZ_CHECK: a failed check
 * prints where and aborts, which libFuzzer reports as a crash and saves the input. */
#ifndef DISTSUP_FUZZ_H
#define DISTSUP_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_CHECK(cond) \
    do { \
        if (!(cond)) { \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
            abort(); \
        } \
    } while (0)

/* An error message a function under test filled: NUL-terminated within its buffer
 * and not empty. */
#define FUZZ_CHECK_ERR(err) FUZZ_CHECK(memchr((err), 0, sizeof(err)) != NULL && (err)[0] != 0)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif

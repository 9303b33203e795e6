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
#include <string.h>

#include <protobuf-c/protobuf-c.h>

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

/* 1 if m or a message inside it holds an unknown field of number 0.  protobuf-c 1.4.1
 * reads such a field when its key is a long varint (0x80 0x00: number 0, varint),
 * keeps it, and packs it back as 0x00, which it refuses to read: such a message does
 * not survive pack + unpack.  The harnesses that repack what they read accept that
 * failure only with this cause. */
static inline int fuzz_has_field0(const ProtobufCMessage *m)
{
    if (!m) return 0;
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0) return 1;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
        const char *base = (const char *)m;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(const size_t *)(base + f->quantifier_offset);
            ProtobufCMessage *const *v = *(ProtobufCMessage *const *const *)(base + f->offset);
            for (size_t j = 0; j < n; j++)
                if (fuzz_has_field0(v[j])) return 1;
            continue;
        }
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) && *(const uint32_t *)(base + f->quantifier_offset) != f->id)
            continue;
        if (fuzz_has_field0(*(ProtobufCMessage *const *)(base + f->offset))) return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#endif

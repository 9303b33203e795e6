#include "sidecar/wirecheck.h"

#include <stdio.h>
#include <string.h>

#include "sidecar/spec.h"

#define WIRECHECK_DEPTH 32

/* A varint at *p (advanced).  0, or -1 when it runs past end or is too long. */
static int varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64; shift += 7) {
        if (*p >= end) return -1;
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return 0;
    }
    return -1;
}

static int check_string(const char *path, const uint8_t *s, size_t n, char *err, size_t errlen)
{
    const uint8_t *nul = memchr(s, 0, n);
    if (nul) {
        snprintf(err, errlen, "%s has a NUL byte at byte %zu", path, (size_t)(nul - s));
        return -1;
    }
    size_t ok = spec_utf8_prefix(s, n);
    if (ok < n) {
        snprintf(err, errlen, "%s is not valid UTF-8 (at byte %zu)", path, ok);
        return -1;
    }
    return 0;
}

static int walk(const ProtobufCMessageDescriptor *d, const uint8_t *p, const uint8_t *end, const char *prefix,
                int depth, char *err, size_t errlen)
{
    if (depth > WIRECHECK_DEPTH) return 0; /* protobuf-c decides */
    while (p < end) {
        uint64_t tag, v;
        if (varint(&p, end, &tag) != 0) return 0;
        switch (tag & 7) {
        case 0:
            if (varint(&p, end, &v) != 0) return 0;
            continue;
        case 1:
            if (end - p < 8) return 0;
            p += 8;
            continue;
        case 5:
            if (end - p < 4) return 0;
            p += 4;
            continue;
        case 2: break;
        default: return 0; /* groups or garbage: protobuf-c decides */
        }
        if (varint(&p, end, &v) != 0 || v > (uint64_t)(end - p)) return 0;
        const uint8_t *body = p;
        p += v;
        const ProtobufCFieldDescriptor *f =
            tag >> 3 <= UINT32_MAX ? protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3)) : NULL;
        if (!f || (f->type != PROTOBUF_C_TYPE_STRING && f->type != PROTOBUF_C_TYPE_MESSAGE)) continue;
        char path[256];
        /* map entries read better as "labels.value" than "labels.LabelsEntry.value" */
        snprintf(path, sizeof path, "%s%s%s", prefix, prefix[0] ? "." : "", f->name);
        if (f->type == PROTOBUF_C_TYPE_STRING) {
            if (check_string(path, body, (size_t)v, err, errlen) != 0) return -1;
        } else if (walk(f->descriptor, body, p, path, depth + 1, err, errlen) != 0) {
            return -1;
        }
    }
    return 0;
}

int wirecheck_strings(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, char *err, size_t errlen)
{
    if (!buf) return 0;
    return walk(d, buf, buf + len, "", 0, err, errlen);
}

/* Fuzz target "frame": the child frame codec (framing/frame.c) over arbitrary bytes,
 * as a child's stdout delivers them.
 *
 * The input is a byte stream.  It is split into frames twice: in one piece, and fed
 * into a dsbuf in chunks whose sizes the input's own bytes choose (as reads from a
 * pipe arrive), consuming each whole frame as it appears; both must see the same
 * frames.  Each frame body goes through frame_decode; each decoded frame is packed
 * again with frame_append, and that frame must split, decode and pack back to the
 * same bytes. */
#include <string.h>

#include "framing/frame.h"
#include "tests/fuzz/fuzz.h"

/* Small enough that the fuzzer meets FRAME_TOO_BIG often. */
#define FUZZ_FRAME_MAX 1024u

static void roundtrip(const Distsup__V1__ChildFrame *f)
{
    struct dsbuf a = {0}, b = {0};
    FUZZ_CHECK(frame_append(&a, f, FRAME_DEFAULT_MAX) == 0);
    const uint8_t *body;
    size_t body_len, consumed;
    FUZZ_CHECK(frame_split(a.data + a.off, dsbuf_unread(&a), FRAME_DEFAULT_MAX, &body, &body_len, &consumed) ==
               FRAME_OK);
    FUZZ_CHECK(consumed == dsbuf_unread(&a) && body_len + FRAME_HEADER == consumed);
    Distsup__V1__ChildFrame *g = frame_decode(body, body_len);
    if (!g) { /* protobuf-c's own quirk (fuzz.h), nothing of frame.c */
        FUZZ_CHECK(fuzz_has_field0(&f->base));
        dsbuf_free(&a);
        return;
    }
    FUZZ_CHECK(g->frame_case == f->frame_case);
    FUZZ_CHECK(frame_append(&b, g, FRAME_DEFAULT_MAX) == 0);
    FUZZ_CHECK(dsbuf_unread(&b) == dsbuf_unread(&a));
    FUZZ_CHECK(memcmp(a.data + a.off, b.data + b.off, dsbuf_unread(&a)) == 0);
    /* a frame larger than max is refused, and leaves the buffer as it was */
    if (body_len > 0) {
        size_t before = dsbuf_unread(&b);
        FUZZ_CHECK(frame_append(&b, g, body_len - 1) == -1);
        FUZZ_CHECK(dsbuf_unread(&b) == before);
    }
    frame_decode_free(g);
    dsbuf_free(&a);
    dsbuf_free(&b);
}

/* Splits buf[0..len) into frames; returns how many there were and how many bytes they
 * took, and whether the rest was too big or incomplete. */
static size_t split_all(const uint8_t *buf, size_t len, size_t max, size_t *used, enum frame_result *last)
{
    size_t n = 0, off = 0;
    for (;;) {
        const uint8_t *body = NULL;
        size_t body_len = 0, consumed = 0;
        enum frame_result r = frame_split(buf + off, len - off, max, &body, &body_len, &consumed);
        if (r != FRAME_OK) {
            FUZZ_CHECK(r == FRAME_NEED_MORE || r == FRAME_TOO_BIG);
            *last = r;
            break;
        }
        FUZZ_CHECK(consumed == FRAME_HEADER + body_len && consumed <= len - off);
        FUZZ_CHECK(body == buf + off + FRAME_HEADER && body_len <= max);
        Distsup__V1__ChildFrame *f = frame_decode(body, body_len);
        if (f) {
            FUZZ_CHECK(f->frame_case != DISTSUP__V1__CHILD_FRAME__FRAME__NOT_SET);
            roundtrip(f);
            frame_decode_free(f);
        }
        off += consumed;
        n++;
    }
    *used = off;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t used = 0;
    enum frame_result last = FRAME_OK;
    size_t frames = split_all(data, size, FUZZ_FRAME_MAX, &used, &last);
    /* frame_decode on the raw bytes too: a body need not come from a well-formed stream */
    frame_decode_free(frame_decode(data, size));

    /* The same stream through a dsbuf, in chunks of 1..16 bytes chosen by the input. */
    struct dsbuf in = {0};
    size_t off = 0, seen = 0, taken = 0, k = 0;
    enum frame_result r = FRAME_NEED_MORE;
    while (off < size || r == FRAME_OK) {
        if (r != FRAME_OK) {
            size_t chunk = 1 + (size_t)(data[k++ % size] & 15u);
            if (chunk > size - off) chunk = size - off;
            FUZZ_CHECK(dsbuf_append(&in, data + off, chunk) == 0);
            off += chunk;
        }
        const uint8_t *body;
        size_t body_len, consumed;
        r = frame_split(in.data + in.off, dsbuf_unread(&in), FUZZ_FRAME_MAX, &body, &body_len, &consumed);
        if (r == FRAME_TOO_BIG) break;
        if (r == FRAME_OK) {
            FUZZ_CHECK(memcmp(body - FRAME_HEADER, data + taken, consumed) == 0);
            dsbuf_consume(&in, consumed);
            taken += consumed;
            seen++;
        }
    }
    FUZZ_CHECK(seen == frames && taken == used);
    if (last == FRAME_TOO_BIG) FUZZ_CHECK(r == FRAME_TOO_BIG);
    else FUZZ_CHECK(dsbuf_unread(&in) == size - used);
    dsbuf_free(&in);
    return 0;
}

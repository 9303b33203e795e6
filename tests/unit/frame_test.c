/* Unit tests of the child frame codec (framing/frame.h): splitting and joining
 * frames, frames cut at every byte boundary, truncated and oversized input,
 * undecodable bodies, and the growable buffer underneath. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "framing/frame.h"

/* ---------- helpers ---------- */

/* Packs one frame as the sidecar would put it on the wire; the caller owns the buffer. */
static struct dsbuf wire(const Distsup__V1__ChildFrame *f)
{
    struct dsbuf b = {0};
    assert_int_equal(frame_append(&b, f, FRAME_DEFAULT_MAX), 0);
    return b;
}

/* The packed body of a frame (no header), malloc'd. */
static uint8_t *packed(const Distsup__V1__ChildFrame *f, size_t *len)
{
    *len = distsup__v1__child_frame__get_packed_size(f);
    uint8_t *p = malloc(*len ? *len : 1);
    assert_non_null(p);
    assert_int_equal(distsup__v1__child_frame__pack(f, p), *len);
    return p;
}

static void put_be32(uint8_t *p, uint32_t n)
{
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
}

/* A fixed set of frames of every kind, some with payloads, one large. */
#define N_SAMPLES 9
struct samples {
    Distsup__V1__Init init;
    Distsup__V1__CallFrame call, big_call;
    Distsup__V1__CastFrame cast;
    Distsup__V1__InfoFrame info;
    Distsup__V1__Terminate term;
    Distsup__V1__Ready ready;
    Distsup__V1__Reply reply;
    Distsup__V1__StateFrame state;
    Distsup__V1__ChildFrame f[N_SAMPLES];
    uint8_t big[70000];
};

static void make_samples(struct samples *s)
{
    memset(s, 0, sizeof *s);
    for (size_t i = 0; i < sizeof s->big; i++) s->big[i] = (uint8_t)(i * 7 + 3);
    distsup__v1__init__init(&s->init);
    s->init.name = "worker-1";
    s->init.node = "n1@host";
    s->init.supervisor = "default";
    s->init.id = "n1@host/1.2";
    s->init.init.data = (uint8_t *)"41";
    s->init.init.len = 2;
    distsup__v1__call_frame__init(&s->call);
    s->call.ref = 1;
    s->call.payload.data = (uint8_t *)"get";
    s->call.payload.len = 3;
    distsup__v1__call_frame__init(&s->big_call);
    s->big_call.ref = UINT64_MAX;
    s->big_call.payload.data = s->big;
    s->big_call.payload.len = sizeof s->big;
    distsup__v1__cast_frame__init(&s->cast);
    s->cast.payload.data = (uint8_t *)"incr";
    s->cast.payload.len = 4;
    distsup__v1__info_frame__init(&s->info);
    s->info.payload.data = (uint8_t *)"\0\1\2";
    s->info.payload.len = 3;
    distsup__v1__terminate__init(&s->term);
    s->term.reason = "terminated by request";
    distsup__v1__ready__init(&s->ready);
    distsup__v1__reply__init(&s->reply);
    s->reply.ref = 77;
    s->reply.error = "no such key";
    s->reply.code = 5;
    distsup__v1__state_frame__init(&s->state);
    s->state.state.data = (uint8_t *)"12345";
    s->state.state.len = 5;
    for (int i = 0; i < N_SAMPLES; i++) distsup__v1__child_frame__init(&s->f[i]);
    s->f[0].frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_INIT;
    s->f[0].init = &s->init;
    s->f[1].frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_READY;
    s->f[1].ready = &s->ready;
    s->f[2].frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_CALL;
    s->f[2].call = &s->call;
    s->f[3].frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_REPLY;
    s->f[3].reply = &s->reply;
    s->f[4].frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_CAST;
    s->f[4].cast = &s->cast;
    s->f[5].frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_INFO;
    s->f[5].info = &s->info;
    s->f[6].frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_STATE;
    s->f[6].state = &s->state;
    s->f[7].frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_TERMINATE;
    s->f[7].terminate = &s->term;
    s->f[8].frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_CALL;
    s->f[8].call = &s->big_call;
}

/* Asserts that decoded equals want, by comparing their packed forms. */
static void assert_same_frame(const Distsup__V1__ChildFrame *decoded, const Distsup__V1__ChildFrame *want)
{
    assert_non_null(decoded);
    assert_int_equal(decoded->frame_case, want->frame_case);
    size_t la, lb;
    uint8_t *a = packed(decoded, &la), *b = packed(want, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(a, b, la);
    free(a);
    free(b);
}

/* A reader like the sidecar's: bytes arrive in chunks into a dsbuf, whole frames
 * are taken off the front.  Returns how many frames it decoded into out[]. */
struct reader {
    struct dsbuf in;
    Distsup__V1__ChildFrame *out[N_SAMPLES * 4];
    size_t n;
};

static void reader_feed(struct reader *r, const uint8_t *p, size_t n)
{
    assert_int_equal(dsbuf_append(&r->in, p, n), 0);
    for (int guard = 0; guard < N_SAMPLES * 4 + 1; guard++) {
        const uint8_t *body;
        size_t blen, used;
        enum frame_result res =
            frame_split(r->in.data + r->in.off, dsbuf_unread(&r->in), FRAME_DEFAULT_MAX, &body, &blen, &used);
        if (res == FRAME_NEED_MORE) return;
        assert_int_equal(res, FRAME_OK);
        assert_int_equal(used, FRAME_HEADER + blen);
        assert_true(r->n < N_SAMPLES * 4);
        Distsup__V1__ChildFrame *f = frame_decode(body, blen);
        assert_non_null(f);
        r->out[r->n++] = f;
        dsbuf_consume(&r->in, used);
    }
    fail_msg("reader loop did not end");
}

static void reader_free(struct reader *r)
{
    for (size_t i = 0; i < r->n; i++) frame_decode_free(r->out[i]);
    dsbuf_free(&r->in);
    memset(r, 0, sizeof *r);
}

/* The whole sample stream on the wire, frames back to back. */
static struct dsbuf sample_stream(const struct samples *s)
{
    struct dsbuf b = {0};
    for (int i = 0; i < N_SAMPLES; i++) assert_int_equal(frame_append(&b, &s->f[i], FRAME_DEFAULT_MAX), 0);
    return b;
}

/* ---------- round trips ---------- */

static void test_round_trip_every_kind(void **state)
{
    (void)state;
    static struct samples s;
    make_samples(&s);
    for (int i = 0; i < N_SAMPLES; i++) {
        struct dsbuf b = wire(&s.f[i]);
        size_t blen_want;
        uint8_t *body_want = packed(&s.f[i], &blen_want);
        /* header: 4-byte big-endian length of the body */
        assert_int_equal(dsbuf_unread(&b), FRAME_HEADER + blen_want);
        uint32_t hdr =
            ((uint32_t)b.data[0] << 24) | ((uint32_t)b.data[1] << 16) | ((uint32_t)b.data[2] << 8) | b.data[3];
        assert_int_equal(hdr, blen_want);
        assert_memory_equal(b.data + FRAME_HEADER, body_want, blen_want);

        const uint8_t *body;
        size_t blen, used;
        assert_int_equal(frame_split(b.data, b.len, FRAME_DEFAULT_MAX, &body, &blen, &used), FRAME_OK);
        assert_ptr_equal(body, b.data + FRAME_HEADER);
        assert_int_equal(blen, blen_want);
        assert_int_equal(used, b.len);
        Distsup__V1__ChildFrame *f = frame_decode(body, blen);
        assert_same_frame(f, &s.f[i]);
        frame_decode_free(f);
        free(body_want);
        dsbuf_free(&b);
    }
    /* field values survive, not only the bytes */
    struct dsbuf b = wire(&s.f[3]);
    const uint8_t *body;
    size_t blen, used;
    assert_int_equal(frame_split(b.data, b.len, FRAME_DEFAULT_MAX, &body, &blen, &used), FRAME_OK);
    Distsup__V1__ChildFrame *f = frame_decode(body, blen);
    assert_non_null(f);
    assert_int_equal(f->frame_case, DISTSUP__V1__CHILD_FRAME__FRAME_REPLY);
    assert_int_equal(f->reply->ref, 77);
    assert_string_equal(f->reply->error, "no such key");
    assert_int_equal(f->reply->code, 5);
    frame_decode_free(f);
    dsbuf_free(&b);
}

static void test_back_to_back_frames_in_one_buffer(void **state)
{
    (void)state;
    static struct samples s;
    make_samples(&s);
    struct dsbuf b = sample_stream(&s);
    size_t off = 0;
    for (int i = 0; i < N_SAMPLES; i++) {
        const uint8_t *body;
        size_t blen, used;
        assert_int_equal(frame_split(b.data + off, b.len - off, FRAME_DEFAULT_MAX, &body, &blen, &used), FRAME_OK);
        Distsup__V1__ChildFrame *f = frame_decode(body, blen);
        assert_same_frame(f, &s.f[i]);
        frame_decode_free(f);
        off += used;
    }
    assert_int_equal(off, b.len);
    const uint8_t *body;
    size_t blen, used;
    assert_int_equal(frame_split(b.data + off, 0, FRAME_DEFAULT_MAX, &body, &blen, &used), FRAME_NEED_MORE);
    dsbuf_free(&b);
}

/* The stream cut in two at every byte offset: the reader gets the same frames. */
static void test_split_at_every_byte_boundary(void **state)
{
    (void)state;
    static struct samples s;
    make_samples(&s);
    /* Without the 70 KB call, so that every cut of the stream is tried quickly. */
    struct dsbuf b = {0};
    for (int i = 0; i < N_SAMPLES - 1; i++) assert_int_equal(frame_append(&b, &s.f[i], FRAME_DEFAULT_MAX), 0);
    for (size_t cut = 0; cut <= b.len; cut++) {
        struct reader r = {0};
        reader_feed(&r, b.data, cut);
        reader_feed(&r, b.data + cut, b.len - cut);
        assert_int_equal(r.n, N_SAMPLES - 1);
        for (int i = 0; i < N_SAMPLES - 1; i++) assert_same_frame(r.out[i], &s.f[i]);
        assert_int_equal(dsbuf_unread(&r.in), 0);
        reader_free(&r);
    }
    dsbuf_free(&b);
}

/* One byte per read, and uneven chunk sizes, over the whole stream with the large frame. */
static void test_byte_by_byte_and_odd_chunks(void **state)
{
    (void)state;
    static struct samples s;
    make_samples(&s);
    struct dsbuf b = sample_stream(&s);
    struct reader r = {0};
    size_t seen_at[N_SAMPLES + 1] = {0};
    for (size_t i = 0; i < b.len; i++) {
        size_t before = r.n;
        reader_feed(&r, b.data + i, 1);
        if (r.n != before) seen_at[r.n] = i + 1;
    }
    assert_int_equal(r.n, N_SAMPLES);
    for (int i = 0; i < N_SAMPLES; i++) assert_same_frame(r.out[i], &s.f[i]);
    /* each frame comes out on exactly its last byte, not before */
    size_t end = 0;
    for (int i = 0; i < N_SAMPLES; i++) {
        end += FRAME_HEADER + distsup__v1__child_frame__get_packed_size(&s.f[i]);
        assert_int_equal(seen_at[i + 1], end);
    }
    reader_free(&r);

    static const size_t chunks[] = {3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 4096, 1, 65536};
    size_t off = 0;
    for (size_t k = 0; off < b.len; k++) {
        size_t n = chunks[k % (sizeof chunks / sizeof chunks[0])];
        if (n > b.len - off) n = b.len - off;
        reader_feed(&r, b.data + off, n);
        off += n;
        assert_true(k < b.len); /* bounded */
    }
    assert_int_equal(r.n, N_SAMPLES);
    for (int i = 0; i < N_SAMPLES; i++) assert_same_frame(r.out[i], &s.f[i]);
    reader_free(&r);
    dsbuf_free(&b);
}

/* ---------- truncated, oversized, empty, undecodable ---------- */

static void test_truncated_header_needs_more(void **state)
{
    (void)state;
    const uint8_t hdr[4] = {0, 0, 0, 2};
    const uint8_t *body = (const uint8_t *)"untouched";
    size_t blen = 12345, used = 6789;
    for (size_t n = 0; n < FRAME_HEADER; n++) {
        assert_int_equal(frame_split(hdr, n, FRAME_DEFAULT_MAX, &body, &blen, &used), FRAME_NEED_MORE);
        /* outputs untouched when there is no frame */
        assert_string_equal((const char *)body, "untouched");
        assert_int_equal(blen, 12345);
        assert_int_equal(used, 6789);
    }
}

static void test_truncated_body_needs_more(void **state)
{
    (void)state;
    static struct samples s;
    make_samples(&s);
    for (int i = 0; i < N_SAMPLES; i++) {
        struct dsbuf b = wire(&s.f[i]);
        const uint8_t *body;
        size_t blen, used;
        /* every strict prefix is "need more"; the whole frame is OK */
        size_t step = b.len > 4096 ? 997 : 1;
        for (size_t n = 0; n < b.len; n += step)
            assert_int_equal(frame_split(b.data, n, FRAME_DEFAULT_MAX, &body, &blen, &used), FRAME_NEED_MORE);
        assert_int_equal(frame_split(b.data, b.len - 1, FRAME_DEFAULT_MAX, &body, &blen, &used), FRAME_NEED_MORE);
        assert_int_equal(frame_split(b.data, b.len, FRAME_DEFAULT_MAX, &body, &blen, &used), FRAME_OK);
        dsbuf_free(&b);
    }
}

static void test_oversized_announced_length_is_too_big(void **state)
{
    (void)state;
    uint8_t hdr[4];
    const uint8_t *body;
    size_t blen, used;
    /* The header alone decides: no need to wait for the body. */
    put_be32(hdr, FRAME_DEFAULT_MAX + 1);
    assert_int_equal(frame_split(hdr, 4, FRAME_DEFAULT_MAX, &body, &blen, &used), FRAME_TOO_BIG);
    put_be32(hdr, UINT32_MAX);
    assert_int_equal(frame_split(hdr, 4, FRAME_DEFAULT_MAX, &body, &blen, &used), FRAME_TOO_BIG);
    /* Text on stdout: "yes garbage" reads as length 0x79657320. */
    assert_int_equal(frame_split((const uint8_t *)"yes garbage\n", 12, FRAME_DEFAULT_MAX, &body, &blen, &used),
                     FRAME_TOO_BIG);
    /* Exactly the limit is allowed (it waits for the body). */
    put_be32(hdr, FRAME_DEFAULT_MAX);
    assert_int_equal(frame_split(hdr, 4, FRAME_DEFAULT_MAX, &body, &blen, &used), FRAME_NEED_MORE);
    /* A smaller limit given by the caller is honoured. */
    put_be32(hdr, 11);
    assert_int_equal(frame_split(hdr, 4, 10, &body, &blen, &used), FRAME_TOO_BIG);
    put_be32(hdr, 10);
    assert_int_equal(frame_split(hdr, 4, 10, &body, &blen, &used), FRAME_NEED_MORE);
    /* max 0: only empty bodies */
    put_be32(hdr, 1);
    assert_int_equal(frame_split(hdr, 4, 0, &body, &blen, &used), FRAME_TOO_BIG);
}

static void test_zero_length_body(void **state)
{
    (void)state;
    const uint8_t buf[6] = {0, 0, 0, 0, 0xAA, 0xBB};
    const uint8_t *body = NULL;
    size_t blen = 99, used = 99;
    assert_int_equal(frame_split(buf, sizeof buf, FRAME_DEFAULT_MAX, &body, &blen, &used), FRAME_OK);
    assert_int_equal(blen, 0);
    assert_int_equal(used, FRAME_HEADER);
    assert_ptr_equal(body, buf + FRAME_HEADER);
    assert_int_equal(frame_split(buf, 4, 0, &body, &blen, &used), FRAME_OK);
    /* An empty body is a ChildFrame with no frame case: not a frame. */
    assert_null(frame_decode(body, 0));
    /* while Ready, the smallest real frame, is two bytes */
    static struct samples s;
    make_samples(&s);
    struct dsbuf b = wire(&s.f[1]);
    assert_int_equal(dsbuf_unread(&b), FRAME_HEADER + 2);
    dsbuf_free(&b);
}

static void test_undecodable_body(void **state)
{
    (void)state;
    static const struct {
        const char *what;
        const uint8_t *p;
        size_t n;
    } bad[] = {
        {"all 0xff", (const uint8_t *)"\xff\xff\xff\xff\xff", 5},
        {"truncated length-delimited field", (const uint8_t *)"\x12\x05\x0a", 3},
        {"field number 0", (const uint8_t *)"\x00\x01", 2},
        {"unknown field only (no frame case)", (const uint8_t *)"\x78\x01", 2},
        {"text", (const uint8_t *)"hello world", 11},
        {"wire type 7", (const uint8_t *)"\x0f", 1},
        {"Reply with a truncated varint", (const uint8_t *)"\x3a\x02\x08\xff", 4},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        Distsup__V1__ChildFrame *f = frame_decode(bad[i].p, bad[i].n);
        if (f) {
            frame_decode_free(f);
            fail_msg("decoded garbage: %s", bad[i].what);
        }
    }
    /* A valid frame with its body cut short does not decode either: the whole body
     * is one length-delimited field, so every strict prefix is truncated. */
    static struct samples s;
    make_samples(&s);
    for (int i = 0; i < N_SAMPLES; i++) {
        size_t n;
        uint8_t *p = packed(&s.f[i], &n);
        size_t step = n > 4096 ? 331 : 1;
        for (size_t k = 0; k < n; k += step) {
            Distsup__V1__ChildFrame *f = frame_decode(p, k);
            if (f) {
                frame_decode_free(f);
                fail_msg("frame %d cut to %zu of %zu bytes decoded", i, k, n);
            }
        }
        free(p);
    }
    frame_decode_free(NULL); /* allowed */
}

static void test_frame_append_over_the_limit(void **state)
{
    (void)state;
    static struct samples s;
    make_samples(&s);
    size_t n = distsup__v1__child_frame__get_packed_size(&s.f[8]);
    struct dsbuf b = {0};
    assert_int_equal(dsbuf_append(&b, "prefix", 6), 0);
    /* one byte over: refused, and the buffer is as it was */
    assert_int_equal(frame_append(&b, &s.f[8], n - 1), -1);
    assert_int_equal(dsbuf_unread(&b), 6);
    assert_memory_equal(b.data + b.off, "prefix", 6);
    /* exactly at the limit: accepted */
    assert_int_equal(frame_append(&b, &s.f[8], n), 0);
    assert_int_equal(dsbuf_unread(&b), 6 + FRAME_HEADER + n);
    const uint8_t *body;
    size_t blen, used;
    assert_int_equal(frame_split(b.data + 6, b.len - 6, n, &body, &blen, &used), FRAME_OK);
    assert_int_equal(blen, n);
    dsbuf_free(&b);

    /* a payload above the default frame limit cannot be framed at all */
    size_t huge = FRAME_DEFAULT_MAX + 1;
    uint8_t *big = calloc(1, huge);
    assert_non_null(big);
    Distsup__V1__CallFrame cf = DISTSUP__V1__CALL_FRAME__INIT;
    cf.ref = 1;
    cf.payload.data = big;
    cf.payload.len = huge;
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_CALL;
    f.call = &cf;
    assert_int_equal(frame_append(&b, &f, FRAME_DEFAULT_MAX), -1);
    assert_int_equal(dsbuf_unread(&b), 0);
    /* the largest payload that fits: the limit minus the call's own overhead */
    size_t overhead = distsup__v1__child_frame__get_packed_size(&f) - huge;
    cf.payload.len = FRAME_DEFAULT_MAX - overhead - 1; /* varint lengths shrink by at most a byte */
    size_t fits = distsup__v1__child_frame__get_packed_size(&f);
    assert_true(fits <= FRAME_DEFAULT_MAX);
    assert_int_equal(frame_append(&b, &f, FRAME_DEFAULT_MAX), 0);
    assert_int_equal(dsbuf_unread(&b), FRAME_HEADER + fits);
    dsbuf_free(&b);
    free(big);
}

/* ---------- dsbuf ---------- */

static void test_dsbuf_growth(void **state)
{
    (void)state;
    struct dsbuf b = {0};
    assert_int_equal(dsbuf_unread(&b), 0);
    assert_int_equal(dsbuf_reserve(&b, 1), 0);
    assert_int_equal(b.cap, 256);
    assert_int_equal(dsbuf_append(&b, NULL, 0), 0);
    uint8_t chunk[300];
    for (size_t i = 0; i < sizeof chunk; i++) chunk[i] = (uint8_t)i;
    assert_int_equal(dsbuf_append(&b, chunk, sizeof chunk), 0);
    assert_int_equal(b.cap, 512); /* doubled */
    assert_int_equal(dsbuf_unread(&b), 300);
    for (int i = 0; i < 100; i++) assert_int_equal(dsbuf_append(&b, chunk, sizeof chunk), 0);
    assert_int_equal(dsbuf_unread(&b), 30300);
    assert_int_equal(b.cap, 32768);
    for (int i = 0; i < 101; i++) assert_memory_equal(b.data + i * 300, chunk, 300);
    /* a reservation larger than a doubling grows straight to fit */
    assert_int_equal(dsbuf_reserve(&b, 1u << 20), 0);
    assert_true(b.cap - b.len >= 1u << 20);
    assert_int_equal(b.cap & (b.cap - 1), 0); /* still a power of two */
    dsbuf_free(&b);
    assert_null(b.data);
    assert_int_equal(b.len + b.off + b.cap, 0);
    dsbuf_free(&b); /* twice is harmless */
}

static void test_dsbuf_consume_and_compaction(void **state)
{
    (void)state;
    struct dsbuf b = {0};
    uint8_t data[200];
    for (size_t i = 0; i < sizeof data; i++) data[i] = (uint8_t)(i + 1);
    assert_int_equal(dsbuf_append(&b, data, 200), 0);
    assert_int_equal(b.cap, 256);
    /* consuming part leaves the rest readable at off */
    dsbuf_consume(&b, 50);
    assert_int_equal(b.off, 50);
    assert_int_equal(dsbuf_unread(&b), 150);
    assert_memory_equal(b.data + b.off, data + 50, 150);
    /* off below cap/2: a reservation that fits does not move anything */
    assert_int_equal(dsbuf_reserve(&b, 56), 0);
    assert_int_equal(b.off, 50);
    /* off at cap/2 or more: the unread bytes move to the front instead of growing */
    dsbuf_consume(&b, 78);
    assert_int_equal(b.off, 128); /* exactly cap/2 */
    assert_int_equal(dsbuf_reserve(&b, 100), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 72);
    assert_int_equal(b.cap, 256); /* compaction made room: no growth */
    assert_memory_equal(b.data, data + 128, 72);
    /* consuming everything resets to the start */
    dsbuf_consume(&b, 72);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    assert_int_equal(dsbuf_unread(&b), 0);
    /* over-consuming is clamped to empty, not negative */
    assert_int_equal(dsbuf_append(&b, data, 10), 0);
    dsbuf_consume(&b, 11);
    assert_int_equal(dsbuf_unread(&b), 0);
    /* a fully consumed buffer with off > 0 compacts even below cap/2 */
    assert_int_equal(dsbuf_append(&b, data, 20), 0);
    b.off = 20; /* as after reading everything without the reset */
    assert_int_equal(dsbuf_reserve(&b, 1), 0);
    assert_int_equal(b.off, 0);
    assert_int_equal(b.len, 0);
    dsbuf_free(&b);
}

/* Steady streaming through one buffer stays within a bounded capacity. */
static void test_dsbuf_streaming_stays_bounded(void **state)
{
    (void)state;
    struct dsbuf b = {0};
    uint8_t chunk[1000];
    memset(chunk, 0x5a, sizeof chunk);
    for (int i = 0; i < 10000; i++) {
        assert_int_equal(dsbuf_append(&b, chunk, sizeof chunk), 0);
        dsbuf_consume(&b, i % 2 ? 1001 : 999); /* a byte stays behind on every other turn */
    }
    assert_true(dsbuf_unread(&b) <= 1);
    assert_true(b.cap <= 4096);
    dsbuf_free(&b);
}

static void test_dsbuf_reserve_overflow(void **state)
{
    (void)state;
    struct dsbuf b = {0};
    assert_int_equal(dsbuf_append(&b, "abc", 3), 0);
    /* len + n wraps around: refused, buffer unharmed */
    assert_int_equal(dsbuf_reserve(&b, SIZE_MAX), -1);
    assert_int_equal(dsbuf_reserve(&b, SIZE_MAX - 1), -1);
    /* no power of two that large: refused rather than looping */
    assert_int_equal(dsbuf_reserve(&b, SIZE_MAX / 2 + 2), -1);
    assert_int_equal(dsbuf_append(&b, "x", SIZE_MAX), -1);
    assert_int_equal(dsbuf_unread(&b), 3);
    assert_memory_equal(b.data, "abc", 3);
    dsbuf_free(&b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip_every_kind),
        cmocka_unit_test(test_back_to_back_frames_in_one_buffer),
        cmocka_unit_test(test_split_at_every_byte_boundary),
        cmocka_unit_test(test_byte_by_byte_and_odd_chunks),
        cmocka_unit_test(test_truncated_header_needs_more),
        cmocka_unit_test(test_truncated_body_needs_more),
        cmocka_unit_test(test_oversized_announced_length_is_too_big),
        cmocka_unit_test(test_zero_length_body),
        cmocka_unit_test(test_undecodable_body),
        cmocka_unit_test(test_frame_append_over_the_limit),
        cmocka_unit_test(test_dsbuf_growth),
        cmocka_unit_test(test_dsbuf_consume_and_compaction),
        cmocka_unit_test(test_dsbuf_streaming_stays_bounded),
        cmocka_unit_test(test_dsbuf_reserve_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

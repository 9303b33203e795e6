#include "framing/frame.h"

#include <stdlib.h>
#include <string.h>

void dsbuf_free(struct dsbuf *b)
{
    free(b->data);
    memset(b, 0, sizeof *b);
}

size_t dsbuf_unread(const struct dsbuf *b) { return b->len - b->off; }

int dsbuf_reserve(struct dsbuf *b, size_t n)
{
    if (b->off > 0 && (b->off == b->len || b->off >= b->cap / 2)) {
        memmove(b->data, b->data + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
    }
    if (b->cap - b->len >= n) return 0;
    size_t need = b->len + n;
    if (need < b->len) return -1;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < need) {
        if (cap > SIZE_MAX / 2) return -1;
        cap *= 2;
    }
    uint8_t *p = realloc(b->data, cap);
    if (!p) return -1;
    b->data = p;
    b->cap = cap;
    return 0;
}

int dsbuf_append(struct dsbuf *b, const void *p, size_t n)
{
    if (dsbuf_reserve(b, n) != 0) return -1;
    if (n) memcpy(b->data + b->len, p, n);
    b->len += n;
    return 0;
}

void dsbuf_consume(struct dsbuf *b, size_t n)
{
    b->off += n;
    if (b->off >= b->len) b->off = b->len = 0;
}

enum frame_result frame_split(const uint8_t *buf, size_t len, size_t max, const uint8_t **body, size_t *body_len,
                              size_t *consumed)
{
    if (len < FRAME_HEADER) return FRAME_NEED_MORE;
    uint32_t n = ((uint32_t)buf[0] << 24) | ((uint32_t)buf[1] << 16) | ((uint32_t)buf[2] << 8) | (uint32_t)buf[3];
    if (n > max) return FRAME_TOO_BIG;
    if (len - FRAME_HEADER < n) return FRAME_NEED_MORE;
    *body = buf + FRAME_HEADER;
    *body_len = n;
    *consumed = FRAME_HEADER + (size_t)n;
    return FRAME_OK;
}

int frame_append(struct dsbuf *out, const Distsup__V1__ChildFrame *frame, size_t max)
{
    size_t n = distsup__v1__child_frame__get_packed_size(frame);
    if (n > max || n > UINT32_MAX) return -1;
    if (dsbuf_reserve(out, FRAME_HEADER + n) != 0) return -1;
    uint8_t *p = out->data + out->len;
    p[0] = (uint8_t)(n >> 24);
    p[1] = (uint8_t)(n >> 16);
    p[2] = (uint8_t)(n >> 8);
    p[3] = (uint8_t)n;
    size_t packed = distsup__v1__child_frame__pack(frame, p + FRAME_HEADER);
    if (packed != n) return -1;
    out->len += FRAME_HEADER + n;
    return 0;
}

Distsup__V1__ChildFrame *frame_decode(const uint8_t *body, size_t len)
{
    Distsup__V1__ChildFrame *f = distsup__v1__child_frame__unpack(NULL, len, body);
    if (!f) return NULL;
    if (f->frame_case == DISTSUP__V1__CHILD_FRAME__FRAME__NOT_SET) {
        distsup__v1__child_frame__free_unpacked(f, NULL);
        return NULL;
    }
    return f;
}

void frame_decode_free(Distsup__V1__ChildFrame *f)
{
    if (f) distsup__v1__child_frame__free_unpacked(f, NULL);
}

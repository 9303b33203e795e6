/* frame: the child frame protocol's wire codec, and a growable byte buffer.
 *
 * On a child's stdin and stdout each frame is a 4-byte big-endian length N followed
 * by N bytes of a serialized distsup.v1.ChildFrame (docs/child-protocol.md).  This
 * module only splits and joins frames; it knows nothing of processes or fds. */
#ifndef DISTSUP_FRAME_H
#define DISTSUP_FRAME_H

#include <stddef.h>
#include <stdint.h>

#include "distsup/v1/child.pb-c.h"

#define FRAME_HEADER 4u
/* Default and hard ceiling of one frame's body. */
#define FRAME_DEFAULT_MAX (4u * 1024u * 1024u + 64u * 1024u)

/* A growable byte buffer: bytes [off, len) of data are unread. */
struct dsbuf {
    uint8_t *data;
    size_t off, len, cap;
};

void dsbuf_free(struct dsbuf *b);
size_t dsbuf_unread(const struct dsbuf *b);
/* Ensures room for n more bytes at the end (compacting first). 0 or -1 (ENOMEM). */
int dsbuf_reserve(struct dsbuf *b, size_t n);
int dsbuf_append(struct dsbuf *b, const void *p, size_t n);
void dsbuf_consume(struct dsbuf *b, size_t n);

enum frame_result {
    FRAME_OK = 0,        /* *body, *body_len hold one frame; *consumed bytes used */
    FRAME_NEED_MORE = 1, /* not a whole frame yet */
    FRAME_TOO_BIG = 2,   /* the header announces more than max bytes */
};

/* Looks for one whole frame at the start of buf[0..len). */
enum frame_result frame_split(const uint8_t *buf, size_t len, size_t max, const uint8_t **body, size_t *body_len,
                              size_t *consumed);

/* Appends header + packed frame to out.  0, or -1 when out of memory or when the
 * packed frame would exceed max. */
int frame_append(struct dsbuf *out, const Distsup__V1__ChildFrame *frame, size_t max);

/* Unpacks one frame body; NULL if it is not a valid ChildFrame or carries no frame
 * case.  Free with frame_decode_free. */
Distsup__V1__ChildFrame *frame_decode(const uint8_t *body, size_t len);
void frame_decode_free(Distsup__V1__ChildFrame *f);

#endif

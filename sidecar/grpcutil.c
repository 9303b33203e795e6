#include "sidecar/grpcutil.h"

#include <grpc/byte_buffer_reader.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar/log.h"

/* ---------- batches ---------- */

void gu_batch_init(struct gu_batch *b) { memset(b, 0, sizeof *b); }

static grpc_op *add(struct gu_batch *b, grpc_op_type type)
{
    /* A programming error, not a run-time condition: every caller adds at most
     * GU_MAX_OPS distinct operations. */
    if (b->n >= GU_MAX_OPS) abort();
    grpc_op *op = &b->ops[b->n++];
    memset(op, 0, sizeof *op);
    op->op = type;
    return op;
}

void gu_send_initial_metadata(struct gu_batch *b) { add(b, GRPC_OP_SEND_INITIAL_METADATA); }

void gu_recv_initial_metadata(struct gu_batch *b, grpc_metadata_array *md)
{
    add(b, GRPC_OP_RECV_INITIAL_METADATA)->data.recv_initial_metadata.recv_initial_metadata = md;
}

void gu_send_message(struct gu_batch *b, grpc_byte_buffer *msg)
{
    add(b, GRPC_OP_SEND_MESSAGE)->data.send_message.send_message = msg;
}

void gu_recv_message(struct gu_batch *b, grpc_byte_buffer **msg)
{
    add(b, GRPC_OP_RECV_MESSAGE)->data.recv_message.recv_message = msg;
}

void gu_send_status(struct gu_batch *b, grpc_status_code code, grpc_slice *details)
{
    grpc_op *op = add(b, GRPC_OP_SEND_STATUS_FROM_SERVER);
    op->data.send_status_from_server.status = code;
    op->data.send_status_from_server.status_details = details;
}

void gu_send_close_from_client(struct gu_batch *b) { add(b, GRPC_OP_SEND_CLOSE_FROM_CLIENT); }

void gu_recv_close_on_server(struct gu_batch *b, int *cancelled)
{
    add(b, GRPC_OP_RECV_CLOSE_ON_SERVER)->data.recv_close_on_server.cancelled = cancelled;
}

void gu_recv_status_on_client(struct gu_batch *b, grpc_metadata_array *trailing, grpc_status_code *status,
                              grpc_slice *details)
{
    grpc_op *op = add(b, GRPC_OP_RECV_STATUS_ON_CLIENT);
    op->data.recv_status_on_client.trailing_metadata = trailing;
    op->data.recv_status_on_client.status = status;
    op->data.recv_status_on_client.status_details = details;
}

grpc_call_error gu_batch_start(grpc_call *call, const struct gu_batch *b, void *tag, const char *module,
                               const char *what)
{
    grpc_call_error e = grpc_call_start_batch(call, b->ops, b->n, tag, NULL);
    if (e != GRPC_CALL_OK) log_error(module, "grpc_call_start_batch for %s: error %d", what, (int)e);
    return e;
}

/* ---------- byte buffers ---------- */

static grpc_byte_buffer *of_slice(grpc_slice s)
{
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1); /* takes its own reference */
    grpc_slice_unref(s);
    return bb;
}

grpc_byte_buffer *gu_bb_pack(const ProtobufCMessage *msg)
{
    size_t n = protobuf_c_message_get_packed_size(msg);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(msg, GRPC_SLICE_START_PTR(s));
    return of_slice(s);
}

grpc_byte_buffer *gu_bb_take(uint8_t *data, size_t len) { return of_slice(grpc_slice_new(data, len, free)); }

grpc_byte_buffer *gu_bb_borrow(uint8_t *data, size_t len, void (*release)(void *), void *arg)
{
    return of_slice(grpc_slice_new_with_user_data(data, len, release, arg));
}

grpc_slice gu_bb_flatten(grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader rd;
    if (!bb || !grpc_byte_buffer_reader_init(&rd, bb)) return grpc_empty_slice();
    grpc_slice *first = NULL, out;
    if (grpc_byte_buffer_reader_peek(&rd, &first) && GRPC_SLICE_LENGTH(*first) == grpc_byte_buffer_length(bb)) {
        out = grpc_slice_ref(*first); /* one slice already: share it */
    } else {
        grpc_byte_buffer_reader_destroy(&rd);
        if (!grpc_byte_buffer_reader_init(&rd, bb)) return grpc_empty_slice();
        out = grpc_byte_buffer_reader_readall(&rd);
    }
    grpc_byte_buffer_reader_destroy(&rd);
    return out;
}

ProtobufCMessage *gu_bb_unpack(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb)
{
    if (!bb) return NULL;
    grpc_slice s = gu_bb_flatten(bb);
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return m;
}

/* The slices of bb when its bytes are the message's own (not compressed), else NULL. */
static const grpc_slice_buffer *plain_slices(const grpc_byte_buffer *bb)
{
    if (!bb || bb->type != GRPC_BB_RAW || bb->data.raw.compression != GRPC_COMPRESS_NONE) return NULL;
    return &bb->data.raw.slice_buffer;
}

const uint8_t *gu_bb_span(grpc_byte_buffer *bb, size_t off, size_t n)
{
    const grpc_slice_buffer *sb = plain_slices(bb);
    if (!sb) return NULL;
    for (size_t i = 0; i < sb->count; i++) {
        size_t len = GRPC_SLICE_LENGTH(sb->slices[i]);
        if (off < len) return off + n <= len ? GRPC_SLICE_START_PTR(sb->slices[i]) + off : NULL;
        off -= len;
    }
    return NULL;
}

int gu_bb_copy(grpc_byte_buffer *bb, size_t off, uint8_t *dst, size_t n)
{
    grpc_byte_buffer_reader rd;
    if (!bb || !grpc_byte_buffer_reader_init(&rd, bb)) return -1;
    grpc_slice *s;
    while (n > 0 && grpc_byte_buffer_reader_peek(&rd, &s)) {
        size_t len = GRPC_SLICE_LENGTH(*s);
        if (off >= len) {
            off -= len;
            continue;
        }
        size_t take = len - off < n ? len - off : n;
        memcpy(dst, GRPC_SLICE_START_PTR(*s) + off, take);
        dst += take;
        n -= take;
        off = 0;
    }
    grpc_byte_buffer_reader_destroy(&rd);
    return n == 0 ? 0 : -1;
}

/* ---------- completion queues ---------- */

void gu_cq_discard(grpc_completion_queue *cq)
{
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {}
    grpc_completion_queue_destroy(cq);
}

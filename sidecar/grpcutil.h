/* grpcutil: what the API server (sidecar/rpc.c) and the peer links (sidecar/peer/link.c)
 * both do with gRPC C-core: build a batch of operations and start it, turn messages
 * into grpc_byte_buffers and back, and take a completion queue down.
 *
 * No state of its own.  Threads: any; the usual gRPC rule holds (one batch of each
 * kind of operation in flight per call).  Ownership is stated per function: a byte
 * buffer returned here belongs to the caller (grpc_byte_buffer_destroy); one passed
 * in is only read. */
#ifndef DISTSUP_GRPCUTIL_H
#define DISTSUP_GRPCUTIL_H

#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

/* ---------- batches ---------- */

#define GU_MAX_OPS 6

/* The operations of one grpc_call_start_batch, filled in order.  Pointers given to
 * the gu_* adders must stay valid until the batch's tag completes. */
struct gu_batch {
    grpc_op ops[GU_MAX_OPS];
    size_t n;
};

void gu_batch_init(struct gu_batch *b);
void gu_send_initial_metadata(struct gu_batch *b);
void gu_recv_initial_metadata(struct gu_batch *b, grpc_metadata_array *md);
void gu_send_message(struct gu_batch *b, grpc_byte_buffer *msg);
void gu_recv_message(struct gu_batch *b, grpc_byte_buffer **msg);
void gu_send_status(struct gu_batch *b, grpc_status_code code, grpc_slice *details);
/* The client's half-close: it sends nothing more (what it sent before still arrives). */
void gu_send_close_from_client(struct gu_batch *b);
void gu_recv_close_on_server(struct gu_batch *b, int *cancelled);
void gu_recv_status_on_client(struct gu_batch *b, grpc_metadata_array *trailing, grpc_status_code *status,
                              grpc_slice *details);

/* Starts the batch on call with tag.  On an error (logged under `module`, with `what`
 * naming the call) the tag will never complete: the caller drops what it held for it. */
grpc_call_error gu_batch_start(grpc_call *call, const struct gu_batch *b, void *tag, const char *module,
                               const char *what);

/* ---------- byte buffers ---------- */

/* A new byte buffer holding msg packed (one slice, one copy: the packing). */
grpc_byte_buffer *gu_bb_pack(const ProtobufCMessage *msg);

/* A new byte buffer over len malloc'd bytes at data, which it takes: they are freed
 * (free) when gRPC is done with them.  No copy. */
grpc_byte_buffer *gu_bb_take(uint8_t *data, size_t len);

/* A new byte buffer over len bytes at data that stay the caller's: release(arg) is
 * called (on any thread) once gRPC no longer reads them.  No copy. */
grpc_byte_buffer *gu_bb_borrow(uint8_t *data, size_t len, void (*release)(void *), void *arg);

/* The whole content as one slice (the caller unrefs it; empty when bb is unreadable).
 * Copies, unless bb is one uncompressed slice. */
grpc_slice gu_bb_flatten(grpc_byte_buffer *bb);

/* Unpacks a protobuf message from bb (NULL if bb is NULL or it does not decode); the
 * caller frees it with protobuf_c_message_free_unpacked(m, NULL). */
ProtobufCMessage *gu_bb_unpack(const ProtobufCMessageDescriptor *d, grpc_byte_buffer *bb);

/* Bytes [off, off + n) of bb when they lie within one of its slices (no copy; valid
 * while bb lives), else NULL. */
const uint8_t *gu_bb_span(grpc_byte_buffer *bb, size_t off, size_t n);

/* Copies bytes [off, off + n) of bb into dst.  0, or -1 if bb is shorter or unreadable. */
int gu_bb_copy(grpc_byte_buffer *bb, size_t off, uint8_t *dst, size_t n);

/* ---------- completion queues ---------- */

/* Shuts cq down, drains it (completions are dropped: only for a queue whose tags own
 * nothing any more) and destroys it. */
void gu_cq_discard(grpc_completion_queue *cq);

#endif

/* distsup worker helper for C: write a supervised child in a few lines.
 *
 * A worker is a process that distsupd starts; it speaks the child frame protocol
 * (docs/child-protocol.md) on its stdin and stdout.  ds_worker_run() owns both:
 * it reads Init, calls on_init, sends Ready, then dispatches Call, Cast, Info and
 * Terminate frames to the callbacks until the sidecar closes stdin or sends
 * Terminate.  Never write to stdout yourself; log to stderr (the sidecar logs it
 * under the child's name).
 *
 *   static int on_call(void *arg, const uint8_t *p, size_t n, struct ds_reply *r) {
 *       return ds_reply_set(r, "pong", 4);
 *   }
 *   int main(void) {
 *       struct ds_worker_callbacks cb = { .on_call = on_call };
 *       return ds_worker_run(&cb);
 *   }
 */
#ifndef DISTSUP_WORKER_H
#define DISTSUP_WORKER_H

#include <stddef.h>
#include <stdint.h>

struct ds_worker_init {
    const char *supervisor;
    const char *name;    /* the child's name */
    const char *id;      /* this incarnation's id */
    const char *node;    /* the node it runs on */
    const uint8_t *init; /* ChildSpec.init */
    size_t init_len;
    const uint8_t *state; /* the last State sent, after a restart or a move; NULL/0 at first */
    size_t state_len;
};

/* The answer to one call.  Set a payload or an error (not both). */
struct ds_reply;
/* Copies n bytes as the reply payload.  0, or -1 when out of memory. */
int ds_reply_set(struct ds_reply *r, const void *payload, size_t n);
/* Makes the call fail with a gRPC status code (e.g. 3 INVALID_ARGUMENT) and a message. */
int ds_reply_error(struct ds_reply *r, unsigned code, const char *message);

/* The W3C trace context a message came with (docs/observability.md): "" when the
 * caller sent none, or an invalid one.  Valid during the callback only. */
struct ds_trace {
    const char *traceparent;
    const char *tracestate;
};

struct ds_worker_callbacks {
    void *arg;
    /* Optional: filled with the message's trace context before each on_call, on_cast
     * and on_info (point it at a struct ds_trace in your state). */
    struct ds_trace *trace;
    /* Optional.  Non-zero aborts start-up: the worker exits with that code. */
    int (*on_init)(void *arg, const struct ds_worker_init *init);
    /* Optional (calls then fail with UNIMPLEMENTED).  Non-zero return ends the worker
     * with exit code 1 after the reply is sent. */
    int (*on_call)(void *arg, const uint8_t *payload, size_t n, struct ds_reply *reply);
    void (*on_cast)(void *arg, const uint8_t *payload, size_t n); /* optional */
    void (*on_info)(void *arg, const uint8_t *payload, size_t n); /* optional (Send) */
    /* Optional: state to hand to the next incarnation when the child is moved.
     * Return malloc'd bytes (the helper frees them) or NULL for none. */
    uint8_t *(*get_state)(void *arg, size_t *len);
    void (*on_terminate)(void *arg, const char *reason); /* optional */
};

/* Runs the worker until stdin closes or Terminate arrives.  Returns the exit code
 * to return from main: 0 on a clean end, non-zero on a protocol or I/O error
 * (reported on stderr). */
int ds_worker_run(const struct ds_worker_callbacks *cb);

#endif

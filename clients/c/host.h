/* distsup host library for C: run hosted children (docs/hosting.md) in your app.
 *
 * The app attaches to its node's distsupd over the Host stream, says which child
 * kinds it runs, and then runs, in its own process, every child of those kinds the
 * cluster places on that node: one `void *user` per child, thousands per process.
 * The callbacks are those of the worker helper (clients/c/worker.h): init,
 * handle_call, handle_cast, handle_info, terminate, get_state.
 *
 *   static int init(void *arg, const struct ds_host_init *in, void **user, ds_host_child *self) {
 *       long *count = calloc(1, sizeof *count);
 *       if (!count) return -1;             // non-zero: init failed (an abnormal exit)
 *       *user = count;
 *       return 0;
 *   }
 *   static int call(void *user, const uint8_t *p, size_t n, ds_host_reply *r, ds_host_child *self) {
 *       char buf[32];
 *       int len = snprintf(buf, sizeof buf, "%ld", ++*(long *)user);
 *       return ds_host_reply_set(r, buf, (size_t)len);
 *   }
 *   static void release(void *arg, void *user) { free(user); }
 *
 *   struct ds_host_kind counter = {.init = init, .handle_call = call, .release = release};
 *   ds_host *h; ds_error err;
 *   if (ds_host_new("127.0.0.1:50051", NULL, &h, &err) != DS_OK) { ... err.message ... }
 *   ds_host_register(h, "counter", &counter, 0);
 *   int rc = ds_host_run(h, &err);        // until ds_host_stop(h) from another thread
 *   ds_host_free(h);
 *
 * and a client starts children of that kind with ChildSpec.kind = "counter".
 *
 * Semantics (docs/hosting.md, "The semantics a hosted child keeps"):
 *  - Every callback runs on the thread that called ds_host_run (the dispatcher),
 *    one after another: a child handles its Init, then its Calls, Casts and Sends
 *    strictly one at a time, in the order they came.  A slow callback delays every
 *    child of the host (and its answers to the daemon's pings: one that blocks for
 *    the daemon's host_timeout_ms, 10 s by default, loses the session).
 *  - Return values stand for exceptions: non-zero from init, handle_cast or
 *    handle_info is an abnormal exit of that child (the daemon restarts it under
 *    its restart type); non-zero from handle_call fails only that call (UNKNOWN, or
 *    the code given to ds_host_reply_error) and the child runs on.
 *  - A child asks to stop with ds_host_child_stop (normal or abnormal): once the
 *    current callback returns, its get_state is sent as its State (kept by the
 *    daemon and given to its next incarnation), then its Exit.
 *  - Terminate (TerminateChild, a move, a shutdown): terminate(reason) runs, then
 *    get_state is sent as State, then Exit{normal}.
 *  - release(arg, user) runs exactly once for every child whose init succeeded,
 *    when the library forgets it: after its Exit, when the daemon says `drop`, or
 *    when the session ends (every child of a session goes with it).  It only frees:
 *    no handler of the child runs after it, and it must not call this library.
 *  - Frames produced while handling one message from the daemon go up in one
 *    message (at most about 1 MiB each; more is split at frame boundaries).
 *  - A session that ends (the daemon restarted, the network failed, the daemon
 *    refused a frame) is followed by a new one after a backoff of 100 ms doubling to
 *    5 s, reset after each successful attach, until ds_host_stop.
 *
 * Conventions as in distsup.h: functions return a gRPC status code (DS_OK on
 * success) and fill an optional ds_error.  Link with -lgrpc -lgpr -lprotobuf-c and
 * -lpthread (Bazel: deps = ["//clients/c:host"]). */
#ifndef DISTSUP_HOST_H
#define DISTSUP_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "distsup.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ds_host ds_host;
/* One hosted child, as its callbacks see it.  Valid until its release. */
typedef struct ds_host_child ds_host_child;
/* The answer to one call (set in handle_call). */
typedef struct ds_host_reply ds_host_reply;

/* What a child starts with (the Init frame).  Valid during init only. */
struct ds_host_init {
    const char *supervisor;
    const char *name; /* the child's name */
    const char *id;   /* this incarnation's id */
    const char *node; /* the node it runs on (the host's) */
    const char *kind;
    const uint8_t *init; /* ChildSpec.init */
    size_t init_len;
    const uint8_t *state; /* the last State of an earlier incarnation; NULL/0 at first */
    size_t state_len;
};

/* The callbacks of one kind.  Each may be NULL; `self` is the child (for the
 * ds_host_child_* functions, in its own callbacks only), `user` what init set. */
struct ds_host_kind {
    void *arg; /* given to init and release */
    /* Sets *user (NULL by default, and without init) for the child.  Non-zero: init
     * failed, the child exits abnormally, release is not called (free what you
     * allocated). */
    int (*init)(void *arg, const struct ds_host_init *in, void **user, ds_host_child *self);
    /* A Call.  Sets the answer with ds_host_reply_set or ds_host_reply_error (none:
     * an empty payload).  Non-zero: the call fails (UNKNOWN unless an error was set);
     * the child runs on.  NULL: calls fail with UNIMPLEMENTED. */
    int (*handle_call)(void *user, const uint8_t *payload, size_t n, ds_host_reply *reply, ds_host_child *self);
    /* A Cast and a Send.  Non-zero: the child exits abnormally. */
    int (*handle_cast)(void *user, const uint8_t *payload, size_t n, ds_host_child *self);
    int (*handle_info)(void *user, const uint8_t *payload, size_t n, ds_host_child *self);
    /* A stop was asked for (reason from the daemon: "terminate", "shutdown", ...). */
    void (*terminate)(void *user, const char *reason, ds_host_child *self);
    /* State to hand to the next incarnation: malloc'd bytes (the library frees them)
     * and their length in *len, or NULL for none.  Asked after terminate and when the
     * child stops itself. */
    uint8_t *(*get_state)(void *user, size_t *len, ds_host_child *self);
    /* Frees user (see the header comment).  NULL: nothing to free. */
    void (*release)(void *arg, void *user);
};

typedef struct ds_host_options {
    /* The daemon's token and TLS, as for ds_connect (timeout_ms: how long a new
     * session may wait for the daemon's welcome, default 10 s; wait_connected is
     * not used). */
    ds_connect_options connect;
    const char *name; /* for the daemon's logs (e.g. the pod name); NULL: none */
    const ds_kv *labels;
    size_t n_labels;
    /* Optional, called on the dispatcher thread: a session began (the daemon's
     * welcome), a session ended (code and message say why; DS_OK when it was
     * ds_host_stop).  Without on_detach the library writes one line to stderr per
     * session that ends on an error. */
    void *arg;
    void (*on_attach)(void *arg, const char *node, const char *session);
    void (*on_detach)(void *arg, int code, const char *message);
    /* Reconnect backoff: 0 means 100 ms and 5000 ms. */
    uint32_t backoff_min_ms, backoff_max_ms;
} ds_host_options;

/* Makes a host for `target` (a gRPC target as for ds_connect; NULL means
 * DS_DEFAULT_ADDRESS).  opts may be NULL.  Nothing is sent before ds_host_run.
 * Calls grpc_init() (balanced by ds_host_free).  An unreadable token or TLS file
 * fails with DS_INVALID_ARGUMENT. */
int ds_host_new(const char *target, const ds_host_options *opts, ds_host **out, ds_error *err);

/* Registers a kind (1..200 bytes, no whitespace or control characters; at most 64
 * kinds) with its callbacks, copied here.  capacity: the most children of this
 * kind at once, 0 for no limit of its own; the host tells the daemon the sum (0 if
 * any kind has none).  Not while ds_host_run runs.  DS_INVALID_ARGUMENT for a bad or
 * duplicate name, DS_FAILED_PRECONDITION while running. */
int ds_host_register(ds_host *h, const char *kind, const struct ds_host_kind *vtable, uint32_t capacity);

/* Runs the host on the calling thread (its dispatcher) until ds_host_stop: attaches,
 * runs the children, reattaches after a backoff when a session ends.  Returns DS_OK
 * after ds_host_stop; an error only when retrying cannot help: no kind registered
 * (DS_FAILED_PRECONDITION), or a daemon that refuses the host before welcoming it
 * with INVALID_ARGUMENT, UNAUTHENTICATED, PERMISSION_DENIED or UNIMPLEMENTED.  May
 * be called again after it returned. */
int ds_host_run(ds_host *h, ds_error *err);

/* Makes ds_host_run end its session (the daemon restarts the host's children
 * elsewhere, or when a host of their kind comes back) and return.  Thread-safe, and
 * may be called from a callback or before ds_host_run (which then returns at once). */
void ds_host_stop(ds_host *h);

/* Frees the host.  Not while ds_host_run runs.  NULL is fine. */
void ds_host_free(ds_host *h);

/* Children the host runs now.  Thread-safe. */
size_t ds_host_child_count(const ds_host *h);

/* ---- in callbacks ---------------------------------------------------------- */

/* Copies n bytes as the reply payload.  0, or -1 when out of memory. */
int ds_host_reply_set(ds_host_reply *r, const void *payload, size_t n);
/* Makes the call fail with a gRPC status code (e.g. 3 INVALID_ARGUMENT; 0 means 2
 * UNKNOWN) and a message.  0, or -1 when out of memory. */
int ds_host_reply_error(ds_host_reply *r, unsigned code, const char *message);

/* Asks the child to stop once the current callback returns: its State (from
 * get_state) goes up, then Exit{normal, reason}; the daemon restarts it (or not)
 * under its restart type.  reason NULL: "stopped".  0, or -1 when out of memory. */
int ds_host_child_stop(ds_host_child *self, int normal, const char *reason);

/* The child's identity (as in its Init) and the daemon's number for it. */
const char *ds_host_child_name(const ds_host_child *self);
const char *ds_host_child_id(const ds_host_child *self);
const char *ds_host_child_supervisor(const ds_host_child *self);
const char *ds_host_child_kind(const ds_host_child *self);
uint64_t ds_host_child_number(const ds_host_child *self);
void *ds_host_child_user(const ds_host_child *self);
/* The W3C trace context of the message being handled ("" without one). */
const char *ds_host_child_traceparent(const ds_host_child *self);
const char *ds_host_child_tracestate(const ds_host_child *self);

#ifdef __cplusplus
}
#endif

#endif

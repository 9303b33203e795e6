/* core: the supervisor core.  Owns every supervisor, child process, pipe and timer.
 *
 * One reactor thread runs everything here (an epoll loop over the children's pipes
 * and pidfds, a timerfd, and an eventfd that wakes it for queued requests), so the
 * core's state needs no locks.  Other threads hand it requests with core_request
 * and get the answer through a callback; the core never sees a grpc_call.
 *
 * Requests and answers are the API's own protobuf-c messages (supervisor.proto).
 * Status codes are gRPC's (grpc_status_code values). */
#ifndef DISTSUP_CORE_H
#define DISTSUP_CORE_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "sidecar/config.h"
#include "sidecar/events.h"
#include "sidecar/store.h"

struct core;

enum core_op {
    CORE_START_CHILD,     /* StartChildRequest     -> StartChildResponse */
    CORE_TERMINATE_CHILD, /* TerminateChildRequest -> TerminateChildResponse */
    CORE_CHILDREN,        /* ChildrenRequest       -> ChildrenResponse */
    CORE_COUNT_CHILDREN,  /* CountChildrenRequest  -> CountChildrenResponse */
    CORE_WHEREIS,         /* WhereIsRequest        -> WhereIsResponse */
    CORE_WHOIS,           /* WhoIsRequest          -> WhoIsResponse */
    CORE_CALL,            /* CallRequest           -> CallResponse */
    CORE_CAST,            /* CastRequest           -> CastResponse */
    CORE_SEND,            /* SendRequest           -> SendResponse */
    CORE_NODES,           /* NodesRequest          -> NodesResponse */
    CORE_NODE_FOR,        /* NodeForRequest        -> NodeForResponse */
    CORE_MINE,            /* MineRequest           -> MineResponse */
    CORE_OP_COUNT
};

/* code 0 (OK) comes with reply; any other code with message and reply NULL.  reply
 * and message are valid only during the call: serialize, don't keep. */
typedef void (*core_done_fn)(void *arg, int code, const char *message,
                             const ProtobufCMessage *reply);

/* Builds the supervisors of cfg and loads the children stored in st (they start
 * when core_start runs).  cfg and st must outlive the core.  NULL + err on failure. */
struct core *core_new(const struct config *cfg, struct store *st, char *err, size_t errlen);

/* Starts the reactor thread, which (re)starts the stored children. */
int core_start(struct core *c, char *err, size_t errlen);

/* Hands a request to the reactor.  req (an unpacked message of the op's request
 * type) now belongs to the core.  deadline_ms is an absolute CLOCK_MONOTONIC time
 * in ms after which a CALL gives DEADLINE_EXCEEDED (0: the default timeout).
 * done is called exactly once, from the reactor thread. */
void core_request(struct core *c, enum core_op op, ProtobufCMessage *req, uint64_t deadline_ms,
                  core_done_fn done, void *arg);

/* The bus Watch subscribes to. */
struct event_bus *core_events(struct core *c);

/* 1 if a supervisor of that name exists ("" = "default"). Thread-safe. */
int core_has_supervisor(const struct core *c, const char *name);

/* Stops every child as its spec says (Terminate frame, SIGTERM, SIGKILL after
 * shutdown_ms), fails what is still queued with UNAVAILABLE, and joins the reactor.
 * Stored specs stay: the children start again with the next daemon. */
void core_shutdown(struct core *c);
void core_free(struct core *c);

uint64_t core_now_ms(void); /* CLOCK_MONOTONIC in ms */

#endif

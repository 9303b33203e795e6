/* requests: the handlers of the core's operations (one per row of sidecar/ops.h):
 * StartChild (with the directory node's part: the one place a name is reserved
 * while it is placed, so concurrent starts of one name start it once), Place,
 * TerminateChild, the listings, Call / Cast / Send (run here, or forwarded to the
 * child's node), Nodes, NodeFor and Mine.
 *
 * Threads: the reactor's only. */
#ifndef DISTSUP_REQUESTS_H
#define DISTSUP_REQUESTS_H

#include "sidecar/reactor.h"

#define DEFAULT_CALL_TIMEOUT_MS 5000

/* Runs one request; req stays the caller's (handlers may take parts of it, setting
 * them NULL).  deadline: absolute monotonic ms (0: none).  flags REQ_LOCAL: it came
 * from another node, answer here.  done is called exactly once. */
void requests_run(struct core *c, int op, ProtobufCMessage *req, uint64_t deadline, unsigned flags, answer_fn done,
                  void *arg);

/* The held requests that are due are asked again; 1 while some are held (the tick must
 * go on). */
int requests_tick(struct core *c, uint64_t now);
/* The end: every held request fails UNAVAILABLE. */
void requests_fail_held(struct core *c);

#endif

/* core: the supervisor core.  Owns every supervisor, child process, pipe and timer.
 *
 * One reactor thread runs everything here (an epoll loop over the children's pipes
 * and pidfds, a timerfd, and an eventfd that wakes it for queued requests), so the
 * core's state needs no locks.  Other threads hand it requests with core_request
 * and get the answer through a callback; the core never sees a grpc_call.
 *
 * Requests and answers are the API's own protobuf-c messages (supervisor.proto).
 * Status codes are gRPC's (grpc_status_code values).
 *
 * In cluster mode (docs/cluster.md) the core is also the cluster's brain on this
 * node: it keeps the other nodes' children (a registry per supervisor, cached in the
 * store), routes each request to the node that must answer it (a StartChild to the
 * name's directory node, a Call to the child's node), re-homes the children of a
 * node that went down, moves children when nodes join, resolves duplicate names
 * after a partition, and holds its own children back until it has synced with its
 * peers.  It talks to the other nodes only through the peer module.
 *
 * This header is the façade; the core's parts and who decides what are listed in
 * sidecar/reactor.h. */
#ifndef DISTSUP_CORE_H
#define DISTSUP_CORE_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "sidecar/answer.h"
#include "sidecar/config.h"
#include "distsup/v1/peer.pb-c.h"
#include "sidecar/events.h"
#include "sidecar/ops.h"
#include "sidecar/store.h"

struct core;

/* The operations are the public rows of sidecar/ops.h (enum core_op). */

/* How a request is answered: sidecar/answer.h. */
typedef answer_fn core_done_fn;

/* Builds the supervisors of cfg and loads the children stored in st (they start
 * when core_start runs).  cfg and st must outlive the core.  NULL + err on failure. */
struct core *core_new(const struct config *cfg, struct store *st, char *err, size_t errlen);

/* Starts the reactor thread, which (re)starts the stored children (in cluster mode
 * once it has synced with its peers). */
int core_start(struct core *c, char *err, size_t errlen);

/* The API address as bound (HOST:PORT with the real port), for Nodes.  Before core_start. */
void core_set_address(struct core *c, const char *api_address);

/* Cluster mode: the peer module to talk through.  Before core_start. */
struct peer;
void core_set_peer(struct core *c, struct peer *p);

/* The metrics registry to count into (NULL: off); it must outlive the core.  Before
 * core_start. */
struct metrics;
void core_set_metrics(struct core *c, struct metrics *m);
/* Asks the reactor to publish the gauges it owns (children by state, nodes up and
 * down, quorum) into the registry and waits for it, at most 1 s (then the last
 * values stay).  Thread-safe; the metrics collector (metrics_set_collector). */
void core_publish_metrics(void *core);

/* The peer module's news, queued for the reactor (thread-safe, never blocks). */
void core_node_up(struct core *c, const Distsup__V1__Join *join);
void core_node_down(struct core *c, const char *node, int clean);
/* 0, or -1 (nothing queued) when CORE_NEWS_BUDGET bytes of messages from the peers
 * wait for the reactor already: a peer cannot make the daemon hold more. */
#define CORE_NEWS_BUDGET (256u << 20)
int core_cluster_message(struct core *c, const char *node, const uint8_t *data, size_t len);
void core_peers_settled(struct core *c);

/* Hands a request (a public op) to the reactor.  req (an unpacked message of the
 * op's request type) now belongs to the core.  deadline_ms is an absolute
 * CLOCK_MONOTONIC time in ms after which a CALL gives DEADLINE_EXCEEDED (0: the
 * default timeout).  done is called exactly once: from the reactor thread, or at
 * once from this one with RESOURCE_EXHAUSTED when CORE_QUEUE_MAX requests are
 * already waiting for the reactor (backpressure), or UNAVAILABLE after shutdown. */
#define CORE_QUEUE_MAX 65536
void core_request(struct core *c, enum core_op op, ProtobufCMessage *req, uint64_t deadline_ms, core_done_fn done,
                  void *arg);

/* Host streams (hosted children, docs/hosting.md; sidecar/host.h).  The API's side
 * opens one per Host call with the port the reactor drives it through, hands it each
 * message the app sends (after the reactor asked for it: port->more), and says
 * once when the stream is over.  The reactor calls port->release exactly once, after
 * which the API side must not use the handle again: when it has processed the
 * stream's end, or when the reactor stops.  A post that fails (the reactor has
 * stopped) is dropped: the reactor releases every port before core_shutdown returns.
 * Thread-safe. */
struct host_port;
struct core_host;
/* Sets *out to the stream's handle before the reactor can use the port.  0, or -1
 * when out of memory or the daemon is stopping (*out is NULL, nothing was posted and
 * the port will not be released: end the call yourself). */
int core_host_open(struct core *c, const struct host_port *port, struct core_host **out);
/* A HostUp as received (copied). */
void core_host_message(struct core *c, struct core_host *h, const uint8_t *data, size_t len);
/* The stream is over; the last call for h. */
void core_host_closed(struct core *c, struct core_host *h);

/* The bus Watch subscribes to. */
struct event_bus *core_events(struct core *c);

/* 1 if a supervisor of that name exists ("" = "default"). Thread-safe. */
int core_has_supervisor(const struct core *c, const char *name);

/* Stops every child as its spec says (Terminate frame, SIGTERM, SIGKILL after
 * shutdown_ms), fails what is still queued with UNAVAILABLE, and joins the reactor.
 * Stored specs stay: the children start again with the next daemon.  In cluster
 * mode, when other nodes are up, it first hands its children to them (a graceful
 * leave: each child's State is captured and it starts on its new node), then tells
 * the peers it leaves. */
void core_shutdown(struct core *c);
void core_free(struct core *c);

uint64_t core_now_ms(void); /* CLOCK_MONOTONIC in ms */

#endif

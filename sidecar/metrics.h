/* metrics: the daemon's numbers, in the Prometheus text exposition format on
 * metrics_listen (GET /metrics, served by libmicrohttpd; off by default).
 *
 * One registry (struct metrics), made and owned by main.c and handed down to the
 * parts that count (core, supervise, store, peer links).  Every function that
 * updates a number takes a NULL registry as "metrics are off" and does nothing, so
 * the parts never check.  docs/observability.md lists every metric.
 *
 * Updates are relaxed atomic operations on the registry's fixed arrays: no lock, no
 * allocation.  Numbers labelled by supervisor are indexed by the supervisor's place
 * in config.sups (the sup_config pointer given is turned into it).
 *
 * Gauges that describe state the reactor owns (children by state, nodes up and down,
 * quorum) are not read from the HTTP thread: on each scrape the registry calls the
 * collector set by main (metrics_set_collector), which asks the reactor to publish
 * them (core.c) and waits a bounded time; a busy reactor means the last published
 * values are served.
 *
 * Threads: updates from any thread; the HTTP server has one thread of its own
 * (libmicrohttpd's internal polling thread), which renders a scrape. */
#ifndef DISTSUP_METRICS_H
#define DISTSUP_METRICS_H

#include <stddef.h>
#include <stdint.h>

#include "sidecar/config.h"

struct metrics;

/* Counters per supervisor. */
enum metric_sup_counter {
    MC_STARTS,          /* processes started (every incarnation) */
    MC_RESTARTS,        /* restarts scheduled by the restart policy */
    MC_START_FAILURES,  /* could not spawn, or died / timed out before Ready */
    MC_EXITS_NORMAL,    /* exit code 0 */
    MC_EXITS_ABNORMAL,  /* exit code != 0 */
    MC_EXITS_SIGNAL,    /* killed by a signal */
    MC_RESTART_BOUND,   /* restart bound reached: the child FAILED */
    MC_CASTS,           /* Casts written to a child here */
    MC_CALLS_TIMED_OUT, /* Calls answered DEADLINE_EXCEEDED (where the client asked) */
    MC_CALLS_REFUSED,   /* Calls refused: the child's mailbox was full */
    MC_NSUP_COUNTERS
};

/* Children of this node by state (the API's ChildState names), per supervisor. */
enum metric_child_state { MS_STARTING, MS_RUNNING, MS_STOPPING, MS_RESTARTING, MS_FAILED, MS_SUSPENDED, MS_NSTATES };

/* Histograms per supervisor. */
enum metric_sup_hist {
    MH_CALL_LOCAL,     /* Call to a child on this node */
    MH_CALL_FORWARDED, /* Call to a child on another node */
    MH_START_CHILD,    /* StartChild */
    MH_CAST_LOCAL,     /* Cast to a child on this node */
    MH_CAST_FORWARDED, /* Cast to a child on another node */
    MH_NSUP_HISTS
};

/* Node-wide counters. */
enum metric_counter {
    MN_STORE_WRITES_FAILED,
    MN_PEER_BYTES_SENT,
    MN_PEER_BYTES_RECEIVED,
    MN_PEER_MESSAGES_SENT,
    MN_PEER_MESSAGES_RECEIVED,
    MN_PEER_SEALED_DROPPED, /* sealed packets that did not open (or were replays) */
    MN_HS_FAIL_UNTRUSTED,   /* handshake failures, by reason */
    MN_HS_FAIL_BAD_MESSAGE,
    MN_HS_FAIL_TIMEOUT,
    MN_HS_FAIL_OTHER,
    MN_FAILOVERS,     /* node-down (not a clean leave) events handled */
    MN_REHOMED,       /* children of a down node re-homed by this node (their directory) */
    MN_MOVES,         /* moves started from this node */
    MN_DUPLICATES,    /* duplicate names resolved (this node's copy stopped) */
    MN_HOSTS_LEFT,    /* Host sessions that ended, by why: the app left, */
    MN_HOSTS_TIMEOUT, /* ... it was silent for host_timeout_ms, */
    MN_HOSTS_REFUSED, /* ... it broke the protocol (or max_hosts) */
    MN_NCOUNTERS
};

/* Node-wide gauges. */
enum metric_gauge {
    MG_PEER_LINKS_UP,
    MG_NODES_UP,       /* nodes of the cluster up, this one included */
    MG_NODES_DOWN,     /* known nodes that are down */
    MG_QUORUM,         /* 1 when this node has quorum (always 1 without quorum mode) */
    MG_HOSTS,          /* Host sessions attached */
    MG_HOSTED_RUNNING, /* hosted children on a host here */
    MG_HOSTED_WAITING, /* hosted children waiting for a host of their kind here */
    MG_NGAUGES
};

/* A registry for cfg's supervisors (cfg must outlive it).  NULL when out of memory. */
struct metrics *metrics_new(const struct config *cfg);
/* Serves GET /metrics on listen (HOST:PORT; port 0 picks one, *port gets it).
 * 0, or -1 with err. */
int metrics_serve(struct metrics *m, const char *listen, int *port, char *err, size_t errlen);
/* Stops the HTTP server (if any; idempotent): no scrape runs once it returns. */
void metrics_stop(struct metrics *m);
/* metrics_stop, then frees the registry. */
void metrics_free(struct metrics *m);

/* Called at each scrape from the HTTP thread before rendering: publish the gauges
 * (metrics_set_*).  Set before metrics_serve. */
typedef void (*metrics_collect_fn)(void *arg);
void metrics_set_collector(struct metrics *m, metrics_collect_fn fn, void *arg);

/* Monotonic nanoseconds, for the histograms. */
uint64_t metrics_now_ns(void);

void metrics_sup_inc(struct metrics *m, const struct sup_config *sup, enum metric_sup_counter k);
void metrics_sup_observe(struct metrics *m, const struct sup_config *sup, enum metric_sup_hist h, uint64_t ns);
void metrics_set_children(struct metrics *m, const struct sup_config *sup, const uint64_t counts[MS_NSTATES]);
/* Mailbox depth of sup's children here: calls written and awaiting their reply,
 * summed over the children and in the fullest one. */
void metrics_set_mailbox(struct metrics *m, const struct sup_config *sup, uint64_t total, uint64_t max);
void metrics_add(struct metrics *m, enum metric_counter k, uint64_t n);
void metrics_set(struct metrics *m, enum metric_gauge g, int64_t v);
void metrics_gauge_add(struct metrics *m, enum metric_gauge g, int64_t d);
/* The round trip to another node, measured on its link (distsup_peer_rtt_seconds{peer});
 * seconds < 0 forgets the node (it is down).  At most METRICS_MAX_PEERS nodes; the
 * rest are not shown.  Thread-safe (a mutex: the peer ticker calls it, a few times a
 * second). */
#define METRICS_MAX_PEERS 1024
void metrics_set_peer_rtt(struct metrics *m, const char *peer, double seconds);
void metrics_store_write(struct metrics *m, uint64_t ns); /* one SQLite write (or commit) */

/* The whole exposition as it would be scraped now (without calling the collector);
 * *len its length.  The caller frees it.  NULL when out of memory. */
char *metrics_render(struct metrics *m, size_t *len);

#endif

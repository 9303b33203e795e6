/* reactor: the supervisor core's state, as the reactor thread holds it, and the
 * helpers every part of the core uses on it: the supervisors and their child
 * tables, this node's view of the cluster's nodes, the events of a child, and
 * starting a child here (start_local).
 *
 * Private to the core (//sidecar:core and the layers it is built from); the rest of
 * the daemon sees only sidecar/core.h.  The parts of the core, each on top of the
 * one before:
 *
 *   reactor.c           this state and its helpers
 *   cluster/nodes.c     node table, quorum, directory and placement   (cluster.h)
 *   cluster/forward.c   requests run on another node, with deadlines (cluster.h)
 *   cluster/registry.c  other nodes' children, snapshots, duplicates (cluster.h)
 *   cluster/failover.c  sync at start-up, re-homing a down node's children (cluster.h)
 *   cluster/moves.c     moves after a join, pinning home, a graceful leave (cluster.h)
 *   requests.c          the handlers of each op                      (requests.h)
 *   core.c              the façade: queue, tick, reactor thread, life cycle (core.h)
 *
 * A lower part reaches a higher one only through struct reactor_hooks, which core.c
 * fills in.  Threads: the reactor's only (core.c's queue is the one door in). */
#ifndef DISTSUP_REACTOR_H
#define DISTSUP_REACTOR_H

#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "distsup/v1/peer.pb-c.h"
#include "distsup/v1/supervisor.pb-c.h"
#include "sidecar/answer.h"
#include "sidecar/config.h"
#include "sidecar/events.h"
#include "sidecar/host.h"
#include "sidecar/loop.h"
#include "sidecar/placement.h"
#include "sidecar/registry.h"
#include "sidecar/store.h"
#include "sidecar/supervise.h"

#define REQ_LOCAL 1u /* a request from another node: run it here, never forward it again */
#define REQ_HELD 2u  /* a held request asked again (requests.c): its answer goes back to the hold */

struct reservation {
    struct reservation *next;
    char *name;
};

struct sup {
    const struct sup_config *cfg;
    struct child **table; /* name hash of the children that run here */
    size_t table_size, count;
    struct child *head, *tail; /* in start order */
    struct registry *remote;   /* the other nodes' children */
    struct placement *strategy;
    struct reservation *reserved; /* names this directory node is placing */
    char **eligible;              /* cfg->nodes split; NULL = every node */
    size_t n_eligible;
    unsigned moves; /* moves under way */
};

/* A node of the cluster as this one sees it; nodes[0] is this node. */
struct node {
    char *name, *api, *peer_addr;
    int up, seen, leaving, self;
    uint64_t boot_id, epoch;
    uint32_t weight;
    struct ds_label *labels;
    size_t n_labels;
    char **kinds; /* kinds of hosted children it runs now (NodeKinds; this node: c->hosts) */
    size_t n_kinds;
    int snapshot_done; /* its Snapshot arrived since it came up */
    /* cluster/authz.c: when it came back after this node had declared it down (0:
     * never), so that copies it made while apart may win over ours for a while */
    uint64_t returned_at;
    unsigned fwd_in; /* its requests running here (cluster/forward.c caps them) */
    uint64_t refused_since;
    unsigned refused_logged, refused_quiet; /* refusals logged / not logged this second */
};

/* A request sent to another node, waiting for its answer (cluster/forward.c). */
struct fwd {
    struct fwd *next;
    uint64_t id;
    struct node *to;
    int op;
    uint64_t deadline; /* answered DEADLINE_EXCEEDED when no answer came by then */
    answer_fn done;
    void *arg;
};

struct core;

/* Upward calls: from the reactor's helpers into the cluster, and from the cluster
 * into the request handlers. */
struct reactor_hooks {
    void (*announce)(struct core *c, struct child *ch);                          /* its new state */
    void (*announce_gone)(struct core *c, struct child *ch, const char *reason); /* gone for good */
    void (*broadcast_event)(struct core *c, const Distsup__V1__Event *ev);
    void (*moved_out)(struct core *c, struct child *ch); /* start it on moving_to */
    void (*run_op)(struct core *c, int op, ProtobufCMessage *req, uint64_t deadline, unsigned flags, answer_fn done,
                   void *arg);
    void (*continue_reconcile)(struct core *c); /* run reconcile again soon, after other work */
};

struct core {
    const struct config *cfg;
    struct store *store;
    struct event_bus *bus;
    struct loop *loop;
    struct sv sv; /* the children's state machine */
    struct reactor_hooks hooks;
    struct sup *sups;
    size_t n_sups;
    pthread_t thread;
    int thread_started;
    int shutting_down;         /* stop_all ran */
    struct child *graveyard;   /* removed children, freed at the end of the turn */
    struct child *ticking;     /* children with a timer, calls or held output: the tick's (tick_watch) */
    struct child *stored_wait; /* started children whose StartChild waits for the turn's commit */
    char data_dir[PATH_MAX];
    /* cluster */
    struct peer *peer;   /* NULL: a single node */
    struct node **nodes; /* nodes[0] is this node */
    size_t n_nodes;
    struct fwd *fwds;
    uint64_t next_fwd_id;
    uint64_t started;    /* monotonic ms at core_start */
    uint64_t sync_since; /* when the current wait for sync began */
    int settled;         /* the peer module made its first contact round */
    int synced;          /* our own children may run (cluster: after sync) */
    int quorum;          /* 1 unless quorum mode and a minority */
    int leaving;         /* graceful leave under way */
    int leave_at_end;    /* ... handed off: say Leave once what could not move has stopped */
    uint64_t leave_deadline;
    uint64_t rebalance_at; /* 0: none due */
    uint64_t reconcile_at; /* 0: none due */
    int reconcile_posted;  /* a continuation of reconcile is queued */
    /* where the continuation resumes (cluster/failover.c): a supervisor and the name
     * of the registry entry the last batch stopped before (NULL: from the start) */
    size_t reconcile_sup;
    char *reconcile_from;
    int reconcile_resume;      /* a cursor is set */
    int reconcile_continuing;  /* this reconcile is the queued continuation (only it resumes) */
    struct held *held;         /* messages to moving children, to ask again (requests.c) */
    _Atomic size_t news_bytes; /* bytes of peer messages queued for the reactor (core.c) */
    uint64_t regained_at;      /* quorum came back then: the nodes still down get time to reappear */
    int lost_quorum;           /* it had quorum and lost it at least once */
    /* memory back to the system after churn (core.c, maybe_trim) */
    size_t trim_peak;    /* most processes running since the last trim */
    uint64_t trimmed_at; /* when the last trim ran */
    uint64_t rewrite_at; /* the store is dirty: when to rewrite its children next (store_rewrite_children) */
    int trim_due;        /* the count dropped a lot: trim when the rate allows */
    /* metrics (core.c): a scrape asks the reactor to publish its gauges and waits */
    pthread_mutex_t metrics_mu;
    pthread_cond_t metrics_cv;
    uint64_t metrics_gen; /* publications so far, under metrics_mu */
    int metrics_sync;     /* metrics_mu and metrics_cv were initialised */
    /* hosted children (sidecar/host.h): the sessions, and core.c's handles of the
     * Host streams (each released once: at its end, or when the reactor stops) */
    struct hosts *hosts;
    struct core_host *host_handles;
};

uint64_t reactor_now_ms(void); /* CLOCK_MONOTONIC in ms */
int64_t reactor_wall_ms(void);

/* ---------- supervisors and their children ---------- */

const char *sup_name_of(const char *name); /* "" is "default" */
struct sup *find_sup(struct core *c, const char *name);
/* The supervisor, or NULL after answering NOT_FOUND (listing the configured ones). */
struct sup *need_sup(struct core *c, const char *name, answer_fn done, void *arg);
struct child *find_child(struct sup *s, const char *name);
int sup_insert(struct sup *s, struct child *ch); /* 0 or -1 (out of memory) */
void sup_unlink(struct sup *s, struct child *ch);
static inline struct sup *sup_of(const struct child *ch) { return ch->owner; }

/* Removes the child from its supervisor and the store (and tells the cluster); freed
 * at the end of the turn. */
void remove_child(struct core *c, struct child *ch, const char *reason);

/* Starts a child here: the spec (taken) is stored, then its process started; done
 * answers when it is ready.  incarnation: 0 for a new child, else the one to run
 * (re-homed or moved); state: handed-off state for its Init, or NULL; rehomed_from and
 * rehomed_from_inc: for a failover copy, the node its predecessor ran on and that
 * predecessor's incarnation, else NULL and 0. */
void start_local(struct core *c, struct sup *s, Distsup__V1__ChildSpec *spec, uint64_t incarnation,
                 const ProtobufCBinaryData *state, const char *rehomed_from, uint64_t rehomed_from_inc, answer_fn done,
                 void *arg);
/* start_local for a client's StartChild with a deadline (monotonic ms, 0: none): a
 * FRAMES child's Ready wait ends early enough to answer before it (supervise.h,
 * answer_by). */
void start_local_by(struct core *c, struct sup *s, Distsup__V1__ChildSpec *spec, uint64_t deadline, answer_fn done,
                    void *arg);

/* A lifecycle event of a child: to Watch subscribers and, in a cluster, to the peers. */
void emit(struct core *c, struct child *ch, Distsup__V1__EventKind kind, int exit_code, int sig, const char *reason);

/* Stops every child (each parked: its spec stays on disk), fails what waits on them. */
void stop_all(struct core *c);

/* The tick runs sv_tick for ch until it answers 0 (the tick visits only these
 * children, not all of them); unwatch before ch is freed. */
void tick_watch(struct core *c, struct child *ch);
void tick_unwatch(struct core *c, struct child *ch);

/* Commits the turn's batch, then answers the StartChild of every child started in
 * the turn (sv_hooks.answer_durable): one fsync for all of them.  At the end of
 * each turn, before its removed children are freed. */
void answer_stored(struct core *c);
/* When a write or a commit failed (store_dirty): every child is written again (at most
 * once a second), so that what is acknowledged from then on is on disk. */
void repair_store(struct core *c, uint64_t now);

/* The hooks of struct sv, over this core (reactor.c). */
void reactor_sv_hooks(struct core *c, struct sv_hooks *h);

/* Deep copies (NULL when out of memory). */
Distsup__V1__ChildInfo *info_dup(const Distsup__V1__ChildInfo *in);
Distsup__V1__ChildSpec *spec_dup(const Distsup__V1__ChildSpec *in);

#endif

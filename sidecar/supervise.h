/* supervise: the life of one child, as a state machine.  The whole policy is one
 * table, actions[state][event] in supervise.c (in the style of s6-supervise): a
 * child's state and the event that happened pick one action, which may change the
 * state, start or signal the process, arm the child's timer, emit events and answer
 * the requests that wait on the child.  Restart bounds and backoff (OTP's
 * DynamicSupervisor rules), the Ready timeout, stop escalation (Terminate frame,
 * SIGTERM at shutdown_ms/2, SIGKILL at shutdown_ms) and the mailbox of calls
 * waiting for their replies all live here.
 *
 * What a stopped process leads to depends on why it was stopped (enum sv_why): a
 * TerminateChild removes it, a move hands it to its new node, a lost quorum
 * suspends it, a daemon shutdown parks it; a process that exits on its own is
 * restarted under its restart type and bounds.
 *
 * Below: the process, through struct sv_proc_ops (sv_os_procs() is the real one,
 * over sidecar/proc.c; unit tests pass a fake).  Above: the core, through struct
 * sv_hooks (events, persistence, removal, moves) and its clock.
 *
 * Threads: the reactor's only.  Ownership: a child owns its spec, name, calls,
 * waiters and handoff state; sv_child_free frees them. */
#ifndef DISTSUP_SUPERVISE_H
#define DISTSUP_SUPERVISE_H

#include <stddef.h>
#include <stdint.h>

#include "distsup/v1/child.pb-c.h"
#include "distsup/v1/supervisor.pb-c.h"
#include "sidecar/answer.h"
#include "sidecar/config.h"
#include "sidecar/loop.h"
#include "sidecar/metrics.h"
#include "sidecar/proc.h"
#include "sidecar/spec.h"

enum sv_state {
    SV_IDLE,     /* no process, none scheduled (held back: SUSPENDED) */
    SV_STARTING, /* process started, waiting for its Ready frame */
    SV_RUNNING,
    SV_STOP_FRAME, /* stopping: Terminate frame sent */
    SV_STOP_TERM,  /* stopping: SIGTERM sent */
    SV_STOP_KILL,  /* stopping: SIGKILL sent */
    SV_BACKOFF,    /* waiting out its restart delay */
    SV_FAILED,     /* restart bound reached */
    SV_NSTATES
};

enum sv_event {
    SV_EV_START,   /* start a new incarnation */
    SV_EV_READY,   /* its Ready frame */
    SV_EV_EXIT,    /* its process was reaped */
    SV_EV_TIMEOUT, /* its timer fired */
    SV_EV_STOP,    /* stop it (with a why) */
    SV_NEVENTS
};

/* Why it is being stopped, by priority: a later stop with a higher why overrides. */
enum sv_why {
    SV_WHY_NONE,    /* not stopping: an exit is its own (restart policy) */
    SV_WHY_PARK,    /* the daemon shuts down: kept on disk */
    SV_WHY_SUSPEND, /* no quorum: kept, to start again when it is back */
    SV_WHY_MOVE,    /* moving: its State goes to its new node */
    SV_WHY_REMOVE,  /* terminated (or a duplicate): gone for good */
};

struct pending_call {
    struct pending_call *next, *prev;
    uint64_t ref, deadline;
    answer_fn done;
    void *arg;
};

struct waiter {
    struct waiter *next;
    answer_fn done;
    void *arg;
};

struct child {
    /* the owner's (a supervisor's table; sidecar/reactor.c) */
    struct child *hnext;                 /* name hash chain */
    struct child *next, *prev;           /* the supervisor's list, in start order */
    struct child *dead_next;             /* graveyard: freed at the end of a loop turn */
    struct child *tick_next, *tick_prev; /* the children sv_tick must see (sv_hooks.tick) */
    int on_tick;
    struct child *stored_next; /* its StartChild waits for the turn's commit (answer_durable) */
    int stored_wait;
    void *owner;               /* its supervisor */
    int dead;                  /* removed: freed soon, ignore it */
    char *moving_to;           /* a move to this node is under way (cluster/moves.c) */
    uint64_t announced_inc;    /* the incarnation whose spec the peers have (cluster/registry.c) */
    char *rehomed_from;        /* a failover copy: its predecessor's node (ChildInfo.rehomed_from) */
    uint64_t rehomed_from_inc; /* ... and incarnation */
    /* set at creation */
    char *name;
    Distsup__V1__ChildSpec *spec; /* owned */
    const struct sup_config *cfg;
    /* the machine's */
    enum sv_state st;
    enum sv_why why;
    char *stop_reason;      /* why it was stopped, for its events (NULL: its exit) */
    int start_timed_out;    /* killed for want of a Ready frame */
    uint64_t answer_by;     /* set before sv_start: the StartChild's deadline (0: none); the
                               Ready wait ends early enough to answer by then */
    unsigned start_wait_ms; /* how long this incarnation waits for Ready */
    int start_cut;          /* ... shorter than start_timeout_ms: answer_by came first */
    uint64_t timer_at;      /* STARTING: Ready deadline; BACKOFF: restart time;
                               STOP_*: next escalation; 0: none */
    uint64_t kill_at;       /* STOP_*: SIGKILL time */
    char id[320];           /* this incarnation's id */
    uint64_t incarnation;
    uint32_t restarts;
    struct restart_window win;
    int64_t started_at_wall;
    struct pending_call *calls, *calls_tail; /* the mailbox: calls awaiting replies */
    unsigned n_calls;
    uint64_t delivered; /* calls, casts and sends written to it (ChildInfo.calls) */
    uint64_t next_ref;
    answer_fn start_done; /* the StartChild waiting for Ready */
    void *start_arg;
    struct waiter *term_waiters; /* TerminateChild requests waiting for the exit */
    int term_code, term_sig;     /* a removed child's exit: its TerminateChild answers, sent by the
                                    remover once the removal is on disk (sv_hooks.remove) */
    int unsaved;                 /* the remover could not delete it from the store */
    uint8_t *state_blob;         /* last State frame (handoff) */
    size_t state_len;
    struct proc proc; /* the OS process (the fake's pid too); a running hosted child's
                         pid is SV_HOSTED_PID */
    /* A hosted child (spec.kind; sidecar/host.c): the host session running it and its
     * number there, or, with no session, the list of children waiting for a host. */
    void *host;
    uint64_t host_num;
    struct child *host_next, *host_prev;
    int host_wait;            /* waiting for a host of its kind (SV_IDLE) */
    uint64_t host_wait_since; /* ... since then (monotonic ms) */
};

/* proc.pid of a hosted child while its host runs it: "running", never a process. */
#define SV_HOSTED_PID 1

/* 1 when ch is a hosted child (its spec names a kind, not an argv). */
static inline int sv_hosted(const struct child *ch) { return ch->spec && ch->spec->kind && ch->spec->kind[0]; }

struct sv;

/* The processes below the machine. */
struct sv_proc_ops {
    /* Starts ch's process (ch->proc.pid > 0 after).  0, or -1 with err; or
     * SV_SPAWN_WAIT: nothing can run it now (no host of its kind), it waits. */
    int (*spawn)(struct sv *sv, struct child *ch, char *err, size_t errlen);
    int (*send)(struct child *ch, const Distsup__V1__ChildFrame *f); /* 0 or -1 */
    void (*signal)(struct child *ch, int sig);
    void (*kill)(struct child *ch, const char *why); /* SIGKILL, read no more */
    int (*stdin_open)(const struct child *ch);
    /* ch is freed, or no longer waits to be started: forget it (may be NULL). */
    void (*release)(struct child *ch);
    /* Bytes written for it and not read yet (a hosted child: its host's backlog);
     * NULL: its process's stdin (proc_unsent). */
    size_t (*unsent)(const struct child *ch);
};
#define SV_SPAWN_WAIT (-2)

/* The core above it. */
struct sv_hooks {
    void *arg;
    uint64_t (*now)(void *arg); /* monotonic ms */
    /* ch has a timer, calls waiting or its output held back: sv_tick must run for it
     * (every LOOP_TICK_MS) until it answers 0. */
    void (*tick)(void *arg, struct child *ch);
    /* A lifecycle event of ch happened (Watch, the cluster). */
    void (*event)(void *arg, struct child *ch, Distsup__V1__EventKind kind, int exit_code, int sig, const char *reason);
    void (*persist)(void *arg, struct child *ch); /* its state, restarts, incarnation */
    /* Gone for good: unlink it.  Its TerminateChild requests (term_waiters) are the
     * remover's to answer, once the removal is on disk: sv_answer_terminate(ch,
     * ch->term_code, ch->term_sig), or sv_fail_terminate. */
    void (*remove)(void *arg, struct child *ch, const char *reason);
    void (*moved_out)(void *arg, struct child *ch); /* stopped to move: place it there */
    void (*spawned)(void *arg, struct child *ch);   /* a new process runs (ch->proc); may be NULL */
    /* ch's StartChild may be answered once what was stored is on disk: the core
     * commits (one commit for every start of its turn, the group commit) and then
     * calls sv_answer_start_stored.  NULL: answered at once. */
    void (*answer_durable)(void *arg, struct child *ch);
};

struct sv {
    const struct sv_proc_ops *ops;
    const struct sv_proc_ops *hosted_ops; /* hosted children's (NULL: none can run) */
    void *hosts;                          /* hosted_ops' state (sidecar/host.c) */
    struct sv_hooks hooks;
    struct loop *loop;
    const char *node;     /* this node's name */
    const char *data_dir; /* the daemon's data dir (never a child's cwd: they start in "/") */
    uint64_t boot_ms;     /* wall clock at start: ids are NODE/BOOT.SEQ */
    uint64_t seq;
    size_t live;             /* processes running */
    struct metrics *metrics; /* starts, exits, restarts (NULL: metrics off); set after sv_init */
};

/* The real processes (sidecar/proc.c). */
const struct sv_proc_ops *sv_os_procs(void);

void sv_init(struct sv *sv, const struct sv_proc_ops *ops, const struct sv_hooks *hooks, struct loop *loop,
             const char *node, const char *data_dir, uint64_t boot_ms);

/* A child (not started: SV_IDLE) of the supervisor configured by cfg; it takes spec.
 * NULL when out of memory (spec is not taken then). */
struct child *sv_child_new(struct sv *sv, Distsup__V1__ChildSpec *spec, const struct sup_config *cfg, void *owner);
/* Frees it and whatever it owns; its process must be gone (or never started). */
void sv_child_free(struct child *ch);

/* The API's view of the machine's state. */
Distsup__V1__ChildState sv_api_state(const struct child *ch);
/* The child as ChildInfo; strings point into ch (valid while it lives). */
void sv_fill_info(const struct sv *sv, const struct child *ch, Distsup__V1__ChildInfo *info);

/* Starts a new incarnation (SV_IDLE or SV_BACKOFF; the START event).  0, or -1 with
 * err when it is in another state or its process could not start (the child is
 * unchanged then: state, incarnation and id). */
int sv_start(struct sv *sv, struct child *ch, char *err, size_t errlen);
/* sv_start; a process that cannot start counts as an abnormal exit (restart policy).
 * A hosted child with no host of its kind waits instead (SV_IDLE, host_wait set)
 * until one attaches (sidecar/host.c). */
void sv_start_or_retry(struct sv *sv, struct child *ch, const char *what);

/* Stops it for why (see enum sv_why); reason goes to its Terminate frame and log.
 * 1 when a process is being stopped (the outcome comes with its exit), 0 when none
 * ran (the state is settled now: SUSPEND and PARK leave an SV_IDLE or SV_BACKOFF
 * child SV_IDLE with no timer, an SV_FAILED one FAILED; REMOVE leaves it as it is
 * for the caller to remove). */
int sv_stop(struct sv *sv, struct child *ch, enum sv_why why, const char *reason);

/* Its process was reaped (the proc layer's exit hook). */
void sv_exited(struct sv *sv, struct child *ch, int status);
/* A hosted child ended (its Exit, or its host went away): status as waitpid gives it,
 * reason for its events and log (NULL: from status); quiet: one of many that ended
 * together (the caller logged them once), its restart is logged at DEBUG. */
void sv_exited_why(struct sv *sv, struct child *ch, int status, const char *reason, int quiet);
/* A frame from its process. */
void sv_frame(struct sv *sv, struct child *ch, const Distsup__V1__ChildFrame *f);

/* Fires its timer and expires its calls when due, and resumes reading its output when
 * its rate allows (proc_throttle_tick).  1 while it still has a timer or calls
 * pending or its output is held back (the tick must go on). */
int sv_tick(struct sv *sv, struct child *ch, uint64_t now);

/* Sends a Call; the reply (or DEADLINE_EXCEEDED at deadline, or UNAVAILABLE when it
 * exits) answers done.  0, or -1 when the frame could not be written (done is not
 * called then). */
int sv_call(struct sv *sv, struct child *ch, ProtobufCBinaryData payload, uint64_t deadline, answer_fn done, void *arg);
/* Sends a Cast (info = 0) or an Info message (info = 1).  0 or -1. */
int sv_cast(struct sv *sv, struct child *ch, ProtobufCBinaryData payload, int info);

/* The caller's W3C trace context (sidecar/trace.h); either may be NULL. */
struct sv_trace {
    const char *parent;
    const char *state;
};
/* sv_call and sv_cast with a trace context for the frame: put in only when parent is
 * a valid traceparent (state then only when valid too); tr may be NULL. */
int sv_call_traced(struct sv *sv, struct child *ch, ProtobufCBinaryData payload, const struct sv_trace *tr,
                   uint64_t deadline, answer_fn done, void *arg);
int sv_cast_traced(struct sv *sv, struct child *ch, ProtobufCBinaryData payload, const struct sv_trace *tr, int info);
/* 1 while frames can reach it (its stdin is open; a hosted child's host is attached). */
int sv_open(const struct sv *sv, const struct child *ch);
/* Bytes of frames it has not read yet. */
size_t sv_unsent(const struct child *ch);

/* Answers every waiting call with code. */
void sv_fail_calls(struct child *ch, int code, const char *why);
/* Answers the StartChild waiting for its Ready with code (if one waits). */
void sv_fail_start(struct child *ch, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Answers the TerminateChild requests waiting for its exit. */
void sv_answer_terminate(struct child *ch, int code, int sig);
/* ... or fails them with code and msg. */
void sv_fail_terminate(struct child *ch, int code, const char *msg);
/* Answers the StartChild waiting for it with the child as it is now: once its spec is
 * on disk (sv_hooks.answer_durable), or at once. */
void sv_answer_start(const struct sv *sv, struct child *ch);
/* The core's commit after answer_durable: stored, the StartChild is answered OK;
 * not, it fails INTERNAL (the child runs, but would not survive a restart). */
void sv_answer_start_stored(const struct sv *sv, struct child *ch, int stored);

#endif

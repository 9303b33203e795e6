/* loop: the reactor's event loop.  epoll over the fds its users register, a periodic
 * tick (a timerfd, armed only while someone needs it), and a thread-safe queue of
 * messages posted by other threads (an eventfd wakes the loop for them).
 *
 * Threads: loop_post and loop_close_queue may be called from any thread; everything
 * else only from the loop's own thread (the one in loop_run_once).
 *
 * Messages of one lane run in the order they were posted; the lanes take turns.  The
 * queue is bounded: loop_post refuses a message once queue_cap are waiting,
 * unless it is marked must (news that may not be lost, such as a node going down,
 * which its sender bounds itself); the caller answers a refused request at once
 * (RESOURCE_EXHAUSTED), so a flood of requests makes errors, not memory. */
#ifndef DISTSUP_LOOP_H
#define DISTSUP_LOOP_H

#include <stddef.h>
#include <stdint.h>

#define LOOP_TICK_MS 10
/* Posted messages run at most this many, or for at most this long, per wake-up; then
 * the fds that are ready get their turn (a burst of thousands of requests or peer
 * messages never holds back a child's reply or a timer for long). */
#define LOOP_DRAIN_BATCH 64
#define LOOP_DRAIN_BUDGET_US 2000

/* The queue's lanes, served in turn one message at a time, so that a flood on one
 * (thousands of Place messages from a failover) never holds back the other (a client's
 * Call). */
enum loop_lane {
    LOOP_LANE_REQUEST, /* clients' requests */
    LOOP_LANE_CLUSTER, /* the peer links' news, the core's own continuations */
    LOOP_LANES
};

struct loop;

/* Embedded in whatever owns an fd; fn gets the epoll events. */
struct loop_watch {
    void (*fn)(struct loop_watch *w, uint32_t events);
};

/* A posted message: embed it first in the message's own struct. */
struct loop_msg {
    struct loop_msg *next;
};

struct loop_hooks {
    void *arg;
    void (*drain)(void *arg, struct loop_msg *m); /* each posted message, in order; takes it */
    void (*tick)(void *arg);                      /* every LOOP_TICK_MS while armed */
};

/* NULL + err on failure.  hooks is copied. */
struct loop *loop_new(size_t queue_cap, const struct loop_hooks *hooks, char *err, size_t errlen);
/* Frees the loop; messages still queued go to free_msg (may be NULL). */
void loop_free(struct loop *l, void (*free_msg)(struct loop_msg *m));

/* epoll: register, change and remove fds.  0 or -1 (errno). */
int loop_add(struct loop *l, int fd, uint32_t events, struct loop_watch *w);
int loop_mod(struct loop *l, int fd, uint32_t events, struct loop_watch *w);
/* Unregisters and closes *fd and sets it to -1; nothing when it is already -1. */
void loop_close_fd(struct loop *l, int *fd);

/* The tick runs every LOOP_TICK_MS from now on, until loop_tick_idle. */
void loop_arm_tick(struct loop *l);
void loop_tick_idle(struct loop *l);

enum { LOOP_POSTED = 0, LOOP_FULL = -1, LOOP_CLOSED = -2 };
/* Queues m in a lane for the drain hook.  LOOP_POSTED (m is taken), or LOOP_FULL /
 * LOOP_CLOSED (m stays the caller's).  Also from the loop's own thread. */
int loop_post(struct loop *l, struct loop_msg *m, enum loop_lane lane, int must);

/* Closes the queue (later posts get LOOP_CLOSED) and hands what is queued to the
 * drain hook.  From the loop's thread. */
void loop_close_queue(struct loop *l);

/* Waits for events (at most timeout_ms; -1 forever) and runs their handlers.  0, or
 * -1 when epoll itself failed. */
int loop_run_once(struct loop *l, int timeout_ms);

#endif

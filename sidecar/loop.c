#include "sidecar/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "sidecar/log.h"

struct lane {
    struct loop_msg *head, *tail;
};

struct loop {
    int epfd, wakefd, tickfd;
    int tick_armed;
    struct loop_watch w_wake, w_tick;
    struct loop_hooks hooks;
    pthread_mutex_t mu; /* the queue: its lanes, queued, closed */
    struct lane lanes[LOOP_LANES];
    size_t queued, cap;
    int closed;
    unsigned next_lane; /* the lane served first at the next pop (round robin) */
};

#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

static uint64_t mono_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static void wake(struct loop *l)
{
    uint64_t one = 1;
    if (write(l->wakefd, &one, sizeof one) < 0 && errno != EAGAIN)
        log_error("loop", "eventfd write: %s", strerror(errno));
}

/* The next message, taking turns between the lanes that have one; NULL when none. */
static struct loop_msg *pop(struct loop *l)
{
    struct loop_msg *m = NULL;
    pthread_mutex_lock(&l->mu);
    for (unsigned k = 0; k < LOOP_LANES && !m; k++) {
        struct lane *q = &l->lanes[(l->next_lane + k) % LOOP_LANES];
        if (!(m = q->head)) continue;
        if (!(q->head = m->next)) q->tail = NULL;
        l->queued--;
        l->next_lane = (l->next_lane + k + 1) % LOOP_LANES;
    }
    pthread_mutex_unlock(&l->mu);
    if (m) m->next = NULL;
    return m;
}

static int queue_empty(struct loop *l)
{
    pthread_mutex_lock(&l->mu);
    int empty = l->queued == 0;
    pthread_mutex_unlock(&l->mu);
    return empty;
}

/* Runs posted messages until none is left, LOOP_DRAIN_BATCH ran, or they took
 * LOOP_DRAIN_BUDGET_US; then, if more wait, wakes itself again so that they come
 * after the fds that are ready now. */
static void on_wake(struct loop_watch *w, uint32_t events)
{
    (void)events;
    struct loop *l = container_of(w, struct loop, w_wake);
    uint64_t v;
    if (read(l->wakefd, &v, sizeof v) < 0 && errno != EAGAIN) log_warn("loop", "eventfd read: %s", strerror(errno));
    uint64_t start = mono_us();
    struct loop_msg *m;
    for (unsigned n = 0; n < LOOP_DRAIN_BATCH && (m = pop(l));) {
        l->hooks.drain(l->hooks.arg, m);
        if (++n < LOOP_DRAIN_BATCH && mono_us() - start >= LOOP_DRAIN_BUDGET_US) break;
    }
    if (!queue_empty(l)) wake(l);
}

static void on_tick(struct loop_watch *w, uint32_t events)
{
    (void)events;
    struct loop *l = container_of(w, struct loop, w_tick);
    uint64_t expirations;
    if (read(l->tickfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        log_warn("loop", "timerfd read: %s", strerror(errno));
    l->hooks.tick(l->hooks.arg);
}

struct loop *loop_new(size_t queue_cap, const struct loop_hooks *hooks, char *err, size_t errlen)
{
    struct loop *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    l->epfd = l->wakefd = l->tickfd = -1;
    l->hooks = *hooks;
    l->cap = queue_cap;
    if (pthread_mutex_init(&l->mu, NULL) != 0) {
        free(l);
        snprintf(err, errlen, "pthread_mutex_init failed");
        return NULL;
    }
    l->epfd = epoll_create1(EPOLL_CLOEXEC);
    l->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    l->tickfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    l->w_wake.fn = on_wake;
    l->w_tick.fn = on_tick;
    if (l->epfd < 0 || l->wakefd < 0 || l->tickfd < 0 || loop_add(l, l->wakefd, EPOLLIN, &l->w_wake) ||
        loop_add(l, l->tickfd, EPOLLIN, &l->w_tick)) {
        snprintf(err, errlen, "epoll/eventfd/timerfd: %s", strerror(errno));
        loop_free(l, NULL);
        return NULL;
    }
    return l;
}

void loop_free(struct loop *l, void (*free_msg)(struct loop_msg *m))
{
    if (!l) return;
    for (struct loop_msg *m; (m = pop(l));)
        if (free_msg) free_msg(m);
    if (l->epfd >= 0) close(l->epfd);
    if (l->wakefd >= 0) close(l->wakefd);
    if (l->tickfd >= 0) close(l->tickfd);
    pthread_mutex_destroy(&l->mu);
    free(l);
}

int loop_add(struct loop *l, int fd, uint32_t events, struct loop_watch *w)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    return epoll_ctl(l->epfd, EPOLL_CTL_ADD, fd, &ev);
}

int loop_mod(struct loop *l, int fd, uint32_t events, struct loop_watch *w)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    return epoll_ctl(l->epfd, EPOLL_CTL_MOD, fd, &ev);
}

void loop_close_fd(struct loop *l, int *fd)
{
    if (*fd < 0) return;
    epoll_ctl(l->epfd, EPOLL_CTL_DEL, *fd, NULL);
    close(*fd);
    *fd = -1;
}

void loop_arm_tick(struct loop *l)
{
    if (l->tick_armed) return;
    struct itimerspec its = {
        .it_interval = {.tv_sec = 0, .tv_nsec = LOOP_TICK_MS * 1000000L},
        .it_value = {.tv_sec = 0, .tv_nsec = LOOP_TICK_MS * 1000000L},
    };
    if (timerfd_settime(l->tickfd, 0, &its, NULL) == 0) l->tick_armed = 1;
    else log_error("loop", "timerfd_settime: %s", strerror(errno));
}

void loop_tick_idle(struct loop *l)
{
    struct itimerspec off = {{0, 0}, {0, 0}};
    if (timerfd_settime(l->tickfd, 0, &off, NULL) == 0) l->tick_armed = 0;
}

int loop_post(struct loop *l, struct loop_msg *m, enum loop_lane lane, int must)
{
    m->next = NULL;
    pthread_mutex_lock(&l->mu);
    if (l->closed) {
        pthread_mutex_unlock(&l->mu);
        return LOOP_CLOSED;
    }
    if (!must && l->queued >= l->cap) {
        pthread_mutex_unlock(&l->mu);
        return LOOP_FULL;
    }
    int was_empty = l->queued == 0;
    struct lane *q = &l->lanes[lane < LOOP_LANES ? lane : 0];
    if (q->tail) q->tail->next = m;
    else q->head = m;
    q->tail = m;
    l->queued++;
    pthread_mutex_unlock(&l->mu);
    if (was_empty) wake(l);
    return LOOP_POSTED;
}

void loop_close_queue(struct loop *l)
{
    pthread_mutex_lock(&l->mu);
    l->closed = 1;
    pthread_mutex_unlock(&l->mu);
    for (struct loop_msg *m; (m = pop(l));) l->hooks.drain(l->hooks.arg, m);
}

int loop_run_once(struct loop *l, int timeout_ms)
{
    struct epoll_event evs[64];
    int n = epoll_wait(l->epfd, evs, 64, timeout_ms);
    if (n < 0) {
        if (errno == EINTR) return 0;
        log_error("loop", "epoll_wait: %s", strerror(errno));
        return -1;
    }
    for (int i = 0; i < n; i++) {
        struct loop_watch *w = evs[i].data.ptr;
        w->fn(w, evs[i].events);
    }
    return 0;
}

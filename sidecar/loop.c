#include "sidecar/loop.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "sidecar/log.h"

struct loop {
    int epfd, wakefd, tickfd;
    int tick_armed;
    struct loop_watch w_wake, w_tick;
    struct loop_hooks hooks;
    pthread_mutex_t mu; /* the queue */
    struct loop_msg *head, *tail;
    size_t queued, cap;
    int closed;
};

#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

static struct loop_msg *take_queue(struct loop *l)
{
    pthread_mutex_lock(&l->mu);
    struct loop_msg *m = l->head;
    l->head = l->tail = NULL;
    l->queued = 0;
    pthread_mutex_unlock(&l->mu);
    return m;
}

static void drain(struct loop *l, struct loop_msg *m)
{
    while (m) {
        struct loop_msg *n = m->next;
        m->next = NULL;
        l->hooks.drain(l->hooks.arg, m);
        m = n;
    }
}

static void on_wake(struct loop_watch *w, uint32_t events)
{
    (void)events;
    struct loop *l = container_of(w, struct loop, w_wake);
    uint64_t v;
    if (read(l->wakefd, &v, sizeof v) < 0 && errno != EAGAIN) log_warn("loop", "eventfd read: %s", strerror(errno));
    drain(l, take_queue(l));
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
    for (struct loop_msg *m = take_queue(l), *n; m; m = n) {
        n = m->next;
        if (free_msg) free_msg(m);
    }
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

int loop_post(struct loop *l, struct loop_msg *m, int must)
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
    int was_empty = l->head == NULL;
    if (l->tail) l->tail->next = m;
    else l->head = m;
    l->tail = m;
    l->queued++;
    pthread_mutex_unlock(&l->mu);
    if (was_empty) {
        uint64_t one = 1;
        if (write(l->wakefd, &one, sizeof one) < 0 && errno != EAGAIN)
            log_error("loop", "eventfd write: %s", strerror(errno));
    }
    return LOOP_POSTED;
}

void loop_close_queue(struct loop *l)
{
    pthread_mutex_lock(&l->mu);
    l->closed = 1;
    pthread_mutex_unlock(&l->mu);
    drain(l, take_queue(l));
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

#include "sidecar/events.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

struct event_item {
    struct event_item *next;
    size_t len;
    uint8_t data[];
};

struct event_sub {
    struct event_sub *prev, *next;
    pthread_mutex_t mu;
    char *supervisor;
    char *node; /* NULL: any */
    int no_node_events;
    uint32_t kinds_mask;
    size_t max_queue, queued;
    struct event_item *head, *tail;
    int armed, overflowed;
    event_wake_fn wake;
    void *arg;
};

struct event_bus {
    pthread_mutex_t mu;
    struct event_sub *subs;
    uint64_t seq;
};

struct event_bus *event_bus_new(void)
{
    struct event_bus *b = calloc(1, sizeof *b);
    if (!b) return NULL;
    if (pthread_mutex_init(&b->mu, NULL) != 0) {
        free(b);
        return NULL;
    }
    return b;
}

void event_bus_free(struct event_bus *b)
{
    if (!b) return;
    pthread_mutex_destroy(&b->mu);
    free(b);
}

struct event_sub *event_bus_subscribe(struct event_bus *b, const struct event_filter *f, size_t max_queue,
                                      event_wake_fn wake, void *arg)
{
    struct event_sub *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->supervisor = strdup(f->supervisor);
    s->node = f->node ? strdup(f->node) : NULL;
    if (!s->supervisor || (f->node && !s->node) || pthread_mutex_init(&s->mu, NULL) != 0) {
        free(s->supervisor);
        free(s->node);
        free(s);
        return NULL;
    }
    s->no_node_events = f->no_node_events;
    s->kinds_mask = f->kinds_mask;
    s->max_queue = max_queue ? max_queue : 1;
    s->wake = wake;
    s->arg = arg;
    s->armed = 1;
    pthread_mutex_lock(&b->mu);
    s->next = b->subs;
    if (b->subs) b->subs->prev = s;
    b->subs = s;
    pthread_mutex_unlock(&b->mu);
    return s;
}

void event_bus_unsubscribe(struct event_bus *b, struct event_sub *s)
{
    pthread_mutex_lock(&b->mu);
    if (s->prev) s->prev->next = s->next;
    else b->subs = s->next;
    if (s->next) s->next->prev = s->prev;
    pthread_mutex_unlock(&b->mu);
    struct event_item *it = s->head;
    while (it) {
        struct event_item *n = it->next;
        free(it);
        it = n;
    }
    pthread_mutex_destroy(&s->mu);
    free(s->supervisor);
    free(s->node);
    free(s);
}

static int is_node_event(int kind)
{
    return kind == DISTSUP__V1__EVENT_KIND__NODE_UP || kind == DISTSUP__V1__EVENT_KIND__NODE_DOWN ||
        kind == DISTSUP__V1__EVENT_KIND__NODE_TERMINATE;
}

static void deliver(struct event_bus *b, const Distsup__V1__Event *ev)
{
    size_t len = distsup__v1__event__get_packed_size(ev);
    for (struct event_sub *s = b->subs; s; s = s->next) {
        if (s->kinds_mask && !(s->kinds_mask & (1u << (unsigned)ev->kind))) continue;
        if (strcmp(s->supervisor, "*") && strcmp(s->supervisor, ev->supervisor) &&
            ev->supervisor[0]) /* node events carry no supervisor: everyone gets them */
            continue;
        /* Node events are this node's view of the cluster: every subscriber may get them. */
        if (s->node && !is_node_event(ev->kind) && strcmp(s->node, ev->node)) continue;
        if (s->no_node_events && is_node_event(ev->kind)) continue;
        int wake = 0;
        pthread_mutex_lock(&s->mu);
        if (!s->overflowed) {
            struct event_item *it = s->queued < s->max_queue ? malloc(sizeof *it + len) : NULL;
            if (!it) {
                s->overflowed = 1;
            } else {
                it->next = NULL;
                it->len = distsup__v1__event__pack(ev, it->data);
                if (s->tail) s->tail->next = it;
                else s->head = it;
                s->tail = it;
                s->queued++;
            }
            if (s->armed) {
                s->armed = 0;
                wake = 1;
            }
        }
        pthread_mutex_unlock(&s->mu);
        if (wake) s->wake(s->arg);
    }
}

void event_bus_publish(struct event_bus *b, Distsup__V1__Event *ev)
{
    pthread_mutex_lock(&b->mu);
    ev->seq = ++b->seq;
    deliver(b, ev);
    pthread_mutex_unlock(&b->mu);
}

void event_bus_publish_remote(struct event_bus *b, const Distsup__V1__Event *ev)
{
    pthread_mutex_lock(&b->mu);
    deliver(b, ev);
    pthread_mutex_unlock(&b->mu);
}

int event_sub_pop(struct event_sub *s, uint8_t **data, size_t *len)
{
    pthread_mutex_lock(&s->mu);
    if (s->overflowed) {
        pthread_mutex_unlock(&s->mu);
        return -1;
    }
    struct event_item *it = s->head;
    if (!it) {
        s->armed = 1;
        pthread_mutex_unlock(&s->mu);
        return 0;
    }
    s->head = it->next;
    if (!s->head) s->tail = NULL;
    s->queued--;
    pthread_mutex_unlock(&s->mu);
    uint8_t *p = malloc(it->len ? it->len : 1);
    if (!p) {
        free(it);
        return -1;
    }
    memcpy(p, it->data, it->len);
    *data = p;
    *len = it->len;
    free(it);
    return 1;
}

/* events: fan-out of lifecycle events to Watch subscribers.
 *
 * The publisher (the supervisor core) never blocks: each subscriber has its own
 * bounded queue of packed distsup.v1.Event messages.  A subscriber that falls
 * max_queue events behind is marked overflowed; its reader learns that from
 * event_sub_pop and ends the stream (RESOURCE_EXHAUSTED), so a slow reader loses
 * its subscription, never the daemon's time.  Thread-safe. */
#ifndef DISTSUP_EVENTS_H
#define DISTSUP_EVENTS_H

#include <stddef.h>
#include <stdint.h>

#include "distsup/v1/supervisor.pb-c.h"

struct event_bus;
struct event_sub;

/* Called when a subscriber that had found its queue empty (and so is "armed") gets
 * an event, or overflows.  Runs on the publisher's thread with the bus locked: it
 * must not block and must not call event_bus_* (event_sub_pop is fine). */
typedef void (*event_wake_fn)(void *arg);

struct event_bus *event_bus_new(void);
void event_bus_free(struct event_bus *b); /* every subscriber must be gone */

/* What a subscriber wants. */
struct event_filter {
    const char *supervisor; /* only its events ("*" for all); node events always match */
    uint32_t kinds_mask;    /* bit k set = EventKind k wanted (0 = all) */
    const char *node;       /* only events that happened on this node (NULL: any node) */
    int no_node_events;     /* 1: no NODE_UP/DOWN/TERMINATE (monitor_nodes = false) */
};

/* NULL when out of memory.  The filter's strings are copied. */
struct event_sub *event_bus_subscribe(struct event_bus *b, const struct event_filter *f, size_t max_queue,
                                      event_wake_fn wake, void *arg);
/* After it returns, wake is never called again for sub, and sub is freed. */
void event_bus_unsubscribe(struct event_bus *b, struct event_sub *sub);

/* Stamps ev->seq with the bus's next sequence number and delivers a copy to every
 * matching subscriber. */
void event_bus_publish(struct event_bus *b, Distsup__V1__Event *ev);

/* Delivers an event that happened on another node, keeping its seq (that node's). */
void event_bus_publish_remote(struct event_bus *b, const Distsup__V1__Event *ev);

/* 1: *data (malloc'd; caller frees) holds the next packed Event.
 * 0: queue empty; the subscriber is armed (wake will be called on the next event).
 * -1: the subscriber overflowed; it gets nothing more. */
int event_sub_pop(struct event_sub *sub, uint8_t **data, size_t *len);

#endif

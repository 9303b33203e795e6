/* registry: one supervisor's view of the children that run on OTHER nodes, as their
 * nodes last told this one (broadcasts and snapshots; docs/cluster.md).
 *
 * A map from child name to the owner's ChildInfo (unpacked, owned by the entry), kept
 * in insertion order so listings are stable, with a count of entries per owner node
 * (kept as entries come and go, so the core can cap what one node may make it hold)
 * and an index by incarnation id.  Pure memory: the supervisor core
 * persists it through the store's cache.  Buckets are keyed with a random SipHash key
 * (libsodium must be initialized).  Used by one thread (the core's reactor). */
#ifndef DISTSUP_REGISTRY_H
#define DISTSUP_REGISTRY_H

#include <stddef.h>
#include <stdint.h>

#include "distsup/v1/supervisor.pb-c.h"

struct registry;

struct rentry {
    Distsup__V1__ChildInfo *info; /* owned; info->node is the owner */
    uint64_t epoch;               /* the owner's snapshot epoch it came with (cluster/registry.c) */
    int rehoming;                 /* failover under way (set by the core) */
    unsigned rehome_tries;        /* re-homes asked again because the target had not seen the owner down */
    /* Another node's copy of this name that could not yet be believed over this one
     * (owned; cluster/authz.c): it replaces this entry when the owner says it is gone. */
    Distsup__V1__ChildInfo *contender;
    struct rentry *hnext, *inext, *prev, *next; /* name chain, id chain, insertion order */
};

struct registry *registry_new(void);
void registry_free(struct registry *r);

struct rentry *registry_get(struct registry *r, const char *name);
/* By incarnation id ("node/..."); hashed. */
struct rentry *registry_find_id(struct registry *r, const char *id);

/* Stores info (taking it) under info->name, replacing an entry of that name (whose
 * flags and contender are reset).  NULL when out of memory (info is freed then). */
struct rentry *registry_put(struct registry *r, Distsup__V1__ChildInfo *info, uint64_t epoch);
void registry_del(struct registry *r, struct rentry *e);

size_t registry_count(const struct registry *r);
size_t registry_count_node(const struct registry *r, const char *node); /* O(nodes) */

/* First entry in insertion order, and the next; deleting the current entry while
 * walking is fine when its successor was taken first. */
struct rentry *registry_first(struct registry *r);
static inline struct rentry *registry_next(struct rentry *e) { return e->next; }

#endif

/* ring: a consistent-hash ring with virtual nodes over a strategy's node list
 * (strategies/ internal; used by hash_ring and by pinned's fallback).
 *
 * The ring, exactly (so anyone can recompute it, and the tests do):
 *   - node i (nodes[] as given: sorted by name) gets max(1, vnodes * weight / 100)
 *     points (integer division; weight 0 counts as 1); its point j, for j = 0, 1, ...,
 *     sits at dsh_xxh64(name bytes, seed = j);
 *   - points are sorted by position, equal positions by node index;
 *   - a key hash h belongs to the first point whose position is >= h, wrapping to the
 *     first point of the ring when h is past the last one.
 *
 * A ring caches the node list it was built for (names and weights, copied) and
 * rebuilds only when a later list differs, so repeated lookups on the same list cost a
 * list comparison and a binary search.  One ring is used by one thread at a time. */
#ifndef DISTSUP_STRATEGIES_RING_H
#define DISTSUP_STRATEGIES_RING_H

#include <stddef.h>
#include <stdint.h>

#include "strategies/strategy.h"

/* Upper bound on points in one ring (memory guard: 12 bytes a point). */
#define DS_RING_MAX_POINTS (1u << 22)

struct ds_ring;

/* A ring with vnodes points per node of weight 100; empty until ds_ring_sync.
 * NULL only when out of memory. */
struct ds_ring *ds_ring_new(uint32_t vnodes);
void ds_ring_free(struct ds_ring *r);

/* Makes the ring match nodes[0..n) (n >= 1).  0, or -1 with err set: out of memory,
 * or more than DS_RING_MAX_POINTS points.  On failure the ring is left empty. */
int ds_ring_sync(struct ds_ring *r, const struct ds_node *nodes, size_t n, char *err, size_t errlen);

/* After a successful sync: the number of points, the position of the point a key
 * hash belongs to, and the node index of the point at a position. */
size_t ds_ring_points(const struct ds_ring *r);
size_t ds_ring_find(const struct ds_ring *r, uint64_t key_hash);
uint32_t ds_ring_node(const struct ds_ring *r, size_t pos);

#endif

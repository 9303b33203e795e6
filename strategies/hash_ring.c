/* hash_ring: consistent hashing on a ring with virtual nodes, optionally with bounded
 * loads.  See docs/strategies.md ("hash_ring") and strategies/ring.h for the ring.
 *
 * Options: vnodes=N (1..10000, default 160): points per node of weight 100 (a node
 * gets max(1, vnodes * weight / 100)); epsilon=E (0..100, at most 6 decimals; default
 * off): bounded loads, no node above ceil((1 + E) * (total children + 1) / n). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strategies/hash.h"
#include "strategies/options.h"
#include "strategies/ring.h"
#include "strategies/strategy.h"

#define MICRO 1000000u

struct hash_ring {
    struct ds_ring *ring;
    uint32_t vnodes;
    int bounded;
    uint64_t eps_micros; /* epsilon in millionths */
};

static int set_option(void *ctx, const char *key, const char *value, char *err, size_t errlen)
{
    struct hash_ring *h = ctx;
    if (!strcmp(key, "vnodes")) return ds_opt_u32(key, value, 1, 10000, &h->vnodes, err, errlen);
    if (!strcmp(key, "epsilon")) {
        h->bounded = 1;
        return ds_opt_micros(key, value, 100u * MICRO, &h->eps_micros, err, errlen);
    }
    snprintf(err, errlen, "unknown option '%.40s' (hash_ring takes vnodes, epsilon)", key);
    return -1;
}

static void *hr_create(const char *options, char *err, size_t errlen)
{
    struct hash_ring *h = calloc(1, sizeof *h);
    if (!h) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    h->vnodes = 160;
    if (ds_opts_parse(options, set_option, h, err, errlen) != 0) {
        free(h);
        return NULL;
    }
    h->ring = ds_ring_new(h->vnodes);
    if (!h->ring) {
        free(h);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    return h;
}

static void hr_destroy(void *state)
{
    struct hash_ring *h = state;
    if (!h) return;
    ds_ring_free(h->ring);
    free(h);
}

/* a * b as a 128-bit number (hi, lo), without compiler extensions. */
static void mul128(uint64_t a, uint64_t b, uint64_t *hi, uint64_t *lo)
{
    uint64_t a0 = a & 0xffffffffu, a1 = a >> 32, b0 = b & 0xffffffffu, b1 = b >> 32;
    uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
    uint64_t mid = (p00 >> 32) + (p01 & 0xffffffffu) + (p10 & 0xffffffffu);
    *lo = (mid << 32) | (p00 & 0xffffffffu);
    *hi = p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
}

/* children < ceil((1 + eps) * (total + 1) / n), i.e. children * n * 1e6 <
 * (1e6 + eps_micros) * (total + 1), compared exactly in 128 bits. */
static int under_bound(uint64_t children, uint64_t n, uint64_t total, uint64_t eps_micros)
{
    uint64_t lh, ll, rh, rl;
    mul128(children * n, MICRO, &lh, &ll); /* children, n < 2^32 */
    mul128(MICRO + eps_micros, total + 1, &rh, &rl);
    return lh < rh || (lh == rh && ll < rl);
}

/* Where the key goes.  less >= 0 names the node the child runs on: its load (and the
 * total) count one child fewer there, so the child is re-placed as if not counted. */
static int hr_pick(struct hash_ring *h, const struct ds_child *child, const struct ds_node *nodes, size_t n, int less,
                   char *err, size_t errlen)
{
    if (n == 0) {
        snprintf(err, errlen, "no node is up");
        return -1;
    }
    if (ds_ring_sync(h->ring, nodes, n, err, errlen) != 0) return -1;
    const char *key = child->key ? child->key : child->name;
    size_t pos = ds_ring_find(h->ring, dsh_str(key, 0));
    if (!h->bounded) return (int)ds_ring_node(h->ring, pos);

    uint64_t total = 0;
    for (size_t i = 0; i < n; i++) total += nodes[i].children;
    if (less >= 0 && ((size_t)less >= n || nodes[less].children == 0)) less = -1;
    if (less >= 0) total--;
    size_t points = ds_ring_points(h->ring);
    for (size_t step = 0; step < points; step++) {
        uint32_t i = ds_ring_node(h->ring, pos);
        uint64_t c = nodes[i].children;
        if ((int)i == less) c--;
        if (under_bound(c, n, total, h->eps_micros)) return (int)i;
        pos = pos + 1 == points ? 0 : pos + 1;
    }
    /* Unreachable: n bounds of at least (total + 1) / n each cannot all be full. */
    snprintf(err, errlen, "every node is at its load bound");
    return -1;
}

static int hr_place(void *state, const struct ds_child *child, const struct ds_node *nodes, size_t n_nodes, char *err,
                    size_t errlen)
{
    return hr_pick(state, child, nodes, n_nodes, -1, err, errlen);
}

static void hr_nodes_changed(void *state, const struct ds_node *nodes, size_t n_nodes)
{
    struct hash_ring *h = state;
    char err[128];
    /* Warm-up only: place() syncs again and reports any failure then. */
    if (n_nodes > 0) (void)ds_ring_sync(h->ring, nodes, n_nodes, err, sizeof err);
}

/* Moves a child when its key now belongs elsewhere.  With bounded loads the child is
 * re-placed as if it were not counted where it runs, so a child sitting on a node at
 * its bound does not move just because it fills that node itself. */
static int hr_should_move(void *state, const struct ds_child *child, int current, const struct ds_node *nodes,
                          size_t n_nodes, int *to)
{
    char err[128];
    int r = hr_pick(state, child, nodes, n_nodes, current, err, sizeof err);
    if (r < 0 || r == current) return 0;
    *to = r;
    return 1;
}

__attribute__((visibility("default"))) const struct ds_strategy distsup_strategy = {
    .abi_version = DS_STRATEGY_ABI_VERSION,
    .struct_size = sizeof(struct ds_strategy),
    .name = "hash_ring",
    .create = hr_create,
    .destroy = hr_destroy,
    .place = hr_place,
    .nodes_changed = hr_nodes_changed,
    .should_move = hr_should_move,
};

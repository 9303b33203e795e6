/* rendezvous: a custom distsup placement strategy, as an example of the ABI in
 * strategies/strategy.h (docs/strategies.md walks through it).
 *
 * Rendezvous, or highest-random-weight, hashing: every node gets a score for the
 * child's key and the highest score wins.  When a node leaves, only its keys move;
 * when one joins, it takes exactly the keys it now wins.  place() costs one hash per
 * node.  Weights and labels are ignored.
 *
 *   score(node, key) = fmix64(FNV-1a-64(key bytes, 0xff, node name bytes))
 *
 * FNV-1a-64: start 0xcbf29ce484222325; per byte: h ^= byte, h *= 0x100000001b3.
 * fmix64 (MurmurHash3's finalizer): h ^= h >> 33; h *= 0xff51afd7ed558ccd;
 * h ^= h >> 33; h *= 0xc4ceb9fe1a85ec53; h ^= h >> 33.  The 0xff byte (never inside
 * UTF-8 text) separates key and name, so ("ab", "c") and ("a", "bc") differ.
 * Equal scores go to the lower index (the nodes come sorted by name).
 *
 * Options: none (anything given is rejected).  Build:
 *   bazel build //examples/rendezvous:rendezvous.so
 *   gcc -std=c11 -O2 -fPIC -shared -I<distsup checkout> -o rendezvous.so rendezvous.c */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "strategies/strategy.h"

static uint64_t fnv1a(uint64_t h, const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h;
}

static uint64_t score(const char *key, const char *node)
{
    uint64_t h = fnv1a(0xcbf29ce484222325ull, key);
    h ^= 0xff;
    h *= 0x100000001b3ull;
    h = fnv1a(h, node);
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* The state: nothing to keep, but create() must return non-NULL on success. */
struct rendezvous {
    int unused;
};

static void *rv_create(const char *options, char *err, size_t errlen)
{
    for (const char *p = options; p && *p; p++) {
        if (*p != ' ' && *p != '\t') {
            snprintf(err, errlen, "rendezvous takes no options (got '%.60s')", options);
            return NULL;
        }
    }
    struct rendezvous *r = calloc(1, sizeof *r);
    if (!r) snprintf(err, errlen, "out of memory");
    return r;
}

static void rv_destroy(void *state) { free(state); }

static int rv_place(void *state, const struct ds_child *child, const struct ds_node *nodes, size_t n_nodes, char *err,
                    size_t errlen)
{
    (void)state;
    if (n_nodes == 0) {
        snprintf(err, errlen, "no node is up");
        return -1;
    }
    const char *key = child->key ? child->key : child->name;
    int best = 0;
    uint64_t best_score = score(key, nodes[0].name);
    for (size_t i = 1; i < n_nodes; i++) {
        uint64_t s = score(key, nodes[i].name);
        if (s > best_score) {
            best = (int)i;
            best_score = s;
        }
    }
    return best;
}

/* The one exported symbol.  nodes_changed and should_move are left NULL: the core
 * then moves a running child when place() names another node. */
__attribute__((visibility("default"))) const struct ds_strategy distsup_strategy = {
    .abi_version = DS_STRATEGY_ABI_VERSION,
    .struct_size = sizeof(struct ds_strategy),
    .name = "rendezvous",
    .create = rv_create,
    .destroy = rv_destroy,
    .place = rv_place,
    .nodes_changed = NULL,
    .should_move = NULL,
};

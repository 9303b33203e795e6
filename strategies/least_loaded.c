/* least_loaded: the node with the fewest children of this supervisor.
 * See docs/strategies.md ("least_loaded").
 *
 * Options: weighted=true|false (default false): compare children / weight instead of
 * children (by cross-multiplication: exact, no floating point).
 * Ties: among the nodes with the lowest load, the one with the highest rendezvous score
 * dsh_score(node name, hash of the child's key); so ties spread over the tied nodes
 * key by key instead of all going to the first name, and still every node agrees.
 * should_move: a running child never moves (a join is filled by new children); a child
 * whose node is no longer among the eligible nodes is re-placed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strategies/hash.h"
#include "strategies/options.h"
#include "strategies/strategy.h"

struct least_loaded {
    int weighted;
};

static int set_option(void *ctx, const char *key, const char *value, char *err, size_t errlen)
{
    struct least_loaded *l = ctx;
    if (!strcmp(key, "weighted")) return ds_opt_bool(key, value, &l->weighted, err, errlen);
    snprintf(err, errlen, "unknown option '%.40s' (least_loaded takes weighted)", key);
    return -1;
}

static void *ll_create(const char *options, char *err, size_t errlen)
{
    struct least_loaded *l = calloc(1, sizeof *l);
    if (!l) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (ds_opts_parse(options, set_option, l, err, errlen) != 0) {
        free(l);
        return NULL;
    }
    return l;
}

static void ll_destroy(void *state) { free(state); }

/* <0 when node a is less loaded than node b, >0 when more, 0 when equal.  Weighted:
 * a.children / a.weight against b.children / b.weight, as a.children * b.weight
 * against b.children * a.weight (exact in 64 bits). */
static int cmp_load(const struct least_loaded *l, const struct ds_node *a, const struct ds_node *b)
{
    uint64_t x = a->children, y = b->children;
    if (l->weighted) {
        x *= b->weight ? b->weight : 1;
        y *= a->weight ? a->weight : 1;
    }
    return x < y ? -1 : x > y ? 1 : 0;
}

static int ll_place(void *state, const struct ds_child *child, const struct ds_node *nodes, size_t n_nodes, char *err,
                    size_t errlen)
{
    const struct least_loaded *l = state;
    if (n_nodes == 0) {
        snprintf(err, errlen, "no node is up");
        return -1;
    }
    uint64_t key_hash = dsh_str(child->key ? child->key : child->name, 0);
    size_t best = 0;
    uint64_t best_score = dsh_score(nodes[0].name, key_hash);
    for (size_t i = 1; i < n_nodes; i++) {
        int c = cmp_load(l, &nodes[i], &nodes[best]);
        if (c > 0) continue;
        uint64_t score = dsh_score(nodes[i].name, key_hash);
        if (c < 0 || score > best_score) {
            best = i;
            best_score = score;
        }
    }
    return (int)best;
}

static int ll_should_move(void *state, const struct ds_child *child, int current, const struct ds_node *nodes,
                          size_t n_nodes, int *to)
{
    if (current >= 0) return 0;
    char err[64];
    int r = ll_place(state, child, nodes, n_nodes, err, sizeof err);
    if (r < 0) return 0;
    *to = r;
    return 1;
}

__attribute__((visibility("default"))) const struct ds_strategy distsup_strategy = {
    .abi_version = DS_STRATEGY_ABI_VERSION,
    .struct_size = sizeof(struct ds_strategy),
    .name = "least_loaded",
    .create = ll_create,
    .destroy = ll_destroy,
    .place = ll_place,
    .nodes_changed = NULL,
    .should_move = ll_should_move,
};

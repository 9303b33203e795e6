#include "strategies/ring.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strategies/hash.h"

struct ring_point {
    uint64_t pos;
    uint32_t node;
};

struct ds_ring {
    uint32_t vnodes;
    /* The node list the ring was built for (owned copies). */
    size_t n_nodes;
    uint32_t *weights;
    char **names;
    char *name_buf;
    /* The ring: positions (sorted) and the node index of each point. */
    size_t n_points;
    uint64_t *pos;
    uint32_t *node;
};

struct ds_ring *ds_ring_new(uint32_t vnodes)
{
    struct ds_ring *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->vnodes = vnodes ? vnodes : 1;
    return r;
}

static void clear(struct ds_ring *r)
{
    free(r->weights);
    free(r->names);
    free(r->name_buf);
    free(r->pos);
    free(r->node);
    r->weights = NULL;
    r->names = NULL;
    r->name_buf = NULL;
    r->pos = NULL;
    r->node = NULL;
    r->n_nodes = 0;
    r->n_points = 0;
}

void ds_ring_free(struct ds_ring *r)
{
    if (!r) return;
    clear(r);
    free(r);
}

static int same_list(const struct ds_ring *r, const struct ds_node *nodes, size_t n)
{
    if (r->n_points == 0 || r->n_nodes != n) return 0;
    for (size_t i = 0; i < n; i++) {
        if (r->weights[i] != nodes[i].weight) return 0;
        const char *name = nodes[i].name ? nodes[i].name : "";
        if (strcmp(r->names[i], name) != 0) return 0;
    }
    return 1;
}

static uint64_t points_for(uint32_t vnodes, uint32_t weight)
{
    uint64_t w = weight ? weight : 1;
    uint64_t k = (uint64_t)vnodes * w / 100u;
    return k ? k : 1;
}

static int cmp_point(const void *a, const void *b)
{
    const struct ring_point *x = a, *y = b;
    if (x->pos != y->pos) return x->pos < y->pos ? -1 : 1;
    if (x->node != y->node) return x->node < y->node ? -1 : 1;
    return 0;
}

int ds_ring_sync(struct ds_ring *r, const struct ds_node *nodes, size_t n, char *err, size_t errlen)
{
    if (same_list(r, nodes, n)) return 0;
    clear(r);
    if (n == 0) {
        snprintf(err, errlen, "no nodes to build a ring from");
        return -1;
    }
    if (n > UINT32_MAX) {
        snprintf(err, errlen, "%zu nodes: too many for a ring", n);
        return -1;
    }

    uint64_t total = 0;
    size_t name_bytes = 0;
    for (size_t i = 0; i < n; i++) {
        total += points_for(r->vnodes, nodes[i].weight);
        if (total > DS_RING_MAX_POINTS) {
            snprintf(err, errlen,
                     "the ring would need more than %u points: lower vnodes or the node "
                     "weights",
                     DS_RING_MAX_POINTS);
            return -1;
        }
        name_bytes += strlen(nodes[i].name ? nodes[i].name : "") + 1;
    }

    struct ring_point *pts = malloc((size_t)total * sizeof *pts);
    r->weights = malloc(n * sizeof *r->weights);
    r->names = malloc(n * sizeof *r->names);
    r->name_buf = malloc(name_bytes);
    r->pos = malloc((size_t)total * sizeof *r->pos);
    r->node = malloc((size_t)total * sizeof *r->node);
    if (!pts || !r->weights || !r->names || !r->name_buf || !r->pos || !r->node) {
        free(pts);
        clear(r);
        snprintf(err, errlen, "out of memory building a ring of %llu points", (unsigned long long)total);
        return -1;
    }

    size_t k = 0;
    char *b = r->name_buf;
    for (size_t i = 0; i < n; i++) {
        const char *name = nodes[i].name ? nodes[i].name : "";
        size_t len = strlen(name);
        memcpy(b, name, len + 1);
        r->names[i] = b;
        b += len + 1;
        r->weights[i] = nodes[i].weight;
        uint64_t count = points_for(r->vnodes, nodes[i].weight);
        for (uint64_t j = 0; j < count; j++) {
            pts[k].pos = dsh_xxh64(name, len, j);
            pts[k].node = (uint32_t)i;
            k++;
        }
    }
    qsort(pts, k, sizeof *pts, cmp_point);
    for (size_t i = 0; i < k; i++) {
        r->pos[i] = pts[i].pos;
        r->node[i] = pts[i].node;
    }
    free(pts);
    r->n_nodes = n;
    r->n_points = k;
    return 0;
}

size_t ds_ring_points(const struct ds_ring *r) { return r->n_points; }

size_t ds_ring_find(const struct ds_ring *r, uint64_t key_hash)
{
    /* First position >= key_hash; n_points when none (wraps to 0). */
    size_t lo = 0, hi = r->n_points;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (r->pos[mid] < key_hash) lo = mid + 1;
        else hi = mid;
    }
    return lo == r->n_points ? 0 : lo;
}

uint32_t ds_ring_node(const struct ds_ring *r, size_t pos) { return r->node[pos]; }

#include "sidecar/registry.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

struct node_count {
    char *node;
    size_t n;
};

struct registry {
    uint8_t key[crypto_shorthash_KEYBYTES]; /* random: nobody can make names collide on purpose */
    struct rentry **table;                  /* by name */
    struct rentry **itable;                 /* by id; the same size */
    size_t size, count;
    struct rentry *head, *tail;
    struct node_count *nodes; /* entries per owner node (few nodes) */
    size_t n_nodes;
};

/* A bucket hash keyed per registry (SipHash): names and ids come from peers, which
 * could otherwise send thousands that share a bucket. */
static uint64_t rhash(const struct registry *r, const char *s)
{
    uint8_t h[crypto_shorthash_BYTES];
    crypto_shorthash(h, (const unsigned char *)s, strlen(s), r->key);
    uint64_t v;
    memcpy(&v, h, sizeof v);
    return v;
}

struct registry *registry_new(void)
{
    struct registry *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    crypto_shorthash_keygen(r->key); /* libsodium is initialized (main) */
    r->size = 64;
    r->table = calloc(r->size, sizeof *r->table);
    r->itable = calloc(r->size, sizeof *r->itable);
    if (!r->table || !r->itable) {
        free(r->table);
        free(r->itable);
        free(r);
        return NULL;
    }
    return r;
}

static void free_entry(struct rentry *e)
{
    distsup__v1__child_info__free_unpacked(e->info, NULL);
    if (e->contender) distsup__v1__child_info__free_unpacked(e->contender, NULL);
    free(e);
}

void registry_free(struct registry *r)
{
    if (!r) return;
    for (struct rentry *e = r->head, *n; e; e = n) {
        n = e->next;
        free_entry(e);
    }
    for (size_t i = 0; i < r->n_nodes; i++) free(r->nodes[i].node);
    free(r->nodes);
    free(r->table);
    free(r->itable);
    free(r);
}

struct rentry *registry_get(struct registry *r, const char *name)
{
    for (struct rentry *e = r->table[rhash(r, name) & (r->size - 1)]; e; e = e->hnext)
        if (!strcmp(e->info->name, name)) return e;
    return NULL;
}

struct rentry *registry_find_id(struct registry *r, const char *id)
{
    if (!id[0]) return NULL; /* a child with no incarnation yet has no id */
    for (struct rentry *e = r->itable[rhash(r, id) & (r->size - 1)]; e; e = e->inext)
        if (!strcmp(e->info->id, id)) return e;
    return NULL;
}

static void id_link(struct registry *r, struct rentry *e)
{
    if (!e->info->id[0]) return; /* not indexed (see registry_find_id) */
    size_t i = rhash(r, e->info->id) & (r->size - 1);
    e->inext = r->itable[i];
    r->itable[i] = e;
}

static void id_unlink(struct registry *r, struct rentry *e)
{
    if (!e->info->id[0]) return;
    struct rentry **pp = &r->itable[rhash(r, e->info->id) & (r->size - 1)];
    while (*pp && *pp != e) pp = &(*pp)->inext;
    if (*pp) *pp = e->inext;
}

/* Counts one more (delta 1) or one less (-1) entry of node.  -1 when out of memory. */
static int count_node(struct registry *r, const char *node, int delta)
{
    for (size_t i = 0; i < r->n_nodes; i++) {
        if (strcmp(r->nodes[i].node, node)) continue;
        r->nodes[i].n += (size_t)(ptrdiff_t)delta;
        if (r->nodes[i].n == 0) {
            free(r->nodes[i].node);
            r->nodes[i] = r->nodes[--r->n_nodes];
        }
        return 0;
    }
    if (delta < 0) return 0;
    void *grown = realloc(r->nodes, (r->n_nodes + 1) * sizeof *r->nodes);
    if (!grown) return -1;
    r->nodes = grown;
    if (!(r->nodes[r->n_nodes].node = strdup(node))) return -1;
    r->nodes[r->n_nodes++].n = 1;
    return 0;
}

static int grow(struct registry *r)
{
    size_t n = r->size * 2;
    struct rentry **t = calloc(n, sizeof *t), **it = calloc(n, sizeof *it);
    if (!t || !it) {
        free(t);
        free(it);
        return -1;
    }
    for (struct rentry *e = r->head; e; e = e->next) {
        size_t i = rhash(r, e->info->name) & (n - 1);
        e->hnext = t[i];
        t[i] = e;
        if (!e->info->id[0]) continue;
        i = rhash(r, e->info->id) & (n - 1);
        e->inext = it[i];
        it[i] = e;
    }
    free(r->table);
    free(r->itable);
    r->table = t;
    r->itable = it;
    r->size = n;
    return 0;
}

struct rentry *registry_put(struct registry *r, Distsup__V1__ChildInfo *info, uint64_t epoch)
{
    struct rentry *e = registry_get(r, info->name);
    if (e) {
        if (strcmp(e->info->node, info->node) && count_node(r, info->node, 1) != 0) {
            distsup__v1__child_info__free_unpacked(info, NULL);
            return NULL;
        }
        if (strcmp(e->info->node, info->node)) count_node(r, e->info->node, -1);
        id_unlink(r, e);
        distsup__v1__child_info__free_unpacked(e->info, NULL);
        if (e->contender) distsup__v1__child_info__free_unpacked(e->contender, NULL);
        e->contender = NULL;
        e->info = info;
        e->epoch = epoch;
        e->rehoming = 0;
        id_link(r, e);
        return e;
    }
    if ((r->count + 1 > r->size / 2 && grow(r) != 0) || !(e = calloc(1, sizeof *e))) {
        distsup__v1__child_info__free_unpacked(info, NULL);
        return NULL;
    }
    if (count_node(r, info->node, 1) != 0) {
        free(e);
        distsup__v1__child_info__free_unpacked(info, NULL);
        return NULL;
    }
    e->info = info;
    e->epoch = epoch;
    size_t i = rhash(r, info->name) & (r->size - 1);
    e->hnext = r->table[i];
    r->table[i] = e;
    id_link(r, e);
    e->prev = r->tail;
    if (r->tail) r->tail->next = e;
    else r->head = e;
    r->tail = e;
    r->count++;
    return e;
}

void registry_del(struct registry *r, struct rentry *e)
{
    struct rentry **pp = &r->table[rhash(r, e->info->name) & (r->size - 1)];
    while (*pp && *pp != e) pp = &(*pp)->hnext;
    if (*pp) *pp = e->hnext;
    id_unlink(r, e);
    if (e->prev) e->prev->next = e->next;
    else r->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else r->tail = e->prev;
    r->count--;
    count_node(r, e->info->node, -1);
    free_entry(e);
}

size_t registry_count(const struct registry *r) { return r->count; }

size_t registry_count_node(const struct registry *r, const char *node)
{
    for (size_t i = 0; i < r->n_nodes; i++)
        if (!strcmp(r->nodes[i].node, node)) return r->nodes[i].n;
    return 0;
}

struct rentry *registry_first(struct registry *r) { return r->head; }

#include "sidecar/registry.h"

#include <stdlib.h>
#include <string.h>

#include "sidecar/fnv.h"

struct registry {
    struct rentry **table;
    size_t size, count;
    struct rentry *head, *tail;
};

struct registry *registry_new(void)
{
    struct registry *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->size = 64;
    if (!(r->table = calloc(r->size, sizeof *r->table))) {
        free(r);
        return NULL;
    }
    return r;
}

void registry_free(struct registry *r)
{
    if (!r) return;
    for (struct rentry *e = r->head, *n; e; e = n) {
        n = e->next;
        distsup__v1__child_info__free_unpacked(e->info, NULL);
        free(e);
    }
    free(r->table);
    free(r);
}

struct rentry *registry_get(struct registry *r, const char *name)
{
    for (struct rentry *e = r->table[fnv_str(name) & (r->size - 1)]; e; e = e->hnext)
        if (!strcmp(e->info->name, name)) return e;
    return NULL;
}

struct rentry *registry_find_id(struct registry *r, const char *id)
{
    for (struct rentry *e = r->head; e; e = e->next)
        if (!strcmp(e->info->id, id)) return e;
    return NULL;
}

static int grow(struct registry *r)
{
    size_t n = r->size * 2;
    struct rentry **t = calloc(n, sizeof *t);
    if (!t) return -1;
    for (struct rentry *e = r->head; e; e = e->next) {
        size_t i = fnv_str(e->info->name) & (n - 1);
        e->hnext = t[i];
        t[i] = e;
    }
    free(r->table);
    r->table = t;
    r->size = n;
    return 0;
}

struct rentry *registry_put(struct registry *r, Distsup__V1__ChildInfo *info, uint64_t epoch)
{
    struct rentry *e = registry_get(r, info->name);
    if (e) {
        distsup__v1__child_info__free_unpacked(e->info, NULL);
        e->info = info;
        e->epoch = epoch;
        e->rehoming = 0;
        return e;
    }
    if ((r->count + 1 > r->size / 2 && grow(r) != 0) || !(e = calloc(1, sizeof *e))) {
        distsup__v1__child_info__free_unpacked(info, NULL);
        return NULL;
    }
    e->info = info;
    e->epoch = epoch;
    size_t i = fnv_str(info->name) & (r->size - 1);
    e->hnext = r->table[i];
    r->table[i] = e;
    e->prev = r->tail;
    if (r->tail) r->tail->next = e;
    else r->head = e;
    r->tail = e;
    r->count++;
    return e;
}

void registry_del(struct registry *r, struct rentry *e)
{
    struct rentry **pp = &r->table[fnv_str(e->info->name) & (r->size - 1)];
    while (*pp && *pp != e) pp = &(*pp)->hnext;
    if (*pp) *pp = e->hnext;
    if (e->prev) e->prev->next = e->next;
    else r->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else r->tail = e->prev;
    r->count--;
    distsup__v1__child_info__free_unpacked(e->info, NULL);
    free(e);
}

size_t registry_count(const struct registry *r) { return r->count; }

size_t registry_count_node(const struct registry *r, const char *node)
{
    size_t n = 0;
    for (const struct rentry *e = r->head; e; e = e->next) n += !strcmp(e->info->node, node);
    return n;
}

struct rentry *registry_first(struct registry *r) { return r->head; }

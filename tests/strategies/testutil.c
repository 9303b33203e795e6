#include "tests/strategies/testutil.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

static int cmp_node(const void *a, const void *b)
{
    return strcmp(((const struct ds_node *)a)->name, ((const struct ds_node *)b)->name);
}

static void finish(struct tnodes *t)
{
    qsort(t->nodes, t->n, sizeof *t->nodes, cmp_node);
    for (size_t i = 0; i < t->n; i++) t->names[i] = (char *)t->nodes[i].name;
    for (size_t i = 1; i < t->n; i++)
        if (!strcmp(t->nodes[i - 1].name, t->nodes[i].name)) fail_msg("duplicate node name");
}

static void alloc(struct tnodes *t, size_t n)
{
    t->n = n;
    t->nodes = calloc(n ? n : 1, sizeof *t->nodes);
    t->names = calloc(n ? n : 1, sizeof *t->names);
    if (!t->nodes || !t->names) fail_msg("out of memory");
}

void tnodes_make(struct tnodes *t, size_t n, size_t first, const char *fmt)
{
    alloc(t, n);
    for (size_t i = 0; i < n; i++) {
        char buf[128];
        int w = snprintf(buf, sizeof buf, fmt, first + i);
        if (w < 0 || (size_t)w >= sizeof buf) fail_msg("node name too long");
        char *name = strdup(buf);
        if (!name) fail_msg("out of memory");
        t->nodes[i].name = name;
        t->nodes[i].weight = 100;
    }
    finish(t);
}

void tnodes_from(struct tnodes *t, const char *const *names, size_t n)
{
    alloc(t, n);
    for (size_t i = 0; i < n; i++) {
        char *name = strdup(names[i]);
        if (!name) fail_msg("out of memory");
        t->nodes[i].name = name;
        t->nodes[i].weight = 100;
    }
    finish(t);
}

void tnodes_free(struct tnodes *t)
{
    for (size_t i = 0; i < t->n; i++) free(t->names[i]);
    free(t->names);
    free(t->nodes);
    memset(t, 0, sizeof *t);
}

int tnodes_find(const struct tnodes *t, const char *name)
{
    for (size_t i = 0; i < t->n; i++)
        if (!strcmp(t->nodes[i].name, name)) return (int)i;
    return -1;
}

struct ds_child tchild(const char *key)
{
    struct ds_child c = {.supervisor = "default", .name = key, .key = key};
    return c;
}

struct placement *tload(const char *strategy, const char *options)
{
    char err[1024];
    struct placement *p = placement_load(strategy, options, "strategies", err, sizeof err);
    if (!p) fail_msg("placement_load(%s, \"%s\"): %s", strategy, options, err);
    return p;
}

int tplace(struct placement *p, const struct ds_child *c, const struct tnodes *t)
{
    char err[512];
    int r = placement_place(p, c, t->nodes, t->n, err, sizeof err);
    if (r < 0) fail_msg("place(%s): %s", c->key, err);
    return r;
}

void tcopy(const char *from, const char *to)
{
    FILE *in = fopen(from, "rb");
    if (!in) fail_msg("open %s", from);
    FILE *out = fopen(to, "wb");
    if (!out) fail_msg("create %s", to);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0)
        if (fwrite(buf, 1, n, out) != n) fail_msg("write %s", to);
    if (ferror(in)) fail_msg("read %s", from);
    if (fclose(in) != 0 || fclose(out) != 0) fail_msg("close %s / %s", from, to);
}

const char *ttmpdir(void)
{
    const char *d = getenv("TEST_TMPDIR");
    return d && *d ? d : "/tmp";
}

#include "sidecar/placement.h"

#include <dlfcn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar/log.h"

/* The size of the version 1 table: every field up to and including should_move. */
#define V1_SIZE (offsetof(struct ds_strategy, should_move) + sizeof(((struct ds_strategy *)0)->should_move))

struct placement {
    void *handle;                /* dlopen handle, closed last */
    const struct ds_strategy *s; /* inside the loaded object */
    void *state;                 /* from s->create, freed by s->destroy */
    char *path;                  /* the file loaded (owned) */
    char *name;                  /* s->name, or the file's stem when it has none (owned) */
};

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    if (n < 0) err[0] = 0;
}

/* "strategy /x/y.so" for a path, "strategy hash_ring (/dir/hash_ring.so)" for a
 * built-in: how every message about this strategy starts. */
static void describe(char *out, size_t outlen, const char *strategy, const char *path)
{
    if (strcmp(strategy, path) == 0) snprintf(out, outlen, "strategy %s", path);
    else snprintf(out, outlen, "strategy %s (%s)", strategy, path);
}

/* The file a strategy name resolves to (malloc'd), or NULL with err. */
static char *resolve(const char *strategy, const char *builtin_dir, char *err, size_t errlen)
{
    if (strchr(strategy, '/')) {
        char *p = strdup(strategy);
        if (!p) set_err(err, errlen, "strategy %s: out of memory", strategy);
        return p;
    }
    if (!*strategy) {
        set_err(err, errlen, "strategy: empty name (give a built-in name or a path to a .so)");
        return NULL;
    }
    if (!builtin_dir || !*builtin_dir) {
        set_err(err, errlen, "strategy %s: no directory for built-in strategies (give a path with '/')", strategy);
        return NULL;
    }
    size_t dl = strlen(builtin_dir);
    int slash = builtin_dir[dl - 1] == '/';
    size_t len = dl + 1 + strlen(strategy) + sizeof ".so";
    char *p = malloc(len);
    if (!p) {
        set_err(err, errlen, "strategy %s: out of memory", strategy);
        return NULL;
    }
    snprintf(p, len, "%s%s%s.so", builtin_dir, slash ? "" : "/", strategy);
    return p;
}

/* The file name without directory and ".so": a name for a strategy that gives none. */
static char *stem(const char *path)
{
    const char *b = strrchr(path, '/');
    b = b ? b + 1 : path;
    size_t n = strlen(b);
    if (n > 3 && !strcmp(b + n - 3, ".so")) n -= 3;
    return strndup(b, n);
}

static void release(struct placement *p)
{
    if (!p) return;
    if (p->state) p->s->destroy(p->state);
    if (p->handle && dlclose(p->handle) != 0)
        log_warn("placement", "dlclose %s: %s", p->path ? p->path : "?", dlerror());
    free(p->path);
    free(p->name);
    free(p);
}

struct placement *placement_load(const char *strategy, const char *options, const char *builtin_dir, char *err,
                                 size_t errlen)
{
    char who[1024 + 64];
    if (!strategy) strategy = "";
    if (!options) options = "";

    struct placement *p = calloc(1, sizeof *p);
    if (!p) {
        set_err(err, errlen, "strategy %s: out of memory", strategy);
        return NULL;
    }
    p->path = resolve(strategy, builtin_dir, err, errlen);
    if (!p->path) goto fail;
    describe(who, sizeof who, strategy, p->path);

    (void)dlerror(); /* clear any earlier error */
    p->handle = dlopen(p->path, RTLD_NOW | RTLD_LOCAL);
    if (!p->handle) {
        const char *why = dlerror();
        set_err(err, errlen, "%s: cannot load: %s", who, why ? why : "unknown dlopen error");
        goto fail;
    }

    (void)dlerror();
    const struct ds_strategy *s = dlsym(p->handle, DS_STRATEGY_SYMBOL);
    if (!s) {
        set_err(err, errlen, "%s: no symbol %s (is it a distsup strategy?)", who, DS_STRATEGY_SYMBOL);
        goto fail;
    }
    if (s->abi_version != DS_STRATEGY_ABI_VERSION) {
        set_err(err, errlen, "%s: ABI version %u, this distsupd speaks %u", who, (unsigned)s->abi_version,
                (unsigned)DS_STRATEGY_ABI_VERSION);
        goto fail;
    }
    if (s->struct_size < V1_SIZE) {
        set_err(err, errlen,
                "%s: struct_size %u is smaller than the ABI version 1 table (%zu bytes); "
                "rebuild it against strategies/strategy.h",
                who, (unsigned)s->struct_size, (size_t)V1_SIZE);
        goto fail;
    }
    const char *missing = !s->create ? "create" : !s->destroy ? "destroy" : !s->place ? "place" : NULL;
    if (missing) {
        set_err(err, errlen, "%s: required function %s is NULL", who, missing);
        goto fail;
    }
    p->s = s;
    p->name = s->name && *s->name ? strdup(s->name) : stem(p->path);
    if (!p->name) {
        set_err(err, errlen, "%s: out of memory", who);
        goto fail;
    }

    char why[512];
    memset(why, 0, sizeof why);
    p->state = s->create(options, why, sizeof why);
    if (!p->state) {
        why[sizeof why - 1] = 0;
        set_err(err, errlen, "%s: options rejected: %s", who, why[0] ? why : "(no reason given)");
        goto fail;
    }
    return p;
fail:
    release(p);
    return NULL;
}

void placement_free(struct placement *p) { release(p); }

const char *placement_name(const struct placement *p) { return p->name; }

const char *placement_path(const struct placement *p) { return p->path; }

int placement_place(struct placement *p, const struct ds_child *child, const struct ds_node *nodes, size_t n_nodes,
                    char *err, size_t errlen)
{
    char scratch[256];
    if (!err || errlen == 0) {
        err = scratch;
        errlen = sizeof scratch;
    }
    err[0] = 0;
    int r = p->s->place(p->state, child, nodes, n_nodes, err, errlen);
    err[errlen - 1] = 0; /* whatever the strategy wrote, it ends here */
    if (r >= 0 && (size_t)r < n_nodes) return r;
    if (r == -1) {
        if (!err[0]) set_err(err, errlen, "strategy %s found no node", p->name);
        return -1;
    }
    if (n_nodes == 0)
        set_err(err, errlen, "strategy %s returned node index %d for an empty node list: refused", p->name, r);
    else set_err(err, errlen, "strategy %s returned node index %d, not in 0..%zu: refused", p->name, r, n_nodes - 1);
    return -1;
}

void placement_nodes_changed(struct placement *p, const struct ds_node *nodes, size_t n_nodes)
{
    if (p->s->nodes_changed) p->s->nodes_changed(p->state, nodes, n_nodes);
}

int placement_should_move(struct placement *p, const struct ds_child *child, int current, const struct ds_node *nodes,
                          size_t n_nodes, int *to)
{
    if (current < -1 || (current >= 0 && (size_t)current >= n_nodes)) current = -1;
    int dest = -1;
    if (!p->s->should_move) {
        char err[256];
        dest = placement_place(p, child, nodes, n_nodes, err, sizeof err);
        if (dest < 0 || dest == current) return 0;
        if (to) *to = dest;
        return 1;
    }
    if (!p->s->should_move(p->state, child, current, nodes, n_nodes, &dest)) return 0;
    if (dest < 0 || (size_t)dest >= n_nodes) {
        log_warn("placement",
                 "strategy %s: should_move for child %s returned node index %d, not among "
                 "the %zu nodes: refused, the child stays",
                 p->name, child && child->name ? child->name : "?", dest, n_nodes);
        return 0;
    }
    if (dest == current) return 0;
    if (to) *to = dest;
    return 1;
}

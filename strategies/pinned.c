/* pinned: every child of the supervisor runs on one named node, or on the nodes that
 * carry given labels.  See docs/strategies.md ("pinned").
 *
 * Options (node= or label=, not both):
 *   node=NAME          the node, by name;
 *   label=KEY=VALUE    nodes whose label KEY is VALUE; may be given several times (a
 *                      node must match them all);
 *   label=KEY          nodes whose label KEY equals the child's own label KEY (a child
 *                      without that label cannot be placed): the child's labels pick;
 *   fallback=none      (default) no acceptable node up: place fails with the reason;
 *   fallback=hash_ring (or its synonym any) no acceptable node up: consistent hashing
 *                      of the child's key over every node given (160 vnodes, weights).
 * Among several acceptable nodes the child's key picks one by rendezvous hashing
 * (highest dsh_score), so each key sticks to its node while the set allows.
 * should_move: a child stays while its node is acceptable; it moves to an acceptable
 * node when one is up and its own is not (back from a fallback node, say); a child
 * whose node is gone with no acceptable node up moves by the fallback, if any. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "strategies/hash.h"
#include "strategies/options.h"
#include "strategies/ring.h"
#include "strategies/strategy.h"

#define MAX_LABELS 16

struct pin_label {
    char *key;
    char *value; /* NULL: the child's own value of key */
};

struct pinned {
    char *node;
    size_t n_labels;
    struct pin_label labels[MAX_LABELS];
    struct ds_ring *ring; /* fallback=hash_ring; NULL for none */
};

static void pinned_free(struct pinned *p)
{
    if (!p) return;
    free(p->node);
    for (size_t i = 0; i < p->n_labels; i++) {
        free(p->labels[i].key);
        free(p->labels[i].value);
    }
    ds_ring_free(p->ring);
    free(p);
}

struct parse {
    struct pinned *p;
    int fallback; /* 0 none, 1 hash_ring */
};

static int set_option(void *ctx, const char *key, const char *value, char *err, size_t errlen)
{
    struct parse *ps = ctx;
    struct pinned *p = ps->p;
    if (!strcmp(key, "node")) {
        if (p->node) {
            snprintf(err, errlen, "node= given twice");
            return -1;
        }
        if (!*value) {
            snprintf(err, errlen, "node= needs a node name");
            return -1;
        }
        if (!(p->node = strdup(value))) goto oom;
        return 0;
    }
    if (!strcmp(key, "label")) {
        if (p->n_labels == MAX_LABELS) {
            snprintf(err, errlen, "more than %d label= options", MAX_LABELS);
            return -1;
        }
        const char *eq = strchr(value, '=');
        size_t klen = eq ? (size_t)(eq - value) : strlen(value);
        if (klen == 0 || (eq && eq[1] == 0)) {
            snprintf(err, errlen, "label=%.60s: expected label=KEY=VALUE or label=KEY", value);
            return -1;
        }
        struct pin_label *l = &p->labels[p->n_labels];
        if (!(l->key = strndup(value, klen))) goto oom;
        if (eq && !(l->value = strdup(eq + 1))) {
            free(l->key);
            l->key = NULL;
            goto oom;
        }
        p->n_labels++;
        return 0;
    }
    if (!strcmp(key, "fallback")) {
        if (!strcmp(value, "none")) {
            ps->fallback = 0;
        } else if (!strcmp(value, "hash_ring") || !strcmp(value, "any")) {
            ps->fallback = 1;
        } else {
            snprintf(err, errlen, "fallback=%.40s: expected none, hash_ring or any", value);
            return -1;
        }
        return 0;
    }
    snprintf(err, errlen, "unknown option '%.40s' (pinned takes node, label, fallback)", key);
    return -1;
oom:
    snprintf(err, errlen, "out of memory");
    return -1;
}

static void *pin_create(const char *options, char *err, size_t errlen)
{
    struct parse ps = {calloc(1, sizeof(struct pinned)), 0};
    if (!ps.p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (ds_opts_parse(options, set_option, &ps, err, errlen) != 0) goto fail;
    if (!ps.p->node && ps.p->n_labels == 0) {
        snprintf(err, errlen, "pinned needs node=NAME or label=KEY=VALUE");
        goto fail;
    }
    if (ps.p->node && ps.p->n_labels > 0) {
        snprintf(err, errlen, "give node= or label=, not both");
        goto fail;
    }
    if (ps.fallback && !(ps.p->ring = ds_ring_new(160))) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    return ps.p;
fail:
    pinned_free(ps.p);
    return NULL;
}

static void pin_destroy(void *state) { pinned_free(state); }

static const char *label_of(const struct ds_label *labels, size_t n, const char *key)
{
    for (size_t i = 0; i < n; i++)
        if (labels[i].key && !strcmp(labels[i].key, key)) return labels[i].value ? labels[i].value : "";
    return NULL;
}

/* The value label i requires for this child; NULL if the child lacks it. */
static const char *wanted(const struct pin_label *l, const struct ds_child *child)
{
    return l->value ? l->value : label_of(child->labels, child->n_labels, l->key);
}

/* Checks that the child has every label the options take from it; -1 with err if not. */
static int child_ok(const struct pinned *p, const struct ds_child *child, char *err, size_t errlen)
{
    for (size_t i = 0; i < p->n_labels; i++) {
        if (!wanted(&p->labels[i], child)) {
            snprintf(err, errlen,
                     "child %.100s has no label %.60s (option label=%.60s pins to the child's "
                     "own value)",
                     child->name ? child->name : "", p->labels[i].key, p->labels[i].key);
            return -1;
        }
    }
    return 0;
}

static int acceptable(const struct pinned *p, const struct ds_child *child, const struct ds_node *n)
{
    if (p->node) return n->name && !strcmp(n->name, p->node);
    for (size_t i = 0; i < p->n_labels; i++) {
        const char *want = wanted(&p->labels[i], child);
        const char *have = label_of(n->labels, n->n_labels, p->labels[i].key);
        if (!want || !have || strcmp(want, have) != 0) return 0;
    }
    return 1;
}

/* The acceptable node for the child (rendezvous among several), or -1. */
static int pick(const struct pinned *p, const struct ds_child *child, const struct ds_node *nodes, size_t n)
{
    uint64_t key_hash = dsh_str(child->key ? child->key : child->name, 0);
    int best = -1;
    uint64_t best_score = 0;
    for (size_t i = 0; i < n; i++) {
        if (!acceptable(p, child, &nodes[i])) continue;
        if (p->node) return (int)i;
        uint64_t score = dsh_score(nodes[i].name, key_hash);
        if (best < 0 || score > best_score) {
            best = (int)i;
            best_score = score;
        }
    }
    return best;
}

static int fallback(struct pinned *p, const struct ds_child *child, const struct ds_node *nodes, size_t n, char *err,
                    size_t errlen)
{
    if (ds_ring_sync(p->ring, nodes, n, err, errlen) != 0) return -1;
    uint64_t key_hash = dsh_str(child->key ? child->key : child->name, 0);
    return (int)ds_ring_node(p->ring, ds_ring_find(p->ring, key_hash));
}

/* Appends to err[0..errlen) from offset *used; stops quietly when full. */
static void appendf(char *err, size_t errlen, size_t *used, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void appendf(char *err, size_t errlen, size_t *used, const char *fmt, ...)
{
    if (*used >= errlen) return;
    va_list ap;
    va_start(ap, fmt);
    int w = vsnprintf(err + *used, errlen - *used, fmt, ap);
    va_end(ap);
    if (w > 0) *used += (size_t)w;
}

/* Why no node is acceptable: "pinned node X is not up", "no up node has label k=v". */
static void explain(const struct pinned *p, const struct ds_child *child, char *err, size_t errlen)
{
    size_t used = 0;
    if (p->node) {
        appendf(err, errlen, &used, "pinned node %s is not up", p->node);
        return;
    }
    appendf(err, errlen, &used, "no up node has label%s ", p->n_labels > 1 ? "s" : "");
    for (size_t i = 0; i < p->n_labels; i++)
        appendf(err, errlen, &used, "%s%s=%s", i ? ", " : "", p->labels[i].key, wanted(&p->labels[i], child));
}

static int pin_place(void *state, const struct ds_child *child, const struct ds_node *nodes, size_t n_nodes, char *err,
                     size_t errlen)
{
    struct pinned *p = state;
    if (child_ok(p, child, err, errlen) != 0) return -1;
    int r = pick(p, child, nodes, n_nodes);
    if (r >= 0) return r;
    if (p->ring && n_nodes > 0) return fallback(p, child, nodes, n_nodes, err, errlen);
    explain(p, child, err, errlen);
    return -1;
}

static int pin_should_move(void *state, const struct ds_child *child, int current, const struct ds_node *nodes,
                           size_t n_nodes, int *to)
{
    struct pinned *p = state;
    char err[128];
    if (current >= (int)n_nodes) current = -1;
    if (child_ok(p, child, err, sizeof err) != 0) return 0;
    if (current >= 0 && acceptable(p, child, &nodes[current])) return 0;
    int r = pick(p, child, nodes, n_nodes);
    if (r < 0 && current < 0 && p->ring && n_nodes > 0) r = fallback(p, child, nodes, n_nodes, err, sizeof err);
    if (r < 0) return 0;
    *to = r;
    return 1;
}

__attribute__((visibility("default"))) const struct ds_strategy distsup_strategy = {
    .abi_version = DS_STRATEGY_ABI_VERSION,
    .struct_size = sizeof(struct ds_strategy),
    .name = "pinned",
    .create = pin_create,
    .destroy = pin_destroy,
    .place = pin_place,
    .nodes_changed = NULL,
    .should_move = pin_should_move,
};

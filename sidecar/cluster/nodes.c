/* cluster/nodes.c: The node table, quorum, the directory node of a name, placement (cluster.h). */
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar/cluster/cluster.h"
#include "sidecar/fnv.h"
#include "sidecar/log.h"
#include "sidecar/ops.h"
#include "sidecar/peer.h"
#include "sidecar/spec.h"

#define REBALANCE_DELAY_MS 500 /* after a join, before moving children */

struct node *find_node(struct core *c, const char *name)
{
    for (size_t i = 0; i < c->n_nodes; i++)
        if (!strcmp(c->nodes[i]->name, name)) return c->nodes[i];
    return NULL;
}

static void free_labels(struct node *n)
{
    for (size_t i = 0; i < n->n_labels; i++) {
        free((char *)n->labels[i].key);
        free((char *)n->labels[i].value);
    }
    free(n->labels);
    n->labels = NULL;
    n->n_labels = 0;
}

static void free_kinds(struct node *n)
{
    for (size_t i = 0; i < n->n_kinds; i++) free(n->kinds[i]);
    free(n->kinds);
    n->kinds = NULL;
    n->n_kinds = 0;
}

void free_node(struct node *n)
{
    if (!n) return;
    free_labels(n);
    free_kinds(n);
    free(n->name);
    free(n->api);
    free(n->peer_addr);
    free(n);
}

struct node *add_node(struct core *c, const char *name)
{
    struct node *n = find_node(c, name);
    if (n) return n;
    void *grown = realloc(c->nodes, (c->n_nodes + 1) * sizeof *c->nodes);
    if (!grown) return NULL;
    c->nodes = grown;
    if (!(n = calloc(1, sizeof *n)) || !(n->name = strdup(name))) {
        free(n);
        return NULL;
    }
    n->weight = 100;
    c->nodes[c->n_nodes++] = n;
    return n;
}

static int add_label(struct node *n, const char *k, const char *v)
{
    void *grown = realloc(n->labels, (n->n_labels + 1) * sizeof *n->labels);
    if (!grown) return -1;
    n->labels = grown;
    char *kk = strdup(k), *vv = strdup(v);
    if (!kk || !vv) {
        free(kk);
        free(vv);
        return -1;
    }
    n->labels[n->n_labels].key = kk;
    n->labels[n->n_labels].value = vv;
    n->n_labels++;
    return 0;
}

/* "k=v,k=v" into n's labels. */
int parse_labels(struct node *n, const char *text)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", text);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = 0;
        if (add_label(n, tok, eq + 1) != 0) return -1;
    }
    return 0;
}

int node_usable(const struct node *n) { return n->up && !n->leaving; }

size_t up_count(struct core *c)
{
    size_t k = 0;
    for (size_t i = 0; i < c->n_nodes; i++) k += c->nodes[i]->up;
    return k;
}

int sup_eligible(const struct sup *s, const char *node)
{
    if (!s->eligible) return 1;
    for (size_t i = 0; i < s->n_eligible; i++)
        if (!strcmp(s->eligible[i], node)) return 1;
    return 0;
}

/* The directory node of a name: rendezvous hashing over the usable nodes, whatever
 * the placement strategy, so that every node agrees on who serializes a name. */
struct node *directory_of(struct core *c, struct sup *s, const char *name)
{
    struct node *best = NULL;
    uint64_t best_h = 0;
    for (size_t i = 0; i < c->n_nodes; i++) {
        struct node *n = c->nodes[i];
        if (!node_usable(n)) continue;
        uint64_t h = fnv_directory(s->cfg->name, name, n->name);
        if (!best || h > best_h || (h == best_h && strcmp(n->name, best->name) < 0)) {
            best = n;
            best_h = h;
        }
    }
    return best;
}

int node_cmp(const void *a, const void *b)
{
    return strcmp((*(struct node *const *)a)->name, (*(struct node *const *)b)->name);
}

void nodeset_free(struct nodeset *ns)
{
    free(ns->v);
    free(ns->src);
    ns->v = NULL;
    ns->src = NULL;
    ns->n = 0;
}

int node_has_kind(struct core *c, const struct node *n, const char *kind)
{
    if (n->self) return hosts_have_kind(c->hosts, kind);
    for (size_t i = 0; i < n->n_kinds; i++)
        if (!strcmp(n->kinds[i], kind)) return 1;
    return 0;
}

int nodeset_build(struct core *c, struct sup *s, int without_self, const char *kind, struct nodeset *ns)
{
    ns->n = 0;
    ns->v = calloc(c->n_nodes, sizeof *ns->v);
    ns->src = calloc(c->n_nodes, sizeof *ns->src);
    if (!ns->v || !ns->src) {
        nodeset_free(ns);
        return -1;
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        struct node *n = c->nodes[i];
        if (!node_usable(n) || (without_self && n->self) || !sup_eligible(s, n->name)) continue;
        if (kind && kind[0] && !node_has_kind(c, n, kind)) continue;
        ns->src[ns->n++] = n;
    }
    qsort(ns->src, ns->n, sizeof *ns->src, node_cmp);
    for (size_t i = 0; i < ns->n; i++) {
        struct node *n = ns->src[i];
        ns->v[i] = (struct ds_node){.name = n->name,
                                    .weight = n->weight ? n->weight : 1,
                                    .labels = n->labels,
                                    .n_labels = n->n_labels,
                                    .children = n->self ? (uint32_t)s->count
                                                        : (uint32_t)registry_count_node(s->remote, n->name)};
    }
    return 0;
}

int dchild_make(struct dchild *d, const char *sup, const char *name, const Distsup__V1__ChildSpec *spec)
{
    d->labels = NULL;
    d->c = (struct ds_child){.supervisor = sup, .name = name, .key = name};
    if (!spec) return 0;
    if (spec->key[0]) d->c.key = spec->key;
    if (spec->n_labels) {
        if (!(d->labels = calloc(spec->n_labels, sizeof *d->labels))) return -1;
        for (size_t i = 0; i < spec->n_labels; i++)
            d->labels[i] = (struct ds_label){spec->labels[i]->key, spec->labels[i]->value};
        d->c.labels = d->labels;
        d->c.n_labels = spec->n_labels;
    }
    return 0;
}

/* Where a child of s goes: a node, or NULL with the reason in err. */
struct node *place_child(struct core *c, struct sup *s, const char *name, const Distsup__V1__ChildSpec *spec,
                         int without_self, char *err, size_t errlen)
{
    struct nodeset ns;
    struct dchild d;
    const char *kind = spec && spec->kind[0] ? spec->kind : NULL;
    if (nodeset_build(c, s, without_self, kind, &ns) != 0 || dchild_make(&d, s->cfg->name, name, spec) != 0) {
        nodeset_free(&ns);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    struct node *to = NULL;
    if (ns.n == 0 && kind) {
        snprintf(err, errlen, "no node that is up and eligible for supervisor '%s' has a host of kind '%s' attached",
                 s->cfg->name, kind);
    } else if (ns.n == 0) {
        snprintf(err, errlen, "no node is up and eligible for supervisor '%s'%s", s->cfg->name,
                 s->eligible ? " (see its nodes option)" : "");
    } else {
        int i = placement_place(s->strategy, &d.c, ns.v, ns.n, err, errlen);
        if (i >= 0) to = ns.src[i];
    }
    free(d.labels);
    nodeset_free(&ns);
    return to;
}

void strategies_nodes_changed(struct core *c)
{
    for (size_t i = 0; i < c->n_sups; i++) {
        struct nodeset ns;
        if (nodeset_build(c, &c->sups[i], 0, NULL, &ns) != 0) continue;
        placement_nodes_changed(c->sups[i].strategy, ns.v, ns.n);
        nodeset_free(&ns);
    }
}

static void node_event(struct core *c, Distsup__V1__EventKind kind, const char *node, const char *reason)
{
    Distsup__V1__Event ev = DISTSUP__V1__EVENT__INIT;
    ev.kind = kind;
    ev.supervisor = "";
    ev.name = "";
    ev.id = "";
    ev.node = (char *)node;
    ev.reason = (char *)reason;
    ev.at_ms = reactor_wall_ms();
    event_bus_publish(c->bus, &ev);
}

static void update_quorum(struct core *c)
{
    if (!c->cfg->quorum) return;
    size_t up = up_count(c), need = c->cfg->cluster_size / 2 + 1;
    int have = up >= need;
    if (have == c->quorum) return;
    c->quorum = have;
    if (!have) {
        log_error("cluster",
                  "no quorum: %zu of %u nodes up, %zu needed; stopping this node's children and "
                  "refusing StartChild until a majority is back",
                  up, c->cfg->cluster_size, need);
        c->synced = 0;
        c->lost_quorum = 1;
        suspend_children(c);
    } else {
        log_info("cluster", "quorum is back: %zu of %u nodes up", up, c->cfg->cluster_size);
        c->sync_since = reactor_now_ms();
        if (c->lost_quorum) c->regained_at = c->sync_since; /* not the first time it forms */
        maybe_finish_sync(c);
        loop_arm_tick(c->loop);
    }
}

void on_node_up(struct core *c, const Distsup__V1__Join *j)
{
    struct node *n = add_node(c, j->name);
    if (!n || n->self) return;
    int restarted = n->up && n->boot_id != j->boot_id;
    int was_up = n->up;
    if (restarted || !was_up) {
        /* A node that restarted tells us its children afresh: forget what it said before. */
        if (restarted)
            for (size_t i = 0; i < c->n_sups; i++)
                for (struct rentry *e = registry_first(c->sups[i].remote), *nx; e; e = nx) {
                    nx = registry_next(e);
                    if (!strcmp(e->info->node, n->name)) cache_remove(c, &c->sups[i], e);
                }
        fail_forwards(c, n, "restarted");
        free_kinds(n); /* it says its kinds again (NodeKinds) */
    } else {
        /* A new link after a broken one: what was in flight on the old one is lost. */
        fail_forwards(c, n, "lost its link");
    }
    /* it was down here and is back: what it did while apart may win over ours for a while */
    if (!was_up && n->seen) n->returned_at = reactor_now_ms();
    n->up = n->seen = 1;
    n->leaving = 0;
    n->boot_id = j->boot_id;
    n->epoch++;
    n->snapshot_done = 0;
    n->weight = j->weight ? j->weight : 100;
    free(n->api);
    free(n->peer_addr);
    n->api = strdup(j->api_address);
    n->peer_addr = strdup(j->peer_address);
    free_labels(n);
    for (size_t i = 0; i < j->n_labels; i++) add_label(n, j->labels[i]->key, j->labels[i]->value);
    if (!was_up) node_event(c, DISTSUP__V1__EVENT_KIND__NODE_UP, n->name, "up");
    else if (restarted) node_event(c, DISTSUP__V1__EVENT_KIND__NODE_UP, n->name, "restarted");
    send_snapshot(c, n->name);
    send_kinds(c, n->name);
    strategies_nodes_changed(c);
    update_quorum(c);
    c->rebalance_at = reactor_now_ms() + REBALANCE_DELAY_MS;
    loop_arm_tick(c->loop);
}

/* ---------- kinds of hosted children ---------- */

#define KINDS_MAX 4096 /* kinds one node may say it hosts */

/* This node's kinds to one node (NULL: to all). */
void send_kinds(struct core *c, const char *node)
{
    if (!c->peer) return;
    const char **v;
    size_t n;
    if (hosts_kinds(c->hosts, &v, &n) != 0) {
        log_error("cluster", "out of memory: the peers do not hear which kinds this node hosts");
        return;
    }
    Distsup__V1__NodeKinds k = DISTSUP__V1__NODE_KINDS__INIT;
    k.n_kinds = n;
    k.kinds = (char **)v;
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_KINDS;
    m.kinds = &k;
    if (node) cluster_send(c, node, &m);
    else cluster_broadcast(c, &m);
    free(v);
}

/* Where hosted children may run changed: the strategies see other node sets, the
 * children of a kind that left wait or move, those that wait may now run. */
static void kinds_moved(struct core *c)
{
    strategies_nodes_changed(c);
    c->rebalance_at = reactor_now_ms() + REBALANCE_DELAY_MS;
    c->reconcile_at = reactor_now_ms() + 1;
    loop_arm_tick(c->loop);
}

void kinds_changed(struct core *c)
{
    if (!c->peer) return;
    send_kinds(c, NULL);
    kinds_moved(c);
}

void on_kinds(struct core *c, struct node *from, const Distsup__V1__NodeKinds *k)
{
    char err[256];
    if (k->n_kinds > KINDS_MAX) {
        authz_refused(c, from, "NodeKinds with %zu kinds (the limit is %d)", k->n_kinds, KINDS_MAX);
        return;
    }
    for (size_t i = 0; i < k->n_kinds; i++)
        if (spec_name_check("kind", k->kinds[i], err, sizeof err) != 0) {
            authz_refused(c, from, "NodeKinds: %s", err);
            return;
        }
    char **v = k->n_kinds ? calloc(k->n_kinds, sizeof *v) : NULL;
    if (k->n_kinds && !v) return;
    for (size_t i = 0; i < k->n_kinds; i++)
        if (!(v[i] = strdup(k->kinds[i]))) {
            for (size_t j = 0; j < i; j++) free(v[j]);
            free(v);
            return;
        }
    free_kinds(from);
    from->kinds = v;
    from->n_kinds = k->n_kinds;
    log_info("cluster", "node %s hosts %zu kinds of hosted children now", from->name, k->n_kinds);
    kinds_moved(c);
}

void on_node_down(struct core *c, const char *name, int clean)
{
    struct node *n = find_node(c, name);
    if (!n || n->self || !n->up) return;
    n->up = 0;
    n->leaving = 0;
    if (!clean) metrics_add(c->sv.metrics, MN_FAILOVERS, 1);
    fail_forwards(c, n, clean ? "left the cluster" : "went down");
    node_event(c, clean ? DISTSUP__V1__EVENT_KIND__NODE_TERMINATE : DISTSUP__V1__EVENT_KIND__NODE_DOWN, n->name,
               clean ? "left the cluster" : "down");
    strategies_nodes_changed(c);
    update_quorum(c);
    reconcile(c);
    maybe_finish_sync(c);
}

static void known_nodes(struct core *c, char *list, size_t cap)
{
    size_t off = 0;
    list[0] = 0;
    for (size_t i = 0; i < c->n_nodes && off < cap - 1; i++) {
        int n = snprintf(list + off, cap - off, "%s%s", i ? ", " : "", c->nodes[i]->name);
        if (n < 0) break;
        off += (size_t)n;
    }
}

/* A node filter (Children, CountChildren): "" or a known node.  0, or NOT_FOUND. */
int check_node(struct core *c, const char *node, answer_fn done, void *arg)
{
    if (!node[0] || find_node(c, node)) return 0;
    char list[512];
    known_nodes(c, list, sizeof list);
    answer_fail(done, arg, GRPC_STATUS_NOT_FOUND, "no node named '%s' in the cluster (known nodes: %s)", node, list);
    return -1;
}

/* A node to start on that the cluster does not know: UNAVAILABLE (no eligible node). */
void unknown_target(struct core *c, const char *node, answer_fn done, void *arg)
{
    char list[512];
    known_nodes(c, list, sizeof list);
    answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node '%s' is not in the cluster (known nodes: %s)", node, list);
}

int others_usable(struct core *c)
{
    for (size_t i = 1; i < c->n_nodes; i++)
        if (node_usable(c->nodes[i])) return 1;
    return 0;
}

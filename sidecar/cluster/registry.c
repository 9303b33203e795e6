/* cluster/registry.c: Other nodes' children: broadcasts, snapshots, the cache, duplicates (cluster.h). */
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar/cluster/cluster.h"
#include "sidecar/fnv.h"
#include "sidecar/log.h"
#include "sidecar/ops.h"
#include "sidecar/peer.h"

#define SNAPSHOT_CHUNK 500        /* children per Snapshot message, at most ... */
#define SNAPSHOT_BYTES (8u << 20) /* ... and about this many bytes (a peer message is at most 64 MiB) */

static uint8_t *pack_cluster(const Distsup__V1__ClusterMsg *m, size_t *len)
{
    *len = distsup__v1__cluster_msg__get_packed_size(m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf) distsup__v1__cluster_msg__pack(m, buf);
    else log_error("cluster", "out of memory packing a cluster message");
    return buf;
}

int cluster_send(struct core *c, const char *node, const Distsup__V1__ClusterMsg *m)
{
    if (!c->peer) return -1;
    size_t len;
    uint8_t *buf = pack_cluster(m, &len);
    int rc = buf ? peer_send(c->peer, node, buf, len) : -1;
    free(buf);
    return rc;
}

void cluster_broadcast(struct core *c, const Distsup__V1__ClusterMsg *m)
{
    if (!c->peer) return;
    size_t len;
    uint8_t *buf = pack_cluster(m, &len);
    if (buf) peer_broadcast(c->peer, buf, len);
    free(buf);
}

/* Tells every node how a local child is now. */
void announce(struct core *c, struct child *ch)
{
    if (!c->peer || ch->dead) return;
    Distsup__V1__ChildInfo info;
    sv_fill_info(&c->sv, ch, &info);
    /* The spec (with its init bytes, up to max_payload_bytes) goes once per
     * incarnation; the peers keep it from the last time (apply_remote_info).
     * Snapshots always carry it. */
    if (ch->announced_inc == ch->incarnation) info.spec = NULL;
    ch->announced_inc = ch->incarnation;
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_CHILD;
    m.child = &info;
    cluster_broadcast(c, &m);
}

void broadcast_event(struct core *c, const Distsup__V1__Event *ev)
{
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_EVENT;
    m.event = (Distsup__V1__Event *)ev;
    cluster_broadcast(c, &m);
}

void announce_gone(struct core *c, struct child *ch, const char *reason)
{
    if (!c->peer) return;
    Distsup__V1__ChildGone g = DISTSUP__V1__CHILD_GONE__INIT;
    g.supervisor = (char *)sup_of(ch)->cfg->name;
    g.name = ch->name;
    g.node = (char *)c->cfg->node_name;
    g.incarnation = ch->incarnation;
    g.reason = (char *)reason;
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_GONE;
    m.gone = &g;
    cluster_broadcast(c, &m);
}

/* This node's own children, in chunks, to one node that just came up. */
void send_snapshot(struct core *c, const char *node)
{
    Distsup__V1__ChildInfo *infos = calloc(SNAPSHOT_CHUNK, sizeof *infos);
    Distsup__V1__ChildInfo **ptrs = calloc(SNAPSHOT_CHUNK, sizeof *ptrs);
    if (!infos || !ptrs) {
        log_error("cluster", "out of memory: no snapshot for %s", node);
        free(infos);
        free(ptrs);
        return;
    }
    Distsup__V1__Snapshot snap = DISTSUP__V1__SNAPSHOT__INIT;
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_SNAPSHOT;
    m.snapshot = &snap;
    size_t n = 0, total = 0, bytes = 0;
    for (size_t i = 0; i < c->n_sups; i++) {
        for (struct child *ch = c->sups[i].head; ch; ch = ch->next) {
            if (ch->dead || ch->moving_to) continue;
            sv_fill_info(&c->sv, ch, &infos[n]);
            ptrs[n] = &infos[n];
            bytes += distsup__v1__child_info__get_packed_size(&infos[n]);
            n++;
            total++;
            /* one child is at most max_payload_bytes (4 MiB) of init and its spec */
            if (n == SNAPSHOT_CHUNK || bytes >= SNAPSHOT_BYTES) {
                snap.n_children = n;
                snap.children = ptrs;
                cluster_send(c, node, &m);
                n = 0;
                bytes = 0;
            }
        }
    }
    snap.n_children = n;
    snap.children = ptrs;
    snap.last = 1;
    cluster_send(c, node, &m);
    log_debug("cluster", "sent a snapshot of %zu children to %s", total, node);
    free(infos);
    free(ptrs);
}

/* q is a failover copy of p: started elsewhere when p's node was taken for down, from
 * p's incarnation or an earlier one. */
int copy_derives(const struct copy *q, const struct copy *p)
{
    return q->rehomed_from && q->rehomed_from[0] && !strcmp(q->rehomed_from, p->node) &&
        q->rehomed_from_inc <= p->incarnation;
}

int copy_wins(const struct copy *a, const struct copy *b)
{
    int a_from_b = copy_derives(a, b), b_from_a = copy_derives(b, a);
    if (b_from_a && !a_from_b && a->running) return 1; /* a kept running: its failover copy b stops */
    if (a_from_b && !b_from_a && b->running) return 0;
    if (a->incarnation != b->incarnation) return a->incarnation > b->incarnation;
    return strcmp(a->node, b->node) < 0;
}

void copy_of_info(const Distsup__V1__ChildInfo *i, struct copy *k)
{
    *k = (struct copy){.node = i->node,
                       .incarnation = i->incarnation,
                       .rehomed_from = i->rehomed_from,
                       .rehomed_from_inc = i->rehomed_from_incarnation,
                       .running = i->state != DISTSUP__V1__CHILD_STATE__SUSPENDED &&
                           i->state != DISTSUP__V1__CHILD_STATE__FAILED};
}

void copy_of_child(const struct core *c, const struct child *ch, struct copy *k)
{
    *k = (struct copy){.node = c->cfg->node_name,
                       .incarnation = ch->incarnation,
                       .rehomed_from = ch->rehomed_from,
                       .rehomed_from_inc = ch->rehomed_from_inc,
                       .running = ch->st != SV_IDLE && ch->st != SV_FAILED};
}

static void cache_store(struct core *c, struct sup *s, const struct rentry *e)
{
    size_t len = distsup__v1__child_info__get_packed_size(e->info);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return;
    distsup__v1__child_info__pack(e->info, buf);
    store_cache_put(c->store, s->cfg->name, e->info->name, e->info->node, buf, len);
    free(buf);
}

void cache_remove(struct core *c, struct sup *s, struct rentry *e)
{
    store_cache_delete(c->store, s->cfg->name, e->info->name);
    registry_del(s->remote, e);
}

/* Duplicate after a partition: another node's copy wins; ours stops. */
static void stop_duplicate(struct core *c, struct child *ch, const Distsup__V1__ChildInfo *winner)
{
    char why[400];
    metrics_add(c->sv.metrics, MN_DUPLICATES, 1);
    if (ch->st == SV_IDLE) {
        /* Held back while syncing or without quorum: it was taken over meanwhile. */
        snprintf(why, sizeof why, "taken over by node %s (incarnation %llu) while this node was away", winner->node,
                 (unsigned long long)winner->incarnation);
        log_info("cluster", "child %s was %s; not starting it here", ch->name, why);
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, 0, 0, why);
        remove_child(c, ch, why);
        return;
    }
    snprintf(why, sizeof why, "duplicate: the copy on node %s (incarnation %llu) survives", winner->node,
             (unsigned long long)winner->incarnation);
    log_warn("cluster", "child %s runs on node %s too; %s, stopping this one (incarnation %llu)", ch->name,
             winner->node, why, (unsigned long long)ch->incarnation);
    if (ch->proc.pid <= 0) {
        if (!ch->stop_reason) ch->stop_reason = strdup(why);
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, 0, 0, why);
        remove_child(c, ch, why);
        return;
    }
    if (!ch->stop_reason) ch->stop_reason = strdup(why);
    sv_fail_start(ch, GRPC_STATUS_ALREADY_EXISTS, "child '%s' %s", ch->name, why);
    sv_fail_calls(ch, GRPC_STATUS_UNAVAILABLE, "stopped as a duplicate");
    sv_stop(&c->sv, ch, SV_WHY_REMOVE, why);
}

/* What a node says of one of its children (info is taken). */
void apply_remote_info(struct core *c, struct node *from, Distsup__V1__ChildInfo *info)
{
    char err[700];
    struct sup *s = find_sup(c, info->supervisor);
    if (!s) {
        log_debug("cluster", "node %s has supervisor %s, which this node lacks", from->name, info->supervisor);
        distsup__v1__child_info__free_unpacked(info, NULL);
        return;
    }
    int verdict = authz_child_info(c, from, s, info, err, sizeof err);
    if (verdict == AUTHZ_REFUSE) {
        authz_refused(c, from, "%s", err);
        distsup__v1__child_info__free_unpacked(info, NULL);
        return;
    }
    struct rentry *e = registry_get(s->remote, info->name);
    if (verdict == AUTHZ_CONTEND) { /* kept aside: it replaces e when e's node says its copy is gone */
        /* most often a move seen here before its old node's ChildGone: not a bad message */
        log_debug("cluster", "node %s: %s", from->name, err);
        if (e->contender) distsup__v1__child_info__free_unpacked(e->contender, NULL);
        e->contender = info;
        return;
    }
    struct child *ch = find_child(s, info->name);
    struct copy theirs, ours;
    copy_of_info(info, &theirs);
    if (ch && !ch->dead && !ch->moving_to) {
        copy_of_child(c, ch, &ours);
        if (copy_wins(&theirs, &ours)) {
            stop_duplicate(c, ch, info);
        } else {
            /* Ours survives: make sure the other node learns that too. */
            Distsup__V1__ChildInfo mine;
            sv_fill_info(&c->sv, ch, &mine);
            Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
            m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_CHILD;
            m.child = &mine;
            cluster_send(c, from->name, &m);
            distsup__v1__child_info__free_unpacked(info, NULL);
            return;
        }
    }
    if (e && strcmp(e->info->node, info->node)) {
        struct node *owner = find_node(c, e->info->node);
        int owner_up = owner && owner->up;
        struct copy known;
        copy_of_info(e->info, &known);
        if (owner_up && !copy_wins(&theirs, &known)) {
            if (copy_derives(&theirs, &known) && info->incarnation == e->info->incarnation + 1) {
                /* A failover copy of an original this node still sees running: most
                 * often this node has not yet seen the original's node down (nodes see
                 * it a few ms apart).  Kept aside: it takes the entry's place when that
                 * node goes down here, or is forgotten when its own node says it is gone. */
                if (e->contender) distsup__v1__child_info__free_unpacked(e->contender, NULL);
                e->contender = info;
                return;
            }
            distsup__v1__child_info__free_unpacked(info, NULL);
            return;
        }
    } else if (e && info->incarnation < e->info->incarnation) { /* stale news from the same node */
        distsup__v1__child_info__free_unpacked(info, NULL);
        return;
    }
    if (!info->spec && e && !strcmp(e->info->node, info->node)) { /* sent once per incarnation: keep it */
        info->spec = e->info->spec;
        e->info->spec = NULL;
    }
    if ((e = registry_put(s->remote, info, from->epoch))) cache_store(c, s, e);
}

int promote_contender(struct core *c, struct sup *s, struct rentry *e, uint64_t after)
{
    Distsup__V1__ChildInfo *next = e->contender;
    e->contender = NULL;
    struct node *owner = next ? find_node(c, next->node) : NULL;
    if (!next || !owner || !owner->up || next->incarnation != after + 1) {
        if (next) distsup__v1__child_info__free_unpacked(next, NULL);
        return 0;
    }
    log_info("cluster", "child %s is on node %s now (incarnation %llu)", next->name, next->node,
             (unsigned long long)next->incarnation);
    if ((e = registry_put(s->remote, next, owner->epoch))) cache_store(c, s, e);
    return 1;
}

static void apply_gone(struct core *c, struct node *from, const Distsup__V1__ChildGone *g)
{
    char err[600];
    if (authz_gone(c, from, g, err, sizeof err) != 0) {
        authz_refused(c, from, "%s", err);
        return;
    }
    struct sup *s = find_sup(c, g->supervisor);
    struct rentry *e = s ? registry_get(s->remote, g->name) : NULL;
    if (e && e->contender && !strcmp(e->contender->node, g->node) && e->contender->incarnation <= g->incarnation) {
        distsup__v1__child_info__free_unpacked(e->contender, NULL); /* the copy kept aside is gone */
        e->contender = NULL;
    }
    if (!e || strcmp(e->info->node, g->node) || e->info->incarnation > g->incarnation) return;
    /* A copy that waited for this one to go (a move seen from a third node) takes its place. */
    if (!promote_contender(c, s, e, g->incarnation)) cache_remove(c, s, e);
}

static void on_snapshot(struct core *c, struct node *from, Distsup__V1__Snapshot *snap)
{
    for (size_t i = 0; i < snap->n_children; i++) { /* each taken out of snap: no copy */
        Distsup__V1__ChildInfo *info = snap->children[i];
        snap->children[i] = NULL;
        apply_remote_info(c, from, info);
    }
    snap->n_children = 0;
    if (!snap->last) return;
    /* What the node did not mention is gone. */
    size_t dropped = 0;
    for (size_t i = 0; i < c->n_sups; i++) {
        struct sup *s = &c->sups[i];
        for (struct rentry *e = registry_first(s->remote), *n; e; e = n) {
            n = registry_next(e);
            if (!strcmp(e->info->node, from->name) && e->epoch != from->epoch) {
                cache_remove(c, s, e);
                dropped++;
            }
        }
    }
    from->snapshot_done = 1;
    log_info("cluster", "synced with node %s%s", from->name, dropped ? " (dropped children it no longer has)" : "");
    maybe_finish_sync(c);
}

void on_cluster_message(struct core *c, const char *node, const uint8_t *data, size_t len)
{
    struct node *from = find_node(c, node);
    if (!from || !from->up) {
        log_debug("cluster", "a message from %s, which is not up; ignored", node);
        return;
    }
    struct fwd_view v;
    if (forward_view(data, len, &v) == 0) { /* the common case: read in place */
        forward_handle(c, from, &v);
        return;
    }
    Distsup__V1__ClusterMsg *m = distsup__v1__cluster_msg__unpack(NULL, len, data);
    if (!m) {
        log_warn("cluster", "node %s sent an unreadable cluster message; ignored", node);
        return;
    }
    switch (m->msg_case) {
    case DISTSUP__V1__CLUSTER_MSG__MSG_SNAPSHOT: on_snapshot(c, from, m->snapshot); break;
    case DISTSUP__V1__CLUSTER_MSG__MSG_CHILD: { /* taken out of m: no copy */
        Distsup__V1__ChildInfo *info = m->child;
        m->child = NULL;
        m->msg_case = DISTSUP__V1__CLUSTER_MSG__MSG__NOT_SET;
        apply_remote_info(c, from, info);
        break;
    }
    case DISTSUP__V1__CLUSTER_MSG__MSG_GONE: apply_gone(c, from, m->gone); break;
    case DISTSUP__V1__CLUSTER_MSG__MSG_FORWARD: { /* not in forward_pack's layout, yet valid */
        struct fwd_view v = {.id = m->forward->id,
                             .op_or_code = (uint32_t)m->forward->op,
                             .timeout_ms = m->forward->timeout_ms,
                             .body = m->forward->request.data,
                             .body_len = m->forward->request.len};
        forward_handle(c, from, &v);
        break;
    }
    case DISTSUP__V1__CLUSTER_MSG__MSG_REPLY: {
        struct fwd_view v = {.reply = 1,
                             .id = m->reply->id,
                             .op_or_code = m->reply->code,
                             .body = m->reply->reply.data,
                             .body_len = m->reply->reply.len,
                             .message = m->reply->message,
                             .message_len = strlen(m->reply->message)};
        forward_handle(c, from, &v);
        break;
    }
    case DISTSUP__V1__CLUSTER_MSG__MSG_EVENT:
        if (!strcmp(m->event->node, node)) event_bus_publish_remote(c->bus, m->event);
        break;
    case DISTSUP__V1__CLUSTER_MSG__MSG_KINDS: on_kinds(c, from, m->kinds); break;
    case DISTSUP__V1__CLUSTER_MSG__MSG_LEAVING:
        if (!from->leaving) {
            log_info("cluster", "node %s is leaving: no new children go there", node);
            from->leaving = 1;
            strategies_nodes_changed(c);
        }
        break;
    default:
        log_warn("cluster", "node %s sent a cluster message of unknown kind %d; ignored", node, (int)m->msg_case);
        break;
    }
    distsup__v1__cluster_msg__free_unpacked(m, NULL);
}

/* A started child, from a StartChildResponse that node `asked` sent: known here at
 * once, before its node's broadcast arrives (the directory node, and the node the
 * client asked, answer for it next).  Credited to `asked` only; an answer about a
 * third node (the directory node's answer to the node a client asked) is only a hint,
 * taken for a name this node knows nothing of yet. */
void learn_started(struct core *c, const char *asked, const ProtobufCMessage *reply)
{
    const Distsup__V1__StartChildResponse *r = (const void *)reply;
    if (!r || !r->child) return;
    struct node *owner = find_node(c, r->child->node);
    if (!owner || owner->self || !owner->up) return;
    if (strcmp(owner->name, asked)) {
        struct sup *s = find_sup(c, r->child->supervisor);
        if (!s || find_child(s, r->child->name) || registry_get(s->remote, r->child->name)) return;
    }
    Distsup__V1__ChildInfo *info = info_dup(r->child);
    if (info) apply_remote_info(c, owner, info);
}

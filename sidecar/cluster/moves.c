/* cluster/moves.c: Moves after a join, pinned children going home, the graceful leave (cluster.h). */
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar/cluster/cluster.h"
#include "sidecar/fnv.h"
#include "sidecar/log.h"
#include "sidecar/ops.h"
#include "sidecar/peer.h"

#define LEAVE_TIMEOUT_MS 30000 /* a graceful leave gives up handing off after this */

struct move_ctx {
    struct core *c;
    char *sup, *name, *to;
};

static void move_done(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct move_ctx *x = arg;
    struct core *c = x->c;
    struct sup *s = find_sup(c, x->sup);
    struct child *ch = s ? find_child(s, x->name) : NULL;
    if (s && s->moves) s->moves--;
    if (ch && ch->moving_to) {
        free(ch->moving_to);
        ch->moving_to = NULL;
        if (code == GRPC_STATUS_OK) {
            const Distsup__V1__StartChildResponse *r = (const void *)reply;
            char why[300];
            snprintf(why, sizeof why, "moved to node %s", x->to);
            log_info("cluster", "child %s moved to node %s", x->name, x->to);
            emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_MOVED, 0, 0, why);
            remove_child(c, ch, why);
            struct node *to = find_node(c, x->to);
            Distsup__V1__ChildInfo *info = r && r->child ? info_dup(r->child) : NULL;
            if (info && to) apply_remote_info(c, to, info);
            else if (info) distsup__v1__child_info__free_unpacked(info, NULL);
        } else {
            log_warn("cluster", "moving child %s to node %s failed: %s; starting it here again", x->name, x->to,
                     message);
            /* leaving or shutting down: it stays SV_IDLE, kept on disk for the next start */
            if (!c->shutting_down && !c->leaving) sv_start_or_retry(&c->sv, ch, "restart after a failed move");
        }
    }
    free(x->sup);
    free(x->name);
    free(x->to);
    free(x);
    plan_moves(c);
}

/* A moving child has exited (its State captured): start it on its new node. */
void finish_move(struct core *c, struct child *ch)
{
    struct node *to = find_node(c, ch->moving_to);
    struct move_ctx *x = calloc(1, sizeof *x);
    if (!x || !(x->sup = strdup(sup_of(ch)->cfg->name)) || !(x->name = strdup(ch->name)) ||
        !(x->to = strdup(ch->moving_to))) {
        if (x) {
            free(x->sup);
            free(x->name);
        }
        free(x);
        log_error("cluster", "out of memory moving child %s", ch->name);
        return;
    }
    x->c = c;
    if (!to) {
        answer_fail(move_done, x, GRPC_STATUS_UNAVAILABLE, "node is unknown");
        return;
    }
    Distsup__V1__StartChildRequest req = DISTSUP__V1__START_CHILD_REQUEST__INIT;
    req.supervisor = (char *)sup_of(ch)->cfg->name;
    req.spec = ch->spec;
    Distsup__V1__Place pl = DISTSUP__V1__PLACE__INIT;
    pl.request = &req;
    pl.incarnation = ch->incarnation + 1;
    pl.why = DISTSUP__V1__PLACE_WHY__PLACE_MOVE;
    if (ch->rehomed_from) { /* a failover copy stays one where it goes (docs/cluster.md) */
        pl.from_node = ch->rehomed_from;
        pl.from_incarnation = ch->rehomed_from_inc;
    }
    if (ch->state_blob) {
        pl.state.data = ch->state_blob;
        pl.state.len = ch->state_len;
    }
    forward(c, to, CORE_PLACE, &pl.base, 0, 0, move_done, x);
}

static void start_move(struct core *c, struct child *ch, struct node *to, const char *why)
{
    if (!(ch->moving_to = strdup(to->name))) return;
    sup_of(ch)->moves++;
    metrics_add(c->sv.metrics, MN_MOVES, 1);
    log_info("cluster", "moving child %s to node %s (%s)", ch->name, to->name, why);
    free(ch->state_blob); /* only a State sent as it stops counts */
    ch->state_blob = NULL;
    ch->state_len = 0;
    sv_fail_start(ch, GRPC_STATUS_UNAVAILABLE, "child '%s' is moving to node %s", ch->name, to->name);
    sv_stop(&c->sv, ch, SV_WHY_MOVE, why);
}

/* Moves, a bounded number at a time: when a node joined (the strategy says which
 * children go), or all of them when this node leaves. */
void plan_moves(struct core *c)
{
    if (!c->peer || !c->quorum || (!c->synced && !c->leaving) || (c->shutting_down && !c->leaving)) return;
    for (size_t i = 0; i < c->n_sups; i++) {
        struct sup *s = &c->sups[i];
        if (!s->cfg->monitor_nodes && !c->leaving) continue;
        if (s->moves >= s->cfg->max_moves) continue;
        struct nodeset all, kns = {0};
        if (nodeset_build(c, s, c->leaving, NULL, &all) != 0) continue;
        const char *kns_kind = NULL; /* the kind kns holds the nodes of (hosted children) */
        for (struct child *ch = s->head; ch && s->moves < s->cfg->max_moves; ch = ch->next) {
            if (ch->dead || ch->moving_to || ch->st != SV_RUNNING) continue;
            struct nodeset *use = &all;
            if (sv_hosted(ch)) { /* only the nodes with a host of its kind */
                if (!kns_kind || strcmp(kns_kind, ch->spec->kind)) {
                    nodeset_free(&kns);
                    kns_kind = NULL;
                    if (nodeset_build(c, s, c->leaving, ch->spec->kind, &kns) != 0) break;
                    kns_kind = ch->spec->kind;
                }
                use = &kns;
            }
            struct nodeset ns = *use;
            if (ns.n == 0) continue;
            int self_i = -1;
            for (size_t k = 0; k < ns.n; k++)
                if (ns.src[k]->self) self_i = (int)k;
            if (c->leaving && ch->spec->restart == DISTSUP__V1__RESTART_TYPE__TEMPORARY) continue;
            if (!c->leaving && ch->spec->node[0]) {
                /* pinned by its spec: it stays, or goes back once its node is usable again
                 * (a failover took it elsewhere) */
                struct node *home = strcmp(ch->spec->node, c->cfg->node_name) ? find_node(c, ch->spec->node) : NULL;
                if (home && node_usable(home) && sup_eligible(s, home->name) &&
                    (!sv_hosted(ch) || node_has_kind(c, home, ch->spec->kind)))
                    start_move(c, ch, home, "back to the node its spec pins it to");
                continue;
            }
            struct dchild d;
            if (dchild_make(&d, s->cfg->name, ch->name, ch->spec) != 0) break;
            int to = -1;
            char err[256];
            if (c->leaving) to = placement_place(s->strategy, &d.c, ns.v, ns.n, err, sizeof err);
            else if (!placement_should_move(s->strategy, &d.c, self_i, ns.v, ns.n, &to)) to = -1;
            free(d.labels);
            if (to < 0 || ns.src[to]->self) continue;
            start_move(c, ch, ns.src[to], c->leaving ? "this node is leaving" : "rebalancing after a join");
        }
        nodeset_free(&kns);
        nodeset_free(&all);
    }
}

/* Hosted children that have waited host_grace_ms for a host of their kind here move
 * to a node that has one (with their last State), a bounded number at a time. */
void rehome_waiting(struct core *c, uint64_t now)
{
    if (!c->peer || !c->synced || !c->quorum || c->shutting_down || c->leaving) return;
    for (struct child *ch = hosts_first_waiting(c->hosts), *next; ch; ch = next) {
        next = ch->host_next;
        if (ch->dead || ch->moving_to || !ch->host_wait || ch->st != SV_IDLE) continue;
        if (now - ch->host_wait_since < c->cfg->host_grace_ms) continue;
        struct sup *s = sup_of(ch);
        if (s->moves >= s->cfg->max_moves) continue;
        char err[256];
        struct node *to = place_child(c, s, ch->name, ch->spec, 1, err, sizeof err);
        if (!to) continue; /* no node has a host of its kind: it waits here */
        if (!(ch->moving_to = strdup(to->name))) return;
        hosts_unwait(c->hosts, ch);
        s->moves++;
        metrics_add(c->sv.metrics, MN_MOVES, 1);
        log_info("cluster", "moving child %s to node %s (no host of kind '%s' here for %ums)", ch->name, to->name,
                 ch->spec->kind, c->cfg->host_grace_ms);
        finish_move(c, ch);
    }
}

int begin_leave(struct core *c)
{
    if (c->shutting_down || c->leaving) return 0;
    if (c->peer && c->synced && c->quorum && others_usable(c)) {
        c->leaving = 1;
        c->leave_deadline = reactor_now_ms() + LEAVE_TIMEOUT_MS;
        size_t n = 0;
        for (size_t i = 0; i < c->n_sups; i++) n += c->sups[i].count;
        log_info("cluster", "leaving the cluster: handing %zu children to the other nodes", n);
        Distsup__V1__Leaving lv = DISTSUP__V1__LEAVING__INIT;
        Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
        m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_LEAVING;
        m.leaving = &lv;
        cluster_broadcast(c, &m);
        for (size_t i = 0; i < c->n_sups; i++)
            for (struct child *ch = c->sups[i].head; ch; ch = ch->next) {
                if (ch->dead) continue;
                sv_fail_start(ch, GRPC_STATUS_UNAVAILABLE, "node %s is leaving", c->cfg->node_name);
                if (ch->spec->restart == DISTSUP__V1__RESTART_TYPE__TEMPORARY && ch->proc.pid > 0)
                    sv_stop(&c->sv, ch, SV_WHY_REMOVE, "the node is leaving"); /* temporary: it ends here */
            }
        plan_moves(c);
        loop_arm_tick(c->loop);
        return 1;
    }
    return 0;
}

/* The leave goes on while children move; then the peers hear Leave and the rest
 * stops as in a plain shutdown. */
void check_leave(struct core *c, uint64_t now)
{
    int moving = 0;
    for (size_t i = 0; i < c->n_sups; i++) moving |= c->sups[i].moves > 0;
    if (moving && now < c->leave_deadline) return;
    if (!moving && now < c->leave_deadline && others_usable(c)) {
        plan_moves(c);
        for (size_t i = 0; i < c->n_sups; i++) moving |= c->sups[i].moves > 0;
        if (moving) return;
    }
    if (now >= c->leave_deadline) log_warn("cluster", "leave: gave up handing off after %dms", LEAVE_TIMEOUT_MS);
    size_t left = 0;
    for (size_t i = 0; i < c->n_sups; i++)
        for (struct child *ch = c->sups[i].head; ch; ch = ch->next) left += !ch->dead && ch->why != SV_WHY_REMOVE;
    /* The peers re-home what could not move once they hear Leave: it stops here first,
     * so that no copy of it runs elsewhere while this one still does (the reactor says
     * Leave when the last has stopped). */
    log_info("cluster",
             "handed off; %zu children could not move: they stop here first (their specs are kept), then this node "
             "says Leave",
             left);
    c->leaving = 0;
    c->leave_at_end = 1;
    stop_all(c);
}

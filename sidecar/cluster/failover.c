/* cluster/failover.c: Sync at start-up, quorum loss, re-homing a down node's children (cluster.h). */
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar/cluster/cluster.h"
#include "sidecar/fnv.h"
#include "sidecar/log.h"
#include "sidecar/ops.h"
#include "sidecar/peer.h"

#define RETRY_MS 1000 /* failed re-homes are retried after this */
/* Re-homes begun per run of reconcile: a node that dies with thousands of children is
 * taken over a batch at a time, each next batch a message of the reactor's cluster
 * lane, so the survivors' API requests (the other lane), timers and children are
 * served in between (each re-home here may be a process start). */
#define REHOME_BATCH 32
/* A node asked to run a re-homed child that has not yet seen its owner down is asked
 * again this often, this many times, before the plain RETRY_MS. */
#define REHOME_ASK_AGAIN_MS 50
#define REHOME_ASK_AGAIN 40

/* Our own children may run once the peer module made contact and every node that is
 * up has sent its snapshot (so we know which of ours were re-homed meanwhile), or at
 * twice sync_timeout_ms; never without quorum. */
void maybe_finish_sync(struct core *c)
{
    if (c->synced || !c->quorum || c->shutting_down || c->leaving) return;
    int ready = c->settled;
    /* After quorum came back (a healed partition), every node this run has seen gets
     * time to come back too before this node's held children start: a node whose link
     * is merely slower to reopen may run some of them now (it re-homed them). */
    int regaining = c->regained_at && reactor_now_ms() < c->regained_at + 2ull * c->cfg->sync_timeout_ms;
    for (size_t i = 1; i < c->n_nodes && ready; i++)
        if ((c->nodes[i]->up && !c->nodes[i]->snapshot_done) || (regaining && c->nodes[i]->seen && !c->nodes[i]->up))
            ready = 0;
    if (!ready && reactor_now_ms() < c->sync_since + 2ull * c->cfg->sync_timeout_ms) return;
    c->synced = 1;
    size_t started = 0, dropped = 0;
    for (size_t i = 0; i < c->n_sups; i++) {
        struct sup *s = &c->sups[i];
        for (struct child *ch = s->head, *next; ch; ch = next) {
            next = ch->next;
            if (ch->dead || ch->st != SV_IDLE) continue;
            struct rentry *e = registry_get(s->remote, ch->name);
            struct copy theirs, ours;
            if (e) copy_of_info(e->info, &theirs), copy_of_child(c, ch, &ours);
            if (e && copy_wins(&theirs, &ours)) {
                log_info("cluster", "child %s runs on node %s now (incarnation %llu); not starting it here", ch->name,
                         e->info->node, (unsigned long long)e->info->incarnation);
                remove_child(c, ch, "re-homed while this node was away");
                dropped++;
                continue;
            }
            if (e) cache_remove(c, s, e);
            sv_start_or_retry(&c->sv, ch, "start");
            started++;
        }
    }
    if (c->peer)
        log_info("cluster", "in sync with the cluster: %zu of this node's stored children started%s", started,
                 dropped ? " (others were taken over meanwhile)" : "");
    reconcile(c);
}

/* Without quorum: stop our children but keep them, to start again when it is back
 * (unless the majority re-homed them meanwhile). */
void suspend_children(struct core *c)
{
    for (size_t i = 0; i < c->n_sups; i++)
        for (struct child *ch = c->sups[i].head; ch; ch = ch->next) {
            if (ch->dead || ch->why == SV_WHY_REMOVE) continue;
            sv_fail_start(ch, GRPC_STATUS_UNAVAILABLE, "node %s lost quorum", c->cfg->node_name);
            sv_fail_calls(ch, GRPC_STATUS_UNAVAILABLE, "was stopped: this node lost quorum");
            sv_stop(&c->sv, ch, SV_WHY_SUSPEND, "no quorum");
        }
}

struct rehome_ctx {
    struct core *c;
    char *sup, *name, *to;
    uint64_t incarnation; /* the one asked for */
};

static void rehome_done(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct rehome_ctx *x = arg;
    struct core *c = x->c;
    struct sup *s = find_sup(c, x->sup);
    struct rentry *e = s ? registry_get(s->remote, x->name) : NULL;
    if (code == GRPC_STATUS_OK) {
        const Distsup__V1__StartChildResponse *r = (const void *)reply;
        log_info("cluster", "re-homed child %s on node %s", x->name, x->to);
        metrics_add(c->sv.metrics, MN_REHOMED, 1);
        Distsup__V1__ChildInfo *info = r && r->child ? info_dup(r->child) : NULL;
        struct node *to = find_node(c, x->to);
        if (info && to && !to->self) apply_remote_info(c, to, info);
        else if (info) distsup__v1__child_info__free_unpacked(info, NULL);
    } else if (code == ANSWER_MOVED && (!e || e->info->incarnation + 1 != x->incarnation)) {
        /* its entry is gone or newer here: its node came back (and says afresh what it
         * holds) or another copy took the name; there is nothing to re-home now */
        log_debug("cluster", "re-homing child %s on node %s: %s; not asking again (its entry changed here)", x->name,
                  x->to, message);
        if (e) e->rehoming = 0;
    } else if (code == ANSWER_MOVED && e->rehome_tries < REHOME_ASK_AGAIN) {
        /* the node asked has not seen the owner down yet: ask again soon */
        log_debug("cluster", "re-homing child %s on node %s: %s; asking again", x->name, x->to, message);
        e->rehoming = 0;
        e->rehome_tries++;
        uint64_t at = reactor_now_ms() + REHOME_ASK_AGAIN_MS;
        if (!c->reconcile_at || c->reconcile_at > at) c->reconcile_at = at;
        loop_arm_tick(c->loop);
    } else {
        log_warn("cluster", "re-homing child %s on node %s failed: %s; will retry", x->name, x->to, message);
        if (e) e->rehoming = 0;
        uint64_t at = reactor_now_ms() + RETRY_MS;
        if (!c->reconcile_at || c->reconcile_at > at) c->reconcile_at = at;
        loop_arm_tick(c->loop);
    }
    free(x->sup);
    free(x->name);
    free(x->to);
    free(x);
}

/* Starts the child of a down node somewhere live (this node is its directory).  1 when
 * a start began (it answers rehome_done), 0 when it could not now. */
static int rehome(struct core *c, struct sup *s, struct rentry *e)
{
    char err[512];
    Distsup__V1__ChildInfo *info = e->info;
    if (!info->spec || authz_spec(c, info->name, info->spec, err, sizeof err) != 0) {
        log_error("cluster", "child %s of down node %s has %s; dropped", info->name, info->node,
                  info->spec ? err : "no spec");
        cache_remove(c, s, e);
        return 0;
    }
    struct node *to = place_child(c, s, info->name, info->spec, 0, err, sizeof err);
    if (!to && info->spec->kind[0]) {
        /* a hosted child whose kind no node hosts now: it waits here (SUSPENDED) for a
         * host, and moves to a node that gets one (cluster/moves.c, rehome_waiting) */
        to = c->nodes[0];
    }
    if (!to) {
        log_warn("cluster", "cannot re-home child %s of down node %s now: %s", info->name, info->node, err);
        return 0;
    }
    struct rehome_ctx *x = calloc(1, sizeof *x);
    if (!x || !(x->sup = strdup(s->cfg->name)) || !(x->name = strdup(info->name)) || !(x->to = strdup(to->name))) {
        if (x) {
            free(x->sup);
            free(x->name);
        }
        free(x);
        return 0;
    }
    x->c = c;
    x->incarnation = info->incarnation + 1;
    e->rehoming = 1;
    if (!e->rehome_tries)
        log_info("cluster", "re-homing child %s of down node %s on node %s", info->name, info->node, to->name);
    Distsup__V1__StartChildRequest req = DISTSUP__V1__START_CHILD_REQUEST__INIT;
    req.supervisor = (char *)s->cfg->name;
    req.spec = info->spec;
    if (to->self) {
        Distsup__V1__ChildSpec *spec = spec_dup(info->spec);
        if (!spec) {
            answer_fail(rehome_done, x, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return 1;
        }
        uint64_t inc = info->incarnation + 1;
        char from[256];
        snprintf(from, sizeof from, "%s", info->node);
        cache_remove(c, s, e); /* the local child owns the name now */
        start_local(c, s, spec, inc, NULL, from, inc - 1, rehome_done, x);
        return 1;
    }
    Distsup__V1__Place pl = DISTSUP__V1__PLACE__INIT;
    pl.request = &req;
    pl.incarnation = info->incarnation + 1;
    pl.why = DISTSUP__V1__PLACE_WHY__PLACE_REHOME;
    pl.from_node = info->node;
    forward(c, to, CORE_PLACE, &pl.base, 0, 0, rehome_done, x);
    return 1;
}

/* After a membership change: re-home what down nodes ran (the directory does it),
 * drop their temporary children, and (later, see rebalance_at) move children. */
void reconcile(struct core *c)
{
    /* A continuation resumes where the last batch stopped (a failover of thousands of
     * children would otherwise walk the whole registry again for every batch); any
     * other call starts from the beginning. */
    size_t first_sup = 0;
    struct rentry *resume = NULL;
    if (c->reconcile_continuing && c->reconcile_resume && c->reconcile_from && c->reconcile_sup < c->n_sups) {
        first_sup = c->reconcile_sup;
        resume = registry_get(c->sups[first_sup].remote, c->reconcile_from);
        if (!resume) first_sup = 0; /* that entry is gone: from the start */
    }
    c->reconcile_resume = c->reconcile_continuing = 0;
    free(c->reconcile_from);
    c->reconcile_from = NULL;
    if (!c->peer || !c->synced || !c->quorum || c->shutting_down) return;
    uint64_t now = reactor_now_ms();
    int unseen_wait = now < c->started + 2ull * c->cfg->sync_timeout_ms;
    size_t begun = 0;
    for (size_t i = first_sup; i < c->n_sups && begun < REHOME_BATCH; i++) {
        struct sup *s = &c->sups[i];
        struct rentry *e0 = resume && i == first_sup ? resume : registry_first(s->remote);
        for (struct rentry *e = e0, *n; e; e = n) {
            if (begun >= REHOME_BATCH) { /* the next batch starts here */
                c->reconcile_sup = i;
                c->reconcile_from = strdup(e->info->name);
                c->reconcile_resume = c->reconcile_from != NULL;
                break;
            }
            n = registry_next(e);
            struct node *owner = find_node(c, e->info->node);
            if (owner && owner->up) continue;
            /* a copy elsewhere that waited for this node (a re-home seen before this node
             * saw the owner down) takes over */
            if (e->contender && promote_contender(c, s, e, e->info->incarnation)) continue;
            /* A node this run never saw (known only from the cache) gets time to show up;
             * so do the nodes still down when this node regains quorum (a healed
             * partition: their links come back one by one, and a node re-homing the
             * children of one that is merely slower to reconnect would stop healthy
             * copies). */
            if ((!owner || !owner->seen) && unseen_wait) {
                c->reconcile_at = c->started + 2ull * c->cfg->sync_timeout_ms + 1;
                loop_arm_tick(c->loop);
                continue;
            }
            if (c->regained_at && now < c->regained_at + 2ull * c->cfg->sync_timeout_ms) {
                c->reconcile_at = c->regained_at + 2ull * c->cfg->sync_timeout_ms + 1;
                loop_arm_tick(c->loop);
                continue;
            }
            if (e->info->spec && e->info->spec->restart == DISTSUP__V1__RESTART_TYPE__TEMPORARY) {
                log_info("cluster", "temporary child %s went down with node %s; dropped", e->info->name, e->info->node);
                cache_remove(c, s, e);
                continue;
            }
            if (e->info->state == DISTSUP__V1__CHILD_STATE__FAILED) { /* its restarts were used up: not again */
                log_info("cluster", "failed child %s went down with node %s; dropped", e->info->name, e->info->node);
                cache_remove(c, s, e);
                continue;
            }
            if (e->rehoming) continue;
            struct node *dir = directory_of(c, s, e->info->name);
            if (dir && dir->self) begun += (size_t)rehome(c, s, e);
        }
    }
    if (begun >= REHOME_BATCH) c->hooks.continue_reconcile(c); /* more may wait */
    store_flush(c->store);
}

/* cluster/authz.c: Who may say what: every message of another node is checked
 * against the sender's role, not only its key (cluster.h; docs/cluster.md "Who may
 * send what").  A refusal is logged (at most a few lines a second per sender) and
 * changes nothing. */
#include <grpc/status.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar/cluster/cluster.h"
#include "sidecar/ops.h"
#include "sidecar/fnv.h"
#include "sidecar/log.h"
#include "sidecar/spec.h"

#define REFUSALS_LOGGED 5 /* per sender and second; the rest are counted */

void authz_refused(struct core *c, struct node *from, const char *fmt, ...)
{
    (void)c;
    uint64_t now = reactor_now_ms();
    if (now - from->refused_since >= 1000) {
        if (from->refused_quiet)
            log_warn("cluster", "node %s: %u more refused messages not logged", from->name, from->refused_quiet);
        from->refused_since = now;
        from->refused_logged = from->refused_quiet = 0;
    }
    if (from->refused_logged >= REFUSALS_LOGGED) {
        from->refused_quiet++;
        return;
    }
    from->refused_logged++;
    char why[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof why, fmt, ap);
    va_end(ap);
    log_warn("cluster", "node %s: %s", from->name, why);
}

/* The directory node of name as this node sees it, and also counting nodes that are
 * leaving (the sender may not have heard yet that one is). */
static int is_directory(struct core *c, struct sup *s, const char *name, const struct node *from)
{
    if (directory_of(c, s, name) == from) return 1;
    struct node *best = NULL;
    uint64_t best_h = 0;
    for (size_t i = 0; i < c->n_nodes; i++) {
        struct node *n = c->nodes[i];
        if (!n->up && !n->self) continue;
        uint64_t h = fnv_directory(s->cfg->name, name, n->name);
        if (!best || h > best_h || (h == best_h && strcmp(n->name, best->name) < 0)) {
            best = n;
            best_h = h;
        }
    }
    return best == from;
}

int authz_spec(struct core *c, const char *name, const Distsup__V1__ChildSpec *spec, char *err, size_t errlen)
{
    char e[400];
    if (spec_name_check("child name", name, e, sizeof e) != 0) {
        snprintf(err, errlen, "%s", e);
        return -1;
    }
    if (!spec) return 0;
    if (spec_validate(spec, c->cfg->max_payload, e, sizeof e) != 0) {
        snprintf(err, errlen, "invalid spec of child %.200s: %s", name, e);
        return -1;
    }
    if (strcmp(spec->name, name)) {
        snprintf(err, errlen, "the spec of child %.200s names another child (%.200s)", name, spec->name);
        return -1;
    }
    return 0;
}

int authz_place(struct core *c, struct node *from, const Distsup__V1__Place *pl, int *code, char *err, size_t errlen)
{
    const Distsup__V1__StartChildRequest *req = pl->request;
    *code = GRPC_STATUS_PERMISSION_DENIED;
    struct sup *s = req ? find_sup(c, req->supervisor) : NULL;
    if (!s || !req->spec) return 0; /* op_place answers these as for anyone */
    const char *name = req->spec->name;
    if (authz_spec(c, name, req->spec, err, errlen) != 0) {
        *code = GRPC_STATUS_INVALID_ARGUMENT;
        return -1;
    }
    struct rentry *e = registry_get(s->remote, name);
    switch (pl->why) {
    case DISTSUP__V1__PLACE_WHY__PLACE_START:
        if (!is_directory(c, s, name, from)) {
            snprintf(err, errlen, "refused a Place (start) of child %.200s: the sender is not its directory node",
                     name);
            return -1;
        }
        if (pl->incarnation != 0 || pl->state.len) {
            snprintf(err, errlen, "refused a Place (start) of child %.200s with an incarnation or a state", name);
            return -1;
        }
        return 0;
    case DISTSUP__V1__PLACE_WHY__PLACE_MOVE:
        if (!e || strcmp(e->info->node, from->name)) {
            snprintf(err, errlen, "refused a Place (move) of child %.200s: the sender does not run it (%s)", name,
                     e ? e->info->node : "unknown here");
            return -1;
        }
        if (pl->incarnation <= e->info->incarnation || pl->incarnation > UINT64_MAX / 2) {
            snprintf(err, errlen, "refused a Place (move) of child %.200s: incarnation %llu is not past %llu", name,
                     (unsigned long long)pl->incarnation, (unsigned long long)e->info->incarnation);
            return -1;
        }
        /* a failover copy's mark goes with it: the same as the sender's entry says */
        if (pl->from_node[0] &&
            (strcmp(pl->from_node, e->info->rehomed_from) ||
             pl->from_incarnation != e->info->rehomed_from_incarnation)) {
            snprintf(err, errlen,
                     "refused a Place (move) of child %.200s: its failover mark is not the one its node "
                     "announced",
                     name);
            return -1;
        }
        return 0;
    case DISTSUP__V1__PLACE_WHY__PLACE_REHOME: {
        char e2[300];
        if (pl->from_node[0] && /* empty from a release before from_node */
            (spec_name_check("node name", pl->from_node, e2, sizeof e2) != 0 || strlen(pl->from_node) >= 256)) {
            snprintf(err, errlen, "refused a Place (re-home) of child %.200s: from_node: %s", name, e2);
            return -1;
        }
        if (e && pl->from_node[0] && strcmp(pl->from_node, e->info->node)) {
            snprintf(err, errlen, "refused a Place (re-home) of child %.200s: it ran on %s, not %.200s", name,
                     e->info->node, pl->from_node);
            return -1;
        }
        if (pl->incarnation > UINT64_MAX / 2) {
            snprintf(err, errlen, "refused a Place (re-home) of child %.200s: incarnation %llu", name,
                     (unsigned long long)pl->incarnation);
            return -1;
        }
        /* Without an entry (this node forgot the node's children: it came back with a new
         * boot id), the node the child ran on is the one Place names. */
        struct node *owner = e ? find_node(c, e->info->node) : pl->from_node[0] ? find_node(c, pl->from_node) : NULL;
        if (owner && owner->up) {
            /* Most often this node has not yet seen it down (nodes see it a few ms apart,
             * and the directory depends on who is up): the sender asks again soon. */
            *code = ANSWER_MOVED;
            snprintf(err, errlen, "not yet: node %s, which ran child %.200s, is still up here", owner->name, name);
            return -1;
        }
        if (!is_directory(c, s, name, from)) {
            snprintf(err, errlen, "refused a Place (re-home) of child %.200s: the sender is not its directory node",
                     name);
            return -1;
        }
        if (e && pl->incarnation != e->info->incarnation + 1) {
            snprintf(err, errlen, "refused a Place (re-home) of child %.200s: incarnation %llu, not %llu", name,
                     (unsigned long long)pl->incarnation, (unsigned long long)e->info->incarnation + 1);
            return -1;
        }
        if (pl->state.len) {
            snprintf(err, errlen, "refused a Place (re-home) of child %.200s with a state", name);
            return -1;
        }
        return 0;
    }
    default: snprintf(err, errlen, "refused a Place of child %.200s: unknown reason %d", name, (int)pl->why); return -1;
    }
}

/* A local copy is live while it has, or will have, a process: not held back (SV_IDLE:
 * suspended or not yet synced) and not FAILED. */
static int local_live(const struct child *ch) { return !ch->dead && ch->st != SV_IDLE && ch->st != SV_FAILED; }

/* Whether `from`'s copies may win over live copies of the nodes that stayed with us:
 * only while it comes back from being down here (it may have taken over names while
 * we were apart: the duplicate rule then decides). */
static int returning(struct core *c, const struct node *from)
{
    return from->returned_at && reactor_now_ms() < from->returned_at + 2ull * c->cfg->sync_timeout_ms + 1000;
}

int authz_child_info(struct core *c, struct node *from, struct sup *s, const Distsup__V1__ChildInfo *info, char *err,
                     size_t errlen)
{
    if (strcmp(info->node, from->name)) {
        snprintf(err, errlen, "refused a ChildInfo of child %.200s: it says node %.200s runs it, not the sender",
                 info->name, info->node);
        return AUTHZ_REFUSE;
    }
    /* Its id is the sender's (NODE/...) and of the size the daemon makes them: a long or
     * borrowed id would cost memory and divert lookups by id to the sender.  A child
     * with no process (held back while its node syncs after a restart, waiting for a
     * host, or FAILED) has had no incarnation this run: its id is empty. */
    size_t nl = strlen(from->name), il = strlen(info->id);
    int idle = info->state == DISTSUP__V1__CHILD_STATE__SUSPENDED || info->state == DISTSUP__V1__CHILD_STATE__FAILED;
    if (il >= 320 || (il == 0 && !idle) ||
        (il > 0 && (il <= nl || strncmp(info->id, from->name, nl) || info->id[nl] != '/'))) {
        snprintf(err, errlen, "refused a ChildInfo of child %.200s: its id is not one of node %s's", info->name,
                 from->name);
        return AUTHZ_REFUSE;
    }
    char e2[300];
    if (info->rehomed_from[0] &&
        (strlen(info->rehomed_from) >= 256 || spec_name_check("node name", info->rehomed_from, e2, sizeof e2))) {
        snprintf(err, errlen, "refused a ChildInfo of child %.200s: rehomed_from is not a node name", info->name);
        return AUTHZ_REFUSE;
    }
    if (authz_spec(c, info->name, info->spec, err, errlen) != 0) {
        char e[600];
        snprintf(e, sizeof e, "refused a ChildInfo: %s", err);
        snprintf(err, errlen, "%s", e);
        return AUTHZ_REFUSE;
    }
    struct child *ch = find_child(s, info->name);
    struct copy theirs, other;
    copy_of_info(info, &theirs);
    if (ch && local_live(ch) && !ch->moving_to) copy_of_child(c, ch, &other);
    if (ch && local_live(ch) && !ch->moving_to && copy_wins(&theirs, &other) && !returning(c, from)) {
        snprintf(err, errlen,
                 "refused a ChildInfo of child %.200s (incarnation %llu): it runs here (incarnation %llu) and the "
                 "sender was never apart from this node since",
                 info->name, (unsigned long long)info->incarnation, (unsigned long long)ch->incarnation);
        return AUTHZ_REFUSE;
    }
    struct rentry *e = registry_get(s->remote, info->name);
    if (e && strcmp(e->info->node, info->node)) {
        struct node *owner = find_node(c, e->info->node);
        copy_of_info(e->info, &other);
        /* A held-back copy (SUSPENDED: its node syncs after a restart) does not run: a
         * failover copy of it, re-homed while that node was away, is the one its node
         * will find and give way to. */
        int held = !other.running && copy_derives(&theirs, &other);
        if (owner && owner->up && !held && copy_wins(&theirs, &other) && !returning(c, from) && !returning(c, owner)) {
            snprintf(err, errlen,
                     "refused a ChildInfo of child %.200s (incarnation %llu): node %s runs it (incarnation %llu) and "
                     "is up; kept until that node says it is gone",
                     info->name, (unsigned long long)info->incarnation, owner->name,
                     (unsigned long long)e->info->incarnation);
            return AUTHZ_CONTEND;
        }
    }
    if (!e || strcmp(e->info->node, info->node)) {
        if (registry_count_node(s->remote, from->name) >= c->cfg->peer_max_children) {
            snprintf(err, errlen,
                     "refused a ChildInfo of child %.200s: the sender has %u children here already "
                     "(peer_max_children)",
                     info->name, c->cfg->peer_max_children);
            return AUTHZ_REFUSE;
        }
    }
    return AUTHZ_OK;
}

int authz_gone(struct core *c, struct node *from, const Distsup__V1__ChildGone *g, char *err, size_t errlen)
{
    (void)c;
    if (strcmp(g->node, from->name)) {
        snprintf(err, errlen, "refused a ChildGone of child %.200s: it is about node %.200s, not the sender", g->name,
                 g->node);
        return -1;
    }
    return 0;
}

int authz_forward(struct core *c, struct node *from, int op, const ProtobufCMessage *req, char *err, size_t errlen)
{
    (void)from;
    if (op == CORE_START_CHILD) { /* a node asks the name's directory node, with DIR_START */
        snprintf(err, errlen, "refused a forwarded StartChild: nodes ask the name's directory node (DIR_START)");
        return -1;
    }
    if (op != CORE_DIR_START) return 0;
    const Distsup__V1__StartChildRequest *r = (const Distsup__V1__StartChildRequest *)req;
    struct sup *s = find_sup(c, r->supervisor);
    if (!s || !r->spec || !r->spec->name[0]) return 0; /* the handler answers that */
    struct node *self = c->nodes[0];
    if (!is_directory(c, s, r->spec->name, self)) {
        snprintf(err, errlen,
                 "refused a directory StartChild of child %.200s: this node is not its directory node (membership "
                 "may be changing: try again)",
                 r->spec->name);
        return -1;
    }
    return 0;
}

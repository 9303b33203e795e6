#include "sidecar/requests.h"

#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar/cluster/cluster.h"
#include "sidecar/fnv.h"
#include "sidecar/log.h"
#include "sidecar/ops.h"
#include "sidecar/spec.h"

/* ---------- answers without the spec's data ---------- */

/* A ChildInfo as answers show it by default: its spec without init and with env
 * values empty (include_spec_data asks for them).  Points into the original, which
 * must outlive it; lite_free frees what lite_make allocated. */
struct lite {
    Distsup__V1__ChildInfo info;
    Distsup__V1__ChildSpec spec;
    Distsup__V1__ChildSpec__EnvEntry *env;
    Distsup__V1__ChildSpec__EnvEntry **envp;
};

static int lite_make(struct lite *l, const Distsup__V1__ChildInfo *in)
{
    l->info = *in;
    l->env = NULL;
    l->envp = NULL;
    if (!in->spec) return 0;
    l->spec = *in->spec;
    l->spec.init.data = NULL;
    l->spec.init.len = 0;
    if (l->spec.n_env) {
        l->env = calloc(l->spec.n_env, sizeof *l->env);
        l->envp = calloc(l->spec.n_env, sizeof *l->envp);
        if (!l->env || !l->envp) {
            free(l->env);
            free(l->envp);
            l->env = NULL;
            l->envp = NULL;
            return -1;
        }
        for (size_t i = 0; i < l->spec.n_env; i++) {
            l->env[i] = *in->spec->env[i];
            l->env[i].value = (char *)protobuf_c_empty_string;
            l->envp[i] = &l->env[i];
        }
        l->spec.env = l->envp;
    }
    l->info.spec = &l->spec;
    return 0;
}

static void lite_free(struct lite *l)
{
    free(l->env);
    free(l->envp);
}

/* The client's StartChild: answered without the spec's data (the nodes in between
 * learn the whole child first). */
struct lite_start_ctx {
    answer_fn done;
    void *arg;
};

static void lite_start_done(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct lite_start_ctx *x = arg;
    const Distsup__V1__StartChildResponse *r = (const Distsup__V1__StartChildResponse *)reply;
    struct lite l;
    if (code == GRPC_STATUS_OK && r && r->child && lite_make(&l, r->child) == 0) {
        Distsup__V1__StartChildResponse out = *r;
        out.child = &l.info;
        x->done(x->arg, code, message, &out.base);
        lite_free(&l);
    } else if (code == GRPC_STATUS_OK && r && r->child) {
        answer_fail(x->done, x->arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
    } else {
        x->done(x->arg, code, message, reply);
    }
    free(x);
}

/* ---------- StartChild: names being placed ---------- */

static int reserved(struct sup *s, const char *name)
{
    for (struct reservation *r = s->reserved; r; r = r->next)
        if (!strcmp(r->name, name)) return 1;
    return 0;
}

static int reserve(struct sup *s, const char *name)
{
    struct reservation *r = calloc(1, sizeof *r);
    if (!r || !(r->name = strdup(name))) {
        free(r);
        return -1;
    }
    r->next = s->reserved;
    s->reserved = r;
    return 0;
}

static void unreserve(struct sup *s, const char *name)
{
    for (struct reservation **pp = &s->reserved; *pp; pp = &(*pp)->next)
        if (!strcmp((*pp)->name, name)) {
            struct reservation *r = *pp;
            *pp = r->next;
            free(r->name);
            free(r);
            return;
        }
}

/* The directory node's side of StartChild: the one place a name is checked and
 * reserved while the child is being placed, so concurrent starts of one name from
 * different nodes start it once. */
struct dir_ctx {
    struct core *c;
    char *sup, *name, *to;
    answer_fn done;
    void *arg;
};

static void dir_done(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct dir_ctx *x = arg;
    struct core *c = x->c;
    struct sup *s = find_sup(c, x->sup);
    if (s) unreserve(s, x->name);
    if (code == GRPC_STATUS_OK) learn_started(c, x->to, reply);
    x->done(x->arg, code, message, reply);
    free(x->sup);
    free(x->name);
    free(x->to);
    free(x);
}

/* The node a client asked, when the name's directory is another node: it learns the
 * started child from the answer, so the client's next request here finds it. */
struct relay_ctx {
    struct core *c;
    char *dir;
    answer_fn done;
    void *arg;
};

static void relay_start_done(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct relay_ctx *x = arg;
    if (code == GRPC_STATUS_OK) learn_started(x->c, x->dir, reply);
    x->done(x->arg, code, message, reply);
    free(x->dir);
    free(x);
}

static void dir_start(struct core *c, struct sup *s, Distsup__V1__StartChildRequest *req, uint64_t deadline,
                      answer_fn done, void *arg)
{
    char err[512];
    Distsup__V1__ChildSpec *spec = req->spec;
    if (c->leaving || c->shutting_down) {
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node %s is leaving the cluster; try another node",
                    c->cfg->node_name);
        return;
    }
    if (!c->quorum) {
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node %s has no quorum (%zu of %u nodes up): no starts",
                    c->cfg->node_name, up_count(c), c->cfg->cluster_size);
        return;
    }
    struct child *old = find_child(s, spec->name);
    struct rentry *e = registry_get(s->remote, spec->name);
    if (!old && e) {
        struct node *owner = find_node(c, e->info->node);
        answer_fail(done, arg, GRPC_STATUS_ALREADY_EXISTS,
                    "child '%s' already exists in supervisor '%s' on node %s (id %s, pid %d, state %s%s)", spec->name,
                    s->cfg->name, e->info->node, e->info->id, (int)e->info->os_pid,
                    protobuf_c_enum_descriptor_get_value(&distsup__v1__child_state__descriptor, e->info->state)->name,
                    owner && owner->up ? "" : "; that node is down and the child is being re-homed");
        return;
    }
    if (old) { /* it runs here, wherever the strategy would put it now: start_local says so */
        req->spec = NULL;
        start_local_by(c, s, spec, deadline, done, arg);
        return;
    }
    if (reserved(s, spec->name)) {
        answer_fail(done, arg, GRPC_STATUS_ALREADY_EXISTS, "child '%s' is being started in supervisor '%s' right now",
                    spec->name, s->cfg->name);
        return;
    }
    if (req->node[0] && !spec->node[0]) { /* the request's node pins the child, as spec.node does */
        char *pin = strdup(req->node);
        if (!pin) {
            answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        spec->node = pin;
    }
    const char *want = spec->node;
    struct node *to;
    if (want[0]) {
        to = find_node(c, want);
        if (!to) {
            unknown_target(c, want, done, arg);
            return;
        }
        if (!node_usable(to)) {
            answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node '%s' is %s", want, to->up ? "leaving" : "down");
            return;
        }
        if (!sup_eligible(s, to->name)) {
            answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE,
                        "node '%s' is not eligible for supervisor '%s' (its nodes "
                        "option)",
                        want, s->cfg->name);
            return;
        }
    } else if (!(to = place_child(c, s, spec->name, spec, 0, err, sizeof err))) {
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "no node for child '%s': %s", spec->name, err);
        return;
    }
    if (to->self) {
        req->spec = NULL; /* start_local takes it */
        start_local_by(c, s, spec, deadline, done, arg);
        return;
    }
    struct dir_ctx *x = calloc(1, sizeof *x);
    if (!x || !(x->sup = strdup(s->cfg->name)) || !(x->name = strdup(spec->name)) || !(x->to = strdup(to->name)) ||
        reserve(s, spec->name) != 0) {
        if (x) {
            free(x->sup);
            free(x->name);
            free(x->to);
        }
        free(x);
        answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    x->c = c;
    x->done = done;
    x->arg = arg;
    Distsup__V1__Place pl = DISTSUP__V1__PLACE__INIT;
    pl.request = req;
    pl.why = DISTSUP__V1__PLACE_WHY__PLACE_START;
    forward(c, to, CORE_PLACE, &pl.base, 0, 0, dir_done, x);
}

static void op_start(struct core *c, Distsup__V1__StartChildRequest *req, uint64_t deadline, unsigned flags,
                     answer_fn done, void *arg)
{
    char err[512];
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    if (!s) return;
    Distsup__V1__ChildSpec *spec = req->spec;
    if (!spec) {
        answer_fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "spec is missing");
        return;
    }
    if (spec_validate(spec, c->cfg->max_payload, err, sizeof err) != 0) {
        answer_fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "invalid spec: %s", err);
        return;
    }
    if (req->node[0] && spec->node[0] && strcmp(req->node, spec->node)) {
        answer_fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "node '%s' and spec.node '%s' disagree", req->node,
                    spec->node);
        return;
    }
    if (c->shutting_down) {
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
        return;
    }
    if (!(flags & REQ_LOCAL) && !req->include_spec_data) {
        struct lite_start_ctx *lx = malloc(sizeof *lx);
        if (!lx) {
            answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        *lx = (struct lite_start_ctx){done, arg};
        done = lite_start_done;
        arg = lx;
    }
    if (!spec->name[0]) {
        /* Unique across the cluster: this node's name hash, boot time and a counter. */
        char gen[96];
        uint32_t nh = (uint32_t)fnv_mix64(fnv_str(c->cfg->node_name));
        do
            snprintf(gen, sizeof gen, "child-%08x%llx-%llu", nh, (unsigned long long)c->sv.boot_ms,
                     (unsigned long long)++c->sv.seq);
        while (find_child(s, gen));
        if (!(spec->name = strdup(gen))) {
            spec->name = (char *)protobuf_c_empty_string;
            answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
    }
    if (c->peer && !(flags & REQ_LOCAL)) {
        struct node *dir = directory_of(c, s, spec->name);
        if (!dir) {
            answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "no node of the cluster is usable");
            return;
        }
        if (!dir->self) {
            struct relay_ctx *x = malloc(sizeof *x);
            char *dname = strdup(dir->name);
            if (!x || !dname) {
                free(x);
                free(dname);
                answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
                return;
            }
            *x = (struct relay_ctx){.c = c, .dir = dname, .done = done, .arg = arg};
            forward(c, dir, CORE_DIR_START, &req->base, 0, 0, relay_start_done, x);
            return;
        }
    }
    dir_start(c, s, req, deadline, done, arg);
}

/* CORE_PLACE: the directory node (or a failover or a move) says: run it here. */
static void op_place(struct core *c, Distsup__V1__Place *pl, answer_fn done, void *arg)
{
    char err[512];
    Distsup__V1__StartChildRequest *req = pl->request;
    struct sup *s = req ? need_sup(c, req->supervisor, done, arg) : NULL;
    if (!s) {
        if (!req) answer_fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "Place without a request");
        return;
    }
    if (!req->spec || spec_validate(req->spec, c->cfg->max_payload, err, sizeof err) != 0 || !req->spec->name[0]) {
        answer_fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "invalid spec: %s", req->spec ? err : "missing");
        return;
    }
    if (c->leaving || c->shutting_down) {
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node %s is leaving the cluster", c->cfg->node_name);
        return;
    }
    if (!c->quorum) {
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node %s has no quorum", c->cfg->node_name);
        return;
    }
    Distsup__V1__ChildSpec *spec = req->spec;
    req->spec = NULL;
    struct rentry *e = registry_get(s->remote, spec->name);
    if (e && pl->why != DISTSUP__V1__PLACE_WHY__PLACE_START) cache_remove(c, s, e); /* it moves (or is re-homed) here */
    /* a failover copy: re-homed now (its predecessor is incarnation - 1), or moving */
    if (pl->why == DISTSUP__V1__PLACE_WHY__PLACE_REHOME)
        start_local(c, s, spec, pl->incarnation, &pl->state, pl->from_node, pl->incarnation - 1, done, arg);
    else if (pl->why == DISTSUP__V1__PLACE_WHY__PLACE_MOVE && pl->from_node[0])
        start_local(c, s, spec, pl->incarnation, &pl->state, pl->from_node, pl->from_incarnation, done, arg);
    else start_local(c, s, spec, pl->incarnation, &pl->state, NULL, 0, done, arg);
}

/* A local child by name or id, or a remote one's entry; fails the request if none. */
static int lookup(struct sup *s, const char *name, const char *id, struct child **ch, struct rentry **e, answer_fn done,
                  void *arg)
{
    *ch = NULL;
    *e = NULL;
    if (name[0]) {
        *ch = find_child(s, name);
        if (!*ch) *e = registry_get(s->remote, name);
        if (*ch || *e) return 0;
        answer_fail(done, arg, GRPC_STATUS_NOT_FOUND, "no child named '%s' in supervisor '%s'", name, s->cfg->name);
        return -1;
    }
    if (id[0]) {
        for (*ch = s->head; *ch && strcmp((*ch)->id, id); *ch = (*ch)->next) {}
        if (!*ch) *e = registry_find_id(s->remote, id);
        if (*ch || *e) return 0;
        answer_fail(done, arg, GRPC_STATUS_NOT_FOUND, "no child with id '%s' in supervisor '%s'", id, s->cfg->name);
        return -1;
    }
    answer_fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "name is empty: say which child");
    return -1;
}

static void op_terminate(struct core *c, Distsup__V1__TerminateChildRequest *req, unsigned flags, answer_fn done,
                         void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    struct child *ch;
    struct rentry *e;
    if (!s || lookup(s, req->name, req->id, &ch, &e, done, arg)) return;
    if (!ch) {
        if (flags & REQ_LOCAL)
            answer_fail(done, arg, GRPC_STATUS_NOT_FOUND, "child '%s' is not on node %s", e->info->name,
                        c->cfg->node_name);
        else to_owner(c, e, CORE_TERMINATE_CHILD, &req->base, 0, 0, done, arg);
        return;
    }
    if (ch->moving_to) {
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "child '%s' is moving to node %s; try again shortly", ch->name,
                    ch->moving_to);
        return;
    }
    struct waiter *w = malloc(sizeof *w);
    if (!w) {
        answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    w->done = done;
    w->arg = arg;
    w->next = ch->term_waiters;
    ch->term_waiters = w;
    if (ch->proc.pid <= 0) { /* FAILED, RESTARTING or SUSPENDED: nothing runs */
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, 0, 0, "terminated while not running");
        ch->term_code = ch->term_sig = 0;
        remove_child(c, ch, "terminated"); /* answered once that is on disk (bury) */
        return;
    }
    sv_fail_start(ch, GRPC_STATUS_ABORTED, "child '%s' was terminated while starting", ch->name);
    sv_stop(&c->sv, ch, SV_WHY_REMOVE, "terminated by request");
}

/* The nodes a listing covers: all (""), or one. */
static int node_matches(const char *filter, const char *node) { return !filter[0] || !strcmp(filter, node); }

#define CHILDREN_PAGE_DEFAULT 1000u
#define CHILDREN_PAGE_MAX 10000u
#define CHILDREN_PAGE_BYTES (3u << 20) /* a page ends before this, unless one child is bigger */

/* Where a page of Children starts: the token is "L" (this node's children, in start
 * order) or "R" (the other nodes', in the registry's order), the position of the
 * last child sent and its name.  The next page goes on after that child, or at its
 * position when it is gone meanwhile (when others before it went too, a listing that
 * changes between pages may skip or repeat a child). */
static int page_resume(struct sup *s, const char *token, struct child **ch, struct rentry **e, size_t *pos, int *remote)
{
    *ch = s->head;
    *e = registry_first(s->remote);
    *pos = 0;
    *remote = 0;
    if (!token[0]) return 0;
    char *colon = strchr(token, ':');
    char *end;
    unsigned long long at = strtoull(token + 1, &end, 10);
    if ((token[0] != 'L' && token[0] != 'R') || !colon || end != colon) return -1;
    const char *name = colon + 1;
    /* after the last child sent; when it is gone, its place is the next one's */
    if (token[0] == 'L') {
        struct child *last = find_child(s, name);
        *pos = (size_t)at + (last != NULL);
        if (last) *ch = last->next;
        for (size_t i = 0; !last && *ch && i < *pos; i++) *ch = (*ch)->next;
        return 0;
    }
    *remote = 1;
    *ch = NULL;
    struct rentry *last = registry_get(s->remote, name);
    *pos = (size_t)at + (last != NULL);
    if (last) *e = registry_next(last);
    for (size_t i = 0; !last && *e && i < *pos; i++) *e = registry_next(*e);
    return 0;
}

static void op_children(struct core *c, Distsup__V1__ChildrenRequest *req, answer_fn done, void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    if (!s || check_node(c, req->node, done, arg)) return;
    struct child *ch;
    struct rentry *e;
    size_t pos;
    int remote;
    if (page_resume(s, req->page_token, &ch, &e, &pos, &remote) != 0) {
        answer_fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "page_token '%.60s' is not one this daemon gave",
                    req->page_token);
        return;
    }
    size_t want = req->page_size ? req->page_size : CHILDREN_PAGE_DEFAULT;
    if (want > CHILDREN_PAGE_MAX) want = CHILDREN_PAGE_MAX;
    size_t total = s->count + registry_count(s->remote); /* no bigger arrays than needed */
    if (want > total) want = total ? total : 1;
    Distsup__V1__ChildInfo *infos = calloc(want, sizeof *infos);
    struct lite *lites = calloc(want, sizeof *lites);
    Distsup__V1__ChildInfo **ptrs = calloc(want, sizeof *ptrs);
    char *token = NULL;
    size_t n = 0, bytes = 0;
    if (!infos || !lites || !ptrs) goto oom;
    int here = node_matches(req->node, c->cfg->node_name);
    size_t last_pos = 0;
    int last_remote = 0;
    for (;;) {
        if (!remote && !(here && ch)) { /* this node's are done: the others' next */
            remote = 1;
            pos = 0;
            continue;
        }
        if (remote) {
            while (e && !node_matches(req->node, e->info->node)) e = registry_next(e), pos++;
            if (!e) break; /* the end: no token */
        }
        int full = n == want;
        if (!full) {
            const Distsup__V1__ChildInfo *in;
            if (!remote) {
                sv_fill_info(&c->sv, ch, &infos[n]);
                in = &infos[n];
            } else {
                in = e->info;
            }
            if (req->include_spec_data) {
                ptrs[n] = (Distsup__V1__ChildInfo *)in;
            } else {
                if (lite_make(&lites[n], in) != 0) goto oom;
                ptrs[n] = &lites[n].info;
            }
            size_t size = distsup__v1__child_info__get_packed_size(ptrs[n]) + 8;
            if (n > 0 && bytes + size > CHILDREN_PAGE_BYTES) { /* on the next page */
                lite_free(&lites[n]);
                lites[n] = (struct lite){0};
                full = 1;
            } else {
                bytes += size;
            }
        }
        if (full) { /* a next page */
            size_t len = strlen(ptrs[n - 1]->name) + 48;
            if (!(token = malloc(len))) goto oom;
            snprintf(token, len, "%c%zu:%s", last_remote ? 'R' : 'L', last_pos, ptrs[n - 1]->name);
            break;
        }
        if (!remote) ch = ch->next;
        else e = registry_next(e);
        last_pos = pos++;
        last_remote = remote;
        n++;
    }
    Distsup__V1__ChildrenResponse r = DISTSUP__V1__CHILDREN_RESPONSE__INIT;
    r.n_children = n;
    r.children = ptrs;
    if (token) r.next_page_token = token;
    done(arg, GRPC_STATUS_OK, NULL, &r.base);
    goto out;
oom:
    answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
out:
    for (size_t i = 0; lites && i < n; i++) lite_free(&lites[i]);
    free(token);
    free(infos);
    free(lites);
    free(ptrs);
}

/* Another node's child runs now: it has a process, or it is a hosted child (no pid)
 * that is starting, running or stopping on its host. */
static int remote_active(const Distsup__V1__ChildInfo *info)
{
    if (info->os_pid > 0) return 1;
    if (!info->spec || !info->spec->kind[0]) return 0;
    return info->state == DISTSUP__V1__CHILD_STATE__STARTING || info->state == DISTSUP__V1__CHILD_STATE__RUNNING ||
        info->state == DISTSUP__V1__CHILD_STATE__STOPPING;
}

static void op_count(struct core *c, Distsup__V1__CountChildrenRequest *req, answer_fn done, void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    if (!s || check_node(c, req->node, done, arg)) return;
    Distsup__V1__CountChildrenResponse r = DISTSUP__V1__COUNT_CHILDREN_RESPONSE__INIT;
    /* (a hosted child has no pid: its state says whether it runs) */
    if (node_matches(req->node, c->cfg->node_name))
        for (struct child *ch = s->head; ch; ch = ch->next) {
            r.specs++;
            r.workers++;
            if (ch->proc.pid > 0) r.active++;
            if (sv_api_state(ch) == DISTSUP__V1__CHILD_STATE__FAILED) r.failed++;
        }
    for (struct rentry *e = registry_first(s->remote); e; e = registry_next(e)) {
        if (!node_matches(req->node, e->info->node)) continue;
        r.specs++;
        r.workers++;
        if (remote_active(e->info)) r.active++;
        if (e->info->state == DISTSUP__V1__CHILD_STATE__FAILED) r.failed++;
    }
    done(arg, GRPC_STATUS_OK, NULL, &r.base);
}

/* Answers resp, whose child is *slot, leaving init and env values out unless full. */
static void answer_with_child(answer_fn done, void *arg, ProtobufCMessage *resp, Distsup__V1__ChildInfo **slot,
                              int full)
{
    struct lite l;
    if (!full) {
        if (lite_make(&l, *slot) != 0) {
            answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        *slot = &l.info;
    }
    done(arg, GRPC_STATUS_OK, NULL, resp);
    if (!full) lite_free(&l);
}

static void op_whereis(struct core *c, Distsup__V1__WhereIsRequest *req, answer_fn done, void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    struct child *ch;
    struct rentry *e;
    if (!s || lookup(s, req->name, "", &ch, &e, done, arg)) return;
    Distsup__V1__ChildInfo info;
    Distsup__V1__WhereIsResponse r = DISTSUP__V1__WHERE_IS_RESPONSE__INIT;
    if (ch) {
        sv_fill_info(&c->sv, ch, &info);
        r.child = &info;
    } else {
        r.child = e->info;
    }
    answer_with_child(done, arg, &r.base, &r.child, req->include_spec_data);
}

static void op_whois(struct core *c, Distsup__V1__WhoIsRequest *req, answer_fn done, void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    if (!s) return;
    if (!req->id[0]) {
        answer_fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "id is empty");
        return;
    }
    struct child *ch;
    struct rentry *e;
    if (lookup(s, "", req->id, &ch, &e, done, arg)) return;
    Distsup__V1__ChildInfo info;
    Distsup__V1__WhoIsResponse r = DISTSUP__V1__WHO_IS_RESPONSE__INIT;
    if (ch) {
        sv_fill_info(&c->sv, ch, &info);
        r.name = ch->name;
        r.child = &info;
    } else {
        r.name = e->info->name;
        r.child = e->info;
    }
    answer_with_child(done, arg, &r.base, &r.child, req->include_spec_data);
}

/* A child held back while this node syncs with the cluster after its start: in a
 * moment it runs here, or it goes (its copy elsewhere won), so a message to it waits
 * as one to a moving child does.  Not one held for want of quorum (that may last). */
static int syncing(const struct core *c, const struct child *ch)
{
    return ch->st == SV_IDLE && c->peer && !c->synced && c->quorum && !c->shutting_down && !ch->host_wait;
}

/* Checks that a message can go to the child now.  0, or fails the request. */
static int can_message(struct core *c, struct child *ch, size_t len, int is_call, answer_fn done, void *arg)
{
    const struct sup_config *cfg = sup_of(ch)->cfg;
    if (len > c->cfg->max_payload) {
        answer_fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT,
                    "payload is %zu bytes; the limit is %zu "
                    "(max_payload_bytes)",
                    len, c->cfg->max_payload);
        return -1;
    }
    if (ch->spec->protocol == DISTSUP__V1__PROTOCOL__NONE) {
        answer_fail(done, arg, GRPC_STATUS_FAILED_PRECONDITION,
                    "child '%s' has protocol NONE: it takes no calls, casts or messages", ch->name);
        return -1;
    }
    switch (sv_api_state(ch)) {
    case DISTSUP__V1__CHILD_STATE__FAILED:
        answer_fail(done, arg, GRPC_STATUS_FAILED_PRECONDITION,
                    "child '%s' has FAILED (restart bound reached); terminate and start it again", ch->name);
        return -1;
    case DISTSUP__V1__CHILD_STATE__RESTARTING:
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "child '%s' is restarting; try again shortly", ch->name);
        return -1;
    case DISTSUP__V1__CHILD_STATE__STOPPING:
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "child '%s' is stopping", ch->name);
        return -1;
    case DISTSUP__V1__CHILD_STATE__SUSPENDED:
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "child '%s' is suspended on node %s (%s); try again shortly",
                    ch->name, c->cfg->node_name,
                    c->quorum ? "the node is syncing with the cluster" : "the node has no quorum");
        return -1;
    default: break;
    }
    if (!sv_open(&c->sv, ch)) {
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE,
                    sv_hosted(ch) ? "child '%s' lost its host; try again shortly" : "child '%s' closed its stdin",
                    ch->name);
        return -1;
    }
    if ((is_call && ch->n_calls >= cfg->mailbox) || sv_unsent(ch) + len > cfg->mailbox_bytes) {
        if (is_call) metrics_sup_inc(c->sv.metrics, cfg, MC_CALLS_REFUSED);
        answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED,
                    "mailbox of child '%s' is full (%u calls in flight, %zu bytes unread; limits %u and %zu)", ch->name,
                    ch->n_calls, sv_unsent(ch), cfg->mailbox, cfg->mailbox_bytes);
        return -1;
    }
    return 0;
}

/* ---------- messages to a child that moves ----------
 *
 * A Call, Cast or Send to a child that is moving (rebalancing, pinning home, a
 * graceful leave), that has just moved (the node asked has not heard yet), or whose
 * node is down while it is re-homed, is held and asked again, after 10 ms and then
 * up to every 200 ms, until it reaches the child or its deadline passes: a planned
 * move never shows a caller an error.  The node that runs the child answers
 * ANSWER_MOVED instead of an error to a node that forwarded such a request, and that
 * node holds it. */

#define HOLD_MAX_MS 5000 /* a Cast or Send (no deadline of its own) is held at most this long */

struct held {
    struct held *next;
    struct core *c;
    int op;
    uint8_t *req; /* the request, packed */
    size_t len;
    uint64_t deadline, at;
    unsigned tries;
    answer_fn done; /* the caller's */
    void *arg;
    char why[256]; /* why it was last held: the answer if its deadline passes */
};

static void held_free(struct held *h)
{
    free(h->req);
    free(h);
}

/* A hold for req (packed now: the request itself is the caller's). */
static struct held *held_new(struct core *c, int op, const ProtobufCMessage *req, uint64_t deadline, answer_fn done,
                             void *arg)
{
    struct held *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    h->len = protobuf_c_message_get_packed_size(req);
    if (!(h->req = malloc(h->len ? h->len : 1))) {
        free(h);
        return NULL;
    }
    protobuf_c_message_pack(req, h->req);
    *h = (struct held){.c = c,
                       .op = op,
                       .req = h->req,
                       .len = h->len,
                       .done = done,
                       .arg = arg,
                       .deadline = deadline ? deadline : reactor_now_ms() + HOLD_MAX_MS};
    return h;
}

/* Holds h to ask again soon, or answers UNAVAILABLE when its deadline would pass. */
static void hold(struct held *h, const char *why)
{
    struct core *c = h->c;
    snprintf(h->why, sizeof h->why, "%s", why ? why : "the child is moving");
    uint64_t now = reactor_now_ms(), delay = h->tries < 5 ? 10ull << h->tries : 200;
    if (now + delay >= h->deadline || c->shutting_down) {
        answer_fail(h->done, h->arg, GRPC_STATUS_UNAVAILABLE, "%s; try again", h->why);
        held_free(h);
        return;
    }
    h->tries++;
    h->at = now + delay;
    h->next = c->held;
    c->held = h;
    loop_arm_tick(c->loop);
}

/* The answer to a held (or forwarded) request. */
static void held_done(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct held *h = arg;
    if (code == ANSWER_MOVED) {
        hold(h, message);
        return;
    }
    h->done(h->arg, code, message, reply);
    held_free(h);
}

/* The child of a message request is not where it can take it now.  A request from a
 * client is held; one from another node (REQ_LOCAL) or asked again (REQ_HELD) says so
 * to whoever holds it. */
static void moved(struct core *c, int op, const ProtobufCMessage *req, uint64_t deadline, unsigned flags,
                  answer_fn done, void *arg, const char *why)
{
    if (flags & (REQ_LOCAL | REQ_HELD)) {
        done(arg, ANSWER_MOVED, why, NULL);
        return;
    }
    struct held *h = held_new(c, op, req, deadline, done, arg);
    if (!h) {
        answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    hold(h, why);
}

/* Sends a message request to the node of a remote child, held if it comes back moved. */
static void message_to_owner(struct core *c, struct rentry *e, int op, ProtobufCMessage *req, uint32_t timeout_ms,
                             uint64_t deadline, unsigned flags, answer_fn done, void *arg)
{
    char why[300];
    struct node *owner = find_node(c, e->info->node);
    if (!owner || !owner->up) {
        snprintf(why, sizeof why, "child '%s' was on node %s, which is down; it is being re-homed", e->info->name,
                 e->info->node);
        moved(c, op, req, deadline, flags, done, arg, why);
        return;
    }
    if (flags & REQ_HELD) { /* done is the hold's already */
        to_owner(c, e, op, req, timeout_ms, deadline ? deadline + 1000 : 0, done, arg);
        return;
    }
    struct held *h = held_new(c, op, req, deadline, done, arg);
    if (!h) {
        answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    to_owner(c, e, op, req, timeout_ms, deadline ? deadline + 1000 : 0, held_done, h);
}

int requests_tick(struct core *c, uint64_t now)
{
    struct held *due = NULL;
    for (struct held **pp = &c->held; *pp;) {
        struct held *h = *pp;
        if (h->at > now) {
            pp = &h->next;
            continue;
        }
        *pp = h->next;
        h->next = due;
        due = h;
    }
    while (due) {
        struct held *h = due;
        due = h->next;
        h->next = NULL;
        ProtobufCMessage *req = protobuf_c_message_unpack(ops_request(h->op), NULL, h->len, h->req);
        if (!req) {
            answer_fail(h->done, h->arg, GRPC_STATUS_INTERNAL, "out of memory asking child again");
            held_free(h);
            continue;
        }
        requests_run(c, h->op, req, h->deadline, REQ_HELD, held_done, h);
        protobuf_c_message_free_unpacked(req, NULL);
    }
    return c->held != NULL;
}

void requests_fail_held(struct core *c)
{
    while (c->held) {
        struct held *h = c->held;
        c->held = h->next;
        answer_fail(h->done, h->arg, GRPC_STATUS_UNAVAILABLE, "%s, and the daemon is shutting down", h->why);
        held_free(h);
    }
}

static void op_call(struct core *c, Distsup__V1__CallRequest *req, uint64_t deadline, unsigned flags, answer_fn done,
                    void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    struct child *ch;
    struct rentry *e;
    if (!s || lookup(s, req->name, "", &ch, &e, done, arg)) return;
    uint64_t now = reactor_now_ms();
    uint64_t dl = now + (req->timeout_ms ? req->timeout_ms : DEFAULT_CALL_TIMEOUT_MS);
    if (deadline && deadline < dl) dl = deadline;
    char why[600];
    if (!ch) {
        if (flags & REQ_LOCAL) { /* it moved away, and the node that asked has not heard yet */
            snprintf(why, sizeof why, "child '%s' is not on node %s", req->name, c->cfg->node_name);
            moved(c, CORE_CALL, &req->base, dl, flags, done, arg, why);
            return;
        }
        if (req->payload.len > c->cfg->max_payload) {
            answer_fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT,
                        "payload is %zu bytes; the limit is %zu "
                        "(max_payload_bytes)",
                        req->payload.len, c->cfg->max_payload);
            return;
        }
        /* The owner applies the timeout; we wait a little longer for its answer. */
        req->timeout_ms = (uint32_t)(dl - now);
        message_to_owner(c, e, CORE_CALL, &req->base, req->timeout_ms, dl, flags, done, arg);
        return;
    }
    if (ch->moving_to || syncing(c, ch)) {
        if (ch->moving_to) snprintf(why, sizeof why, "child '%s' is moving to node %s", ch->name, ch->moving_to);
        else
            snprintf(why, sizeof why, "child '%s' waits on node %s, which syncs with the cluster", ch->name,
                     c->cfg->node_name);
        moved(c, CORE_CALL, &req->base, dl, flags, done, arg, why);
        return;
    }
    if (can_message(c, ch, req->payload.len, 1, done, arg)) return;
    struct sv_trace tr = {req->traceparent, req->tracestate};
    if (sv_call_traced(&c->sv, ch, req->payload, &tr, dl, done, arg) != 0)
        answer_fail(done, arg, sv_hosted(ch) ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_UNAVAILABLE,
                    sv_hosted(ch) ? "cannot write to child '%s': its host reads too slowly (host_queue_bytes)"
                                  : "cannot write to child '%s'",
                    req->name);
}

static void op_cast(struct core *c, ProtobufCMessage *req, const char *supn, const char *name,
                    ProtobufCBinaryData payload, const struct sv_trace *tr, int info, unsigned flags, answer_fn done,
                    void *arg)
{
    struct sup *s = need_sup(c, supn, done, arg);
    struct child *ch;
    struct rentry *e;
    if (!s || lookup(s, name, "", &ch, &e, done, arg)) return;
    int op = info ? CORE_SEND : CORE_CAST;
    char why[600];
    if (!ch) {
        if (flags & REQ_LOCAL) { /* it moved away, and the node that asked has not heard yet */
            snprintf(why, sizeof why, "child '%s' is not on node %s", name, c->cfg->node_name);
            moved(c, op, req, 0, flags, done, arg, why);
        } else if (payload.len > c->cfg->max_payload)
            answer_fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT,
                        "payload is %zu bytes; the limit is %zu "
                        "(max_payload_bytes)",
                        payload.len, c->cfg->max_payload);
        else message_to_owner(c, e, op, req, 0, 0, flags, done, arg);
        return;
    }
    if (ch->moving_to || syncing(c, ch)) {
        if (ch->moving_to) snprintf(why, sizeof why, "child '%s' is moving to node %s", ch->name, ch->moving_to);
        else
            snprintf(why, sizeof why, "child '%s' waits on node %s, which syncs with the cluster", ch->name,
                     c->cfg->node_name);
        moved(c, op, req, 0, flags, done, arg, why);
        return;
    }
    if (can_message(c, ch, payload.len, 0, done, arg)) return;
    if (sv_cast_traced(&c->sv, ch, payload, tr, info) != 0) {
        answer_fail(done, arg, sv_hosted(ch) ? GRPC_STATUS_RESOURCE_EXHAUSTED : GRPC_STATUS_UNAVAILABLE,
                    sv_hosted(ch) ? "cannot write to child '%s': its host reads too slowly (host_queue_bytes)"
                                  : "cannot write to child '%s'",
                    name);
        return;
    }
    if (!info) metrics_sup_inc(c->sv.metrics, ch->cfg, MC_CASTS);
    if (info) {
        Distsup__V1__SendResponse r = DISTSUP__V1__SEND_RESPONSE__INIT;
        done(arg, GRPC_STATUS_OK, NULL, &r.base);
    } else {
        Distsup__V1__CastResponse r = DISTSUP__V1__CAST_RESPONSE__INIT;
        done(arg, GRPC_STATUS_OK, NULL, &r.base);
    }
}

static void op_nodes(struct core *c, Distsup__V1__NodesRequest *req, answer_fn done, void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    if (!s) return;
    Distsup__V1__NodeInfo *infos = calloc(c->n_nodes, sizeof *infos);
    Distsup__V1__NodeInfo **ptrs = calloc(c->n_nodes, sizeof *ptrs);
    size_t n_labels = 0;
    for (size_t i = 0; i < c->n_nodes; i++) n_labels += c->nodes[i]->n_labels;
    Distsup__V1__NodeInfo__LabelsEntry *lab = calloc(n_labels + 1, sizeof *lab);
    Distsup__V1__NodeInfo__LabelsEntry **labp = calloc(n_labels + 1, sizeof *labp);
    if (!infos || !ptrs || !lab || !labp) {
        answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    struct node **order = calloc(c->n_nodes, sizeof *order);
    if (!order) {
        answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    memcpy(order, c->nodes, c->n_nodes * sizeof *order);
    qsort(order, c->n_nodes, sizeof *order, node_cmp); /* the same list on every node */
    const char **self_kinds = NULL;
    size_t n_self_kinds = 0;
    if (hosts_kinds(c->hosts, &self_kinds, &n_self_kinds) != 0) {
        free(order);
        answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    size_t k = 0;
    for (size_t i = 0; i < c->n_nodes; i++) {
        struct node *nd = order[i];
        Distsup__V1__NodeInfo *ni = &infos[i];
        distsup__v1__node_info__init(ni);
        ni->name = nd->name;
        ni->address = nd->api ? nd->api : (char *)c->cfg->listen;
        ni->up = nd->up && !nd->leaving;
        ni->self = nd->self;
        ni->children = nd->self ? (uint32_t)s->count : (uint32_t)registry_count_node(s->remote, nd->name);
        if (nd->self) {
            ni->n_kinds = n_self_kinds;
            ni->kinds = (char **)self_kinds;
        } else if (nd->up) {
            ni->n_kinds = nd->n_kinds;
            ni->kinds = nd->kinds;
        }
        ni->labels = &labp[k];
        for (size_t j = 0; j < nd->n_labels; j++, k++) {
            distsup__v1__node_info__labels_entry__init(&lab[k]);
            lab[k].key = (char *)nd->labels[j].key;
            lab[k].value = (char *)nd->labels[j].value;
            labp[k] = &lab[k];
            ni->n_labels++;
        }
        ptrs[i] = ni;
    }
    free(order);
    Distsup__V1__NodesResponse r = DISTSUP__V1__NODES_RESPONSE__INIT;
    r.n_nodes = c->n_nodes;
    r.nodes = ptrs;
    done(arg, GRPC_STATUS_OK, NULL, &r.base);
    free(self_kinds);
out:
    free(infos);
    free(ptrs);
    free(lab);
    free(labp);
}

/* NodeFor and Mine: where the supervisor's strategy would place a child with this key. */
static void op_node_for(struct core *c, const char *supn, const char *key, int mine, answer_fn done, void *arg)
{
    char err[512];
    struct sup *s = need_sup(c, supn, done, arg);
    if (!s) return;
    if (!key[0]) {
        answer_fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "key is empty");
        return;
    }
    Distsup__V1__ChildSpec spec = DISTSUP__V1__CHILD_SPEC__INIT;
    spec.key = (char *)key;
    struct node *n = place_child(c, s, key, &spec, 0, err, sizeof err);
    if (!n) {
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "no node for key '%s': %s", key, err);
        return;
    }
    if (mine) {
        Distsup__V1__MineResponse r = DISTSUP__V1__MINE_RESPONSE__INIT;
        r.mine = n->self;
        r.node = n->name;
        done(arg, GRPC_STATUS_OK, NULL, &r.base);
    } else {
        Distsup__V1__NodeForResponse r = DISTSUP__V1__NODE_FOR_RESPONSE__INIT;
        r.node = n->name;
        done(arg, GRPC_STATUS_OK, NULL, &r.base);
    }
}

/* ---------- metrics: the latency of a client's Call, Cast or StartChild ---------- */

struct timed {
    answer_fn done;
    void *arg;
    struct metrics *m;
    const struct sup_config *sup;
    enum metric_sup_hist hist;
    uint64_t t0; /* metrics_now_ns */
};

static void timed_done(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct timed *t = arg;
    metrics_sup_observe(t->m, t->sup, t->hist, metrics_now_ns() - t->t0);
    if (code == GRPC_STATUS_DEADLINE_EXCEEDED && (t->hist == MH_CALL_LOCAL || t->hist == MH_CALL_FORWARDED))
        metrics_sup_inc(t->m, t->sup, MC_CALLS_TIMED_OUT);
    t->done(t->arg, code, message, reply);
    free(t);
}

/* With metrics on, a client's (not another node's) Call, Cast or StartChild to a
 * known supervisor is answered through timed_done.  0 when *done and *arg were
 * replaced. */
static int time_request(struct core *c, int op, ProtobufCMessage *r, unsigned flags, answer_fn *done, void **arg)
{
    if (!c->sv.metrics || flags) return -1;
    const char *supn, *name = NULL;
    if (op == CORE_CALL) {
        supn = ((Distsup__V1__CallRequest *)r)->supervisor;
        name = ((Distsup__V1__CallRequest *)r)->name;
    } else if (op == CORE_CAST) {
        supn = ((Distsup__V1__CastRequest *)r)->supervisor;
        name = ((Distsup__V1__CastRequest *)r)->name;
    } else if (op == CORE_START_CHILD) {
        supn = ((Distsup__V1__StartChildRequest *)r)->supervisor;
    } else {
        return -1;
    }
    struct sup *s = find_sup(c, supn);
    if (!s) return -1;
    struct timed *t = malloc(sizeof *t);
    if (!t) return -1; /* not timed, still answered */
    enum metric_sup_hist h = MH_START_CHILD;
    if (op == CORE_CALL) h = find_child(s, name) ? MH_CALL_LOCAL : MH_CALL_FORWARDED;
    if (op == CORE_CAST) h = find_child(s, name) ? MH_CAST_LOCAL : MH_CAST_FORWARDED;
    *t = (struct timed){*done, *arg, c->sv.metrics, s->cfg, h, metrics_now_ns()};
    *done = timed_done;
    *arg = t;
    return 0;
}

/* Runs one request; req stays the caller's (handlers may take parts, setting them
 * NULL).  flags REQ_LOCAL: it came from another node, answer here. */
void requests_run(struct core *c, int op, ProtobufCMessage *r, uint64_t deadline, unsigned flags, answer_fn done,
                  void *arg)
{
    if (c->shutting_down && !c->leaving) {
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
        return;
    }
    (void)time_request(c, op, r, flags, &done, &arg);
    switch (op) {
    case CORE_START_CHILD: op_start(c, (void *)r, deadline, flags, done, arg); break;
    case CORE_DIR_START: op_start(c, (void *)r, deadline, REQ_LOCAL, done, arg); break;
    case CORE_PLACE: op_place(c, (void *)r, done, arg); break;
    case CORE_TERMINATE_CHILD: op_terminate(c, (void *)r, flags, done, arg); break;
    case CORE_CHILDREN: op_children(c, (void *)r, done, arg); break;
    case CORE_COUNT_CHILDREN: op_count(c, (void *)r, done, arg); break;
    case CORE_WHEREIS: op_whereis(c, (void *)r, done, arg); break;
    case CORE_WHOIS: op_whois(c, (void *)r, done, arg); break;
    case CORE_CALL: op_call(c, (void *)r, deadline, flags, done, arg); break;
    case CORE_CAST: {
        Distsup__V1__CastRequest *q = (void *)r;
        struct sv_trace tr = {q->traceparent, q->tracestate};
        op_cast(c, r, q->supervisor, q->name, q->payload, &tr, 0, flags, done, arg);
        break;
    }
    case CORE_SEND: {
        Distsup__V1__SendRequest *q = (void *)r;
        struct sv_trace tr = {q->traceparent, q->tracestate};
        op_cast(c, r, q->supervisor, q->name, q->payload, &tr, 1, flags, done, arg);
        break;
    }
    case CORE_NODES: op_nodes(c, (void *)r, done, arg); break;
    case CORE_NODE_FOR: {
        Distsup__V1__NodeForRequest *q = (void *)r;
        op_node_for(c, q->supervisor, q->key, 0, done, arg);
        break;
    }
    case CORE_MINE: {
        Distsup__V1__MineRequest *q = (void *)r;
        op_node_for(c, q->supervisor, q->key, 1, done, arg);
        break;
    }
    default: answer_fail(done, arg, GRPC_STATUS_UNIMPLEMENTED, "unknown operation %d", op); break;
    }
}

/* core.c: the façade of the supervisor core (core.h): the queue that is the one door
 * into the reactor, the tick, the reactor thread, loading the stored children, and
 * the life cycle from core_new to core_free.  What each request, restart, failover
 * and move does is decided in the files sidecar/reactor.h lists. */
#include "sidecar/core.h"

#include <errno.h>
#include <grpc/status.h>
#include <limits.h>
#include <malloc.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "sidecar/cluster/cluster.h"
#include "sidecar/log.h"
#include "sidecar/peer.h"
#include "sidecar/reactor.h"
#include "sidecar/requests.h"
#include "sidecar/spec.h"

/* What other threads hand the reactor. */
enum cmd_kind {
    CMD_REQUEST,
    CMD_SHUTDOWN,
    CMD_HOST_OPEN,
    CMD_HOST_MESSAGE,
    CMD_HOST_CLOSED,
    CMD_NODE_UP,
    CMD_NODE_DOWN,
    CMD_MESSAGE,
    CMD_SETTLED,
    CMD_RECONCILE,
    CMD_METRICS
};

struct cmd {
    struct loop_msg link; /* first: the loop's queue */
    enum cmd_kind kind;
    int op; /* CMD_REQUEST: enum core_op */
    ProtobufCMessage *req;
    uint64_t deadline;
    answer_fn done;
    void *arg;
    char *node;    /* CMD_NODE_DOWN, CMD_MESSAGE */
    uint8_t *data; /* CMD_NODE_UP (a packed Join), CMD_MESSAGE */
    size_t len;
    int clean;
    struct core_host *host; /* CMD_HOST_* */
};

/* A Host stream as the core knows it (reactor thread, after CMD_HOST_OPEN). */
struct core_host {
    struct core_host *next, *prev; /* c->host_handles */
    struct host_port port;
    struct host_sess *sess; /* NULL: refused at attach */
};

uint64_t core_now_ms(void) { return reactor_now_ms(); }

static void free_cmd(struct cmd *m)
{
    if (m->req) protobuf_c_message_free_unpacked(m->req, NULL);
    free(m->node);
    free(m->data);
    free(m);
}

static void free_msg(struct loop_msg *m) { free_cmd((struct cmd *)m); }

/* ---------- news from other threads ---------- */

/* The peer module's news: copied into a command.  Never refused for a full queue
 * (the peer links bound what they read). */
static int peer_news(struct core *c, enum cmd_kind kind, const char *node, const void *data, size_t len, int clean)
{
    struct cmd *m = calloc(1, sizeof *m);
    if (!m || (node && !(m->node = strdup(node))) || (data && !(m->data = malloc(len ? len : 1)))) {
        if (m) free_cmd(m);
        log_error("core", "out of memory: lost news from the peer links");
        return -1;
    }
    if (data) memcpy(m->data, data, len);
    m->kind = kind;
    m->len = len;
    m->clean = clean;
    if (loop_post(c->loop, &m->link, LOOP_LANE_CLUSTER, 1) == LOOP_POSTED) return 0;
    free_cmd(m);
    return -1;
}

void core_node_up(struct core *c, const Distsup__V1__Join *join)
{
    size_t len = distsup__v1__join__get_packed_size(join);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        log_error("core", "out of memory: lost a node-up");
        return;
    }
    distsup__v1__join__pack(join, buf);
    peer_news(c, CMD_NODE_UP, NULL, buf, len, 0);
    free(buf);
}

void core_node_down(struct core *c, const char *node, int clean) { peer_news(c, CMD_NODE_DOWN, node, NULL, 0, clean); }

int core_cluster_message(struct core *c, const char *node, const uint8_t *data, size_t len)
{
    size_t queued = atomic_load(&c->news_bytes);
    if (queued + len > CORE_NEWS_BUDGET) {
        log_warn("core", "%zu bytes of the peers' messages wait already; refused one of %zu bytes from %s", queued, len,
                 node);
        return -1;
    }
    atomic_fetch_add(&c->news_bytes, len);
    /* An empty PeerMsg.app comes from protobuf-c as NULL: the reactor's readers
     * (forward_view's data + len) need a buffer, even of 0 bytes. */
    if (peer_news(c, CMD_MESSAGE, node, data ? data : (const uint8_t *)"", len, 0) == 0) return 0;
    atomic_fetch_sub(&c->news_bytes, len);
    return -1;
}

void core_peers_settled(struct core *c) { peer_news(c, CMD_SETTLED, NULL, NULL, 0, 0); }

/* ---------- Host streams ---------- */

static int host_post(struct core *c, enum cmd_kind kind, struct core_host *h, const uint8_t *data, size_t len)
{
    struct cmd *m = calloc(1, sizeof *m);
    if (!m || (data && !(m->data = malloc(len ? len : 1)))) {
        free(m);
        return -1;
    }
    if (data) memcpy(m->data, data, len);
    m->kind = kind;
    m->host = h;
    m->len = len;
    /* One message of a stream is in flight at a time (port->more): the stream bounds
     * itself, so it may not be refused. */
    if (loop_post(c->loop, &m->link, LOOP_LANE_REQUEST, 1) == LOOP_POSTED) return 0;
    free_cmd(m);
    return -1;
}

int core_host_open(struct core *c, const struct host_port *port, struct core_host **out)
{
    struct core_host *h = calloc(1, sizeof *h);
    *out = h;
    if (!h) return -1;
    h->port = *port;
    if (host_post(c, CMD_HOST_OPEN, h, NULL, 0) != 0) {
        *out = NULL;
        free(h);
        return -1;
    }
    return 0;
}

void core_host_message(struct core *c, struct core_host *h, const uint8_t *data, size_t len)
{
    if (host_post(c, CMD_HOST_MESSAGE, h, data ? data : (const uint8_t *)"", len) != 0)
        log_error("core", "out of memory, or the daemon stops: lost a message of a host");
}

void core_host_closed(struct core *c, struct core_host *h) { host_post(c, CMD_HOST_CLOSED, h, NULL, 0); }

static void on_host_cmd(struct core *c, struct cmd *m)
{
    struct core_host *h = m->host;
    switch (m->kind) {
    case CMD_HOST_OPEN:
        h->next = c->host_handles;
        if (h->next) h->next->prev = h;
        c->host_handles = h;
        if (c->shutting_down || !c->hosts) h->port.end(h->port.arg, GRPC_STATUS_UNAVAILABLE, "the daemon is stopping");
        else h->sess = hosts_attach(c->hosts, &h->port);
        break;
    case CMD_HOST_MESSAGE:
        if (h->sess) hosts_message(c->hosts, h->sess, m->data, m->len);
        break;
    case CMD_HOST_CLOSED:
        h->port.end(h->port.arg, GRPC_STATUS_OK, ""); /* the app closed its side: so do we */
        if (h->sess) hosts_gone(c->hosts, h->sess);
        if (h->prev) h->prev->next = h->next;
        else c->host_handles = h->next;
        if (h->next) h->next->prev = h->prev;
        h->port.release(h->port.arg);
        free(h);
        break;
    default: break;
    }
}

static void on_kinds_changed(void *arg) { kinds_changed(arg); }
static void on_hosts_waiting(void *arg, uint64_t now) { rehome_waiting(arg, now); }

/* The reactor stops: every Host stream still open is ended and released. */
static void hosts_teardown(struct core *c)
{
    while (c->host_handles) {
        struct core_host *h = c->host_handles;
        c->host_handles = h->next;
        if (h->sess) {
            h->port.end(h->port.arg, GRPC_STATUS_UNAVAILABLE, "the daemon is stopping");
            hosts_gone(c->hosts, h->sess);
        }
        h->port.release(h->port.arg);
        free(h);
    }
}

void core_request(struct core *c, enum core_op op, ProtobufCMessage *req, uint64_t deadline_ms, core_done_fn done,
                  void *arg)
{
    struct cmd *m = calloc(1, sizeof *m);
    if (!m) {
        protobuf_c_message_free_unpacked(req, NULL);
        answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    m->kind = CMD_REQUEST;
    m->op = (int)op;
    m->req = req;
    m->deadline = deadline_ms;
    m->done = done;
    m->arg = arg;
    int rc = ops_public((int)op) ? loop_post(c->loop, &m->link, LOOP_LANE_REQUEST, 0) : LOOP_CLOSED;
    if (rc == LOOP_POSTED) return;
    free_cmd(m);
    if (rc == LOOP_FULL)
        answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED,
                    "the daemon has %d requests waiting already; try again shortly", CORE_QUEUE_MAX);
    else if (!ops_public((int)op)) answer_fail(done, arg, GRPC_STATUS_UNIMPLEMENTED, "unknown operation %d", (int)op);
    else answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
}

void core_set_address(struct core *c, const char *api_address)
{
    struct node *self = c->nodes[0];
    char *a = strdup(api_address);
    if (!a) return;
    free(self->api);
    self->api = a;
}

void core_set_peer(struct core *c, struct peer *p) { c->peer = p; }

void core_set_metrics(struct core *c, struct metrics *m) { c->sv.metrics = m; }

/* ---------- metrics: the gauges the reactor owns ---------- */

/* On the reactor: counts the children by state and the nodes, publishes them. */
static void publish_metrics(struct core *c)
{
    struct metrics *m = c->sv.metrics;
    for (size_t i = 0; i < c->n_sups; i++) {
        uint64_t n[MS_NSTATES] = {0}, calls = 0, calls_max = 0;
        for (struct child *ch = c->sups[i].head; ch; ch = ch->next) {
            if (ch->dead) continue;
            calls += ch->n_calls;
            if (ch->n_calls > calls_max) calls_max = ch->n_calls;
            switch (sv_api_state(ch)) {
            case DISTSUP__V1__CHILD_STATE__STARTING: n[MS_STARTING]++; break;
            case DISTSUP__V1__CHILD_STATE__RUNNING: n[MS_RUNNING]++; break;
            case DISTSUP__V1__CHILD_STATE__STOPPING: n[MS_STOPPING]++; break;
            case DISTSUP__V1__CHILD_STATE__RESTARTING: n[MS_RESTARTING]++; break;
            case DISTSUP__V1__CHILD_STATE__FAILED: n[MS_FAILED]++; break;
            default: n[MS_SUSPENDED]++; break;
            }
        }
        metrics_set_children(m, c->sups[i].cfg, n);
        metrics_set_mailbox(m, c->sups[i].cfg, calls, calls_max);
    }
    int64_t up = 0;
    for (size_t i = 0; i < c->n_nodes; i++) up += c->nodes[i]->up != 0;
    metrics_set(m, MG_NODES_UP, up);
    metrics_set(m, MG_NODES_DOWN, (int64_t)c->n_nodes - up);
    metrics_set(m, MG_QUORUM, c->quorum != 0);
    size_t hs, hr, hw;
    hosts_stats(c->hosts, &hs, &hr, &hw);
    metrics_set(m, MG_HOSTS, (int64_t)hs);
    metrics_set(m, MG_HOSTED_RUNNING, (int64_t)hr);
    metrics_set(m, MG_HOSTED_WAITING, (int64_t)hw);
    if (pthread_mutex_lock(&c->metrics_mu) != 0) return;
    c->metrics_gen++;
    pthread_cond_broadcast(&c->metrics_cv);
    pthread_mutex_unlock(&c->metrics_mu);
}

void core_publish_metrics(void *arg)
{
    struct core *c = arg;
    if (!c->sv.metrics) return;
    struct cmd *m = calloc(1, sizeof *m);
    if (!m || pthread_mutex_lock(&c->metrics_mu) != 0) {
        free(m);
        return;
    }
    uint64_t gen = c->metrics_gen;
    m->kind = CMD_METRICS;
    if (loop_post(c->loop, &m->link, LOOP_LANE_CLUSTER, 1) != LOOP_POSTED) {
        pthread_mutex_unlock(&c->metrics_mu);
        free(m);
        return;
    }
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 1;
    while (c->metrics_gen == gen)
        if (pthread_cond_timedwait(&c->metrics_cv, &c->metrics_mu, &until) != 0) break; /* stale values served */
    pthread_mutex_unlock(&c->metrics_mu);
}

/* ---------- the reactor's side ---------- */

static void run_op(struct core *c, int op, ProtobufCMessage *req, uint64_t deadline, unsigned flags, answer_fn done,
                   void *arg)
{
    if (c->shutting_down && !c->leaving) {
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
        return;
    }
    requests_run(c, op, req, deadline, flags, done, arg);
}

/* reactor_hooks.continue_reconcile: the next batch of re-homes, as a message of the
 * cluster lane (clients' requests take turns with it). */
static void continue_reconcile(struct core *c)
{
    if (c->reconcile_posted) return;
    struct cmd *m = calloc(1, sizeof *m);
    if (!m) {
        c->reconcile_at = reactor_now_ms() + 10; /* the tick will do */
        loop_arm_tick(c->loop);
        return;
    }
    m->kind = CMD_RECONCILE;
    if (loop_post(c->loop, &m->link, LOOP_LANE_CLUSTER, 1) != LOOP_POSTED) {
        free_cmd(m);
        return;
    }
    c->reconcile_posted = 1;
}

/* SIGTERM: a graceful leave when other nodes can take the children, else stop them. */
static void begin_shutdown(struct core *c)
{
    if (c->shutting_down || c->leaving) return;
    if (!begin_leave(c)) stop_all(c);
}

static void on_cmd(void *arg, struct loop_msg *lm)
{
    struct core *c = arg;
    struct cmd *m = (struct cmd *)lm;
    int closed = c->shutting_down && c->sv.live == 0; /* news after the end is of no use */
    switch (m->kind) {
    case CMD_SHUTDOWN: begin_shutdown(c); break;
    case CMD_NODE_UP:
        if (!closed) {
            Distsup__V1__Join *j = distsup__v1__join__unpack(NULL, m->len, m->data);
            if (j) on_node_up(c, j);
            if (j) distsup__v1__join__free_unpacked(j, NULL);
        }
        break;
    case CMD_NODE_DOWN:
        if (!closed) on_node_down(c, m->node, m->clean);
        break;
    case CMD_MESSAGE:
        atomic_fetch_sub(&c->news_bytes, m->len);
        if (!closed) on_cluster_message(c, m->node, m->data, m->len);
        break;
    case CMD_SETTLED:
        c->settled = 1;
        maybe_finish_sync(c);
        break;
    case CMD_REQUEST: run_op(c, m->op, m->req, m->deadline, 0, m->done, m->arg); break;
    case CMD_RECONCILE:
        c->reconcile_posted = 0;
        c->reconcile_continuing = 1; /* it may resume where the last batch stopped */
        reconcile(c);
        break;
    case CMD_METRICS: publish_metrics(c); break;
    case CMD_HOST_OPEN:
    case CMD_HOST_MESSAGE:
    case CMD_HOST_CLOSED: on_host_cmd(c, m); break;
    }
    free_cmd(m);
}

static int maybe_trim(struct core *c, uint64_t now);

static void on_tick(void *arg)
{
    struct core *c = arg;
    uint64_t now = reactor_now_ms();
    int busy = 0;
    /* Only the children that asked (tick_watch): idle ones cost the tick nothing. */
    for (struct child *ch = c->ticking, *next; ch; ch = next) {
        next = ch->tick_next;
        if (ch->dead || !sv_tick(&c->sv, ch, now) || ch->dead) tick_unwatch(c, ch);
        else busy = 1;
    }
    if (expire_forwards(c, now)) busy = 1;
    if (requests_tick(c, now)) busy = 1;
    if (maybe_trim(c, now)) busy = 1;
    if (c->peer) {
        if (!c->synced && c->quorum && !c->leaving && !c->shutting_down) {
            maybe_finish_sync(c);
            if (!c->synced) busy = 1;
        }
        if (c->rebalance_at) {
            if (now >= c->rebalance_at) {
                c->rebalance_at = 0;
                plan_moves(c);
            } else {
                busy = 1;
            }
        }
        if (c->reconcile_at) {
            if (now >= c->reconcile_at) {
                c->reconcile_at = 0;
                reconcile(c);
            } else {
                busy = 1;
            }
        }
        if (c->leaving) {
            check_leave(c, now);
            busy = 1;
        }
    }
    if (!busy) loop_tick_idle(c->loop);
}

/* glibc keeps what freed children used in its free lists (resident: about 50 MB after
 * rounds of 1,000 children); malloc_trim gives it back.  Runs when the number of
 * processes running fell to half its peak since the last trim and by at least
 * TRIM_MIN_DROP, at most once per TRIM_EVERY_MS (the tick waits for the rest).
 * Returns 1 while a trim is due but waits. */
#define TRIM_MIN_DROP 64
#define TRIM_EVERY_MS 1000

static int maybe_trim(struct core *c, uint64_t now)
{
    size_t live = c->sv.live;
    if (live > c->trim_peak) c->trim_peak = live;
    if (!c->trim_due && c->trim_peak - live >= TRIM_MIN_DROP && live <= c->trim_peak / 2) c->trim_due = 1;
    if (!c->trim_due) return 0;
    if (c->trimmed_at && now - c->trimmed_at < TRIM_EVERY_MS) {
        loop_arm_tick(c->loop);
        return 1;
    }
    malloc_trim(0);
    log_debug("core", "returned freed memory to the system (%zu processes running, %zu at the peak)", live,
              c->trim_peak);
    c->trimmed_at = now;
    c->trim_peak = live;
    c->trim_due = 0;
    return 0;
}

/* Frees the turn's removed children; their removals are on disk first (one commit for
 * all of them, like the starts' group commit), then their TerminateChild requests
 * are answered. */
static void bury(struct core *c)
{
    if (!c->graveyard) return;
    int stored = store_flush(c->store) == 0;
    while (c->graveyard) {
        struct child *ch = c->graveyard;
        c->graveyard = ch->dead_next;
        tick_unwatch(c, ch);
        sv_fail_calls(ch, GRPC_STATUS_UNAVAILABLE, "was removed");
        if (stored && !ch->unsaved) sv_answer_terminate(ch, ch->term_code, ch->term_sig);
        else
            sv_fail_terminate(ch, GRPC_STATUS_INTERNAL,
                              "the child stopped, but its removal could not be saved to the database (see the daemon "
                              "log: a full disk?): it may start again after a restart");
        sv_child_free(ch);
    }
}

static void *reactor(void *arg)
{
    struct core *c = arg;
    c->started = c->sync_since = reactor_now_ms();
    if (c->peer) {
        /* Cluster: stored children wait (SV_IDLE) until this node has synced with its
         * peers, so that none the cluster re-homed meanwhile runs twice
         * (maybe_finish_sync). */
        loop_arm_tick(c->loop);
    } else {
        /* Single node: children stored by an earlier run start again now. */
        for (size_t i = 0; i < c->n_sups; i++)
            for (struct child *ch = c->sups[i].head, *next; ch; ch = next) {
                next = ch->next;
                if (ch->st != SV_IDLE) continue;
                sv_start_or_retry(&c->sv, ch, "restoring");
                if (!ch->dead && ch->proc.pid > 0)
                    log_info("core", "restored child %s (pid %d)", ch->name, (int)ch->proc.pid);
            }
        c->synced = 1;
    }
    answer_stored(c);
    bury(c);
    for (;;) {
        if (c->shutting_down && c->sv.live == 0) break;
        if (loop_run_once(c->loop, -1) != 0) break;
        repair_store(c, reactor_now_ms());
        answer_stored(c); /* the turn's starts: one commit, then their answers */
        bury(c);
        maybe_trim(c, reactor_now_ms());
        store_flush(c->store); /* the cache updates of this turn, in one commit */
    }
    loop_close_queue(c->loop); /* answers whatever raced in: UNAVAILABLE */
    hosts_teardown(c);
    fail_forwards(c, NULL, "is unreachable: the daemon is shutting down");
    requests_fail_held(c);
    answer_stored(c);
    bury(c);
    store_flush(c->store);
    if (c->leave_at_end) peer_leave(c->peer, 1000); /* a graceful leave: every child has stopped */
    return NULL;
}

/* ---------- life cycle ---------- */

struct load_ctx {
    struct core *c;
    char *err;
    size_t errlen;
    struct proc_group *groups; /* the process groups an earlier run recorded */
    size_t n_groups;
};

static int load_one(void *arg, const struct store_child *sc)
{
    struct load_ctx *x = arg;
    struct core *c = x->c;
    if (sc->pgid > 0 && sc->pg_start > 0) {
        struct proc_group *g = realloc(x->groups, (x->n_groups + 1) * sizeof *g);
        if (!g) {
            snprintf(x->err, x->errlen, "out of memory loading children");
            return -1;
        }
        x->groups = g;
        x->groups[x->n_groups++] = (struct proc_group){(pid_t)sc->pgid, sc->pg_start};
    }
    struct sup *s = find_sup(c, sc->supervisor);
    if (!s) {
        log_warn("core", "stored child %s belongs to supervisor %s, which is not configured; left alone", sc->name,
                 sc->supervisor);
        return 0;
    }
    Distsup__V1__ChildSpec *spec = distsup__v1__child_spec__unpack(NULL, sc->spec_len, sc->spec);
    char why[512] = "";
    if (!spec) snprintf(why, sizeof why, "unreadable");
    if (!spec || spec_validate(spec, c->cfg->max_payload, why, sizeof why) != 0 || strcmp(spec->name, sc->name)) {
        /* Stored by an older release or written by hand: never started, and gone from the store. */
        if (spec && !why[0]) snprintf(why, sizeof why, "it names another child (%.200s)", spec->name);
        log_error("core", "stored spec of child %s is invalid (%s); skipped and deleted from the store", sc->name, why);
        if (spec) distsup__v1__child_spec__free_unpacked(spec, NULL);
        store_delete_child(c->store, sc->supervisor, sc->name);
        return 0;
    }
    if (spec->restart == DISTSUP__V1__RESTART_TYPE__TEMPORARY) {
        /* Its process died with the previous daemon; temporary children never restart. */
        log_info("core", "temporary child %s did not survive the restart; dropped", sc->name);
        distsup__v1__child_spec__free_unpacked(spec, NULL);
        store_delete_child(c->store, sc->supervisor, sc->name);
        return 0;
    }
    struct child *ch = sv_child_new(&c->sv, spec, s->cfg, s);
    if (!ch) {
        distsup__v1__child_spec__free_unpacked(spec, NULL);
        snprintf(x->err, x->errlen, "out of memory loading children");
        return -1;
    }
    if (find_child(s, ch->name) || sup_insert(s, ch) != 0) {
        sv_child_free(ch);
        return 0;
    }
    ch->restarts = sc->restarts;
    ch->incarnation = sc->incarnation;
    ch->st = sc->state == STORE_FAILED ? SV_FAILED : SV_IDLE;
    return 0;
}

/* Other nodes' children as last known: shown until their nodes say otherwise. */
static int load_cached(void *arg, const char *supn, const char *name, const char *node, const uint8_t *info, size_t len)
{
    struct core *c = arg;
    struct sup *s = find_sup(c, supn);
    Distsup__V1__ChildInfo *ci = s ? distsup__v1__child_info__unpack(NULL, len, info) : NULL;
    char why[512];
    if (!ci || strcmp(ci->name, name) || strcmp(ci->node, node) || !strcmp(node, c->cfg->node_name) ||
        find_child(s, name) || spec_name_check("node name", node, why, sizeof why) != 0 ||
        (ci->spec &&
         (spec_validate(ci->spec, c->cfg->max_payload, why, sizeof why) != 0 || strcmp(ci->spec->name, name)))) {
        if (ci) distsup__v1__child_info__free_unpacked(ci, NULL);
        store_cache_delete(c->store, supn, name);
        return 0;
    }
    registry_put(s->remote, ci, 0);
    return 0;
}

static int parse_eligible(struct sup *s)
{
    if (!s->cfg->nodes[0]) return 0;
    char buf[sizeof s->cfg->nodes];
    snprintf(buf, sizeof buf, "%s", s->cfg->nodes);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        void *grown = realloc(s->eligible, (s->n_eligible + 1) * sizeof *s->eligible);
        if (!grown) return -1;
        s->eligible = grown;
        if (!(s->eligible[s->n_eligible] = strdup(tok))) return -1;
        s->n_eligible++;
    }
    return 0;
}

/* Where the built-in strategies are: strategy_dir, or ../strategies beside the binary. */
static void strategy_dir(const struct config *cfg, char *out, size_t cap)
{
    if (cfg->strategy_dir[0]) {
        snprintf(out, cap, "%s", cfg->strategy_dir);
        return;
    }
    char exe[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) {
        snprintf(out, cap, "strategies");
        return;
    }
    exe[n] = 0;
    char *slash = strrchr(exe, '/');
    if (slash) *slash = 0;
    snprintf(out, cap, "%s/../strategies", exe);
}

struct core *core_new(const struct config *cfg, struct store *st, char *err, size_t errlen)
{
    struct core *c = calloc(1, sizeof *c);
    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    c->cfg = cfg;
    c->store = st;
    if (pthread_mutex_init(&c->metrics_mu, NULL) != 0) {
        snprintf(err, errlen, "cannot create a mutex");
        free(c);
        return NULL;
    }
    if (pthread_cond_init(&c->metrics_cv, NULL) != 0) {
        snprintf(err, errlen, "cannot create a condition variable");
        pthread_mutex_destroy(&c->metrics_mu);
        free(c);
        return NULL;
    }
    c->metrics_sync = 1;
    c->hooks = (struct reactor_hooks){.announce = announce,
                                      .announce_gone = announce_gone,
                                      .broadcast_event = broadcast_event,
                                      .moved_out = finish_move,
                                      .run_op = run_op,
                                      .continue_reconcile = continue_reconcile};
    if (!realpath(cfg->data_dir, c->data_dir)) {
        snprintf(err, errlen, "data dir %s: %s", cfg->data_dir, strerror(errno));
        goto fail;
    }
    struct loop_hooks lh = {.arg = c, .drain = on_cmd, .tick = on_tick};
    if (!(c->loop = loop_new(CORE_QUEUE_MAX, &lh, err, errlen))) goto fail;
    struct sv_hooks svh;
    reactor_sv_hooks(c, &svh);
    sv_init(&c->sv, sv_os_procs(), &svh, c->loop, cfg->node_name, c->data_dir, (uint64_t)reactor_wall_ms());
    struct host_limits hl = {.ping_ms = cfg->host_ping_ms,
                             .timeout_ms = cfg->host_timeout_ms,
                             .queue_bytes = cfg->host_queue_bytes,
                             .max_hosts = cfg->max_hosts};
    struct host_hooks hh = {.arg = c, .kinds_changed = on_kinds_changed, .waiting = on_hosts_waiting};
    if (!(c->hosts = hosts_new(&c->sv, &hl, cfg->node_name, &hh))) {
        snprintf(err, errlen, "cannot set up hosted children: out of memory or timerfd");
        goto fail;
    }
    c->sv.hosted_ops = hosts_ops();
    c->sv.hosts = c->hosts;
    c->bus = event_bus_new();
    c->sups = calloc(cfg->n_sups, sizeof *c->sups);
    if (!c->bus || !c->sups) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    c->n_sups = cfg->n_sups;
    struct node *self = add_node(c, cfg->node_name);
    if (!self || parse_labels(self, cfg->labels) != 0) {
        snprintf(err, errlen, "out of memory");
        goto fail;
    }
    self->self = self->up = self->seen = 1;
    self->weight = cfg->weight;
    c->quorum = !cfg->quorum || 1 >= cfg->cluster_size / 2 + 1;
    char dir[PATH_MAX];
    strategy_dir(cfg, dir, sizeof dir);
    for (size_t i = 0; i < cfg->n_sups; i++) {
        struct sup *s = &c->sups[i];
        s->cfg = &cfg->sups[i];
        s->table_size = 64;
        if (!(s->table = calloc(64, sizeof *s->table)) || !(s->remote = registry_new()) || parse_eligible(s) != 0) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
        char e[900];
        if (!(s->strategy = placement_load(s->cfg->strategy, s->cfg->strategy_options, dir, e, sizeof e))) {
            snprintf(err, errlen, "supervisor %s: %s", s->cfg->name, e);
            goto fail;
        }
        log_debug("core", "supervisor %s places with %s (%s)", s->cfg->name, placement_name(s->strategy),
                  placement_path(s->strategy));
    }
    struct load_ctx x = {c, err, errlen, NULL, 0};
    int lrc = store_load_children(st, load_one, &x);
    /* What the children of a daemon that died left running goes before any starts. */
    size_t killed = proc_kill_leftovers(x.groups, x.n_groups);
    if (killed) log_warn("core", "killed %zu processes the previous run's children left behind", killed);
    free(x.groups);
    if (lrc != 0) {
        if (!err[0]) snprintf(err, errlen, "cannot load the stored children (see the log)");
        goto fail;
    }
    if (config_cluster(cfg) && store_cache_load(st, load_cached, c) != 0) {
        snprintf(err, errlen, "cannot load the cluster cache (see the log)");
        goto fail;
    }
    return c;
fail:
    core_free(c);
    return NULL;
}

int core_start(struct core *c, char *err, size_t errlen)
{
    int rc = pthread_create(&c->thread, NULL, reactor, c);
    if (rc != 0) {
        snprintf(err, errlen, "cannot start the reactor thread: %s", strerror(rc));
        return -1;
    }
    c->thread_started = 1;
    return 0;
}

struct event_bus *core_events(struct core *c) { return c->bus; }

int core_has_supervisor(const struct core *c, const char *name)
{
    return config_find_sup(c->cfg, sup_name_of(name)) != NULL;
}

void core_shutdown(struct core *c)
{
    if (!c->thread_started) return;
    struct cmd *m = calloc(1, sizeof *m);
    if (m) {
        m->kind = CMD_SHUTDOWN;
        if (loop_post(c->loop, &m->link, LOOP_LANE_CLUSTER, 1) != LOOP_POSTED) free_cmd(m);
    } else {
        log_error("core", "out of memory: cannot ask the reactor to stop");
    }
    pthread_join(c->thread, NULL);
    c->thread_started = 0;
}

void core_free(struct core *c)
{
    if (!c) return;
    for (size_t i = 0; c->sups && i < c->n_sups; i++) {
        struct child *ch = c->sups[i].head;
        while (ch) {
            struct child *n = ch->next;
            sv_child_free(ch);
            ch = n;
        }
        free(c->sups[i].table);
        registry_free(c->sups[i].remote);
        placement_free(c->sups[i].strategy);
        while (c->sups[i].reserved) {
            struct reservation *r = c->sups[i].reserved;
            c->sups[i].reserved = r->next;
            free(r->name);
            free(r);
        }
        for (size_t k = 0; k < c->sups[i].n_eligible; k++) free(c->sups[i].eligible[k]);
        free(c->sups[i].eligible);
    }
    free(c->sups);
    hosts_free(c->hosts); /* after the children: they leave its lists as they go */
    free(c->reconcile_from);
    for (size_t i = 0; i < c->n_nodes; i++) free_node(c->nodes[i]);
    free(c->nodes);
    loop_free(c->loop, free_msg);
    event_bus_free(c->bus);
    if (c->metrics_sync) {
        pthread_cond_destroy(&c->metrics_cv);
        pthread_mutex_destroy(&c->metrics_mu);
    }
    free(c);
}

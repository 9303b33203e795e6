#include "sidecar/reactor.h"

#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sidecar/log.h"
#include "sidecar/fnv.h"

uint64_t reactor_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

int64_t reactor_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ---------- supervisors and their children ---------- */

const char *sup_name_of(const char *name) { return name[0] ? name : "default"; }

struct sup *find_sup(struct core *c, const char *name)
{
    name = sup_name_of(name);
    for (size_t i = 0; i < c->n_sups; i++)
        if (!strcmp(c->sups[i].cfg->name, name)) return &c->sups[i];
    return NULL;
}

struct sup *need_sup(struct core *c, const char *name, answer_fn done, void *arg)
{
    struct sup *s = find_sup(c, name);
    if (s) return s;
    char list[512] = "";
    size_t off = 0;
    for (size_t i = 0; i < c->n_sups && off < sizeof list - 1; i++) {
        int n = snprintf(list + off, sizeof list - off, "%s%s", i ? ", " : "", c->sups[i].cfg->name);
        if (n < 0) break;
        off += (size_t)n;
    }
    answer_fail(done, arg, GRPC_STATUS_NOT_FOUND, "no supervisor named '%s' (configured: %s)", sup_name_of(name), list);
    return NULL;
}

struct child *find_child(struct sup *s, const char *name)
{
    for (struct child *ch = s->table[fnv_str(name) & (s->table_size - 1)]; ch; ch = ch->hnext)
        if (!strcmp(ch->name, name)) return ch;
    return NULL;
}

int sup_insert(struct sup *s, struct child *ch)
{
    if (s->count + 1 > s->table_size / 2) {
        size_t n = s->table_size * 2;
        struct child **t = calloc(n, sizeof *t);
        if (!t) return -1;
        for (struct child *x = s->head; x; x = x->next) {
            size_t i = fnv_str(x->name) & (n - 1);
            x->hnext = t[i];
            t[i] = x;
        }
        free(s->table);
        s->table = t;
        s->table_size = n;
    }
    size_t i = fnv_str(ch->name) & (s->table_size - 1);
    ch->hnext = s->table[i];
    s->table[i] = ch;
    ch->prev = s->tail;
    ch->next = NULL;
    if (s->tail) s->tail->next = ch;
    else s->head = ch;
    s->tail = ch;
    s->count++;
    return 0;
}

void sup_unlink(struct sup *s, struct child *ch)
{
    struct child **pp = &s->table[fnv_str(ch->name) & (s->table_size - 1)];
    while (*pp && *pp != ch) pp = &(*pp)->hnext;
    if (*pp) *pp = ch->hnext;
    if (ch->prev) ch->prev->next = ch->next;
    else s->head = ch->next;
    if (ch->next) ch->next->prev = ch->prev;
    else s->tail = ch->prev;
    s->count--;
}

void remove_child(struct core *c, struct child *ch, const char *reason)
{
    if (ch->dead) return;
    ch->dead = 1;
    struct sup *s = sup_of(ch);
    if (ch->moving_to) { /* removed while moving: the move is off */
        free(ch->moving_to);
        ch->moving_to = NULL;
        if (s->moves) s->moves--;
    }
    /* in the turn's batch: bury commits it before it answers a TerminateChild */
    if (store_delete_child(c->store, s->cfg->name, ch->name) != 0) ch->unsaved = 1;
    c->hooks.announce_gone(c, ch, reason);
    sup_unlink(s, ch);
    ch->dead_next = c->graveyard;
    c->graveyard = ch;
}

/* start_local and start_local_by: answer_by (monotonic ms, 0: none) is when the
 * StartChild must have its answer at the latest. */
static void start_at(struct core *c, struct sup *s, Distsup__V1__ChildSpec *spec, uint64_t incarnation,
                     const ProtobufCBinaryData *state, const char *rehomed_from, uint64_t rehomed_from_inc,
                     uint64_t answer_by, answer_fn done, void *arg)
{
    char err[512];
    struct child *old = find_child(s, spec->name);
    if (old) {
        answer_fail(
            done, arg, GRPC_STATUS_ALREADY_EXISTS,
            "child '%s' already exists in supervisor '%s' on node %s (id %s, pid %d, state %s)", spec->name,
            s->cfg->name, c->cfg->node_name, old->id, (int)old->proc.pid,
            protobuf_c_enum_descriptor_get_value(&distsup__v1__child_state__descriptor, sv_api_state(old))->name);
        distsup__v1__child_spec__free_unpacked(spec, NULL);
        return;
    }
    if (store_dirty(c->store)) {
        /* it could not be acknowledged (answer_stored), and its writes would take the
         * room the rewrite of what was lost needs (repair_store) */
        answer_fail(done, arg, GRPC_STATUS_INTERNAL,
                    "cannot save the spec of '%s': the database lacks writes that failed (see the daemon log: a "
                    "full disk?); not started",
                    spec->name);
        distsup__v1__child_spec__free_unpacked(spec, NULL);
        return;
    }
    struct child *ch = sv_child_new(&c->sv, spec, s->cfg, s);
    if (!ch || sup_insert(s, ch) != 0) {
        if (ch) sv_child_free(ch);
        else distsup__v1__child_spec__free_unpacked(spec, NULL);
        answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    if (incarnation) ch->incarnation = incarnation - 1; /* sv_start counts it up */
    if (rehomed_from && rehomed_from[0] && incarnation) {
        if (!(ch->rehomed_from = strdup(rehomed_from))) {
            sup_unlink(s, ch);
            sv_child_free(ch);
            answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        ch->rehomed_from_inc = rehomed_from_inc;
    }
    if (state && state->len) {
        if (!(ch->state_blob = malloc(state->len))) {
            sup_unlink(s, ch);
            sv_child_free(ch);
            answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        memcpy(ch->state_blob, state->data, state->len);
        ch->state_len = state->len;
    }
    size_t len = distsup__v1__child_spec__get_packed_size(spec);
    uint8_t *bytes = malloc(len ? len : 1);
    struct store_child sc = {.supervisor = s->cfg->name,
                             .name = ch->name,
                             .spec = bytes,
                             .spec_len = len,
                             .state = STORE_RUNNING,
                             .incarnation = ch->incarnation + 1};
    if (!bytes || (distsup__v1__child_spec__pack(spec, bytes), store_put_child(c->store, &sc)) != 0) {
        free(bytes);
        answer_fail(done, arg, GRPC_STATUS_INTERNAL,
                    "cannot save the spec of '%s' to the database (see the daemon log); not started", ch->name);
        sup_unlink(s, ch);
        sv_child_free(ch);
        return;
    }
    free(bytes);
    ch->answer_by = answer_by;
    int rc = sv_start(&c->sv, ch, err, sizeof err);
    if (rc == SV_SPAWN_WAIT && incarnation) {
        /* A re-homed or moved hosted child whose host left meanwhile: it is kept, and
         * waits here for one (or moves on: cluster/moves.c, rehome_waiting). */
        log_info("core", "child %s came here; %s; it waits for one", ch->name, err);
        ch->st = SV_IDLE;
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, 0, 0, err);
        ch->start_done = done;
        ch->start_arg = arg;
        sv_answer_start(&c->sv, ch);
        return;
    }
    if (rc != 0) {
        log_warn("core", "StartChild %s: %s", ch->name, err);
        answer_fail(done, arg, rc == SV_SPAWN_WAIT ? GRPC_STATUS_UNAVAILABLE : GRPC_STATUS_FAILED_PRECONDITION,
                    "cannot start child '%s': %s", ch->name, err);
        remove_child(c, ch, "could not start");
        return;
    }
    if (sv_hosted(ch)) log_debug("core", "started hosted child %s in supervisor %s", ch->name, s->cfg->name);
    else log_info("core", "started child %s (pid %d) in supervisor %s", ch->name, (int)ch->proc.pid, s->cfg->name);
    ch->start_done = done;
    ch->start_arg = arg;
    if (ch->st == SV_RUNNING) sv_answer_start(&c->sv, ch);
}

void start_local(struct core *c, struct sup *s, Distsup__V1__ChildSpec *spec, uint64_t incarnation,
                 const ProtobufCBinaryData *state, const char *rehomed_from, uint64_t rehomed_from_inc, answer_fn done,
                 void *arg)
{
    start_at(c, s, spec, incarnation, state, rehomed_from, rehomed_from_inc, 0, done, arg);
}

void start_local_by(struct core *c, struct sup *s, Distsup__V1__ChildSpec *spec, uint64_t deadline, answer_fn done,
                    void *arg)
{
    start_at(c, s, spec, 0, NULL, NULL, 0, deadline, done, arg);
}

/* ---------- the hooks of the state machine ---------- */

static uint64_t h_now(void *arg)
{
    (void)arg;
    return reactor_now_ms();
}

static void h_tick(void *arg, struct child *ch)
{
    struct core *c = arg;
    tick_watch(c, ch);
}

void tick_watch(struct core *c, struct child *ch)
{
    if (!ch->on_tick && !ch->dead) {
        ch->on_tick = 1;
        ch->tick_prev = NULL;
        ch->tick_next = c->ticking;
        if (c->ticking) c->ticking->tick_prev = ch;
        c->ticking = ch;
    }
    loop_arm_tick(c->loop);
}

void tick_unwatch(struct core *c, struct child *ch)
{
    if (!ch->on_tick) return;
    if (ch->tick_prev) ch->tick_prev->tick_next = ch->tick_next;
    else c->ticking = ch->tick_next;
    if (ch->tick_next) ch->tick_next->tick_prev = ch->tick_prev;
    ch->tick_next = ch->tick_prev = NULL;
    ch->on_tick = 0;
}

static void h_event(void *arg, struct child *ch, Distsup__V1__EventKind kind, int exit_code, int sig,
                    const char *reason)
{
    struct core *c = arg;
    Distsup__V1__Event ev = DISTSUP__V1__EVENT__INIT;
    ev.kind = kind;
    ev.supervisor = (char *)ch->cfg->name;
    ev.name = ch->name;
    ev.id = ch->id;
    ev.node = (char *)c->cfg->node_name;
    ev.os_pid = sv_hosted(ch) ? 0 : ch->proc.pid;
    ev.exit_code = exit_code;
    ev.signal = sig;
    ev.reason = (char *)(reason ? reason : "");
    ev.at_ms = reactor_wall_ms();
    ev.restarts = ch->restarts;
    event_bus_publish(c->bus, &ev);
    if (!c->peer) return;
    /* The cluster hears of it too: the event for cluster-wide Watch, and the child's
     * new state for every node's registry. */
    c->hooks.broadcast_event(c, &ev);
    /* ... and a child held back without quorum (its state SUSPENDED: the duplicate rule
     * reads whether a copy kept running) */
    if (kind == DISTSUP__V1__EVENT_KIND__PROCESS_START || kind == DISTSUP__V1__EVENT_KIND__PROCESS_RESTART ||
        kind == DISTSUP__V1__EVENT_KIND__PROCESS_FAILED ||
        (kind == DISTSUP__V1__EVENT_KIND__PROCESS_STOP && ch->st == SV_IDLE && !ch->dead))
        c->hooks.announce(c, ch);
}

static void h_persist(void *arg, struct child *ch)
{
    struct core *c = arg;
    int st = ch->st == SV_FAILED ? STORE_FAILED : STORE_RUNNING;
    store_set_child_state(c->store, ch->cfg->name, ch->name, st, ch->restarts, ch->incarnation);
}

/* Its process group, so that a daemon that dies leaves no tree behind for long
 * (proc_kill_leftovers at the next start). */
static void h_spawned(void *arg, struct child *ch)
{
    struct core *c = arg;
    if (sv_hosted(ch)) return; /* no process: nothing to kill after a crash */
    store_set_child_proc(c->store, ch->cfg->name, ch->name, ch->proc.pid, ch->proc.start_ticks);
}

static void h_remove(void *arg, struct child *ch, const char *reason) { remove_child(arg, ch, reason); }

/* Specs are stored in the turn's batch: the starts of a turn are answered together
 * after its one commit (answer_stored), not one fsync each. */
static void h_answer_durable(void *arg, struct child *ch)
{
    struct core *c = arg;
    if (ch->stored_wait) return;
    ch->stored_wait = 1;
    ch->stored_next = c->stored_wait;
    c->stored_wait = ch;
}

void answer_stored(struct core *c)
{
    if (!c->stored_wait) return;
    int ok = store_flush(c->store) == 0;
    while (c->stored_wait) {
        struct child *ch = c->stored_wait;
        c->stored_wait = ch->stored_next;
        ch->stored_next = NULL;
        ch->stored_wait = 0;
        if (ch->dead) {
            sv_fail_start(ch, GRPC_STATUS_UNAVAILABLE, "child '%s' was removed as it started", ch->name);
        } else {
            sv_answer_start_stored(&c->sv, ch, ok);
            /* a failed StartChild leaves nothing running */
            if (!ok && sv_stop(&c->sv, ch, SV_WHY_REMOVE, "its spec could not be saved") == 0)
                remove_child(c, ch, "its spec could not be saved");
        }
    }
}

/* One child as the store holds it (store_rewrite_children). */
static int rewrite_child(struct core *c, struct child *ch)
{
    size_t len = distsup__v1__child_spec__get_packed_size(ch->spec);
    uint8_t *bytes = malloc(len ? len : 1);
    if (!bytes) return -1;
    distsup__v1__child_spec__pack(ch->spec, bytes);
    struct store_child sc = {.supervisor = ch->cfg->name,
                             .name = ch->name,
                             .spec = bytes,
                             .spec_len = len,
                             .state = ch->st == SV_FAILED ? STORE_FAILED : STORE_RUNNING,
                             .restarts = ch->restarts,
                             .incarnation = ch->incarnation};
    int rc = store_put_child(c->store, &sc);
    free(bytes);
    if (rc == 0 && ch->proc.pid > 0 && !sv_hosted(ch))
        rc = store_set_child_proc(c->store, ch->cfg->name, ch->name, ch->proc.pid, ch->proc.start_ticks);
    return rc;
}

static int rewrite_all(void *arg)
{
    struct core *c = arg;
    for (size_t i = 0; i < c->n_sups; i++)
        for (struct child *ch = c->sups[i].head; ch; ch = ch->next)
            if (!ch->dead && rewrite_child(c, ch) != 0) return -1;
    return 0;
}

#define REWRITE_EVERY_MS 1000

void repair_store(struct core *c, uint64_t now)
{
    if (!store_dirty(c->store) || now < c->rewrite_at) return;
    c->rewrite_at = now + REWRITE_EVERY_MS;
    size_t n = 0;
    for (size_t i = 0; i < c->n_sups; i++) n += c->sups[i].count;
    if (store_rewrite_children(c->store, rewrite_all, c) == 0)
        log_info("store", "the database holds this node's %zu children again, after a failed write", n);
    else
        log_error("store",
                  "the database still lacks writes that failed (a full disk?): StartChild and "
                  "TerminateChild answer INTERNAL until it can be rewritten; next try in %d ms",
                  REWRITE_EVERY_MS);
}

static void h_moved_out(void *arg, struct child *ch)
{
    struct core *c = arg;
    c->hooks.moved_out(c, ch);
}

void reactor_sv_hooks(struct core *c, struct sv_hooks *h)
{
    *h = (struct sv_hooks){.arg = c,
                           .now = h_now,
                           .tick = h_tick,
                           .event = h_event,
                           .persist = h_persist,
                           .remove = h_remove,
                           .moved_out = h_moved_out,
                           .spawned = h_spawned,
                           .answer_durable = h_answer_durable};
}

/* ---------- copies ---------- */

/* A deep copy through the wire form (NULL when out of memory). */
static ProtobufCMessage *pb_dup(const ProtobufCMessage *in)
{
    size_t len = protobuf_c_message_get_packed_size(in);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return NULL;
    protobuf_c_message_pack(in, buf);
    ProtobufCMessage *out = protobuf_c_message_unpack(in->descriptor, NULL, len, buf);
    free(buf);
    return out;
}

Distsup__V1__ChildInfo *info_dup(const Distsup__V1__ChildInfo *in)
{
    return (Distsup__V1__ChildInfo *)pb_dup(&in->base);
}

Distsup__V1__ChildSpec *spec_dup(const Distsup__V1__ChildSpec *in)
{
    return (Distsup__V1__ChildSpec *)pb_dup(&in->base);
}

/* ---------- the end ---------- */

void stop_all(struct core *c)
{
    if (c->shutting_down) return;
    c->shutting_down = 1;
    log_info("core", "stopping %zu running children", c->sv.live);
    for (size_t i = 0; i < c->n_sups; i++)
        for (struct child *ch = c->sups[i].head; ch; ch = ch->next) {
            sv_fail_start(ch, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
            sv_fail_calls(ch, GRPC_STATUS_UNAVAILABLE, "is stopping with the daemon");
            sv_stop(&c->sv, ch, SV_WHY_PARK, "the sidecar is shutting down");
        }
}

void emit(struct core *c, struct child *ch, Distsup__V1__EventKind kind, int exit_code, int sig, const char *reason)
{
    h_event(c, ch, kind, exit_code, sig, reason);
}

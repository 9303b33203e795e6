/* Unit tests of the child state machine (sidecar/supervise.c) through a fake
 * process (struct sv_proc_ops) and a fake clock (struct sv_hooks): no processes,
 * no epoll, no sleeping.  Every cell of actions[state][event] that does something is
 * driven through the public API, and the cells that do nothing are checked to do
 * nothing (state unchanged, nothing sent, signalled, emitted or called back).
 * START goes through sv_start / sv_start_or_retry, which check IDLE or BACKOFF
 * themselves (nothing dispatches the table's START column); elsewhere sv_start
 * refuses with "not idle" and changes nothing. */
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <grpc/status.h>

#include "sidecar/log.h"
#include "sidecar/supervise.h"

#define EXITED(code) ((code) << 8) /* W_EXITCODE(code, 0) */
#define KILLED(sig) (sig)          /* W_EXITCODE(0, sig) */
#define FAKE_PID0 4000

/* ---------- the fake process and the fake core ---------- */

#define MAXREC 64

struct sent {
    int kind;       /* Distsup__V1__ChildFrame__FrameCase */
    char text[256]; /* Terminate: reason; Init: name; Cast/Info/Call: payload */
    uint64_t ref;   /* Call */
    uint8_t init[64], state[64];
    size_t init_len, state_len;
    char id[320], node[64], supervisor[64];
};

struct ev {
    int kind, code, sig;
    char reason[256];
    struct child *ch;
};

struct fake {
    uint64_t now;
    unsigned ticks;
    /* proc ops */
    int spawn_fail, send_fail, stdin_open;
    unsigned spawns;
    int next_pid;
    struct sent sent[MAXREC];
    unsigned n_sent;
    int sigs[MAXREC];
    unsigned n_sigs;
    unsigned kills;
    char kill_why[256];
    /* hooks */
    struct ev ev[MAXREC];
    unsigned n_ev;
    unsigned persists, removes, moved;
    unsigned durables; /* answer_durable hook calls, and the last child it got */
    struct child *durable_child;
    char remove_reason[256];
    int waiting_at_remove; /* TerminateChild requests were still waiting when it was removed */
    struct child *removed, *moved_child;
};

static struct fake F;
static struct sv SV;
static struct sup_config CFG;

static void copy_bytes(uint8_t *dst, size_t *dlen, ProtobufCBinaryData b)
{
    assert_true(b.len <= 64);
    if (b.len) memcpy(dst, b.data, b.len);
    *dlen = b.len;
}

static void copy_text(char *dst, size_t cap, ProtobufCBinaryData b)
{
    size_t n = b.len < cap - 1 ? b.len : cap - 1;
    if (n) memcpy(dst, b.data, n);
    dst[n] = 0;
}

static int f_spawn(struct sv *sv, struct child *ch, char *err, size_t errlen)
{
    assert_ptr_equal(sv, &SV);
    if (F.spawn_fail) {
        snprintf(err, errlen, "fake: cannot spawn");
        return -1;
    }
    F.spawns++;
    ch->proc.pid = F.next_pid++;
    return 0;
}

static int f_send(struct child *ch, const Distsup__V1__ChildFrame *f)
{
    (void)ch;
    if (F.send_fail) return -1;
    assert_true(F.n_sent < MAXREC);
    struct sent *s = &F.sent[F.n_sent++];
    memset(s, 0, sizeof *s);
    s->kind = (int)f->frame_case;
    switch (f->frame_case) {
    case DISTSUP__V1__CHILD_FRAME__FRAME_TERMINATE:
        snprintf(s->text, sizeof s->text, "%s", f->terminate->reason ? f->terminate->reason : "");
        break;
    case DISTSUP__V1__CHILD_FRAME__FRAME_INIT:
        snprintf(s->text, sizeof s->text, "%s", f->init->name);
        snprintf(s->id, sizeof s->id, "%s", f->init->id);
        snprintf(s->node, sizeof s->node, "%s", f->init->node);
        snprintf(s->supervisor, sizeof s->supervisor, "%s", f->init->supervisor);
        copy_bytes(s->init, &s->init_len, f->init->init);
        copy_bytes(s->state, &s->state_len, f->init->state);
        break;
    case DISTSUP__V1__CHILD_FRAME__FRAME_CALL:
        s->ref = f->call->ref;
        copy_text(s->text, sizeof s->text, f->call->payload);
        break;
    case DISTSUP__V1__CHILD_FRAME__FRAME_CAST: copy_text(s->text, sizeof s->text, f->cast->payload); break;
    case DISTSUP__V1__CHILD_FRAME__FRAME_INFO: copy_text(s->text, sizeof s->text, f->info->payload); break;
    default: break;
    }
    return 0;
}

static void f_signal(struct child *ch, int sig)
{
    (void)ch;
    assert_true(F.n_sigs < MAXREC);
    F.sigs[F.n_sigs++] = sig;
}

static void f_kill(struct child *ch, const char *why)
{
    (void)ch;
    F.kills++;
    snprintf(F.kill_why, sizeof F.kill_why, "%s", why);
}

static int f_stdin_open(const struct child *ch)
{
    (void)ch;
    return F.stdin_open;
}

static const struct sv_proc_ops fake_ops = {f_spawn, f_send, f_signal, f_kill, f_stdin_open, NULL, NULL};

static uint64_t h_now(void *arg)
{
    assert_ptr_equal(arg, &F);
    return F.now;
}

static void h_tick(void *arg, struct child *ch)
{
    assert_ptr_equal(arg, &F);
    assert_non_null(ch); /* the child that needs the tick */
    F.ticks++;
}

static void h_event(void *arg, struct child *ch, Distsup__V1__EventKind kind, int code, int sig, const char *reason)
{
    assert_ptr_equal(arg, &F);
    assert_true(F.n_ev < MAXREC);
    struct ev *e = &F.ev[F.n_ev++];
    e->kind = (int)kind;
    e->code = code;
    e->sig = sig;
    e->ch = ch;
    snprintf(e->reason, sizeof e->reason, "%s", reason ? reason : "");
}

static void h_persist(void *arg, struct child *ch)
{
    (void)arg, (void)ch;
    F.persists++;
}

/* As the reactor does: mark it dead; it is freed later (here: by the test).  Its
 * TerminateChild requests are the remover's to answer once the removal is on disk:
 * here at once, with the exit the machine recorded. */
static void h_remove(void *arg, struct child *ch, const char *reason)
{
    (void)arg;
    assert_false(ch->dead);
    ch->dead = 1;
    F.removes++;
    F.removed = ch;
    F.waiting_at_remove = ch->term_waiters != NULL;
    snprintf(F.remove_reason, sizeof F.remove_reason, "%s", reason ? reason : "");
    sv_answer_terminate(ch, ch->term_code, ch->term_sig);
}

static void h_moved_out(void *arg, struct child *ch)
{
    (void)arg;
    F.moved++;
    F.moved_child = ch;
}

static void h_answer_durable(void *arg, struct child *ch)
{
    assert_ptr_equal(arg, &F);
    F.durables++;
    F.durable_child = ch;
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    F.now = 100000; /* never 0: a timer at 0 means none */
    F.next_pid = FAKE_PID0;
    F.stdin_open = 1;
    memset(&CFG, 0, sizeof CFG);
    snprintf(CFG.name, sizeof CFG.name, "sup1");
    CFG.max_restarts = 3;
    CFG.max_seconds = 5;
    CFG.backoff_ms = 100;
    CFG.backoff_max_ms = 2000;
    CFG.start_timeout_ms = 1000;
    struct sv_hooks hooks = {&F, h_now, h_tick, h_event, h_persist, h_remove, h_moved_out, NULL, NULL};
    sv_init(&SV, &fake_ops, &hooks, NULL, "node1", "/nonexistent", 0xabc);
    return 0;
}

/* ---------- children ---------- */

struct spec_opts {
    Distsup__V1__Protocol protocol;
    Distsup__V1__RestartType restart;
    uint32_t shutdown_ms;
    int kill_immediately;
    const char *init;
};

/* A spec as the core has it: unpacked, so that sv_child_free can free it. */
static Distsup__V1__ChildSpec *make_spec(const char *name, const struct spec_opts *o)
{
    Distsup__V1__ChildSpec s = DISTSUP__V1__CHILD_SPEC__INIT;
    char *argv[] = {"/bin/true"};
    s.name = (char *)name;
    s.n_argv = 1;
    s.argv = argv;
    s.protocol = o->protocol;
    s.restart = o->restart;
    s.shutdown_ms = o->shutdown_ms;
    s.kill_immediately = o->kill_immediately;
    if (o->init) {
        s.init.data = (uint8_t *)o->init;
        s.init.len = strlen(o->init);
    }
    size_t len = distsup__v1__child_spec__get_packed_size(&s);
    uint8_t *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    distsup__v1__child_spec__pack(&s, buf);
    Distsup__V1__ChildSpec *u = distsup__v1__child_spec__unpack(NULL, len, buf);
    free(buf);
    assert_non_null(u);
    return u;
}

static struct child *new_child(const char *name, Distsup__V1__Protocol protocol, Distsup__V1__RestartType restart)
{
    struct spec_opts o = {.protocol = protocol, .restart = restart, .shutdown_ms = 4000};
    struct child *ch = sv_child_new(&SV, make_spec(name, &o), &CFG, &F);
    assert_non_null(ch);
    assert_int_equal(ch->st, SV_IDLE);
    return ch;
}

#define FRAMES DISTSUP__V1__PROTOCOL__FRAMES
#define NONE DISTSUP__V1__PROTOCOL__NONE
#define PERMANENT DISTSUP__V1__RESTART_TYPE__PERMANENT
#define TRANSIENT DISTSUP__V1__RESTART_TYPE__TRANSIENT
#define TEMPORARY DISTSUP__V1__RESTART_TYPE__TEMPORARY
#define EV_START DISTSUP__V1__EVENT_KIND__PROCESS_START
#define EV_STOP DISTSUP__V1__EVENT_KIND__PROCESS_STOP
#define EV_RESTART DISTSUP__V1__EVENT_KIND__PROCESS_RESTART
#define EV_FAILED DISTSUP__V1__EVENT_KIND__PROCESS_FAILED

static void start_ok(struct child *ch)
{
    char err[256] = "";
    assert_int_equal(sv_start(&SV, ch, err, sizeof err), 0);
    assert_true(ch->proc.pid > 0);
}

/* A RUNNING child: FRAMES children get their Ready. */
static struct child *running_child(const char *name, Distsup__V1__Protocol protocol, Distsup__V1__RestartType restart)
{
    struct child *ch = new_child(name, protocol, restart);
    start_ok(ch);
    if (protocol == FRAMES) {
        Distsup__V1__Ready r = DISTSUP__V1__READY__INIT;
        Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
        f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_READY;
        f.ready = &r;
        sv_frame(&SV, ch, &f);
    }
    assert_int_equal(ch->st, SV_RUNNING);
    return ch;
}

/* Forget what was recorded so far. */
static void clear_records(void)
{
    F.ticks = 0;
    F.n_sent = F.n_sigs = F.kills = F.n_ev = 0;
    F.persists = F.removes = F.moved = 0;
    F.waiting_at_remove = 0;
    F.spawns = 0;
    F.removed = F.moved_child = NULL;
}

/* ---------- frames from the child ---------- */

static void send_ready(struct child *ch)
{
    Distsup__V1__Ready r = DISTSUP__V1__READY__INIT;
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_READY;
    f.ready = &r;
    sv_frame(&SV, ch, &f);
}

static void send_reply(struct child *ch, uint64_t ref, const char *payload, const char *error, uint32_t code)
{
    Distsup__V1__Reply r = DISTSUP__V1__REPLY__INIT;
    r.ref = ref;
    if (payload) {
        r.payload.data = (uint8_t *)payload;
        r.payload.len = strlen(payload);
    }
    r.error = (char *)(error ? error : "");
    r.code = code;
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_REPLY;
    f.reply = &r;
    sv_frame(&SV, ch, &f);
}

static void send_state(struct child *ch, const char *bytes)
{
    Distsup__V1__StateFrame s = DISTSUP__V1__STATE_FRAME__INIT;
    s.state.len = strlen(bytes);
    s.state.data = s.state.len ? (uint8_t *)bytes : NULL; /* as protobuf-c unpacks an empty one */
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_STATE;
    f.state = &s;
    sv_frame(&SV, ch, &f);
}

/* ---------- answers ---------- */

struct ans {
    unsigned n;
    int code;
    char msg[1024];
    /* StartChild */
    int state, os_pid;
    uint64_t incarnation;
    uint32_t restarts;
    char name[64], id[320], node[64], supervisor[64];
    /* Call */
    char payload[256];
    /* TerminateChild */
    int exit_code, sig;
};

static void on_start(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct ans *a = arg;
    a->n++;
    a->code = code;
    snprintf(a->msg, sizeof a->msg, "%s", message ? message : "");
    if (code == GRPC_STATUS_OK) {
        assert_non_null(reply);
        const Distsup__V1__StartChildResponse *r = (const void *)reply;
        assert_non_null(r->child);
        a->state = r->child->state;
        a->os_pid = r->child->os_pid;
        a->incarnation = r->child->incarnation;
        a->restarts = r->child->restarts;
        snprintf(a->name, sizeof a->name, "%s", r->child->name);
        snprintf(a->id, sizeof a->id, "%s", r->child->id);
        snprintf(a->node, sizeof a->node, "%s", r->child->node);
        snprintf(a->supervisor, sizeof a->supervisor, "%s", r->child->supervisor);
    } else {
        assert_null(reply);
    }
}

static void on_call(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct ans *a = arg;
    a->n++;
    a->code = code;
    snprintf(a->msg, sizeof a->msg, "%s", message ? message : "");
    if (code == GRPC_STATUS_OK) {
        assert_non_null(reply);
        const Distsup__V1__CallResponse *r = (const void *)reply;
        copy_text(a->payload, sizeof a->payload, r->payload);
        snprintf(a->node, sizeof a->node, "%s", r->node);
    } else {
        assert_null(reply);
    }
}

static void on_term(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct ans *a = arg;
    a->n++;
    a->code = code;
    snprintf(a->msg, sizeof a->msg, "%s", message ? message : "");
    assert_int_equal(code, GRPC_STATUS_OK);
    const Distsup__V1__TerminateChildResponse *r = (const void *)reply;
    snprintf(a->name, sizeof a->name, "%s", r->name);
    a->exit_code = r->exit_code;
    a->sig = r->signal;
}

static void wait_terminate(struct child *ch, struct ans *a)
{
    struct waiter *w = calloc(1, sizeof *w);
    assert_non_null(w);
    w->done = on_term;
    w->arg = a;
    w->next = ch->term_waiters;
    ch->term_waiters = w;
}

static void call(struct child *ch, const char *payload, uint64_t deadline, struct ans *a)
{
    ProtobufCBinaryData p = {strlen(payload), (uint8_t *)payload};
    assert_int_equal(sv_call(&SV, ch, p, deadline, on_call, a), 0);
}

/* ---------- "nothing happened" ---------- */

struct snap {
    enum sv_state st;
    enum sv_why why;
    uint64_t timer_at, kill_at, incarnation;
    uint32_t restarts;
    int pid;
    unsigned n_calls;
    char id[320];
    size_t live;
};

static struct snap take(const struct child *ch)
{
    struct snap s = {ch->st,       ch->why,      ch->timer_at, ch->kill_at, ch->incarnation,
                     ch->restarts, ch->proc.pid, ch->n_calls,  "",          SV.live};
    snprintf(s.id, sizeof s.id, "%s", ch->id);
    return s;
}

static void assert_unchanged(const struct child *ch, const struct snap *s)
{
    assert_int_equal(ch->st, s->st);
    assert_int_equal(ch->why, s->why);
    assert_int_equal(ch->timer_at, s->timer_at);
    assert_int_equal(ch->kill_at, s->kill_at);
    assert_int_equal(ch->incarnation, s->incarnation);
    assert_int_equal(ch->restarts, s->restarts);
    assert_int_equal(ch->proc.pid, s->pid);
    assert_int_equal(ch->n_calls, s->n_calls);
    assert_string_equal(ch->id, s->id);
    assert_int_equal(SV.live, s->live);
    assert_false(ch->dead);
}

static void assert_nothing_recorded(void)
{
    assert_int_equal(F.n_sent, 0);
    assert_int_equal(F.n_sigs, 0);
    assert_int_equal(F.kills, 0);
    assert_int_equal(F.n_ev, 0);
    assert_int_equal(F.persists, 0);
    assert_int_equal(F.removes, 0);
    assert_int_equal(F.moved, 0);
    assert_int_equal(F.spawns, 0);
}

/* The events that do nothing in ch's state (READY, EXIT, TIMEOUT, STOP as listed),
 * each checked to change nothing and record nothing. */
enum { NOP_READY = 1, NOP_EXIT = 2, NOP_TIMEOUT = 4, NOP_START = 8, NOP_STOP = 16 };

static void assert_nops(struct child *ch, unsigned which)
{
    struct snap s = take(ch);
    clear_records();
    if (which & NOP_START) { /* sv_start refuses outside IDLE and BACKOFF */
        char err[256] = "";
        assert_int_equal(sv_start(&SV, ch, err, sizeof err), -1);
        assert_non_null(strstr(err, "not idle"));
        assert_unchanged(ch, &s);
        assert_nothing_recorded();
    }
    if (which & NOP_READY) {
        send_ready(ch);
        assert_unchanged(ch, &s);
        assert_nothing_recorded();
    }
    if (which & NOP_EXIT) {
        sv_exited(&SV, ch, EXITED(1));
        assert_unchanged(ch, &s);
        assert_nothing_recorded();
    }
    if (which & NOP_STOP) {
        for (enum sv_why w = SV_WHY_PARK; w <= SV_WHY_REMOVE; w++) {
            assert_int_equal(sv_stop(&SV, ch, w, "nop"), s.pid > 0);
            assert_unchanged(ch, &s);
            assert_nothing_recorded();
        }
    }
    if (which & NOP_TIMEOUT) { /* a timer firing here: only the timer is spent */
        uint64_t saved = ch->timer_at;
        ch->timer_at = F.now;
        sv_tick(&SV, ch, F.now);
        assert_int_equal(ch->timer_at, 0);
        ch->timer_at = saved;
        assert_unchanged(ch, &s);
        assert_nothing_recorded();
    }
}

/* ---------- START ---------- */

/* IDLE x START, FRAMES: STARTING, its Init frame (init bytes, handed-off state), the
 * Ready deadline armed. */
static void test_start_frames(void **state)
{
    (void)state;
    struct spec_opts o = {.protocol = FRAMES, .restart = PERMANENT, .init = "init-bytes"};
    struct child *ch = sv_child_new(&SV, make_spec("a", &o), &CFG, &F);
    assert_non_null(ch);
    assert_int_equal(ch->incarnation, 0);
    ch->state_blob = malloc(5);
    memcpy(ch->state_blob, "state", 5);
    ch->state_len = 5;
    char err[256] = "";
    assert_int_equal(sv_start(&SV, ch, err, sizeof err), 0);
    assert_int_equal(ch->st, SV_STARTING);
    assert_int_equal(sv_api_state(ch), DISTSUP__V1__CHILD_STATE__STARTING);
    assert_int_equal(ch->proc.pid, FAKE_PID0);
    assert_int_equal(ch->incarnation, 1);
    assert_string_equal(ch->id, "node1/abc.1");
    assert_int_equal(ch->timer_at, 100000 + 1000);
    assert_true(F.ticks >= 1);
    assert_int_equal(SV.live, 1);
    assert_int_equal(F.n_ev, 0); /* PROCESS_START comes with Ready */
    assert_int_equal(F.n_sent, 1);
    struct sent *s = &F.sent[0];
    assert_int_equal(s->kind, DISTSUP__V1__CHILD_FRAME__FRAME_INIT);
    assert_string_equal(s->text, "a");
    assert_string_equal(s->node, "node1");
    assert_string_equal(s->supervisor, "sup1");
    assert_string_equal(s->id, "node1/abc.1");
    assert_int_equal(s->init_len, 10);
    assert_memory_equal(s->init, "init-bytes", 10);
    assert_int_equal(s->state_len, 5);
    assert_memory_equal(s->state, "state", 5);

    /* STARTING x START: refused, nothing else */
    assert_nops(ch, NOP_START);

    /* without a handed-off state its Init carries none */
    struct child *b = new_child("b", FRAMES, PERMANENT);
    clear_records();
    start_ok(b);
    assert_int_equal(F.n_sent, 1);
    assert_int_equal(F.sent[0].state_len, 0);
    assert_int_equal(F.sent[0].init_len, 0);
    assert_string_equal(b->id, "node1/abc.2");
    assert_int_equal(SV.live, 2);
    sv_child_free(ch);
    sv_child_free(b);
}

/* IDLE x START, NONE: RUNNING at once, PROCESS_START "started", no frame, no timer. */
static void test_start_none(void **state)
{
    (void)state;
    struct child *ch = new_child("plain", NONE, PERMANENT);
    start_ok(ch);
    assert_int_equal(ch->st, SV_RUNNING);
    assert_int_equal(sv_api_state(ch), DISTSUP__V1__CHILD_STATE__RUNNING);
    assert_int_equal(ch->timer_at, 0);
    assert_int_equal(ch->incarnation, 1);
    assert_int_equal(F.n_sent, 0);
    assert_int_equal(F.n_ev, 1);
    assert_int_equal(F.ev[0].kind, EV_START);
    assert_string_equal(F.ev[0].reason, "started");
    assert_ptr_equal(F.ev[0].ch, ch);
    assert_int_equal(SV.live, 1);
    /* RUNNING x START, READY, TIMEOUT: nothing */
    assert_nops(ch, NOP_START | NOP_READY | NOP_TIMEOUT);
    sv_child_free(ch);
}

/* A spawn that fails: -1 with the reason, nothing changed (state, incarnation, live). */
static void test_start_spawn_failure(void **state)
{
    (void)state;
    struct child *ch = new_child("nope", FRAMES, PERMANENT);
    F.spawn_fail = 1;
    char err[256] = "";
    assert_int_equal(sv_start(&SV, ch, err, sizeof err), -1);
    assert_string_equal(err, "fake: cannot spawn");
    assert_int_equal(ch->st, SV_IDLE);
    assert_int_equal(ch->incarnation, 0);
    assert_int_equal(ch->proc.pid, 0);
    assert_int_equal(ch->timer_at, 0);
    assert_int_equal(SV.live, 0);
    assert_int_equal(F.n_sent, 0);
    assert_int_equal(F.n_ev, 0);
    assert_int_equal(F.removes, 0);
    assert_int_equal(F.persists, 0);

    /* from BACKOFF likewise: still BACKOFF, its incarnation kept */
    F.spawn_fail = 0;
    start_ok(ch);
    sv_exited(&SV, ch, EXITED(1));
    assert_int_equal(ch->st, SV_BACKOFF);
    assert_int_equal(ch->incarnation, 1);
    clear_records();
    F.spawn_fail = 1;
    char id[sizeof ch->id];
    memcpy(id, ch->id, sizeof id);
    uint64_t timer = ch->timer_at;
    assert_int_equal(sv_start(&SV, ch, err, sizeof err), -1);
    assert_int_equal(ch->st, SV_BACKOFF);
    assert_int_equal(ch->incarnation, 1);
    assert_string_equal(ch->id, id);       /* the id of the process that last ran */
    assert_int_equal(ch->timer_at, timer); /* its restart is still due */
    assert_int_equal(ch->proc.pid, 0);
    assert_int_equal(SV.live, 0);
    assert_int_equal(F.n_ev, 0);
    sv_child_free(ch);
}

/* sv_start_or_retry on a failing spawn: an abnormal exit (code 127) under the restart
 * policy: BACKOFF while the bound allows, then FAILED; TEMPORARY: removed. */
static void test_start_or_retry_failure(void **state)
{
    (void)state;
    struct child *ch = new_child("flaky", FRAMES, PERMANENT);
    F.spawn_fail = 1;
    sv_start_or_retry(&SV, ch, "start");
    assert_int_equal(ch->st, SV_BACKOFF);
    assert_int_equal(sv_api_state(ch), DISTSUP__V1__CHILD_STATE__RESTARTING);
    assert_int_equal(ch->incarnation, 0);
    assert_int_equal(ch->restarts, 1);
    assert_int_equal(ch->timer_at, F.now); /* first restart: no delay */
    assert_int_equal(F.n_ev, 1);
    assert_int_equal(F.ev[0].kind, EV_RESTART);
    assert_int_equal(F.ev[0].code, 127);
    assert_int_equal(F.ev[0].sig, 0);
    assert_int_equal(F.persists, 1);
    assert_int_equal(SV.live, 0);

    /* BACKOFF x TIMEOUT with the spawn still failing: the next delays, then FAILED */
    static const uint64_t delays[] = {100, 200};
    for (int i = 0; i < 2; i++) {
        F.now = ch->timer_at;
        clear_records();
        assert_int_equal(sv_tick(&SV, ch, F.now), 1);
        assert_int_equal(ch->st, SV_BACKOFF);
        assert_int_equal(ch->timer_at, F.now + delays[i]);
        assert_int_equal(ch->restarts, 2 + i);
        assert_int_equal(F.n_ev, 1);
        assert_int_equal(F.ev[0].kind, EV_RESTART);
    }
    F.now = ch->timer_at;
    clear_records();
    assert_int_equal(sv_tick(&SV, ch, F.now), 0);
    assert_int_equal(ch->st, SV_FAILED);
    assert_int_equal(ch->timer_at, 0);
    assert_int_equal(F.n_ev, 1);
    assert_int_equal(F.ev[0].kind, EV_FAILED);
    assert_int_equal(F.ev[0].code, 127);
    assert_int_equal(F.persists, 1);
    assert_int_equal(SV.live, 0);
    assert_int_equal(ch->incarnation, 0);

    /* TEMPORARY: stays down, removed */
    struct child *t = new_child("once", FRAMES, TEMPORARY);
    clear_records();
    sv_start_or_retry(&SV, t, "start");
    assert_int_equal(F.removes, 1);
    assert_ptr_equal(F.removed, t);
    assert_int_equal(F.n_ev, 1);
    assert_int_equal(F.ev[0].kind, EV_STOP);
    assert_int_equal(F.ev[0].code, 127);
    assert_int_equal(t->restarts, 0);

    /* a spawn that works: just a start */
    F.spawn_fail = 0;
    struct child *ok = new_child("fine", NONE, PERMANENT);
    clear_records();
    sv_start_or_retry(&SV, ok, "start");
    assert_int_equal(ok->st, SV_RUNNING);
    assert_int_equal(ok->restarts, 0);
    assert_int_equal(SV.live, 1);
    sv_child_free(ch);
    sv_child_free(t);
    sv_child_free(ok);
}

/* ---------- READY ---------- */

/* A StartChild is answered only once what was stored is on disk: READY hands it to
 * the core (answer_durable), which answers after its commit (sv_answer_start_stored);
 * a failed commit fails the start INTERNAL. */
static void test_ready_answers_after_durable(void **state)
{
    (void)state;
    SV.hooks.answer_durable = h_answer_durable; /* the other tests answer at once (NULL) */
    struct child *ch = new_child("d", FRAMES, PERMANENT);
    start_ok(ch);
    struct ans a = {0};
    ch->start_done = on_start;
    ch->start_arg = &a;
    F.durables = 0;
    send_ready(ch);
    assert_int_equal(ch->st, SV_RUNNING);
    assert_int_equal(F.durables, 1);
    assert_ptr_equal(F.durable_child, ch);
    assert_int_equal(a.n, 0); /* not yet: the commit comes first */
    sv_answer_start_stored(&SV, ch, 1);
    assert_int_equal(a.n, 1);
    assert_int_equal(a.code, GRPC_STATUS_OK);
    assert_int_equal(a.state, DISTSUP__V1__CHILD_STATE__RUNNING);
    sv_answer_start_stored(&SV, ch, 1); /* answered once only */
    assert_int_equal(a.n, 1);

    struct child *bad = new_child("e", FRAMES, PERMANENT);
    start_ok(bad);
    struct ans b = {0};
    bad->start_done = on_start;
    bad->start_arg = &b;
    send_ready(bad);
    sv_answer_start_stored(&SV, bad, 0);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.code, GRPC_STATUS_INTERNAL);
    assert_non_null(strstr(b.msg, "database"));
    assert_null(bad->start_done);
    sv_child_free(ch);
    sv_child_free(bad);
}

/* STARTING x READY: RUNNING, PROCESS_START "ready", the StartChild answered OK. */
static void test_ready(void **state)
{
    (void)state;
    struct child *ch = new_child("r", FRAMES, PERMANENT);
    start_ok(ch);
    struct ans a = {0};
    ch->start_done = on_start;
    ch->start_arg = &a;
    clear_records();
    F.now += 10;
    send_ready(ch);
    assert_int_equal(ch->st, SV_RUNNING);
    assert_int_equal(ch->timer_at, 0);
    assert_int_equal(F.n_ev, 1);
    assert_int_equal(F.ev[0].kind, EV_START);
    assert_string_equal(F.ev[0].reason, "ready");
    assert_int_equal(a.n, 1);
    assert_int_equal(a.code, GRPC_STATUS_OK);
    assert_int_equal(a.state, DISTSUP__V1__CHILD_STATE__RUNNING);
    assert_int_equal(a.os_pid, ch->proc.pid);
    assert_int_equal(a.incarnation, 1);
    assert_int_equal(a.restarts, 0);
    assert_string_equal(a.name, "r");
    assert_string_equal(a.id, ch->id);
    assert_string_equal(a.node, "node1");
    assert_string_equal(a.supervisor, "sup1");
    assert_null(ch->start_done);
    /* its Ready deadline is gone: no timeout later */
    F.now += 100000;
    clear_records();
    assert_int_equal(sv_tick(&SV, ch, F.now), 0);
    assert_nothing_recorded();
    /* a second Ready (RUNNING x READY): nothing, and no second answer */
    send_ready(ch);
    assert_int_equal(a.n, 1);
    assert_nops(ch, NOP_READY);
    sv_child_free(ch);
}

/* READY anywhere but STARTING: nothing (IDLE, BACKOFF, FAILED, the stopping states). */
static void test_ready_elsewhere_ignored(void **state)
{
    (void)state;
    struct child *idle = new_child("idle", FRAMES, PERMANENT);
    assert_nops(idle, NOP_READY);

    struct child *b = running_child("b", FRAMES, PERMANENT);
    sv_exited(&SV, b, EXITED(1));
    assert_int_equal(b->st, SV_BACKOFF);
    assert_nops(b, NOP_READY);

    /* stopping while a StartChild waits: its Ready does not answer it */
    struct child *s = new_child("s", FRAMES, PERMANENT);
    start_ok(s);
    struct ans a = {0};
    s->start_done = on_start;
    s->start_arg = &a;
    sv_stop(&SV, s, SV_WHY_PARK, "bye");
    assert_int_equal(s->st, SV_STOP_FRAME);
    assert_nops(s, NOP_READY);
    assert_int_equal(a.n, 0);
    F.now = s->timer_at;
    sv_tick(&SV, s, F.now);
    assert_int_equal(s->st, SV_STOP_TERM);
    assert_nops(s, NOP_READY);
    F.now = s->timer_at;
    sv_tick(&SV, s, F.now);
    assert_int_equal(s->st, SV_STOP_KILL);
    assert_nops(s, NOP_READY);
    assert_int_equal(a.n, 0);
    s->start_done = NULL;

    sv_child_free(idle);
    sv_child_free(b);
    sv_child_free(s);
}

/* STARTING x TIMEOUT: killed; its exit fails the StartChild with DEADLINE_EXCEEDED
 * and removes it (no restart, whatever its restart type). */
static void test_ready_timeout(void **state)
{
    (void)state;
    struct child *ch = new_child("slow", FRAMES, PERMANENT);
    start_ok(ch);
    struct ans a = {0};
    ch->start_done = on_start;
    ch->start_arg = &a;
    uint64_t deadline = ch->timer_at;
    assert_int_equal(deadline, F.now + CFG.start_timeout_ms);
    clear_records();
    assert_int_equal(sv_tick(&SV, ch, deadline - 1), 1);
    assert_nothing_recorded();
    F.now = deadline;
    assert_int_equal(sv_tick(&SV, ch, F.now), 0);
    assert_int_equal(F.kills, 1);
    assert_string_equal(F.kill_why, "no Ready frame in time");
    assert_int_equal(ch->st, SV_STARTING);
    assert_int_equal(ch->timer_at, 0);
    assert_int_equal(a.n, 0); /* answered when it has been reaped */
    assert_int_equal(F.n_ev, 0);
    assert_int_equal(F.removes, 0);

    sv_exited(&SV, ch, KILLED(SIGKILL));
    assert_int_equal(a.n, 1);
    assert_int_equal(a.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_non_null(strstr(a.msg, "start_timeout_ms"));
    assert_non_null(strstr(a.msg, "1000ms"));
    assert_null(ch->start_done);
    assert_int_equal(F.n_ev, 1);
    assert_int_equal(F.ev[0].kind, EV_STOP);
    assert_int_equal(F.ev[0].sig, SIGKILL);
    assert_int_equal(F.removes, 1);
    assert_ptr_equal(F.removed, ch);
    assert_string_equal(F.remove_reason, "did not start");
    assert_int_equal(ch->restarts, 0);
    assert_int_equal(F.persists, 0);
    assert_int_equal(SV.live, 0);
    assert_int_equal(sv_tick(&SV, ch, F.now + 100000), 0);
    sv_child_free(ch);
}

/* A StartChild whose own deadline (answer_by) comes before start_timeout_ms: the Ready
 * wait ends early enough that the answer, DEADLINE_EXCEEDED with a hint at protocol
 * NONE, reaches the client before its deadline; later incarnations wait as usual. */
static void test_ready_wait_ends_before_the_request_deadline(void **state)
{
    (void)state;
    CFG.start_timeout_ms = 10000;
    struct child *ch = new_child("mute", FRAMES, PERMANENT);
    ch->answer_by = F.now + 2000;
    start_ok(ch);
    struct ans a = {0};
    ch->start_done = on_start;
    ch->start_arg = &a;
    assert_true(ch->timer_at < F.now + 2000);        /* before the client's deadline */
    assert_true(ch->timer_at >= F.now + 2000 - 200); /* and not much before */
    assert_int_equal(ch->answer_by, 0);              /* used by this start only */
    F.now = ch->timer_at;
    assert_int_equal(sv_tick(&SV, ch, F.now), 0);
    assert_int_equal(F.kills, 1);
    sv_exited(&SV, ch, KILLED(SIGKILL));
    assert_int_equal(a.n, 1);
    assert_int_equal(a.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_non_null(strstr(a.msg, "no Ready"));
    assert_non_null(strstr(a.msg, "deadline"));
    assert_non_null(strstr(a.msg, "protocol NONE"));
    assert_int_equal(F.removes, 1);
    sv_child_free(ch);

    /* a deadline after start_timeout_ms changes nothing */
    struct child *late = new_child("late", FRAMES, PERMANENT);
    late->answer_by = F.now + 60000;
    start_ok(late);
    assert_int_equal(late->timer_at, F.now + CFG.start_timeout_ms);
    late->proc.pid = 0;
    sv_child_free(late);
    CFG.start_timeout_ms = 1000;
}

/* A restarted incarnation (nobody waiting for its Ready) that misses its Ready: killed,
 * and its exit is an ordinary abnormal exit (restarted). */
static void test_ready_timeout_without_waiter(void **state)
{
    (void)state;
    struct child *ch = new_child("slow2", FRAMES, PERMANENT);
    start_ok(ch);
    F.now = ch->timer_at;
    sv_tick(&SV, ch, F.now);
    assert_int_equal(F.kills, 1);
    clear_records();
    sv_exited(&SV, ch, KILLED(SIGKILL));
    assert_int_equal(ch->st, SV_BACKOFF);
    assert_int_equal(F.removes, 0);
    assert_int_equal(F.n_ev, 1);
    assert_int_equal(F.ev[0].kind, EV_RESTART);
    assert_int_equal(F.ev[0].sig, SIGKILL);
    assert_int_equal(F.ev[0].code, -1);
    F.now = ch->timer_at;
    clear_records();
    sv_tick(&SV, ch, F.now);
    assert_int_equal(ch->st, SV_STARTING);
    assert_int_equal(ch->start_timed_out, 0); /* a new incarnation starts afresh */
    assert_int_equal(ch->incarnation, 2);
    sv_child_free(ch);
}

/* STARTING x EXIT with a StartChild waiting: FAILED_PRECONDITION, PROCESS_STOP, removed. */
static void test_exit_before_ready(void **state)
{
    (void)state;
    struct child *ch = new_child("crash", FRAMES, PERMANENT);
    start_ok(ch);
    struct ans a = {0}, c = {0};
    ch->start_done = on_start;
    ch->start_arg = &a;
    call(ch, "early", F.now + 5000, &c);
    clear_records();
    sv_exited(&SV, ch, EXITED(3));
    assert_int_equal(a.n, 1);
    assert_int_equal(a.code, GRPC_STATUS_FAILED_PRECONDITION);
    assert_non_null(strstr(a.msg, "exited with code 3"));
    assert_non_null(strstr(a.msg, "crash"));
    assert_int_equal(c.n, 1);
    assert_int_equal(c.code, GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(F.n_ev, 1);
    assert_int_equal(F.ev[0].kind, EV_STOP);
    assert_int_equal(F.ev[0].code, 3);
    assert_int_equal(F.removes, 1);
    assert_int_equal(ch->restarts, 0);
    assert_int_equal(SV.live, 0);
    sv_child_free(ch);

    /* without a waiter (a restarted incarnation): the restart policy */
    struct child *r = new_child("crash2", FRAMES, PERMANENT);
    start_ok(r);
    clear_records();
    sv_exited(&SV, r, EXITED(3));
    assert_int_equal(r->st, SV_BACKOFF);
    assert_int_equal(F.removes, 0);
    assert_int_equal(F.ev[0].kind, EV_RESTART);
    sv_child_free(r);
}

/* ---------- exits by restart type ---------- */

static void expect_restart(struct child *ch, int status, int code, int sig)
{
    clear_records();
    uint64_t inc = ch->incarnation;
    sv_exited(&SV, ch, status);
    assert_int_equal(ch->st, SV_BACKOFF);
    assert_int_equal(ch->proc.pid, 0);
    assert_int_equal(ch->incarnation, inc);
    assert_int_equal(F.n_ev, 1);
    assert_int_equal(F.ev[0].kind, EV_RESTART);
    assert_int_equal(F.ev[0].code, code);
    assert_int_equal(F.ev[0].sig, sig);
    assert_int_equal(F.removes, 0);
    assert_int_equal(F.persists, 1);
    assert_true(F.ticks >= 1);
    assert_true(ch->timer_at != 0);
}

static void expect_removed(struct child *ch, int status, int code, int sig)
{
    clear_records();
    uint32_t restarts = ch->restarts;
    sv_exited(&SV, ch, status);
    assert_int_equal(F.n_ev, 1);
    assert_int_equal(F.ev[0].kind, EV_STOP);
    assert_int_equal(F.ev[0].code, code);
    assert_int_equal(F.ev[0].sig, sig);
    assert_int_equal(F.removes, 1);
    assert_ptr_equal(F.removed, ch);
    assert_string_equal(F.remove_reason, F.ev[0].reason);
    assert_int_equal(ch->restarts, restarts);
    assert_int_equal(F.persists, 0);
}

static void test_exit_permanent(void **state)
{
    (void)state;
    struct child *ch = running_child("perm", NONE, PERMANENT);
    expect_restart(ch, EXITED(0), 0, 0);
    assert_string_equal(F.ev[0].reason, "exited with code 0");
    F.now = ch->timer_at;
    sv_tick(&SV, ch, F.now);
    assert_int_equal(ch->st, SV_RUNNING);
    expect_restart(ch, KILLED(SIGSEGV), -1, SIGSEGV);
    assert_non_null(strstr(F.ev[0].reason, "killed by signal 11"));
    F.now = ch->timer_at;
    sv_tick(&SV, ch, F.now);
    expect_restart(ch, EXITED(2), 2, 0);
    assert_int_equal(ch->restarts, 3);
    sv_child_free(ch);
}

static void test_exit_transient(void **state)
{
    (void)state;
    struct child *ch = running_child("trans", FRAMES, TRANSIENT);
    expect_restart(ch, EXITED(1), 1, 0);
    F.now = ch->timer_at;
    sv_tick(&SV, ch, F.now);
    send_ready(ch);
    expect_restart(ch, KILLED(SIGTERM), -1, SIGTERM);
    F.now = ch->timer_at;
    sv_tick(&SV, ch, F.now);
    send_ready(ch);
    expect_removed(ch, EXITED(0), 0, 0);
    assert_int_equal(SV.live, 0);
    sv_child_free(ch);
}

static void test_exit_temporary(void **state)
{
    (void)state;
    struct child *a = running_child("tmp1", FRAMES, TEMPORARY);
    expect_removed(a, EXITED(1), 1, 0);
    struct child *b = running_child("tmp2", NONE, TEMPORARY);
    expect_removed(b, KILLED(SIGKILL), -1, SIGKILL);
    struct child *c = running_child("tmp3", NONE, TEMPORARY);
    expect_removed(c, EXITED(0), 0, 0);
    assert_int_equal(SV.live, 0);
    sv_child_free(a);
    sv_child_free(b);
    sv_child_free(c);
}

/* ---------- restart bounds and backoff ---------- */

/* 3 restarts in 5 s, backoff 100: delays 0, 100, 200; the 4th exit within the window
 * is FAILED; BACKOFF x TIMEOUT starts a new incarnation each time. */
static void test_restart_bound_and_backoff(void **state)
{
    (void)state;
    struct child *ch = running_child("bounded", FRAMES, PERMANENT);
    static const uint64_t delays[] = {0, 100, 200};
    for (int i = 0; i < 3; i++) {
        F.now += 10;
        char old_id[320];
        snprintf(old_id, sizeof old_id, "%s", ch->id);
        uint64_t inc = ch->incarnation;
        expect_restart(ch, EXITED(1), 1, 0);
        assert_int_equal(ch->timer_at, F.now + delays[i]);
        assert_int_equal(ch->restarts, (uint32_t)i + 1);
        assert_int_equal(sv_api_state(ch), DISTSUP__V1__CHILD_STATE__RESTARTING);
        /* BACKOFF x READY, EXIT: nothing */
        assert_nops(ch, NOP_READY | NOP_EXIT);
        if (delays[i]) { /* not yet */
            clear_records();
            assert_int_equal(sv_tick(&SV, ch, ch->timer_at - 1), 1);
            assert_nothing_recorded();
            assert_int_equal(ch->st, SV_BACKOFF);
        }
        F.now = ch->timer_at;
        clear_records();
        assert_int_equal(sv_tick(&SV, ch, F.now), 1); /* the Ready deadline now */
        assert_int_equal(ch->st, SV_STARTING);
        assert_int_equal(ch->incarnation, inc + 1);
        assert_string_not_equal(ch->id, old_id);
        assert_int_equal(ch->proc.pid, FAKE_PID0 + i + 1);
        assert_int_equal(F.spawns, 1);
        assert_int_equal(F.n_sent, 1);
        assert_int_equal(F.sent[0].kind, DISTSUP__V1__CHILD_FRAME__FRAME_INIT);
        assert_int_equal(ch->timer_at, F.now + CFG.start_timeout_ms);
        send_ready(ch);
        assert_int_equal(ch->st, SV_RUNNING);
    }
    F.now += 10;
    clear_records();
    sv_exited(&SV, ch, EXITED(1));
    assert_int_equal(ch->st, SV_FAILED);
    assert_int_equal(sv_api_state(ch), DISTSUP__V1__CHILD_STATE__FAILED);
    assert_int_equal(ch->proc.pid, 0);
    assert_int_equal(ch->timer_at, 0);
    assert_int_equal(ch->restarts, 3);
    assert_int_equal(F.persists, 1);
    assert_int_equal(F.n_ev, 1);
    assert_int_equal(F.ev[0].kind, EV_FAILED);
    assert_int_equal(F.ev[0].code, 1);
    assert_non_null(strstr(F.ev[0].reason, "exited with code 1"));
    assert_non_null(strstr(F.ev[0].reason, "restart bound reached (3 restarts within 5s)"));
    assert_int_equal(F.removes, 0);
    assert_int_equal(SV.live, 0);
    assert_int_equal(sv_tick(&SV, ch, F.now + 1000000), 0);
    /* FAILED x everything: nothing (sv_stop returns 0: nothing runs) */
    assert_nops(ch, NOP_START | NOP_READY | NOP_EXIT | NOP_TIMEOUT | NOP_STOP);
    sv_child_free(ch);
}

/* Exits further apart than max_seconds never reach the bound; each restarts at once. */
static void test_spread_exits_keep_restarting(void **state)
{
    (void)state;
    struct child *ch = running_child("steady", NONE, PERMANENT);
    for (int i = 0; i < 10; i++) {
        F.now += 6000;
        expect_restart(ch, EXITED(1), 1, 0);
        assert_int_equal(ch->timer_at, F.now); /* delay 0 every time */
        sv_tick(&SV, ch, F.now);
        assert_int_equal(ch->st, SV_RUNNING);
    }
    assert_int_equal(ch->restarts, 10);
    assert_int_equal(ch->incarnation, 11);
    /* 2 s after the last restart it is still in the window: the next waits 100 ms */
    F.now += 2000;
    expect_restart(ch, EXITED(1), 1, 0);
    assert_int_equal(ch->timer_at, F.now + 100);
    sv_child_free(ch);
}

/* max_restarts 0: the first exit is FAILED. */
static void test_max_restarts_zero(void **state)
{
    (void)state;
    CFG.max_restarts = 0;
    struct child *ch = running_child("never", NONE, PERMANENT);
    clear_records();
    sv_exited(&SV, ch, EXITED(1));
    assert_int_equal(ch->st, SV_FAILED);
    assert_int_equal(F.ev[0].kind, EV_FAILED);
    assert_non_null(strstr(F.ev[0].reason, "(0 restarts within 5s)"));
    sv_child_free(ch);
}

/* A State frame survives a restart: the next Init hands it back. */
static void test_state_handed_to_next_incarnation(void **state)
{
    (void)state;
    struct child *ch = running_child("stateful", FRAMES, PERMANENT);
    send_state(ch, "v1");
    send_state(ch, "version-2");
    assert_int_equal(ch->state_len, 9);
    assert_memory_equal(ch->state_blob, "version-2", 9);
    expect_restart(ch, EXITED(1), 1, 0);
    clear_records();
    sv_tick(&SV, ch, F.now);
    assert_int_equal(ch->st, SV_STARTING);
    assert_int_equal(F.n_sent, 1);
    assert_int_equal(F.sent[0].state_len, 9);
    assert_memory_equal(F.sent[0].state, "version-2", 9);
    /* an empty State replaces it too */
    send_state(ch, "");
    assert_int_equal(ch->state_len, 0);
    assert_non_null(ch->state_blob);
    sv_child_free(ch);
}

/* ---------- STOP escalation ---------- */

static void test_stop_escalation_frames(void **state)
{
    (void)state;
    struct child *ch = running_child("esc", FRAMES, PERMANENT); /* shutdown_ms 4000 */
    uint64_t t0 = F.now;
    clear_records();
    assert_int_equal(sv_stop(&SV, ch, SV_WHY_REMOVE, "terminated by request"), 1);
    assert_int_equal(ch->st, SV_STOP_FRAME);
    assert_int_equal(sv_api_state(ch), DISTSUP__V1__CHILD_STATE__STOPPING);
    assert_int_equal(ch->why, SV_WHY_REMOVE);
    assert_int_equal(F.n_sent, 1);
    assert_int_equal(F.sent[0].kind, DISTSUP__V1__CHILD_FRAME__FRAME_TERMINATE);
    assert_string_equal(F.sent[0].text, "terminated by request");
    assert_int_equal(F.n_sigs, 0);
    assert_int_equal(ch->timer_at, t0 + 2000);
    assert_int_equal(ch->kill_at, t0 + 4000);
    assert_true(F.ticks >= 1);
    assert_int_equal(F.n_ev, 0);
    /* STOP_FRAME x START, READY: nothing */
    assert_nops(ch, NOP_START | NOP_READY);

    clear_records();
    assert_int_equal(sv_tick(&SV, ch, t0 + 1999), 1);
    assert_nothing_recorded();
    F.now = t0 + 2000;
    assert_int_equal(sv_tick(&SV, ch, F.now), 1);
    assert_int_equal(ch->st, SV_STOP_TERM);
    assert_int_equal(F.n_sigs, 1);
    assert_int_equal(F.sigs[0], SIGTERM);
    assert_int_equal(ch->timer_at, t0 + 4000);
    assert_int_equal(F.n_sent, 0);
    /* STOP_TERM x START, READY: nothing */
    assert_nops(ch, NOP_START | NOP_READY);

    clear_records();
    assert_int_equal(sv_tick(&SV, ch, t0 + 3999), 1);
    assert_nothing_recorded();
    F.now = t0 + 4000;
    assert_int_equal(sv_tick(&SV, ch, F.now), 0);
    assert_int_equal(ch->st, SV_STOP_KILL);
    assert_int_equal(F.n_sigs, 1);
    assert_int_equal(F.sigs[0], SIGKILL);
    assert_int_equal(ch->timer_at, 0);
    assert_int_equal(F.kills, 0);
    /* STOP_KILL x START, READY, TIMEOUT: nothing */
    assert_nops(ch, NOP_START | NOP_READY | NOP_TIMEOUT);
    assert_int_equal(ch->why, SV_WHY_REMOVE);

    clear_records();
    sv_exited(&SV, ch, KILLED(SIGKILL));
    assert_int_equal(F.removes, 1);
    assert_int_equal(F.ev[0].kind, EV_STOP);
    assert_int_equal(F.ev[0].sig, SIGKILL);
    assert_int_equal(SV.live, 0);
    sv_child_free(ch);
}

/* kill_immediately (grace 0): SIGKILL at once, no frame, no timer.  shutdown_ms 0 is
 * the default grace (5000), not an immediate kill. */
static void test_stop_grace(void **state)
{
    (void)state;
    struct spec_opts o = {.protocol = FRAMES, .restart = PERMANENT, .kill_immediately = 1};
    struct child *k = sv_child_new(&SV, make_spec("brutal", &o), &CFG, &F);
    assert_int_equal(spec_shutdown_ms(k->spec), 0);
    start_ok(k);
    send_ready(k);
    clear_records();
    assert_int_equal(sv_stop(&SV, k, SV_WHY_PARK, "bye"), 1);
    assert_int_equal(k->st, SV_STOP_KILL);
    assert_int_equal(F.n_sigs, 1);
    assert_int_equal(F.sigs[0], SIGKILL);
    assert_int_equal(F.n_sent, 0);
    assert_int_equal(k->timer_at, 0);
    assert_int_equal(k->kill_at, F.now);
    assert_int_equal(sv_tick(&SV, k, F.now + 100000), 0);
    assert_int_equal(F.n_sigs, 1);

    struct spec_opts d = {.protocol = FRAMES, .restart = PERMANENT, .shutdown_ms = 0};
    struct child *def = sv_child_new(&SV, make_spec("default", &d), &CFG, &F);
    assert_int_equal(spec_shutdown_ms(def->spec), SPEC_DEFAULT_SHUTDOWN_MS);
    start_ok(def);
    send_ready(def);
    clear_records();
    assert_int_equal(sv_stop(&SV, def, SV_WHY_PARK, "bye"), 1);
    assert_int_equal(def->st, SV_STOP_FRAME);
    assert_int_equal(def->timer_at, F.now + SPEC_DEFAULT_SHUTDOWN_MS / 2);
    assert_int_equal(def->kill_at, F.now + SPEC_DEFAULT_SHUTDOWN_MS);
    assert_int_equal(F.n_sigs, 0);
    sv_child_free(k);
    sv_child_free(def);
}

/* Protocol NONE, or FRAMES with its stdin closed: SIGTERM first, SIGKILL at kill_at. */
static void test_stop_sigterm_first(void **state)
{
    (void)state;
    struct child *n = running_child("none", NONE, PERMANENT);
    uint64_t t0 = F.now;
    clear_records();
    assert_int_equal(sv_stop(&SV, n, SV_WHY_PARK, "bye"), 1);
    assert_int_equal(n->st, SV_STOP_TERM);
    assert_int_equal(F.n_sent, 0);
    assert_int_equal(F.n_sigs, 1);
    assert_int_equal(F.sigs[0], SIGTERM);
    assert_int_equal(n->timer_at, t0 + 4000);
    assert_int_equal(n->kill_at, t0 + 4000);
    F.now = t0 + 4000;
    sv_tick(&SV, n, F.now);
    assert_int_equal(n->st, SV_STOP_KILL);
    assert_int_equal(F.sigs[1], SIGKILL);

    struct child *c = running_child("closed", FRAMES, PERMANENT);
    F.stdin_open = 0;
    clear_records();
    assert_int_equal(sv_stop(&SV, c, SV_WHY_PARK, "bye"), 1);
    assert_int_equal(c->st, SV_STOP_TERM);
    assert_int_equal(F.n_sent, 0);
    assert_int_equal(F.sigs[0], SIGTERM);
    assert_int_equal(c->timer_at, F.now + 4000);
    sv_child_free(n);
    sv_child_free(c);
}

/* STARTING x STOP: the same escalation. */
static void test_stop_while_starting(void **state)
{
    (void)state;
    struct child *ch = new_child("st", FRAMES, PERMANENT);
    start_ok(ch);
    clear_records();
    assert_int_equal(sv_stop(&SV, ch, SV_WHY_SUSPEND, "no quorum"), 1);
    assert_int_equal(ch->st, SV_STOP_FRAME);
    assert_int_equal(F.sent[0].kind, DISTSUP__V1__CHILD_FRAME__FRAME_TERMINATE);
    assert_int_equal(ch->timer_at, F.now + 2000); /* the Ready deadline is replaced */
    clear_records();
    sv_exited(&SV, ch, EXITED(0));
    assert_int_equal(ch->st, SV_IDLE);
    assert_int_equal(F.ev[0].kind, EV_STOP);
    assert_string_equal(F.ev[0].reason, "stopped: this node has no quorum");
    assert_int_equal(F.removes, 0);
    sv_child_free(ch);
}

/* ---------- what the exit after a stop leads to ---------- */

static void test_outcome_remove(void **state)
{
    (void)state;
    struct child *ch = running_child("rm", FRAMES, PERMANENT);
    struct ans t1 = {0}, t2 = {0}, c = {0};
    wait_terminate(ch, &t1);
    wait_terminate(ch, &t2);
    call(ch, "x", F.now + 100000, &c);
    ch->stop_reason = strdup("duplicate: node2 runs it");
    sv_stop(&SV, ch, SV_WHY_REMOVE, "duplicate");
    clear_records();
    sv_exited(&SV, ch, EXITED(0));
    assert_int_equal(F.n_ev, 1);
    assert_int_equal(F.ev[0].kind, EV_STOP);
    assert_string_equal(F.ev[0].reason, "duplicate: node2 runs it");
    assert_int_equal(F.removes, 1);
    assert_string_equal(F.remove_reason, "duplicate: node2 runs it");
    assert_int_equal(F.waiting_at_remove, 1); /* the machine left them to the remover */
    assert_int_equal(t1.n, 1);
    assert_int_equal(t2.n, 1);
    assert_string_equal(t1.name, "rm");
    assert_int_equal(t1.exit_code, 0);
    assert_int_equal(t1.sig, 0);
    assert_null(ch->term_waiters);
    assert_int_equal(c.n, 1);
    assert_int_equal(c.code, GRPC_STATUS_UNAVAILABLE);
    assert_non_null(strstr(c.msg, "exited"));
    assert_int_equal(F.moved, 0);
    assert_int_equal(F.persists, 0);
    assert_int_equal(ch->restarts, 0);
    sv_child_free(ch);

    /* without a stop_reason: its exit is the reason; a TerminateChild hears the signal */
    struct child *s = running_child("rm2", NONE, PERMANENT);
    struct ans t = {0};
    wait_terminate(s, &t);
    sv_stop(&SV, s, SV_WHY_REMOVE, "terminated by request");
    clear_records();
    sv_exited(&SV, s, KILLED(SIGTERM));
    assert_non_null(strstr(F.ev[0].reason, "killed by signal 15"));
    assert_int_equal(F.ev[0].sig, SIGTERM);
    assert_int_equal(t.n, 1);
    assert_int_equal(t.exit_code, -1);
    assert_int_equal(t.sig, SIGTERM);
    assert_int_equal(F.removes, 1);
    sv_child_free(s);
}

static void test_outcome_park(void **state)
{
    (void)state;
    struct child *ch = running_child("park", FRAMES, PERMANENT);
    struct ans c = {0};
    call(ch, "x", F.now + 100000, &c);
    sv_stop(&SV, ch, SV_WHY_PARK, "the sidecar is shutting down");
    clear_records();
    sv_exited(&SV, ch, EXITED(1)); /* even an abnormal exit is not restarted */
    assert_int_equal(ch->st, SV_IDLE);
    assert_int_equal(sv_api_state(ch), DISTSUP__V1__CHILD_STATE__SUSPENDED);
    assert_int_equal(ch->proc.pid, 0);
    assert_int_equal(ch->why, SV_WHY_NONE);
    assert_int_equal(ch->timer_at, 0);
    assert_int_equal(F.n_ev, 1);
    assert_int_equal(F.ev[0].kind, EV_STOP);
    assert_string_equal(F.ev[0].reason, "exited with code 1");
    assert_int_equal(F.removes, 0);
    assert_int_equal(F.moved, 0);
    assert_int_equal(ch->restarts, 0);
    assert_int_equal(c.code, GRPC_STATUS_UNAVAILABLE);
    assert_non_null(strstr(c.msg, "died"));
    assert_int_equal(SV.live, 0);
    /* IDLE x READY, EXIT, TIMEOUT: nothing; and it can start again */
    assert_nops(ch, NOP_READY | NOP_EXIT | NOP_TIMEOUT);
    start_ok(ch);
    assert_int_equal(ch->incarnation, 2);
    sv_child_free(ch);
}

/* An exit while suspending (no quorum): PROCESS_STOP "stopped: this node has no quorum",
 * IDLE, kept, not restarted whatever its exit. */
static void test_exit_while_suspending(void **state)
{
    (void)state;
    static const int statuses[] = {EXITED(0), EXITED(2), KILLED(SIGTERM), KILLED(SIGKILL)};
    for (size_t i = 0; i < sizeof statuses / sizeof *statuses; i++) {
        struct child *ch = running_child("susp", FRAMES, PERMANENT);
        assert_int_equal(sv_stop(&SV, ch, SV_WHY_SUSPEND, "no quorum"), 1);
        assert_string_equal(F.sent[F.n_sent - 1].text, "no quorum");
        clear_records();
        sv_exited(&SV, ch, statuses[i]);
        assert_int_equal(ch->st, SV_IDLE);
        assert_int_equal(ch->proc.pid, 0);
        assert_int_equal(ch->why, SV_WHY_NONE);
        assert_int_equal(F.n_ev, 1);
        assert_int_equal(F.ev[0].kind, EV_STOP);
        assert_string_equal(F.ev[0].reason, "stopped: this node has no quorum");
        assert_int_equal(F.removes, 0);
        assert_int_equal(F.moved, 0);
        assert_int_equal(F.persists, 0);
        assert_int_equal(ch->restarts, 0);
        assert_int_equal(ch->timer_at, 0);
        sv_child_free(ch);
    }
}

/* An exit while moving: moved_out, IDLE, no PROCESS_STOP, not restarted. */
static void test_exit_while_moving(void **state)
{
    (void)state;
    static const int statuses[] = {EXITED(0), EXITED(2), KILLED(SIGKILL)};
    for (size_t i = 0; i < sizeof statuses / sizeof *statuses; i++) {
        struct child *ch = running_child("mv", FRAMES, PERMANENT);
        struct ans c = {0};
        call(ch, "x", F.now + 100000, &c);
        assert_int_equal(sv_stop(&SV, ch, SV_WHY_MOVE, "rebalancing after a join"), 1);
        send_state(ch, "handoff");
        clear_records();
        sv_exited(&SV, ch, statuses[i]);
        assert_int_equal(F.moved, 1);
        assert_ptr_equal(F.moved_child, ch);
        assert_int_equal(ch->st, SV_IDLE);
        assert_int_equal(ch->proc.pid, 0);
        assert_int_equal(ch->why, SV_WHY_NONE);
        assert_int_equal(F.n_ev, 0);
        assert_int_equal(F.removes, 0);
        assert_int_equal(F.persists, 0);
        assert_int_equal(ch->restarts, 0);
        assert_int_equal(ch->state_len, 7);
        assert_int_equal(c.n, 1);
        assert_int_equal(c.code, GRPC_STATUS_UNAVAILABLE);
        assert_int_equal(SV.live, 0);
        sv_child_free(ch);
    }
}

/* A StartChild waiting beats every why: the start fails and it is removed. */
static void test_exit_stopping_with_start_waiting(void **state)
{
    (void)state;
    struct child *ch = new_child("sw", FRAMES, PERMANENT);
    start_ok(ch);
    struct ans a = {0};
    ch->start_done = on_start;
    ch->start_arg = &a;
    sv_stop(&SV, ch, SV_WHY_MOVE, "move");
    clear_records();
    sv_exited(&SV, ch, EXITED(0));
    assert_int_equal(a.code, GRPC_STATUS_FAILED_PRECONDITION);
    assert_int_equal(F.moved, 0);
    assert_int_equal(F.removes, 1);
    assert_int_equal(ch->why, SV_WHY_NONE);
    sv_child_free(ch);
}

/* STOP while stopping (STOP_FRAME, STOP_TERM, STOP_KILL x STOP): only a weightier why
 * takes over; nothing is sent or signalled again and the timers stay. */
static void restop(struct child *ch, enum sv_why first, enum sv_why second, enum sv_why want)
{
    ch->why = first;
    struct snap s = take(ch);
    clear_records();
    assert_int_equal(sv_stop(&SV, ch, second, "again"), 1);
    assert_int_equal(ch->why, want);
    s.why = want;
    assert_unchanged(ch, &s);
    assert_nothing_recorded();
}

static void test_restop_priority_cells(void **state)
{
    (void)state;
    struct child *ch = running_child("pri", FRAMES, PERMANENT);
    sv_stop(&SV, ch, SV_WHY_PARK, "bye");
    for (int stage = 0; stage < 3; stage++) {
        assert_int_equal(ch->st, stage == 0 ? SV_STOP_FRAME : stage == 1 ? SV_STOP_TERM : SV_STOP_KILL);
        for (enum sv_why a = SV_WHY_PARK; a <= SV_WHY_REMOVE; a++)
            for (enum sv_why b = SV_WHY_PARK; b <= SV_WHY_REMOVE; b++) restop(ch, a, b, a > b ? a : b);
        if (stage < 2) {
            F.now = ch->timer_at;
            sv_tick(&SV, ch, F.now);
        }
    }
    ch->why = SV_WHY_PARK;
    sv_exited(&SV, ch, KILLED(SIGKILL));
    assert_int_equal(ch->st, SV_IDLE);
    sv_child_free(ch);
}

static void test_priority_outcomes(void **state)
{
    (void)state;
    /* SUSPEND, then REMOVE while stopping: removed */
    struct child *a = running_child("p1", FRAMES, PERMANENT);
    struct ans t = {0};
    sv_stop(&SV, a, SV_WHY_SUSPEND, "no quorum");
    wait_terminate(a, &t);
    sv_stop(&SV, a, SV_WHY_REMOVE, "terminated by request");
    clear_records();
    sv_exited(&SV, a, EXITED(0));
    assert_int_equal(F.removes, 1);
    assert_int_equal(F.moved, 0);
    assert_int_equal(t.n, 1);
    assert_int_equal(F.ev[0].kind, EV_STOP);
    assert_string_not_equal(F.ev[0].reason, "stopped: this node has no quorum");

    /* MOVE, then SUSPEND: moved out */
    struct child *b = running_child("p2", FRAMES, PERMANENT);
    sv_stop(&SV, b, SV_WHY_MOVE, "move");
    sv_stop(&SV, b, SV_WHY_SUSPEND, "no quorum");
    clear_records();
    sv_exited(&SV, b, EXITED(0));
    assert_int_equal(F.moved, 1);
    assert_int_equal(F.n_ev, 0);
    assert_int_equal(b->st, SV_IDLE);

    /* REMOVE, then PARK: removed */
    struct child *c = running_child("p3", NONE, PERMANENT);
    sv_stop(&SV, c, SV_WHY_REMOVE, "terminated by request");
    sv_stop(&SV, c, SV_WHY_PARK, "the sidecar is shutting down");
    clear_records();
    sv_exited(&SV, c, KILLED(SIGTERM));
    assert_int_equal(F.removes, 1);

    /* PARK, then SUSPEND: suspended (the no-quorum event) */
    struct child *d = running_child("p4", NONE, PERMANENT);
    sv_stop(&SV, d, SV_WHY_PARK, "bye");
    sv_stop(&SV, d, SV_WHY_SUSPEND, "no quorum");
    clear_records();
    sv_exited(&SV, d, KILLED(SIGTERM));
    assert_int_equal(d->st, SV_IDLE);
    assert_string_equal(F.ev[0].reason, "stopped: this node has no quorum");

    /* MOVE, then REMOVE: removed, not moved */
    struct child *e = running_child("p5", FRAMES, PERMANENT);
    sv_stop(&SV, e, SV_WHY_MOVE, "move");
    sv_stop(&SV, e, SV_WHY_REMOVE, "terminated by request");
    clear_records();
    sv_exited(&SV, e, EXITED(0));
    assert_int_equal(F.removes, 1);
    assert_int_equal(F.moved, 0);
    sv_child_free(a);
    sv_child_free(b);
    sv_child_free(c);
    sv_child_free(d);
    sv_child_free(e);
}

/* ---------- STOP when nothing runs ---------- */

static struct child *backoff_child(const char *name)
{
    struct child *ch = running_child(name, NONE, PERMANENT);
    F.now += 10;
    sv_exited(&SV, ch, EXITED(1));
    F.now += 10;
    sv_tick(&SV, ch, F.now);
    F.now += 10;
    sv_exited(&SV, ch, EXITED(1)); /* second restart: a delay of 100 */
    assert_int_equal(ch->st, SV_BACKOFF);
    assert_true(ch->timer_at > F.now);
    return ch;
}

static void test_stop_nothing_running(void **state)
{
    (void)state;
    /* BACKOFF x STOP (SUSPEND, PARK, MOVE): IDLE, timer cleared, 0 */
    for (enum sv_why w = SV_WHY_PARK; w <= SV_WHY_MOVE; w++) {
        struct child *ch = backoff_child("b");
        clear_records();
        assert_int_equal(sv_stop(&SV, ch, w, "stop"), 0);
        assert_int_equal(ch->st, SV_IDLE);
        assert_int_equal(ch->timer_at, 0);
        assert_int_equal(ch->why, SV_WHY_NONE);
        assert_nothing_recorded();
        assert_int_equal(sv_tick(&SV, ch, F.now + 100000), 0); /* no restart later */
        assert_int_equal(ch->st, SV_IDLE);
        assert_nothing_recorded();
        sv_child_free(ch);
    }
    /* BACKOFF x STOP (REMOVE): left as it is for the caller, but never restarted */
    struct child *r = backoff_child("r");
    clear_records();
    assert_int_equal(sv_stop(&SV, r, SV_WHY_REMOVE, "terminated"), 0);
    assert_int_equal(r->st, SV_BACKOFF);
    assert_int_equal(r->timer_at, 0);
    assert_int_equal(sv_tick(&SV, r, F.now + 100000), 0);
    assert_nothing_recorded();
    sv_child_free(r);

    /* IDLE x STOP: stays IDLE, 0, nothing recorded */
    struct child *i = new_child("i", FRAMES, PERMANENT);
    assert_nops(i, NOP_STOP);
    assert_int_equal(i->st, SV_IDLE);
    sv_child_free(i);
}

/* ---------- the mailbox ---------- */

static void test_calls_and_replies(void **state)
{
    (void)state;
    struct child *ch = running_child("mbox", FRAMES, PERMANENT);
    struct ans a[6] = {{0}};
    clear_records();
    for (int i = 0; i < 6; i++) call(ch, "ping", F.now + 100000, &a[i]);
    assert_int_equal(ch->n_calls, 6);
    assert_int_equal(F.n_sent, 6);
    for (int i = 0; i < 6; i++) {
        assert_int_equal(F.sent[i].kind, DISTSUP__V1__CHILD_FRAME__FRAME_CALL);
        assert_int_equal(F.sent[i].ref, (uint64_t)i + 1);
        assert_string_equal(F.sent[i].text, "ping");
    }
    assert_true(F.ticks >= 6);
    /* out of order: OK with payload */
    send_reply(ch, 2, "pong", NULL, 0);
    assert_int_equal(a[1].n, 1);
    assert_int_equal(a[1].code, GRPC_STATUS_OK);
    assert_string_equal(a[1].payload, "pong");
    assert_string_equal(a[1].node, "node1");
    assert_int_equal(ch->n_calls, 5);
    /* error with a code */
    send_reply(ch, 1, NULL, "no such key", GRPC_STATUS_NOT_FOUND);
    assert_int_equal(a[0].code, GRPC_STATUS_NOT_FOUND);
    assert_non_null(strstr(a[0].msg, "no such key"));
    assert_non_null(strstr(a[0].msg, "mbox"));
    /* error, code 0 or out of range: UNKNOWN */
    send_reply(ch, 3, NULL, "boom", 0);
    assert_int_equal(a[2].code, GRPC_STATUS_UNKNOWN);
    send_reply(ch, 4, NULL, "boom", 17);
    assert_int_equal(a[3].code, GRPC_STATUS_UNKNOWN);
    send_reply(ch, 5, NULL, "boom", 16);
    assert_int_equal(a[4].code, 16);
    /* an empty error is no error */
    send_reply(ch, 6, "", "", 5);
    assert_int_equal(a[5].code, GRPC_STATUS_OK);
    assert_int_equal(ch->n_calls, 0);
    assert_null(ch->calls);
    assert_null(ch->calls_tail);
    /* unknown or already answered refs: ignored */
    struct snap s = take(ch);
    clear_records();
    send_reply(ch, 2, "again", NULL, 0);
    send_reply(ch, 42, "?", NULL, 0);
    for (int i = 0; i < 6; i++) assert_int_equal(a[i].n, 1);
    assert_unchanged(ch, &s);
    assert_nothing_recorded();
    /* refs keep counting */
    struct ans b = {0};
    call(ch, "more", F.now + 100000, &b);
    assert_int_equal(F.sent[F.n_sent - 1].ref, 7);
    send_reply(ch, 7, "x", NULL, 0);
    assert_int_equal(b.code, GRPC_STATUS_OK);
    sv_child_free(ch);
}

static void test_call_deadlines(void **state)
{
    (void)state;
    struct child *ch = running_child("dl", FRAMES, PERMANENT);
    struct ans a = {0}, b = {0}, c = {0};
    uint64_t t0 = F.now;
    call(ch, "a", t0 + 100, &a);
    call(ch, "b", t0 + 300, &b);
    call(ch, "c", t0 + 200, &c);
    assert_int_equal(sv_tick(&SV, ch, t0 + 99), 1);
    assert_int_equal(a.n + b.n + c.n, 0);
    assert_int_equal(sv_tick(&SV, ch, t0 + 100), 1);
    assert_int_equal(a.n, 1);
    assert_int_equal(a.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_non_null(strstr(a.msg, "did not reply in time"));
    assert_int_equal(ch->n_calls, 2);
    assert_int_equal(sv_tick(&SV, ch, t0 + 250), 1);
    assert_int_equal(c.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_int_equal(b.n, 0);
    /* a reply to an expired call: ignored */
    send_reply(ch, 1, "late", NULL, 0);
    assert_int_equal(a.n, 1);
    assert_int_equal(sv_tick(&SV, ch, t0 + 300), 0);
    assert_int_equal(b.code, GRPC_STATUS_DEADLINE_EXCEEDED);
    assert_int_equal(ch->n_calls, 0);
    assert_null(ch->calls_tail);
    assert_int_equal(ch->st, SV_RUNNING);
    sv_child_free(ch);
}

static void test_exit_fails_calls(void **state)
{
    (void)state;
    struct child *ch = running_child("ex", FRAMES, PERMANENT);
    struct ans a = {0}, b = {0};
    call(ch, "a", F.now + 100000, &a);
    call(ch, "b", F.now + 100000, &b);
    sv_exited(&SV, ch, KILLED(SIGSEGV));
    assert_int_equal(a.code, GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(b.code, GRPC_STATUS_UNAVAILABLE);
    assert_non_null(strstr(a.msg, "died"));
    assert_int_equal(ch->n_calls, 0);
    assert_null(ch->calls);
    assert_int_equal(ch->st, SV_BACKOFF);
    /* its deadline passing later answers nothing twice */
    sv_tick(&SV, ch, F.now + 200000);
    assert_int_equal(a.n, 1);
    assert_int_equal(b.n, 1);
    sv_child_free(ch);
}

/* sv_call whose frame cannot be written: -1, done never called, nothing pending. */
static void test_call_send_failure_and_casts(void **state)
{
    (void)state;
    struct child *ch = running_child("cast", FRAMES, PERMANENT);
    struct ans a = {0};
    F.send_fail = 1;
    ProtobufCBinaryData p = {2, (uint8_t *)"hi"};
    assert_int_equal(sv_call(&SV, ch, p, F.now + 10, on_call, &a), -1);
    assert_int_equal(ch->n_calls, 0);
    assert_int_equal(sv_cast(&SV, ch, p, 0), -1);
    assert_int_equal(sv_tick(&SV, ch, F.now + 100), 0);
    assert_int_equal(a.n, 0);
    F.send_fail = 0;
    clear_records();
    assert_int_equal(sv_cast(&SV, ch, p, 0), 0);
    assert_int_equal(sv_cast(&SV, ch, p, 1), 0);
    assert_int_equal(F.n_sent, 2);
    assert_int_equal(F.sent[0].kind, DISTSUP__V1__CHILD_FRAME__FRAME_CAST);
    assert_string_equal(F.sent[0].text, "hi");
    assert_int_equal(F.sent[1].kind, DISTSUP__V1__CHILD_FRAME__FRAME_INFO);
    assert_string_equal(F.sent[1].text, "hi");
    assert_int_equal(sv_unsent(ch), 0);
    sv_child_free(ch);
}

/* A frame kind only the sidecar sends (Init, Call, ...) coming from the child: ignored. */
static void test_foreign_frames_ignored(void **state)
{
    (void)state;
    struct child *ch = running_child("odd", FRAMES, PERMANENT);
    struct snap s = take(ch);
    clear_records();
    Distsup__V1__Terminate t = DISTSUP__V1__TERMINATE__INIT;
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_TERMINATE;
    f.terminate = &t;
    sv_frame(&SV, ch, &f);
    assert_unchanged(ch, &s);
    assert_nothing_recorded();
    sv_child_free(ch);
}

/* ---------- the API's view; live ---------- */

static void test_api_state_every_state(void **state)
{
    (void)state;
    static const struct {
        enum sv_state st;
        Distsup__V1__ChildState api;
    } want[] = {
        {SV_IDLE, DISTSUP__V1__CHILD_STATE__SUSPENDED},     {SV_STARTING, DISTSUP__V1__CHILD_STATE__STARTING},
        {SV_RUNNING, DISTSUP__V1__CHILD_STATE__RUNNING},    {SV_STOP_FRAME, DISTSUP__V1__CHILD_STATE__STOPPING},
        {SV_STOP_TERM, DISTSUP__V1__CHILD_STATE__STOPPING}, {SV_STOP_KILL, DISTSUP__V1__CHILD_STATE__STOPPING},
        {SV_BACKOFF, DISTSUP__V1__CHILD_STATE__RESTARTING}, {SV_FAILED, DISTSUP__V1__CHILD_STATE__FAILED},
    };
    assert_int_equal(sizeof want / sizeof *want, SV_NSTATES);
    struct child *ch = new_child("api", FRAMES, PERMANENT);
    for (size_t i = 0; i < SV_NSTATES; i++) {
        ch->st = want[i].st;
        assert_int_equal(sv_api_state(ch), want[i].api);
        Distsup__V1__ChildInfo info;
        sv_fill_info(&SV, ch, &info);
        assert_int_equal(info.state, want[i].api);
        assert_string_equal(info.name, "api");
        assert_string_equal(info.supervisor, "sup1");
        assert_string_equal(info.node, "node1");
        assert_ptr_equal(info.spec, ch->spec);
    }
    ch->st = SV_IDLE;
    sv_child_free(ch);
}

static void test_live_count(void **state)
{
    (void)state;
    struct child *a = running_child("l1", NONE, PERMANENT);
    struct child *b = running_child("l2", FRAMES, PERMANENT);
    assert_int_equal(SV.live, 2);
    /* failed starts count nothing, up or down */
    struct child *c = new_child("l3", NONE, PERMANENT);
    F.spawn_fail = 1;
    sv_start_or_retry(&SV, c, "start");
    assert_int_equal(c->st, SV_BACKOFF);
    assert_int_equal(SV.live, 2);
    sv_tick(&SV, c, F.now); /* BACKOFF x TIMEOUT failing again */
    assert_int_equal(SV.live, 2);
    F.spawn_fail = 0;
    F.now += 100;
    sv_tick(&SV, c, F.now);
    assert_int_equal(c->st, SV_RUNNING);
    assert_int_equal(SV.live, 3);
    /* real exits count down */
    sv_exited(&SV, a, EXITED(1));
    assert_int_equal(SV.live, 2);
    sv_stop(&SV, b, SV_WHY_PARK, "bye");
    sv_exited(&SV, b, EXITED(0));
    assert_int_equal(SV.live, 1);
    /* a restart counts up again */
    F.now = a->timer_at;
    sv_tick(&SV, a, F.now);
    assert_int_equal(SV.live, 2);
    sv_child_free(a);
    sv_child_free(b);
    sv_child_free(c);
}

int main(void)
{
    log_set_level((enum log_level)(LOG_ERROR + 1)); /* quiet: the tests check what it does */
#define T(f) cmocka_unit_test_setup(f, setup)
    const struct CMUnitTest tests[] = {
        T(test_start_frames),
        T(test_start_none),
        T(test_start_spawn_failure),
        T(test_start_or_retry_failure),
        T(test_ready),
        T(test_ready_answers_after_durable),
        T(test_ready_elsewhere_ignored),
        T(test_ready_timeout),
        T(test_ready_wait_ends_before_the_request_deadline),
        T(test_ready_timeout_without_waiter),
        T(test_exit_before_ready),
        T(test_exit_permanent),
        T(test_exit_transient),
        T(test_exit_temporary),
        T(test_restart_bound_and_backoff),
        T(test_spread_exits_keep_restarting),
        T(test_max_restarts_zero),
        T(test_state_handed_to_next_incarnation),
        T(test_stop_escalation_frames),
        T(test_stop_grace),
        T(test_stop_sigterm_first),
        T(test_stop_while_starting),
        T(test_outcome_remove),
        T(test_outcome_park),
        T(test_exit_while_suspending),
        T(test_exit_while_moving),
        T(test_exit_stopping_with_start_waiting),
        T(test_restop_priority_cells),
        T(test_priority_outcomes),
        T(test_stop_nothing_running),
        T(test_calls_and_replies),
        T(test_call_deadlines),
        T(test_exit_fails_calls),
        T(test_call_send_failure_and_casts),
        T(test_foreign_frames_ignored),
        T(test_api_state_every_state),
        T(test_live_count),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

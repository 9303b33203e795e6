/* Unit tests of the daemon's host sessions (sidecar/host.c) through their real API:
 * a real state machine (struct sv, sv_init, sv->hosted_ops = hosts_ops()), a real
 * loop (for the sessions' timerfd), a fake clock (sv_hooks.now) and fake Host
 * streams (struct host_port) that decode what the daemon sends as
 * distsup.v1.HostDown.  The app's side is HostUp messages packed here and handed
 * to hosts_message(); time passes through sv_tick (the core's tick) and
 * hosts_tick (the sessions' timer).  Nothing sleeps, nothing spawns.
 *
 * The tests at the end (regressions) each showed a fault that has been fixed since. */
#include <dirent.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include <cmocka.h>
#include <grpc/status.h>

#include "distsup/v1/supervisor.pb-c.h"
#include "sidecar/host.h"
#include "sidecar/log.h"
#include "sidecar/loop.h"
#include "sidecar/supervise.h"

#define MAXREC 512
#define MAXPORTS 10
#define MAXKIDS 300

#define PERMANENT DISTSUP__V1__RESTART_TYPE__PERMANENT
#define TRANSIENT DISTSUP__V1__RESTART_TYPE__TRANSIENT
#define TEMPORARY DISTSUP__V1__RESTART_TYPE__TEMPORARY
#define FC_INIT DISTSUP__V1__CHILD_FRAME__FRAME_INIT
#define FC_CALL DISTSUP__V1__CHILD_FRAME__FRAME_CALL
#define FC_CAST DISTSUP__V1__CHILD_FRAME__FRAME_CAST
#define FC_INFO DISTSUP__V1__CHILD_FRAME__FRAME_INFO
#define FC_TERMINATE DISTSUP__V1__CHILD_FRAME__FRAME_TERMINATE
#define FC_READY DISTSUP__V1__CHILD_FRAME__FRAME_READY
#define FC_REPLY DISTSUP__V1__CHILD_FRAME__FRAME_REPLY
#define FC_STATE DISTSUP__V1__CHILD_FRAME__FRAME_STATE
#define FC_DROP (-1) /* a drop: a HostFrame with drop set and no frame */
#define EV_START DISTSUP__V1__EVENT_KIND__PROCESS_START
#define EV_STOP DISTSUP__V1__EVENT_KIND__PROCESS_STOP
#define EV_RESTART DISTSUP__V1__EVENT_KIND__PROCESS_RESTART

#define PING_MS 2000
#define TIMEOUT_MS 10000
#define SHUTDOWN_MS 1000

/* ---------- the fake Host streams ---------- */

enum { R_WELCOME = 1, R_PING, R_FRAME };

/* One thing the daemon sent: a welcome, a ping, or one HostFrame. */
struct rec {
    unsigned send; /* the send() it came in (1-based) */
    int what;
    /* welcome */
    char node[64], session[32];
    uint32_t ping_ms, timeout_ms;
    /* ping */
    uint64_t seq;
    /* frame */
    uint64_t child;
    char kind[64];
    int drop;
    int fc;         /* its frame's frame_case; FC_DROP for a drop without a frame */
    char text[256]; /* init: name; call, cast, info: payload; terminate: reason */
    uint64_t ref;   /* call */
    char init[64], state[64];
};

struct port {
    int used;
    struct host_sess *s;
    uint8_t *all; /* every byte sent, as the app would read them */
    size_t all_len;
    unsigned sends, more, ends, releases;
    int code;
    char msg[512];
    int send_fail;
    struct rec r[MAXREC];
    unsigned n;
};

static struct port P[MAXPORTS];

static void copy_text(char *dst, size_t cap, ProtobufCBinaryData b)
{
    size_t n = b.len < cap - 1 ? b.len : cap - 1;
    if (n) memcpy(dst, b.data, n);
    dst[n] = 0;
}

static struct rec *push_rec(struct port *p, int what)
{
    assert_true(p->n < MAXREC);
    struct rec *r = &p->r[p->n++];
    memset(r, 0, sizeof *r);
    r->send = p->sends;
    r->what = what;
    return r;
}

static int p_send(void *arg, const uint8_t *data, size_t len)
{
    struct port *p = arg;
    assert_int_equal(p->ends, 0); /* end() is the last thing: nothing is sent after it */
    if (p->send_fail) return -1;
    p->sends++;
    uint8_t *all = realloc(p->all, p->all_len + len + 1);
    assert_non_null(all);
    memcpy(all + p->all_len, data, len);
    p->all = all;
    p->all_len += len;
    Distsup__V1__HostDown *m = distsup__v1__host_down__unpack(NULL, len, data);
    assert_non_null(m);
    if (m->welcome) {
        struct rec *r = push_rec(p, R_WELCOME);
        snprintf(r->node, sizeof r->node, "%s", m->welcome->node);
        snprintf(r->session, sizeof r->session, "%s", m->welcome->session);
        r->ping_ms = m->welcome->ping_ms;
        r->timeout_ms = m->welcome->timeout_ms;
    }
    for (size_t i = 0; i < m->n_frames; i++) {
        const Distsup__V1__HostFrame *hf = m->frames[i];
        struct rec *r = push_rec(p, R_FRAME);
        r->child = hf->child;
        snprintf(r->kind, sizeof r->kind, "%s", hf->kind);
        r->drop = hf->drop;
        assert_null(hf->exit); /* only hosts send exit */
        if (!hf->frame) {
            r->fc = FC_DROP;
            continue;
        }
        r->fc = (int)hf->frame->frame_case;
        switch (hf->frame->frame_case) {
        case FC_INIT:
            snprintf(r->text, sizeof r->text, "%s", hf->frame->init->name);
            copy_text(r->init, sizeof r->init, hf->frame->init->init);
            copy_text(r->state, sizeof r->state, hf->frame->init->state);
            break;
        case FC_CALL:
            r->ref = hf->frame->call->ref;
            copy_text(r->text, sizeof r->text, hf->frame->call->payload);
            break;
        case FC_CAST: copy_text(r->text, sizeof r->text, hf->frame->cast->payload); break;
        case FC_INFO: copy_text(r->text, sizeof r->text, hf->frame->info->payload); break;
        case FC_TERMINATE: snprintf(r->text, sizeof r->text, "%s", hf->frame->terminate->reason); break;
        default: break;
        }
    }
    if (m->ping) push_rec(p, R_PING)->seq = m->ping->seq;
    distsup__v1__host_down__free_unpacked(m, NULL);
    return 0;
}

static size_t p_queued(void *arg)
{
    (void)arg;
    return 0;
}

static void p_more(void *arg)
{
    struct port *p = arg;
    assert_int_equal(p->ends, 0);
    p->more++;
}

static void p_end(void *arg, int code, const char *msg)
{
    struct port *p = arg;
    p->ends++;
    p->code = code;
    snprintf(p->msg, sizeof p->msg, "%s", msg ? msg : "");
}

static void p_release(void *arg)
{
    struct port *p = arg;
    p->releases++;
}

/* The records of p that are frames of kind fc (FC_DROP: drops), for child num (0: any). */
static unsigned count_frames(const struct port *p, int fc, uint64_t num)
{
    unsigned n = 0;
    for (unsigned i = 0; i < p->n; i++)
        if (p->r[i].what == R_FRAME && p->r[i].fc == fc && (!num || p->r[i].child == num)) n++;
    return n;
}

static const struct rec *last_frame(const struct port *p, int fc, uint64_t num)
{
    for (unsigned i = p->n; i-- > 0;)
        if (p->r[i].what == R_FRAME && p->r[i].fc == fc && (!num || p->r[i].child == num)) return &p->r[i];
    return NULL;
}

static unsigned count_what(const struct port *p, int what)
{
    unsigned n = 0;
    for (unsigned i = 0; i < p->n; i++)
        if (p->r[i].what == what) n++;
    return n;
}

/* ---------- the fake core and clock ---------- */

struct ev {
    int kind, code, sig;
    char reason[256];
    struct child *ch;
};

struct fake {
    uint64_t now;
    unsigned ticks, persists, removes, moved, kinds_changed, waiting;
    uint64_t waiting_now;
    struct ev ev[MAXREC];
    unsigned n_ev;
    char remove_reason[256];
    struct child *removed;
};

static struct fake F;
static struct sv SV;
static struct sup_config CFG;
static struct loop *L;
static struct hosts *H;
static int TFD = -1; /* the sessions' timerfd (found in /proc/self/fd) */
static struct child *KIDS[MAXKIDS];
static size_t NK;
static const struct host_limits LIM = {PING_MS, TIMEOUT_MS, 1 << 20, 8};

static uint64_t k_now(void *arg)
{
    assert_ptr_equal(arg, &F);
    return F.now;
}

static void k_tick(void *arg, struct child *ch)
{
    (void)arg;
    assert_non_null(ch);
    F.ticks++;
}

static void k_event(void *arg, struct child *ch, Distsup__V1__EventKind kind, int code, int sig, const char *reason)
{
    (void)arg;
    assert_true(F.n_ev < MAXREC);
    struct ev *e = &F.ev[F.n_ev++];
    e->kind = (int)kind;
    e->code = code;
    e->sig = sig;
    e->ch = ch;
    snprintf(e->reason, sizeof e->reason, "%s", reason ? reason : "");
}

static void k_persist(void *arg, struct child *ch)
{
    (void)arg, (void)ch;
    F.persists++;
}

/* As the reactor does: mark it dead; it is freed later (here: at teardown).  Its
 * TerminateChild requests are the remover's to answer (the reactor: once on disk). */
static void k_remove(void *arg, struct child *ch, const char *reason)
{
    (void)arg;
    assert_false(ch->dead);
    ch->dead = 1;
    F.removes++;
    F.removed = ch;
    snprintf(F.remove_reason, sizeof F.remove_reason, "%s", reason ? reason : "");
    sv_answer_terminate(ch, ch->term_code, ch->term_sig);
}

static void k_moved_out(void *arg, struct child *ch)
{
    (void)arg, (void)ch;
    F.moved++;
}

static void k_kinds_changed(void *arg)
{
    assert_ptr_equal(arg, &F);
    F.kinds_changed++;
}

static void k_waiting(void *arg, uint64_t now)
{
    assert_ptr_equal(arg, &F);
    F.waiting++;
    F.waiting_now = now;
}

/* Hosted children never reach the process ops. */
static int never_spawn(struct sv *sv, struct child *ch, char *err, size_t errlen)
{
    (void)sv, (void)ch, (void)err, (void)errlen;
    fail_msg("a hosted child reached the OS process ops (spawn)");
    return -1;
}
static int never_send(struct child *ch, const Distsup__V1__ChildFrame *f)
{
    (void)ch, (void)f;
    fail_msg("a hosted child reached the OS process ops (send)");
    return -1;
}
static void never_signal(struct child *ch, int sig)
{
    (void)ch, (void)sig;
    fail_msg("a hosted child reached the OS process ops (signal)");
}
static void never_kill(struct child *ch, const char *why)
{
    (void)ch, (void)why;
    fail_msg("a hosted child reached the OS process ops (kill)");
}
static int never_stdin_open(const struct child *ch)
{
    (void)ch;
    fail_msg("a hosted child reached the OS process ops (stdin_open)");
    return 0;
}
static const struct sv_proc_ops never_ops = {never_spawn,      never_send, never_signal, never_kill,
                                             never_stdin_open, NULL,       NULL};

/* The timerfds this process has open. */
static size_t timerfds(int *out, size_t max)
{
    DIR *d = opendir("/proc/self/fd");
    assert_non_null(d);
    size_t n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        char link[128];
        ssize_t k = readlinkat(dirfd(d), e->d_name, link, sizeof link - 1);
        if (k <= 0) continue;
        link[k] = 0;
        if (!strcmp(link, "anon_inode:[timerfd]") && n < max) out[n++] = atoi(e->d_name);
    }
    closedir(d);
    return n;
}

/* The period the sessions' timer is armed with now (0: off). */
static long timer_ms(void)
{
    struct itimerspec it;
    assert_int_equal(timerfd_gettime(TFD, &it), 0);
    return (long)it.it_interval.tv_sec * 1000 + it.it_interval.tv_nsec / 1000000;
}

static int setup(void **state)
{
    (void)state;
    memset(&F, 0, sizeof F);
    memset(P, 0, sizeof P);
    NK = 0;
    F.now = 100000; /* never 0: a timer at 0 means none */
    memset(&CFG, 0, sizeof CFG);
    snprintf(CFG.name, sizeof CFG.name, "sup1");
    CFG.max_restarts = 5;
    CFG.max_seconds = 5;
    CFG.backoff_ms = 100;
    CFG.backoff_max_ms = 2000;
    CFG.start_timeout_ms = 60000;
    char err[256];
    struct loop_hooks lh = {NULL, NULL, NULL};
    L = loop_new(64, &lh, err, sizeof err);
    assert_non_null(L);
    struct sv_hooks hooks = {&F, k_now, k_tick, k_event, k_persist, k_remove, k_moved_out, NULL, NULL};
    sv_init(&SV, &never_ops, &hooks, L, "node1", "/nonexistent", 0xabc);
    SV.hosted_ops = hosts_ops();
    int before[64], after[64];
    size_t nb = timerfds(before, 64);
    struct host_hooks hh = {&F, k_kinds_changed, k_waiting};
    H = hosts_new(&SV, &LIM, "node1", &hh);
    assert_non_null(H);
    SV.hosts = H;
    size_t na = timerfds(after, 64);
    TFD = -1;
    for (size_t i = 0; i < na; i++) {
        int seen = 0;
        for (size_t k = 0; k < nb; k++) seen |= before[k] == after[i];
        if (!seen) {
            assert_int_equal(TFD, -1);
            TFD = after[i];
        }
    }
    assert_true(TFD >= 0);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    for (size_t i = 0; i < NK; i++) sv_child_free(KIDS[i]);
    NK = 0;
    hosts_free(H);
    H = NULL;
    loop_free(L, NULL);
    L = NULL;
    for (int i = 0; i < MAXPORTS; i++) free(P[i].all);
    return 0;
}

/* ---------- the app's side ---------- */

/* A new Host stream: its session waits for hello. */
static struct port *attach(void)
{
    struct port *p = NULL;
    for (int i = 0; i < MAXPORTS && !p; i++)
        if (!P[i].used) p = &P[i];
    assert_non_null(p);
    p->used = 1;
    struct host_port hp = {p, p_send, p_queued, p_more, p_end, p_release};
    p->s = hosts_attach(H, &hp);
    assert_non_null(p->s);
    assert_int_equal(p->more, 1); /* it reads the first message */
    assert_int_equal(p->sends, 0);
    return p;
}

/* Its stream is over (as the core says it). */
static void gone(struct port *p)
{
    hosts_gone(H, p->s);
    p->s = NULL;
}

static void up(struct port *p, const Distsup__V1__HostUp *m)
{
    size_t len = distsup__v1__host_up__get_packed_size(m);
    uint8_t *buf = malloc(len ? len : 1);
    assert_non_null(buf);
    distsup__v1__host_up__pack(m, buf);
    hosts_message(H, p->s, buf, len);
    free(buf);
}

static void hello(struct port *p, const char *const *kinds, size_t n, uint32_t capacity)
{
    Distsup__V1__HostHello hi = DISTSUP__V1__HOST_HELLO__INIT;
    hi.n_kinds = n;
    hi.kinds = (char **)kinds;
    hi.capacity = capacity;
    hi.name = "app-1";
    Distsup__V1__HostUp m = DISTSUP__V1__HOST_UP__INIT;
    m.hello = &hi;
    up(p, &m);
}

#define HELLO(p, cap, ...) \
    do { \
        const char *k_[] = {__VA_ARGS__}; \
        hello((p), k_, sizeof k_ / sizeof *k_, (uint32_t)(cap)); \
    } while (0)

/* A session of these kinds, welcomed. */
#define HOST(cap, ...) \
    ({ \
        struct port *p_ = attach(); \
        HELLO(p_, cap, __VA_ARGS__); \
        assert_int_equal(p_->ends, 0); \
        assert_int_equal(count_what(p_, R_WELCOME), 1); \
        p_; \
    })

static void up_frames(struct port *p, Distsup__V1__HostFrame **frames, size_t n)
{
    Distsup__V1__HostUp m = DISTSUP__V1__HOST_UP__INIT;
    m.n_frames = n;
    m.frames = frames;
    up(p, &m);
}

static void up_child_frame(struct port *p, uint64_t num, Distsup__V1__ChildFrame *f)
{
    Distsup__V1__HostFrame hf = DISTSUP__V1__HOST_FRAME__INIT;
    hf.child = num;
    hf.frame = f;
    Distsup__V1__HostFrame *one = &hf;
    up_frames(p, &one, 1);
}

static void up_ready(struct port *p, uint64_t num)
{
    Distsup__V1__Ready r = DISTSUP__V1__READY__INIT;
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = FC_READY;
    f.ready = &r;
    up_child_frame(p, num, &f);
}

static void up_reply(struct port *p, uint64_t num, uint64_t ref, const char *payload, const char *error, uint32_t code)
{
    Distsup__V1__Reply r = DISTSUP__V1__REPLY__INIT;
    r.ref = ref;
    if (payload) {
        r.payload.data = (uint8_t *)payload;
        r.payload.len = strlen(payload);
    }
    if (error) r.error = (char *)error;
    r.code = code;
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = FC_REPLY;
    f.reply = &r;
    up_child_frame(p, num, &f);
}

static void up_state(struct port *p, uint64_t num, const char *bytes)
{
    Distsup__V1__StateFrame s = DISTSUP__V1__STATE_FRAME__INIT;
    s.state.data = (uint8_t *)bytes;
    s.state.len = strlen(bytes);
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = FC_STATE;
    f.state = &s;
    up_child_frame(p, num, &f);
}

static void up_exit(struct port *p, uint64_t num, int normal, const char *reason)
{
    Distsup__V1__HostExit e = DISTSUP__V1__HOST_EXIT__INIT;
    e.normal = normal;
    if (reason) e.reason = (char *)reason;
    Distsup__V1__HostFrame hf = DISTSUP__V1__HOST_FRAME__INIT;
    hf.child = num;
    hf.exit = &e;
    Distsup__V1__HostFrame *one = &hf;
    up_frames(p, &one, 1);
}

static void up_pong(struct port *p, uint64_t seq)
{
    Distsup__V1__HostPong pong = DISTSUP__V1__HOST_PONG__INIT;
    pong.seq = seq;
    Distsup__V1__HostUp m = DISTSUP__V1__HOST_UP__INIT;
    m.pong = &pong;
    up(p, &m);
}

/* A frame of a kind only the daemon sends, as if a host sent it. */
static void up_daemon_frame(struct port *p, uint64_t num, int fc)
{
    Distsup__V1__Init init = DISTSUP__V1__INIT__INIT;
    Distsup__V1__CallFrame call = DISTSUP__V1__CALL_FRAME__INIT;
    Distsup__V1__CastFrame cast = DISTSUP__V1__CAST_FRAME__INIT;
    Distsup__V1__InfoFrame info = DISTSUP__V1__INFO_FRAME__INIT;
    Distsup__V1__Terminate term = DISTSUP__V1__TERMINATE__INIT;
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = (Distsup__V1__ChildFrame__FrameCase)fc;
    switch (fc) {
    case FC_INIT: f.init = &init; break;
    case FC_CALL: f.call = &call; break;
    case FC_CAST: f.cast = &cast; break;
    case FC_INFO: f.info = &info; break;
    case FC_TERMINATE: f.terminate = &term; break;
    default: break; /* NOT_SET: an empty frame */
    }
    up_child_frame(p, num, &f);
}

/* ---------- children ---------- */

static Distsup__V1__ChildSpec *make_spec(const char *name, const char *kind, Distsup__V1__RestartType restart,
                                         uint32_t shutdown_ms, int kill_immediately, const char *init)
{
    Distsup__V1__ChildSpec s = DISTSUP__V1__CHILD_SPEC__INIT;
    s.name = (char *)name;
    s.kind = (char *)kind;
    s.restart = restart;
    s.shutdown_ms = shutdown_ms;
    s.kill_immediately = kill_immediately;
    if (init) {
        s.init.data = (uint8_t *)init;
        s.init.len = strlen(init);
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

static struct child *hosted_x(const char *name, const char *kind, Distsup__V1__RestartType restart, int kill_now,
                              const char *init)
{
    assert_true(NK < MAXKIDS);
    struct child *ch = sv_child_new(&SV, make_spec(name, kind, restart, SHUTDOWN_MS, kill_now, init), &CFG, &F);
    assert_non_null(ch);
    assert_true(sv_hosted(ch));
    KIDS[NK++] = ch;
    return ch;
}

static struct child *hosted(const char *name, const char *kind, Distsup__V1__RestartType restart)
{
    return hosted_x(name, kind, restart, 0, NULL);
}

/* Starts ch; its Init goes to p: its number there. */
static uint64_t start_on(struct port *p, struct child *ch)
{
    unsigned before = count_frames(p, FC_INIT, 0);
    char err[256] = "";
    assert_int_equal(sv_start(&SV, ch, err, sizeof err), 0);
    assert_int_equal(count_frames(p, FC_INIT, 0), before + 1);
    const struct rec *r = last_frame(p, FC_INIT, 0);
    assert_string_equal(r->text, ch->name);
    assert_int_equal(ch->st, SV_STARTING);
    return r->child;
}

/* Starts ch on p and sends its Ready: its number there. */
static uint64_t run_on(struct port *p, struct child *ch)
{
    uint64_t num = start_on(p, ch);
    up_ready(p, num);
    assert_int_equal(ch->st, SV_RUNNING);
    return num;
}

/* The port whose last Init was for ch (NULL: none). */
static struct port *port_of(const struct child *ch, uint64_t *num)
{
    for (int i = 0; i < MAXPORTS; i++) {
        if (!P[i].used) continue;
        const struct rec *r = last_frame(&P[i], FC_INIT, ch->host_num);
        if (ch->host && P[i].s == ch->host && r && !strcmp(r->text, ch->name)) {
            if (num) *num = r->child;
            return &P[i];
        }
    }
    return NULL;
}

/* The core's tick (sv_tick of every child) and the sessions' timer (hosts_tick). */
static void tick_all(void)
{
    for (size_t i = 0; i < NK; i++)
        if (!KIDS[i]->dead) sv_tick(&SV, KIDS[i], F.now);
    hosts_tick(H, F.now);
}

/* ms pass, one at a time. */
static void advance(uint64_t ms)
{
    for (uint64_t i = 0; i < ms; i++) {
        F.now++;
        tick_all();
    }
}

static const struct ev *last_ev(const struct child *ch)
{
    for (unsigned i = F.n_ev; i-- > 0;)
        if (F.ev[i].ch == ch) return &F.ev[i];
    return NULL;
}

static void assert_contains(const char *s, const char *part)
{
    if (!strstr(s, part)) fail_msg("\"%s\" does not contain \"%s\"", s, part);
}

/* ---------- 1. hello and welcome ---------- */

static void test_hello_welcome(void **state)
{
    (void)state;
    struct port *p = attach();
    assert_int_equal(hosts_count(H), 1);
    assert_false(hosts_have_kind(H, "kv")); /* not before its hello */
    HELLO(p, 0, "kv");
    assert_int_equal(p->ends, 0);
    assert_int_equal(p->sends, 1);
    assert_int_equal(p->n, 1);
    assert_int_equal(p->r[0].what, R_WELCOME);
    assert_string_equal(p->r[0].node, "node1");
    assert_true(p->r[0].session[0] != 0);
    assert_int_equal(p->r[0].ping_ms, PING_MS);
    assert_int_equal(p->r[0].timeout_ms, TIMEOUT_MS);
    assert_int_equal(p->more, 2); /* asked for the next message */
    assert_true(hosts_have_kind(H, "kv"));

    up_pong(p, 1);
    assert_int_equal(p->more, 3);
    Distsup__V1__HostUp empty = DISTSUP__V1__HOST_UP__INIT;
    up(p, &empty);
    assert_int_equal(p->more, 4);
    assert_int_equal(p->sends, 1); /* nothing answers a pong */

    /* A second session: its own welcome, another session id. */
    struct port *q = HOST(0, "kv");
    assert_string_not_equal(q->r[0].session, p->r[0].session);
    assert_int_equal(q->more, 2);
    assert_int_equal(hosts_count(H), 2);

    /* Everything sent on a stream reads as one HostDown: the welcome, then the frames. */
    struct child *ch = hosted("c1", "kv", PERMANENT);
    char err[256];
    assert_int_equal(sv_start(&SV, ch, err, sizeof err), 0);
    struct port *on = port_of(ch, NULL);
    assert_non_null(on);
    up_ready(on, last_frame(on, FC_INIT, 0)->child);
    assert_int_equal(on->more, on == p ? 5 : 3);
    Distsup__V1__HostDown *all = distsup__v1__host_down__unpack(NULL, on->all_len, on->all);
    assert_non_null(all);
    assert_non_null(all->welcome);
    assert_string_equal(all->welcome->node, "node1");
    assert_int_equal(all->n_frames, 1);
    assert_int_equal(all->frames[0]->frame->frame_case, FC_INIT);
    assert_string_equal(all->frames[0]->kind, "kv");
    distsup__v1__host_down__free_unpacked(all, NULL);
}

/* ---------- 2. Init, Ready, Call, Reply ---------- */

struct ans {
    unsigned n;
    int code;
    char msg[512], payload[256], node[64];
};

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

static void test_init_ready_call_reply(void **state)
{
    (void)state;
    struct port *p = HOST(0, "other", "kv");
    struct child *ch = hosted_x("c1", "kv", PERMANENT, 0, "config");
    char err[256] = "";
    assert_int_equal(sv_start(&SV, ch, err, sizeof err), 0);
    assert_int_equal(ch->st, SV_STARTING);
    assert_int_equal(ch->proc.pid, SV_HOSTED_PID);
    assert_int_equal(count_frames(p, FC_INIT, 0), 1);
    const struct rec *r = last_frame(p, FC_INIT, 0);
    assert_true(r->child >= 1);
    assert_string_equal(r->kind, "kv");
    assert_string_equal(r->text, "c1");
    assert_string_equal(r->init, "config");
    assert_string_equal(r->state, "");
    assert_false(r->drop);
    uint64_t num = r->child;
    assert_int_equal(ch->host_num, num);
    assert_true(sv_open(&SV, ch));

    unsigned more = p->more;
    up_ready(p, num);
    assert_int_equal(ch->st, SV_RUNNING);
    assert_int_equal(p->more, more + 1);
    assert_int_equal(last_ev(ch)->kind, EV_START);

    /* A Call goes down as a call frame; the Reply up answers it. */
    struct ans a = {0};
    ProtobufCBinaryData q = {8, (uint8_t *)"question"};
    assert_int_equal(sv_call(&SV, ch, q, F.now + 5000, on_call, &a), 0);
    r = last_frame(p, FC_CALL, 0);
    assert_non_null(r);
    assert_int_equal(r->child, num);
    assert_string_equal(r->text, "question");
    assert_string_equal(r->kind, ""); /* the kind goes with Init only */
    assert_int_equal(a.n, 0);
    up_reply(p, num, r->ref, "answer", NULL, 0);
    assert_int_equal(a.n, 1);
    assert_int_equal(a.code, GRPC_STATUS_OK);
    assert_string_equal(a.payload, "answer");
    assert_string_equal(a.node, "node1");
    assert_int_equal(ch->n_calls, 0);

    /* A Reply with an error fails that call with its code. */
    struct ans b = {0};
    assert_int_equal(sv_call(&SV, ch, q, F.now + 5000, on_call, &b), 0);
    up_reply(p, num, last_frame(p, FC_CALL, 0)->ref, NULL, "no such key", GRPC_STATUS_NOT_FOUND);
    assert_int_equal(b.n, 1);
    assert_int_equal(b.code, GRPC_STATUS_NOT_FOUND);
    assert_contains(b.msg, "no such key");

    /* Casts and Sends go down as cast and info frames. */
    ProtobufCBinaryData c = {4, (uint8_t *)"cast"}, i = {4, (uint8_t *)"info"};
    assert_int_equal(sv_cast(&SV, ch, c, 0), 0);
    assert_int_equal(sv_cast(&SV, ch, i, 1), 0);
    assert_string_equal(last_frame(p, FC_CAST, num)->text, "cast");
    assert_string_equal(last_frame(p, FC_INFO, num)->text, "info");

    /* A second child gets another number. */
    struct child *c2 = hosted("c2", "kv", PERMANENT);
    uint64_t num2 = run_on(p, c2);
    assert_true(num2 != num);
    assert_int_equal(ch->st, SV_RUNNING);
    assert_int_equal(p->ends, 0);

    /* A refused send (the stream's queue is full) fails the Call at once. */
    p->send_fail = 1;
    struct ans d = {0};
    assert_int_equal(sv_call(&SV, ch, q, F.now + 5000, on_call, &d), -1);
    assert_int_equal(d.n, 0);
    p->send_fail = 0;
}

/* ---------- 3. exits and the restart policy ---------- */

static void test_abnormal_exit_restarts_with_last_state(void **state)
{
    (void)state;
    struct port *p = HOST(0, "kv");
    struct child *ch = hosted("c1", "kv", PERMANENT);
    uint64_t num = run_on(p, ch);
    up_state(p, num, "s1");
    up_state(p, num, "s2"); /* the last one is kept */
    unsigned more = p->more;
    up_exit(p, num, 0, "boom");
    assert_int_equal(p->more, more + 1);
    assert_int_equal(p->ends, 0);
    assert_int_equal(ch->st, SV_BACKOFF);
    assert_int_equal(F.removes, 0);
    const struct ev *e = last_ev(ch);
    assert_int_equal(e->kind, EV_RESTART);
    assert_contains(e->reason, "boom");
    assert_int_equal(ch->restarts, 1);
    assert_false(sv_open(&SV, ch));

    /* Its restart: a new Init, another number, the last State. */
    for (int i = 0; i < 5000 && count_frames(p, FC_INIT, 0) < 2; i++) advance(1);
    assert_int_equal(count_frames(p, FC_INIT, 0), 2);
    const struct rec *r = last_frame(p, FC_INIT, 0);
    assert_true(r->child > num);
    assert_string_equal(r->kind, "kv");
    assert_string_equal(r->text, "c1");
    assert_string_equal(r->state, "s2");
    assert_int_equal(ch->st, SV_STARTING);
    assert_int_equal(ch->incarnation, 2);
    assert_int_equal(count_frames(p, FC_DROP, 0), 0); /* it exited by itself: nothing to drop */

    /* An exit while STARTING (its init raised) restarts it too. */
    up_exit(p, r->child, 0, "init raised");
    assert_int_equal(ch->st, SV_BACKOFF);
    assert_contains(last_ev(ch)->reason, "init raised");
}

static void test_exit_restart_types(void **state)
{
    (void)state;
    struct port *p = HOST(0, "kv");
    struct {
        Distsup__V1__RestartType restart;
        int normal, removed;
    } cases[] = {
        {TRANSIENT, 1, 1}, {TRANSIENT, 0, 0}, {PERMANENT, 1, 0},
        {PERMANENT, 0, 0}, {TEMPORARY, 0, 1}, {TEMPORARY, 1, 1},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        char name[16];
        snprintf(name, sizeof name, "c%zu", i);
        struct child *ch = hosted(name, "kv", cases[i].restart);
        uint64_t num = run_on(p, ch);
        unsigned removes = F.removes;
        up_exit(p, num, cases[i].normal, "bye");
        assert_int_equal(p->ends, 0);
        if (cases[i].removed) {
            assert_int_equal(F.removes, removes + 1);
            assert_ptr_equal(F.removed, ch);
            assert_true(ch->dead);
            assert_int_equal(last_ev(ch)->kind, EV_STOP);
            assert_int_equal(last_ev(ch)->code, cases[i].normal ? 0 : 1);
            assert_contains(F.remove_reason, cases[i].normal ? "exited normally" : "exited abnormally");
        } else {
            assert_int_equal(F.removes, removes);
            assert_int_equal(ch->st, SV_BACKOFF);
            assert_int_equal(last_ev(ch)->kind, EV_RESTART);
        }
    }
}

/* ---------- 4. protocol violations ---------- */

/* A session of kind kv with a running PERMANENT child. */
static struct port *host_with_child(struct child **out, uint64_t *num)
{
    struct port *p = HOST(0, "kv");
    char name[32];
    snprintf(name, sizeof name, "c%zu", NK);
    *out = hosted(name, "kv", PERMANENT);
    *num = run_on(p, *out);
    return p;
}

/* p was refused with INVALID_ARGUMENT saying why; ch (if any) exited with it; the
 * session reads and sends nothing more. */
static void assert_refused(struct port *p, struct child *ch, const char *why)
{
    assert_int_equal(p->ends, 1);
    assert_int_equal(p->code, GRPC_STATUS_INVALID_ARGUMENT);
    assert_contains(p->msg, why);
    if (ch) {
        assert_int_equal(ch->st, SV_BACKOFF);
        assert_null(ch->host);
        const struct ev *e = last_ev(ch);
        assert_int_equal(e->kind, EV_RESTART);
        assert_contains(e->reason, "lost its host");
        assert_false(sv_open(&SV, ch));
    }
    unsigned more = p->more, sends = p->sends;
    up_pong(p, 99);
    assert_int_equal(p->more, more);
    assert_int_equal(p->sends, sends);
}

static void test_refuse_unknown_child(void **state)
{
    (void)state;
    struct child *other;
    uint64_t other_num;
    struct port *q = host_with_child(&other, &other_num); /* another session: unharmed */

    struct child *ch;
    uint64_t num;
    struct port *p = host_with_child(&ch, &num);
    unsigned more = p->more;
    up_ready(p, num + 1);
    assert_int_equal(p->more, more);
    assert_refused(p, ch, "never given");

    /* Child number 0 is never given either. */
    struct child *ch0;
    uint64_t num0;
    struct port *z = host_with_child(&ch0, &num0);
    up_state(z, 0, "x");
    assert_refused(z, ch0, "never given");

    /* An exit for a number never given is refused too. */
    struct child *ch1;
    uint64_t num1;
    struct port *y = host_with_child(&ch1, &num1);
    up_exit(y, num1 + 7, 0, "?");
    assert_refused(y, ch1, "never given");

    assert_int_equal(q->ends, 0);
    assert_int_equal(other->st, SV_RUNNING);
    assert_true(hosts_have_kind(H, "kv"));
    more = q->more;
    up_pong(q, 1);
    assert_int_equal(q->more, more + 1);
}

static void test_refuse_second_hello(void **state)
{
    (void)state;
    struct child *ch;
    uint64_t num;
    struct port *p = host_with_child(&ch, &num);
    HELLO(p, 0, "kv");
    assert_refused(p, ch, "hello came twice");
    assert_int_equal(count_what(p, R_WELCOME), 1);
    assert_false(hosts_have_kind(H, "kv"));
}

static void test_refuse_daemon_frames(void **state)
{
    (void)state;
    const int kinds[] = {FC_CALL, FC_INIT, FC_CAST, FC_INFO, FC_TERMINATE, DISTSUP__V1__CHILD_FRAME__FRAME__NOT_SET};
    for (size_t i = 0; i < sizeof kinds / sizeof *kinds; i++) {
        struct child *ch;
        uint64_t num;
        struct port *p = host_with_child(&ch, &num);
        up_daemon_frame(p, num, kinds[i]);
        assert_refused(p, ch, "hosts send only ready, reply, state and exit");
        gone(p);
        P[p - P].used = 0;
        free(p->all);
        memset(p, 0, sizeof *p);
    }
    /* A HostFrame with neither a frame nor an exit. */
    struct child *ch;
    uint64_t num;
    struct port *p = host_with_child(&ch, &num);
    Distsup__V1__HostFrame hf = DISTSUP__V1__HOST_FRAME__INIT;
    hf.child = num;
    Distsup__V1__HostFrame *one = &hf;
    up_frames(p, &one, 1);
    assert_refused(p, ch, "neither a frame nor an exit");
}

static void test_refuse_not_a_hostup(void **state)
{
    (void)state;
    struct child *ch;
    uint64_t num;
    struct port *p = host_with_child(&ch, &num);
    static const uint8_t junk[] = {0xff, 0xff, 0xff, 0xff, 0xff, 0xff};
    hosts_message(H, p->s, junk, sizeof junk);
    assert_refused(p, ch, "HostUp");

    /* A string that is not UTF-8 (hello.name) is refused before it is unpacked. */
    struct port *q = attach();
    Distsup__V1__HostHello hi = DISTSUP__V1__HOST_HELLO__INIT;
    char *kinds[] = {"kv"};
    hi.n_kinds = 1;
    hi.kinds = kinds;
    hi.name = "bad\xff";
    Distsup__V1__HostUp m = DISTSUP__V1__HOST_UP__INIT;
    m.hello = &hi;
    up(q, &m);
    assert_refused(q, NULL, "UTF-8");
    assert_int_equal(q->sends, 0);

    /* Junk as the first message. */
    struct port *r = attach();
    hosts_message(H, r->s, junk, sizeof junk);
    assert_refused(r, NULL, "HostUp");
    assert_false(hosts_have_kind(H, "kv"));
}

static void test_refuse_bad_hello(void **state)
{
    (void)state;
    struct port *p = attach();
    hello(p, NULL, 0, 0);
    assert_refused(p, NULL, "0 kinds");
    assert_int_equal(p->sends, 0); /* no welcome */

    struct port *q = attach();
    HELLO(q, 0, "kv", "bad kind");
    assert_refused(q, NULL, "hello.kinds[1]");

    struct port *r = attach();
    HELLO(r, 0, "");
    assert_refused(r, NULL, "hello.kinds[0]");

    struct port *s = attach();
    const char *many[65];
    for (int i = 0; i < 65; i++) many[i] = "kv";
    hello(s, many, 65, 0);
    assert_refused(s, NULL, "65 kinds");

    size_t n;
    const char **v;
    assert_int_equal(hosts_kinds(H, &v, &n), 0);
    assert_int_equal(n, 0);
    free(v);
    assert_false(hosts_have_kind(H, "kv"));

    /* 64 kinds are fine. */
    struct port *t = attach();
    hello(t, many, 64, 0);
    assert_int_equal(t->ends, 0);
    assert_true(hosts_have_kind(H, "kv"));
}

static void test_refuse_frames_before_hello(void **state)
{
    (void)state;
    /* A first message of frames only. */
    struct port *p = attach();
    up_ready(p, 1);
    assert_refused(p, NULL, "first message must carry hello");
    assert_int_equal(p->sends, 0);

    /* A first message of a pong only. */
    struct port *q = attach();
    up_pong(q, 1);
    assert_refused(q, NULL, "first message must carry hello");

    /* Hello with frames in the same first message. */
    struct port *r = attach();
    Distsup__V1__HostHello hi = DISTSUP__V1__HOST_HELLO__INIT;
    char *kinds[] = {"kv"};
    hi.n_kinds = 1;
    hi.kinds = kinds;
    Distsup__V1__Ready rd = DISTSUP__V1__READY__INIT;
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = FC_READY;
    f.ready = &rd;
    Distsup__V1__HostFrame hf = DISTSUP__V1__HOST_FRAME__INIT;
    hf.child = 1;
    hf.frame = &f;
    Distsup__V1__HostFrame *one = &hf;
    Distsup__V1__HostUp m = DISTSUP__V1__HOST_UP__INIT;
    m.hello = &hi;
    m.n_frames = 1;
    m.frames = &one;
    up(r, &m);
    assert_refused(r, NULL, "frames came with hello");
    assert_int_equal(r->sends, 0);
    assert_false(hosts_have_kind(H, "kv"));
}

/* ---------- 5. late frames ---------- */

static void test_late_frames_ignored(void **state)
{
    (void)state;
    struct port *p = HOST(0, "kv");
    struct child *ch = hosted("c1", "kv", PERMANENT);
    uint64_t num = run_on(p, ch);
    up_exit(p, num, 0, "crash");
    assert_int_equal(ch->st, SV_BACKOFF);

    /* Its old number was given: late frames for it are ignored. */
    unsigned more = p->more;
    up_ready(p, num);
    up_reply(p, num, 1, "late", NULL, 0);
    up_state(p, num, "late");
    up_exit(p, num, 0, "again");
    assert_int_equal(p->ends, 0);
    assert_int_equal(p->more, more + 4);
    assert_int_equal(ch->st, SV_BACKOFF);
    assert_int_equal(ch->restarts, 1);

    /* Restarted on the same session under a new number: the old number's frames do
     * not reach the new incarnation. */
    for (int i = 0; i < 5000 && count_frames(p, FC_INIT, 0) < 2; i++) advance(1);
    uint64_t num2 = last_frame(p, FC_INIT, 0)->child;
    assert_true(num2 != num);
    up_ready(p, num);
    assert_int_equal(ch->st, SV_STARTING);
    up_ready(p, num2);
    assert_int_equal(ch->st, SV_RUNNING);
    up_exit(p, num, 0, "stale exit");
    assert_int_equal(ch->st, SV_RUNNING);
    assert_int_equal(p->ends, 0);
    assert_true(hosts_have_kind(H, "kv"));

    /* Its State is its own: a stale one does not replace it. */
    up_state(p, num2, "fresh");
    up_state(p, num, "stale");
    up_exit(p, num2, 0, "crash");
    for (int i = 0; i < 5000 && count_frames(p, FC_INIT, 0) < 3; i++) advance(1);
    assert_string_equal(last_frame(p, FC_INIT, 0)->state, "fresh");
}

/* ---------- 6. stops ---------- */

static void test_stop_terminate_then_drop(void **state)
{
    (void)state;
    struct port *p = HOST(0, "kv");
    struct child *ch = hosted("c1", "kv", PERMANENT);
    uint64_t num = run_on(p, ch);
    uint64_t t0 = F.now;
    assert_int_equal(sv_stop(&SV, ch, SV_WHY_REMOVE, "terminated by test"), 1);
    const struct rec *r = last_frame(p, FC_TERMINATE, num);
    assert_non_null(r);
    assert_string_equal(r->text, "terminated by test");
    assert_int_equal(ch->st, SV_STOP_FRAME);
    unsigned n = p->n;

    /* Halfway: the state machine's SIGTERM step sends nothing to a host. */
    advance(SHUTDOWN_MS / 2);
    assert_int_equal(ch->st, SV_STOP_TERM);
    assert_int_equal(p->n, n);

    /* No Exit by shutdown_ms: a drop, and the child counts as killed. */
    while (F.now < t0 + SHUTDOWN_MS - 1) advance(1);
    assert_int_equal(count_frames(p, FC_DROP, 0), 0);
    F.now = t0 + SHUTDOWN_MS;
    sv_tick(&SV, ch, F.now);
    assert_int_equal(count_frames(p, FC_DROP, num), 1);
    r = last_frame(p, FC_DROP, num);
    assert_true(r->drop);
    assert_int_equal(ch->st, SV_STOP_KILL);
    assert_int_equal(F.removes, 0); /* its exit comes with the sessions' tick */
    assert_int_equal(timer_ms(), 1);
    hosts_tick(H, F.now);
    assert_int_equal(F.removes, 1);
    assert_ptr_equal(F.removed, ch);
    const struct ev *e = last_ev(ch);
    assert_int_equal(e->kind, EV_STOP);
    assert_int_equal(e->sig, SIGKILL);
    assert_int_equal(timer_ms(), 100); /* the session is attached */

    /* Its Exit, late: ignored. */
    up_state(p, num, "late");
    up_exit(p, num, 1, "too late");
    assert_int_equal(p->ends, 0);
    assert_int_equal(F.removes, 1);
}

static void test_stop_exit_in_time(void **state)
{
    (void)state;
    struct port *p = HOST(0, "kv");
    struct child *ch = hosted("c1", "kv", PERMANENT);
    uint64_t num = run_on(p, ch);
    assert_int_equal(sv_stop(&SV, ch, SV_WHY_REMOVE, "bye"), 1);
    assert_non_null(last_frame(p, FC_TERMINATE, num));
    advance(10);
    up_state(p, num, "handoff");
    up_exit(p, num, 1, "");
    assert_int_equal(F.removes, 1);
    assert_int_equal(last_ev(ch)->sig, 0);
    assert_int_equal(last_ev(ch)->code, 0);
    advance(2 * SHUTDOWN_MS);
    assert_int_equal(count_frames(p, FC_DROP, 0), 0);

    /* kill_immediately: dropped at once, killed at the next tick. */
    struct child *k = hosted_x("k1", "kv", PERMANENT, 1, NULL);
    uint64_t kn = run_on(p, k);
    assert_int_equal(sv_stop(&SV, k, SV_WHY_REMOVE, "now"), 1);
    assert_int_equal(count_frames(p, FC_TERMINATE, kn), 0);
    assert_int_equal(count_frames(p, FC_DROP, kn), 1);
    assert_int_equal(hosts_tick(H, F.now), 0);
    assert_int_equal(F.removes, 2);
    assert_int_equal(last_ev(k)->sig, SIGKILL);
}

/* ---------- 7. pings and silence ---------- */

static void test_pings_and_silence(void **state)
{
    (void)state;
    uint64_t t0 = F.now;
    struct port *p = HOST(0, "kv");
    struct child *ch = hosted("c1", "kv", PERMANENT);
    uint64_t num = run_on(p, ch);
    (void)num;
    advance(PING_MS - 1);
    assert_int_equal(count_what(p, R_PING), 0);
    advance(1);
    assert_int_equal(count_what(p, R_PING), 1);
    advance(2 * PING_MS);
    assert_int_equal(count_what(p, R_PING), 3);
    uint64_t last = 0;
    for (unsigned i = 0; i < p->n; i++)
        if (p->r[i].what == R_PING) {
            assert_int_equal(p->r[i].seq, last + 1);
            last = p->r[i].seq;
        }
    /* A pong is a sign of life: silence counts from the last message. */
    assert_int_equal(F.now, t0 + 3 * PING_MS);
    up_pong(p, 3);
    uint64_t heard = F.now;
    while (F.now < heard + TIMEOUT_MS - 1) advance(1);
    assert_int_equal(p->ends, 0);
    assert_int_equal(ch->st, SV_RUNNING);
    unsigned pings = count_what(p, R_PING);
    assert_int_equal(pings, 3 + (TIMEOUT_MS - 1) / PING_MS);
    advance(1);
    assert_int_equal(p->ends, 1);
    assert_int_equal(p->code, GRPC_STATUS_UNAVAILABLE);
    assert_contains(p->msg, "host_timeout_ms");
    assert_int_equal(ch->st, SV_BACKOFF);
    assert_contains(last_ev(ch)->reason, "lost its host");
    assert_false(hosts_have_kind(H, "kv"));
    /* Nothing more goes to it (p_send checks it too). */
    advance(3 * PING_MS);
    assert_int_equal(count_what(p, R_PING), pings);
    /* Its child, restarted, waits for a host. */
    assert_int_equal(ch->st, SV_IDLE);
    assert_int_equal(ch->host_wait, 1);
}

static void test_silence_before_hello(void **state)
{
    (void)state;
    uint64_t t0 = F.now;
    struct port *p = attach();
    while (F.now < t0 + TIMEOUT_MS - 1) advance(1);
    assert_int_equal(p->ends, 0);
    assert_int_equal(p->sends, 0); /* no pings before hello */
    advance(1);
    assert_int_equal(p->ends, 1);
    assert_int_equal(p->code, GRPC_STATUS_UNAVAILABLE);
    assert_int_equal(p->sends, 0);
}

/* ---------- 8. waiting for a host ---------- */

static void test_waits_for_kind(void **state)
{
    (void)state;
    struct child *a = hosted("a", "kv", PERMANENT);
    uint64_t t_a = F.now;
    sv_start_or_retry(&SV, a, "start");
    assert_int_equal(a->st, SV_IDLE);
    assert_int_equal(a->host_wait, 1);
    assert_int_equal(a->host_wait_since, t_a);
    assert_int_equal(a->incarnation, 0);
    assert_ptr_equal(hosts_first_waiting(H), a);
    assert_null(a->host_next);
    assert_int_equal(last_ev(a)->kind, EV_STOP);
    assert_contains(last_ev(a)->reason, "no host of kind 'kv'");

    F.now += 5;
    struct child *b = hosted("b", "kv", PERMANENT);
    char err[256];
    assert_int_equal(sv_start(&SV, b, err, sizeof err), SV_SPAWN_WAIT);
    assert_contains(err, "no host of kind 'kv' is attached to node node1");
    assert_int_equal(b->host_wait, 1);
    /* The list: newest first, oldest last. */
    assert_ptr_equal(hosts_first_waiting(H), b);
    assert_ptr_equal(b->host_next, a);

    /* A host of another kind does not start them. */
    struct port *o = HOST(0, "other");
    assert_int_equal(count_frames(o, FC_INIT, 0), 0);
    assert_int_equal(a->host_wait, 1);
    assert_ptr_equal(hosts_first_waiting(H), b);

    /* A host of their kind does, oldest first, after its welcome. */
    struct port *p = HOST(0, "other", "kv");
    assert_int_equal(p->r[0].what, R_WELCOME);
    assert_int_equal(count_frames(p, FC_INIT, 0), 2);
    assert_string_equal(p->r[1].text, "a");
    assert_string_equal(p->r[2].text, "b");
    assert_string_equal(p->r[1].kind, "kv");
    assert_int_equal(a->st, SV_STARTING);
    assert_int_equal(b->st, SV_STARTING);
    assert_int_equal(a->host_wait, 0);
    assert_int_equal(b->host_wait, 0);
    assert_null(hosts_first_waiting(H));
    up_ready(p, p->r[1].child);
    assert_int_equal(a->st, SV_RUNNING);
}

static void test_unwait(void **state)
{
    (void)state;
    struct child *a = hosted("a", "kv", PERMANENT);
    struct child *b = hosted("b", "kv", PERMANENT);
    sv_start_or_retry(&SV, a, "start");
    sv_start_or_retry(&SV, b, "start");
    hosts_unwait(H, a); /* the core moves it elsewhere */
    assert_int_equal(a->host_wait, 0);
    assert_ptr_equal(hosts_first_waiting(H), b);
    assert_null(b->host_next);
    struct port *p = HOST(0, "kv");
    assert_int_equal(count_frames(p, FC_INIT, 0), 1);
    assert_string_equal(last_frame(p, FC_INIT, 0)->text, "b");
    assert_int_equal(a->st, SV_IDLE);
    assert_null(hosts_first_waiting(H));
}

/* hooks.waiting runs from the sessions' tick while children wait, at most every
 * HOST_WAIT_SCAN_MS. */
static void test_waiting_hook(void **state)
{
    (void)state;
    assert_int_equal(timer_ms(), 0);
    struct port *o = HOST(0, "other");
    (void)o;
    assert_int_equal(timer_ms(), 100);
    hosts_tick(H, F.now);
    assert_int_equal(F.waiting, 0); /* nobody waits */
    struct child *a = hosted("a", "kv", PERMANENT);
    sv_start_or_retry(&SV, a, "start");
    hosts_tick(H, F.now);
    assert_int_equal(F.waiting, 1);
    assert_int_equal(F.waiting_now, F.now);
    advance(HOST_WAIT_SCAN_MS - 1);
    assert_int_equal(F.waiting, 1);
    advance(1);
    assert_int_equal(F.waiting, 2);
    advance(HOST_WAIT_SCAN_MS);
    assert_int_equal(F.waiting, 3);
}

/* ---------- 9. capacity ---------- */

static void test_capacity(void **state)
{
    (void)state;
    struct port *p = HOST(1, "kv");
    struct port *q = HOST(1, "kv");
    struct child *c1 = hosted("c1", "kv", PERMANENT);
    struct child *c2 = hosted("c2", "kv", PERMANENT);
    struct child *c3 = hosted("c3", "kv", PERMANENT);
    sv_start_or_retry(&SV, c1, "start");
    sv_start_or_retry(&SV, c2, "start");
    assert_int_equal(c1->st, SV_STARTING);
    assert_int_equal(c2->st, SV_STARTING);
    assert_int_equal(count_frames(p, FC_INIT, 0), 1);
    assert_int_equal(count_frames(q, FC_INIT, 0), 1);
    assert_ptr_not_equal(c1->host, c2->host);
    sv_start_or_retry(&SV, c3, "start");
    assert_int_equal(c3->st, SV_IDLE);
    assert_int_equal(c3->host_wait, 1);
    assert_contains(last_ev(c3)->reason, "at its capacity");
    assert_ptr_equal(hosts_first_waiting(H), c3);
    assert_int_equal(count_frames(p, FC_INIT, 0) + count_frames(q, FC_INIT, 0), 2);

    /* A third host of the kind with room takes it. */
    struct port *r = HOST(1, "kv");
    assert_int_equal(count_frames(r, FC_INIT, 0), 1);
    assert_string_equal(last_frame(r, FC_INIT, 0)->text, "c3");
    assert_int_equal(c3->st, SV_STARTING);
    assert_null(hosts_first_waiting(H));
}

static void test_fewest_children(void **state)
{
    (void)state;
    struct port *p = HOST(0, "kv");
    struct port *q = HOST(0, "kv");
    for (int i = 0; i < 6; i++) {
        char name[8];
        snprintf(name, sizeof name, "c%d", i);
        sv_start_or_retry(&SV, hosted(name, "kv", PERMANENT), "start");
    }
    assert_int_equal(count_frames(p, FC_INIT, 0), 3);
    assert_int_equal(count_frames(q, FC_INIT, 0), 3);
    /* A third, empty host gets the next ones until it has as many. */
    struct port *r = HOST(0, "kv");
    for (int i = 6; i < 9; i++) {
        char name[8];
        snprintf(name, sizeof name, "c%d", i);
        sv_start_or_retry(&SV, hosted(name, "kv", PERMANENT), "start");
    }
    assert_int_equal(count_frames(r, FC_INIT, 0), 3);
    assert_int_equal(count_frames(p, FC_INIT, 0), 3);
    assert_int_equal(count_frames(q, FC_INIT, 0), 3);
}

/* Many children on one session: their numbers find them after its table grew. */
static void test_many_children(void **state)
{
    (void)state;
    struct port *p = HOST(0, "kv");
    enum { N = 200 };
    uint64_t nums[N];
    for (int i = 0; i < N; i++) {
        char name[16];
        snprintf(name, sizeof name, "c%d", i);
        nums[i] = start_on(p, hosted(name, "kv", TRANSIENT));
    }
    for (int i = N; i-- > 0;) {
        up_ready(p, nums[i]);
        assert_int_equal(KIDS[i]->st, SV_RUNNING);
        if (i) assert_int_equal(KIDS[i - 1]->st, SV_STARTING);
    }
    for (int i = 0; i < N; i += 2) up_exit(p, nums[i], 1, "");
    assert_int_equal(F.removes, N / 2);
    for (int i = 0; i < N; i++) assert_int_equal(KIDS[i]->dead, i % 2 == 0);
    assert_int_equal(p->ends, 0);
}

/* ---------- 10. a session's end ---------- */

static void test_gone_restarts_elsewhere(void **state)
{
    (void)state;
    struct port *p = HOST(0, "kv");
    struct port *q = HOST(0, "kv");
    struct child *ch = hosted("c1", "kv", PERMANENT);
    sv_start_or_retry(&SV, ch, "start");
    uint64_t num;
    struct port *on = port_of(ch, &num);
    assert_non_null(on);
    struct port *other = on == p ? q : p;
    up_ready(on, num);
    up_state(on, num, "kept");
    assert_int_equal(count_frames(other, FC_INIT, 0), 0);

    gone(on);
    assert_int_equal(hosts_count(H), 1);
    assert_int_equal(on->ends, 0); /* the core ends the stream, not hosts_gone */
    assert_int_equal(ch->st, SV_BACKOFF);
    assert_contains(last_ev(ch)->reason, "lost its host");
    for (int i = 0; i < 5000 && count_frames(other, FC_INIT, 0) < 1; i++) advance(1);
    const struct rec *r = last_frame(other, FC_INIT, 0);
    assert_non_null(r);
    assert_string_equal(r->text, "c1");
    assert_string_equal(r->state, "kept");
    assert_int_equal(ch->st, SV_STARTING);
    assert_int_equal(ch->incarnation, 2);
    assert_int_equal(count_frames(on, FC_DROP, 0), 0);

    /* With none left, it waits; the next host of its kind starts it. */
    up_ready(other, r->child);
    gone(other);
    assert_int_equal(hosts_count(H), 0);
    advance(1000);
    assert_int_equal(ch->st, SV_IDLE);
    assert_int_equal(ch->host_wait, 1);
    assert_ptr_equal(hosts_first_waiting(H), ch);
    struct port *n = HOST(0, "kv");
    assert_int_equal(count_frames(n, FC_INIT, 0), 1);
    assert_string_equal(last_frame(n, FC_INIT, 0)->state, "kept");
}

static void test_gone_during_stop(void **state)
{
    (void)state;
    struct port *p = HOST(0, "kv");
    struct child *ch = hosted("c1", "kv", PERMANENT);
    run_on(p, ch);
    assert_int_equal(sv_stop(&SV, ch, SV_WHY_REMOVE, "bye"), 1);
    gone(p);
    /* Stopping to be removed: its host's end is its exit. */
    assert_int_equal(F.removes, 1);
    assert_ptr_equal(F.removed, ch);
    assert_int_equal(last_ev(ch)->kind, EV_STOP);
}

/* The core frees a child (sv_child_free): its host is told to drop it, and the
 * sessions forget it (its number, the waiting list). */
static void free_kid(struct child *ch)
{
    for (size_t i = 0; i < NK; i++)
        if (KIDS[i] == ch) {
            KIDS[i] = KIDS[--NK];
            sv_child_free(ch);
            return;
        }
    fail_msg("not a child of the test");
}

static void test_free_forgets(void **state)
{
    (void)state;
    struct port *p = HOST(0, "kv");
    struct child *ch = hosted("c1", "kv", PERMANENT);
    uint64_t num = run_on(p, ch);
    free_kid(ch);
    assert_int_equal(count_frames(p, FC_DROP, num), 1);
    assert_true(last_frame(p, FC_DROP, num)->drop);
    up_ready(p, num); /* late: ignored */
    up_exit(p, num, 0, "late");
    assert_int_equal(p->ends, 0);

    /* Waiting children leave the list when freed. */
    struct child *a = hosted("a", "other", PERMANENT);
    struct child *b = hosted("b", "other", PERMANENT);
    sv_start_or_retry(&SV, a, "start");
    sv_start_or_retry(&SV, b, "start");
    assert_ptr_equal(hosts_first_waiting(H), b);
    free_kid(b);
    assert_ptr_equal(hosts_first_waiting(H), a);
    free_kid(a);
    assert_null(hosts_first_waiting(H));
    struct port *q = HOST(0, "other");
    assert_int_equal(count_frames(q, FC_INIT, 0), 0);
}

/* ---------- 11. kinds ---------- */

static void assert_kinds(const char *want)
{
    const char **v;
    size_t n;
    assert_int_equal(hosts_kinds(H, &v, &n), 0);
    char got[256] = "";
    for (size_t i = 0; i < n; i++) {
        strcat(got, v[i]);
        strcat(got, ",");
    }
    free(v);
    assert_string_equal(got, want);
}

static void test_kinds(void **state)
{
    (void)state;
    assert_kinds("");
    struct port *s1 = HOST(0, "b", "a");
    assert_kinds("a,b,");
    assert_int_equal(F.kinds_changed, 1);
    assert_true(hosts_have_kind(H, "a"));
    assert_true(hosts_have_kind(H, "b"));
    assert_false(hosts_have_kind(H, "c"));

    struct port *s2 = HOST(0, "b", "c", "b");
    assert_kinds("a,b,c,");
    assert_int_equal(F.kinds_changed, 2);

    struct port *s3 = HOST(0, "a");
    assert_kinds("a,b,c,");
    assert_int_equal(F.kinds_changed, 2); /* nothing new */

    struct port *s4 = attach(); /* no hello yet: no kinds */
    assert_kinds("a,b,c,");
    assert_int_equal(F.kinds_changed, 2);
    gone(s4);
    assert_int_equal(F.kinds_changed, 2);

    gone(s3);
    assert_kinds("a,b,c,");
    assert_int_equal(F.kinds_changed, 2);

    gone(s1);
    assert_kinds("b,c,");
    assert_int_equal(F.kinds_changed, 3);
    assert_false(hosts_have_kind(H, "a"));

    /* A session that ends (refused) no longer counts, before hosts_gone. */
    HELLO(s2, 0, "b");
    assert_int_equal(s2->ends, 1);
    assert_kinds("");
    assert_int_equal(F.kinds_changed, 4);
    assert_false(hosts_have_kind(H, "b"));
    gone(s2);
    assert_int_equal(F.kinds_changed, 4);
    assert_int_equal(hosts_count(H), 0);
}

/* ---------- more: the session limit, the timer ---------- */

static void test_max_hosts(void **state)
{
    (void)state;
    for (unsigned i = 0; i < LIM.max_hosts; i++) attach();
    struct port *p = &P[LIM.max_hosts];
    struct host_port hp = {p, p_send, p_queued, p_more, p_end, p_release};
    p->used = 1;
    assert_null(hosts_attach(H, &hp));
    assert_int_equal(p->ends, 1);
    assert_int_equal(p->code, GRPC_STATUS_RESOURCE_EXHAUSTED);
    assert_contains(p->msg, "max_hosts");
    assert_int_equal(p->more, 0);
    assert_int_equal(hosts_count(H), LIM.max_hosts);
    /* One leaves: room for one more. */
    gone(&P[0]);
    p->ends = 0;
    p->s = hosts_attach(H, &hp);
    assert_non_null(p->s);
    assert_int_equal(p->more, 1);
    assert_int_equal(p->releases, 0); /* release is the core's, never host.c's */
}

static void test_timer(void **state)
{
    (void)state;
    assert_int_equal(timer_ms(), 0);
    struct port *p = attach();
    assert_int_equal(timer_ms(), 100);
    HELLO(p, 0, "kv");
    struct child *ch = hosted("c1", "kv", PERMANENT);
    run_on(p, ch);
    gone(p);
    assert_int_equal(timer_ms(), 0);
    /* hosts_tick says whether kills are due. */
    struct port *q = HOST(0, "kv");
    for (int i = 0; i < 5000 && ch->st != SV_STARTING; i++) advance(1);
    uint64_t num = last_frame(q, FC_INIT, 0)->child;
    up_ready(q, num);
    struct child *k = hosted_x("k", "kv", PERMANENT, 1, NULL);
    run_on(q, k);
    sv_stop(&SV, k, SV_WHY_REMOVE, "now");
    assert_int_equal(timer_ms(), 1);
    assert_int_equal(hosts_tick(H, F.now), 0);
    assert_int_equal(timer_ms(), 100);
    /* The loop runs the timer: its tick pings (real time: 100 ms). */
    F.now += PING_MS;
    unsigned pings = count_what(q, R_PING);
    for (int i = 0; i < 50 && count_what(q, R_PING) == pings; i++) loop_run_once(L, 100);
    assert_int_equal(count_what(q, R_PING), pings + 1);
    gone(q);
    assert_int_equal(timer_ms(), 0);
}

/* ---------- regressions: faults these tests found, fixed ---------- */

/* Was a bug: a child that waits because every host of its kind is at its capacity is never
 * started when one of them has room again: only a new hello (start_waiting) starts
 * waiting children.  docs/hosting.md: capacity is "the most children the host runs
 * at once", and a new child goes to the host "that has room". */
static void test_regression_capacity_room_frees(void **state)
{
    (void)state;
    struct port *p = HOST(1, "kv");
    struct child *c1 = hosted("c1", "kv", TRANSIENT);
    struct child *c2 = hosted("c2", "kv", TRANSIENT);
    uint64_t n1 = run_on(p, c1);
    sv_start_or_retry(&SV, c2, "start");
    assert_int_equal(c2->host_wait, 1);
    up_exit(p, n1, 1, "done"); /* c1 is gone for good: p has room */
    assert_true(c1->dead);
    advance(1000);
    /* c2 starts on p (it used to wait until a new hello) */
    assert_int_equal(count_frames(p, FC_INIT, 0), 2);
    assert_int_equal(c2->st, SV_STARTING);
}

/* Was a bug: the sessions' timer is not armed when a child starts waiting while no session
 * is attached, so hooks.waiting (the core's rehome_waiting, which moves it to a node
 * that has a host of its kind after host_grace_ms) never runs: h_spawn puts the child
 * on the waiting list without rearm(); rearm() itself says the timer runs "while
 * ... children wait and the core may move them".  In the daemon nothing else calls
 * hosts_tick, so after the last host of a node leaves its children wait there for
 * good instead of moving (docs/hosting.md: "after host_grace_ms on another node"). */
static void test_regression_waiting_without_timer(void **state)
{
    (void)state;
    struct port *p = HOST(0, "kv");
    struct child *ch = hosted("c1", "kv", PERMANENT);
    run_on(p, ch);
    gone(p); /* the last host leaves: the child restarts, after its backoff */
    assert_int_equal(ch->st, SV_BACKOFF);
    /* As the daemon: the core's tick runs the child; the sessions' tick only runs
     * from their timer. */
    for (int i = 0; i < 5000 && ch->st == SV_BACKOFF; i++) sv_tick(&SV, ch, ++F.now);
    assert_int_equal(ch->host_wait, 1);
    assert_ptr_equal(hosts_first_waiting(H), ch);
    /* armed (HOST_CHECK_MS), so the loop runs hooks.waiting (it used to be off) */
    assert_int_equal(timer_ms(), 100);
    for (int i = 0; i < 5 && !F.waiting; i++) loop_run_once(L, 200);
    assert_int_equal(F.waiting, 1);
}

/* Was a bug: hooks.kinds_changed fires although the kinds attached did not change: the
 * first check_kinds compares with no signature at all (kinds_sig NULL), so a session
 * that leaves or is refused before any hello ever came makes it fire with the set
 * still empty.  host.h: "The kinds attached here changed". */
static void test_regression_kinds_changed_nothing_changed(void **state)
{
    (void)state;
    struct port *p = attach();
    hello(p, NULL, 0, 0); /* refused: no kinds */
    assert_int_equal(p->ends, 1);
    assert_kinds("");
    /* 0: the set is empty as it was (it used to be 1) */
    assert_int_equal(F.kinds_changed, 0);
}

/* BUG (minor; the cause is supervise.c's a_stop_idle, which clears host_wait behind
 * host.c's back): a waiting child that is held back (sv_stop SUSPEND or PARK) stays on
 * the list hosts_first_waiting returns, with host_wait 0; host.h: "Each has host_wait
 * set". */
static void test_regression_held_back_still_listed(void **state)
{
    (void)state;
    struct child *ch = hosted("c1", "kv", PERMANENT);
    sv_start_or_retry(&SV, ch, "start");
    assert_ptr_equal(hosts_first_waiting(H), ch);
    assert_int_equal(sv_stop(&SV, ch, SV_WHY_SUSPEND, "no quorum"), 0);
    assert_int_equal(ch->host_wait, 0);
    /* off the list (it used to stay listed with host_wait 0) */
    for (struct child *w = hosts_first_waiting(H); w; w = w->host_next) assert_true(w->host_wait);
}

int main(void)
{
    log_set_level((enum log_level)(LOG_ERROR + 1)); /* quiet: the tests check what it does */
#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)
    const struct CMUnitTest tests[] = {
        T(test_hello_welcome),
        T(test_init_ready_call_reply),
        T(test_abnormal_exit_restarts_with_last_state),
        T(test_exit_restart_types),
        T(test_refuse_unknown_child),
        T(test_refuse_second_hello),
        T(test_refuse_daemon_frames),
        T(test_refuse_not_a_hostup),
        T(test_refuse_bad_hello),
        T(test_refuse_frames_before_hello),
        T(test_late_frames_ignored),
        T(test_stop_terminate_then_drop),
        T(test_stop_exit_in_time),
        T(test_pings_and_silence),
        T(test_silence_before_hello),
        T(test_waits_for_kind),
        T(test_unwait),
        T(test_waiting_hook),
        T(test_capacity),
        T(test_fewest_children),
        T(test_many_children),
        T(test_gone_restarts_elsewhere),
        T(test_gone_during_stop),
        T(test_free_forgets),
        T(test_kinds),
        T(test_max_hosts),
        T(test_timer),
        T(test_regression_capacity_room_frees),
        T(test_regression_waiting_without_timer),
        T(test_regression_kinds_changed_nothing_changed),
        T(test_regression_held_back_still_listed),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

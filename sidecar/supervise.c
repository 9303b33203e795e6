#include "sidecar/supervise.h"

#include <grpc/status.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "sidecar/log.h"
#include "sidecar/trace.h"

/* A line about child ch: JSON logs give its supervisor and name as fields. */
#define CH_LOG(level, ch, ...) \
    log_child(level, "supervise", (ch)->cfg ? (ch)->cfg->name : NULL, (ch)->name, __VA_ARGS__)

#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

/* What an event brings along. */
struct sv_input {
    int status;         /* SV_EV_EXIT: as waitpid gives it */
    int reaped;         /* SV_EV_EXIT: a real process was reaped (not a failed start) */
    enum sv_why why;    /* SV_EV_STOP */
    const char *reason; /* SV_EV_STOP */
    char *err;          /* SV_EV_START: why it did not start */
    size_t errlen;
    int rc;    /* SV_EV_START: 0 when it started */
    int quiet; /* SV_EV_EXIT: one of many (its host is gone): its restart is logged at DEBUG */
};

typedef void sv_action(struct sv *sv, struct child *ch, const struct sv_input *in);

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t now_ms(struct sv *sv) { return sv->hooks.now(sv->hooks.arg); }

/* The processes below ch: OS processes, or the hosts of its kind. */
static const struct sv_proc_ops *ops_of(const struct sv *sv, const struct child *ch)
{
    return sv_hosted(ch) && sv->hosted_ops ? sv->hosted_ops : sv->ops;
}

static void emit(struct sv *sv, struct child *ch, Distsup__V1__EventKind kind, int code, int sig, const char *reason)
{
    sv->hooks.event(sv->hooks.arg, ch, kind, code, sig, reason);
}

/* ---------- answers ---------- */

void sv_fail_calls(struct child *ch, int code, const char *why)
{
    struct pending_call *p = ch->calls;
    ch->calls = ch->calls_tail = NULL;
    ch->n_calls = 0;
    while (p) {
        struct pending_call *n = p->next;
        answer_fail(p->done, p->arg, code, "child '%s' %s before replying", ch->name, why);
        free(p);
        p = n;
    }
}

void sv_fail_start(struct child *ch, int code, const char *fmt, ...)
{
    if (!ch->start_done) return;
    answer_fn done = ch->start_done;
    ch->start_done = NULL;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    done(ch->start_arg, code, msg, NULL);
}

static void answer_start_now(const struct sv *sv, struct child *ch);

void sv_answer_start(const struct sv *sv, struct child *ch)
{
    if (!ch->start_done) return;
    if (sv->hooks.answer_durable) sv->hooks.answer_durable(sv->hooks.arg, ch);
    else answer_start_now(sv, ch);
}

void sv_answer_start_stored(const struct sv *sv, struct child *ch, int stored)
{
    if (!ch->start_done) return;
    if (!stored) {
        CH_LOG(LOG_ERROR, ch, "child %s runs, but its spec is not on disk: its StartChild fails, and it stops",
               ch->name);
        sv_fail_start(ch, GRPC_STATUS_INTERNAL,
                      "cannot save the spec of '%s' to the database (see the daemon log: a full disk?); it "
                      "was stopped",
                      ch->name);
        return;
    }
    answer_start_now(sv, ch);
}

static void answer_start_now(const struct sv *sv, struct child *ch)
{
    answer_fn done = ch->start_done;
    ch->start_done = NULL;
    Distsup__V1__ChildInfo info;
    sv_fill_info(sv, ch, &info);
    Distsup__V1__StartChildResponse r = DISTSUP__V1__START_CHILD_RESPONSE__INIT;
    r.child = &info;
    done(ch->start_arg, GRPC_STATUS_OK, NULL, &r.base);
}

void sv_answer_terminate(struct child *ch, int code, int sig)
{
    struct waiter *w = ch->term_waiters;
    ch->term_waiters = NULL;
    while (w) {
        struct waiter *n = w->next;
        Distsup__V1__TerminateChildResponse r = DISTSUP__V1__TERMINATE_CHILD_RESPONSE__INIT;
        r.name = ch->name;
        r.exit_code = code;
        r.signal = sig;
        w->done(w->arg, GRPC_STATUS_OK, NULL, &r.base);
        free(w);
        w = n;
    }
}

void sv_fail_terminate(struct child *ch, int code, const char *msg)
{
    struct waiter *w = ch->term_waiters;
    ch->term_waiters = NULL;
    while (w) {
        struct waiter *n = w->next;
        w->done(w->arg, code, msg, NULL);
        free(w);
        w = n;
    }
}

static void unlink_call(struct child *ch, struct pending_call *p)
{
    if (p->prev) p->prev->next = p->next;
    else ch->calls = p->next;
    if (p->next) p->next->prev = p->prev;
    else ch->calls_tail = p->prev;
    ch->n_calls--;
}

/* ---------- the actions ---------- */

static void a_nop(struct sv *sv, struct child *ch, const struct sv_input *in) { (void)sv, (void)ch, (void)in; }

/* A new incarnation: its process, its id, its Init frame. */
static int spawn_incarnation(struct sv *sv, struct child *ch, char *err, size_t errlen)
{
    char old_id[sizeof ch->id];
    memcpy(old_id, ch->id, sizeof old_id);
    ch->incarnation++;
    ch->start_timed_out = 0;
    snprintf(ch->id, sizeof ch->id, "%s/%llx.%llu", sv->node, (unsigned long long)sv->boot_ms,
             (unsigned long long)++sv->seq);
    int rc = ops_of(sv, ch)->spawn(sv, ch, err, errlen);
    if (rc != 0) { /* nothing ran: it is as it was */
        ch->incarnation--;
        memcpy(ch->id, old_id, sizeof old_id);
        return rc == SV_SPAWN_WAIT ? rc : -1;
    }
    ch->host_wait = 0;
    sv->live++;
    metrics_sup_inc(sv->metrics, ch->cfg, MC_STARTS);
    ch->started_at_wall = wall_ms();
    if (sv->hooks.spawned) sv->hooks.spawned(sv->hooks.arg, ch);
    if (ch->spec->protocol == DISTSUP__V1__PROTOCOL__NONE) {
        ch->st = SV_RUNNING;
        ch->timer_at = 0;
        emit(sv, ch, DISTSUP__V1__EVENT_KIND__PROCESS_START, 0, 0, "started");
        return 0;
    }
    ch->st = SV_STARTING;
    uint64_t now = now_ms(sv);
    ch->timer_at = now + ch->cfg->start_timeout_ms;
    ch->start_cut = 0;
    if (ch->answer_by && ch->answer_by < ch->timer_at) {
        /* Killing it, reaping it and the answer's trip take a moment: end the wait
         * that much before the StartChild's deadline. */
        uint64_t left = ch->answer_by > now ? ch->answer_by - now : 0;
        uint64_t margin = left > 300 ? 100 : left / 3;
        ch->timer_at = now + left - margin;
        ch->start_cut = 1;
    }
    ch->answer_by = 0;
    ch->start_wait_ms = (unsigned)(ch->timer_at - now);
    sv->hooks.tick(sv->hooks.arg, ch);
    Distsup__V1__Init init = DISTSUP__V1__INIT__INIT;
    init.name = ch->name;
    init.node = (char *)sv->node;
    init.supervisor = (char *)ch->cfg->name;
    init.id = ch->id;
    init.init = ch->spec->init;
    if (ch->state_blob) {
        init.state.data = ch->state_blob;
        init.state.len = ch->state_len;
    }
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_INIT;
    f.init = &init;
    if (ops_of(sv, ch)->send(ch, &f) != 0) CH_LOG(LOG_WARN, ch, "child %s: cannot send Init", ch->name);
    return 0;
}

static void exit_outcome(struct sv *sv, struct child *ch, const struct sv_input *in);

/* Start it now (IDLE, or BACKOFF before its time). */
static void a_start(struct sv *sv, struct child *ch, const struct sv_input *in)
{
    struct sv_input *io = (struct sv_input *)in; /* START's input carries the answer back */
    io->rc = spawn_incarnation(sv, ch, io->err, io->errlen);
}

/* Its restart time came (BACKOFF): a new incarnation, or another failure. */
static void a_restart(struct sv *sv, struct child *ch, const struct sv_input *in)
{
    (void)in;
    ch->timer_at = 0;
    sv_start_or_retry(sv, ch, "restart");
}

static void a_ready(struct sv *sv, struct child *ch, const struct sv_input *in)
{
    (void)in;
    ch->st = SV_RUNNING;
    ch->timer_at = 0;
    emit(sv, ch, DISTSUP__V1__EVENT_KIND__PROCESS_START, 0, 0, "ready");
    sv_answer_start(sv, ch);
}

/* No Ready in time.  The StartChild is answered when the process has been reaped
 * (exit_outcome), so that nothing of the child is left once the caller hears it failed. */
static void a_start_timeout(struct sv *sv, struct child *ch, const struct sv_input *in)
{
    (void)in;
    ch->start_timed_out = 1;
    ops_of(sv, ch)->kill(ch, "no Ready frame in time");
}

/* Begins an orderly stop: Terminate frame, then SIGTERM, then SIGKILL at shutdown_ms. */
static void a_stop(struct sv *sv, struct child *ch, const struct sv_input *in)
{
    uint64_t now = now_ms(sv);
    uint32_t grace = spec_shutdown_ms(ch->spec);
    ch->why = in->why;
    ch->kill_at = now + grace;
    if (grace == 0) {
        ops_of(sv, ch)->signal(ch, SIGKILL);
        ch->st = SV_STOP_KILL;
        ch->timer_at = 0;
        return;
    }
    if (ch->spec->protocol == DISTSUP__V1__PROTOCOL__FRAMES && ops_of(sv, ch)->stdin_open(ch)) {
        Distsup__V1__Terminate t = DISTSUP__V1__TERMINATE__INIT;
        t.reason = (char *)in->reason;
        Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
        f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_TERMINATE;
        f.terminate = &t;
        if (ops_of(sv, ch)->send(ch, &f) != 0) CH_LOG(LOG_WARN, ch, "child %s: cannot send Terminate", ch->name);
        ch->st = SV_STOP_FRAME;
        /* Half its shutdown_ms to hand off its state and leave by itself (a loaded
         * host may need more than a moment); SIGTERM then. */
        ch->timer_at = now + grace / 2;
    } else {
        ops_of(sv, ch)->signal(ch, SIGTERM);
        ch->st = SV_STOP_TERM;
        ch->timer_at = ch->kill_at;
    }
    sv->hooks.tick(sv->hooks.arg, ch);
}

/* Stopping already: a weightier reason takes over what its exit leads to. */
static void a_restop(struct sv *sv, struct child *ch, const struct sv_input *in)
{
    (void)sv;
    if (in->why > ch->why) ch->why = in->why;
}

/* Nothing runs: settle now. */
static void a_stop_idle(struct sv *sv, struct child *ch, const struct sv_input *in)
{
    ch->timer_at = 0;
    if (ch->host_wait) { /* held back, parked or removed: no host starts it */
        ch->host_wait = 0;
        if (ops_of(sv, ch)->release) ops_of(sv, ch)->release(ch);
    }
    if (in->why != SV_WHY_REMOVE) ch->st = SV_IDLE;
}

static void a_sigterm(struct sv *sv, struct child *ch, const struct sv_input *in)
{
    (void)in;
    ops_of(sv, ch)->signal(ch, SIGTERM);
    ch->st = SV_STOP_TERM;
    ch->timer_at = ch->kill_at;
}

static void a_sigkill(struct sv *sv, struct child *ch, const struct sv_input *in)
{
    (void)in;
    CH_LOG(LOG_WARN, ch, "child %s did not stop within shutdown_ms=%u; sending SIGKILL", ch->name,
           spec_shutdown_ms(ch->spec));
    ops_of(sv, ch)->signal(ch, SIGKILL);
    ch->st = SV_STOP_KILL;
}

static void a_exit(struct sv *sv, struct child *ch, const struct sv_input *in) { exit_outcome(sv, ch, in); }

/* The whole policy.  Rows: where the child is; columns: what happened. */
static sv_action *const actions[SV_NSTATES][SV_NEVENTS] = {
    /*                START      READY    EXIT    TIMEOUT          STOP */
    [SV_IDLE] = {a_start, a_nop, a_nop, a_nop, a_stop_idle},
    [SV_STARTING] = {a_nop, a_ready, a_exit, a_start_timeout, a_stop},
    [SV_RUNNING] = {a_nop, a_nop, a_exit, a_nop, a_stop},
    [SV_STOP_FRAME] = {a_nop, a_nop, a_exit, a_sigterm, a_restop},
    [SV_STOP_TERM] = {a_nop, a_nop, a_exit, a_sigkill, a_restop},
    [SV_STOP_KILL] = {a_nop, a_nop, a_exit, a_nop, a_restop},
    [SV_BACKOFF] = {a_start, a_nop, a_nop, a_restart, a_stop_idle},
    [SV_FAILED] = {a_nop, a_nop, a_nop, a_nop, a_nop},
};

static void dispatch(struct sv *sv, struct child *ch, enum sv_event ev, const struct sv_input *in)
{
    actions[ch->st][ev](sv, ch, in);
}

/* ---------- exits ---------- */

static void restart_or_fail(struct sv *sv, struct child *ch, int code, int sig, const char *reason, int quiet)
{
    const struct sup_config *cfg = ch->cfg;
    unsigned recent;
    uint64_t now = now_ms(sv);
    if (!restart_allow(&ch->win, cfg->max_restarts, (uint64_t)cfg->max_seconds * 1000, now, &recent)) {
        char why[256];
        snprintf(why, sizeof why, "%s; restart bound reached (%u restarts within %us)", reason, cfg->max_restarts,
                 cfg->max_seconds);
        CH_LOG(LOG_ERROR, ch, "child %s failed: %s; it will not be restarted", ch->name, why);
        metrics_sup_inc(sv->metrics, ch->cfg, MC_RESTART_BOUND);
        ch->st = SV_FAILED;
        ch->timer_at = 0;
        ch->proc.pid = 0;
        sv->hooks.persist(sv->hooks.arg, ch);
        emit(sv, ch, DISTSUP__V1__EVENT_KIND__PROCESS_FAILED, code, sig, why);
        return;
    }
    uint64_t delay = restart_backoff_ms(recent, cfg->backoff_ms, cfg->backoff_max_ms);
    ch->restarts++;
    metrics_sup_inc(sv->metrics, ch->cfg, MC_RESTARTS);
    CH_LOG(quiet ? LOG_DEBUG : LOG_WARN, ch, "child %s %s; restarting it in %llums (restart %u)", ch->name, reason,
           (unsigned long long)delay, ch->restarts);
    emit(sv, ch, DISTSUP__V1__EVENT_KIND__PROCESS_RESTART, code, sig, reason);
    ch->proc.pid = 0;
    ch->st = SV_BACKOFF;
    ch->timer_at = now + delay;
    sv->hooks.persist(sv->hooks.arg, ch);
    sv->hooks.tick(sv->hooks.arg, ch);
}

/* What an exit leads to: by the StartChild waiting for it, then by why it stopped. */
static void exit_outcome(struct sv *sv, struct child *ch, const struct sv_input *in)
{
    int status = in->status;
    if (in->reaped && sv->live) sv->live--;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    char reason[160];
    if (in->reason) snprintf(reason, sizeof reason, "%s", in->reason);
    else if (sig) snprintf(reason, sizeof reason, "killed by signal %d (%s)", sig, strsignal(sig));
    else snprintf(reason, sizeof reason, "exited with code %d", code);
    int normal = code == 0 && sig == 0;
    if (in->reaped)
        metrics_sup_inc(sv->metrics, ch->cfg, sig ? MC_EXITS_SIGNAL : normal ? MC_EXITS_NORMAL : MC_EXITS_ABNORMAL);
    sv_fail_calls(ch, GRPC_STATUS_UNAVAILABLE, normal ? "exited" : "died");
    ch->timer_at = 0;
    enum sv_why why = ch->why;
    ch->why = SV_WHY_NONE;

    if (ch->start_done || !in->reaped || ch->start_timed_out) metrics_sup_inc(sv->metrics, ch->cfg, MC_START_FAILURES);
    if (ch->start_done) { /* died before Ready: the StartChild fails, nothing is kept */
        if (ch->start_timed_out && ch->start_cut)
            sv_fail_start(ch, GRPC_STATUS_DEADLINE_EXCEEDED,
                          "child '%s' sent no Ready within %ums, when the request's deadline was near "
                          "(start_timeout_ms is %ums); it was killed. Does it speak the frame protocol? "
                          "Use protocol NONE for plain programs",
                          ch->name, ch->start_wait_ms, ch->cfg->start_timeout_ms);
        else if (ch->start_timed_out)
            sv_fail_start(ch, GRPC_STATUS_DEADLINE_EXCEEDED,
                          "child '%s' did not send Ready within %ums (start_timeout_ms); it was killed. "
                          "Does it speak the frame protocol? Use protocol NONE for plain programs",
                          ch->name, ch->cfg->start_timeout_ms);
        else
            sv_fail_start(ch, GRPC_STATUS_FAILED_PRECONDITION, "child '%s' %s before it was ready%s", ch->name, reason,
                          sv_hosted(ch) ? "" : " (see the daemon log for its stderr)");
        emit(sv, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, code, sig, reason);
        ch->term_code = code;
        ch->term_sig = sig;
        sv->hooks.remove(sv->hooks.arg, ch, "did not start");
        return;
    }
    switch (why) {
    case SV_WHY_MOVE: /* its State is captured: it starts on its new node */
        CH_LOG(LOG_INFO, ch, "child %s stopped to move (%s)", ch->name, reason);
        ch->proc.pid = 0;
        ch->st = SV_IDLE;
        sv->hooks.moved_out(sv->hooks.arg, ch);
        return;
    case SV_WHY_SUSPEND: /* no quorum: kept, to start when it is back */
        CH_LOG(LOG_INFO, ch, "child %s stopped for want of quorum (%s)", ch->name, reason);
        ch->st = SV_IDLE; /* before its event: the peers hear it is held back (not running) */
        emit(sv, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, code, sig, "stopped: this node has no quorum");
        ch->proc.pid = 0;
        return;
    case SV_WHY_REMOVE:
    case SV_WHY_PARK: {
        const char *w = ch->stop_reason ? ch->stop_reason : reason;
        CH_LOG(LOG_INFO, ch, "child %s stopped (%s)", ch->name, w);
        emit(sv, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, code, sig, w);
        if (why == SV_WHY_REMOVE) {
            /* its TerminateChild answers wait until the removal is on disk (the remover's) */
            ch->term_code = code;
            ch->term_sig = sig;
            sv->hooks.remove(sv->hooks.arg, ch, w);
        } else {
            sv_answer_terminate(ch, code, sig);
            ch->proc.pid = 0;
            ch->st = SV_IDLE;
        }
        return;
    }
    case SV_WHY_NONE: break;
    }
    int restart = ch->spec->restart == DISTSUP__V1__RESTART_TYPE__PERMANENT ||
        (ch->spec->restart == DISTSUP__V1__RESTART_TYPE__TRANSIENT && !normal);
    if (!restart) {
        CH_LOG(LOG_INFO, ch, "child %s %s; its restart type says it stays down", ch->name, reason);
        emit(sv, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, code, sig, reason);
        ch->term_code = code;
        ch->term_sig = sig;
        sv->hooks.remove(sv->hooks.arg, ch, reason);
        return;
    }
    restart_or_fail(sv, ch, code, sig, reason, in->quiet);
}

void sv_exited(struct sv *sv, struct child *ch, int status)
{
    struct sv_input in = {.status = status, .reaped = 1};
    dispatch(sv, ch, SV_EV_EXIT, &in);
}

void sv_exited_why(struct sv *sv, struct child *ch, int status, const char *reason, int quiet)
{
    struct sv_input in = {.status = status, .reaped = 1, .reason = reason, .quiet = quiet};
    dispatch(sv, ch, SV_EV_EXIT, &in);
}

/* ---------- the API ---------- */

int sv_start(struct sv *sv, struct child *ch, char *err, size_t errlen)
{
    struct sv_input in = {.err = err, .errlen = errlen, .rc = -1};
    snprintf(err, errlen, "child '%s' is %s, not idle", ch->name,
             protobuf_c_enum_descriptor_get_value(&distsup__v1__child_state__descriptor, sv_api_state(ch))->name);
    dispatch(sv, ch, SV_EV_START, &in);
    return in.rc;
}

void sv_start_or_retry(struct sv *sv, struct child *ch, const char *what)
{
    char err[512];
    int rc = sv_start(sv, ch, err, sizeof err);
    if (rc == 0) return;
    if (rc == SV_SPAWN_WAIT) { /* no host of its kind here: it waits for one (host.c set host_wait) */
        CH_LOG(LOG_DEBUG, ch, "child %s: %s; it waits for one", ch->name, err);
        ch->st = SV_IDLE;
        ch->timer_at = 0;
        emit(sv, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, 0, 0, err);
        return;
    }
    CH_LOG(LOG_ERROR, ch, "child %s: %s failed: %s", ch->name, what, err);
    struct sv_input in = {.status = 127 << 8}; /* counts as another abnormal exit */
    exit_outcome(sv, ch, &in);
}

int sv_stop(struct sv *sv, struct child *ch, enum sv_why why, const char *reason)
{
    int running = ch->proc.pid > 0;
    struct sv_input in = {.why = why, .reason = reason};
    dispatch(sv, ch, SV_EV_STOP, &in);
    return running;
}

void sv_frame(struct sv *sv, struct child *ch, const Distsup__V1__ChildFrame *f)
{
    switch (f->frame_case) {
    case DISTSUP__V1__CHILD_FRAME__FRAME_READY: dispatch(sv, ch, SV_EV_READY, NULL); break;
    case DISTSUP__V1__CHILD_FRAME__FRAME_REPLY: {
        const Distsup__V1__Reply *r = f->reply;
        struct pending_call *p = ch->calls;
        while (p && p->ref != r->ref) p = p->next;
        if (!p) {
            CH_LOG(LOG_DEBUG, ch, "child %s: reply to unknown or expired call %llu", ch->name,
                   (unsigned long long)r->ref);
            break;
        }
        unlink_call(ch, p);
        if (r->error && r->error[0]) {
            int code = r->code ? (int)r->code : GRPC_STATUS_UNKNOWN;
            if (code <= 0 || code > 16) code = GRPC_STATUS_UNKNOWN;
            answer_fail(p->done, p->arg, code, "child '%s': %s", ch->name, r->error);
        } else {
            Distsup__V1__CallResponse resp = DISTSUP__V1__CALL_RESPONSE__INIT;
            resp.payload = r->payload;
            resp.node = (char *)sv->node;
            p->done(p->arg, GRPC_STATUS_OK, NULL, &resp.base);
        }
        free(p);
        break;
    }
    case DISTSUP__V1__CHILD_FRAME__FRAME_STATE: {
        uint8_t *b = malloc(f->state->state.len ? f->state->state.len : 1);
        if (!b) {
            CH_LOG(LOG_ERROR, ch, "child %s: out of memory keeping its State (%zu bytes)", ch->name,
                   f->state->state.len);
            break;
        }
        if (f->state->state.len) memcpy(b, f->state->state.data, f->state->state.len); /* empty: data may be NULL */
        free(ch->state_blob);
        ch->state_blob = b;
        ch->state_len = f->state->state.len;
        break;
    }
    default:
        CH_LOG(LOG_WARN, ch, "child %s sent a frame of kind %d, which only the sidecar sends; ignored", ch->name,
               (int)f->frame_case);
        break;
    }
}

int sv_tick(struct sv *sv, struct child *ch, uint64_t now)
{
    int throttled = proc_throttle_tick(&ch->proc, now);
    if (ch->timer_at && now >= ch->timer_at) {
        ch->timer_at = 0;
        dispatch(sv, ch, SV_EV_TIMEOUT, NULL);
    }
    if (ch->dead) return 0;
    for (struct pending_call *p = ch->calls, *pn; p; p = pn) {
        pn = p->next;
        if (now < p->deadline) continue;
        unlink_call(ch, p);
        answer_fail(p->done, p->arg, GRPC_STATUS_DEADLINE_EXCEEDED, "child '%s' did not reply in time", ch->name);
        free(p);
    }
    return ch->timer_at || ch->calls || throttled;
}

/* The trace context to put in a frame: both NULL unless tr has a valid traceparent. */
static void trace_pick(const struct sv_trace *tr, char **parent, char **state)
{
    *parent = *state = NULL;
    if (!tr || !tr->parent || !trace_parent_valid(tr->parent, strlen(tr->parent))) return;
    *parent = (char *)tr->parent;
    if (tr->state && trace_state_valid(tr->state, strlen(tr->state))) *state = (char *)tr->state;
}

int sv_call(struct sv *sv, struct child *ch, ProtobufCBinaryData payload, uint64_t deadline, answer_fn done, void *arg)
{
    return sv_call_traced(sv, ch, payload, NULL, deadline, done, arg);
}

int sv_call_traced(struct sv *sv, struct child *ch, ProtobufCBinaryData payload, const struct sv_trace *tr,
                   uint64_t deadline, answer_fn done, void *arg)
{
    struct pending_call *p = calloc(1, sizeof *p);
    if (!p) return -1;
    p->ref = ch->next_ref++;
    p->deadline = deadline;
    p->done = done;
    p->arg = arg;
    Distsup__V1__CallFrame cf = DISTSUP__V1__CALL_FRAME__INIT;
    cf.ref = p->ref;
    cf.payload = payload;
    char *tp, *ts;
    trace_pick(tr, &tp, &ts);
    if (tp) cf.traceparent = tp;
    if (ts) cf.tracestate = ts;
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_CALL;
    f.call = &cf;
    if (ops_of(sv, ch)->send(ch, &f) != 0) {
        free(p);
        return -1;
    }
    p->prev = ch->calls_tail;
    if (ch->calls_tail) ch->calls_tail->next = p;
    else ch->calls = p;
    ch->calls_tail = p;
    ch->n_calls++;
    ch->delivered++;
    sv->hooks.tick(sv->hooks.arg, ch);
    return 0;
}

int sv_cast(struct sv *sv, struct child *ch, ProtobufCBinaryData payload, int info)
{
    return sv_cast_traced(sv, ch, payload, NULL, info);
}

int sv_cast_traced(struct sv *sv, struct child *ch, ProtobufCBinaryData payload, const struct sv_trace *tr, int info)
{
    Distsup__V1__CastFrame cf = DISTSUP__V1__CAST_FRAME__INIT;
    Distsup__V1__InfoFrame inf = DISTSUP__V1__INFO_FRAME__INIT;
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    char *tp, *ts;
    trace_pick(tr, &tp, &ts);
    if (info) {
        inf.payload = payload;
        if (tp) inf.traceparent = tp;
        if (ts) inf.tracestate = ts;
        f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_INFO;
        f.info = &inf;
    } else {
        cf.payload = payload;
        if (tp) cf.traceparent = tp;
        if (ts) cf.tracestate = ts;
        f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_CAST;
        f.cast = &cf;
    }
    if (ops_of(sv, ch)->send(ch, &f) != 0) return -1;
    ch->delivered++;
    return 0;
}

size_t sv_unsent(const struct child *ch)
{
    const struct sv *sv = ch->proc.arg;
    const struct sv_proc_ops *ops = sv ? ops_of(sv, ch) : NULL;
    return ops && ops->unsent ? ops->unsent(ch) : proc_unsent(&ch->proc);
}

int sv_open(const struct sv *sv, const struct child *ch) { return ops_of(sv, ch)->stdin_open(ch); }

Distsup__V1__ChildState sv_api_state(const struct child *ch)
{
    switch (ch->st) {
    case SV_STARTING: return DISTSUP__V1__CHILD_STATE__STARTING;
    case SV_RUNNING: return DISTSUP__V1__CHILD_STATE__RUNNING;
    case SV_STOP_FRAME:
    case SV_STOP_TERM:
    case SV_STOP_KILL: return DISTSUP__V1__CHILD_STATE__STOPPING;
    case SV_BACKOFF: return DISTSUP__V1__CHILD_STATE__RESTARTING;
    case SV_FAILED: return DISTSUP__V1__CHILD_STATE__FAILED;
    case SV_IDLE:
    default: return DISTSUP__V1__CHILD_STATE__SUSPENDED;
    }
}

void sv_fill_info(const struct sv *sv, const struct child *ch, Distsup__V1__ChildInfo *info)
{
    distsup__v1__child_info__init(info);
    info->supervisor = (char *)ch->cfg->name;
    info->name = ch->name;
    info->id = (char *)ch->id;
    info->node = (char *)sv->node;
    info->os_pid = sv_hosted(ch) ? 0 : ch->proc.pid;
    info->state = sv_api_state(ch);
    info->restarts = ch->restarts;
    info->started_at_ms = ch->started_at_wall;
    info->spec = ch->spec;
    info->incarnation = ch->incarnation;
    info->calls = ch->delivered;
    if (ch->rehomed_from) {
        info->rehomed_from = ch->rehomed_from;
        info->rehomed_from_incarnation = ch->rehomed_from_inc;
    }
}

/* ---------- children ---------- */

/* The proc layer calls back with the sv and the child's embedded proc. */
static struct child *child_of(struct proc *p) { return container_of(p, struct child, proc); }
static void on_proc_frame(void *arg, struct proc *p, Distsup__V1__ChildFrame *f) { sv_frame(arg, child_of(p), f); }
static void on_proc_exit(void *arg, struct proc *p, int status) { sv_exited(arg, child_of(p), status); }
static void on_proc_held(void *arg, struct proc *p)
{
    struct sv *sv = arg;
    sv->hooks.tick(sv->hooks.arg, child_of(p));
}
static const struct proc_hooks proc_hooks = {on_proc_frame, on_proc_exit, on_proc_held};

struct child *sv_child_new(struct sv *sv, Distsup__V1__ChildSpec *spec, const struct sup_config *cfg, void *owner)
{
    struct child *ch = calloc(1, sizeof *ch);
    if (!ch) return NULL;
    if (!(ch->name = strdup(spec->name))) {
        free(ch);
        return NULL;
    }
    ch->spec = spec;
    ch->cfg = cfg;
    ch->owner = owner;
    ch->st = SV_IDLE;
    ch->next_ref = 1;
    proc_init(&ch->proc, sv->loop, ch->name, &proc_hooks, sv);
    ch->proc.sup = cfg ? cfg->name : NULL;
    return ch;
}

void sv_child_free(struct child *ch)
{
    for (struct pending_call *p = ch->calls, *n; p; p = n) {
        n = p->next;
        free(p);
    }
    for (struct waiter *w = ch->term_waiters, *n; w; w = n) {
        n = w->next;
        free(w);
    }
    struct sv *sv = ch->proc.arg;
    if (sv && sv_hosted(ch) && sv->hosted_ops && sv->hosted_ops->release) sv->hosted_ops->release(ch);
    if (ch->proc.loop) proc_close(&ch->proc);
    if (ch->spec) distsup__v1__child_spec__free_unpacked(ch->spec, NULL);
    restart_window_free(&ch->win);
    free(ch->state_blob);
    free(ch->moving_to);
    free(ch->rehomed_from);
    free(ch->stop_reason);
    free(ch->name);
    free(ch);
}

/* ---------- the real processes ---------- */

static int os_spawn(struct sv *sv, struct child *ch, char *err, size_t errlen)
{
    const char *const extra[][2] = {
        {"DISTSUP_NAME", ch->name},
        {"DISTSUP_SUPERVISOR", ch->cfg->name},
        {"DISTSUP_NODE", sv->node},
        {"DISTSUP_ID", ch->id},
    };
    /* The data dir is no child's business: children without a cwd start in "/". */
    const struct sup_config *c = ch->cfg;
    struct proc_exec x = {.spec = ch->spec,
                          .cwd = "/",
                          .extra_env = extra,
                          .n_extra = 4,
                          .inherit_env = c->inherit_env,
                          .set_user = c->run_as_set,
                          .uid = c->run_uid,
                          .gid = c->run_gid,
                          .groups = c->run_groups,
                          .n_groups = c->n_run_groups,
                          .user = c->run_as,
                          .home = c->run_home};
    proc_set_output_rate(&ch->proc, ch->cfg->max_output_rate);
    return proc_spawn(&ch->proc, &x, err, errlen);
}

static int os_send(struct child *ch, const Distsup__V1__ChildFrame *f) { return proc_send(&ch->proc, f); }
static void os_signal(struct child *ch, int sig) { proc_signal(&ch->proc, sig); }
static void os_kill(struct child *ch, const char *why) { proc_kill(&ch->proc, why); }
static int os_stdin_open(const struct child *ch) { return proc_stdin_open(&ch->proc); }

const struct sv_proc_ops *sv_os_procs(void)
{
    static const struct sv_proc_ops ops = {os_spawn, os_send, os_signal, os_kill, os_stdin_open, NULL, NULL};
    return &ops;
}

void sv_init(struct sv *sv, const struct sv_proc_ops *ops, const struct sv_hooks *hooks, struct loop *loop,
             const char *node, const char *data_dir, uint64_t boot_ms)
{
    memset(sv, 0, sizeof *sv);
    sv->ops = ops;
    sv->hooks = *hooks;
    sv->loop = loop;
    sv->node = node;
    sv->data_dir = data_dir;
    sv->boot_ms = boot_ms;
}

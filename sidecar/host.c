#include "sidecar/host.h"

#include <grpc/status.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/timerfd.h>
#include <unistd.h>

#include "distsup/v1/supervisor.pb-c.h"
#include "sidecar/log.h"
#include "sidecar/spec.h"
#include "sidecar/wirecheck.h"

#define HOST_KINDS_MAX 64
#define HOST_NAME_MAX_LEN 256
#define HOST_LABELS_MAX 64
#define HOST_CHECK_MS 100 /* how often pings and silence are checked */
#define HOST_TAB_MIN 64
/* host_num of a child in no session: which list of struct hosts it is on. */
#define IN_NO_LIST 0
#define IN_WAITING UINT64_MAX
#define IN_DOOMED (UINT64_MAX - 1)

struct host_sess {
    struct host_sess *next, *prev;
    struct host_port port;
    uint64_t id;
    char *name;
    char **kinds;
    size_t n_kinds;
    uint32_t capacity;
    int hello; /* its hello came */
    int ended; /* its stream is ending: nothing more goes to it or comes from it */
    uint64_t next_num;
    struct child **tab; /* its children by number, chained through host_next */
    size_t tab_size, n;
    uint64_t heard, ping_at, ping_seq;
};

struct hosts {
    struct sv *sv;
    struct host_limits lim;
    const char *node;
    struct host_sess *sessions;
    size_t n_sessions;
    uint64_t next_id;
    struct child *waiting; /* children waiting for a host of their kind (host_wait) */
    struct child *doomed;  /* killed: their exit is due (not inside the state machine's action) */
    int tfd;
    struct loop_watch w;
    int armed_ms; /* the timer's period now (0: off) */
    struct host_hooks hooks;
    char *kinds_sig;    /* the kinds attached, as last told to hooks.kinds_changed */
    uint64_t next_scan; /* hooks.waiting runs next then */
};

static uint64_t now_ms(struct hosts *h) { return h->sv->hooks.now(h->sv->hooks.arg); }

/* ---------- lists and tables ---------- */

static void list_push(struct child **head, struct child *ch, uint64_t which)
{
    ch->host_num = which;
    ch->host_prev = NULL;
    ch->host_next = *head;
    if (*head) (*head)->host_prev = ch;
    *head = ch;
}

static void list_unlink(struct child **head, struct child *ch)
{
    if (ch->host_prev) ch->host_prev->host_next = ch->host_next;
    else if (*head == ch) *head = ch->host_next;
    if (ch->host_next) ch->host_next->host_prev = ch->host_prev;
    ch->host_next = ch->host_prev = NULL;
    ch->host_num = IN_NO_LIST;
}

static size_t slot_of(const struct host_sess *s, uint64_t num)
{
    return (size_t)(num * 0x9E3779B97F4A7C15ull) & (s->tab_size - 1);
}

static struct child *tab_find(const struct host_sess *s, uint64_t num)
{
    if (!s->tab_size) return NULL;
    for (struct child *ch = s->tab[slot_of(s, num)]; ch; ch = ch->host_next)
        if (ch->host_num == num) return ch;
    return NULL;
}

static int tab_grow(struct host_sess *s)
{
    size_t size = s->tab_size ? s->tab_size * 2 : HOST_TAB_MIN;
    struct child **t = calloc(size, sizeof *t);
    if (!t) return -1;
    struct child **old = s->tab;
    size_t old_size = s->tab_size;
    s->tab = t;
    s->tab_size = size;
    for (size_t i = 0; i < old_size; i++)
        for (struct child *ch = old[i], *n; ch; ch = n) {
            n = ch->host_next;
            size_t k = slot_of(s, ch->host_num);
            ch->host_next = t[k];
            t[k] = ch;
        }
    free(old);
    return 0;
}

static int tab_add(struct host_sess *s, struct child *ch)
{
    if (s->n >= s->tab_size && tab_grow(s) != 0) return -1;
    size_t k = slot_of(s, ch->host_num);
    ch->host_prev = NULL;
    ch->host_next = s->tab[k];
    s->tab[k] = ch;
    s->n++;
    ch->host = s;
    return 0;
}

static void tab_del(struct host_sess *s, struct child *ch)
{
    struct child **p = &s->tab[slot_of(s, ch->host_num)];
    while (*p && *p != ch) p = &(*p)->host_next;
    if (*p) {
        *p = ch->host_next;
        s->n--;
    }
    ch->host_next = ch->host_prev = NULL;
    ch->host = NULL;
    ch->host_num = IN_NO_LIST;
}

/* Takes ch out of whatever it is in: its session, the waiting list, the doomed list. */
static void detach(struct hosts *h, struct child *ch)
{
    if (ch->host) tab_del(ch->host, ch);
    else if (ch->host_num == IN_WAITING) list_unlink(&h->waiting, ch);
    else if (ch->host_num == IN_DOOMED) list_unlink(&h->doomed, ch);
}

/* ---------- the timer ---------- */

static void arm(struct hosts *h, int ms)
{
    if (h->tfd < 0 || ms == h->armed_ms) return;
    struct itimerspec it = {0};
    if (ms > 0) {
        it.it_value.tv_sec = ms / 1000;
        it.it_value.tv_nsec = (long)(ms % 1000) * 1000000L;
        it.it_interval = it.it_value;
    }
    if (timerfd_settime(h->tfd, 0, &it, NULL) != 0) log_error("host", "timerfd_settime: %m");
    else h->armed_ms = ms;
}

/* 1 ms while kills are due, HOST_CHECK_MS while sessions are attached (or children
 * wait and the core may move them), else off. */
static void rearm(struct hosts *h)
{
    arm(h, h->doomed ? 1 : h->sessions || (h->waiting && h->hooks.waiting) ? HOST_CHECK_MS : 0);
}

static void on_timer(struct loop_watch *w, uint32_t events)
{
    (void)events;
    struct hosts *h = (struct hosts *)((char *)w - offsetof(struct hosts, w));
    uint64_t n;
    if (read(h->tfd, &n, sizeof n) < 0) { /* EAGAIN: nothing yet */
    }
    hosts_tick(h, now_ms(h));
}

/* ---------- sending ---------- */

static int send_down(struct host_sess *s, const Distsup__V1__HostDown *m)
{
    if (s->ended) return -1;
    size_t len = distsup__v1__host_down__get_packed_size(m);
    uint8_t small[512];
    uint8_t *buf = len <= sizeof small ? small : malloc(len);
    if (!buf) return -1;
    distsup__v1__host_down__pack(m, buf);
    int rc = s->port.send(s->port.arg, buf, len);
    if (buf != small) free(buf);
    return rc;
}

static int send_frame(struct host_sess *s, uint64_t num, const Distsup__V1__ChildFrame *f, const char *kind, int drop)
{
    Distsup__V1__HostFrame hf = DISTSUP__V1__HOST_FRAME__INIT;
    hf.child = num;
    hf.frame = (Distsup__V1__ChildFrame *)f;
    if (kind) hf.kind = (char *)kind;
    hf.drop = drop;
    Distsup__V1__HostFrame *one = &hf;
    Distsup__V1__HostDown m = DISTSUP__V1__HOST_DOWN__INIT;
    m.n_frames = 1;
    m.frames = &one;
    return send_down(s, &m);
}

/* ---------- sessions ---------- */

/* Tells the core when the kinds attached here changed. */
static void check_kinds(struct hosts *h)
{
    const char **v;
    size_t n;
    if (!h->hooks.kinds_changed || hosts_kinds(h, &v, &n) != 0) return;
    size_t len = 1;
    for (size_t i = 0; i < n; i++) len += strlen(v[i]) + 1;
    char *sig = malloc(len);
    if (!sig) {
        free(v);
        return;
    }
    sig[0] = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) at += (size_t)snprintf(sig + at, len - at, "%s,", v[i]);
    free(v);
    if (h->kinds_sig && !strcmp(h->kinds_sig, sig)) {
        free(sig);
        return;
    }
    free(h->kinds_sig);
    h->kinds_sig = sig;
    h->hooks.kinds_changed(h->hooks.arg);
}

static void sess_free(struct host_sess *s)
{
    for (size_t i = 0; i < s->n_kinds; i++) free(s->kinds[i]);
    free(s->kinds);
    free(s->name);
    free(s->tab);
    free(s);
}

static int has_kind(const struct host_sess *s, const char *kind)
{
    for (size_t i = 0; i < s->n_kinds; i++)
        if (!strcmp(s->kinds[i], kind)) return 1;
    return 0;
}

/* Its children exit (their host went away: an abnormal exit, restart policy), now. */
static void sess_drop_children(struct hosts *h, struct host_sess *s, const char *why)
{
    if (!s->n) return;
    struct child **all = malloc(s->n * sizeof *all);
    size_t n = 0;
    for (size_t i = 0; i < s->tab_size; i++)
        for (struct child *ch = s->tab[i]; ch; ch = ch->host_next)
            if (all) all[n++] = ch;
    if (!all) { /* out of memory: one at a time, from the table's head */
        for (size_t i = 0; i < s->tab_size; i++)
            while (s->tab[i]) {
                struct child *ch = s->tab[i];
                tab_del(s, ch);
                sv_exited_why(h->sv, ch, SIGKILL, why, 1);
            }
        return;
    }
    for (size_t i = 0; i < n; i++) tab_del(s, all[i]);
    log_warn("host", "host session %" PRIu64 " (%s) is gone: its %zu children exit (%s)", s->id, s->name ? s->name : "",
             n, why);
    for (size_t i = 0; i < n; i++) sv_exited_why(h->sv, all[i], SIGKILL, why, 1);
    free(all);
}

/* Ends its stream with a status and lets its children go (the stream's close comes
 * later: hosts_gone). */
static void sess_end(struct hosts *h, struct host_sess *s, int code, const char *msg)
{
    if (s->ended) return;
    s->ended = 1;
    metrics_add(h->sv->metrics, code == GRPC_STATUS_UNAVAILABLE ? MN_HOSTS_TIMEOUT : MN_HOSTS_REFUSED, 1);
    log_warn("host", "host session %" PRIu64 " (%s) ended: %s", s->id, s->name ? s->name : "", msg);
    s->port.end(s->port.arg, code, msg);
    sess_drop_children(h, s, "lost its host");
    check_kinds(h);
}

struct host_sess *hosts_attach(struct hosts *h, const struct host_port *port)
{
    if (h->n_sessions >= h->lim.max_hosts) {
        char msg[160];
        snprintf(msg, sizeof msg, "%u hosts are attached to this node already (max_hosts)", h->lim.max_hosts);
        metrics_add(h->sv->metrics, MN_HOSTS_REFUSED, 1);
        log_warn("host", "refused a host: %s", msg);
        port->end(port->arg, GRPC_STATUS_RESOURCE_EXHAUSTED, msg);
        return NULL;
    }
    struct host_sess *s = calloc(1, sizeof *s);
    if (!s) {
        port->end(port->arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return NULL;
    }
    s->port = *port;
    s->id = ++h->next_id;
    s->heard = now_ms(h);
    s->next = h->sessions;
    if (h->sessions) h->sessions->prev = s;
    h->sessions = s;
    h->n_sessions++;
    rearm(h);
    s->port.more(s->port.arg);
    return s;
}

void hosts_gone(struct hosts *h, struct host_sess *s)
{
    if (!s->ended) {
        s->ended = 1;
        metrics_add(h->sv->metrics, MN_HOSTS_LEFT, 1);
        log_info("host", "host session %" PRIu64 " (%s) left", s->id, s->name ? s->name : "");
        sess_drop_children(h, s, "lost its host");
    }
    if (s->prev) s->prev->next = s->next;
    else h->sessions = s->next;
    if (s->next) s->next->prev = s->prev;
    h->n_sessions--;
    sess_free(s);
    check_kinds(h);
    rearm(h);
}

/* The children waiting for one of s's kinds start now (on s, or another host). */
static void start_waiting(struct hosts *h, struct host_sess *s)
{
    struct child *list = NULL;
    for (struct child *ch = h->waiting, *n; ch; ch = n) {
        n = ch->host_next;
        if (!has_kind(s, ch->spec->kind)) continue;
        list_unlink(&h->waiting, ch);
        list_push(&list, ch, IN_WAITING);
    }
    size_t started = 0;
    while (list) {
        struct child *ch = list;
        list_unlink(&list, ch);
        if (!ch->host_wait || ch->dead || ch->st != SV_IDLE) continue; /* held back, removed or started since */
        sv_start_or_retry(h->sv, ch, "start on a host");
        started++;
    }
    if (started)
        log_info("host", "host session %" PRIu64 " (%s): started %zu children that waited for a host", s->id,
                 s->name ? s->name : "", started);
}

static int on_hello(struct hosts *h, struct host_sess *s, const Distsup__V1__HostHello *hi, char *why, size_t wl)
{
    if (hi->n_kinds == 0 || hi->n_kinds > HOST_KINDS_MAX) {
        snprintf(why, wl, "hello names %zu kinds; give 1 to %d", hi->n_kinds, HOST_KINDS_MAX);
        return -1;
    }
    if (strlen(hi->name) > HOST_NAME_MAX_LEN) {
        snprintf(why, wl, "hello.name is longer than %d bytes", HOST_NAME_MAX_LEN);
        return -1;
    }
    if (hi->n_labels > HOST_LABELS_MAX) {
        snprintf(why, wl, "hello has %zu labels; the limit is %d", hi->n_labels, HOST_LABELS_MAX);
        return -1;
    }
    char err[256];
    for (size_t i = 0; i < hi->n_kinds; i++)
        if (spec_name_check("kind", hi->kinds[i], err, sizeof err) != 0) {
            snprintf(why, wl, "hello.kinds[%zu]: %s", i, err);
            return -1;
        }
    if (!(s->kinds = calloc(hi->n_kinds, sizeof *s->kinds)) || !(s->name = strdup(hi->name))) {
        snprintf(why, wl, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < hi->n_kinds; i++) {
        if (!(s->kinds[i] = strdup(hi->kinds[i]))) {
            snprintf(why, wl, "out of memory");
            return -1;
        }
        s->n_kinds++;
    }
    s->capacity = hi->capacity;
    s->hello = 1;
    char sid[32];
    snprintf(sid, sizeof sid, "%" PRIu64, s->id);
    Distsup__V1__HostWelcome w = DISTSUP__V1__HOST_WELCOME__INIT;
    w.node = (char *)h->node;
    w.session = sid;
    w.ping_ms = h->lim.ping_ms;
    w.timeout_ms = h->lim.timeout_ms;
    Distsup__V1__HostDown m = DISTSUP__V1__HOST_DOWN__INIT;
    m.welcome = &w;
    send_down(s, &m);
    s->ping_at = now_ms(h) + h->lim.ping_ms;
    char kinds[512] = "";
    size_t at = 0;
    for (size_t i = 0; i < s->n_kinds && at < sizeof kinds; i++)
        at += (size_t)snprintf(kinds + at, sizeof kinds - at, "%s%s", i ? "," : "", s->kinds[i]);
    log_info("host", "host session %" PRIu64 " (%s) attached: kinds %s, capacity %u", s->id, s->name, kinds,
             s->capacity);
    start_waiting(h, s);
    check_kinds(h);
    return 0;
}

/* A child left s: if s has a capacity, a child waiting for room on a host of its kind
 * starts now (one at a time, oldest first, while s has room). */
static void room_freed(struct hosts *h, struct host_sess *s)
{
    if (!s->capacity || s->ended) return;
    struct child *oldest = NULL;
    while (s->n < s->capacity) {
        oldest = NULL;
        for (struct child *ch = h->waiting; ch; ch = ch->host_next)
            if (ch->host_wait && !ch->dead && ch->st == SV_IDLE && has_kind(s, ch->spec->kind)) oldest = ch;
        if (!oldest) return;
        size_t before = s->n;
        sv_start_or_retry(h->sv, oldest, "start on a host with room");
        if (s->n == before) return; /* it went elsewhere, or did not start: do not spin */
    }
}

/* One frame from the app.  0, or -1 with why: the host broke the protocol. */
static int on_frame(struct hosts *h, struct host_sess *s, const Distsup__V1__HostFrame *hf, char *why, size_t wl)
{
    if (hf->child == 0 || hf->child > s->next_num) {
        snprintf(why, wl, "a frame for child %" PRIu64 ", which this host was never given", hf->child);
        return -1;
    }
    struct child *ch = tab_find(s, hf->child);
    if (hf->exit) {
        if (!ch) return 0; /* dropped (killed, restarted) before its exit came: nothing to do */
        const Distsup__V1__HostExit *e = hf->exit;
        char reason[160];
        if (e->normal) snprintf(reason, sizeof reason, "exited normally%s%.120s", e->reason[0] ? ": " : "", e->reason);
        else snprintf(reason, sizeof reason, "exited abnormally: %.120s", e->reason[0] ? e->reason : "(no reason)");
        tab_del(s, ch);
        sv_exited_why(h->sv, ch, e->normal ? 0 : 1 << 8, reason, 0);
        room_freed(h, s);
        return 0;
    }
    if (!hf->frame) {
        snprintf(why, wl, "a frame for child %" PRIu64 " with neither a frame nor an exit", hf->child);
        return -1;
    }
    switch (hf->frame->frame_case) {
    case DISTSUP__V1__CHILD_FRAME__FRAME_READY:
    case DISTSUP__V1__CHILD_FRAME__FRAME_REPLY:
    case DISTSUP__V1__CHILD_FRAME__FRAME_STATE: break;
    default:
        snprintf(why, wl, "a frame of kind %d for child %" PRIu64 ": hosts send only ready, reply, state and exit",
                 (int)hf->frame->frame_case, hf->child);
        return -1;
    }
    if (!ch) return 0; /* it was dropped: its late answers go nowhere */
    sv_frame(h->sv, ch, hf->frame);
    return 0;
}

void hosts_message(struct hosts *h, struct host_sess *s, const uint8_t *data, size_t len)
{
    if (s->ended) return;
    s->heard = now_ms(h);
    char why[400];
    if (wirecheck_strings(&distsup__v1__host_up__descriptor, data, len, why, sizeof why) != 0) {
        sess_end(h, s, GRPC_STATUS_INVALID_ARGUMENT, why);
        return;
    }
    Distsup__V1__HostUp *m = distsup__v1__host_up__unpack(NULL, len, data);
    if (!m) {
        sess_end(h, s, GRPC_STATUS_INVALID_ARGUMENT, "malformed message: not a distsup.v1.HostUp");
        return;
    }
    int bad = 0;
    if (!s->hello) {
        if (!m->hello) {
            snprintf(why, sizeof why, "the first message must carry hello (the kinds this host runs)");
            bad = 1;
        } else if (m->n_frames) {
            snprintf(why, sizeof why, "frames came with hello, before any child was given");
            bad = 1;
        } else {
            bad = on_hello(h, s, m->hello, why, sizeof why) != 0;
        }
    } else if (m->hello) {
        snprintf(why, sizeof why, "hello came twice: it is the first message only");
        bad = 1;
    }
    for (size_t i = 0; !bad && i < m->n_frames && !s->ended; i++)
        bad = on_frame(h, s, m->frames[i], why, sizeof why) != 0;
    distsup__v1__host_up__free_unpacked(m, NULL);
    if (bad) {
        sess_end(h, s, GRPC_STATUS_INVALID_ARGUMENT, why);
        return;
    }
    if (!s->ended) s->port.more(s->port.arg);
}

int hosts_tick(struct hosts *h, uint64_t now)
{
    while (h->doomed) {
        struct child *ch = h->doomed;
        list_unlink(&h->doomed, ch);
        sv_exited_why(h->sv, ch, SIGKILL, "killed (its host was told to drop it)", 0);
    }
    for (struct host_sess *s = h->sessions; s; s = s->next) {
        if (s->ended) continue;
        if (now - s->heard >= h->lim.timeout_ms) {
            char msg[160];
            snprintf(msg, sizeof msg, "the host sent nothing for %u ms (host_timeout_ms): taken for gone",
                     h->lim.timeout_ms);
            sess_end(h, s, GRPC_STATUS_UNAVAILABLE, msg);
            continue;
        }
        if (s->hello && now >= s->ping_at) {
            Distsup__V1__HostPing p = DISTSUP__V1__HOST_PING__INIT;
            p.seq = ++s->ping_seq;
            Distsup__V1__HostDown m = DISTSUP__V1__HOST_DOWN__INIT;
            m.ping = &p;
            send_down(s, &m);
            s->ping_at = now + h->lim.ping_ms;
        }
    }
    if (h->waiting && h->hooks.waiting && now >= h->next_scan) {
        h->next_scan = now + HOST_WAIT_SCAN_MS;
        h->hooks.waiting(h->hooks.arg, now);
    }
    rearm(h);
    return h->doomed != NULL;
}

/* ---------- the children's ops ---------- */

static int h_spawn(struct sv *sv, struct child *ch, char *err, size_t errlen)
{
    struct hosts *h = sv->hosts;
    detach(h, ch);
    struct host_sess *best = NULL;
    int full = 0;
    for (struct host_sess *s = h->sessions; s; s = s->next) {
        if (s->ended || !s->hello || !has_kind(s, ch->spec->kind)) continue;
        if (s->capacity && s->n >= s->capacity) {
            full = 1;
            continue;
        }
        if (!best || s->n < best->n) best = s;
    }
    if (!best) {
        if (full)
            snprintf(err, errlen, "every host of kind '%s' on node %s is at its capacity", ch->spec->kind, h->node);
        else snprintf(err, errlen, "no host of kind '%s' is attached to node %s", ch->spec->kind, h->node);
        if (!ch->host_wait) ch->host_wait_since = now_ms(h);
        ch->host_wait = 1;
        list_push(&h->waiting, ch, IN_WAITING);
        rearm(h); /* the core may move it (hooks.waiting) */
        return SV_SPAWN_WAIT;
    }
    ch->host_num = ++best->next_num;
    if (tab_add(best, ch) != 0) {
        best->next_num--;
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    ch->host_wait = 0;
    ch->proc.pid = SV_HOSTED_PID;
    return 0;
}

static int h_send(struct child *ch, const Distsup__V1__ChildFrame *f)
{
    struct host_sess *s = ch->host;
    if (!s) return -1;
    const char *kind = f->frame_case == DISTSUP__V1__CHILD_FRAME__FRAME_INIT ? ch->spec->kind : NULL;
    return send_frame(s, ch->host_num, f, kind, 0);
}

static void h_kill(struct child *ch, const char *why)
{
    struct sv *sv = ch->proc.arg;
    struct hosts *h = sv->hosts;
    if (ch->proc.pid != SV_HOSTED_PID || ch->host_num == IN_DOOMED) return;
    struct host_sess *s = ch->host;
    if (s) {
        log_child(LOG_WARN, "host", ch->cfg ? ch->cfg->name : NULL, ch->name, "child %s killed: %s", ch->name, why);
        send_frame(s, ch->host_num, NULL, NULL, 1);
        tab_del(s, ch);
        room_freed(h, s);
    }
    list_push(&h->doomed, ch, IN_DOOMED);
    rearm(h);
}

static void h_signal(struct child *ch, int sig)
{
    /* The Terminate frame asked it to stop; a hosted child has no SIGTERM.  SIGKILL:
     * its host drops it, and it counts as killed. */
    if (sig == SIGKILL) h_kill(ch, "its shutdown_ms ran out");
}

static int h_stdin_open(const struct child *ch)
{
    const struct host_sess *s = ch->host;
    return s && !s->ended;
}

static void h_release(struct child *ch)
{
    struct sv *sv = ch->proc.arg;
    struct hosts *h = sv->hosts;
    struct host_sess *s = ch->host;
    if (s && !s->ended) send_frame(s, ch->host_num, NULL, NULL, 1);
    detach(h, ch);
    if (s) room_freed(h, s);
}

static size_t h_unsent(const struct child *ch)
{
    const struct host_sess *s = ch->host;
    return s && !s->ended ? s->port.queued(s->port.arg) : 0;
}

const struct sv_proc_ops *hosts_ops(void)
{
    static const struct sv_proc_ops ops = {h_spawn, h_send, h_signal, h_kill, h_stdin_open, h_release, h_unsent};
    return &ops;
}

/* ---------- the registry ---------- */

struct hosts *hosts_new(struct sv *sv, const struct host_limits *lim, const char *node, const struct host_hooks *hooks)
{
    struct hosts *h = calloc(1, sizeof *h);
    if (!h) return NULL;
    if (hooks) h->hooks = *hooks;
    if (!(h->kinds_sig = strdup(""))) { /* no kinds yet: the first change is from here */
        free(h);
        return NULL;
    }
    h->sv = sv;
    h->lim = *lim;
    h->node = node;
    h->w.fn = on_timer;
    h->tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (h->tfd < 0 || loop_add(sv->loop, h->tfd, EPOLLIN, &h->w) != 0) {
        if (h->tfd >= 0) close(h->tfd);
        free(h->kinds_sig);
        free(h);
        return NULL;
    }
    return h;
}

void hosts_free(struct hosts *h)
{
    if (!h) return;
    while (h->sessions) {
        struct host_sess *s = h->sessions;
        if (!s->ended) {
            s->ended = 1;
            s->port.end(s->port.arg, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
        }
        h->sessions = s->next;
        sess_free(s);
    }
    loop_close_fd(h->sv->loop, &h->tfd);
    free(h->kinds_sig);
    free(h);
}

int hosts_have_kind(const struct hosts *h, const char *kind)
{
    for (const struct host_sess *s = h->sessions; s; s = s->next)
        if (!s->ended && s->hello && has_kind(s, kind)) return 1;
    return 0;
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(const char *const *)a, *(const char *const *)b); }

int hosts_kinds(const struct hosts *h, const char ***out, size_t *n)
{
    size_t total = 0;
    for (const struct host_sess *s = h->sessions; s; s = s->next)
        if (!s->ended && s->hello) total += s->n_kinds;
    *out = NULL;
    *n = 0;
    if (!total) return 0;
    const char **v = malloc(total * sizeof *v);
    if (!v) return -1;
    size_t k = 0;
    for (const struct host_sess *s = h->sessions; s; s = s->next)
        if (!s->ended && s->hello)
            for (size_t i = 0; i < s->n_kinds; i++) v[k++] = s->kinds[i];
    qsort(v, k, sizeof *v, cmp_str);
    size_t u = 0;
    for (size_t i = 0; i < k; i++)
        if (!u || strcmp(v[u - 1], v[i])) v[u++] = v[i];
    *out = v;
    *n = u;
    return 0;
}

size_t hosts_count(const struct hosts *h) { return h->n_sessions; }

void hosts_stats(const struct hosts *h, size_t *sessions, size_t *running, size_t *waiting)
{
    *sessions = *running = *waiting = 0;
    for (const struct host_sess *s = h->sessions; s; s = s->next)
        if (!s->ended) {
            (*sessions)++;
            *running += s->n;
        }
    for (const struct child *ch = h->waiting; ch; ch = ch->host_next) (*waiting)++;
}

struct child *hosts_first_waiting(const struct hosts *h) { return h->waiting; }

void hosts_unwait(struct hosts *h, struct child *ch)
{
    if (ch->host_num == IN_WAITING && !ch->host) list_unlink(&h->waiting, ch);
    ch->host_wait = 0;
}

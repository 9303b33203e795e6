#include "sidecar/core.h"

#include <errno.h>
#include <fcntl.h>
#include <grpc/status.h>
#include <limits.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/timerfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "distsup/v1/child.pb-c.h"
#include "distsup/v1/peer.pb-c.h"
#include "sidecar/frame.h"
#include "sidecar/log.h"
#include "sidecar/peer.h"
#include "sidecar/placement.h"
#include "sidecar/registry.h"
#include "sidecar/spec.h"

extern char **environ;

#define TICK_MS 10
#define READ_BUDGET (64 * 1024)     /* bytes read from one pipe per wake-up */
#define LOG_LINE_MAX 2048           /* longer child log lines are split */
#define LOG_LINES_PER_SEC 200       /* per child; the rest are counted and dropped */
#define DEFAULT_CALL_TIMEOUT_MS 5000
#define SNAPSHOT_CHUNK 500          /* children per Snapshot message, at most ... */
#define SNAPSHOT_BYTES (8u << 20)   /* ... and about this many bytes (a peer message is at most 64 MiB) */
#define REBALANCE_DELAY_MS 500      /* after a join, before moving children */
#define RETRY_MS 1000               /* failed re-homes and moves are retried after this */
#define LEAVE_TIMEOUT_MS 30000      /* a graceful leave gives up handing off after this */

/* Internal ops, run on another node for this one (never from the public API). */
enum {
    OP_DIR_START = CORE_OP_COUNT, /* StartChildRequest at the name's directory node */
    OP_PLACE,                     /* Place: start here */
    OP_ALL
};
#define REQ_LOCAL 1u              /* run here: never forward again */

/* Why a Place is sent. */
enum { PLACE_START = 0, PLACE_REHOME = 1, PLACE_MOVE = 2 };

enum watch_kind { W_WAKE, W_TICK, W_OUT, W_ERR, W_IN, W_PID };

struct watch {
    enum watch_kind kind;
    struct child *child;
};

struct pending_call {
    struct pending_call *next, *prev;
    uint64_t ref, deadline;
    core_done_fn done;
    void *arg;
};

struct waiter {
    struct waiter *next;
    core_done_fn done;
    void *arg;
};

struct sup;

struct child {
    struct child *hnext;          /* name hash chain */
    struct child *next, *prev;    /* the supervisor's list, in start order */
    struct child *dead_next;      /* graveyard: freed at the end of a loop turn */
    struct sup *sup;
    char *name;
    Distsup__V1__ChildSpec *spec; /* owned */
    int state;                    /* Distsup__V1__ChildState */
    int dead;                     /* removed: events for it are ignored */
    pid_t pid;
    int pidfd, in_fd, out_fd, err_fd;
    int in_armed;                 /* EPOLLOUT wanted on in_fd */
    struct watch w_out, w_err, w_in, w_pid;
    struct dsbuf inb, outb, errb; /* from stdout, to stdin, from stderr */
    char id[320];
    uint64_t incarnation;
    uint32_t restarts;
    struct restart_window win;
    int64_t started_at_wall;
    uint64_t timer_at;            /* STARTING: Ready deadline; RESTARTING: spawn time;
                                     STOPPING: next escalation */
    int kill_stage;               /* STOPPING: 1 Terminate sent, 2 SIGTERM, 3 SIGKILL */
    uint64_t kill_at;             /* STOPPING: SIGKILL time */
    struct pending_call *calls, *calls_tail;
    unsigned n_calls;
    uint64_t next_ref;
    core_done_fn start_done;      /* the StartChild waiting for Ready */
    void *start_arg;
    struct waiter *term_waiters;
    int removing;                 /* TerminateChild asked: do not restart */
    char *moving_to;              /* a move to this node is under way */
    int suspending;               /* being stopped for want of quorum: keep, do not restart */
    char *stop_reason;            /* why it was stopped, for its events (NULL: its exit) */
    int start_timed_out;          /* killed for want of a Ready frame */
    uint8_t *state_blob;          /* last State frame (handoff) */
    size_t state_len;
    uint64_t log_window;          /* rate limit of log lines */
    unsigned log_lines, log_dropped;
};

struct reservation {
    struct reservation *next;
    char *name;
};

struct sup {
    const struct sup_config *cfg;
    struct child **table;
    size_t table_size, count;
    struct child *head, *tail;
    struct registry *remote;      /* the other nodes' children */
    struct placement *strategy;
    struct reservation *reserved; /* names this directory node is placing */
    char **eligible;              /* cfg->nodes split; NULL = every node */
    size_t n_eligible;
    unsigned moves;               /* moves under way */
};

/* A node of the cluster as this one sees it; nodes[0] is this node. */
struct node {
    char *name, *api, *peer_addr;
    int up, seen, leaving, self;
    uint64_t boot_id, epoch;
    uint32_t weight;
    struct ds_label *labels;
    size_t n_labels;
    int snapshot_done;            /* its Snapshot arrived since it came up */
};

/* A request sent to another node, waiting for its answer. */
struct fwd {
    struct fwd *next;
    uint64_t id;
    struct node *to;
    int op;
    uint64_t deadline;            /* answered DEADLINE_EXCEEDED when no answer came by then */
    core_done_fn done;
    void *arg;
};

struct cmd {
    struct cmd *next;
    int op;                       /* enum core_op, or a CMD_* */
    ProtobufCMessage *req;
    uint64_t deadline;
    core_done_fn done;
    void *arg;
    char *node;                   /* CMD_NODE_DOWN, CMD_MESSAGE */
    uint8_t *data;                /* CMD_NODE_UP (a packed Join), CMD_MESSAGE */
    size_t len;
    int clean;
};
#define CMD_SHUTDOWN (-1)
#define CMD_NODE_UP (-2)
#define CMD_NODE_DOWN (-3)
#define CMD_MESSAGE (-4)
#define CMD_SETTLED (-5)

struct core {
    const struct config *cfg;
    struct store *store;
    struct event_bus *bus;
    struct sup *sups;
    size_t n_sups;
    int epfd, wakefd, tickfd;
    int tick_armed;
    struct watch w_wake, w_tick;
    pthread_t thread;
    int thread_started;
    pthread_mutex_t qmu;
    struct cmd *qhead, *qtail;
    int shutting_down;            /* reactor-owned */
    int closed;                   /* under qmu: no more requests */
    struct child *graveyard;
    uint64_t boot_ms, seq;
    size_t live;                  /* processes running */
    char data_dir[PATH_MAX];
    /* cluster */
    struct peer *peer;            /* NULL: a single node */
    uint64_t boot_id;
    struct node **nodes;          /* nodes[0] is this node */
    size_t n_nodes;
    struct fwd *fwds;
    uint64_t next_fwd_id;
    uint64_t started;             /* monotonic ms at core_start */
    uint64_t sync_since;          /* when the current wait for sync began */
    int settled;                  /* the peer module made its first contact round */
    int synced;                   /* our own children may run (cluster: after sync) */
    int quorum;                   /* 1 unless quorum mode and a minority */
    int leaving;                  /* graceful leave under way */
    uint64_t leave_deadline;
    uint64_t rebalance_at;        /* 0: none due */
    uint64_t reconcile_at;        /* 0: none due */
};

/* Cluster hooks used by the child life cycle (defined with the cluster code). */
static void announce(struct core *c, struct child *ch);
static void announce_gone(struct core *c, struct child *ch, const char *reason);
static void finish_move(struct core *c, struct child *ch);
static void plan_moves(struct core *c);
static void maybe_finish_sync(struct core *c);
static void reconcile(struct core *c);
static int expire_forwards(struct core *c, uint64_t now);
static void cluster_broadcast(struct core *c, const Distsup__V1__ClusterMsg *m);

/* ---------- small helpers ---------- */

uint64_t core_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fail(core_done_fn done, void *arg, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void fail(core_done_fn done, void *arg, int code, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    done(arg, code, msg, NULL);
}

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static const char *sup_name_of(const char *name) { return name[0] ? name : "default"; }

static struct sup *find_sup(struct core *c, const char *name)
{
    name = sup_name_of(name);
    for (size_t i = 0; i < c->n_sups; i++)
        if (!strcmp(c->sups[i].cfg->name, name)) return &c->sups[i];
    return NULL;
}

static struct child *find_child(struct sup *s, const char *name)
{
    for (struct child *ch = s->table[hash_str(name) & (s->table_size - 1)]; ch; ch = ch->hnext)
        if (!strcmp(ch->name, name)) return ch;
    return NULL;
}

static int sup_insert(struct sup *s, struct child *ch)
{
    if (s->count + 1 > s->table_size / 2) {
        size_t n = s->table_size * 2;
        struct child **t = calloc(n, sizeof *t);
        if (!t) return -1;
        for (struct child *x = s->head; x; x = x->next) {
            size_t i = hash_str(x->name) & (n - 1);
            x->hnext = t[i];
            t[i] = x;
        }
        free(s->table);
        s->table = t;
        s->table_size = n;
    }
    size_t i = hash_str(ch->name) & (s->table_size - 1);
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

static void sup_unlink(struct sup *s, struct child *ch)
{
    struct child **pp = &s->table[hash_str(ch->name) & (s->table_size - 1)];
    while (*pp && *pp != ch) pp = &(*pp)->hnext;
    if (*pp) *pp = ch->hnext;
    if (ch->prev) ch->prev->next = ch->next;
    else s->head = ch->next;
    if (ch->next) ch->next->prev = ch->prev;
    else s->tail = ch->prev;
    s->count--;
}

static void emit(struct core *c, struct child *ch, Distsup__V1__EventKind kind, int exit_code,
                 int sig, const char *reason)
{
    Distsup__V1__Event ev = DISTSUP__V1__EVENT__INIT;
    ev.kind = kind;
    ev.supervisor = (char *)ch->sup->cfg->name;
    ev.name = ch->name;
    ev.id = ch->id;
    ev.node = (char *)c->cfg->node_name;
    ev.os_pid = ch->pid;
    ev.exit_code = exit_code;
    ev.signal = sig;
    ev.reason = (char *)(reason ? reason : "");
    ev.at_ms = wall_ms();
    ev.restarts = ch->restarts;
    event_bus_publish(c->bus, &ev);
    if (!c->peer) return;
    /* The cluster hears of it too: the event for cluster-wide Watch, and the child's
     * new state for every node's registry. */
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_EVENT;
    m.event = &ev;
    cluster_broadcast(c, &m);
    if (kind == DISTSUP__V1__EVENT_KIND__PROCESS_START || kind == DISTSUP__V1__EVENT_KIND__PROCESS_RESTART ||
        kind == DISTSUP__V1__EVENT_KIND__PROCESS_FAILED)
        announce(c, ch);
}

static void arm_tick(struct core *c)
{
    if (c->tick_armed) return;
    struct itimerspec its = {
        .it_interval = {.tv_sec = 0, .tv_nsec = TICK_MS * 1000000L},
        .it_value = {.tv_sec = 0, .tv_nsec = TICK_MS * 1000000L},
    };
    if (timerfd_settime(c->tickfd, 0, &its, NULL) == 0) c->tick_armed = 1;
    else log_error("core", "timerfd_settime: %s", strerror(errno));
}

static void store_state(struct core *c, struct child *ch)
{
    int st = ch->state == DISTSUP__V1__CHILD_STATE__FAILED ? STORE_FAILED : STORE_RUNNING;
    store_set_child_state(c->store, ch->sup->cfg->name, ch->name, st, ch->restarts, ch->incarnation);
}

/* ---------- fds ---------- */

static void close_fd(struct core *c, int *fd)
{
    if (*fd < 0) return;
    epoll_ctl(c->epfd, EPOLL_CTL_DEL, *fd, NULL);
    close(*fd);
    *fd = -1;
}

static int watch_fd(struct core *c, int fd, uint32_t events, struct watch *w)
{
    struct epoll_event ev = {.events = events, .data.ptr = w};
    return epoll_ctl(c->epfd, EPOLL_CTL_ADD, fd, &ev);
}

static void set_in_armed(struct core *c, struct child *ch, int on)
{
    if (ch->in_fd < 0 || ch->in_armed == on) return;
    struct epoll_event ev = {.events = on ? EPOLLOUT : 0, .data.ptr = &ch->w_in};
    if (epoll_ctl(c->epfd, EPOLL_CTL_MOD, ch->in_fd, &ev) == 0) ch->in_armed = on;
}

/* Writes what it can of the child's stdin buffer. */
static void flush_in(struct core *c, struct child *ch)
{
    while (ch->in_fd >= 0 && dsbuf_unread(&ch->outb) > 0) {
        ssize_t n = write(ch->in_fd, ch->outb.data + ch->outb.off, dsbuf_unread(&ch->outb));
        if (n > 0) {
            dsbuf_consume(&ch->outb, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_in_armed(c, ch, 1);
            return;
        }
        /* EPIPE: the child closed its stdin; what it did not read is lost. */
        log_warn("core", "child %s closed its stdin (%s); %zu bytes undelivered", ch->name,
                 n < 0 ? strerror(errno) : "EOF", dsbuf_unread(&ch->outb));
        dsbuf_consume(&ch->outb, dsbuf_unread(&ch->outb));
        close_fd(c, &ch->in_fd);
        ch->in_armed = 0;
        return;
    }
    set_in_armed(c, ch, 0);
}

static int send_frame(struct core *c, struct child *ch, const Distsup__V1__ChildFrame *f)
{
    if (ch->in_fd < 0) return -1;
    if (frame_append(&ch->outb, f, FRAME_DEFAULT_MAX) != 0) return -1;
    flush_in(c, ch);
    return 0;
}

/* ---------- spawning ---------- */

static char *find_in_path(const char *prog, const char *path_env)
{
    const char *p = path_env && *path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
    while (*p) {
        const char *e = strchr(p, ':');
        size_t n = e ? (size_t)(e - p) : strlen(p);
        char buf[PATH_MAX];
        if (n > 0 && (size_t)snprintf(buf, sizeof buf, "%.*s/%s", (int)n, p, prog) < sizeof buf) {
            struct stat st;
            if (stat(buf, &st) == 0 && S_ISREG(st.st_mode) && access(buf, X_OK) == 0)
                return strdup(buf);
        }
        if (!e) break;
        p = e + 1;
    }
    return NULL;
}

static const char *spec_env(const Distsup__V1__ChildSpec *s, const char *key)
{
    for (size_t i = 0; i < s->n_env; i++)
        if (!strcmp(s->env[i]->key, key)) return s->env[i]->value;
    return NULL;
}

/* envp = the daemon's environment, overridden by the spec's, plus DISTSUP_* names. */
static char **build_env(struct core *c, struct child *ch)
{
    size_t n = 0;
    while (environ[n]) n++;
    char **envp = calloc(n + ch->spec->n_env + 5, sizeof *envp);
    if (!envp) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        if (!eq) continue;
        size_t kl = (size_t)(eq - environ[i]);
        int overridden = !strncmp(environ[i], "DISTSUP_", 8);
        for (size_t j = 0; j < ch->spec->n_env && !overridden; j++)
            if (strlen(ch->spec->env[j]->key) == kl && !strncmp(ch->spec->env[j]->key, environ[i], kl))
                overridden = 1;
        if (!overridden && !(envp[k++] = strdup(environ[i]))) goto oom;
    }
    for (size_t j = 0; j < ch->spec->n_env; j++) {
        size_t len = strlen(ch->spec->env[j]->key) + strlen(ch->spec->env[j]->value) + 2;
        if (!(envp[k] = malloc(len))) goto oom;
        snprintf(envp[k++], len, "%s=%s", ch->spec->env[j]->key, ch->spec->env[j]->value);
    }
    const char *extra[][2] = {
        {"DISTSUP_NAME", ch->name}, {"DISTSUP_SUPERVISOR", ch->sup->cfg->name},
        {"DISTSUP_NODE", c->cfg->node_name}, {"DISTSUP_ID", ch->id},
    };
    for (size_t j = 0; j < 4; j++) {
        size_t len = strlen(extra[j][0]) + strlen(extra[j][1]) + 2;
        if (!(envp[k] = malloc(len))) goto oom;
        snprintf(envp[k++], len, "%s=%s", extra[j][0], extra[j][1]);
    }
    return envp;
oom:
    for (size_t i = 0; i < k; i++) free(envp[i]);
    free(envp);
    return NULL;
}

static void free_strv(char **v)
{
    if (!v) return;
    for (size_t i = 0; v[i]; i++) free(v[i]);
    free(v);
}

static int pidfd_open_(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/* What the child side of spawn() needs; err_no is its one answer. */
struct spawn_args {
    const char *exe, *cwd;
    char **argv, **envp;
    int in, out, err;
    pid_t parent;
    int err_no; /* why the child could not exec; 0 when it did */
};

/* The child, between clone() and execve().  It runs on a stack of its own but in the
 * daemon's memory (CLONE_VM | CLONE_VFORK, as posix_spawn does; the reactor thread
 * waits meanwhile), so it makes only async-signal-safe calls and writes nothing but
 * a->err_no.  Unlike fork() it does not copy the daemon's page tables, which cost
 * every start milliseconds of system time.  The pipes are never fds 0..2: main()
 * keeps those open. */
static int spawn_child(void *p)
{
    struct spawn_args *a = p;
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_DFL);
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != a->parent) _exit(127);
    if (dup2(a->in, 0) < 0 || dup2(a->out, 1) < 0 || dup2(a->err, 2) < 0 || chdir(a->cwd) != 0) {
        a->err_no = errno;
        _exit(127);
    }
    execve(a->exe, a->argv, a->envp);
    a->err_no = errno ? errno : ENOEXEC;
    _exit(127);
}

#define SPAWN_STACK (64 * 1024)

/* Starts the child's process.  0, or -1 with the reason in err. */
static int spawn(struct core *c, struct child *ch, char *err, size_t errlen)
{
    const Distsup__V1__ChildSpec *s = ch->spec;
    char *exe = NULL;
    char **envp = NULL;
    char *stack = NULL;
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
    int rc = -1;
    const char *cwd = s->cwd[0] ? s->cwd : c->data_dir;

    if (strchr(s->argv[0], '/')) {
        exe = strdup(s->argv[0]);
    } else {
        const char *path = spec_env(s, "PATH");
        exe = find_in_path(s->argv[0], path ? path : getenv("PATH"));
        if (!exe) {
            snprintf(err, errlen, "argv[0] '%s' is not an executable found in PATH", s->argv[0]);
            return -1;
        }
    }
    envp = build_env(c, ch);
    char **argv = calloc(s->n_argv + 1, sizeof *argv);
    stack = malloc(SPAWN_STACK);
    if (!exe || !envp || !argv || !stack) {
        snprintf(err, errlen, "out of memory");
        goto out_argv;
    }
    for (size_t i = 0; i < s->n_argv; i++) argv[i] = s->argv[i];
    if (pipe2(pin, O_CLOEXEC) || pipe2(pout, O_CLOEXEC) || pipe2(perr, O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto out_argv;
    }
    struct spawn_args sa = {.exe = exe, .cwd = cwd, .argv = argv, .envp = envp,
                            .in = pin[0], .out = pout[1], .err = perr[1], .parent = getpid()};
    /* the stack grows down from its (16-byte aligned) end */
    pid_t pid = clone(spawn_child, stack + SPAWN_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &sa);
    if (pid < 0) {
        snprintf(err, errlen, "clone: %s", strerror(errno));
        goto out_argv;
    }
    close(pin[0]); pin[0] = -1;
    close(pout[1]); pout[1] = -1;
    close(perr[1]); perr[1] = -1;
    if (sa.err_no) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        snprintf(err, errlen, "cannot start '%s' in '%s': %s", exe, cwd, strerror(sa.err_no));
        goto out_argv;
    }
    int pidfd = pidfd_open_(pid);
    if (pidfd < 0) {
        snprintf(err, errlen, "pidfd_open: %s", strerror(errno));
        kill(pid, SIGKILL);
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        goto out_argv;
    }
    ch->pid = pid;
    ch->pidfd = pidfd;
    ch->in_fd = pin[1]; pin[1] = -1;
    ch->out_fd = pout[0]; pout[0] = -1;
    ch->err_fd = perr[0]; perr[0] = -1;
    fcntl(ch->in_fd, F_SETFL, O_NONBLOCK);
    fcntl(ch->out_fd, F_SETFL, O_NONBLOCK);
    fcntl(ch->err_fd, F_SETFL, O_NONBLOCK);
    ch->in_armed = 0;
    if (watch_fd(c, ch->pidfd, EPOLLIN, &ch->w_pid) || watch_fd(c, ch->out_fd, EPOLLIN, &ch->w_out) ||
        watch_fd(c, ch->err_fd, EPOLLIN, &ch->w_err) || watch_fd(c, ch->in_fd, 0, &ch->w_in))
        log_error("core", "epoll_ctl for child %s: %s", ch->name, strerror(errno));
    c->live++;
    ch->started_at_wall = wall_ms();
    ch->kill_stage = 0;
    dsbuf_free(&ch->inb);
    dsbuf_free(&ch->outb);
    dsbuf_free(&ch->errb);
    rc = 0;
out_argv:
    free(argv);
    free(stack);
    for (int i = 0; i < 2; i++) {
        if (pin[i] >= 0) close(pin[i]);
        if (pout[i] >= 0) close(pout[i]);
        if (perr[i] >= 0) close(perr[i]);
    }
    free(exe);
    free_strv(envp);
    return rc;
}

/* Starts a new incarnation: process, id, Init frame. */
static int start_incarnation(struct core *c, struct child *ch, char *err, size_t errlen)
{
    ch->incarnation++;
    ch->start_timed_out = 0;
    snprintf(ch->id, sizeof ch->id, "%s/%llx.%llu", c->cfg->node_name,
             (unsigned long long)c->boot_ms, (unsigned long long)++c->seq);
    if (spawn(c, ch, err, errlen) != 0) return -1;
    if (ch->spec->protocol == DISTSUP__V1__PROTOCOL__NONE) {
        ch->state = DISTSUP__V1__CHILD_STATE__RUNNING;
        ch->timer_at = 0;
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_START, 0, 0, "started");
        return 0;
    }
    ch->state = DISTSUP__V1__CHILD_STATE__STARTING;
    ch->timer_at = core_now_ms() + ch->sup->cfg->start_timeout_ms;
    arm_tick(c);
    Distsup__V1__Init in = DISTSUP__V1__INIT__INIT;
    in.name = ch->name;
    in.node = (char *)c->cfg->node_name;
    in.supervisor = (char *)ch->sup->cfg->name;
    in.id = ch->id;
    in.init = ch->spec->init;
    if (ch->state_blob) {
        in.state.data = ch->state_blob;
        in.state.len = ch->state_len;
    }
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_INIT;
    f.init = &in;
    if (send_frame(c, ch, &f) != 0) log_warn("core", "child %s: cannot send Init", ch->name);
    return 0;
}

/* ---------- child info ---------- */

static void fill_info(struct core *c, struct child *ch, Distsup__V1__ChildInfo *info)
{
    distsup__v1__child_info__init(info);
    info->supervisor = (char *)ch->sup->cfg->name;
    info->name = ch->name;
    info->id = ch->id;
    info->node = (char *)c->cfg->node_name;
    info->os_pid = ch->pid;
    info->state = ch->state;
    info->restarts = ch->restarts;
    info->started_at_ms = ch->started_at_wall;
    info->spec = ch->spec;
    info->incarnation = ch->incarnation;
}

static void free_child(struct child *ch)
{
    struct pending_call *p = ch->calls;
    while (p) {
        struct pending_call *n = p->next;
        free(p);
        p = n;
    }
    struct waiter *w = ch->term_waiters;
    while (w) {
        struct waiter *n = w->next;
        free(w);
        w = n;
    }
    dsbuf_free(&ch->inb);
    dsbuf_free(&ch->outb);
    dsbuf_free(&ch->errb);
    if (ch->spec) distsup__v1__child_spec__free_unpacked(ch->spec, NULL);
    free(ch->state_blob);
    free(ch->moving_to);
    free(ch->stop_reason);
    free(ch->name);
    free(ch);
}

static struct child *new_child(struct sup *s, Distsup__V1__ChildSpec *spec)
{
    struct child *ch = calloc(1, sizeof *ch);
    if (!ch) return NULL;
    ch->name = strdup(spec->name);
    if (!ch->name) {
        free(ch);
        return NULL;
    }
    ch->sup = s;
    ch->spec = spec;
    ch->pidfd = ch->in_fd = ch->out_fd = ch->err_fd = -1;
    ch->w_out = (struct watch){W_OUT, ch};
    ch->w_err = (struct watch){W_ERR, ch};
    ch->w_in = (struct watch){W_IN, ch};
    ch->w_pid = (struct watch){W_PID, ch};
    ch->next_ref = 1;
    return ch;
}

/* Removes the child from its supervisor and the store (and tells the cluster);
 * freed at the end of the turn. */
static void remove_child(struct core *c, struct child *ch, const char *reason)
{
    if (ch->dead) return;
    ch->dead = 1;
    store_delete_child(c->store, ch->sup->cfg->name, ch->name);
    announce_gone(c, ch, reason);
    sup_unlink(ch->sup, ch);
    ch->dead_next = c->graveyard;
    c->graveyard = ch;
}

/* ---------- calls ---------- */

static void fail_calls(struct child *ch, int code, const char *why)
{
    struct pending_call *p = ch->calls;
    ch->calls = ch->calls_tail = NULL;
    ch->n_calls = 0;
    while (p) {
        struct pending_call *n = p->next;
        fail(p->done, p->arg, code, "child '%s' %s before replying", ch->name, why);
        free(p);
        p = n;
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

static void answer_start(struct core *c, struct child *ch)
{
    if (!ch->start_done) return;
    core_done_fn done = ch->start_done;
    ch->start_done = NULL;
    Distsup__V1__ChildInfo info;
    fill_info(c, ch, &info);
    Distsup__V1__StartChildResponse r = DISTSUP__V1__START_CHILD_RESPONSE__INIT;
    r.child = &info;
    done(ch->start_arg, GRPC_STATUS_OK, NULL, &r.base);
}

/* ---------- reading from children ---------- */

static void log_child_line(struct child *ch, const char *stream, const char *p, size_t n)
{
    uint64_t now = core_now_ms();
    if (now - ch->log_window >= 1000) {
        if (ch->log_dropped)
            log_warn("child", "%s: %u log lines dropped (more than %d a second)", ch->name,
                     ch->log_dropped, LOG_LINES_PER_SEC);
        ch->log_window = now;
        ch->log_lines = ch->log_dropped = 0;
    }
    if (++ch->log_lines > LOG_LINES_PER_SEC) {
        ch->log_dropped++;
        return;
    }
    log_info("child", "%s%s: %.*s", ch->name, stream, (int)n, p);
}

/* Splits buffered bytes into log lines; at EOF the remainder is a line too. */
static void drain_lines(struct child *ch, struct dsbuf *b, const char *stream, int eof)
{
    for (;;) {
        const char *p = (const char *)b->data + b->off;
        size_t n = dsbuf_unread(b);
        if (n == 0) return;
        const char *nl = memchr(p, '\n', n < LOG_LINE_MAX ? n : LOG_LINE_MAX);
        if (nl) {
            log_child_line(ch, stream, p, (size_t)(nl - p));
            dsbuf_consume(b, (size_t)(nl - p) + 1);
        } else if (n >= LOG_LINE_MAX || eof) {
            size_t take = n < LOG_LINE_MAX ? n : LOG_LINE_MAX;
            log_child_line(ch, stream, p, take);
            dsbuf_consume(b, take);
        } else {
            return;
        }
    }
}

static void kill_child(struct core *c, struct child *ch, const char *why);

static void on_frame(struct core *c, struct child *ch, Distsup__V1__ChildFrame *f)
{
    switch (f->frame_case) {
    case DISTSUP__V1__CHILD_FRAME__FRAME_READY:
        if (ch->state == DISTSUP__V1__CHILD_STATE__STARTING) {
            ch->state = DISTSUP__V1__CHILD_STATE__RUNNING;
            ch->timer_at = 0;
            emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_START, 0, 0, "ready");
            answer_start(c, ch);
        }
        break;
    case DISTSUP__V1__CHILD_FRAME__FRAME_REPLY: {
        Distsup__V1__Reply *r = f->reply;
        struct pending_call *p = ch->calls;
        while (p && p->ref != r->ref) p = p->next;
        if (!p) {
            log_debug("core", "child %s: reply to unknown or expired call %llu", ch->name,
                      (unsigned long long)r->ref);
            break;
        }
        unlink_call(ch, p);
        if (r->error && r->error[0]) {
            int code = r->code ? (int)r->code : GRPC_STATUS_UNKNOWN;
            if (code <= 0 || code > 16) code = GRPC_STATUS_UNKNOWN;
            fail(p->done, p->arg, code, "child '%s': %s", ch->name, r->error);
        } else {
            Distsup__V1__CallResponse resp = DISTSUP__V1__CALL_RESPONSE__INIT;
            resp.payload = r->payload;
            resp.node = (char *)c->cfg->node_name;
            p->done(p->arg, GRPC_STATUS_OK, NULL, &resp.base);
        }
        free(p);
        break;
    }
    case DISTSUP__V1__CHILD_FRAME__FRAME_STATE: {
        uint8_t *b = malloc(f->state->state.len ? f->state->state.len : 1);
        if (!b) break;
        memcpy(b, f->state->state.data, f->state->state.len);
        free(ch->state_blob);
        ch->state_blob = b;
        ch->state_len = f->state->state.len;
        break;
    }
    default:
        log_warn("core", "child %s sent a frame of kind %d, which only the sidecar sends; ignored",
                 ch->name, (int)f->frame_case);
        break;
    }
}

/* Reads from a child's stdout or stderr, up to the budget.  Returns 1 at EOF. */
static int read_pipe(struct child *ch, int fd, struct dsbuf *b, size_t budget)
{
    size_t got = 0;
    while (got < budget) {
        if (dsbuf_reserve(b, 16384) != 0) return 0;
        ssize_t n = read(fd, b->data + b->len, b->cap - b->len);
        if (n > 0) {
            b->len += (size_t)n;
            got += (size_t)n;
            continue;
        }
        if (n == 0) return 1;
        if (errno == EINTR) continue;
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            log_warn("core", "child %s: read: %s", ch->name, strerror(errno));
        return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : 1;
    }
    return 0;
}

static void handle_stdout(struct core *c, struct child *ch, size_t budget)
{
    if (ch->out_fd < 0) return;
    int eof = read_pipe(ch, ch->out_fd, &ch->inb, budget);
    if (ch->spec->protocol == DISTSUP__V1__PROTOCOL__NONE) {
        drain_lines(ch, &ch->inb, " (stdout)", eof);
    } else {
        while (!ch->dead && ch->out_fd >= 0) {
            const uint8_t *body;
            size_t blen, used;
            enum frame_result r = frame_split(ch->inb.data + ch->inb.off, dsbuf_unread(&ch->inb),
                                              FRAME_DEFAULT_MAX, &body, &blen, &used);
            if (r == FRAME_NEED_MORE) break;
            if (r == FRAME_TOO_BIG) {
                kill_child(c, ch, "protocol error: a frame on stdout announces more than the "
                                  "frame limit (is it writing text to stdout?)");
                return;
            }
            Distsup__V1__ChildFrame *f = frame_decode(body, blen);
            if (!f) {
                kill_child(c, ch, "protocol error: undecodable frame on stdout");
                return;
            }
            dsbuf_consume(&ch->inb, used);
            on_frame(c, ch, f);
            frame_decode_free(f);
        }
    }
    if (eof && ch->out_fd >= 0) {
        if (ch->spec->protocol != DISTSUP__V1__PROTOCOL__NONE && dsbuf_unread(&ch->inb))
            log_warn("core", "child %s: %zu bytes of a partial frame at the end of stdout", ch->name,
                     dsbuf_unread(&ch->inb));
        close_fd(c, &ch->out_fd);
    }
}

static void handle_stderr(struct core *c, struct child *ch, size_t budget)
{
    if (ch->err_fd < 0) return;
    int eof = read_pipe(ch, ch->err_fd, &ch->errb, budget);
    drain_lines(ch, &ch->errb, "", eof);
    if (eof) close_fd(c, &ch->err_fd);
}

/* ---------- stopping ---------- */

static void signal_child(struct child *ch, int sig)
{
    if (ch->pid <= 0) return;
    /* The child leads its own process group: signal the group so its own children go too. */
    if (kill(-ch->pid, sig) != 0 && kill(ch->pid, sig) != 0 && errno != ESRCH)
        log_warn("core", "kill(%d, %d) for child %s: %s", (int)ch->pid, sig, ch->name, strerror(errno));
}

/* Begins an orderly stop: Terminate frame, then SIGTERM, then SIGKILL at shutdown_ms. */
static void begin_stop(struct core *c, struct child *ch, const char *reason)
{
    if (ch->state == DISTSUP__V1__CHILD_STATE__STOPPING) return;
    uint64_t now = core_now_ms();
    uint32_t grace = spec_shutdown_ms(ch->spec);
    ch->state = DISTSUP__V1__CHILD_STATE__STOPPING;
    ch->kill_at = now + grace;
    if (grace == 0) {
        signal_child(ch, SIGKILL);
        ch->kill_stage = 3;
        ch->timer_at = 0;
        return;
    }
    if (ch->spec->protocol == DISTSUP__V1__PROTOCOL__FRAMES && ch->in_fd >= 0) {
        Distsup__V1__Terminate t = DISTSUP__V1__TERMINATE__INIT;
        t.reason = (char *)reason;
        Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
        f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_TERMINATE;
        f.terminate = &t;
        send_frame(c, ch, &f);
        ch->kill_stage = 1;
        /* Give the child half its shutdown_ms to hand off its state and leave by
         * itself (a loaded host may need more than a moment); SIGTERM then. */
        uint64_t wait = grace / 2;
        ch->timer_at = now + wait;
    } else {
        signal_child(ch, SIGTERM);
        ch->kill_stage = 2;
        ch->timer_at = ch->kill_at;
    }
    arm_tick(c);
}

static void kill_child(struct core *c, struct child *ch, const char *why)
{
    log_error("core", "child %s (pid %d): %s; killing it", ch->name, (int)ch->pid, why);
    signal_child(ch, SIGKILL);
    close_fd(c, &ch->out_fd); /* read nothing more from it */
}

/* ---------- exits ---------- */

static void answer_terminate(struct child *ch, int code, int sig)
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

static void schedule_restart(struct core *c, struct child *ch, int code, int sig, const char *reason)
{
    const struct sup_config *cfg = ch->sup->cfg;
    unsigned recent;
    uint64_t now = core_now_ms();
    if (!restart_allow(&ch->win, cfg->max_restarts, (uint64_t)cfg->max_seconds * 1000, now, &recent)) {
        char why[256];
        snprintf(why, sizeof why, "%s; restart bound reached (%u restarts within %us)", reason,
                 cfg->max_restarts, cfg->max_seconds);
        log_error("core", "child %s failed: %s; it will not be restarted", ch->name, why);
        ch->state = DISTSUP__V1__CHILD_STATE__FAILED;
        ch->pid = 0;
        store_state(c, ch);
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_FAILED, code, sig, why);
        return;
    }
    uint64_t delay = restart_backoff_ms(recent, cfg->backoff_ms, cfg->backoff_max_ms);
    ch->restarts++;
    log_warn("core", "child %s %s; restarting it in %llums (restart %u)", ch->name, reason,
             (unsigned long long)delay, ch->restarts);
    emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_RESTART, code, sig, reason);
    ch->pid = 0;
    ch->state = DISTSUP__V1__CHILD_STATE__RESTARTING;
    ch->timer_at = now + delay;
    store_state(c, ch);
    arm_tick(c);
}

static void on_exit_status(struct core *c, struct child *ch, int status)
{
    /* What it wrote before dying still counts: replies, State, last log lines. */
    handle_stdout(c, ch, SIZE_MAX);
    handle_stderr(c, ch, SIZE_MAX);
    drain_lines(ch, &ch->errb, "", 1);
    close_fd(c, &ch->pidfd);
    close_fd(c, &ch->in_fd);
    close_fd(c, &ch->out_fd);
    close_fd(c, &ch->err_fd);
    ch->in_armed = 0;
    c->live--;
    int code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    int sig = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
    char reason[128];
    if (sig) snprintf(reason, sizeof reason, "killed by signal %d (%s)", sig, strsignal(sig));
    else snprintf(reason, sizeof reason, "exited with code %d", code);
    int normal = code == 0 && sig == 0;
    fail_calls(ch, GRPC_STATUS_UNAVAILABLE, normal ? "exited" : "died");

    if (ch->start_done) { /* died before Ready: the StartChild fails, nothing is kept */
        if (ch->start_timed_out)
            fail(ch->start_done, ch->start_arg, GRPC_STATUS_DEADLINE_EXCEEDED,
                 "child '%s' did not send Ready within %ums (start_timeout_ms); it was killed. "
                 "Does it speak the frame protocol? Use protocol NONE for plain programs",
                 ch->name, ch->sup->cfg->start_timeout_ms);
        else
            fail(ch->start_done, ch->start_arg, GRPC_STATUS_FAILED_PRECONDITION,
                 "child '%s' %s before it was ready (see the daemon log for its stderr)", ch->name,
                 reason);
        ch->start_done = NULL;
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, code, sig, reason);
        remove_child(c, ch, "did not start");
        return;
    }
    if (ch->moving_to && ch->removing) { /* terminated while moving: the move is off */
        free(ch->moving_to);
        ch->moving_to = NULL;
        if (ch->sup->moves) ch->sup->moves--;
    }
    if (ch->moving_to) { /* its State is captured: it starts on its new node */
        log_info("core", "child %s stopped to move to node %s (%s)", ch->name, ch->moving_to, reason);
        ch->pid = 0;
        finish_move(c, ch);
        return;
    }
    if (ch->suspending && !ch->removing) { /* no quorum: kept, to start when it is back */
        ch->suspending = 0;
        log_info("core", "child %s stopped for want of quorum (%s)", ch->name, reason);
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, code, sig, "stopped: this node has no quorum");
        ch->pid = 0;
        ch->state = DISTSUP__V1__CHILD_STATE__SUSPENDED;
        return;
    }
    if (ch->removing || c->shutting_down) {
        const char *why = ch->stop_reason ? ch->stop_reason : reason;
        log_info("core", "child %s stopped (%s)", ch->name, why);
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, code, sig, why);
        answer_terminate(ch, code, sig);
        if (ch->removing) remove_child(c, ch, why);
        else ch->pid = 0;
        return;
    }
    int restart = ch->spec->restart == DISTSUP__V1__RESTART_TYPE__PERMANENT ||
                  (ch->spec->restart == DISTSUP__V1__RESTART_TYPE__TRANSIENT && !normal);
    if (!restart) {
        log_info("core", "child %s %s; its restart type says it stays down", ch->name, reason);
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, code, sig, reason);
        remove_child(c, ch, reason);
        return;
    }
    schedule_restart(c, ch, code, sig, reason);
}

static void handle_pidfd(struct core *c, struct child *ch)
{
    int status;
    pid_t r;
    do r = waitpid(ch->pid, &status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0) return; /* not yet */
    if (r < 0) {
        log_error("core", "waitpid(%d) for child %s: %s", (int)ch->pid, ch->name, strerror(errno));
        status = 0xff00; /* treat as exit code 255 */
    }
    on_exit_status(c, ch, status);
}

/* ---------- timers ---------- */

static void do_restart(struct core *c, struct child *ch)
{
    char err[512];
    ch->timer_at = 0;
    if (start_incarnation(c, ch, err, sizeof err) == 0) return;
    log_error("core", "child %s: restart failed: %s", ch->name, err);
    /* Counts as another abnormal exit. */
    on_exit_status(c, ch, 127 << 8);
}

static void child_timer(struct core *c, struct child *ch, uint64_t now)
{
    if (!ch->timer_at || now < ch->timer_at) return;
    switch (ch->state) {
    case DISTSUP__V1__CHILD_STATE__STARTING:
        /* The StartChild is answered when the process has been reaped (on_exit_status),
         * so that nothing of the child is left once the caller hears it failed. */
        ch->timer_at = 0;
        ch->start_timed_out = 1;
        kill_child(c, ch, "no Ready frame in time");
        break;
    case DISTSUP__V1__CHILD_STATE__RESTARTING:
        do_restart(c, ch);
        break;
    case DISTSUP__V1__CHILD_STATE__STOPPING:
        if (ch->kill_stage == 1) {
            signal_child(ch, SIGTERM);
            ch->kill_stage = 2;
            ch->timer_at = ch->kill_at;
        } else if (ch->kill_stage == 2) {
            log_warn("core", "child %s did not stop within shutdown_ms=%u; sending SIGKILL", ch->name,
                     spec_shutdown_ms(ch->spec));
            signal_child(ch, SIGKILL);
            ch->kill_stage = 3;
            ch->timer_at = 0;
        } else {
            ch->timer_at = 0;
        }
        break;
    default:
        ch->timer_at = 0;
        break;
    }
}

static void check_leave(struct core *c, uint64_t now);

static void on_tick(struct core *c)
{
    uint64_t expirations;
    if (read(c->tickfd, &expirations, sizeof expirations) < 0 && errno != EAGAIN)
        log_warn("core", "timerfd read: %s", strerror(errno));
    uint64_t now = core_now_ms();
    int busy = 0;
    for (size_t i = 0; i < c->n_sups; i++) {
        struct child *next;
        for (struct child *ch = c->sups[i].head; ch; ch = next) {
            next = ch->next;
            child_timer(c, ch, now);
            struct pending_call *p = ch->calls, *pn;
            for (; p; p = pn) {
                pn = p->next;
                if (now < p->deadline) continue;
                unlink_call(ch, p);
                fail(p->done, p->arg, GRPC_STATUS_DEADLINE_EXCEEDED,
                     "child '%s' did not reply in time", ch->name);
                free(p);
            }
            if (!ch->dead && (ch->timer_at || ch->calls)) busy = 1;
        }
    }
    if (expire_forwards(c, now)) busy = 1;
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
    if (!busy) {
        struct itimerspec off = {{0, 0}, {0, 0}};
        if (timerfd_settime(c->tickfd, 0, &off, NULL) == 0) c->tick_armed = 0;
    }
}

/* ---------- requests ---------- */

static struct sup *need_sup(struct core *c, const char *name, core_done_fn done, void *arg)
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
    fail(done, arg, GRPC_STATUS_NOT_FOUND, "no supervisor named '%s' (configured: %s)",
         sup_name_of(name), list);
    return NULL;
}

/* ---------- cluster: nodes ---------- */

static struct node *find_node(struct core *c, const char *name)
{
    for (size_t i = 0; i < c->n_nodes; i++)
        if (!strcmp(c->nodes[i]->name, name)) return c->nodes[i];
    return NULL;
}

static void free_labels(struct node *n)
{
    for (size_t i = 0; i < n->n_labels; i++) {
        free((char *)n->labels[i].key);
        free((char *)n->labels[i].value);
    }
    free(n->labels);
    n->labels = NULL;
    n->n_labels = 0;
}

static void free_node(struct node *n)
{
    if (!n) return;
    free_labels(n);
    free(n->name);
    free(n->api);
    free(n->peer_addr);
    free(n);
}

static struct node *add_node(struct core *c, const char *name)
{
    struct node *n = find_node(c, name);
    if (n) return n;
    void *grown = realloc(c->nodes, (c->n_nodes + 1) * sizeof *c->nodes);
    if (!grown) return NULL;
    c->nodes = grown;
    if (!(n = calloc(1, sizeof *n)) || !(n->name = strdup(name))) {
        free(n);
        return NULL;
    }
    n->weight = 100;
    c->nodes[c->n_nodes++] = n;
    return n;
}

static int add_label(struct node *n, const char *k, const char *v)
{
    void *grown = realloc(n->labels, (n->n_labels + 1) * sizeof *n->labels);
    if (!grown) return -1;
    n->labels = grown;
    char *kk = strdup(k), *vv = strdup(v);
    if (!kk || !vv) {
        free(kk);
        free(vv);
        return -1;
    }
    n->labels[n->n_labels].key = kk;
    n->labels[n->n_labels].value = vv;
    n->n_labels++;
    return 0;
}

/* "k=v,k=v" into n's labels. */
static int parse_labels(struct node *n, const char *text)
{
    char buf[1024];
    snprintf(buf, sizeof buf, "%s", text);
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = 0;
        if (add_label(n, tok, eq + 1) != 0) return -1;
    }
    return 0;
}

static int node_usable(const struct node *n) { return n->up && !n->leaving; }

static size_t up_count(struct core *c)
{
    size_t k = 0;
    for (size_t i = 0; i < c->n_nodes; i++) k += c->nodes[i]->up;
    return k;
}

static int sup_eligible(const struct sup *s, const char *node)
{
    if (!s->eligible) return 1;
    for (size_t i = 0; i < s->n_eligible; i++)
        if (!strcmp(s->eligible[i], node)) return 1;
    return 0;
}

static uint64_t mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* The directory node of a name: rendezvous hashing over the usable nodes, whatever
 * the placement strategy, so that every node agrees on who serializes a name. */
static struct node *directory_of(struct core *c, struct sup *s, const char *name)
{
    struct node *best = NULL;
    uint64_t best_h = 0;
    for (size_t i = 0; i < c->n_nodes; i++) {
        struct node *n = c->nodes[i];
        if (!node_usable(n)) continue;
        uint64_t h = 1469598103934665603ull;
        for (const char *p = s->cfg->name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
        h = (h ^ 0xff) * 1099511628211ull;
        for (const char *p = name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
        h = (h ^ 0xfe) * 1099511628211ull;
        for (const char *p = n->name; *p; p++) h = (h ^ (unsigned char)*p) * 1099511628211ull;
        h = mix64(h);
        if (!best || h > best_h || (h == best_h && strcmp(n->name, best->name) < 0)) {
            best = n;
            best_h = h;
        }
    }
    return best;
}

/* The usable, eligible nodes of s sorted by name, with their loads: the strategy's
 * input.  without_self: leave this node out (it is leaving). */
struct nodeset {
    struct ds_node *v;
    struct node **src;
    size_t n;
};

static int cmp_node_ptr(const void *a, const void *b)
{
    return strcmp((*(struct node *const *)a)->name, (*(struct node *const *)b)->name);
}

static void nodeset_free(struct nodeset *ns)
{
    free(ns->v);
    free(ns->src);
    ns->v = NULL;
    ns->src = NULL;
    ns->n = 0;
}

static int nodeset_build(struct core *c, struct sup *s, int without_self, struct nodeset *ns)
{
    ns->n = 0;
    ns->v = calloc(c->n_nodes, sizeof *ns->v);
    ns->src = calloc(c->n_nodes, sizeof *ns->src);
    if (!ns->v || !ns->src) {
        nodeset_free(ns);
        return -1;
    }
    for (size_t i = 0; i < c->n_nodes; i++) {
        struct node *n = c->nodes[i];
        if (!node_usable(n) || (without_self && n->self) || !sup_eligible(s, n->name)) continue;
        ns->src[ns->n++] = n;
    }
    qsort(ns->src, ns->n, sizeof *ns->src, cmp_node_ptr);
    for (size_t i = 0; i < ns->n; i++) {
        struct node *n = ns->src[i];
        ns->v[i] = (struct ds_node){.name = n->name, .weight = n->weight ? n->weight : 1,
                                    .labels = n->labels, .n_labels = n->n_labels,
                                    .children = n->self ? (uint32_t)s->count : 0};
    }
    for (struct rentry *e = registry_first(s->remote); e; e = registry_next(e))
        for (size_t i = 0; i < ns->n; i++)
            if (!ns->src[i]->self && !strcmp(ns->src[i]->name, e->info->node)) {
                ns->v[i].children++;
                break;
            }
    return 0;
}

/* The strategy's view of a child. */
struct dchild {
    struct ds_child c;
    struct ds_label *labels;
};

static int dchild_make(struct dchild *d, const char *sup, const char *name, const Distsup__V1__ChildSpec *spec)
{
    d->labels = NULL;
    d->c = (struct ds_child){.supervisor = sup, .name = name, .key = name};
    if (!spec) return 0;
    if (spec->key[0]) d->c.key = spec->key;
    if (spec->n_labels) {
        if (!(d->labels = calloc(spec->n_labels, sizeof *d->labels))) return -1;
        for (size_t i = 0; i < spec->n_labels; i++)
            d->labels[i] = (struct ds_label){spec->labels[i]->key, spec->labels[i]->value};
        d->c.labels = d->labels;
        d->c.n_labels = spec->n_labels;
    }
    return 0;
}

/* Where a child of s goes: a node, or NULL with the reason in err. */
static struct node *place_child(struct core *c, struct sup *s, const char *name,
                                const Distsup__V1__ChildSpec *spec, int without_self, char *err,
                                size_t errlen)
{
    struct nodeset ns;
    struct dchild d;
    if (nodeset_build(c, s, without_self, &ns) != 0 || dchild_make(&d, s->cfg->name, name, spec) != 0) {
        nodeset_free(&ns);
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    struct node *to = NULL;
    if (ns.n == 0) {
        snprintf(err, errlen, "no node is up and eligible for supervisor '%s'%s", s->cfg->name,
                 s->eligible ? " (see its nodes option)" : "");
    } else {
        int i = placement_place(s->strategy, &d.c, ns.v, ns.n, err, errlen);
        if (i >= 0) to = ns.src[i];
    }
    free(d.labels);
    nodeset_free(&ns);
    return to;
}

static void strategies_nodes_changed(struct core *c)
{
    for (size_t i = 0; i < c->n_sups; i++) {
        struct nodeset ns;
        if (nodeset_build(c, &c->sups[i], 0, &ns) != 0) continue;
        placement_nodes_changed(c->sups[i].strategy, ns.v, ns.n);
        nodeset_free(&ns);
    }
}

/* ---------- cluster: messages ---------- */

static uint8_t *pack_cluster(const Distsup__V1__ClusterMsg *m, size_t *len)
{
    *len = distsup__v1__cluster_msg__get_packed_size(m);
    uint8_t *buf = malloc(*len ? *len : 1);
    if (buf) distsup__v1__cluster_msg__pack(m, buf);
    else log_error("core", "out of memory packing a cluster message");
    return buf;
}

static int cluster_send(struct core *c, const char *node, const Distsup__V1__ClusterMsg *m)
{
    if (!c->peer) return -1;
    size_t len;
    uint8_t *buf = pack_cluster(m, &len);
    int rc = buf ? peer_send(c->peer, node, buf, len) : -1;
    free(buf);
    return rc;
}

static void cluster_broadcast(struct core *c, const Distsup__V1__ClusterMsg *m)
{
    if (!c->peer) return;
    size_t len;
    uint8_t *buf = pack_cluster(m, &len);
    if (buf) peer_broadcast(c->peer, buf, len);
    free(buf);
}

/* Tells every node how a local child is now. */
static void announce(struct core *c, struct child *ch)
{
    if (!c->peer || ch->dead) return;
    Distsup__V1__ChildInfo info;
    fill_info(c, ch, &info);
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_CHILD;
    m.child = &info;
    cluster_broadcast(c, &m);
}

static void announce_gone(struct core *c, struct child *ch, const char *reason)
{
    if (!c->peer) return;
    Distsup__V1__ChildGone g = DISTSUP__V1__CHILD_GONE__INIT;
    g.supervisor = (char *)ch->sup->cfg->name;
    g.name = ch->name;
    g.node = (char *)c->cfg->node_name;
    g.incarnation = ch->incarnation;
    g.reason = (char *)reason;
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_GONE;
    m.gone = &g;
    cluster_broadcast(c, &m);
}

/* This node's own children, in chunks, to one node that just came up. */
static void send_snapshot(struct core *c, const char *node)
{
    Distsup__V1__ChildInfo *infos = calloc(SNAPSHOT_CHUNK, sizeof *infos);
    Distsup__V1__ChildInfo **ptrs = calloc(SNAPSHOT_CHUNK, sizeof *ptrs);
    if (!infos || !ptrs) {
        log_error("core", "out of memory: no snapshot for %s", node);
        free(infos);
        free(ptrs);
        return;
    }
    Distsup__V1__Snapshot snap = DISTSUP__V1__SNAPSHOT__INIT;
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_SNAPSHOT;
    m.snapshot = &snap;
    size_t n = 0, total = 0, bytes = 0;
    for (size_t i = 0; i < c->n_sups; i++) {
        for (struct child *ch = c->sups[i].head; ch; ch = ch->next) {
            if (ch->dead || ch->moving_to) continue;
            fill_info(c, ch, &infos[n]);
            ptrs[n] = &infos[n];
            bytes += distsup__v1__child_info__get_packed_size(&infos[n]);
            n++;
            total++;
            /* one child is at most max_payload_bytes (4 MiB) of init and its spec */
            if (n == SNAPSHOT_CHUNK || bytes >= SNAPSHOT_BYTES) {
                snap.n_children = n;
                snap.children = ptrs;
                cluster_send(c, node, &m);
                n = 0;
                bytes = 0;
            }
        }
    }
    snap.n_children = n;
    snap.children = ptrs;
    snap.last = 1;
    cluster_send(c, node, &m);
    log_debug("core", "sent a snapshot of %zu children to %s", total, node);
    free(infos);
    free(ptrs);
}

/* ---------- cluster: requests run on other nodes ---------- */

static const ProtobufCMessageDescriptor *op_request_desc(int op)
{
    switch (op) {
    case CORE_START_CHILD: return &distsup__v1__start_child_request__descriptor;
    case CORE_TERMINATE_CHILD: return &distsup__v1__terminate_child_request__descriptor;
    case CORE_CHILDREN: return &distsup__v1__children_request__descriptor;
    case CORE_COUNT_CHILDREN: return &distsup__v1__count_children_request__descriptor;
    case CORE_WHEREIS: return &distsup__v1__where_is_request__descriptor;
    case CORE_WHOIS: return &distsup__v1__who_is_request__descriptor;
    case CORE_CALL: return &distsup__v1__call_request__descriptor;
    case CORE_CAST: return &distsup__v1__cast_request__descriptor;
    case CORE_SEND: return &distsup__v1__send_request__descriptor;
    case CORE_NODES: return &distsup__v1__nodes_request__descriptor;
    case CORE_NODE_FOR: return &distsup__v1__node_for_request__descriptor;
    case CORE_MINE: return &distsup__v1__mine_request__descriptor;
    case OP_DIR_START: return &distsup__v1__start_child_request__descriptor;
    case OP_PLACE: return &distsup__v1__place__descriptor;
    default: return NULL;
    }
}

static const ProtobufCMessageDescriptor *op_reply_desc(int op)
{
    switch (op) {
    case CORE_START_CHILD: return &distsup__v1__start_child_response__descriptor;
    case CORE_TERMINATE_CHILD: return &distsup__v1__terminate_child_response__descriptor;
    case CORE_CHILDREN: return &distsup__v1__children_response__descriptor;
    case CORE_COUNT_CHILDREN: return &distsup__v1__count_children_response__descriptor;
    case CORE_WHEREIS: return &distsup__v1__where_is_response__descriptor;
    case CORE_WHOIS: return &distsup__v1__who_is_response__descriptor;
    case CORE_CALL: return &distsup__v1__call_response__descriptor;
    case CORE_CAST: return &distsup__v1__cast_response__descriptor;
    case CORE_SEND: return &distsup__v1__send_response__descriptor;
    case CORE_NODES: return &distsup__v1__nodes_response__descriptor;
    case CORE_NODE_FOR: return &distsup__v1__node_for_response__descriptor;
    case CORE_MINE: return &distsup__v1__mine_response__descriptor;
    case OP_DIR_START: return &distsup__v1__start_child_response__descriptor;
    case OP_PLACE: return &distsup__v1__start_child_response__descriptor;
    default: return NULL;
    }
}

/* Sends req to node to be run there (REQ_LOCAL); done gets its answer, or
 * UNAVAILABLE if the node cannot be reached or goes down first, or
 * DEADLINE_EXCEEDED at deadline (absolute ms; 0: none). */
/* How long a forwarded request without a deadline of its own waits for its answer
 * (its request or answer may be lost with a broken link while the node stays up):
 * a minute, or longer than any supervisor's start_timeout_ms, so that a start or a
 * move on a slow node is never cut short. */
static uint64_t forward_wait_ms(const struct core *c)
{
    uint64_t ms = 60000;
    for (size_t i = 0; i < c->n_sups; i++)
        if (2ull * c->sups[i].cfg->start_timeout_ms + 5000 > ms) ms = 2ull * c->sups[i].cfg->start_timeout_ms + 5000;
    return ms;
}

static void forward(struct core *c, struct node *to, int op, const ProtobufCMessage *req,
                    uint32_t timeout_ms, uint64_t deadline, core_done_fn done, void *arg)
{
    if (!deadline) deadline = core_now_ms() + forward_wait_ms(c);
    struct fwd *f = calloc(1, sizeof *f);
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    if (!f || !buf) {
        free(f);
        free(buf);
        fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    protobuf_c_message_pack(req, buf);
    f->id = ++c->next_fwd_id;
    f->to = to;
    f->op = op;
    f->deadline = deadline;
    f->done = done;
    f->arg = arg;
    Distsup__V1__Forward fw = DISTSUP__V1__FORWARD__INIT;
    fw.id = f->id;
    fw.op = (uint32_t)op;
    fw.request.data = buf;
    fw.request.len = len;
    fw.timeout_ms = timeout_ms;
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_FORWARD;
    m.forward = &fw;
    int rc = to->up ? cluster_send(c, to->name, &m) : -1;
    free(buf);
    if (rc != 0) {
        free(f);
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node %s cannot be reached now; try again", to->name);
        return;
    }
    f->next = c->fwds;
    c->fwds = f;
    if (deadline) arm_tick(c);
}

static void fail_forwards(struct core *c, struct node *to, const char *why)
{
    struct fwd **pp = &c->fwds;
    while (*pp) {
        struct fwd *f = *pp;
        if (f->to != to) {
            pp = &f->next;
            continue;
        }
        *pp = f->next;
        fail(f->done, f->arg, GRPC_STATUS_UNAVAILABLE, "node %s %s before answering", to->name, why);
        free(f);
    }
}

static int expire_forwards(struct core *c, uint64_t now)
{
    int pending = 0;
    struct fwd **pp = &c->fwds;
    while (*pp) {
        struct fwd *f = *pp;
        if (!f->deadline || now < f->deadline) {
            pending |= f->deadline != 0;
            pp = &f->next;
            continue;
        }
        *pp = f->next;
        fail(f->done, f->arg, GRPC_STATUS_DEADLINE_EXCEEDED, "node %s did not answer in time", f->to->name);
        free(f);
    }
    return pending;
}

struct remote_req {
    struct core *c;
    char *node;
    uint64_t id;
};

static void reply_remote(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct remote_req *rr = arg;
    Distsup__V1__ForwardReply r = DISTSUP__V1__FORWARD_REPLY__INIT;
    r.id = rr->id;
    r.code = (uint32_t)code;
    r.message = (char *)(message ? message : "");
    uint8_t *buf = NULL;
    if (code == GRPC_STATUS_OK && reply) {
        r.reply.len = protobuf_c_message_get_packed_size(reply);
        if ((buf = malloc(r.reply.len ? r.reply.len : 1))) {
            protobuf_c_message_pack(reply, buf);
            r.reply.data = buf;
        } else {
            r.code = GRPC_STATUS_RESOURCE_EXHAUSTED;
            r.message = "out of memory";
            r.reply.len = 0;
        }
    }
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_REPLY;
    m.reply = &r;
    if (cluster_send(rr->c, rr->node, &m) != 0)
        log_warn("core", "cannot answer node %s (request %llu): no link", rr->node, (unsigned long long)rr->id);
    free(buf);
    free(rr->node);
    free(rr);
}

static void run_op(struct core *c, int op, ProtobufCMessage *req, uint64_t deadline, unsigned flags,
                   core_done_fn done, void *arg);

static void on_forward(struct core *c, struct node *from, const Distsup__V1__Forward *f)
{
    struct remote_req *rr = calloc(1, sizeof *rr);
    if (!rr || !(rr->node = strdup(from->name))) {
        free(rr);
        log_error("core", "out of memory: dropping a request from %s", from->name);
        return;
    }
    rr->c = c;
    rr->id = f->id;
    const ProtobufCMessageDescriptor *d = op_request_desc((int)f->op);
    if (!d) {
        fail(reply_remote, rr, GRPC_STATUS_UNIMPLEMENTED, "node %s does not know operation %u",
             c->cfg->node_name, f->op);
        return;
    }
    ProtobufCMessage *req = protobuf_c_message_unpack(d, NULL, f->request.len, f->request.data);
    if (!req) {
        fail(reply_remote, rr, GRPC_STATUS_INVALID_ARGUMENT, "malformed forwarded request");
        return;
    }
    uint64_t deadline = f->timeout_ms ? core_now_ms() + f->timeout_ms : 0;
    run_op(c, (int)f->op, req, deadline, REQ_LOCAL, reply_remote, rr);
    protobuf_c_message_free_unpacked(req, NULL);
}

static void on_forward_reply(struct core *c, struct node *from, const Distsup__V1__ForwardReply *r)
{
    struct fwd **pp = &c->fwds;
    while (*pp && ((*pp)->id != r->id || (*pp)->to != from)) pp = &(*pp)->next;
    struct fwd *f = *pp;
    if (!f) {
        log_debug("core", "an answer from %s to a request that is gone (%llu)", from->name,
                  (unsigned long long)r->id);
        return;
    }
    *pp = f->next;
    if (r->code != GRPC_STATUS_OK) {
        int code = r->code > 0 && r->code <= 16 ? (int)r->code : GRPC_STATUS_UNKNOWN;
        f->done(f->arg, code, r->message, NULL);
    } else {
        const ProtobufCMessageDescriptor *d = op_reply_desc(f->op);
        ProtobufCMessage *msg = d ? protobuf_c_message_unpack(d, NULL, r->reply.len, r->reply.data) : NULL;
        if (!msg) fail(f->done, f->arg, GRPC_STATUS_INTERNAL, "node %s sent an unreadable answer", from->name);
        else f->done(f->arg, GRPC_STATUS_OK, NULL, msg);
        if (msg) protobuf_c_message_free_unpacked(msg, NULL);
    }
    free(f);
}

/* ---------- cluster: the registry of other nodes' children ---------- */

/* Of two copies of one name, the one that survives: the higher incarnation, then
 * the smaller node name.  Every node applies the same rule to the same facts. */
static int copy_wins(uint64_t inc_a, const char *node_a, uint64_t inc_b, const char *node_b)
{
    if (inc_a != inc_b) return inc_a > inc_b;
    return strcmp(node_a, node_b) < 0;
}

static Distsup__V1__ChildInfo *info_dup(const Distsup__V1__ChildInfo *in)
{
    size_t len = distsup__v1__child_info__get_packed_size(in);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return NULL;
    distsup__v1__child_info__pack(in, buf);
    Distsup__V1__ChildInfo *out = distsup__v1__child_info__unpack(NULL, len, buf);
    free(buf);
    return out;
}

static Distsup__V1__ChildSpec *spec_dup(const Distsup__V1__ChildSpec *in)
{
    size_t len = distsup__v1__child_spec__get_packed_size(in);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return NULL;
    distsup__v1__child_spec__pack(in, buf);
    Distsup__V1__ChildSpec *out = distsup__v1__child_spec__unpack(NULL, len, buf);
    free(buf);
    return out;
}

static void cache_store(struct core *c, struct sup *s, const struct rentry *e)
{
    size_t len = distsup__v1__child_info__get_packed_size(e->info);
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) return;
    distsup__v1__child_info__pack(e->info, buf);
    store_cache_put(c->store, s->cfg->name, e->info->name, e->info->node, buf, len);
    free(buf);
}

static void cache_remove(struct core *c, struct sup *s, struct rentry *e)
{
    store_cache_delete(c->store, s->cfg->name, e->info->name);
    registry_del(s->remote, e);
}

static void stop_duplicate(struct core *c, struct child *ch, const Distsup__V1__ChildInfo *winner);

/* What a node says of one of its children (info is taken). */
static void apply_remote_info(struct core *c, struct node *from, Distsup__V1__ChildInfo *info)
{
    struct sup *s = find_sup(c, info->supervisor);
    if (!s || !info->name[0] || strcmp(info->node, from->name)) {
        if (!s) log_debug("core", "node %s has supervisor %s, which this node lacks", from->name, info->supervisor);
        distsup__v1__child_info__free_unpacked(info, NULL);
        return;
    }
    struct child *ch = find_child(s, info->name);
    if (ch && !ch->dead && !ch->moving_to) {
        if (copy_wins(info->incarnation, info->node, ch->incarnation, c->cfg->node_name)) {
            stop_duplicate(c, ch, info);
        } else {
            /* Ours survives: make sure the other node learns that too. */
            Distsup__V1__ChildInfo mine;
            fill_info(c, ch, &mine);
            Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
            m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_CHILD;
            m.child = &mine;
            cluster_send(c, from->name, &m);
            distsup__v1__child_info__free_unpacked(info, NULL);
            return;
        }
    }
    struct rentry *e = registry_get(s->remote, info->name);
    if (e && strcmp(e->info->node, info->node)) {
        struct node *owner = find_node(c, e->info->node);
        int owner_up = owner && owner->up;
        if (owner_up && !copy_wins(info->incarnation, info->node, e->info->incarnation, e->info->node)) {
            distsup__v1__child_info__free_unpacked(info, NULL);
            return;
        }
    } else if (e && info->incarnation < e->info->incarnation) { /* stale news from the same node */
        distsup__v1__child_info__free_unpacked(info, NULL);
        return;
    }
    if ((e = registry_put(s->remote, info, from->epoch))) cache_store(c, s, e);
}

static void apply_gone(struct core *c, const Distsup__V1__ChildGone *g)
{
    struct sup *s = find_sup(c, g->supervisor);
    struct rentry *e = s ? registry_get(s->remote, g->name) : NULL;
    if (e && !strcmp(e->info->node, g->node) && e->info->incarnation <= g->incarnation) cache_remove(c, s, e);
}

static void maybe_finish_sync(struct core *c);

static void on_snapshot(struct core *c, struct node *from, Distsup__V1__Snapshot *snap)
{
    for (size_t i = 0; i < snap->n_children; i++) {
        Distsup__V1__ChildInfo *info = info_dup(snap->children[i]);
        if (info) apply_remote_info(c, from, info);
    }
    if (!snap->last) return;
    /* What the node did not mention is gone. */
    size_t dropped = 0;
    for (size_t i = 0; i < c->n_sups; i++) {
        struct sup *s = &c->sups[i];
        for (struct rentry *e = registry_first(s->remote), *n; e; e = n) {
            n = registry_next(e);
            if (!strcmp(e->info->node, from->name) && e->epoch != from->epoch) {
                cache_remove(c, s, e);
                dropped++;
            }
        }
    }
    from->snapshot_done = 1;
    log_info("core", "synced with node %s%s", from->name, dropped ? " (dropped children it no longer has)" : "");
    maybe_finish_sync(c);
}

/* ---------- cluster: membership ---------- */

static void node_event(struct core *c, Distsup__V1__EventKind kind, const char *node, const char *reason)
{
    Distsup__V1__Event ev = DISTSUP__V1__EVENT__INIT;
    ev.kind = kind;
    ev.supervisor = "";
    ev.name = "";
    ev.id = "";
    ev.node = (char *)node;
    ev.reason = (char *)reason;
    ev.at_ms = wall_ms();
    event_bus_publish(c->bus, &ev);
}

static void suspend_children(struct core *c);
static void reconcile(struct core *c);

static void update_quorum(struct core *c)
{
    if (!c->cfg->quorum) return;
    size_t up = up_count(c), need = c->cfg->cluster_size / 2 + 1;
    int have = up >= need;
    if (have == c->quorum) return;
    c->quorum = have;
    if (!have) {
        log_error("core", "no quorum: %zu of %u nodes up, %zu needed; stopping this node's children and "
                          "refusing StartChild until a majority is back", up, c->cfg->cluster_size, need);
        c->synced = 0;
        suspend_children(c);
    } else {
        log_info("core", "quorum is back: %zu of %u nodes up", up, c->cfg->cluster_size);
        c->sync_since = core_now_ms();
        maybe_finish_sync(c);
        arm_tick(c);
    }
}

static void on_node_up(struct core *c, const Distsup__V1__Join *j)
{
    struct node *n = add_node(c, j->name);
    if (!n || n->self) return;
    int restarted = n->up && n->boot_id != j->boot_id;
    int was_up = n->up;
    if (restarted || !was_up) {
        /* A node that restarted tells us its children afresh: forget what it said before. */
        if (restarted)
            for (size_t i = 0; i < c->n_sups; i++)
                for (struct rentry *e = registry_first(c->sups[i].remote), *nx; e; e = nx) {
                    nx = registry_next(e);
                    if (!strcmp(e->info->node, n->name)) cache_remove(c, &c->sups[i], e);
                }
        fail_forwards(c, n, "restarted");
    } else {
        /* A new link after a broken one: what was in flight on the old one is lost. */
        fail_forwards(c, n, "lost its link");
    }
    n->up = n->seen = 1;
    n->leaving = 0;
    n->boot_id = j->boot_id;
    n->epoch++;
    n->snapshot_done = 0;
    n->weight = j->weight ? j->weight : 100;
    free(n->api);
    free(n->peer_addr);
    n->api = strdup(j->api_address);
    n->peer_addr = strdup(j->peer_address);
    free_labels(n);
    for (size_t i = 0; i < j->n_labels; i++) add_label(n, j->labels[i]->key, j->labels[i]->value);
    if (!was_up) node_event(c, DISTSUP__V1__EVENT_KIND__NODE_UP, n->name, "up");
    else if (restarted) node_event(c, DISTSUP__V1__EVENT_KIND__NODE_UP, n->name, "restarted");
    send_snapshot(c, n->name);
    strategies_nodes_changed(c);
    update_quorum(c);
    c->rebalance_at = core_now_ms() + REBALANCE_DELAY_MS;
    arm_tick(c);
}

static void on_node_down(struct core *c, const char *name, int clean)
{
    struct node *n = find_node(c, name);
    if (!n || n->self || !n->up) return;
    n->up = 0;
    n->leaving = 0;
    fail_forwards(c, n, clean ? "left the cluster" : "went down");
    node_event(c, clean ? DISTSUP__V1__EVENT_KIND__NODE_TERMINATE : DISTSUP__V1__EVENT_KIND__NODE_DOWN, n->name,
               clean ? "left the cluster" : "down");
    strategies_nodes_changed(c);
    update_quorum(c);
    reconcile(c);
    maybe_finish_sync(c);
}

static void on_cluster_message(struct core *c, const char *node, const uint8_t *data, size_t len)
{
    struct node *from = find_node(c, node);
    if (!from || !from->up) {
        log_debug("core", "a message from %s, which is not up; ignored", node);
        return;
    }
    Distsup__V1__ClusterMsg *m = distsup__v1__cluster_msg__unpack(NULL, len, data);
    if (!m) {
        log_warn("core", "node %s sent an unreadable cluster message; ignored", node);
        return;
    }
    switch (m->msg_case) {
    case DISTSUP__V1__CLUSTER_MSG__MSG_SNAPSHOT: on_snapshot(c, from, m->snapshot); break;
    case DISTSUP__V1__CLUSTER_MSG__MSG_CHILD: {
        Distsup__V1__ChildInfo *info = info_dup(m->child);
        if (info) apply_remote_info(c, from, info);
        break;
    }
    case DISTSUP__V1__CLUSTER_MSG__MSG_GONE: apply_gone(c, m->gone); break;
    case DISTSUP__V1__CLUSTER_MSG__MSG_FORWARD: on_forward(c, from, m->forward); break;
    case DISTSUP__V1__CLUSTER_MSG__MSG_REPLY: on_forward_reply(c, from, m->reply); break;
    case DISTSUP__V1__CLUSTER_MSG__MSG_EVENT:
        if (!strcmp(m->event->node, node)) event_bus_publish_remote(c->bus, m->event);
        break;
    case DISTSUP__V1__CLUSTER_MSG__MSG_LEAVING:
        if (!from->leaving) {
            log_info("core", "node %s is leaving: no new children go there", node);
            from->leaving = 1;
            strategies_nodes_changed(c);
        }
        break;
    default:
        log_warn("core", "node %s sent a cluster message of unknown kind %d; ignored", node, (int)m->msg_case);
        break;
    }
    distsup__v1__cluster_msg__free_unpacked(m, NULL);
}

/* ---------- cluster: sync, failover, moves ---------- */

/* Our own children may run once the peer module made contact and every node that is
 * up has sent its snapshot (so we know which of ours were re-homed meanwhile), or at
 * twice sync_timeout_ms; never without quorum. */
static void maybe_finish_sync(struct core *c)
{
    if (c->synced || !c->quorum || c->shutting_down || c->leaving) return;
    int ready = c->settled;
    for (size_t i = 1; i < c->n_nodes && ready; i++)
        if (c->nodes[i]->up && !c->nodes[i]->snapshot_done) ready = 0;
    if (!ready && core_now_ms() < c->sync_since + 2ull * c->cfg->sync_timeout_ms) return;
    c->synced = 1;
    char err[512];
    size_t started = 0, dropped = 0;
    for (size_t i = 0; i < c->n_sups; i++) {
        struct sup *s = &c->sups[i];
        for (struct child *ch = s->head, *next; ch; ch = next) {
            next = ch->next;
            if (ch->dead || ch->state != DISTSUP__V1__CHILD_STATE__SUSPENDED) continue;
            struct rentry *e = registry_get(s->remote, ch->name);
            if (e && copy_wins(e->info->incarnation, e->info->node, ch->incarnation, c->cfg->node_name)) {
                log_info("core", "child %s runs on node %s now (incarnation %llu); not starting it here",
                         ch->name, e->info->node, (unsigned long long)e->info->incarnation);
                remove_child(c, ch, "re-homed while this node was away");
                dropped++;
                continue;
            }
            if (e) cache_remove(c, s, e);
            if (start_incarnation(c, ch, err, sizeof err) != 0) {
                log_error("core", "starting child %s: %s", ch->name, err);
                on_exit_status(c, ch, 127 << 8);
            } else {
                started++;
            }
        }
    }
    if (c->peer) log_info("core", "in sync with the cluster: %zu of this node's stored children started%s",
                          started, dropped ? " (others were taken over meanwhile)" : "");
    reconcile(c);
}

/* Without quorum: stop our children but keep them, to start again when it is back
 * (unless the majority re-homed them meanwhile). */
static void suspend_children(struct core *c)
{
    for (size_t i = 0; i < c->n_sups; i++)
        for (struct child *ch = c->sups[i].head; ch; ch = ch->next) {
            if (ch->dead || ch->removing) continue;
            if (ch->start_done) {
                fail(ch->start_done, ch->start_arg, GRPC_STATUS_UNAVAILABLE, "node %s lost quorum",
                     c->cfg->node_name);
                ch->start_done = NULL;
            }
            fail_calls(ch, GRPC_STATUS_UNAVAILABLE, "was stopped: this node lost quorum");
            if (ch->pid > 0) {
                ch->suspending = 1;
                begin_stop(c, ch, "no quorum");
            } else if (ch->state != DISTSUP__V1__CHILD_STATE__FAILED) {
                ch->state = DISTSUP__V1__CHILD_STATE__SUSPENDED;
                ch->timer_at = 0;
            }
        }
}

struct rehome_ctx {
    struct core *c;
    char *sup, *name, *to;
};

static void rehome_done(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct rehome_ctx *x = arg;
    struct core *c = x->c;
    struct sup *s = find_sup(c, x->sup);
    struct rentry *e = s ? registry_get(s->remote, x->name) : NULL;
    if (code == GRPC_STATUS_OK) {
        const Distsup__V1__StartChildResponse *r = (const void *)reply;
        log_info("core", "re-homed child %s on node %s", x->name, x->to);
        Distsup__V1__ChildInfo *info = r && r->child ? info_dup(r->child) : NULL;
        struct node *to = find_node(c, x->to);
        if (info && to && !to->self) apply_remote_info(c, to, info);
        else if (info) distsup__v1__child_info__free_unpacked(info, NULL);
    } else {
        log_warn("core", "re-homing child %s on node %s failed: %s; will retry", x->name, x->to, message);
        if (e) e->rehoming = 0;
        c->reconcile_at = core_now_ms() + RETRY_MS;
        arm_tick(c);
    }
    free(x->sup);
    free(x->name);
    free(x->to);
    free(x);
}

static void start_local(struct core *c, struct sup *s, Distsup__V1__ChildSpec *spec, uint64_t incarnation,
                        const ProtobufCBinaryData *state, core_done_fn done, void *arg);

/* Starts the child of a down node somewhere live (this node is its directory). */
static void rehome(struct core *c, struct sup *s, struct rentry *e)
{
    char err[512];
    Distsup__V1__ChildInfo *info = e->info;
    if (!info->spec) {
        log_error("core", "child %s of down node %s has no spec; dropped", info->name, info->node);
        cache_remove(c, s, e);
        return;
    }
    struct node *to = place_child(c, s, info->name, info->spec, 0, err, sizeof err);
    if (!to) {
        log_warn("core", "cannot re-home child %s of down node %s now: %s", info->name, info->node, err);
        return;
    }
    struct rehome_ctx *x = calloc(1, sizeof *x);
    if (!x || !(x->sup = strdup(s->cfg->name)) || !(x->name = strdup(info->name)) || !(x->to = strdup(to->name))) {
        if (x) {
            free(x->sup);
            free(x->name);
        }
        free(x);
        return;
    }
    x->c = c;
    e->rehoming = 1;
    log_info("core", "re-homing child %s of down node %s on node %s", info->name, info->node, to->name);
    Distsup__V1__StartChildRequest req = DISTSUP__V1__START_CHILD_REQUEST__INIT;
    req.supervisor = (char *)s->cfg->name;
    req.spec = info->spec;
    if (to->self) {
        Distsup__V1__ChildSpec *spec = spec_dup(info->spec);
        if (!spec) {
            fail(rehome_done, x, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        uint64_t inc = info->incarnation + 1;
        cache_remove(c, s, e); /* the local child owns the name now */
        start_local(c, s, spec, inc, NULL, rehome_done, x);
        return;
    }
    Distsup__V1__Place pl = DISTSUP__V1__PLACE__INIT;
    pl.request = &req;
    pl.incarnation = info->incarnation + 1;
    pl.why = PLACE_REHOME;
    forward(c, to, OP_PLACE, &pl.base, 0, 0, rehome_done, x);
}

static void plan_moves(struct core *c);

/* After a membership change: re-home what down nodes ran (the directory does it),
 * drop their temporary children, and (later, see rebalance_at) move children. */
static void reconcile(struct core *c)
{
    if (!c->peer || !c->synced || !c->quorum || c->shutting_down) return;
    uint64_t now = core_now_ms();
    int unseen_wait = now < c->started + 2ull * c->cfg->sync_timeout_ms;
    for (size_t i = 0; i < c->n_sups; i++) {
        struct sup *s = &c->sups[i];
        for (struct rentry *e = registry_first(s->remote), *n; e; e = n) {
            n = registry_next(e);
            struct node *owner = find_node(c, e->info->node);
            if (owner && owner->up) continue;
            /* A node this run never saw (known only from the cache) gets time to show up. */
            if ((!owner || !owner->seen) && unseen_wait) {
                c->reconcile_at = c->started + 2ull * c->cfg->sync_timeout_ms + 1;
                arm_tick(c);
                continue;
            }
            if (e->info->spec && e->info->spec->restart == DISTSUP__V1__RESTART_TYPE__TEMPORARY) {
                log_info("core", "temporary child %s went down with node %s; dropped", e->info->name,
                         e->info->node);
                cache_remove(c, s, e);
                continue;
            }
            if (e->info->state == DISTSUP__V1__CHILD_STATE__FAILED) { /* its restarts were used up: not again */
                log_info("core", "failed child %s went down with node %s; dropped", e->info->name, e->info->node);
                cache_remove(c, s, e);
                continue;
            }
            if (e->rehoming) continue;
            struct node *dir = directory_of(c, s, e->info->name);
            if (dir && dir->self) rehome(c, s, e);
        }
    }
    store_flush(c->store);
}

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
            log_info("core", "child %s moved to node %s", x->name, x->to);
            emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_MOVED, 0, 0, why);
            remove_child(c, ch, why);
            struct node *to = find_node(c, x->to);
            Distsup__V1__ChildInfo *info = r && r->child ? info_dup(r->child) : NULL;
            if (info && to) apply_remote_info(c, to, info);
            else if (info) distsup__v1__child_info__free_unpacked(info, NULL);
        } else {
            char err[512];
            log_warn("core", "moving child %s to node %s failed: %s; starting it here again", x->name, x->to,
                     message);
            if (c->shutting_down || c->leaving) {
                ch->state = DISTSUP__V1__CHILD_STATE__SUSPENDED; /* kept on disk for the next start */
            } else if (start_incarnation(c, ch, err, sizeof err) != 0) {
                log_error("core", "restarting child %s: %s", ch->name, err);
                on_exit_status(c, ch, 127 << 8);
            }
        }
    }
    free(x->sup);
    free(x->name);
    free(x->to);
    free(x);
    plan_moves(c);
}

/* A moving child has exited (its State captured): start it on its new node. */
static void finish_move(struct core *c, struct child *ch)
{
    struct node *to = find_node(c, ch->moving_to);
    struct move_ctx *x = calloc(1, sizeof *x);
    if (!x || !(x->sup = strdup(ch->sup->cfg->name)) || !(x->name = strdup(ch->name)) ||
        !(x->to = strdup(ch->moving_to))) {
        if (x) {
            free(x->sup);
            free(x->name);
        }
        free(x);
        log_error("core", "out of memory moving child %s", ch->name);
        return;
    }
    x->c = c;
    if (!to) {
        fail(move_done, x, GRPC_STATUS_UNAVAILABLE, "node is unknown");
        return;
    }
    Distsup__V1__StartChildRequest req = DISTSUP__V1__START_CHILD_REQUEST__INIT;
    req.supervisor = (char *)ch->sup->cfg->name;
    req.spec = ch->spec;
    Distsup__V1__Place pl = DISTSUP__V1__PLACE__INIT;
    pl.request = &req;
    pl.incarnation = ch->incarnation + 1;
    pl.why = PLACE_MOVE;
    if (ch->state_blob) {
        pl.state.data = ch->state_blob;
        pl.state.len = ch->state_len;
    }
    forward(c, to, OP_PLACE, &pl.base, 0, 0, move_done, x);
}

static void start_move(struct core *c, struct child *ch, struct node *to, const char *why)
{
    if (!(ch->moving_to = strdup(to->name))) return;
    ch->sup->moves++;
    log_info("core", "moving child %s to node %s (%s)", ch->name, to->name, why);
    free(ch->state_blob); /* only a State sent as it stops counts */
    ch->state_blob = NULL;
    ch->state_len = 0;
    if (ch->start_done) {
        fail(ch->start_done, ch->start_arg, GRPC_STATUS_UNAVAILABLE, "child '%s' is moving to node %s",
             ch->name, to->name);
        ch->start_done = NULL;
    }
    begin_stop(c, ch, why);
}

/* Moves, a bounded number at a time: when a node joined (the strategy says which
 * children go), or all of them when this node leaves. */
static void plan_moves(struct core *c)
{
    if (!c->peer || !c->quorum || (!c->synced && !c->leaving) || (c->shutting_down && !c->leaving)) return;
    for (size_t i = 0; i < c->n_sups; i++) {
        struct sup *s = &c->sups[i];
        if (!s->cfg->monitor_nodes && !c->leaving) continue;
        if (s->moves >= s->cfg->max_moves) continue;
        struct nodeset ns;
        if (nodeset_build(c, s, c->leaving, &ns) != 0) continue;
        if (ns.n == 0) {
            nodeset_free(&ns);
            continue;
        }
        int self_i = -1;
        for (size_t k = 0; k < ns.n; k++)
            if (ns.src[k]->self) self_i = (int)k;
        for (struct child *ch = s->head; ch && s->moves < s->cfg->max_moves; ch = ch->next) {
            if (ch->dead || ch->removing || ch->moving_to || ch->pid <= 0 ||
                ch->state != DISTSUP__V1__CHILD_STATE__RUNNING)
                continue;
            if (c->leaving && ch->spec->restart == DISTSUP__V1__RESTART_TYPE__TEMPORARY) continue;
            if (!c->leaving && ch->spec->node[0]) {
                /* pinned by its spec: it stays, or goes back once its node is usable again
                 * (a failover took it elsewhere) */
                struct node *home = strcmp(ch->spec->node, c->cfg->node_name) ? find_node(c, ch->spec->node) : NULL;
                if (home && node_usable(home) && sup_eligible(s, home->name))
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
        nodeset_free(&ns);
    }
}

/* Duplicate after a partition: another node's copy wins; ours stops. */
static void stop_duplicate(struct core *c, struct child *ch, const Distsup__V1__ChildInfo *winner)
{
    char why[400];
    if (ch->state == DISTSUP__V1__CHILD_STATE__SUSPENDED && ch->pid <= 0) {
        /* Held back while syncing or without quorum: it was taken over meanwhile. */
        snprintf(why, sizeof why, "taken over by node %s (incarnation %llu) while this node was away",
                 winner->node, (unsigned long long)winner->incarnation);
        log_info("core", "child %s was %s; not starting it here", ch->name, why);
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, 0, 0, why);
        remove_child(c, ch, why);
        return;
    }
    snprintf(why, sizeof why, "duplicate: the copy on node %s (incarnation %llu) survives", winner->node,
             (unsigned long long)winner->incarnation);
    log_warn("core", "child %s runs on node %s too; %s, stopping this one (incarnation %llu)", ch->name,
             winner->node, why, (unsigned long long)ch->incarnation);
    if (ch->pid <= 0) {
        if (!ch->stop_reason) ch->stop_reason = strdup(why);
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, 0, 0, why);
        remove_child(c, ch, why);
        return;
    }
    if (!ch->stop_reason) ch->stop_reason = strdup(why);
    ch->removing = 1;
    if (ch->start_done) {
        fail(ch->start_done, ch->start_arg, GRPC_STATUS_ALREADY_EXISTS, "child '%s' %s", ch->name, why);
        ch->start_done = NULL;
    }
    fail_calls(ch, GRPC_STATUS_UNAVAILABLE, "stopped as a duplicate");
    begin_stop(c, ch, why);
}

/* ---------- requests (continued) ---------- */

static void known_nodes(struct core *c, char *list, size_t cap)
{
    size_t off = 0;
    list[0] = 0;
    for (size_t i = 0; i < c->n_nodes && off < cap - 1; i++) {
        int n = snprintf(list + off, cap - off, "%s%s", i ? ", " : "", c->nodes[i]->name);
        if (n < 0) break;
        off += (size_t)n;
    }
}

/* A node filter (Children, CountChildren): "" or a known node.  0, or NOT_FOUND. */
static int check_node(struct core *c, const char *node, core_done_fn done, void *arg)
{
    if (!node[0] || find_node(c, node)) return 0;
    char list[512];
    known_nodes(c, list, sizeof list);
    fail(done, arg, GRPC_STATUS_NOT_FOUND, "no node named '%s' in the cluster (known nodes: %s)", node, list);
    return -1;
}

/* A node to start on that the cluster does not know: UNAVAILABLE (no eligible node). */
static void unknown_target(struct core *c, const char *node, core_done_fn done, void *arg)
{
    char list[512];
    known_nodes(c, list, sizeof list);
    fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node '%s' is not in the cluster (known nodes: %s)", node, list);
}

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

/* Starts a child here: the spec (taken) is stored, then its process started; done
 * answers when it is ready.  incarnation: 0 for a new child, else the one to run
 * (re-homed or moved); state: handed-off state for its Init, or NULL. */
static void start_local(struct core *c, struct sup *s, Distsup__V1__ChildSpec *spec, uint64_t incarnation,
                        const ProtobufCBinaryData *state, core_done_fn done, void *arg)
{
    char err[512];
    struct child *old = find_child(s, spec->name);
    if (old) {
        fail(done, arg, GRPC_STATUS_ALREADY_EXISTS,
             "child '%s' already exists in supervisor '%s' on node %s (id %s, pid %d, state %s)", spec->name,
             s->cfg->name, c->cfg->node_name, old->id, (int)old->pid,
             protobuf_c_enum_descriptor_get_value(&distsup__v1__child_state__descriptor, old->state)->name);
        distsup__v1__child_spec__free_unpacked(spec, NULL);
        return;
    }
    struct child *ch = new_child(s, spec);
    if (!ch || sup_insert(s, ch) != 0) {
        if (ch) free_child(ch);
        else distsup__v1__child_spec__free_unpacked(spec, NULL);
        fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    if (incarnation) ch->incarnation = incarnation - 1; /* start_incarnation counts it up */
    if (state && state->len) {
        if (!(ch->state_blob = malloc(state->len))) {
            ch->dead = 1;
            sup_unlink(s, ch);
            free_child(ch);
            fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
        memcpy(ch->state_blob, state->data, state->len);
        ch->state_len = state->len;
    }
    size_t len = distsup__v1__child_spec__get_packed_size(spec);
    uint8_t *bytes = malloc(len ? len : 1);
    struct store_child sc = {.supervisor = s->cfg->name, .name = ch->name, .spec = bytes, .spec_len = len,
                             .state = STORE_RUNNING, .incarnation = ch->incarnation + 1};
    if (!bytes || (distsup__v1__child_spec__pack(spec, bytes), store_put_child(c->store, &sc)) != 0) {
        free(bytes);
        fail(done, arg, GRPC_STATUS_INTERNAL,
             "cannot save the spec of '%s' to the database (see the daemon log); not started", ch->name);
        ch->dead = 1;
        sup_unlink(s, ch);
        free_child(ch);
        return;
    }
    free(bytes);
    if (start_incarnation(c, ch, err, sizeof err) != 0) {
        log_warn("core", "StartChild %s: %s", ch->name, err);
        fail(done, arg, GRPC_STATUS_FAILED_PRECONDITION, "cannot start child '%s': %s", ch->name, err);
        remove_child(c, ch, "could not start");
        return;
    }
    log_info("core", "started child %s (pid %d) in supervisor %s", ch->name, (int)ch->pid, s->cfg->name);
    ch->start_done = done;
    ch->start_arg = arg;
    if (ch->state == DISTSUP__V1__CHILD_STATE__RUNNING) answer_start(c, ch);
}

/* The directory node's side of StartChild: the one place a name is checked and
 * reserved while the child is being placed, so concurrent starts of one name from
 * different nodes start it once. */
struct dir_ctx {
    struct core *c;
    char *sup, *name;
    core_done_fn done;
    void *arg;
};

/* A started child, from a StartChildResponse that another node sent: known here at once,
 * before its node's broadcast arrives (the directory node, and the node the client
 * asked, answer for it next). */
static void learn_started(struct core *c, const ProtobufCMessage *reply)
{
    const Distsup__V1__StartChildResponse *r = (const void *)reply;
    struct node *owner = r && r->child ? find_node(c, r->child->node) : NULL;
    Distsup__V1__ChildInfo *info = owner && !owner->self ? info_dup(r->child) : NULL;
    if (info) apply_remote_info(c, owner, info);
}

static void dir_done(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct dir_ctx *x = arg;
    struct core *c = x->c;
    struct sup *s = find_sup(c, x->sup);
    if (s) unreserve(s, x->name);
    if (code == GRPC_STATUS_OK) learn_started(c, reply);
    x->done(x->arg, code, message, reply);
    free(x->sup);
    free(x->name);
    free(x);
}

/* The node a client asked, when the name's directory is another node: it learns the
 * started child from the answer, so the client's next request here finds it. */
struct relay_ctx {
    struct core *c;
    core_done_fn done;
    void *arg;
};

static void relay_start_done(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct relay_ctx *x = arg;
    if (code == GRPC_STATUS_OK) learn_started(x->c, reply);
    x->done(x->arg, code, message, reply);
    free(x);
}

static void dir_start(struct core *c, struct sup *s, Distsup__V1__StartChildRequest *req, core_done_fn done,
                      void *arg)
{
    char err[512];
    Distsup__V1__ChildSpec *spec = req->spec;
    if (c->leaving || c->shutting_down) {
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node %s is leaving the cluster; try another node",
             c->cfg->node_name);
        return;
    }
    if (!c->quorum) {
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node %s has no quorum (%zu of %u nodes up): no starts",
             c->cfg->node_name, up_count(c), c->cfg->cluster_size);
        return;
    }
    struct child *old = find_child(s, spec->name);
    struct rentry *e = registry_get(s->remote, spec->name);
    if (!old && e) {
        struct node *owner = find_node(c, e->info->node);
        fail(done, arg, GRPC_STATUS_ALREADY_EXISTS,
             "child '%s' already exists in supervisor '%s' on node %s (id %s, pid %d, state %s%s)", spec->name,
             s->cfg->name, e->info->node, e->info->id, (int)e->info->os_pid,
             protobuf_c_enum_descriptor_get_value(&distsup__v1__child_state__descriptor, e->info->state)->name,
             owner && owner->up ? "" : "; that node is down and the child is being re-homed");
        return;
    }
    if (old) { /* it runs here, wherever the strategy would put it now: start_local says so */
        req->spec = NULL;
        start_local(c, s, spec, 0, NULL, done, arg);
        return;
    }
    if (reserved(s, spec->name)) {
        fail(done, arg, GRPC_STATUS_ALREADY_EXISTS, "child '%s' is being started in supervisor '%s' right now",
             spec->name, s->cfg->name);
        return;
    }
    if (req->node[0] && !spec->node[0]) { /* the request's node pins the child, as spec.node does */
        char *pin = strdup(req->node);
        if (!pin) {
            fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
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
            fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node '%s' is %s", want, to->up ? "leaving" : "down");
            return;
        }
        if (!sup_eligible(s, to->name)) {
            fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node '%s' is not eligible for supervisor '%s' (its nodes "
                                                     "option)", want, s->cfg->name);
            return;
        }
    } else if (!(to = place_child(c, s, spec->name, spec, 0, err, sizeof err))) {
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "no node for child '%s': %s", spec->name, err);
        return;
    }
    if (to->self) {
        req->spec = NULL; /* start_local takes it */
        start_local(c, s, spec, 0, NULL, done, arg);
        return;
    }
    struct dir_ctx *x = calloc(1, sizeof *x);
    if (!x || !(x->sup = strdup(s->cfg->name)) || !(x->name = strdup(spec->name)) || reserve(s, spec->name) != 0) {
        if (x) {
            free(x->sup);
            free(x->name);
        }
        free(x);
        fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    x->c = c;
    x->done = done;
    x->arg = arg;
    Distsup__V1__Place pl = DISTSUP__V1__PLACE__INIT;
    pl.request = req;
    pl.why = PLACE_START;
    forward(c, to, OP_PLACE, &pl.base, 0, 0, dir_done, x);
}

static void op_start(struct core *c, Distsup__V1__StartChildRequest *req, unsigned flags, core_done_fn done,
                     void *arg)
{
    char err[512];
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    if (!s) return;
    Distsup__V1__ChildSpec *spec = req->spec;
    if (!spec) {
        fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "spec is missing");
        return;
    }
    if (spec_validate(spec, c->cfg->max_payload, err, sizeof err) != 0) {
        fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "invalid spec: %s", err);
        return;
    }
    if (req->node[0] && spec->node[0] && strcmp(req->node, spec->node)) {
        fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "node '%s' and spec.node '%s' disagree", req->node,
             spec->node);
        return;
    }
    if (c->shutting_down) {
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
        return;
    }
    if (!spec->name[0]) {
        /* Unique across the cluster: this node's name hash, boot time and a counter. */
        char gen[96];
        uint32_t nh = (uint32_t)mix64(hash_str(c->cfg->node_name));
        do snprintf(gen, sizeof gen, "child-%08x%llx-%llu", nh, (unsigned long long)c->boot_ms,
                    (unsigned long long)++c->seq);
        while (find_child(s, gen));
        if (!(spec->name = strdup(gen))) {
            spec->name = (char *)protobuf_c_empty_string;
            fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
    }
    if (c->peer && !(flags & REQ_LOCAL)) {
        struct node *dir = directory_of(c, s, spec->name);
        if (!dir) {
            fail(done, arg, GRPC_STATUS_UNAVAILABLE, "no node of the cluster is usable");
            return;
        }
        if (!dir->self) {
            struct relay_ctx *x = malloc(sizeof *x);
            if (!x) {
                fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
                return;
            }
            *x = (struct relay_ctx){.c = c, .done = done, .arg = arg};
            forward(c, dir, OP_DIR_START, &req->base, 0, 0, relay_start_done, x);
            return;
        }
    }
    dir_start(c, s, req, done, arg);
}

/* OP_PLACE: the directory node (or a failover or a move) says: run it here. */
static void op_place(struct core *c, Distsup__V1__Place *pl, core_done_fn done, void *arg)
{
    char err[512];
    Distsup__V1__StartChildRequest *req = pl->request;
    struct sup *s = req ? need_sup(c, req->supervisor, done, arg) : NULL;
    if (!s) {
        if (!req) fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "Place without a request");
        return;
    }
    if (!req->spec || spec_validate(req->spec, c->cfg->max_payload, err, sizeof err) != 0 || !req->spec->name[0]) {
        fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "invalid spec: %s", req->spec ? err : "missing");
        return;
    }
    if (c->leaving || c->shutting_down) {
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node %s is leaving the cluster", c->cfg->node_name);
        return;
    }
    if (!c->quorum) {
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node %s has no quorum", c->cfg->node_name);
        return;
    }
    Distsup__V1__ChildSpec *spec = req->spec;
    req->spec = NULL;
    struct rentry *e = registry_get(s->remote, spec->name);
    if (e && pl->why != PLACE_START) cache_remove(c, s, e); /* it moves (or is re-homed) here */
    start_local(c, s, spec, pl->incarnation, &pl->state, done, arg);
}

/* A local child by name or id, or a remote one's entry; fails the request if none. */
static int lookup(struct sup *s, const char *name, const char *id, struct child **ch, struct rentry **e,
                  core_done_fn done, void *arg)
{
    *ch = NULL;
    *e = NULL;
    if (name[0]) {
        *ch = find_child(s, name);
        if (!*ch) *e = registry_get(s->remote, name);
        if (*ch || *e) return 0;
        fail(done, arg, GRPC_STATUS_NOT_FOUND, "no child named '%s' in supervisor '%s'", name, s->cfg->name);
        return -1;
    }
    if (id[0]) {
        for (*ch = s->head; *ch && strcmp((*ch)->id, id); *ch = (*ch)->next) {}
        if (!*ch) *e = registry_find_id(s->remote, id);
        if (*ch || *e) return 0;
        fail(done, arg, GRPC_STATUS_NOT_FOUND, "no child with id '%s' in supervisor '%s'", id, s->cfg->name);
        return -1;
    }
    fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "name is empty: say which child");
    return -1;
}

/* Sends a request about a remote child to its node.  0 if it was sent (or failed). */
static void to_owner(struct core *c, struct rentry *e, int op, const ProtobufCMessage *req, uint32_t timeout_ms,
                     uint64_t deadline, core_done_fn done, void *arg)
{
    struct node *owner = find_node(c, e->info->node);
    if (!owner || !owner->up) {
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "child '%s' was on node %s, which is down; it is being "
                                                 "re-homed, try again shortly", e->info->name, e->info->node);
        return;
    }
    forward(c, owner, op, req, timeout_ms, deadline, done, arg);
}

static void op_terminate(struct core *c, Distsup__V1__TerminateChildRequest *req, unsigned flags,
                         core_done_fn done, void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    struct child *ch;
    struct rentry *e;
    if (!s || lookup(s, req->name, req->id, &ch, &e, done, arg)) return;
    if (!ch) {
        if (flags & REQ_LOCAL)
            fail(done, arg, GRPC_STATUS_NOT_FOUND, "child '%s' is not on node %s", e->info->name, c->cfg->node_name);
        else to_owner(c, e, CORE_TERMINATE_CHILD, &req->base, 0, 0, done, arg);
        return;
    }
    if (ch->moving_to) {
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "child '%s' is moving to node %s; try again shortly", ch->name,
             ch->moving_to);
        return;
    }
    if (ch->pid <= 0) { /* FAILED, RESTARTING or SUSPENDED: nothing runs */
        ch->removing = 1;
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, 0, 0, "terminated while not running");
        Distsup__V1__TerminateChildResponse r = DISTSUP__V1__TERMINATE_CHILD_RESPONSE__INIT;
        r.name = ch->name;
        done(arg, GRPC_STATUS_OK, NULL, &r.base);
        remove_child(c, ch, "terminated");
        return;
    }
    struct waiter *w = malloc(sizeof *w);
    if (!w) {
        fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    w->done = done;
    w->arg = arg;
    w->next = ch->term_waiters;
    ch->term_waiters = w;
    ch->removing = 1;
    ch->suspending = 0;
    if (ch->start_done) {
        fail(ch->start_done, ch->start_arg, GRPC_STATUS_ABORTED, "child '%s' was terminated while starting",
             ch->name);
        ch->start_done = NULL;
    }
    begin_stop(c, ch, "terminated by request");
}

/* The nodes a listing covers: all (""), or one. */
static int node_matches(const char *filter, const char *node) { return !filter[0] || !strcmp(filter, node); }

static void op_children(struct core *c, Distsup__V1__ChildrenRequest *req, core_done_fn done, void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    if (!s || check_node(c, req->node, done, arg)) return;
    size_t cap = s->count + registry_count(s->remote) + 1;
    Distsup__V1__ChildInfo *infos = calloc(cap, sizeof *infos);
    Distsup__V1__ChildInfo **ptrs = calloc(cap, sizeof *ptrs);
    if (!infos || !ptrs) {
        free(infos);
        free(ptrs);
        fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    size_t n = 0;
    if (node_matches(req->node, c->cfg->node_name))
        for (struct child *ch = s->head; ch; ch = ch->next) {
            fill_info(c, ch, &infos[n]);
            ptrs[n] = &infos[n];
            n++;
        }
    for (struct rentry *e = registry_first(s->remote); e; e = registry_next(e))
        if (node_matches(req->node, e->info->node)) ptrs[n++] = e->info;
    Distsup__V1__ChildrenResponse r = DISTSUP__V1__CHILDREN_RESPONSE__INIT;
    r.n_children = n;
    r.children = ptrs;
    done(arg, GRPC_STATUS_OK, NULL, &r.base);
    free(infos);
    free(ptrs);
}

static void op_count(struct core *c, Distsup__V1__CountChildrenRequest *req, core_done_fn done, void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    if (!s || check_node(c, req->node, done, arg)) return;
    Distsup__V1__CountChildrenResponse r = DISTSUP__V1__COUNT_CHILDREN_RESPONSE__INIT;
    if (node_matches(req->node, c->cfg->node_name))
        for (struct child *ch = s->head; ch; ch = ch->next) {
            r.specs++;
            r.workers++;
            if (ch->pid > 0) r.active++;
            if (ch->state == DISTSUP__V1__CHILD_STATE__FAILED) r.failed++;
        }
    for (struct rentry *e = registry_first(s->remote); e; e = registry_next(e)) {
        if (!node_matches(req->node, e->info->node)) continue;
        r.specs++;
        r.workers++;
        if (e->info->os_pid > 0) r.active++;
        if (e->info->state == DISTSUP__V1__CHILD_STATE__FAILED) r.failed++;
    }
    done(arg, GRPC_STATUS_OK, NULL, &r.base);
}

static void op_whereis(struct core *c, Distsup__V1__WhereIsRequest *req, core_done_fn done, void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    struct child *ch;
    struct rentry *e;
    if (!s || lookup(s, req->name, "", &ch, &e, done, arg)) return;
    Distsup__V1__ChildInfo info;
    Distsup__V1__WhereIsResponse r = DISTSUP__V1__WHERE_IS_RESPONSE__INIT;
    if (ch) {
        fill_info(c, ch, &info);
        r.child = &info;
    } else {
        r.child = e->info;
    }
    done(arg, GRPC_STATUS_OK, NULL, &r.base);
}

static void op_whois(struct core *c, Distsup__V1__WhoIsRequest *req, core_done_fn done, void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    if (!s) return;
    if (!req->id[0]) {
        fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "id is empty");
        return;
    }
    struct child *ch;
    struct rentry *e;
    if (lookup(s, "", req->id, &ch, &e, done, arg)) return;
    Distsup__V1__ChildInfo info;
    Distsup__V1__WhoIsResponse r = DISTSUP__V1__WHO_IS_RESPONSE__INIT;
    if (ch) {
        fill_info(c, ch, &info);
        r.name = ch->name;
        r.child = &info;
    } else {
        r.name = e->info->name;
        r.child = e->info;
    }
    done(arg, GRPC_STATUS_OK, NULL, &r.base);
}

/* Checks that a message can go to the child now.  0, or fails the request. */
static int can_message(struct core *c, struct child *ch, size_t len, int is_call, core_done_fn done,
                       void *arg)
{
    const struct sup_config *cfg = ch->sup->cfg;
    if (len > c->cfg->max_payload) {
        fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "payload is %zu bytes; the limit is %zu "
             "(max_payload_bytes)", len, c->cfg->max_payload);
        return -1;
    }
    if (ch->spec->protocol == DISTSUP__V1__PROTOCOL__NONE) {
        fail(done, arg, GRPC_STATUS_FAILED_PRECONDITION,
             "child '%s' has protocol NONE: it takes no calls, casts or messages", ch->name);
        return -1;
    }
    switch (ch->state) {
    case DISTSUP__V1__CHILD_STATE__FAILED:
        fail(done, arg, GRPC_STATUS_FAILED_PRECONDITION,
             "child '%s' has FAILED (restart bound reached); terminate and start it again", ch->name);
        return -1;
    case DISTSUP__V1__CHILD_STATE__RESTARTING:
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "child '%s' is restarting; try again shortly", ch->name);
        return -1;
    case DISTSUP__V1__CHILD_STATE__STOPPING:
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "child '%s' is stopping", ch->name);
        return -1;
    case DISTSUP__V1__CHILD_STATE__SUSPENDED:
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "child '%s' is suspended on node %s (%s); try again shortly",
             ch->name, c->cfg->node_name, c->quorum ? "the node is syncing with the cluster" : "the node has no quorum");
        return -1;
    default:
        break;
    }
    if (ch->in_fd < 0) {
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "child '%s' closed its stdin", ch->name);
        return -1;
    }
    if ((is_call && ch->n_calls >= cfg->mailbox) || dsbuf_unread(&ch->outb) + len > cfg->mailbox_bytes) {
        fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED,
             "mailbox of child '%s' is full (%u calls in flight, %zu bytes unread; limits %u and %zu)",
             ch->name, ch->n_calls, dsbuf_unread(&ch->outb), cfg->mailbox, cfg->mailbox_bytes);
        return -1;
    }
    return 0;
}

static void op_call(struct core *c, Distsup__V1__CallRequest *req, uint64_t deadline, unsigned flags,
                    core_done_fn done, void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    struct child *ch;
    struct rentry *e;
    if (!s || lookup(s, req->name, "", &ch, &e, done, arg)) return;
    uint64_t now = core_now_ms();
    uint64_t dl = now + (req->timeout_ms ? req->timeout_ms : DEFAULT_CALL_TIMEOUT_MS);
    if (deadline && deadline < dl) dl = deadline;
    if (!ch) {
        if (flags & REQ_LOCAL) {
            fail(done, arg, GRPC_STATUS_NOT_FOUND, "child '%s' is not on node %s", req->name, c->cfg->node_name);
            return;
        }
        if (req->payload.len > c->cfg->max_payload) {
            fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "payload is %zu bytes; the limit is %zu "
                 "(max_payload_bytes)", req->payload.len, c->cfg->max_payload);
            return;
        }
        /* The owner applies the timeout; we wait a little longer for its answer. */
        req->timeout_ms = (uint32_t)(dl - now);
        to_owner(c, e, CORE_CALL, &req->base, req->timeout_ms, dl + 1000, done, arg);
        return;
    }
    if (can_message(c, ch, req->payload.len, 1, done, arg)) return;
    struct pending_call *p = calloc(1, sizeof *p);
    if (!p) {
        fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    p->ref = ch->next_ref++;
    p->deadline = dl;
    p->done = done;
    p->arg = arg;
    Distsup__V1__CallFrame cf = DISTSUP__V1__CALL_FRAME__INIT;
    cf.ref = p->ref;
    cf.payload = req->payload;
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_CALL;
    f.call = &cf;
    if (send_frame(c, ch, &f) != 0) {
        free(p);
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "cannot write to child '%s'", req->name);
        return;
    }
    p->prev = ch->calls_tail;
    if (ch->calls_tail) ch->calls_tail->next = p;
    else ch->calls = p;
    ch->calls_tail = p;
    ch->n_calls++;
    arm_tick(c);
}

static void op_cast(struct core *c, ProtobufCMessage *req, const char *supn, const char *name,
                    ProtobufCBinaryData payload, int info, unsigned flags, core_done_fn done, void *arg)
{
    struct sup *s = need_sup(c, supn, done, arg);
    struct child *ch;
    struct rentry *e;
    if (!s || lookup(s, name, "", &ch, &e, done, arg)) return;
    if (!ch) {
        if (flags & REQ_LOCAL) fail(done, arg, GRPC_STATUS_NOT_FOUND, "child '%s' is not on node %s", name,
                                    c->cfg->node_name);
        else if (payload.len > c->cfg->max_payload)
            fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "payload is %zu bytes; the limit is %zu "
                 "(max_payload_bytes)", payload.len, c->cfg->max_payload);
        else to_owner(c, e, info ? CORE_SEND : CORE_CAST, req, 0, 0, done, arg);
        return;
    }
    if (can_message(c, ch, payload.len, 0, done, arg)) return;
    Distsup__V1__CastFrame cf = DISTSUP__V1__CAST_FRAME__INIT;
    Distsup__V1__InfoFrame inf = DISTSUP__V1__INFO_FRAME__INIT;
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    if (info) {
        inf.payload = payload;
        f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_INFO;
        f.info = &inf;
    } else {
        cf.payload = payload;
        f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_CAST;
        f.cast = &cf;
    }
    if (send_frame(c, ch, &f) != 0) {
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "cannot write to child '%s'", name);
        return;
    }
    if (info) {
        Distsup__V1__SendResponse r = DISTSUP__V1__SEND_RESPONSE__INIT;
        done(arg, GRPC_STATUS_OK, NULL, &r.base);
    } else {
        Distsup__V1__CastResponse r = DISTSUP__V1__CAST_RESPONSE__INIT;
        done(arg, GRPC_STATUS_OK, NULL, &r.base);
    }
}

static void op_nodes(struct core *c, Distsup__V1__NodesRequest *req, core_done_fn done, void *arg)
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
        fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    struct node **order = calloc(c->n_nodes, sizeof *order);
    if (!order) {
        fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    memcpy(order, c->nodes, c->n_nodes * sizeof *order);
    qsort(order, c->n_nodes, sizeof *order, cmp_node_ptr); /* the same list on every node */
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
out:
    free(infos);
    free(ptrs);
    free(lab);
    free(labp);
}

/* NodeFor and Mine: where the supervisor's strategy would place a child with this key. */
static void op_node_for(struct core *c, const char *supn, const char *key, int mine, core_done_fn done, void *arg)
{
    char err[512];
    struct sup *s = need_sup(c, supn, done, arg);
    if (!s) return;
    if (!key[0]) {
        fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "key is empty");
        return;
    }
    Distsup__V1__ChildSpec spec = DISTSUP__V1__CHILD_SPEC__INIT;
    spec.key = (char *)key;
    struct node *n = place_child(c, s, key, &spec, 0, err, sizeof err);
    if (!n) {
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "no node for key '%s': %s", key, err);
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

/* Runs one request; req stays the caller's (handlers may take parts, setting them
 * NULL).  flags REQ_LOCAL: it came from another node, answer here. */
static void run_op(struct core *c, int op, ProtobufCMessage *r, uint64_t deadline, unsigned flags,
                   core_done_fn done, void *arg)
{
    if (c->shutting_down && !c->leaving) {
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
        return;
    }
    switch (op) {
    case CORE_START_CHILD: op_start(c, (void *)r, flags, done, arg); break;
    case OP_DIR_START: op_start(c, (void *)r, REQ_LOCAL, done, arg); break;
    case OP_PLACE: op_place(c, (void *)r, done, arg); break;
    case CORE_TERMINATE_CHILD: op_terminate(c, (void *)r, flags, done, arg); break;
    case CORE_CHILDREN: op_children(c, (void *)r, done, arg); break;
    case CORE_COUNT_CHILDREN: op_count(c, (void *)r, done, arg); break;
    case CORE_WHEREIS: op_whereis(c, (void *)r, done, arg); break;
    case CORE_WHOIS: op_whois(c, (void *)r, done, arg); break;
    case CORE_CALL: op_call(c, (void *)r, deadline, flags, done, arg); break;
    case CORE_CAST: {
        Distsup__V1__CastRequest *q = (void *)r;
        op_cast(c, r, q->supervisor, q->name, q->payload, 0, flags, done, arg);
        break;
    }
    case CORE_SEND: {
        Distsup__V1__SendRequest *q = (void *)r;
        op_cast(c, r, q->supervisor, q->name, q->payload, 1, flags, done, arg);
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
    default:
        fail(done, arg, GRPC_STATUS_UNIMPLEMENTED, "unknown operation %d", op);
        break;
    }
}

/* ---------- queue ---------- */

/* Queues m for the reactor.  0, or -1 once the core is closed (m is not taken). */
static int enqueue_cmd(struct core *c, struct cmd *m)
{
    pthread_mutex_lock(&c->qmu);
    if (c->closed) {
        pthread_mutex_unlock(&c->qmu);
        return -1;
    }
    int was_empty = c->qhead == NULL;
    if (c->qtail) c->qtail->next = m;
    else c->qhead = m;
    c->qtail = m;
    pthread_mutex_unlock(&c->qmu);
    if (was_empty) {
        uint64_t one = 1;
        if (write(c->wakefd, &one, sizeof one) < 0 && errno != EAGAIN)
            log_error("core", "eventfd write: %s", strerror(errno));
    }
    return 0;
}

static void free_cmd(struct cmd *m)
{
    if (m->req) protobuf_c_message_free_unpacked(m->req, NULL);
    free(m->node);
    free(m->data);
    free(m);
}

/* The peer module's news: copied into a command. */
static void peer_news(struct core *c, int op, const char *node, const void *data, size_t len, int clean)
{
    struct cmd *m = calloc(1, sizeof *m);
    if (!m || (node && !(m->node = strdup(node))) || (data && !(m->data = malloc(len ? len : 1)))) {
        if (m) free_cmd(m);
        log_error("core", "out of memory: lost news from the peer links");
        return;
    }
    if (data) memcpy(m->data, data, len);
    m->op = op;
    m->len = len;
    m->clean = clean;
    if (enqueue_cmd(c, m) != 0) free_cmd(m);
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

void core_cluster_message(struct core *c, const char *node, const uint8_t *data, size_t len)
{
    peer_news(c, CMD_MESSAGE, node, data, len, 0);
}

void core_peers_settled(struct core *c) { peer_news(c, CMD_SETTLED, NULL, NULL, 0, 0); }

void core_set_address(struct core *c, const char *api_address)
{
    struct node *self = c->nodes[0];
    char *a = strdup(api_address);
    if (!a) return;
    free(self->api);
    self->api = a;
}

void core_set_peer(struct core *c, struct peer *p, uint64_t boot_id)
{
    c->peer = p;
    c->boot_id = boot_id;
}

void core_request(struct core *c, enum core_op op, ProtobufCMessage *req, uint64_t deadline_ms,
                  core_done_fn done, void *arg)
{
    struct cmd *m = calloc(1, sizeof *m);
    if (!m) {
        protobuf_c_message_free_unpacked(req, NULL);
        fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    m->op = (int)op;
    m->req = req;
    m->deadline = deadline_ms;
    m->done = done;
    m->arg = arg;
    if (enqueue_cmd(c, m) != 0) {
        free_cmd(m);
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
    }
}

static int others_usable(struct core *c)
{
    for (size_t i = 1; i < c->n_nodes; i++)
        if (node_usable(c->nodes[i])) return 1;
    return 0;
}

static void stop_all(struct core *c);

/* SIGTERM: a graceful leave when other nodes can take the children, else stop them. */
static void begin_shutdown(struct core *c)
{
    if (c->shutting_down || c->leaving) return;
    if (c->peer && c->synced && c->quorum && others_usable(c)) {
        c->leaving = 1;
        c->leave_deadline = core_now_ms() + LEAVE_TIMEOUT_MS;
        size_t n = 0;
        for (size_t i = 0; i < c->n_sups; i++) n += c->sups[i].count;
        log_info("core", "leaving the cluster: handing %zu children to the other nodes", n);
        Distsup__V1__Leaving lv = DISTSUP__V1__LEAVING__INIT;
        Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
        m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_LEAVING;
        m.leaving = &lv;
        cluster_broadcast(c, &m);
        for (size_t i = 0; i < c->n_sups; i++)
            for (struct child *ch = c->sups[i].head; ch; ch = ch->next) {
                if (ch->dead) continue;
                if (ch->start_done) {
                    fail(ch->start_done, ch->start_arg, GRPC_STATUS_UNAVAILABLE, "node %s is leaving",
                         c->cfg->node_name);
                    ch->start_done = NULL;
                }
                if (ch->spec->restart == DISTSUP__V1__RESTART_TYPE__TEMPORARY && ch->pid > 0) {
                    ch->removing = 1; /* temporary children do not move: they end here */
                    begin_stop(c, ch, "the node is leaving");
                }
            }
        plan_moves(c);
        arm_tick(c);
        return;
    }
    stop_all(c);
}

/* The leave goes on while children move; then the peers hear Leave and the rest
 * stops as in a plain shutdown. */
static void check_leave(struct core *c, uint64_t now)
{
    int moving = 0;
    for (size_t i = 0; i < c->n_sups; i++) moving |= c->sups[i].moves > 0;
    if (moving && now < c->leave_deadline) return;
    if (!moving && now < c->leave_deadline && others_usable(c)) {
        plan_moves(c);
        for (size_t i = 0; i < c->n_sups; i++) moving |= c->sups[i].moves > 0;
        if (moving) return;
    }
    if (now >= c->leave_deadline) log_warn("core", "leave: gave up handing off after %dms", LEAVE_TIMEOUT_MS);
    size_t left = 0;
    for (size_t i = 0; i < c->n_sups; i++)
        for (struct child *ch = c->sups[i].head; ch; ch = ch->next) left += !ch->dead && !ch->removing;
    log_info("core", "handed off; %zu children could not move and stop here (their specs are kept)", left);
    c->leaving = 0;
    store_flush(c->store);
    peer_leave(c->peer, 1000);
    stop_all(c);
}

static void stop_all(struct core *c)
{
    if (c->shutting_down) return;
    c->shutting_down = 1;
    log_info("core", "stopping %zu running children", c->live);
    for (size_t i = 0; i < c->n_sups; i++) {
        for (struct child *ch = c->sups[i].head; ch; ch = ch->next) {
            if (ch->start_done) {
                fail(ch->start_done, ch->start_arg, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
                ch->start_done = NULL;
            }
            fail_calls(ch, GRPC_STATUS_UNAVAILABLE, "is stopping with the daemon");
            if (ch->pid > 0) begin_stop(c, ch, "the sidecar is shutting down");
            else if (ch->state == DISTSUP__V1__CHILD_STATE__RESTARTING) ch->timer_at = 0;
        }
    }
}

static void drain_queue(struct core *c)
{
    uint64_t v;
    if (read(c->wakefd, &v, sizeof v) < 0 && errno != EAGAIN)
        log_warn("core", "eventfd read: %s", strerror(errno));
    pthread_mutex_lock(&c->qmu);
    struct cmd *m = c->qhead;
    c->qhead = c->qtail = NULL;
    pthread_mutex_unlock(&c->qmu);
    while (m) {
        struct cmd *n = m->next;
        switch (m->op) {
        case CMD_SHUTDOWN: begin_shutdown(c); break;
        case CMD_NODE_UP:
            if (c->closed) break; /* news after the end is of no use */
            {
                Distsup__V1__Join *j = distsup__v1__join__unpack(NULL, m->len, m->data);
                if (j) on_node_up(c, j);
                if (j) distsup__v1__join__free_unpacked(j, NULL);
            }
            break;
        case CMD_NODE_DOWN:
            if (!c->closed) on_node_down(c, m->node, m->clean);
            break;
        case CMD_MESSAGE:
            if (!c->closed) on_cluster_message(c, m->node, m->data, m->len);
            break;
        case CMD_SETTLED:
            c->settled = 1;
            maybe_finish_sync(c);
            break;
        default: run_op(c, m->op, m->req, m->deadline, 0, m->done, m->arg); break;
        }
        free_cmd(m);
        m = n;
    }
}

static void bury(struct core *c)
{
    while (c->graveyard) {
        struct child *ch = c->graveyard;
        c->graveyard = ch->dead_next;
        fail_calls(ch, GRPC_STATUS_UNAVAILABLE, "was removed");
        answer_terminate(ch, 0, 0);
        free_child(ch);
    }
}

static void *reactor(void *arg)
{
    struct core *c = arg;
    char err[512];
    c->started = c->sync_since = core_now_ms();
    if (c->peer) {
        /* Cluster: stored children wait until this node has synced with its peers, so
         * that none the cluster re-homed meanwhile runs twice (maybe_finish_sync). */
        for (size_t i = 0; i < c->n_sups; i++)
            for (struct child *ch = c->sups[i].head; ch; ch = ch->next)
                if (ch->state != DISTSUP__V1__CHILD_STATE__FAILED) ch->state = DISTSUP__V1__CHILD_STATE__SUSPENDED;
        arm_tick(c);
    }
    /* Single node: children stored by an earlier run start again now. */
    for (size_t i = 0; i < c->n_sups && !c->peer; i++) {
        struct child *next;
        for (struct child *ch = c->sups[i].head; ch; ch = next) {
            next = ch->next;
            if (ch->state == DISTSUP__V1__CHILD_STATE__FAILED) continue;
            if (start_incarnation(c, ch, err, sizeof err) != 0) {
                log_error("core", "restoring child %s: %s", ch->name, err);
                on_exit_status(c, ch, 127 << 8);
            } else {
                log_info("core", "restored child %s (pid %d)", ch->name, (int)ch->pid);
            }
        }
    }
    if (!c->peer) c->synced = 1;
    bury(c);
    struct epoll_event evs[64];
    for (;;) {
        if (c->shutting_down && c->live == 0) break;
        int n = epoll_wait(c->epfd, evs, 64, -1);
        if (n < 0) {
            if (errno == EINTR) continue;
            log_error("core", "epoll_wait: %s", strerror(errno));
            break;
        }
        for (int i = 0; i < n; i++) {
            struct watch *w = evs[i].data.ptr;
            struct child *ch = w->child;
            if (ch && ch->dead) continue;
            switch (w->kind) {
            case W_WAKE: drain_queue(c); break;
            case W_TICK: on_tick(c); break;
            case W_OUT: handle_stdout(c, ch, READ_BUDGET); break;
            case W_ERR: handle_stderr(c, ch, READ_BUDGET); break;
            case W_IN: flush_in(c, ch); break;
            case W_PID: handle_pidfd(c, ch); break;
            }
        }
        bury(c);
        store_flush(c->store); /* the cache updates of this turn, in one commit */
    }
    pthread_mutex_lock(&c->qmu);
    c->closed = 1;
    pthread_mutex_unlock(&c->qmu);
    drain_queue(c); /* answers whatever raced in: UNAVAILABLE */
    while (c->fwds) {
        struct fwd *f = c->fwds;
        c->fwds = f->next;
        fail(f->done, f->arg, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
        free(f);
    }
    bury(c);
    store_flush(c->store);
    return NULL;
}

/* ---------- life cycle ---------- */

struct load_ctx {
    struct core *c;
    char *err;
    size_t errlen;
};

static int load_one(void *arg, const struct store_child *sc)
{
    struct load_ctx *x = arg;
    struct core *c = x->c;
    struct sup *s = find_sup(c, sc->supervisor);
    if (!s) {
        log_warn("core", "stored child %s belongs to supervisor %s, which is not configured; left alone",
                 sc->name, sc->supervisor);
        return 0;
    }
    Distsup__V1__ChildSpec *spec = distsup__v1__child_spec__unpack(NULL, sc->spec_len, sc->spec);
    if (!spec) {
        log_error("core", "stored spec of child %s is unreadable; skipped", sc->name);
        return 0;
    }
    if (spec->restart == DISTSUP__V1__RESTART_TYPE__TEMPORARY) {
        /* Its process died with the previous daemon; temporary children never restart. */
        log_info("core", "temporary child %s did not survive the restart; dropped", sc->name);
        distsup__v1__child_spec__free_unpacked(spec, NULL);
        store_delete_child(c->store, sc->supervisor, sc->name);
        return 0;
    }
    struct child *ch = new_child(s, spec);
    if (!ch) {
        distsup__v1__child_spec__free_unpacked(spec, NULL);
        snprintf(x->err, x->errlen, "out of memory loading children");
        return -1;
    }
    if (find_child(s, ch->name) || sup_insert(s, ch) != 0) {
        free_child(ch);
        return 0;
    }
    ch->restarts = sc->restarts;
    ch->incarnation = sc->incarnation;
    ch->state = sc->state == STORE_FAILED ? DISTSUP__V1__CHILD_STATE__FAILED : DISTSUP__V1__CHILD_STATE__STARTING;
    return 0;
}

/* Other nodes' children as last known: shown until their nodes say otherwise. */
static int load_cached(void *arg, const char *supn, const char *name, const char *node, const uint8_t *info,
                       size_t len)
{
    struct core *c = arg;
    struct sup *s = find_sup(c, supn);
    Distsup__V1__ChildInfo *ci = s ? distsup__v1__child_info__unpack(NULL, len, info) : NULL;
    if (!ci || strcmp(ci->name, name) || strcmp(ci->node, node) || !strcmp(node, c->cfg->node_name) ||
        find_child(s, name)) {
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
    c->epfd = c->wakefd = c->tickfd = -1;
    c->boot_ms = (uint64_t)wall_ms();
    if (pthread_mutex_init(&c->qmu, NULL) != 0) {
        free(c);
        snprintf(err, errlen, "pthread_mutex_init failed");
        return NULL;
    }
    if (!realpath(cfg->data_dir, c->data_dir)) {
        snprintf(err, errlen, "data dir %s: %s", cfg->data_dir, strerror(errno));
        goto fail;
    }
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
        if (!(s->table = calloc(64, sizeof *s->table)) || !(s->remote = registry_new()) ||
            parse_eligible(s) != 0) {
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
    c->epfd = epoll_create1(EPOLL_CLOEXEC);
    c->wakefd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    c->tickfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    if (c->epfd < 0 || c->wakefd < 0 || c->tickfd < 0) {
        snprintf(err, errlen, "epoll/eventfd/timerfd: %s", strerror(errno));
        goto fail;
    }
    c->w_wake = (struct watch){W_WAKE, NULL};
    c->w_tick = (struct watch){W_TICK, NULL};
    if (watch_fd(c, c->wakefd, EPOLLIN, &c->w_wake) || watch_fd(c, c->tickfd, EPOLLIN, &c->w_tick)) {
        snprintf(err, errlen, "epoll_ctl: %s", strerror(errno));
        goto fail;
    }
    struct load_ctx x = {c, err, errlen};
    if (store_load_children(st, load_one, &x) != 0) {
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
    pthread_mutex_lock(&c->qmu);
    if (m) {
        m->op = CMD_SHUTDOWN;
        if (c->qtail) c->qtail->next = m;
        else c->qhead = m;
        c->qtail = m;
    }
    pthread_mutex_unlock(&c->qmu);
    uint64_t one = 1;
    if (write(c->wakefd, &one, sizeof one) < 0) log_error("core", "eventfd write: %s", strerror(errno));
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
            close_fd(c, &ch->pidfd);
            close_fd(c, &ch->in_fd);
            close_fd(c, &ch->out_fd);
            close_fd(c, &ch->err_fd);
            free_child(ch);
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
    for (size_t i = 0; i < c->n_nodes; i++) free_node(c->nodes[i]);
    free(c->nodes);
    if (c->epfd >= 0) close(c->epfd);
    if (c->wakefd >= 0) close(c->wakefd);
    if (c->tickfd >= 0) close(c->tickfd);
    event_bus_free(c->bus);
    pthread_mutex_destroy(&c->qmu);
    free(c);
}

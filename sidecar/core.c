#include "sidecar/core.h"

#include <errno.h>
#include <fcntl.h>
#include <grpc/status.h>
#include <limits.h>
#include <pthread.h>
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

#include "distsup/v1/child.pb-c.h"
#include "sidecar/frame.h"
#include "sidecar/log.h"
#include "sidecar/spec.h"

extern char **environ;

#define TICK_MS 10
#define READ_BUDGET (64 * 1024)     /* bytes read from one pipe per wake-up */
#define LOG_LINE_MAX 2048           /* longer child log lines are split */
#define LOG_LINES_PER_SEC 200       /* per child; the rest are counted and dropped */
#define DEFAULT_CALL_TIMEOUT_MS 5000

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
    int start_timed_out;          /* killed for want of a Ready frame */
    uint8_t *state_blob;          /* last State frame (handoff) */
    size_t state_len;
    uint64_t log_window;          /* rate limit of log lines */
    unsigned log_lines, log_dropped;
};

struct sup {
    const struct sup_config *cfg;
    struct child **table;
    size_t table_size, count;
    struct child *head, *tail;
};

struct cmd {
    struct cmd *next;
    int op;                       /* enum core_op, or CMD_SHUTDOWN */
    ProtobufCMessage *req;
    uint64_t deadline;
    core_done_fn done;
    void *arg;
};
#define CMD_SHUTDOWN (-1)

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
};

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

/* Starts the child's process.  0, or -1 with the reason in err. */
static int spawn(struct core *c, struct child *ch, char *err, size_t errlen)
{
    const Distsup__V1__ChildSpec *s = ch->spec;
    char *exe = NULL;
    char **envp = NULL;
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1}, pexec[2] = {-1, -1};
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
    if (!exe || !envp || !argv) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < s->n_argv; i++) argv[i] = s->argv[i];
    if (pipe2(pin, O_CLOEXEC) || pipe2(pout, O_CLOEXEC) || pipe2(perr, O_CLOEXEC) ||
        pipe2(pexec, O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto out_argv;
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        goto out_argv;
    }
    if (pid == 0) {
        /* In the child: only async-signal-safe calls from here to execve. */
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGPIPE, SIG_DFL);
        setpgid(0, 0);
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        if (dup2(pin[0], 0) < 0 || dup2(pout[1], 1) < 0 || dup2(perr[1], 2) < 0) goto child_fail;
        if (chdir(cwd) != 0) goto child_fail;
        execve(exe, argv, envp);
    child_fail:;
        int e = errno;
        ssize_t w = write(pexec[1], &e, sizeof e);
        (void)w;
        _exit(127);
    }
    close(pin[0]); pin[0] = -1;
    close(pout[1]); pout[1] = -1;
    close(perr[1]); perr[1] = -1;
    close(pexec[1]); pexec[1] = -1;
    int child_errno = 0;
    ssize_t n;
    do n = read(pexec[0], &child_errno, sizeof child_errno);
    while (n < 0 && errno == EINTR);
    if (n == (ssize_t)sizeof child_errno) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        snprintf(err, errlen, "cannot start '%s' in '%s': %s", exe, cwd, strerror(child_errno));
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
out:
    for (int i = 0; i < 2; i++) {
        if (pin[i] >= 0) close(pin[i]);
        if (pout[i] >= 0) close(pout[i]);
        if (perr[i] >= 0) close(perr[i]);
        if (pexec[i] >= 0) close(pexec[i]);
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

/* Removes the child from its supervisor and the store; freed at the end of the turn. */
static void remove_child(struct core *c, struct child *ch)
{
    if (ch->dead) return;
    ch->dead = 1;
    store_delete_child(c->store, ch->sup->cfg->name, ch->name);
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
        /* Give the child a moment to hand off its state and leave by itself. */
        uint64_t wait = grace / 2 < 500 ? grace / 2 : 500;
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
        remove_child(c, ch);
        return;
    }
    if (ch->removing || c->shutting_down) {
        log_info("core", "child %s stopped (%s)", ch->name, reason);
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, code, sig, reason);
        answer_terminate(ch, code, sig);
        if (ch->removing) remove_child(c, ch);
        else ch->pid = 0;
        return;
    }
    int restart = ch->spec->restart == DISTSUP__V1__RESTART_TYPE__PERMANENT ||
                  (ch->spec->restart == DISTSUP__V1__RESTART_TYPE__TRANSIENT && !normal);
    if (!restart) {
        log_info("core", "child %s %s; its restart type says it stays down", ch->name, reason);
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, code, sig, reason);
        remove_child(c, ch);
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

static struct child *need_child(struct sup *s, const char *name, core_done_fn done, void *arg)
{
    if (!name[0]) {
        fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "name is empty: say which child");
        return NULL;
    }
    struct child *ch = find_child(s, name);
    if (!ch) fail(done, arg, GRPC_STATUS_NOT_FOUND, "no child named '%s' in supervisor '%s'", name,
                  s->cfg->name);
    return ch;
}

/* 0 if node names this node or nothing; else fails the request. */
static int check_node(struct core *c, const char *node, core_done_fn done, void *arg)
{
    if (!node[0] || !strcmp(node, c->cfg->node_name)) return 0;
    fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node '%s' is not in the cluster (known nodes: %s)",
         node, c->cfg->node_name);
    return -1;
}

static void op_start(struct core *c, Distsup__V1__StartChildRequest *req, core_done_fn done, void *arg)
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
        fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "node '%s' and spec.node '%s' disagree",
             req->node, spec->node);
        return;
    }
    if (check_node(c, req->node[0] ? req->node : spec->node, done, arg)) return;
    if (!spec->name[0]) {
        char gen[96];
        do snprintf(gen, sizeof gen, "child-%llx-%llu", (unsigned long long)c->boot_ms,
                    (unsigned long long)++c->seq);
        while (find_child(s, gen));
        char *n = protobuf_c_empty_string == spec->name ? NULL : spec->name;
        free(n);
        if (!(spec->name = strdup(gen))) {
            spec->name = (char *)protobuf_c_empty_string;
            fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
            return;
        }
    }
    struct child *old = find_child(s, spec->name);
    if (old) {
        fail(done, arg, GRPC_STATUS_ALREADY_EXISTS,
             "child '%s' already exists in supervisor '%s' on node %s (id %s, pid %d, state %s)",
             spec->name, s->cfg->name, c->cfg->node_name, old->id, (int)old->pid,
             protobuf_c_enum_descriptor_get_value(&distsup__v1__child_state__descriptor, old->state)->name);
        return;
    }
    if (c->shutting_down) {
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
        return;
    }
    /* The spec now belongs to the child. */
    req->spec = NULL;
    struct child *ch = new_child(s, spec);
    if (!ch || sup_insert(s, ch) != 0) {
        if (ch) free_child(ch);
        else distsup__v1__child_spec__free_unpacked(spec, NULL);
        fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    size_t len = distsup__v1__child_spec__get_packed_size(spec);
    uint8_t *bytes = malloc(len ? len : 1);
    struct store_child sc = {.supervisor = s->cfg->name, .name = ch->name, .spec = bytes,
                             .spec_len = len, .state = STORE_RUNNING, .incarnation = 1};
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
        remove_child(c, ch);
        return;
    }
    log_info("core", "started child %s (pid %d) in supervisor %s", ch->name, (int)ch->pid, s->cfg->name);
    ch->start_done = done;
    ch->start_arg = arg;
    if (ch->state == DISTSUP__V1__CHILD_STATE__RUNNING) answer_start(c, ch);
}

static void op_terminate(struct core *c, Distsup__V1__TerminateChildRequest *req, core_done_fn done,
                         void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    if (!s) return;
    struct child *ch = NULL;
    if (req->name[0]) {
        if (!(ch = need_child(s, req->name, done, arg))) return;
    } else if (req->id[0]) {
        for (ch = s->head; ch && strcmp(ch->id, req->id); ch = ch->next) {}
        if (!ch) {
            fail(done, arg, GRPC_STATUS_NOT_FOUND, "no child with id '%s' in supervisor '%s'", req->id,
                 s->cfg->name);
            return;
        }
    } else {
        fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "give the child's name or id");
        return;
    }
    if (ch->pid <= 0) { /* FAILED or RESTARTING: nothing runs */
        ch->removing = 1;
        emit(c, ch, DISTSUP__V1__EVENT_KIND__PROCESS_STOP, 0, 0, "terminated while not running");
        Distsup__V1__TerminateChildResponse r = DISTSUP__V1__TERMINATE_CHILD_RESPONSE__INIT;
        r.name = ch->name;
        done(arg, GRPC_STATUS_OK, NULL, &r.base);
        remove_child(c, ch);
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
    if (ch->start_done) {
        fail(ch->start_done, ch->start_arg, GRPC_STATUS_ABORTED, "child '%s' was terminated while starting",
             ch->name);
        ch->start_done = NULL;
    }
    begin_stop(c, ch, "terminated by request");
}

static void op_children(struct core *c, Distsup__V1__ChildrenRequest *req, core_done_fn done, void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    if (!s || check_node(c, req->node, done, arg)) return;
    Distsup__V1__ChildInfo *infos = calloc(s->count ? s->count : 1, sizeof *infos);
    Distsup__V1__ChildInfo **ptrs = calloc(s->count ? s->count : 1, sizeof *ptrs);
    if (!infos || !ptrs) {
        free(infos);
        free(ptrs);
        fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    size_t n = 0;
    for (struct child *ch = s->head; ch; ch = ch->next) {
        fill_info(c, ch, &infos[n]);
        ptrs[n] = &infos[n];
        n++;
    }
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
    for (struct child *ch = s->head; ch; ch = ch->next) {
        r.specs++;
        r.workers++;
        if (ch->pid > 0) r.active++;
        if (ch->state == DISTSUP__V1__CHILD_STATE__FAILED) r.failed++;
    }
    done(arg, GRPC_STATUS_OK, NULL, &r.base);
}

static void op_whereis(struct core *c, Distsup__V1__WhereIsRequest *req, core_done_fn done, void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    struct child *ch = s ? need_child(s, req->name, done, arg) : NULL;
    if (!ch) return;
    Distsup__V1__ChildInfo info;
    fill_info(c, ch, &info);
    Distsup__V1__WhereIsResponse r = DISTSUP__V1__WHERE_IS_RESPONSE__INIT;
    r.child = &info;
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
    struct child *ch = s->head;
    while (ch && strcmp(ch->id, req->id)) ch = ch->next;
    if (!ch) {
        fail(done, arg, GRPC_STATUS_NOT_FOUND, "no child with id '%s' in supervisor '%s'", req->id,
             s->cfg->name);
        return;
    }
    Distsup__V1__ChildInfo info;
    fill_info(c, ch, &info);
    Distsup__V1__WhoIsResponse r = DISTSUP__V1__WHO_IS_RESPONSE__INIT;
    r.name = ch->name;
    r.child = &info;
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

static void op_call(struct core *c, Distsup__V1__CallRequest *req, uint64_t deadline, core_done_fn done,
                    void *arg)
{
    struct sup *s = need_sup(c, req->supervisor, done, arg);
    struct child *ch = s ? need_child(s, req->name, done, arg) : NULL;
    if (!ch || can_message(c, ch, req->payload.len, 1, done, arg)) return;
    struct pending_call *p = calloc(1, sizeof *p);
    if (!p) {
        fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    uint64_t now = core_now_ms();
    uint64_t dl = now + (req->timeout_ms ? req->timeout_ms : DEFAULT_CALL_TIMEOUT_MS);
    if (deadline && deadline < dl) dl = deadline;
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

static void op_cast(struct core *c, const char *supn, const char *name, ProtobufCBinaryData payload,
                    int info, core_done_fn done, void *arg)
{
    struct sup *s = need_sup(c, supn, done, arg);
    struct child *ch = s ? need_child(s, name, done, arg) : NULL;
    if (!ch || can_message(c, ch, payload.len, 0, done, arg)) return;
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
    Distsup__V1__NodeInfo self = DISTSUP__V1__NODE_INFO__INIT;
    self.name = (char *)c->cfg->node_name;
    self.address = (char *)c->cfg->listen;
    self.up = 1;
    self.self = 1;
    self.children = (uint32_t)s->count;
    Distsup__V1__NodeInfo *list[1] = {&self};
    Distsup__V1__NodesResponse r = DISTSUP__V1__NODES_RESPONSE__INIT;
    r.n_nodes = 1;
    r.nodes = list;
    done(arg, GRPC_STATUS_OK, NULL, &r.base);
}

/* Which node a key belongs to.  One node for now: this one. */
static const char *node_for(struct core *c, struct sup *s, const char *key)
{
    (void)s;
    (void)key;
    return c->cfg->node_name;
}

static void op_node_for(struct core *c, const char *supn, const char *key, int mine, core_done_fn done,
                        void *arg)
{
    struct sup *s = need_sup(c, supn, done, arg);
    if (!s) return;
    if (!key[0]) {
        fail(done, arg, GRPC_STATUS_INVALID_ARGUMENT, "key is empty");
        return;
    }
    const char *node = node_for(c, s, key);
    if (!node) {
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "no eligible node for key '%s'", key);
        return;
    }
    if (mine) {
        Distsup__V1__MineResponse r = DISTSUP__V1__MINE_RESPONSE__INIT;
        r.mine = !strcmp(node, c->cfg->node_name);
        r.node = (char *)node;
        done(arg, GRPC_STATUS_OK, NULL, &r.base);
    } else {
        Distsup__V1__NodeForResponse r = DISTSUP__V1__NODE_FOR_RESPONSE__INIT;
        r.node = (char *)node;
        done(arg, GRPC_STATUS_OK, NULL, &r.base);
    }
}

static void dispatch(struct core *c, struct cmd *m)
{
    void *r = m->req;
    if (c->shutting_down) {
        fail(m->done, m->arg, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
        return;
    }
    switch ((enum core_op)m->op) {
    case CORE_START_CHILD: op_start(c, r, m->done, m->arg); break;
    case CORE_TERMINATE_CHILD: op_terminate(c, r, m->done, m->arg); break;
    case CORE_CHILDREN: op_children(c, r, m->done, m->arg); break;
    case CORE_COUNT_CHILDREN: op_count(c, r, m->done, m->arg); break;
    case CORE_WHEREIS: op_whereis(c, r, m->done, m->arg); break;
    case CORE_WHOIS: op_whois(c, r, m->done, m->arg); break;
    case CORE_CALL: op_call(c, r, m->deadline, m->done, m->arg); break;
    case CORE_CAST: {
        Distsup__V1__CastRequest *q = r;
        op_cast(c, q->supervisor, q->name, q->payload, 0, m->done, m->arg);
        break;
    }
    case CORE_SEND: {
        Distsup__V1__SendRequest *q = r;
        op_cast(c, q->supervisor, q->name, q->payload, 1, m->done, m->arg);
        break;
    }
    case CORE_NODES: op_nodes(c, r, m->done, m->arg); break;
    case CORE_NODE_FOR: {
        Distsup__V1__NodeForRequest *q = r;
        op_node_for(c, q->supervisor, q->key, 0, m->done, m->arg);
        break;
    }
    case CORE_MINE: {
        Distsup__V1__MineRequest *q = r;
        op_node_for(c, q->supervisor, q->key, 1, m->done, m->arg);
        break;
    }
    default:
        fail(m->done, m->arg, GRPC_STATUS_UNIMPLEMENTED, "unknown operation");
        break;
    }
}

/* ---------- queue ---------- */

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
    pthread_mutex_lock(&c->qmu);
    if (c->closed) {
        pthread_mutex_unlock(&c->qmu);
        protobuf_c_message_free_unpacked(req, NULL);
        free(m);
        fail(done, arg, GRPC_STATUS_UNAVAILABLE, "the daemon is shutting down");
        return;
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
}

static void begin_shutdown(struct core *c)
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
        if (m->op == CMD_SHUTDOWN) begin_shutdown(c);
        else dispatch(c, m);
        if (m->req) protobuf_c_message_free_unpacked(m->req, NULL);
        free(m);
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
    /* Children stored by an earlier run start again. */
    for (size_t i = 0; i < c->n_sups; i++) {
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
    }
    pthread_mutex_lock(&c->qmu);
    c->closed = 1;
    pthread_mutex_unlock(&c->qmu);
    drain_queue(c); /* answers whatever raced in: UNAVAILABLE */
    bury(c);
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
    for (size_t i = 0; i < cfg->n_sups; i++) {
        c->sups[i].cfg = &cfg->sups[i];
        c->sups[i].table_size = 64;
        if (!(c->sups[i].table = calloc(64, sizeof *c->sups[i].table))) {
            snprintf(err, errlen, "out of memory");
            goto fail;
        }
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
    }
    free(c->sups);
    if (c->epfd >= 0) close(c->epfd);
    if (c->wakefd >= 0) close(c->wakefd);
    if (c->tickfd >= 0) close(c->tickfd);
    event_bus_free(c->bus);
    pthread_mutex_destroy(&c->qmu);
    free(c);
}

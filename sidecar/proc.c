#include "sidecar/proc.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sidecar/log.h"

extern char **environ;

#define container_of(p, type, member) ((type *)((char *)(p)-offsetof(type, member)))

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---------- stdin ---------- */

static void set_in_armed(struct proc *p, int on)
{
    if (p->in_fd < 0 || p->in_armed == on) return;
    if (loop_mod(p->loop, p->in_fd, on ? EPOLLOUT : 0, &p->w_in) == 0) p->in_armed = on;
}

/* Writes what it can of the stdin buffer. */
static void flush_in(struct proc *p)
{
    while (p->in_fd >= 0 && dsbuf_unread(&p->outb) > 0) {
        ssize_t n = write(p->in_fd, p->outb.data + p->outb.off, dsbuf_unread(&p->outb));
        if (n > 0) {
            dsbuf_consume(&p->outb, (size_t)n);
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_in_armed(p, 1);
            return;
        }
        /* EPIPE: the child closed its stdin; what it did not read is lost. */
        log_warn("proc", "child %s closed its stdin (%s); %zu bytes undelivered", p->name,
                 n < 0 ? strerror(errno) : "EOF", dsbuf_unread(&p->outb));
        dsbuf_consume(&p->outb, dsbuf_unread(&p->outb));
        loop_close_fd(p->loop, &p->in_fd);
        p->in_armed = 0;
        return;
    }
    set_in_armed(p, 0);
}

int proc_send(struct proc *p, const Distsup__V1__ChildFrame *f)
{
    if (p->in_fd < 0) return -1;
    if (frame_append(&p->outb, f, FRAME_DEFAULT_MAX) != 0) return -1;
    flush_in(p);
    return 0;
}

size_t proc_unsent(const struct proc *p) { return dsbuf_unread(&p->outb); }
int proc_stdin_open(const struct proc *p) { return p->in_fd >= 0; }

/* ---------- stdout and stderr ---------- */

static void log_line(struct proc *p, const char *stream, const char *s, size_t n)
{
    uint64_t now = mono_ms();
    if (now - p->log_window >= 1000) {
        if (p->log_dropped)
            log_child(LOG_WARN, "child", p->sup, p->name, "%s: %u log lines dropped (more than %d a second)", p->name,
                      p->log_dropped, PROC_LOG_LINES_PER_SEC);
        p->log_window = now;
        p->log_lines = p->log_dropped = 0;
    }
    if (++p->log_lines > PROC_LOG_LINES_PER_SEC) {
        p->log_dropped++;
        return;
    }
    /* A child must not forge or garble the daemon's log: control characters (ESC
     * sequences, CR, NUL, ...) and backslashes are written as \xNN. */
    char esc[PROC_LOG_LINE_MAX * 4 + 1];
    size_t o = 0;
    for (size_t i = 0; i < n && o + 4 < sizeof esc; i++) {
        unsigned char ch = (unsigned char)s[i];
        if ((ch < 0x20 && ch != '\t') || ch == 0x7f || ch == '\\') {
            static const char hex[] = "0123456789abcdef";
            esc[o++] = '\\';
            esc[o++] = 'x';
            esc[o++] = hex[ch >> 4];
            esc[o++] = hex[ch & 15];
        } else {
            esc[o++] = (char)ch;
        }
    }
    log_child(LOG_INFO, "child", p->sup, p->name, "%s%s: %.*s", p->name, stream, (int)o, esc);
}

/* Splits buffered bytes into log lines; at EOF the remainder is a line too. */
static void drain_lines(struct proc *p, struct dsbuf *b, const char *stream, int eof)
{
    for (;;) {
        const char *s = (const char *)b->data + b->off;
        size_t n = dsbuf_unread(b);
        if (n == 0) return;
        const char *nl = memchr(s, '\n', n < PROC_LOG_LINE_MAX ? n : PROC_LOG_LINE_MAX);
        if (nl) {
            log_line(p, stream, s, (size_t)(nl - s));
            dsbuf_consume(b, (size_t)(nl - s) + 1);
        } else if (n >= PROC_LOG_LINE_MAX || eof) {
            size_t take = n < PROC_LOG_LINE_MAX ? n : PROC_LOG_LINE_MAX;
            log_line(p, stream, s, take);
            dsbuf_consume(b, take);
        } else {
            return;
        }
    }
}

/* ---------- output rate ---------- */

static size_t window_share(const struct proc *p)
{
    size_t share = p->out_rate / (1000 / PROC_RATE_WINDOW_MS);
    return share < 4096 ? 4096 : share;
}

void proc_set_output_rate(struct proc *p, size_t rate) { p->out_rate = rate; }

/* What may be read now: the rest of the window's share (a new window when it is over). */
static size_t rate_budget(struct proc *p, size_t budget)
{
    if (!p->out_rate || budget == SIZE_MAX) return budget;
    uint64_t now = mono_ms();
    if (now - p->out_window >= PROC_RATE_WINDOW_MS) {
        p->out_window = now;
        p->out_used = 0;
    }
    size_t left = window_share(p) > p->out_used ? window_share(p) - p->out_used : 0;
    return left < budget ? left : budget;
}

static void set_read_armed(struct proc *p, int on)
{
    if (p->out_fd >= 0 && loop_mod(p->loop, p->out_fd, on ? EPOLLIN : 0, &p->w_out) != 0)
        log_error("proc", "epoll_ctl for child %s: %s", p->name, strerror(errno));
    if (p->err_fd >= 0 && loop_mod(p->loop, p->err_fd, on ? EPOLLIN : 0, &p->w_err) != 0)
        log_error("proc", "epoll_ctl for child %s: %s", p->name, strerror(errno));
}

/* Counts what was read; past the window's share, its pipes wait for the tick. */
static void rate_used(struct proc *p, size_t got)
{
    if (!p->out_rate) return;
    p->out_used += got;
    if (p->out_paused || p->out_used < window_share(p) || (p->out_fd < 0 && p->err_fd < 0)) return;
    p->out_paused = 1;
    set_read_armed(p, 0);
    loop_arm_tick(p->loop);
    if (p->hooks->held) p->hooks->held(p->arg, p);
    if (!p->out_warned) {
        p->out_warned = 1;
        log_warn("proc", "child %s logs more than %zu bytes a second (max_output_rate): reading it is slowed", p->name,
                 p->out_rate);
    }
}

int proc_throttle_tick(struct proc *p, uint64_t now_ms)
{
    if (!p->out_paused) return 0;
    if (now_ms - p->out_window < PROC_RATE_WINDOW_MS) return 1;
    p->out_paused = 0;
    p->out_window = now_ms;
    p->out_used = 0;
    set_read_armed(p, 1);
    return 0;
}

/* Reads from stdout or stderr, up to the budget.  Returns 1 at EOF.  Log output
 * (stderr, and stdout without frames) counts against the output rate. */
static int read_pipe(struct proc *p, int fd, struct dsbuf *b, size_t budget)
{
    size_t got = 0;
    int metered = b == &p->errb || !p->frames;
    if (metered) budget = rate_budget(p, budget);
    while (got < budget) {
        if (dsbuf_reserve(b, 16384) != 0) return 0;
        ssize_t n = read(fd, b->data + b->len, b->cap - b->len);
        if (n > 0) {
            b->len += (size_t)n;
            got += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR) continue;
        int eof = n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK);
        if (n < 0 && eof) log_warn("proc", "child %s: read: %s", p->name, strerror(errno));
        if (metered) rate_used(p, got);
        return eof;
    }
    if (metered) rate_used(p, got);
    return 0;
}

static void read_stdout(struct proc *p, size_t budget)
{
    if (p->out_fd < 0) return;
    int eof = read_pipe(p, p->out_fd, &p->inb, budget);
    if (!p->frames) {
        drain_lines(p, &p->inb, " (stdout)", eof);
    } else {
        while (p->out_fd >= 0) {
            const uint8_t *body;
            size_t blen, used;
            enum frame_result r =
                frame_split(p->inb.data + p->inb.off, dsbuf_unread(&p->inb), FRAME_DEFAULT_MAX, &body, &blen, &used);
            if (r == FRAME_NEED_MORE) break;
            if (r == FRAME_TOO_BIG) {
                proc_kill(p,
                          "protocol error: a frame on stdout announces more than the "
                          "frame limit (is it writing text to stdout?)");
                return;
            }
            Distsup__V1__ChildFrame *f = frame_decode(body, blen);
            if (!f) {
                proc_kill(p, "protocol error: undecodable frame on stdout");
                return;
            }
            dsbuf_consume(&p->inb, used);
            p->hooks->frame(p->arg, p, f);
            frame_decode_free(f);
        }
    }
    if (eof && p->out_fd >= 0) {
        if (p->frames && dsbuf_unread(&p->inb))
            log_warn("proc", "child %s: %zu bytes of a partial frame at the end of stdout", p->name,
                     dsbuf_unread(&p->inb));
        loop_close_fd(p->loop, &p->out_fd);
    }
}

static void read_stderr(struct proc *p, size_t budget)
{
    if (p->err_fd < 0) return;
    int eof = read_pipe(p, p->err_fd, &p->errb, budget);
    drain_lines(p, &p->errb, "", eof);
    if (eof) loop_close_fd(p->loop, &p->err_fd);
}

/* ---------- reaping ---------- */

static void reap(struct proc *p)
{
    if (p->pidfd < 0) return;
    int status;
    pid_t r;
    /* While it is a zombie its pid (the group's id) cannot be reused: kill what is
     * left of its group then, before reaping it (see proc.h). */
    siginfo_t si = {0};
    int wr;
    do wr = waitid(P_PID, (id_t)p->pid, &si, WEXITED | WNOHANG | WNOWAIT);
    while (wr < 0 && errno == EINTR);
    if (wr == 0 && si.si_pid == 0) return; /* not yet */
    if (wr == 0 && kill(-p->pid, SIGKILL) != 0 && errno != ESRCH)
        log_warn("proc", "kill(-%d) for what child %s left: %s", (int)p->pid, p->name, strerror(errno));
    do r = waitpid(p->pid, &status, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r == 0) return; /* not yet */
    if (r < 0) {
        log_error("proc", "waitpid(%d) for child %s: %s", (int)p->pid, p->name, strerror(errno));
        status = 0xff00; /* treat as exit code 255 */
    }
    /* What it wrote before dying still counts: replies, State, last log lines. */
    read_stdout(p, SIZE_MAX);
    read_stderr(p, SIZE_MAX);
    drain_lines(p, &p->errb, "", 1);
    proc_close(p);
    p->hooks->exited(p->arg, p, status);
}

static void on_out(struct loop_watch *w, uint32_t ev)
{
    (void)ev;
    read_stdout(container_of(w, struct proc, w_out), PROC_READ_BUDGET);
}
static void on_err(struct loop_watch *w, uint32_t ev)
{
    (void)ev;
    read_stderr(container_of(w, struct proc, w_err), PROC_READ_BUDGET);
}
static void on_in(struct loop_watch *w, uint32_t ev)
{
    (void)ev;
    flush_in(container_of(w, struct proc, w_in));
}
static void on_pid(struct loop_watch *w, uint32_t ev)
{
    (void)ev;
    reap(container_of(w, struct proc, w_pid));
}

void proc_init(struct proc *p, struct loop *l, const char *name, const struct proc_hooks *hooks, void *arg)
{
    memset(p, 0, sizeof *p);
    p->pidfd = p->in_fd = p->out_fd = p->err_fd = -1;
    p->loop = l;
    p->name = name;
    p->hooks = hooks;
    p->arg = arg;
    p->w_out.fn = on_out;
    p->w_err.fn = on_err;
    p->w_in.fn = on_in;
    p->w_pid.fn = on_pid;
}

void proc_close(struct proc *p)
{
    loop_close_fd(p->loop, &p->pidfd);
    loop_close_fd(p->loop, &p->in_fd);
    loop_close_fd(p->loop, &p->out_fd);
    loop_close_fd(p->loop, &p->err_fd);
    p->in_armed = 0;
    p->out_paused = 0;
    p->out_used = 0;
    dsbuf_free(&p->inb);
    dsbuf_free(&p->outb);
    dsbuf_free(&p->errb);
}

/* ---------- signals ---------- */

void proc_signal(struct proc *p, int sig)
{
    if (p->pid <= 0) return;
    /* The child leads its own process group: signal the group so its own children go too. */
    if (kill(-p->pid, sig) != 0 && kill(p->pid, sig) != 0 && errno != ESRCH)
        log_warn("proc", "kill(%d, %d) for child %s: %s", (int)p->pid, sig, p->name, strerror(errno));
}

void proc_kill(struct proc *p, const char *why)
{
    log_error("proc", "child %s (pid %d): %s; killing it", p->name, (int)p->pid, why);
    proc_signal(p, SIGKILL);
    loop_close_fd(p->loop, &p->out_fd); /* read nothing more from it */
}

/* ---------- leftovers ---------- */

/* pgrp (field 5) and starttime (field 22) of /proc/PID/stat; *dead (when not NULL):
 * 1 for a process that has exited and waits to be reaped (state Z or X).  0 or -1. */
static int read_stat_dead(pid_t pid, pid_t *pgrp, unsigned long long *start, int *dead)
{
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0) return -1;
    buf[n] = 0;
    char *s = strrchr(buf, ')'); /* the command name may hold anything but ends here */
    if (!s) return -1;
    /* after ") ": state(3) ppid(4) pgrp(5) ... starttime(22) */
    int field = 2;
    long long pg = -1;
    for (char *save = NULL, *tok = strtok_r(s + 1, " ", &save); tok; tok = strtok_r(NULL, " ", &save)) {
        field++;
        if (field == 3 && dead) *dead = tok[0] == 'Z' || tok[0] == 'X';
        if (field == 5) pg = strtoll(tok, NULL, 10);
        if (field == 22) {
            *pgrp = (pid_t)pg;
            *start = strtoull(tok, NULL, 10);
            return pg > 0 ? 0 : -1;
        }
    }
    return -1;
}

static int read_stat(pid_t pid, pid_t *pgrp, unsigned long long *start)
{
    return read_stat_dead(pid, pgrp, start, NULL);
}

int proc_start_ticks(pid_t pid, unsigned long long *ticks)
{
    pid_t pg;
    return read_stat(pid, &pg, ticks);
}

size_t proc_kill_leftovers(const struct proc_group *g, size_t n)
{
    if (n == 0) return 0;
    DIR *d = opendir("/proc");
    if (!d) {
        log_warn("proc", "cannot read /proc (%s): the previous run's leftover processes stay", strerror(errno));
        return 0;
    }
    size_t killed = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        char *end;
        long pid = strtol(e->d_name, &end, 10);
        if (*end || pid <= 0 || pid == (long)getpid()) continue;
        pid_t pg;
        unsigned long long start;
        int dead = 0;
        /* a zombie (the previous run's child, killed with it, not yet reaped by its new
         * parent) is gone already */
        if (read_stat_dead((pid_t)pid, &pg, &start, &dead) != 0 || dead) continue;
        for (size_t i = 0; i < n; i++) {
            if (g[i].pgid != pg || start < g[i].start_ticks) continue;
            /* A live leader with another start time: the pid was reused, a new group. */
            unsigned long long lead;
            pid_t lpg;
            if (read_stat(g[i].pgid, &lpg, &lead) == 0 && lead != g[i].start_ticks) break;
            if (kill((pid_t)pid, SIGKILL) == 0) {
                log_warn("proc", "killed pid %ld, left in process group %d by the previous run", pid, (int)pg);
                killed++;
            } else if (errno != ESRCH) {
                log_warn("proc", "kill(%ld) of a leftover process: %s", pid, strerror(errno));
            }
            break;
        }
    }
    closedir(d);
    return killed;
}

/* ---------- spawning ---------- */

static char *find_in_path(const char *prog, const char *path_env)
{
    const char *s = path_env && *path_env ? path_env : "/usr/local/bin:/usr/bin:/bin";
    while (*s) {
        const char *e = strchr(s, ':');
        size_t n = e ? (size_t)(e - s) : strlen(s);
        char buf[PATH_MAX];
        if (n > 0 && (size_t)snprintf(buf, sizeof buf, "%.*s/%s", (int)n, s, prog) < sizeof buf) {
            struct stat st;
            if (stat(buf, &st) == 0 && S_ISREG(st.st_mode) && access(buf, X_OK) == 0) return strdup(buf);
        }
        if (!e) break;
        s = e + 1;
    }
    return NULL;
}

static const char *spec_env(const Distsup__V1__ChildSpec *s, const char *key)
{
    for (size_t i = 0; i < s->n_env; i++)
        if (!strcmp(s->env[i]->key, key)) return s->env[i]->value;
    return NULL;
}

static void free_strv(char **v)
{
    if (!v) return;
    for (size_t i = 0; v[i]; i++) free(v[i]);
    free(v);
}

/* 1 when NAME (kl bytes) is in the list "NAME,PREFIX*,..." (commas or spaces). */
static int env_listed(const char *list, const char *name, size_t kl)
{
    if (!list) return 0;
    for (const char *s = list; *s;) {
        while (*s == ',' || *s == ' ') s++;
        size_t n = strcspn(s, ", ");
        if (n > 0 && s[n - 1] == '*') {
            if (kl >= n - 1 && !strncmp(s, name, n - 1)) return 1;
        } else if (n > 0 && n == kl && !strncmp(s, name, kl)) {
            return 1;
        }
        s += n;
    }
    return 0;
}

static char *env_pair(const char *k, const char *v)
{
    size_t len = strlen(k) + strlen(v) + 2;
    char *e = malloc(len);
    if (e) snprintf(e, len, "%s=%s", k, v);
    return e;
}

/* envp = the daemon's allowlisted and inherited variables, overridden by run_as's
 * USER, LOGNAME and HOME, by the spec's env, and by the extra names. */
static char **build_env(const struct proc_exec *x)
{
    const Distsup__V1__ChildSpec *spec = x->spec;
    size_t n = 0;
    while (environ[n]) n++;
    char **envp = calloc(n + 3 + spec->n_env + x->n_extra + 1, sizeof *envp);
    if (!envp) return NULL;
    const char *const user_env[][2] = {{"USER", x->user}, {"LOGNAME", x->user}, {"HOME", x->home}};
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const char *eq = strchr(environ[i], '=');
        if (!eq) continue;
        size_t kl = (size_t)(eq - environ[i]);
        if (!env_listed(PROC_ENV_ALLOWLIST, environ[i], kl) && !env_listed(x->inherit_env, environ[i], kl)) continue;
        int overridden = !strncmp(environ[i], "DISTSUP_", 8);
        for (size_t j = 0; j < 3 && x->set_user && !overridden; j++)
            if (strlen(user_env[j][0]) == kl && !strncmp(user_env[j][0], environ[i], kl)) overridden = 1;
        for (size_t j = 0; j < spec->n_env && !overridden; j++)
            if (strlen(spec->env[j]->key) == kl && !strncmp(spec->env[j]->key, environ[i], kl)) overridden = 1;
        if (!overridden && !(envp[k++] = strdup(environ[i]))) goto oom;
    }
    for (size_t j = 0; j < 3 && x->set_user; j++) {
        if (!user_env[j][1] || spec_env(spec, user_env[j][0])) continue;
        if (!(envp[k++] = env_pair(user_env[j][0], user_env[j][1]))) goto oom;
    }
    for (size_t j = 0; j < spec->n_env; j++)
        if (!(envp[k++] = env_pair(spec->env[j]->key, spec->env[j]->value))) goto oom;
    for (size_t j = 0; j < x->n_extra; j++)
        if (!(envp[k++] = env_pair(x->extra_env[j][0], x->extra_env[j][1]))) goto oom;
    return envp;
oom:
    free_strv(envp);
    return NULL;
}

static int pidfd_open_(pid_t pid) { return (int)syscall(SYS_pidfd_open, pid, 0); }

/* What the child side of proc_spawn needs; err_no is its one answer. */
struct spawn_args {
    const char *exe, *cwd;
    char **argv, **envp;
    int in, out, err;
    int set_user; /* run_as: become uid, gid, groups */
    uid_t uid;
    gid_t gid;
    const gid_t *groups;
    size_t n_groups;
    pid_t parent;
    int err_no; /* why the child could not exec; 0 when it did */
};

/* The child, between clone() and execve().  It runs on a stack of its own but in the
 * daemon's memory (CLONE_VM | CLONE_VFORK, as posix_spawn does; the calling thread
 * waits meanwhile), so it makes only async-signal-safe calls and writes nothing but
 * a->err_no.  Unlike fork() it does not copy the daemon's page tables, which cost
 * every start milliseconds of system time.  The pipes are never fds 0..2: main()
 * keeps those open. */
static int spawn_child(void *arg)
{
    struct spawn_args *a = arg;
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, NULL);
    signal(SIGPIPE, SIG_DFL);
    setpgid(0, 0);
    if (dup2(a->in, 0) < 0 || dup2(a->out, 1) < 0 || dup2(a->err, 2) < 0) {
        a->err_no = errno;
        _exit(127);
    }
    /* run_as: raw system calls, groups first, the uid last.  Not glibc's setuid()
     * and friends: they change the credentials of every thread of the process,
     * and this child shares the daemon's memory and thread list. */
    if (a->set_user &&
        (syscall(SYS_setgroups, a->n_groups, a->groups) != 0 || syscall(SYS_setgid, a->gid) != 0 ||
         syscall(SYS_setuid, a->uid) != 0)) {
        a->err_no = errno;
        _exit(127);
    }
    /* After run_as: a change of credentials clears the parent-death signal.  It dies
     * with the daemon; and if the daemon died already, it does not run at all. */
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != a->parent) _exit(127);
    /* after run_as: the cwd must be the user's to enter */
    if (chdir(a->cwd) != 0) {
        a->err_no = errno;
        _exit(127);
    }
    execve(a->exe, a->argv, a->envp);
    a->err_no = errno ? errno : ENOEXEC;
    _exit(127);
}

#define SPAWN_STACK (64 * 1024)

static void wait_gone(pid_t pid)
{
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
}

int proc_spawn(struct proc *p, const struct proc_exec *x, char *err, size_t errlen)
{
    const Distsup__V1__ChildSpec *s = x->spec;
    char *exe = NULL;
    char **envp = NULL;
    char *stack = NULL;
    int pin[2] = {-1, -1}, pout[2] = {-1, -1}, perr[2] = {-1, -1};
    int rc = -1;
    gid_t groups[64];
    const char *cwd = s->cwd[0] ? s->cwd : x->cwd;

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
    envp = build_env(x);
    char **argv = calloc(s->n_argv + 1, sizeof *argv);
    stack = malloc(SPAWN_STACK);
    if (!exe || !envp || !argv || !stack) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < s->n_argv; i++) argv[i] = s->argv[i];
    if (pipe2(pin, O_CLOEXEC) || pipe2(pout, O_CLOEXEC) || pipe2(perr, O_CLOEXEC)) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        goto out;
    }
    if (x->set_user) {
        if (x->n_groups > 64) {
            snprintf(err, errlen, "run_as: too many groups");
            goto out;
        }
        for (size_t i = 0; i < x->n_groups; i++) groups[i] = (gid_t)x->groups[i];
    }
    struct spawn_args sa = {.exe = exe,
                            .set_user = x->set_user,
                            .uid = (uid_t)x->uid,
                            .gid = (gid_t)x->gid,
                            .groups = groups,
                            .n_groups = x->n_groups,
                            .cwd = cwd,
                            .argv = argv,
                            .envp = envp,
                            .in = pin[0],
                            .out = pout[1],
                            .err = perr[1],
                            .parent = getpid()};
    /* the stack grows down from its (16-byte aligned) end */
    pid_t pid = clone(spawn_child, stack + SPAWN_STACK, CLONE_VM | CLONE_VFORK | SIGCHLD, &sa);
    /* The child's change of credentials (run_as), made while it shared the daemon's
     * memory, cleared the memory's dumpable flag: the daemon's, once the child exec'd. */
    if (x->set_user && prctl(PR_SET_DUMPABLE, 1) != 0) log_warn("proc", "PR_SET_DUMPABLE: %s", strerror(errno));
    if (pid < 0) {
        snprintf(err, errlen, "clone: %s", strerror(errno));
        goto out;
    }
    close(pin[0]);
    pin[0] = -1;
    close(pout[1]);
    pout[1] = -1;
    close(perr[1]);
    perr[1] = -1;
    if (sa.err_no) {
        wait_gone(pid);
        snprintf(err, errlen, "cannot start '%s' in '%s': %s", exe, cwd, strerror(sa.err_no));
        goto out;
    }
    int pidfd = pidfd_open_(pid);
    if (pidfd < 0) {
        snprintf(err, errlen, "pidfd_open: %s", strerror(errno));
        kill(pid, SIGKILL);
        wait_gone(pid);
        goto out;
    }
    p->pid = pid;
    p->pidfd = pidfd;
    if (proc_start_ticks(pid, &p->start_ticks) != 0) p->start_ticks = 0;
    p->in_fd = pin[1];
    pin[1] = -1;
    p->out_fd = pout[0];
    pout[0] = -1;
    p->err_fd = perr[0];
    perr[0] = -1;
    p->frames = s->protocol == DISTSUP__V1__PROTOCOL__FRAMES;
    fcntl(p->in_fd, F_SETFL, O_NONBLOCK);
    fcntl(p->out_fd, F_SETFL, O_NONBLOCK);
    fcntl(p->err_fd, F_SETFL, O_NONBLOCK);
    if (loop_add(p->loop, p->pidfd, EPOLLIN, &p->w_pid) || loop_add(p->loop, p->out_fd, EPOLLIN, &p->w_out) ||
        loop_add(p->loop, p->err_fd, EPOLLIN, &p->w_err) || loop_add(p->loop, p->in_fd, 0, &p->w_in))
        log_error("proc", "epoll_ctl for child %s: %s", p->name, strerror(errno));
    rc = 0;
out:
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

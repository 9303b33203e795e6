/* proc: one OS process of a child.  Spawns it (clone + execve, its own process
 * group, killed with the daemon), owns its pipes and its pidfd, writes frames to its
 * stdin, reads frames from its stdout (protocol FRAMES) or log lines (protocol
 * NONE), logs its stderr lines (rate-limited), signals it and reaps it.  It decides
 * nothing: what a frame or an exit means is the caller's (sidecar/supervise.c).
 * When its process exits, whatever is left in its process group is killed.
 *
 * Threads: the loop's thread only.  Ownership: struct proc is embedded in its owner;
 * proc_spawn opens fds that proc_reap (on exit) or proc_close closes. */
#ifndef DISTSUP_PROC_H
#define DISTSUP_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "distsup/v1/child.pb-c.h"
#include "distsup/v1/supervisor.pb-c.h"
#include "framing/frame.h"
#include "sidecar/loop.h"

#define PROC_READ_BUDGET (64 * 1024) /* bytes read from one pipe per wake-up */
#define PROC_LOG_LINE_MAX 2048       /* longer child log lines are split */
#define PROC_LOG_LINES_PER_SEC 200   /* per process; the rest are counted and dropped */
#define PROC_RATE_WINDOW_MS 100      /* the output rate is metered in windows this long */

struct proc;

struct proc_hooks {
    /* A whole frame from its stdout (valid during the call).  The handler may kill
     * the process; reading stops then. */
    void (*frame)(void *arg, struct proc *p, Distsup__V1__ChildFrame *f);
    /* It was reaped (status as waitpid gives it); every fd is closed by then and
     * what it wrote before dying was read first. */
    void (*exited)(void *arg, struct proc *p, int status);
    /* Its output is held back (max output rate): proc_throttle_tick must run for it
     * from the tick.  May be NULL. */
    void (*held)(void *arg, struct proc *p);
};

struct proc {
    pid_t pid; /* > 0 while it runs */
    int pidfd, in_fd, out_fd, err_fd;
    int in_armed; /* EPOLLOUT wanted on in_fd */
    int frames;   /* protocol FRAMES: stdout carries frames */
    struct loop *loop;
    const char *name; /* for the log; the owner's string */
    const char *sup;  /* its supervisor's name, for the log (NULL: none); the owner's */
    const struct proc_hooks *hooks;
    void *arg;
    struct loop_watch w_out, w_err, w_in, w_pid;
    struct dsbuf inb, outb, errb;   /* from stdout, to stdin, from stderr */
    unsigned long long start_ticks; /* its start time (/proc/PID/stat), for proc_kill_leftovers */
    uint64_t log_window;            /* rate limit of log lines */
    unsigned log_lines, log_dropped;
    /* Output rate (proc_set_output_rate): bytes of log output (stderr, and stdout
     * unless it carries frames) read in the current window; past the window's share
     * its pipes are not read (nor watched) until proc_throttle_tick opens the next
     * window, so the child blocks on a full pipe. */
    size_t out_rate; /* bytes/s; 0: no limit */
    uint64_t out_window;
    size_t out_used;
    int out_paused, out_warned;
};

/* Sets p up, not running (every fd -1). */
void proc_init(struct proc *p, struct loop *l, const char *name, const struct proc_hooks *hooks, void *arg);

/* What proc_spawn runs.  The child's environment is clean (docs/security.md): the
 * daemon's variables named in PROC_ENV_ALLOWLIST or matched by inherit_env, then the
 * spec's env, then extra_env; never the rest of the daemon's environment. */
struct proc_exec {
    const Distsup__V1__ChildSpec *spec; /* argv, env, protocol */
    const char *cwd;                    /* when spec->cwd is empty */
    const char *const (*extra_env)[2];  /* DISTSUP_* names and values */
    size_t n_extra;
    const char *inherit_env; /* NULL or "NAME,PREFIX*,...": more of the daemon's variables */
    /* run_as: non-zero to become uid/gid/groups between clone and exec (the daemon is
     * root); user names it for USER, LOGNAME and HOME (home). */
    int set_user;
    unsigned uid, gid;
    const unsigned *groups;
    size_t n_groups;
    const char *user, *home;
};

/* The daemon's variables every child gets (when set): a prefix when it ends in '*'. */
#define PROC_ENV_ALLOWLIST "PATH,HOME,LANG,LC_*,TZ,TMPDIR,USER,LOGNAME"

/* Starts the process.  0, or -1 with the reason in err (nothing is left open). */
int proc_spawn(struct proc *p, const struct proc_exec *x, char *err, size_t errlen);

/* Queues a frame for its stdin and writes what it can.  0, or -1 (stdin closed,
 * out of memory, or the frame is over the frame limit). */
int proc_send(struct proc *p, const Distsup__V1__ChildFrame *f);
/* Bytes queued for its stdin that it has not read yet. */
size_t proc_unsent(const struct proc *p);
int proc_stdin_open(const struct proc *p);

/* Limits the bytes of log output read from it (stderr, and stdout unless it carries
 * frames) to rate a second (0: no limit).  While it is over, stdout is not read
 * either. */
void proc_set_output_rate(struct proc *p, size_t rate);
/* Called from the loop's tick: resumes reading a throttled process when its next
 * window has come.  1 while it is still held back (the tick must go on). */
int proc_throttle_tick(struct proc *p, uint64_t now_ms);

/* Signals its process group (its own children go too). */
void proc_signal(struct proc *p, int sig);
/* SIGKILL, and nothing more is read from its stdout; logs why at ERROR. */
void proc_kill(struct proc *p, const char *why);

/* Closes whatever is open and frees its buffers; the pid stays for the record. */
void proc_close(struct proc *p);

/* A process's start time in clock ticks since boot (/proc/PID/stat field 22): with
 * the pid it names one process for good.  0, or -1 when there is no such process. */
int proc_start_ticks(pid_t pid, unsigned long long *ticks);

/* A child's process group as an earlier run of the daemon recorded it: the pgid (its
 * leader's pid) and the leader's start time. */
struct proc_group {
    pid_t pgid;
    unsigned long long start_ticks;
};

/* The trees a crashed daemon left behind: SIGKILLs every process still in one of the
 * n groups (PR_SET_PDEATHSIG took only the leaders).  A group whose pgid names a
 * live process with another start time is a new group on a reused pid and is left
 * alone, as is every process that started before the recorded leader.  Returns how
 * many processes it killed.  When a child's own process is reaped, its group is
 * killed too (reap), so a stopped child leaves nothing running. */
size_t proc_kill_leftovers(const struct proc_group *g, size_t n);

#endif

/* Test helper: runs a real distsupd on 127.0.0.1 (port 0) for a C test. */
#ifndef DISTSUP_TEST_DAEMON_H
#define DISTSUP_TEST_DAEMON_H

#include <limits.h>
#include <sys/types.h>

struct test_daemon {
    pid_t pid;
    int port;
    char addr[64];      /* "127.0.0.1:PORT" */
    char dir[PATH_MAX]; /* scratch dir: data dir and port file */
    char log[PATH_MAX]; /* the daemon's stdout+stderr */
};

/* Starts `binary` (made absolute) with --node-name node and waits, at most
 * timeout_ms, for its port file.  The daemon gets PR_SET_PDEATHSIG(SIGKILL), so it
 * dies with the test even if the test crashes.  0, or -1 (message on stderr). */
int test_daemon_start(struct test_daemon *d, const char *binary, const char *node, int timeout_ms);
/* SIGTERM, wait up to 10 s, then SIGKILL; reaps it.  Returns the exit status (as
 * from waitpid) or -1.  Safe to call twice. */
int test_daemon_stop(struct test_daemon *d);
/* Prints the last bytes of the daemon's log on stderr (for failures). */
void test_daemon_dump_log(const struct test_daemon *d);

#endif

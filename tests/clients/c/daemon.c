#include "daemon.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

int test_daemon_start(struct test_daemon *d, const char *binary, const char *node, int timeout_ms)
{
    memset(d, 0, sizeof *d);
    d->pid = -1;
    char bin[PATH_MAX];
    if (realpath(binary, bin) == NULL) {
        fprintf(stderr, "test_daemon: %s: %s\n", binary, strerror(errno));
        return -1;
    }
    const char *tmp = getenv("TEST_TMPDIR");
    if (tmp == NULL || !*tmp) tmp = "/tmp";
    snprintf(d->dir, sizeof d->dir, "%s/distsupd-XXXXXX", tmp);
    if (mkdtemp(d->dir) == NULL) {
        fprintf(stderr, "test_daemon: mkdtemp: %s\n", strerror(errno));
        return -1;
    }
    const char *out = getenv("TEST_UNDECLARED_OUTPUTS_DIR");
    snprintf(d->log, sizeof d->log, "%s/distsupd-%s-%ld.log", out && *out ? out : d->dir, node, (long)getpid());
    char port_file[PATH_MAX + 16], data_dir[PATH_MAX + 16];
    snprintf(port_file, sizeof port_file, "%s/port", d->dir);
    snprintf(data_dir, sizeof data_dir, "%s/data", d->dir);

    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        fprintf(stderr, "test_daemon: fork: %s\n", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent) _exit(127);
        int fd = open(d->log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execl(bin, bin, "--listen", "127.0.0.1:0", "--port-file", port_file, "--data-dir", data_dir, "--node-name",
              node, "--log-level", "debug", (char *)NULL);
        _exit(127);
    }
    d->pid = pid;
    for (int waited = 0; waited < timeout_ms; waited += 20) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            fprintf(stderr, "test_daemon: distsupd exited early (status %d)\n", st);
            d->pid = -1;
            test_daemon_dump_log(d);
            return -1;
        }
        FILE *f = fopen(port_file, "r");
        if (f) {
            int port = 0;
            int n = fscanf(f, "%d", &port);
            fclose(f);
            if (n == 1 && port > 0) {
                d->port = port;
                snprintf(d->addr, sizeof d->addr, "127.0.0.1:%d", port);
                return 0;
            }
        }
        sleep_ms(20);
    }
    fprintf(stderr, "test_daemon: no port file after %d ms\n", timeout_ms);
    test_daemon_stop(d);
    test_daemon_dump_log(d);
    return -1;
}

int test_daemon_stop(struct test_daemon *d)
{
    if (d->pid <= 0) return -1;
    int st = -1;
    kill(d->pid, SIGTERM);
    for (int waited = 0; waited < 10000; waited += 20) {
        if (waitpid(d->pid, &st, WNOHANG) == d->pid) {
            d->pid = -1;
            return st;
        }
        sleep_ms(20);
    }
    fprintf(stderr, "test_daemon: distsupd ignored SIGTERM for 10 s: SIGKILL\n");
    kill(d->pid, SIGKILL);
    waitpid(d->pid, &st, 0);
    d->pid = -1;
    return -1;
}

void test_daemon_dump_log(const struct test_daemon *d)
{
    FILE *f = fopen(d->log, "r");
    if (f == NULL) return;
    if (fseek(f, 0, SEEK_END) == 0) {
        long size = ftell(f);
        if (size > 8000) fseek(f, size - 8000, SEEK_SET);
        else fseek(f, 0, SEEK_SET);
    }
    char buf[1024];
    size_t n;
    fprintf(stderr, "---- %s (tail) ----\n", d->log);
    while ((n = fread(buf, 1, sizeof buf, f)) > 0) fwrite(buf, 1, n, stderr);
    fprintf(stderr, "---- end of log ----\n");
    fclose(f);
}

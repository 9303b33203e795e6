/* counter_host: an app that hosts counter children (clients/c/host.h).
 *
 *   counter_host [--target ADDR] [--kind NAME] [--capacity N] [--name NAME]
 *                [--token-file FILE] [--tls-ca FILE] [--tls-cert FILE --tls-key FILE]
 *                [--verbose]
 *
 * ADDR defaults to $DISTSUP_ADDR, else 127.0.0.1:50051; the kind to "counter".
 * It prints "attached NODE SESSION" when a session begins and "detached CODE
 * MESSAGE" when one ends (with --verbose also "init NAME COUNT" and "terminate NAME
 * REASON" per child), and runs until SIGINT or SIGTERM, then exits 0.
 *
 * A child of the kind is the counter of examples/counter, hosted:
 *   init bytes   the starting count, as decimal text (default 0); "fail" makes init fail
 *   call "get"   replies the count;  call "incr" adds one and replies the new count
 *   cast "incr"  adds one (so does a Send of "incr");  cast "crash": handle_cast fails
 *   call "echo:X"    replies X
 *   call "whoami"    replies "NAME ID"
 *   call "trace"     replies this call's trace context, "TRACEPARENT;TRACESTATE"
 *   call "sleep:MS"  sleeps MS milliseconds (every child of the host waits), "slept"
 *   call "stop"      replies "stopping" and stops normally (stop(normal=true))
 *   call "crash"     replies "crashing" and stops abnormally (stop(normal=false))
 *   call "fail"      handle_call fails: the call gets UNKNOWN, the child runs on
 *   anything else    INVALID_ARGUMENT
 * Its count travels as its State: across a stop, a restart, a move. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clients/c/host.h"

static int verbose;

struct counter {
    long long count;
};

static long long parse_count(const uint8_t *p, size_t n)
{
    char buf[32];
    if (p == NULL || n == 0 || n >= sizeof buf) return 0;
    memcpy(buf, p, n);
    buf[n] = 0;
    return strtoll(buf, NULL, 10);
}

static int is(const uint8_t *p, size_t n, const char *word) { return n == strlen(word) && memcmp(p, word, n) == 0; }

static int init(void *arg, const struct ds_host_init *in, void **user, ds_host_child *self)
{
    (void)arg;
    if (is(in->init, in->init_len, "fail")) return ds_host_child_stop(self, 0, "the init says fail") == 0 ? 1 : -1;
    struct counter *c = malloc(sizeof *c);
    if (c == NULL) return -1;
    c->count = in->state ? parse_count(in->state, in->state_len) : parse_count(in->init, in->init_len);
    *user = c;
    if (verbose) {
        printf("init %s %lld\n", in->name, c->count);
        fflush(stdout);
    }
    return 0;
}

static int reply_text(ds_host_reply *r, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int reply_text(ds_host_reply *r, const char *fmt, ...)
{
    char buf[600];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof buf) return -1;
    return ds_host_reply_set(r, buf, (size_t)n);
}

static int handle_call(void *user, const uint8_t *p, size_t n, ds_host_reply *r, ds_host_child *self)
{
    struct counter *c = user;
    if (is(p, n, "get")) return reply_text(r, "%lld", c->count);
    if (is(p, n, "incr")) return reply_text(r, "%lld", ++c->count);
    if (n >= 5 && !memcmp(p, "echo:", 5)) return ds_host_reply_set(r, p + 5, n - 5);
    if (is(p, n, "whoami")) return reply_text(r, "%s %s", ds_host_child_name(self), ds_host_child_id(self));
    if (is(p, n, "trace"))
        return reply_text(r, "%s;%s", ds_host_child_traceparent(self), ds_host_child_tracestate(self));
    if (n > 6 && !memcmp(p, "sleep:", 6)) {
        long long ms = parse_count(p + 6, n - 6);
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
        return ds_host_reply_set(r, "slept", 5);
    }
    if (is(p, n, "stop")) {
        if (ds_host_child_stop(self, 1, "asked to stop") != 0) return -1;
        return ds_host_reply_set(r, "stopping", 8);
    }
    if (is(p, n, "crash")) {
        if (ds_host_child_stop(self, 0, "asked to crash") != 0) return -1;
        return ds_host_reply_set(r, "crashing", 8);
    }
    if (is(p, n, "fail")) return -1;
    return ds_host_reply_error(r, 3, "unknown request: try get, incr, echo:X, whoami, trace, sleep:MS, stop, crash");
}

static int handle_cast(void *user, const uint8_t *p, size_t n, ds_host_child *self)
{
    (void)self;
    struct counter *c = user;
    if (is(p, n, "incr")) c->count++;
    else if (is(p, n, "crash")) return -1;
    return 0;
}

static void terminate(void *user, const char *reason, ds_host_child *self)
{
    (void)user;
    if (verbose) {
        printf("terminate %s %s\n", ds_host_child_name(self), reason);
        fflush(stdout);
    }
}

static uint8_t *get_state(void *user, size_t *len, ds_host_child *self)
{
    (void)self;
    const struct counter *c = user;
    char *buf = malloc(32);
    if (buf == NULL) return NULL;
    int n = snprintf(buf, 32, "%lld", c->count);
    *len = n > 0 ? (size_t)n : 0;
    return (uint8_t *)buf;
}

static void release(void *arg, void *user)
{
    (void)arg;
    free(user);
}

static void on_attach(void *arg, const char *node, const char *session)
{
    (void)arg;
    printf("attached %s %s\n", node, session);
    fflush(stdout);
}

static void on_detach(void *arg, int code, const char *message)
{
    (void)arg;
    printf("detached %s %s\n", ds_status_name(code), message);
    fflush(stdout);
}

/* Stops the host on SIGINT or SIGTERM; ends on SIGUSR1 (sent by main). */
static void *signals(void *arg)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    for (;;) {
        int sig;
        if (sigwait(&set, &sig) != 0) continue;
        if (sig == SIGUSR1) return NULL;
        ds_host_stop(arg);
    }
}

static int usage(void)
{
    fprintf(stderr,
            "usage: counter_host [--target ADDR] [--kind NAME] [--capacity N] [--name NAME]\n"
            "                    [--token-file FILE] [--tls-ca FILE] [--tls-cert FILE --tls-key FILE]\n"
            "                    [--verbose]\n");
    return 2;
}

int main(int argc, char **argv)
{
    const char *target = getenv("DISTSUP_ADDR"), *kind = "counter";
    unsigned long capacity = 0;
    ds_host_options o = {.on_attach = on_attach, .on_detach = on_detach};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--verbose")) {
            verbose = 1;
            continue;
        }
        if (i + 1 >= argc) return usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--target")) target = v;
        else if (!strcmp(a, "--kind")) kind = v;
        else if (!strcmp(a, "--name")) o.name = v;
        else if (!strcmp(a, "--token-file")) o.connect.token_file = v;
        else if (!strcmp(a, "--tls-ca")) o.connect.tls_ca_file = v;
        else if (!strcmp(a, "--tls-cert")) o.connect.tls_cert_file = v;
        else if (!strcmp(a, "--tls-key")) o.connect.tls_key_file = v;
        else if (!strcmp(a, "--capacity")) {
            char *end;
            errno = 0;
            capacity = strtoul(v, &end, 10);
            if (errno || *end || end == v || capacity > UINT32_MAX) return usage();
        } else return usage();
    }

    /* Block the signals in every thread; the signal thread takes them. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGUSR1);
    int e = pthread_sigmask(SIG_BLOCK, &set, NULL);
    if (e != 0) {
        fprintf(stderr, "counter_host: pthread_sigmask: %s\n", strerror(e));
        return 1;
    }

    ds_host *h;
    ds_error err;
    if (ds_host_new(target, &o, &h, &err) != DS_OK) {
        fprintf(stderr, "counter_host: %s\n", err.message);
        return 1;
    }
    struct ds_host_kind counter = {
        .init = init,
        .handle_call = handle_call,
        .handle_cast = handle_cast,
        .handle_info = handle_cast,
        .terminate = terminate,
        .get_state = get_state,
        .release = release,
    };
    int rc = ds_host_register(h, kind, &counter, (uint32_t)capacity);
    if (rc != DS_OK) {
        fprintf(stderr, "counter_host: cannot register kind \"%s\": %s\n", kind, ds_status_name(rc));
        ds_host_free(h);
        return 1;
    }
    pthread_t sig_thread;
    if ((e = pthread_create(&sig_thread, NULL, signals, h)) != 0) {
        fprintf(stderr, "counter_host: pthread_create: %s\n", strerror(e));
        ds_host_free(h);
        return 1;
    }
    rc = ds_host_run(h, &err);
    if (rc != DS_OK) fprintf(stderr, "counter_host: %s: %s\n", ds_status_name(rc), err.message);
    if ((e = pthread_kill(sig_thread, SIGUSR1)) != 0 || (e = pthread_join(sig_thread, NULL)) != 0)
        fprintf(stderr, "counter_host: ending the signal thread: %s\n", strerror(e));
    ds_host_free(h);
    return rc == DS_OK ? 0 : 1;
}

/* counter: an example distsup worker.
 *
 *   init bytes   the starting count, as decimal text (default 0)
 *   call "get"   replies the count as decimal text
 *   call "incr"  adds one and replies the new count
 *   cast "incr"  adds one (so does a Send of "incr")
 *   call "sleep:MS"  sleeps MS milliseconds, then replies "slept"
 *   call "crash" exits with code 1 (the sidecar restarts it)
 *   call "echo:X" replies X
 *   call "trace" replies this call's W3C trace context, "TRACEPARENT;TRACESTATE"
 *                (";" alone without one); call "lasttrace" replies that of the
 *                last cast or send instead
 * When it is moved, its count travels as handed-off state. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clients/c/worker.h"

struct counter {
    long long count;
    struct ds_trace trace; /* the message's, filled by the worker helper */
    char last_trace[600];  /* the last cast's or send's */
};

static int reply_trace(struct ds_reply *r, const struct ds_trace *t)
{
    char buf[600];
    int n = snprintf(buf, sizeof buf, "%s;%s", t->traceparent, t->tracestate);
    if (n < 0 || (size_t)n >= sizeof buf) return -1;
    return ds_reply_set(r, buf, (size_t)n);
}

static long long parse_count(const uint8_t *p, size_t n)
{
    char buf[32];
    if (n == 0 || n >= sizeof buf) return 0;
    memcpy(buf, p, n);
    buf[n] = 0;
    return strtoll(buf, NULL, 10);
}

static int on_init(void *arg, const struct ds_worker_init *in)
{
    struct counter *c = arg;
    c->count = in->state ? parse_count(in->state, in->state_len) : parse_count(in->init, in->init_len);
    return 0;
}

static int reply_count(struct ds_reply *r, long long v)
{
    char buf[32];
    int n = snprintf(buf, sizeof buf, "%lld", v);
    return ds_reply_set(r, buf, (size_t)n);
}

static int is(const uint8_t *p, size_t n, const char *word) { return n == strlen(word) && memcmp(p, word, n) == 0; }

static int on_call(void *arg, const uint8_t *p, size_t n, struct ds_reply *r)
{
    struct counter *c = arg;
    if (is(p, n, "get")) return reply_count(r, c->count) ? 1 : 0;
    if (is(p, n, "incr")) return reply_count(r, ++c->count) ? 1 : 0;
    if (is(p, n, "crash")) exit(1);
    if (n > 6 && !memcmp(p, "sleep:", 6)) {
        long long ms = parse_count(p + 6, n - 6);
        struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
        while (nanosleep(&ts, &ts) != 0) {}
        return ds_reply_set(r, "slept", 5) ? 1 : 0;
    }
    if (n >= 5 && !memcmp(p, "echo:", 5)) return ds_reply_set(r, p + 5, n - 5) ? 1 : 0;
    if (is(p, n, "trace")) return reply_trace(r, &c->trace) ? 1 : 0;
    if (is(p, n, "lasttrace")) return ds_reply_set(r, c->last_trace, strlen(c->last_trace)) ? 1 : 0;
    return ds_reply_error(r, 3, "unknown request: try get, incr, sleep:MS, echo:X, crash, trace") ? 1 : 0;
}

static void on_cast(void *arg, const uint8_t *p, size_t n)
{
    struct counter *c = arg;
    snprintf(c->last_trace, sizeof c->last_trace, "%s;%s", c->trace.traceparent, c->trace.tracestate);
    if (is(p, n, "incr")) c->count++;
    else fprintf(stderr, "counter: ignoring cast of %zu bytes\n", n);
}

static uint8_t *get_state(void *arg, size_t *len)
{
    struct counter *c = arg;
    char *buf = malloc(32);
    if (!buf) return NULL;
    *len = (size_t)snprintf(buf, 32, "%lld", c->count);
    return (uint8_t *)buf;
}

int main(void)
{
    struct counter c = {.last_trace = ";"};
    struct ds_worker_callbacks cb = {
        .arg = &c,
        .trace = &c.trace,
        .on_init = on_init,
        .on_call = on_call,
        .on_cast = on_cast,
        .on_info = on_cast,
        .get_state = get_state,
    };
    return ds_worker_run(&cb);
}

/* call_bench: unary gRPC figures through the C core, on loopback.
 *
 *   call_bench echo  TARGET [--seconds S] [--conc 16,64] [--channels 1,4]
 *       the baseline: /bench.Echo/Echo on bench/echo_server
 *   call_bench call  TARGET --counter PATH [--workers W] [--node NODE] [--payload BYTES] [--seconds S] [--conc ...]
 *                    [--channels ...]
 *       distsupd Call to W C workers (examples/counter, "echo:bench" -> "bench"),
 *       which it starts first (on NODE when given: a remote child in a cluster) and
 *       terminates at the end
 *   call_bench start TARGET --counter PATH [--pid PID] [--seq N] [--n 1000] [--conc 16]
 *       StartChild and TerminateChild per second, sequential and concurrent, and
 *       (with --pid) distsupd's memory with N children and after they are gone
 *   call_bench rss   --pid PID --label LABEL
 *       a process's VmRSS, RssAnon, RssFile, threads and open fds
 *
 * Every figure is one line "RESULT<TAB>section<TAB>figure<TAB>value<TAB>unit" on
 * stdout (bench/run.sh makes the table); progress and errors go to stderr.
 *
 * Method: a single client thread owns one completion queue and keeps `conc` calls
 * in flight (conc 1 = sequential), spread round-robin over `channels` channels, each
 * with its own TCP connection (a local subchannel pool).  Latency is the time from
 * starting a call's batch to taking its completion, for every successful call;
 * p50/p99 are nearest-rank.  calls/s = calls completed / wall time of the run.  A
 * 0.5 s warm-up precedes every timed run.  Each answer is checked; a failed call is
 * reported and makes the program exit non-zero. */
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/latency.h"
#include "distsup/v1/supervisor.pb-c.h"

#define MAX_LIST 8
#define CALL_TIMEOUT_MS 30000
#define ECHO_METHOD "/bench.Echo/Echo"
#define SUP "/distsup.v1.Supervisor/"

static int failures;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void result(const char *section, const char *figure, double value, const char *unit)
{
    printf("RESULT\t%s\t%s\t%.*f\t%s\n", section, figure, value >= 100 ? 0 : 1, value, unit);
    fflush(stdout);
}

static void die(const char *fmt, const char *arg)
{
    fprintf(stderr, "call_bench: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    exit(1);
}

/* ---------- messages ---------- */

static grpc_byte_buffer *pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static grpc_slice read_all(grpc_byte_buffer *bb)
{
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb)) return grpc_empty_slice();
    grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    return s;
}

/* ---------- one benchmark run ---------- */

typedef grpc_byte_buffer *(*make_fn)(void *arg, size_t i);
/* 0 if the answer to call i is right. */
typedef int (*check_fn)(void *arg, size_t i, const uint8_t *p, size_t n);

struct job {
    grpc_channel **ch;
    size_t n_ch;
    const char *method;
    make_fn make;
    check_fn check;
    void *arg;
    size_t n; /* calls to make; 0: as many as fit in `seconds` */
    double seconds;
    unsigned conc;
};

struct slot {
    grpc_call *call;
    grpc_metadata_array im, tm;
    grpc_byte_buffer *req, *resp;
    grpc_status_code status;
    grpc_slice details;
    uint64_t t0;
    size_t idx;
};

static void start_slot(const struct job *j, grpc_completion_queue *cq, grpc_slice method, struct slot *s, size_t idx)
{
    memset(s, 0, sizeof *s);
    s->idx = idx;
    s->req = j->make(j->arg, idx);
    grpc_metadata_array_init(&s->im);
    grpc_metadata_array_init(&s->tm);
    gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(CALL_TIMEOUT_MS, GPR_TIMESPAN));
    s->call = grpc_channel_create_call(j->ch[idx % j->n_ch], NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL, dl, NULL);
    if (!s->call) die("grpc_channel_create_call failed%s", "");
    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = s->req;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &s->im;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &s->resp;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &s->tm;
    ops[5].data.recv_status_on_client.status = &s->status;
    ops[5].data.recv_status_on_client.status_details = &s->details;
    s->t0 = now_ns();
    grpc_call_error e = grpc_call_start_batch(s->call, ops, 6, s, NULL);
    if (e != GRPC_CALL_OK) die("grpc_call_start_batch failed%s", "");
}

static void finish_slot(const struct job *j, struct slot *s, struct stats *st, uint64_t t)
{
    int ok = 0;
    if (s->status == GRPC_STATUS_OK && s->resp) {
        grpc_slice body = read_all(s->resp);
        ok = j->check(j->arg, s->idx, GRPC_SLICE_START_PTR(body), GRPC_SLICE_LENGTH(body)) == 0;
        grpc_slice_unref(body);
        if (!ok && !st->first_error[0]) snprintf(st->first_error, sizeof st->first_error, "a wrong answer");
    } else if (!st->first_error[0]) {
        char *d = grpc_slice_to_c_string(s->details);
        snprintf(st->first_error, sizeof st->first_error, "status %d: %s", (int)s->status, d ? d : "");
        gpr_free(d);
    }
    if (ok) {
        if (stats_ok(st, t - s->t0) != 0) die("out of memory%s", "");
    } else {
        st->failed++;
    }
    grpc_byte_buffer_destroy(s->req);
    if (s->resp) grpc_byte_buffer_destroy(s->resp);
    grpc_metadata_array_destroy(&s->im);
    grpc_metadata_array_destroy(&s->tm);
    grpc_slice_unref(s->details);
    grpc_call_unref(s->call);
    s->call = NULL;
}

static void run_job(const struct job *j, struct stats *st)
{
    memset(st, 0, sizeof *st);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    struct slot *slots = calloc(j->conc, sizeof *slots);
    if (!slots) die("out of memory%s", "");
    grpc_slice method = grpc_slice_from_static_string(j->method);
    uint64_t start = now_ns();
    uint64_t stop_at = j->n ? UINT64_MAX : start + (uint64_t)(j->seconds * 1e9);
    size_t next = 0, inflight = 0;
    for (unsigned k = 0; k < j->conc && (j->n ? next < j->n : 1); k++) {
        start_slot(j, cq, method, &slots[k], next++);
        inflight++;
    }
    while (inflight > 0) {
        gpr_timespec wait =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(CALL_TIMEOUT_MS + 10000, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(cq, wait, NULL);
        if (ev.type != GRPC_OP_COMPLETE) die("a call never completed (%s)", "completion queue timeout");
        uint64_t t = now_ns();
        struct slot *s = ev.tag;
        finish_slot(j, s, st, t);
        inflight--;
        if (j->n ? next < j->n : t < stop_at) {
            start_slot(j, cq, method, s, next++);
            inflight++;
        }
    }
    st->elapsed_s = (double)(now_ns() - start) / 1e9;
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN) {}
    grpc_completion_queue_destroy(cq);
    free(slots);
    if (st->failed) {
        fprintf(stderr, "call_bench: %s: %zu of %zu calls failed; first: %s\n", j->method, st->failed,
                st->ok + st->failed, st->first_error);
        failures++;
    }
}

static void report(const char *section, const char *label, struct stats *st, int with_latency)
{
    char fig[160];
    stats_sort(st);
    snprintf(fig, sizeof fig, "%s calls/s", label);
    result(section, fig, (double)st->ok / st->elapsed_s, "1/s");
    if (with_latency) {
        snprintf(fig, sizeof fig, "%s p50", label);
        result(section, fig, stats_pct_us(st, 0.50), "us");
        snprintf(fig, sizeof fig, "%s p99", label);
        result(section, fig, stats_pct_us(st, 0.99), "us");
    }
    fprintf(stderr, "call_bench: %s / %s: %zu calls in %.2f s\n", section, label, st->ok, st->elapsed_s);
    stats_free(st);
}

/* ---------- channels ---------- */

static grpc_channel *open_channel(const char *target)
{
    grpc_arg args[2];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL; /* its own connection */
    args[0].value.integer = 1;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[1].value.integer = -1;
    grpc_channel_args ca = {2, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    if (!ch) die("cannot create a channel to %s", target);
    return ch;
}

/* ---------- request makers ---------- */

struct fixed { /* the same request every time; the answer is checked against want */
    grpc_byte_buffer *req;
    const uint8_t *want;
    size_t want_len;
};

static grpc_byte_buffer *make_fixed(void *arg, size_t i)
{
    (void)i;
    return grpc_byte_buffer_copy(((struct fixed *)arg)->req);
}

static int check_echo(void *arg, size_t i, const uint8_t *p, size_t n)
{
    (void)i;
    struct fixed *f = arg;
    return n == f->want_len && !memcmp(p, f->want, n) ? 0 : -1;
}

struct workers {
    grpc_byte_buffer *req[MAX_LIST];
    size_t n;
    size_t reply_len; /* the counter answers "echo:X" with X */
};

static grpc_byte_buffer *make_call(void *arg, size_t i)
{
    struct workers *w = arg;
    return grpc_byte_buffer_copy(w->req[i % w->n]);
}

static int check_call(void *arg, size_t i, const uint8_t *p, size_t n)
{
    (void)i;
    const struct workers *w = arg;
    Distsup__V1__CallResponse *r = distsup__v1__call_response__unpack(NULL, n, p);
    if (!r) return -1;
    int ok = r->payload.len == w->reply_len && !memcmp(r->payload.data, "bench", 5);
    distsup__v1__call_response__free_unpacked(r, NULL);
    return ok ? 0 : -1;
}

struct starts {
    const char *counter;
    const char *prefix;
    const char *node; /* "" = where the strategy says */
};

/* The name of child i of a run: PREFIX + i. */
static void child_name(const struct starts *s, size_t i, char name[64]) { snprintf(name, 64, "%s%zu", s->prefix, i); }

static grpc_byte_buffer *make_start(void *arg, size_t i)
{
    struct starts *s = arg;
    char name[64];
    child_name(s, i, name);
    char *argv[1] = {(char *)s->counter};
    Distsup__V1__ChildSpec spec = DISTSUP__V1__CHILD_SPEC__INIT;
    spec.name = name;
    spec.argv = argv;
    spec.n_argv = 1;
    Distsup__V1__StartChildRequest req = DISTSUP__V1__START_CHILD_REQUEST__INIT;
    req.spec = &spec;
    req.node = (char *)(s->node ? s->node : "");
    return pack(&req.base);
}

static int check_start(void *arg, size_t i, const uint8_t *p, size_t n)
{
    (void)arg;
    (void)i;
    Distsup__V1__StartChildResponse *r = distsup__v1__start_child_response__unpack(NULL, n, p);
    if (!r) return -1;
    int ok = r->child && r->child->state == DISTSUP__V1__CHILD_STATE__RUNNING && r->child->os_pid > 0;
    distsup__v1__start_child_response__free_unpacked(r, NULL);
    return ok ? 0 : -1;
}

static grpc_byte_buffer *make_terminate(void *arg, size_t i)
{
    struct starts *s = arg;
    char name[64];
    child_name(s, i, name);
    Distsup__V1__TerminateChildRequest req = DISTSUP__V1__TERMINATE_CHILD_REQUEST__INIT;
    req.name = name;
    return pack(&req.base);
}

static int check_terminate(void *arg, size_t i, const uint8_t *p, size_t n)
{
    (void)arg;
    (void)i;
    Distsup__V1__TerminateChildResponse *r = distsup__v1__terminate_child_response__unpack(NULL, n, p);
    if (!r) return -1;
    distsup__v1__terminate_child_response__free_unpacked(r, NULL);
    return 0;
}

/* ---------- /proc ---------- */

static long status_kb(long pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "r");
    if (!f) die("cannot read %s", path);
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') v = strtol(line + kl + 1, NULL, 10);
    fclose(f);
    return v;
}

static long count_dir(long pid, const char *sub)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/%s", pid, sub);
    DIR *d = opendir(path);
    if (!d) return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static void rss(long pid, const char *label)
{
    char fig[160];
    static const char *const keys[] = {"VmRSS", "RssAnon", "RssFile"};
    for (size_t k = 0; k < 3; k++) {
        snprintf(fig, sizeof fig, "%s %s", label, keys[k]);
        result("distsupd memory", fig, (double)status_kb(pid, keys[k]) / 1024.0, "MB");
    }
    snprintf(fig, sizeof fig, "%s threads", label);
    result("distsupd memory", fig, (double)count_dir(pid, "task"), "");
    snprintf(fig, sizeof fig, "%s open fds", label);
    result("distsupd memory", fig, (double)count_dir(pid, "fd"), "");
}

/* ---------- command line ---------- */

struct opts {
    const char *target, *counter, *node;
    long pid;
    const char *label;
    double seconds;
    unsigned conc[MAX_LIST], n_conc;
    unsigned channels[MAX_LIST], n_channels;
    unsigned workers, seq, n, start_conc;
    unsigned payload; /* bytes each Call answers ("bench" and padding); at least 5 */
};

static unsigned parse_list(const char *s, unsigned *out)
{
    unsigned n = 0;
    char *end;
    while (*s && n < MAX_LIST) {
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || v == 0 || v > 100000) die("bad number list '%s'", s);
        out[n++] = (unsigned)v;
        s = *end == ',' ? end + 1 : end;
        if (*end && *end != ',') die("bad number list near '%s'", end);
    }
    return n;
}

static unsigned parse_uint(const char *s)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || end == s || v > 1000000) die("'%s' is not a number", s);
    return (unsigned)v;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: call_bench echo  TARGET [--seconds S] [--conc 16,64] [--channels 1,4]\n"
            "       call_bench call  TARGET --counter PATH [--workers W] [--node NODE] [--payload BYTES] [--seconds S] "
            "[--conc ...] "
            "[--channels ...]\n"
            "       call_bench start TARGET --counter PATH [--pid PID] [--seq N] [--n N] [--conc C]\n"
            "       call_bench rss   --pid PID --label LABEL\n");
    exit(2);
}

static void timed_series(const char *section, struct job *j, const struct opts *o)
{
    struct stats st;
    char label[96];
    /* warm-up: connections, grpc's buffers, the worker's page cache */
    j->conc = 4;
    j->seconds = 0.5;
    j->n = 0;
    run_job(j, &st);
    stats_free(&st);
    /* sequential: latency */
    j->conc = 1;
    j->seconds = o->seconds;
    run_job(j, &st);
    report(section, "sequential", &st, 1);
    size_t all_ch = j->n_ch;
    for (unsigned c = 0; c < o->n_conc; c++) {
        for (unsigned k = 0; k < o->n_channels; k++) {
            j->conc = o->conc[c];
            j->n_ch = o->channels[k] < all_ch ? o->channels[k] : all_ch;
            snprintf(label, sizeof label, "%u in flight, %zu channel%s", j->conc, j->n_ch, j->n_ch > 1 ? "s" : "");
            run_job(j, &st);
            report(section, label, &st, 1);
        }
    }
    j->n_ch = all_ch;
}

int main(int argc, char **argv)
{
    if (argc < 2) usage();
    const char *cmd = argv[1];
    struct opts o = {.seconds = 3, .workers = 1, .seq = 200, .n = 1000, .start_conc = 16, .label = "now"};
    o.n_conc = parse_list("16,64", o.conc);
    o.n_channels = parse_list("1", o.channels);
    int i = 2;
    if (strcmp(cmd, "rss") != 0) {
        if (argc < 3) usage();
        o.target = argv[2];
        i = 3;
    }
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--seconds")) o.seconds = parse_uint(v);
        else if (!strcmp(a, "--conc")) {
            o.n_conc = parse_list(v, o.conc);
            o.start_conc = o.conc[0];
        } else if (!strcmp(a, "--channels")) o.n_channels = parse_list(v, o.channels);
        else if (!strcmp(a, "--counter")) o.counter = v;
        else if (!strcmp(a, "--workers")) o.workers = parse_uint(v);
        else if (!strcmp(a, "--node")) o.node = v;
        else if (!strcmp(a, "--payload")) o.payload = parse_uint(v);
        else if (!strcmp(a, "--pid")) o.pid = (long)parse_uint(v);
        else if (!strcmp(a, "--label")) o.label = v;
        else if (!strcmp(a, "--seq")) o.seq = parse_uint(v);
        else if (!strcmp(a, "--n")) o.n = parse_uint(v);
        else usage();
    }
    if (o.workers < 1 || o.workers > MAX_LIST) die("--workers takes 1 to %s", "8");
    if (!strcmp(cmd, "rss")) {
        if (!o.pid) usage();
        rss(o.pid, o.label);
        return 0;
    }
    grpc_init();
    unsigned max_ch = 1;
    for (unsigned k = 0; k < o.n_channels; k++)
        if (o.channels[k] > max_ch) max_ch = o.channels[k];
    grpc_channel *ch[MAX_LIST * 16];
    if (max_ch > sizeof ch / sizeof ch[0]) die("too many channels%s", "");
    for (unsigned k = 0; k < max_ch; k++) ch[k] = open_channel(o.target);
    struct job j = {.ch = ch, .n_ch = max_ch};
    struct stats st;

    if (!strcmp(cmd, "echo")) {
        /* the same bytes distsupd's Call gets, echoed back as they are */
        uint8_t payload[] = "echo:bench";
        Distsup__V1__CallRequest cr = DISTSUP__V1__CALL_REQUEST__INIT;
        cr.name = "bench-w0";
        cr.payload.data = payload;
        cr.payload.len = sizeof payload - 1;
        size_t len = distsup__v1__call_request__get_packed_size(&cr);
        uint8_t *bytes = malloc(len);
        if (!bytes) die("out of memory%s", "");
        distsup__v1__call_request__pack(&cr, bytes);
        struct fixed f = {.req = pack(&cr.base), .want = bytes, .want_len = len};
        j.method = ECHO_METHOD;
        j.make = make_fixed;
        j.check = check_echo;
        j.arg = &f;
        timed_series("bare C-core echo", &j, &o);
        grpc_byte_buffer_destroy(f.req);
        free(bytes);
    } else if (!strcmp(cmd, "call")) {
        if (!o.counter) usage();
        struct starts s = {.counter = o.counter, .prefix = "bench-w", .node = o.node};
        j.method = SUP "StartChild";
        j.make = make_start;
        j.check = check_start;
        j.arg = &s;
        j.n = o.workers;
        j.conc = 1;
        run_job(&j, &st);
        stats_free(&st);
        if (st.failed) die("cannot start the workers (is a bench-w0 left from an earlier run?)%s", "");
        size_t plen = o.payload < 5 ? 5 : o.payload;
        struct workers w = {.n = o.workers, .reply_len = plen};
        uint8_t *payload = malloc(5 + plen);
        if (!payload) die("out of memory%s", "");
        memcpy(payload, "echo:bench", 10);
        memset(payload + 10, 'x', plen - 5);
        for (unsigned k = 0; k < o.workers; k++) {
            char name[32];
            snprintf(name, sizeof name, "bench-w%u", k);
            Distsup__V1__CallRequest cr = DISTSUP__V1__CALL_REQUEST__INIT;
            cr.name = name;
            cr.payload.data = payload;
            cr.payload.len = 5 + plen;
            w.req[k] = pack(&cr.base);
        }
        free(payload);
        char section[128];
        snprintf(section, sizeof section, "distsupd Call, %u C worker%s%s%s%s", o.workers, o.workers > 1 ? "s" : "",
                 o.node ? " on " : "", o.node ? o.node : "", plen > 5 ? ", large payload" : "");
        j.method = SUP "Call";
        j.make = make_call;
        j.check = check_call;
        j.arg = &w;
        timed_series(section, &j, &o);
        for (unsigned k = 0; k < o.workers; k++) grpc_byte_buffer_destroy(w.req[k]);
        j.method = SUP "TerminateChild";
        j.make = make_terminate;
        j.check = check_terminate;
        j.arg = &s;
        j.n = o.workers;
        j.conc = 1;
        run_job(&j, &st);
        stats_free(&st);
    } else if (!strcmp(cmd, "start")) {
        if (!o.counter) usage();
        struct starts s = {.counter = o.counter, .prefix = "bench-seq-"};
        /* sequential: one StartChild at a time (each answers once the child sent Ready) */
        j.method = SUP "StartChild";
        j.make = make_start;
        j.check = check_start;
        j.arg = &s;
        j.n = o.seq;
        j.conc = 1;
        run_job(&j, &st);
        report("StartChild (counter, Ready handshake, spec fsynced)", "sequential", &st, 1);
        j.method = SUP "TerminateChild";
        j.make = make_terminate;
        j.check = check_terminate;
        run_job(&j, &st);
        report("TerminateChild (Terminate frame, child exits, reaped)", "sequential", &st, 1);
        long before_rss = 0, before_anon = 0;
        if (o.pid) {
            rss(o.pid, "before N children:");
            before_rss = status_kb(o.pid, "VmRSS");
            before_anon = status_kb(o.pid, "RssAnon");
        }
        /* concurrent: N children, start_conc in flight */
        char label[64];
        s.prefix = "bench-many-";
        j.method = SUP "StartChild";
        j.make = make_start;
        j.check = check_start;
        j.n = o.n;
        j.conc = o.start_conc;
        run_job(&j, &st);
        snprintf(label, sizeof label, "%u in flight", o.start_conc);
        report("StartChild (counter, Ready handshake, spec fsynced)", label, &st, 1);
        if (o.pid) {
            char l2[64];
            snprintf(l2, sizeof l2, "with %u children:", o.n);
            rss(o.pid, l2);
            double per = 1000.0 / (double)o.n / 1024.0;
            result("distsupd memory", "per 1,000 children VmRSS",
                   (double)(status_kb(o.pid, "VmRSS") - before_rss) * per, "MB");
            result("distsupd memory", "per 1,000 children RssAnon",
                   (double)(status_kb(o.pid, "RssAnon") - before_anon) * per, "MB");
        }
        j.method = SUP "TerminateChild";
        j.make = make_terminate;
        j.check = check_terminate;
        run_job(&j, &st);
        report("TerminateChild (Terminate frame, child exits, reaped)", label, &st, 1);
        if (o.pid) rss(o.pid, "after they stopped:");
    } else {
        usage();
    }
    for (unsigned k = 0; k < max_ch; k++) grpc_channel_destroy(ch[k]);
    grpc_shutdown();
    return failures ? 1 : 0;
}

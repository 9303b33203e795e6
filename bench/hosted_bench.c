/* hosted_bench: figures of hosted children (docs/hosting.md), through the C core.
 *
 *   hosted_bench start TARGET (--kind KIND | --argv PATH) --n N [--conc C] [--prefix P]
 *                [--label L] [--pid PID] [--host-pid PID] [--keep]
 *       StartChild of N children (ChildSpec.kind = KIND, or argv = [PATH]), C in
 *       flight (default 64): starts/s and latency; with --pid, distsupd's VmRSS and
 *       RssAnon before and after, per child (with --host-pid, also the host app's);
 *       then, unless --keep, TerminateChild of them all, C in flight.
 *   hosted_bench call TARGET --name NAME [--seconds S] [--conc 1,16,64] [--label L]
 *       Call "echo:bench" (answered "bench") to the running child NAME: sequential
 *       latency, then calls/s and latency with each --conc in flight.
 *   hosted_bench rss --pid PID --label L
 *       a process's VmRSS, RssAnon and threads.
 *
 * Figures are "RESULT<TAB>section<TAB>figure<TAB>value<TAB>unit" lines on stdout
 * (bench/hosted.sh makes the table); progress and errors go to stderr.  Method, as
 * bench/call_bench.c's: one client thread owns one completion queue and one channel
 * and keeps C calls in flight; a call's latency runs from starting its batch to
 * taking its completion; p50/p99 are nearest-rank over every call; rates are calls
 * completed over the wall time of the run; timed Call runs follow a 0.5 s warm-up.
 * Every answer is checked, and a failed call makes the program exit non-zero. */
#include <dirent.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench/latency.h"
#include "distsup/v1/supervisor.pb-c.h"

#define SVC "/distsup.v1.Supervisor/"
#define RPC_TIMEOUT_MS 60000
#define MAX_CONC 1024

static int failed_runs;

static void die(const char *what)
{
    fprintf(stderr, "hosted_bench: %s\n", what);
    exit(1);
}

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    if (p == NULL) die("out of memory");
    return p;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void result(const char *section, const char *figure, double v, const char *unit)
{
    printf("RESULT\t%s\t%s\t%.*f\t%s\n", section, figure, v >= 100 ? 0 : v >= 10 ? 1 : 2, v, unit);
    fflush(stdout);
}

/* ---- a run: many unary calls through one completion queue ---------------------------- */

struct run {
    grpc_channel *ch;
    const char *method;
    /* the request of call i (a new byte buffer) and the check of its answer (0: right) */
    grpc_byte_buffer *(*make)(void *arg, size_t i);
    int (*check)(void *arg, size_t i, const uint8_t *p, size_t n);
    void *arg;
    size_t n;       /* calls; 0: as many as fit in seconds */
    double seconds; /* with n == 0 */
    unsigned conc;
};

struct call_slot {
    grpc_call *call;
    grpc_byte_buffer *req, *resp;
    grpc_metadata_array im, tm;
    grpc_status_code status;
    grpc_slice details;
    uint64_t t0;
    size_t i;
};

static void slot_start(const struct run *r, grpc_completion_queue *cq, struct call_slot *s, size_t i)
{
    memset(s, 0, sizeof *s);
    s->i = i;
    s->req = r->make(r->arg, i);
    grpc_metadata_array_init(&s->im);
    grpc_metadata_array_init(&s->tm);
    gpr_timespec dl = gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(RPC_TIMEOUT_MS, GPR_TIMESPAN));
    s->call = grpc_channel_create_call(r->ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                       grpc_slice_from_static_string(r->method), NULL, dl, NULL);
    if (s->call == NULL) die("grpc_channel_create_call failed");
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
    if (grpc_call_start_batch(s->call, ops, 6, s, NULL) != GRPC_CALL_OK) die("grpc_call_start_batch failed");
}

static void slot_finish(const struct run *r, struct call_slot *s, struct stats *st, uint64_t t)
{
    bool good = false;
    if (s->status == GRPC_STATUS_OK && s->resp) {
        grpc_byte_buffer_reader rd;
        if (grpc_byte_buffer_reader_init(&rd, s->resp)) {
            grpc_slice body = grpc_byte_buffer_reader_readall(&rd);
            grpc_byte_buffer_reader_destroy(&rd);
            good = r->check(r->arg, s->i, GRPC_SLICE_START_PTR(body), GRPC_SLICE_LENGTH(body)) == 0;
            grpc_slice_unref(body);
        }
        if (!good && !st->first_error[0]) snprintf(st->first_error, sizeof st->first_error, "a wrong answer");
    } else if (!st->first_error[0]) {
        char *d = grpc_slice_to_c_string(s->details);
        snprintf(st->first_error, sizeof st->first_error, "status %d: %s", (int)s->status, d ? d : "");
        gpr_free(d);
    }
    if (good) {
        if (stats_ok(st, t - s->t0) != 0) die("out of memory");
    } else {
        st->failed++;
    }
    grpc_byte_buffer_destroy(s->req);
    if (s->resp) grpc_byte_buffer_destroy(s->resp);
    grpc_metadata_array_destroy(&s->im);
    grpc_metadata_array_destroy(&s->tm);
    grpc_slice_unref(s->details);
    grpc_call_unref(s->call);
}

static void run(const struct run *r, struct stats *st)
{
    memset(st, 0, sizeof *st);
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    if (cq == NULL) die("cannot create a completion queue");
    struct call_slot *slots = xcalloc(r->conc, sizeof *slots);
    uint64_t start = now_ns(), stop_at = r->n ? UINT64_MAX : start + (uint64_t)(r->seconds * 1e9);
    size_t next = 0, inflight = 0;
    for (unsigned k = 0; k < r->conc && (r->n == 0 || next < r->n); k++, inflight++)
        slot_start(r, cq, &slots[k], next++);
    while (inflight > 0) {
        gpr_timespec wait =
            gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis(RPC_TIMEOUT_MS + 10000, GPR_TIMESPAN));
        grpc_event ev = grpc_completion_queue_next(cq, wait, NULL);
        if (ev.type != GRPC_OP_COMPLETE) die("a call never completed");
        uint64_t t = now_ns();
        struct call_slot *s = ev.tag;
        slot_finish(r, s, st, t);
        inflight--;
        if (r->n ? next < r->n : t < stop_at) {
            slot_start(r, cq, s, next++);
            inflight++;
        }
    }
    st->elapsed_s = (double)(now_ns() - start) / 1e9;
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL).type != GRPC_QUEUE_SHUTDOWN) {}
    grpc_completion_queue_destroy(cq);
    free(slots);
    if (st->failed) {
        fprintf(stderr, "hosted_bench: %s: %zu of %zu calls failed; first: %s\n", r->method, st->failed,
                st->ok + st->failed, st->first_error);
        failed_runs++;
    }
}

/* rate (label + " /s"), p50 and p99; frees the latencies */
static void report(const char *section, const char *label, struct stats *st)
{
    char fig[200];
    stats_sort(st);
    snprintf(fig, sizeof fig, "%s: per second", label);
    result(section, fig, (double)st->ok / st->elapsed_s, "1/s");
    snprintf(fig, sizeof fig, "%s: p50", label);
    result(section, fig, stats_pct_us(st, 0.50), "us");
    snprintf(fig, sizeof fig, "%s: p99", label);
    result(section, fig, stats_pct_us(st, 0.99), "us");
    fprintf(stderr, "hosted_bench: %s / %s: %zu calls in %.2f s\n", section, label, st->ok, st->elapsed_s);
    stats_free(st);
}

/* ---- requests ------------------------------------------------------------------------ */

static grpc_byte_buffer *pack(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

struct children {
    const char *prefix;
    const char *kind; /* hosted, or */
    const char *argv0;
};

static void name_of(const struct children *c, size_t i, char *buf, size_t len)
{
    snprintf(buf, len, "%s%zu", c->prefix, i);
}

static grpc_byte_buffer *make_start(void *arg, size_t i)
{
    const struct children *c = arg;
    char name[96];
    name_of(c, i, name, sizeof name);
    char *argv[1] = {(char *)c->argv0};
    Distsup__V1__ChildSpec spec = DISTSUP__V1__CHILD_SPEC__INIT;
    spec.name = name;
    if (c->kind) {
        spec.kind = (char *)c->kind;
    } else {
        spec.argv = argv;
        spec.n_argv = 1;
    }
    Distsup__V1__StartChildRequest req = DISTSUP__V1__START_CHILD_REQUEST__INIT;
    req.spec = &spec;
    return pack(&req.base);
}

static int check_start(void *arg, size_t i, const uint8_t *p, size_t n)
{
    (void)arg;
    (void)i;
    Distsup__V1__StartChildResponse *r = distsup__v1__start_child_response__unpack(NULL, n, p);
    if (r == NULL) return -1;
    int good = r->child && r->child->state == DISTSUP__V1__CHILD_STATE__RUNNING;
    distsup__v1__start_child_response__free_unpacked(r, NULL);
    return good ? 0 : -1;
}

static grpc_byte_buffer *make_terminate(void *arg, size_t i)
{
    char name[96];
    name_of(arg, i, name, sizeof name);
    Distsup__V1__TerminateChildRequest req = DISTSUP__V1__TERMINATE_CHILD_REQUEST__INIT;
    req.name = name;
    return pack(&req.base);
}

static int check_terminate(void *arg, size_t i, const uint8_t *p, size_t n)
{
    (void)arg;
    (void)i;
    Distsup__V1__TerminateChildResponse *r = distsup__v1__terminate_child_response__unpack(NULL, n, p);
    if (r == NULL) return -1;
    distsup__v1__terminate_child_response__free_unpacked(r, NULL);
    return 0;
}

static grpc_byte_buffer *make_call(void *arg, size_t i)
{
    (void)i;
    return grpc_byte_buffer_copy(arg);
}

static int check_call(void *arg, size_t i, const uint8_t *p, size_t n)
{
    (void)arg;
    (void)i;
    Distsup__V1__CallResponse *r = distsup__v1__call_response__unpack(NULL, n, p);
    if (r == NULL) return -1;
    int good = r->payload.len == 5 && memcmp(r->payload.data, "bench", 5) == 0;
    distsup__v1__call_response__free_unpacked(r, NULL);
    return good ? 0 : -1;
}

/* ---- /proc --------------------------------------------------------------------------- */

static long status_kb(long pid, const char *key)
{
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%ld/status", pid);
    FILE *f = fopen(path, "re");
    if (f == NULL) die("cannot read a process's /proc/PID/status");
    long v = -1;
    size_t kl = strlen(key);
    while (fgets(line, sizeof line, f))
        if (!strncmp(line, key, kl) && line[kl] == ':') v = strtol(line + kl + 1, NULL, 10);
    fclose(f);
    if (v < 0) die("no such key in /proc/PID/status");
    return v;
}

static long threads(long pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%ld/task", pid);
    DIR *d = opendir(path);
    if (d == NULL) return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n;
}

static void rss(long pid, const char *section, const char *label)
{
    char fig[200];
    snprintf(fig, sizeof fig, "%s VmRSS", label);
    result(section, fig, (double)status_kb(pid, "VmRSS") / 1024.0, "MB");
    snprintf(fig, sizeof fig, "%s RssAnon", label);
    result(section, fig, (double)status_kb(pid, "RssAnon") / 1024.0, "MB");
    snprintf(fig, sizeof fig, "%s threads", label);
    result(section, fig, (double)threads(pid), "");
}

/* ---- command line -------------------------------------------------------------------- */

static unsigned number(const char *s)
{
    char *end;
    unsigned long v = strtoul(s, &end, 10);
    if (*end || end == s || v > 10000000) die("bad number");
    return (unsigned)v;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: hosted_bench start TARGET (--kind KIND | --argv PATH) --n N [--conc C] [--prefix P]\n"
            "                    [--label L] [--pid PID] [--host-pid PID] [--keep]\n"
            "       hosted_bench call  TARGET --name NAME [--seconds S] [--conc 1,16,64] [--label L]\n"
            "       hosted_bench rss   --pid PID --label L\n");
    exit(2);
}

static grpc_channel *open_channel(const char *target)
{
    grpc_arg a;
    memset(&a, 0, sizeof a);
    a.type = GRPC_ARG_INTEGER;
    a.key = (char *)GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL;
    a.value.integer = 1;
    grpc_channel_args ca = {1, &a};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(target, creds, &ca);
    grpc_channel_credentials_release(creds);
    if (ch == NULL) die("cannot create a channel");
    return ch;
}

static void cmd_start(grpc_channel *ch, const struct children *c, unsigned n, unsigned conc, const char *label,
                      long pid, long host_pid, bool keep)
{
    char section[160], fig[200];
    snprintf(section, sizeof section, "StartChild, %s", label);
    long rss0 = 0, anon0 = 0, hrss0 = 0;
    if (pid) {
        rss0 = status_kb(pid, "VmRSS");
        anon0 = status_kb(pid, "RssAnon");
    }
    if (host_pid) hrss0 = status_kb(host_pid, "VmRSS");
    struct run r = {.ch = ch, .make = make_start, .check = check_start, .arg = (void *)c, .n = n, .conc = conc};
    r.method = SVC "StartChild";
    struct stats st;
    run(&r, &st);
    snprintf(fig, sizeof fig, "%u children, %u in flight", n, conc);
    report(section, fig, &st);
    if (pid) {
        long rss1 = status_kb(pid, "VmRSS"), anon1 = status_kb(pid, "RssAnon");
        snprintf(section, sizeof section, "distsupd memory, %s", label);
        snprintf(fig, sizeof fig, "before: VmRSS");
        result(section, fig, (double)rss0 / 1024.0, "MB");
        snprintf(fig, sizeof fig, "with %u children: VmRSS", n);
        result(section, fig, (double)rss1 / 1024.0, "MB");
        result(section, "per child: VmRSS", (double)(rss1 - rss0) * 1024.0 / n, "bytes");
        result(section, "per child: RssAnon", (double)(anon1 - anon0) * 1024.0 / n, "bytes");
        if (host_pid) {
            long hrss1 = status_kb(host_pid, "VmRSS");
            result(section, "the host app, per child: VmRSS", (double)(hrss1 - hrss0) * 1024.0 / n, "bytes");
        }
    }
    if (keep) return;
    snprintf(section, sizeof section, "TerminateChild, %s", label);
    r.method = SVC "TerminateChild";
    r.make = make_terminate;
    r.check = check_terminate;
    run(&r, &st);
    snprintf(fig, sizeof fig, "%u children, %u in flight", n, conc);
    report(section, fig, &st);
}

static void cmd_call(grpc_channel *ch, const char *name, double seconds, const unsigned *conc, size_t n_conc,
                     const char *label)
{
    uint8_t payload[] = "echo:bench";
    Distsup__V1__CallRequest cr = DISTSUP__V1__CALL_REQUEST__INIT;
    cr.name = (char *)name;
    cr.payload.data = payload;
    cr.payload.len = sizeof payload - 1;
    grpc_byte_buffer *req = pack(&cr.base);
    struct run r = {.ch = ch, .method = SVC "Call", .make = make_call, .check = check_call, .arg = req};
    struct stats st;
    r.conc = 4; /* warm-up */
    r.seconds = 0.5;
    run(&r, &st);
    stats_free(&st);
    char section[160], fig[64];
    snprintf(section, sizeof section, "Call, %s", label);
    for (size_t k = 0; k < n_conc; k++) {
        r.conc = conc[k];
        r.seconds = seconds;
        run(&r, &st);
        if (conc[k] == 1) snprintf(fig, sizeof fig, "sequential");
        else snprintf(fig, sizeof fig, "%u in flight", conc[k]);
        report(section, fig, &st);
    }
    grpc_byte_buffer_destroy(req);
}

int main(int argc, char **argv)
{
    if (argc < 2) usage();
    const char *cmd = argv[1], *target = NULL, *kind = NULL, *argv0 = NULL, *prefix = NULL, *label = NULL;
    const char *name = NULL;
    unsigned n = 0, start_conc = 64, conc[8] = {1, 16, 64}, n_conc = 3;
    double seconds = 3;
    long pid = 0, host_pid = 0;
    bool keep = false;
    int i = 2;
    if (strcmp(cmd, "rss") != 0) {
        if (argc < 3) usage();
        target = argv[2];
        i = 3;
    }
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--keep")) {
            keep = true;
            continue;
        }
        if (i + 1 >= argc) usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--kind")) kind = v;
        else if (!strcmp(a, "--argv")) argv0 = v;
        else if (!strcmp(a, "--prefix")) prefix = v;
        else if (!strcmp(a, "--label")) label = v;
        else if (!strcmp(a, "--name")) name = v;
        else if (!strcmp(a, "--n")) n = number(v);
        else if (!strcmp(a, "--seconds")) seconds = number(v);
        else if (!strcmp(a, "--pid")) pid = number(v);
        else if (!strcmp(a, "--host-pid")) host_pid = number(v);
        else if (!strcmp(a, "--conc")) {
            n_conc = 0;
            for (const char *p = v; *p && n_conc < 8;) {
                char *end;
                unsigned long c = strtoul(p, &end, 10);
                if (end == p || c == 0 || c > MAX_CONC) usage();
                conc[n_conc++] = (unsigned)c;
                p = *end == ',' ? end + 1 : end;
            }
            if (n_conc == 0) usage();
            start_conc = conc[0];
        } else usage();
    }
    if (!strcmp(cmd, "rss")) {
        if (!pid || !label) usage();
        rss(pid, "memory", label);
        return 0;
    }
    grpc_init();
    grpc_channel *ch = open_channel(target);
    if (!strcmp(cmd, "start")) {
        if (!n || (!kind == !argv0)) usage();
        struct children c = {.prefix = prefix ? prefix : kind ? "bench-h-" : "bench-p-", .kind = kind, .argv0 = argv0};
        char lab[200];
        snprintf(lab, sizeof lab, "%s", label ? label : kind ? "hosted children" : "process children");
        cmd_start(ch, &c, n, start_conc, lab, pid, host_pid, keep);
    } else if (!strcmp(cmd, "call")) {
        if (!name) usage();
        cmd_call(ch, name, seconds, conc, n_conc, label ? label : name);
    } else {
        usage();
    }
    grpc_channel_destroy(ch);
    grpc_shutdown();
    return failed_runs ? 1 : 0;
}

/* Fuzz target "host": what an app attached over the Host stream sends
 * (sidecar/host.c, hosts_message), after a valid hello, to a session running a few
 * hosted children under the real state machine (sidecar/supervise.c) and loop.
 *
 * The input is a run of messages, each a 2-byte big-endian length and that many
 * bytes, handed to hosts_message one after another as HostUp messages.  What must
 * hold: nothing crashes or leaks (ASan); a session that ends does so with
 * INVALID_ARGUMENT and a message; once it ends, nothing more is sent to it; every
 * child is either still the session's (running or starting) or gone from it
 * (exited: restarted, waiting or removed); and the daemon's bookkeeping of live
 * children matches the children that run. */
#include <grpc/status.h>

#include "sidecar/host.h"
#include "sidecar/loop.h"
#include "tests/fuzz/fuzz.h"

#define N_KIDS 4

static struct {
    uint64_t now;
    int ended, end_code, sends_after_end;
    char end_msg[512];
    unsigned mores;
} F;

static uint64_t f_now(void *arg)
{
    (void)arg;
    return F.now;
}
static void f_tick(void *arg, struct child *ch) { (void)arg, (void)ch; }
static void f_event(void *arg, struct child *ch, Distsup__V1__EventKind kind, int code, int sig, const char *reason)
{
    (void)arg, (void)ch, (void)kind, (void)code, (void)sig, (void)reason;
}
static void f_persist(void *arg, struct child *ch) { (void)arg, (void)ch; }
static void f_remove(void *arg, struct child *ch, const char *reason)
{
    (void)arg, (void)reason;
    ch->dead = 1; /* freed by the harness at the end */
}
static void f_moved_out(void *arg, struct child *ch) { (void)arg, (void)ch; }

static int p_send(void *arg, const uint8_t *data, size_t len)
{
    (void)arg;
    if (F.ended) F.sends_after_end++;
    Distsup__V1__HostDown *m = distsup__v1__host_down__unpack(NULL, len, data);
    FUZZ_CHECK(m != NULL); /* the daemon sends only what decodes */
    distsup__v1__host_down__free_unpacked(m, NULL);
    return 0;
}
static size_t p_queued(void *arg)
{
    (void)arg;
    return 0;
}
static void p_more(void *arg)
{
    (void)arg;
    F.mores++;
}
static void p_end(void *arg, int code, const char *msg)
{
    (void)arg;
    FUZZ_CHECK(!F.ended); /* ended once */
    F.ended = 1;
    F.end_code = code;
    snprintf(F.end_msg, sizeof F.end_msg, "%s", msg ? msg : "");
}
static void p_release(void *arg) { (void)arg; }

static const struct sv_proc_ops never = {0};

static unsigned answers;
static void on_answer(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    (void)arg, (void)code, (void)message, (void)reply;
    answers++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    memset(&F, 0, sizeof F);
    F.now = 1000;
    char err[256];
    struct loop_hooks lh = {0};
    struct loop *l = loop_new(1024, &lh, err, sizeof err);
    FUZZ_CHECK(l != NULL);
    struct sv sv;
    struct sv_hooks hooks = {.now = f_now,
                             .tick = f_tick,
                             .event = f_event,
                             .persist = f_persist,
                             .remove = f_remove,
                             .moved_out = f_moved_out};
    sv_init(&sv, &never, &hooks, l, "fuzz@node", "/nonexistent", 1);
    struct host_limits lim = {.ping_ms = 1000, .timeout_ms = 10000, .queue_bytes = 1 << 20, .max_hosts = 4};
    struct hosts *h = hosts_new(&sv, &lim, "fuzz@node", NULL);
    FUZZ_CHECK(h != NULL);
    sv.hosted_ops = hosts_ops();
    sv.hosts = h;
    struct sup_config cfg;
    memset(&cfg, 0, sizeof cfg);
    snprintf(cfg.name, sizeof cfg.name, "default");
    cfg.max_restarts = 3;
    cfg.max_seconds = 5;
    cfg.backoff_ms = 100;
    cfg.backoff_max_ms = 1000;
    cfg.start_timeout_ms = 5000;

    struct host_port port = {NULL, p_send, p_queued, p_more, p_end, p_release};
    struct host_sess *s = hosts_attach(h, &port);
    FUZZ_CHECK(s != NULL);
    /* a valid hello: kinds "counter" and "k2" */
    Distsup__V1__HostHello hi = DISTSUP__V1__HOST_HELLO__INIT;
    char *kinds[] = {"counter", "k2"};
    hi.n_kinds = 2;
    hi.kinds = kinds;
    hi.name = "fuzz";
    Distsup__V1__HostUp up = DISTSUP__V1__HOST_UP__INIT;
    up.hello = &hi;
    uint8_t hb[256];
    size_t hn = distsup__v1__host_up__pack(&up, hb);
    hosts_message(h, s, hb, hn);
    FUZZ_CHECK(!F.ended);
    /* a few hosted children on it: numbers 1..N_KIDS */
    struct child *kids[N_KIDS];
    for (int i = 0; i < N_KIDS; i++) {
        Distsup__V1__ChildSpec *spec = malloc(sizeof *spec);
        FUZZ_CHECK(spec != NULL);
        distsup__v1__child_spec__init(spec);
        char name[16];
        snprintf(name, sizeof name, "c%d", i);
        spec->name = strdup(name);
        spec->kind = strdup(i % 2 ? "k2" : "counter");
        FUZZ_CHECK(spec->name && spec->kind);
        kids[i] = sv_child_new(&sv, spec, &cfg, NULL);
        FUZZ_CHECK(kids[i] != NULL);
        FUZZ_CHECK(sv_start(&sv, kids[i], err, sizeof err) == 0);
        ProtobufCBinaryData payload = {3, (uint8_t *)"get"};
        FUZZ_CHECK(sv_call(&sv, kids[i], payload, F.now + 60000, on_answer, NULL) == 0); /* ref 1 */
    }
    /* the app's messages */
    size_t at = 0;
    while (at + 2 <= size && !F.ended) {
        size_t n = (size_t)data[at] << 8 | data[at + 1];
        at += 2;
        if (n > size - at) n = size - at;
        hosts_message(h, s, data + at, n);
        at += n;
        F.now += 7;
    }
    if (F.ended) {
        FUZZ_CHECK(F.end_code == GRPC_STATUS_INVALID_ARGUMENT);
        FUZZ_CHECK(F.end_msg[0] != 0);
        FUZZ_CHECK(F.sends_after_end == 0);
    }
    /* bookkeeping: sv.live counts exactly the children that run (a process or a host) */
    size_t running = 0;
    for (int i = 0; i < N_KIDS; i++)
        if (kids[i]->proc.pid > 0) running++;
    FUZZ_CHECK(sv.live == running);
    hosts_gone(h, s);
    for (int i = 0; i < N_KIDS; i++) sv_child_free(kids[i]);
    hosts_free(h);
    loop_free(l, NULL);
    return 0;
}

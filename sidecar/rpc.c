#include "sidecar/rpc.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <errno.h>
#include <grp.h>
#include <limits.h>
#include <sodium.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "distsup/v1/supervisor.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"
#include "sidecar/apiauth.h"
#include "sidecar/grpcutil.h"
#include "sidecar/host.h"
#include "sidecar/log.h"
#include "sidecar/ops.h"
#include "sidecar/reflection.h"
#include "sidecar/trace.h"
#include "sidecar/wirecheck.h"

extern const unsigned char distsup_descriptor_set[];
extern const size_t distsup_descriptor_set_len;

#define REQUESTS_PER_METHOD 4
#define API_QUOTA (256u << 20)  /* bytes grpc may hold for the API's calls, at least */
#define API_STREAMS 256         /* calls at once on one client connection */
#define HEALTH_QUOTA (8u << 20) /* ... and for the health listener's */
#define SUPERVISOR_SERVICE "distsup.v1.Supervisor"

enum method_kind { M_UNARY, M_WATCH, M_HOST, M_HEALTH_CHECK, M_HEALTH_WATCH, M_REFLECT };

struct method {
    const char *path;
    enum method_kind kind;
    int op;                                 /* enum core_op for M_UNARY */
    const ProtobufCMessageDescriptor *desc; /* request type */
    void *handle;                           /* grpc's registered method */
};

/* The Supervisor's unary methods are the public rows of sidecar/ops.h. */
#define UNARY_METHOD(name, rpc, req, rep) \
    {"/" SUPERVISOR_SERVICE "/" #rpc, M_UNARY, CORE_##name, &distsup__v1__##req##__descriptor, NULL},

/* clang-format off */
static struct method methods_template[] = {
    DS_PUBLIC_OPS(UNARY_METHOD)
    {"/distsup.v1.Supervisor/Watch", M_WATCH, 0, &distsup__v1__watch_request__descriptor, NULL},
    {"/distsup.v1.Supervisor/Host", M_HOST, 0, &distsup__v1__host_up__descriptor, NULL},
    {"/grpc.health.v1.Health/Check", M_HEALTH_CHECK, 0, &grpc__health__v1__health_check_request__descriptor, NULL},
    {"/grpc.health.v1.Health/Watch", M_HEALTH_WATCH, 0, &grpc__health__v1__health_check_request__descriptor, NULL},
    {"/grpc.reflection.v1.ServerReflection/ServerReflectionInfo", M_REFLECT, 0, NULL, NULL},
    {"/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", M_REFLECT, 0, NULL, NULL},
};
static const struct method health_template[] = {
    {"/grpc.health.v1.Health/Check", M_HEALTH_CHECK, 0, &grpc__health__v1__health_check_request__descriptor, NULL},
    {"/grpc.health.v1.Health/Watch", M_HEALTH_WATCH, 0, &grpc__health__v1__health_check_request__descriptor, NULL},
};
/* clang-format on */
#define N_METHODS (sizeof methods_template / sizeof methods_template[0])
#define N_HEALTH (sizeof health_template / sizeof health_template[0])

struct rpc;

/* One grpc_server: the API (every method; calls need the token when there is one)
 * or the health listener (grpc.health.v1 only, no authentication). */
struct listener {
    grpc_server *server;
    struct method *methods;
    size_t n_methods;
    int health_only;
};

struct tag {
    void (*fn)(struct rpc *r, void *ctx, int ok);
    void *ctx;
};

/* One RPC.  Tags point back at it; refs counts tags in flight plus holders. */
struct ctx {
    struct rpc *r;
    struct listener *l;
    const struct method *m; /* NULL: an unknown method */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details;
    grpc_byte_buffer *payload;
    struct tag t_req, t_main, t_close, t_send;
    grpc_byte_buffer *out;
    grpc_slice status_text;
    int have_status_text;
    int cancelled;
    int md_sent; /* initial metadata has gone out (at most once per call) */
    pthread_mutex_t mu;
    int refs;
    /* streams */
    struct event_sub *sub;
    int sending, closed, finishing;
    grpc_byte_buffer *recv;
    /* Host streams (sidecar/host.h): bytes waiting to go, one send in flight (out),
     * one receive at a time (recv, asked for by the reactor) */
    struct core_host *host;
    uint8_t *hpend;
    size_t hlen, hcap, hinflight;
    int hended, hstatus_sent, hreleased, hclosed_posted;
    int hcode;
    char *hmsg;
    struct tag t_status;
};

struct rpc {
    const struct config *cfg;
    struct core *core;
    grpc_completion_queue *cq;
    struct listener api, health; /* health.server is NULL without health_listen */
    struct method methods[N_METHODS];
    struct method hmethods[N_HEALTH];
    struct api_auth auth; /* the bearer token, when api_token_file is set */
    struct reflection *refl;
    pthread_t *threads;
    unsigned n_threads;
    atomic_int stopping;
    struct tag t_shutdown[2];
    atomic_int shutdown_done; /* servers that reported their shutdown */
    int n_servers;
    char address[PATH_MAX + 8]; /* where clients reach the API */
    int health_port;
    atomic_long live_ctx;
};

static void request_one(struct rpc *r, struct listener *l, const struct method *m);

/* ---------- contexts ---------- */

static struct ctx *ctx_new(struct rpc *r, struct listener *l, const struct method *m)
{
    struct ctx *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (pthread_mutex_init(&c->mu, NULL) != 0) {
        free(c);
        return NULL;
    }
    c->r = r;
    c->l = l;
    c->m = m;
    c->refs = 1;
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    atomic_fetch_add(&r->live_ctx, 1);
    return c;
}

static void ctx_unref(struct ctx *c)
{
    pthread_mutex_lock(&c->mu);
    int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left > 0) return;
    if (c->call) grpc_call_unref(c->call);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->out) grpc_byte_buffer_destroy(c->out);
    if (c->recv) grpc_byte_buffer_destroy(c->recv);
    if (c->have_status_text) grpc_slice_unref(c->status_text);
    free(c->hpend);
    free(c->hmsg);
    pthread_mutex_destroy(&c->mu);
    atomic_fetch_sub(&c->r->live_ctx, 1);
    free(c);
}

static void start_batch(struct ctx *c, const struct gu_batch *b, struct tag *t)
{
    /* On an error the tag will never come back: drop its reference here. */
    if (gu_batch_start(c->call, b, t, "rpc", c->m ? c->m->path : "an unknown method") != GRPC_CALL_OK) ctx_unref(c);
}

static void on_finished(struct rpc *r, void *p, int ok)
{
    (void)r;
    (void)ok;
    ctx_unref(p);
}

/* Sends the final answer of a unary call (msg may be NULL) and status. */
static void finish(struct ctx *c, int code, const char *text, grpc_byte_buffer *msg)
{
    struct gu_batch b;
    gu_batch_init(&b);
    if (!c->md_sent) gu_send_initial_metadata(&b);
    c->md_sent = 1;
    if (msg) {
        c->out = msg;
        gu_send_message(&b, msg);
    }
    c->status_text = grpc_slice_from_copied_string(text ? text : "");
    c->have_status_text = 1;
    gu_send_status(&b, (grpc_status_code)code, &c->status_text);
    gu_recv_close_on_server(&b, &c->cancelled);
    c->t_main.fn = on_finished;
    c->t_main.ctx = c;
    if (code != GRPC_STATUS_OK && log_enabled(LOG_DEBUG))
        log_debug("rpc", "%s -> status %d: %s", c->m ? c->m->path : "?", code, text ? text : "");
    start_batch(c, &b, &c->t_main);
}

/* ---------- unary Supervisor calls ---------- */

static void core_done(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct ctx *c = arg;
    finish(c, code, message, code == GRPC_STATUS_OK && reply ? gu_bb_pack(reply) : NULL);
}

static uint64_t deadline_ms(gpr_timespec dl)
{
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    dl = gpr_convert_clock_type(dl, GPR_CLOCK_MONOTONIC);
    if (dl.tv_sec > now.tv_sec + 86400 * 365) return 0;
    gpr_timespec left = gpr_time_sub(dl, now);
    int64_t ms = left.tv_sec * 1000 + left.tv_nsec / 1000000;
    if (ms < 1) ms = 1;
    return core_now_ms() + (uint64_t)ms;
}

static void bad_request(struct ctx *c)
{
    char text[256];
    snprintf(text, sizeof text, "malformed request: the payload is not a valid %s message",
             c->m->desc ? c->m->desc->name : "request");
    finish(c, GRPC_STATUS_INVALID_ARGUMENT, text, NULL);
}

/* The value of the call's metadata entry key, or NULL when it has none or more than
 * one (a repeated traceparent is not valid). */
static const grpc_slice *metadata_one(const struct ctx *c, const char *key)
{
    size_t klen = strlen(key);
    const grpc_slice *found = NULL;
    for (size_t i = 0; i < c->md.count; i++) {
        const grpc_metadata *e = &c->md.metadata[i];
        if (GRPC_SLICE_LENGTH(e->key) == klen && !memcmp(GRPC_SLICE_START_PTR(e->key), key, klen)) {
            if (found) return NULL;
            found = &e->value;
        }
    }
    return found;
}

/* Sets the string field `field` of req to v[0..len) when the field is empty. */
static void set_empty_string(ProtobufCMessage *req, const char *field, const uint8_t *v, size_t len)
{
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(req->descriptor, field);
    if (!f || f->type != PROTOBUF_C_TYPE_STRING) return;
    char **slot = (char **)((char *)req + f->offset);
    if (*slot && (*slot)[0]) return; /* the client set it in the request */
    char *copy = malloc(len + 1);
    if (!copy) return; /* the trace context is best effort */
    memcpy(copy, v, len);
    copy[len] = 0;
    if (*slot && *slot != f->default_value) free(*slot);
    *slot = copy;
}

/* A Call, Cast or Send takes the W3C trace context of its metadata (traceparent and
 * tracestate) into its request, unless the request has one: forwarding then carries
 * it to the node of the child.  An invalid traceparent is ignored, and its
 * tracestate with it (docs/observability.md). */
static void trace_from_metadata(struct ctx *c, ProtobufCMessage *req)
{
    if (c->m->op != CORE_CALL && c->m->op != CORE_CAST && c->m->op != CORE_SEND) return;
    const grpc_slice *tp = metadata_one(c, "traceparent");
    if (!tp || !trace_parent_valid((const char *)GRPC_SLICE_START_PTR(*tp), GRPC_SLICE_LENGTH(*tp))) return;
    const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(req->descriptor, "traceparent");
    if (!f) return;
    const char *have = *(char **)((char *)req + f->offset);
    if (have && have[0]) return; /* the request's own context wins, with its own tracestate */
    set_empty_string(req, "traceparent", GRPC_SLICE_START_PTR(*tp), GRPC_SLICE_LENGTH(*tp));
    const grpc_slice *ts = metadata_one(c, "tracestate");
    if (ts && trace_state_valid((const char *)GRPC_SLICE_START_PTR(*ts), GRPC_SLICE_LENGTH(*ts)))
        set_empty_string(req, "tracestate", GRPC_SLICE_START_PTR(*ts), GRPC_SLICE_LENGTH(*ts));
}

static void handle_unary(struct ctx *c)
{
    /* Strings as sent: protobuf-c would cut one at a NUL and keep bytes that are not
     * UTF-8 (sidecar/wirecheck.h). */
    char why[300];
    grpc_slice raw = c->payload ? gu_bb_flatten(c->payload) : grpc_empty_slice();
    int bad = wirecheck_strings(c->m->desc, GRPC_SLICE_START_PTR(raw), GRPC_SLICE_LENGTH(raw), why, sizeof why);
    ProtobufCMessage *req = bad || !c->payload
        ? NULL
        : protobuf_c_message_unpack(c->m->desc, NULL, GRPC_SLICE_LENGTH(raw), GRPC_SLICE_START_PTR(raw));
    grpc_slice_unref(raw);
    if (bad) {
        finish(c, GRPC_STATUS_INVALID_ARGUMENT, why, NULL);
        return;
    }
    if (!req) {
        bad_request(c);
        return;
    }
    trace_from_metadata(c, req);
    core_request(c->r->core, (enum core_op)c->m->op, req, deadline_ms(c->deadline), core_done, c);
}

/* ---------- health ---------- */

static int health_known(const char *service) { return !service[0] || !strcmp(service, SUPERVISOR_SERVICE); }

static grpc_byte_buffer *health_status(struct rpc *r)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = atomic_load(&r->stopping) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
                                            : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    return gu_bb_pack(&resp.base);
}

static void handle_health_check(struct ctx *c)
{
    Grpc__Health__V1__HealthCheckRequest *q = (void *)gu_bb_unpack(c->m->desc, c->payload);
    if (!q) {
        bad_request(c);
        return;
    }
    if (!health_known(q->service)) {
        char text[300];
        snprintf(text, sizeof text, "unknown service '%.200s'", q->service);
        finish(c, GRPC_STATUS_NOT_FOUND, text, NULL);
    } else {
        finish(c, GRPC_STATUS_OK, NULL, health_status(c->r));
    }
    grpc__health__v1__health_check_request__free_unpacked(q, NULL);
}

/* ---------- server streams: Watch and Health/Watch ---------- */

static void stream_pump(struct ctx *c);

static void on_stream_sent(struct rpc *r, void *p, int ok)
{
    (void)r;
    struct ctx *c = p;
    pthread_mutex_lock(&c->mu);
    c->sending = 0;
    if (c->out) {
        grpc_byte_buffer_destroy(c->out);
        c->out = NULL;
    }
    pthread_mutex_unlock(&c->mu);
    if (ok && c->m->kind == M_WATCH) stream_pump(c);
    ctx_unref(c);
}

static void on_stream_closed(struct rpc *r, void *p, int ok)
{
    (void)ok;
    struct ctx *c = p;
    pthread_mutex_lock(&c->mu);
    c->closed = 1;
    struct event_sub *sub = c->sub;
    c->sub = NULL;
    pthread_mutex_unlock(&c->mu);
    if (sub) {
        event_bus_unsubscribe(core_events(r->core), sub);
        ctx_unref(c); /* the subscription's reference */
    }
    ctx_unref(c);
}

/* Sends the next queued event, if no send is in flight.  Called from the bus
 * (wake) and from send completions. */
static void stream_pump(struct ctx *c)
{
    pthread_mutex_lock(&c->mu);
    if (c->sending || c->closed || c->finishing || !c->sub) {
        pthread_mutex_unlock(&c->mu);
        return;
    }
    uint8_t *data;
    size_t len;
    int got = event_sub_pop(c->sub, &data, &len);
    struct gu_batch b;
    gu_batch_init(&b);
    if (got == 1) {
        c->sending = 1;
        c->refs++;
        c->out = gu_bb_take(data, len);
        gu_send_message(&b, c->out);
        c->t_send.fn = on_stream_sent;
        c->t_send.ctx = c;
        pthread_mutex_unlock(&c->mu);
        start_batch(c, &b, &c->t_send);
        return;
    }
    if (got < 0) {
        c->finishing = 1;
        c->refs++;
        c->status_text =
            grpc_slice_from_static_string("this Watch fell too far behind (watch_queue events unread) and was dropped; "
                                          "subscribe again");
        c->have_status_text = 1;
        gu_send_status(&b, GRPC_STATUS_RESOURCE_EXHAUSTED, &c->status_text);
        c->t_send.fn = on_finished;
        c->t_send.ctx = c;
        pthread_mutex_unlock(&c->mu);
        log_warn("rpc", "dropping a Watch subscriber that fell behind");
        start_batch(c, &b, &c->t_send);
        return;
    }
    pthread_mutex_unlock(&c->mu);
}

static void stream_wake(void *arg) { stream_pump(arg); }

/* Sends initial metadata and waits for the close, keeping a reference for it. */
static void stream_open(struct ctx *c, grpc_byte_buffer *first)
{
    struct gu_batch b;
    gu_batch_init(&b);
    gu_send_initial_metadata(&b);
    c->md_sent = 1;
    gu_recv_close_on_server(&b, &c->cancelled);
    c->refs++; /* the close tag */
    c->t_close.fn = on_stream_closed;
    c->t_close.ctx = c;
    start_batch(c, &b, &c->t_close);
    if (first) {
        gu_batch_init(&b);
        pthread_mutex_lock(&c->mu);
        c->sending = 1;
        c->refs++;
        c->out = first;
        pthread_mutex_unlock(&c->mu);
        gu_send_message(&b, first);
        c->t_send.fn = on_stream_sent;
        c->t_send.ctx = c;
        start_batch(c, &b, &c->t_send);
    }
}

static void handle_watch(struct ctx *c)
{
    Distsup__V1__WatchRequest *q = (void *)gu_bb_unpack(c->m->desc, c->payload);
    if (!q) {
        bad_request(c);
        return;
    }
    const char *sup = q->supervisor[0] ? q->supervisor : "default";
    uint32_t mask = 0;
    for (size_t i = 0; i < q->n_kinds; i++)
        if (q->kinds[i] > 0 && q->kinds[i] < 32) mask |= 1u << (unsigned)q->kinds[i];
    if (strcmp(sup, "*") && !core_has_supervisor(c->r->core, sup)) {
        char text[300];
        snprintf(text, sizeof text, "no supervisor named '%.200s'", sup);
        finish(c, GRPC_STATUS_NOT_FOUND, text, NULL);
        distsup__v1__watch_request__free_unpacked(q, NULL);
        return;
    }
    const struct sup_config *sc = config_find_sup(c->r->cfg, strcmp(sup, "*") ? sup : "default");
    size_t qlen = sc ? sc->watch_queue : 4096;
    struct event_filter f = {
        .supervisor = sup,
        .kinds_mask = mask,
        .node = q->cluster ? NULL : c->r->cfg->node_name,
        .no_node_events = sc && strcmp(sup, "*") && !sc->monitor_nodes,
    };
    struct event_sub *sub = event_bus_subscribe(core_events(c->r->core), &f, qlen, stream_wake, c);
    distsup__v1__watch_request__free_unpacked(q, NULL);
    if (!sub) {
        finish(c, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL);
        return;
    }
    /* Subscribed before the initial metadata goes out, so a client that has it knows
     * every later event reaches it (events meanwhile wait in the subscription: the
     * pump does nothing until c->sub is set).  From here the call's first reference
     * is the subscription's. */
    stream_open(c, NULL);
    pthread_mutex_lock(&c->mu);
    int closed = c->closed;
    if (!closed) c->sub = sub;
    pthread_mutex_unlock(&c->mu);
    if (closed) { /* cancelled before we got here */
        event_bus_unsubscribe(core_events(c->r->core), sub);
        ctx_unref(c);
        return;
    }
    stream_pump(c);
}

static void handle_health_watch(struct ctx *c)
{
    Grpc__Health__V1__HealthCheckRequest *q = (void *)gu_bb_unpack(c->m->desc, c->payload);
    if (!q) {
        bad_request(c);
        return;
    }
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = health_known(q->service) ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                                           : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVICE_UNKNOWN;
    grpc__health__v1__health_check_request__free_unpacked(q, NULL);
    /* The status never changes while serving: send it, then hold the stream until
     * the client leaves or the server stops. */
    stream_open(c, gu_bb_pack(&resp.base));
    ctx_unref(c); /* the close tag keeps it alive now */
}

/* ---------- Host (bidirectional; hosted children, sidecar/host.h) ---------- */

/* Under c->mu: the next batch to start, if any: the pending bytes as one message,
 * or, when the stream is ending and nothing is in flight, its status. */
static int host_next_batch(struct ctx *c, struct gu_batch *b, struct tag **t)
{
    if (c->sending || c->hstatus_sent || c->closed) return 0;
    if (c->hended) {
        c->hstatus_sent = 1;
        c->status_text = grpc_slice_from_copied_string(c->hmsg ? c->hmsg : "");
        c->have_status_text = 1;
        gu_batch_init(b);
        gu_send_status(b, (grpc_status_code)c->hcode, &c->status_text);
        c->t_status.fn = on_finished;
        c->t_status.ctx = c;
        c->refs++;
        *t = &c->t_status;
        return 1;
    }
    if (!c->hlen) return 0;
    c->out = gu_bb_take(c->hpend, c->hlen);
    c->hinflight = c->hlen;
    c->hpend = NULL;
    c->hlen = c->hcap = 0;
    c->sending = 1;
    gu_batch_init(b);
    gu_send_message(b, c->out);
    c->refs++;
    *t = &c->t_send;
    return 1;
}

static void host_kick(struct ctx *c)
{
    struct gu_batch b;
    struct tag *t = NULL;
    pthread_mutex_lock(&c->mu);
    int go = host_next_batch(c, &b, &t);
    pthread_mutex_unlock(&c->mu);
    if (go) start_batch(c, &b, t);
}

static void on_host_sent(struct rpc *r, void *p, int ok)
{
    (void)r;
    struct ctx *c = p;
    pthread_mutex_lock(&c->mu);
    c->sending = 0;
    c->hinflight = 0;
    if (c->out) {
        grpc_byte_buffer_destroy(c->out);
        c->out = NULL;
    }
    if (!ok) c->hended = c->hended ? c->hended : 1; /* the app is gone: nothing more to send */
    pthread_mutex_unlock(&c->mu);
    if (ok) host_kick(c);
    ctx_unref(c);
}

/* The stream is over for us: tell the core once (unless it released us first). */
static void host_post_closed(struct ctx *c)
{
    pthread_mutex_lock(&c->mu);
    int post = !c->hclosed_posted && !c->hreleased && c->host;
    c->hclosed_posted = 1; /* without a handle yet: handle_host posts it */
    pthread_mutex_unlock(&c->mu);
    if (post) core_host_closed(c->r->core, c->host);
}

static void on_host_recv(struct rpc *r, void *p, int ok)
{
    struct ctx *c = p;
    grpc_byte_buffer *in = c->recv;
    c->recv = NULL;
    if (ok && in) {
        grpc_slice s = gu_bb_flatten(in);
        grpc_byte_buffer_destroy(in);
        pthread_mutex_lock(&c->mu);
        int post = !c->hreleased && !c->hclosed_posted;
        pthread_mutex_unlock(&c->mu);
        if (post) core_host_message(r->core, c->host, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s));
        grpc_slice_unref(s);
    } else { /* the app closed its side, or the call ended */
        if (in) grpc_byte_buffer_destroy(in);
        host_post_closed(c);
    }
    ctx_unref(c);
}

static void on_host_close(struct rpc *r, void *p, int ok)
{
    (void)r;
    (void)ok;
    struct ctx *c = p;
    pthread_mutex_lock(&c->mu);
    c->closed = 1;
    pthread_mutex_unlock(&c->mu);
    host_post_closed(c);
    ctx_unref(c);
}

static int hp_send(void *arg, const uint8_t *data, size_t len)
{
    struct ctx *c = arg;
    size_t cap = c->r->cfg->host_queue_bytes;
    pthread_mutex_lock(&c->mu);
    int rc = -1;
    if (!c->hended && !c->closed && c->hlen + c->hinflight + len <= cap) {
        if (c->hlen + len > c->hcap) {
            size_t n = c->hcap ? c->hcap : 4096;
            while (n < c->hlen + len) n *= 2;
            uint8_t *b = realloc(c->hpend, n);
            if (b) {
                c->hpend = b;
                c->hcap = n;
            }
        }
        if (c->hlen + len <= c->hcap) {
            memcpy(c->hpend + c->hlen, data, len);
            c->hlen += len;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&c->mu);
    if (rc == 0) host_kick(c);
    return rc;
}

static size_t hp_queued(void *arg)
{
    struct ctx *c = arg;
    pthread_mutex_lock(&c->mu);
    size_t n = c->hlen + c->hinflight;
    pthread_mutex_unlock(&c->mu);
    return n;
}

static void hp_more(void *arg)
{
    struct ctx *c = arg;
    pthread_mutex_lock(&c->mu);
    int go = !c->closed && !c->hclosed_posted;
    if (go) c->refs++;
    pthread_mutex_unlock(&c->mu);
    if (!go) return;
    struct gu_batch b;
    gu_batch_init(&b);
    gu_recv_message(&b, &c->recv);
    c->t_main.fn = on_host_recv;
    c->t_main.ctx = c;
    start_batch(c, &b, &c->t_main);
}

static void hp_end(void *arg, int code, const char *msg)
{
    struct ctx *c = arg;
    pthread_mutex_lock(&c->mu);
    int first = !c->hended, stuck = 0;
    if (first) {
        c->hended = 1;
        c->hcode = code;
        free(c->hmsg);
        c->hmsg = strdup(msg ? msg : "");
        /* A send still in flight to a host that ends with an error may never finish (a
         * hung app reads nothing): cancel the call, so that its close comes now. */
        stuck = c->sending && code != GRPC_STATUS_OK;
    }
    pthread_mutex_unlock(&c->mu);
    if (stuck) grpc_call_cancel_with_status(c->call, (grpc_status_code)code, msg ? msg : "", NULL);
    else host_kick(c);
}

static void hp_release(void *arg)
{
    struct ctx *c = arg;
    pthread_mutex_lock(&c->mu);
    c->hreleased = 1;
    pthread_mutex_unlock(&c->mu);
    ctx_unref(c); /* the core's reference */
}

static void handle_host(struct ctx *c)
{
    c->t_send.fn = on_host_sent;
    c->t_send.ctx = c;
    c->t_close.fn = on_host_close;
    c->t_close.ctx = c; /* the request's reference is the close tag's now */
    c->refs++;          /* ... and this one the core's, until it releases the port */
    struct gu_batch b;
    gu_batch_init(&b);
    gu_send_initial_metadata(&b);
    c->md_sent = 1;
    gu_recv_close_on_server(&b, &c->cancelled);
    start_batch(c, &b, &c->t_close);
    struct host_port port = {c, hp_send, hp_queued, hp_more, hp_end, hp_release};
    pthread_mutex_lock(&c->mu);
    int rc = core_host_open(c->r->core, &port, &c->host);
    pthread_mutex_unlock(&c->mu);
    if (rc != 0) {
        hp_end(c, GRPC_STATUS_UNAVAILABLE, "the daemon is stopping");
        hp_release(c);
        return;
    }
    pthread_mutex_lock(&c->mu);
    int closed_early = c->hclosed_posted; /* the close came before the handle */
    c->hclosed_posted = 0;
    pthread_mutex_unlock(&c->mu);
    if (closed_early) host_post_closed(c);
}

/* ---------- reflection (bidirectional) ---------- */

static void reflect_recv(struct ctx *c, int with_md, grpc_byte_buffer *send);

static void on_reflect_recv(struct rpc *r, void *p, int ok)
{
    struct ctx *c = p;
    if (c->out) {
        grpc_byte_buffer_destroy(c->out);
        c->out = NULL;
    }
    grpc_byte_buffer *in = c->recv;
    c->recv = NULL;
    if (!ok || !in) { /* the client finished sending (or went away) */
        if (in) grpc_byte_buffer_destroy(in);
        finish(c, GRPC_STATUS_OK, NULL, NULL);
        return;
    }
    grpc_slice s = gu_bb_flatten(in);
    grpc_byte_buffer_destroy(in);
    uint8_t *out;
    size_t len;
    int rc = reflection_answer(r->refl, GRPC_SLICE_START_PTR(s), GRPC_SLICE_LENGTH(s), &out, &len);
    grpc_slice_unref(s);
    if (rc != 0) {
        finish(c, GRPC_STATUS_INVALID_ARGUMENT, "malformed ServerReflectionRequest", NULL);
        return;
    }
    reflect_recv(c, 0, gu_bb_take(out, len));
}

static void reflect_recv(struct ctx *c, int with_md, grpc_byte_buffer *send)
{
    struct gu_batch b;
    gu_batch_init(&b);
    if (with_md && !c->md_sent) {
        gu_send_initial_metadata(&b);
        c->md_sent = 1;
    }
    if (send) {
        c->out = send;
        gu_send_message(&b, send);
    }
    gu_recv_message(&b, &c->recv);
    c->t_main.fn = on_reflect_recv;
    c->t_main.ctx = c;
    start_batch(c, &b, &c->t_main);
}

/* ---------- authentication ---------- */

/* The call's `authorization` metadata against the token (API listener only). */
static enum api_auth_result authorize(struct ctx *c)
{
    const grpc_metadata *found = NULL;
    for (size_t i = 0; i < c->md.count; i++) {
        const grpc_metadata *e = &c->md.metadata[i];
        if (GRPC_SLICE_LENGTH(e->key) == 13 && !memcmp(GRPC_SLICE_START_PTR(e->key), "authorization", 13)) {
            if (found) return API_AUTH_DUPLICATE;
            found = e;
        }
    }
    if (!found) return API_AUTH_MISSING;
    return api_auth_check(&c->r->auth, GRPC_SLICE_START_PTR(found->value), GRPC_SLICE_LENGTH(found->value));
}

/* ---------- accepting calls ---------- */

static void on_request(struct rpc *r, void *p, int ok)
{
    struct ctx *c = p;
    if (!ok || atomic_load(&r->stopping)) {
        ctx_unref(c);
        return;
    }
    request_one(r, c->l, c->m); /* keep one waiting in its place */
    if (!c->l->health_only && r->auth.enabled) {
        enum api_auth_result a = authorize(c);
        if (a != API_AUTH_OK) {
            if (log_enabled(LOG_DEBUG)) {
                char *peer = grpc_call_get_peer(c->call);
                log_debug("rpc", "refused a call of %s from %s: %s", c->m ? c->m->path : "an unknown method",
                          peer ? peer : "?", api_auth_message(a));
                gpr_free(peer);
            }
            finish(c, GRPC_STATUS_UNAUTHENTICATED, api_auth_message(a), NULL);
            return;
        }
    }
    if (!c->m) {
        char text[700];
        char *method = grpc_slice_to_c_string(c->details.method);
        if (c->l->health_only)
            snprintf(text, sizeof text,
                     "unknown method %.500s: the health listener serves grpc.health.v1.Health only (use the API "
                     "address)",
                     method ? method : "?");
        else snprintf(text, sizeof text, "unknown method %.500s", method ? method : "?");
        gpr_free(method);
        finish(c, GRPC_STATUS_UNIMPLEMENTED, text, NULL);
        return;
    }
    switch (c->m->kind) {
    case M_UNARY: handle_unary(c); break;
    case M_WATCH: handle_watch(c); break;
    case M_HOST: handle_host(c); break;
    case M_HEALTH_CHECK: handle_health_check(c); break;
    case M_HEALTH_WATCH: handle_health_watch(c); break;
    case M_REFLECT: reflect_recv(c, 1, NULL); break;
    }
}

static void request_one(struct rpc *r, struct listener *l, const struct method *m)
{
    if (atomic_load(&r->stopping)) return;
    struct ctx *c = ctx_new(r, l, m);
    if (!c) {
        log_error("rpc", "out of memory: cannot accept more calls for %s", m ? m->path : "unknown methods");
        return;
    }
    c->t_req.fn = on_request;
    c->t_req.ctx = c;
    grpc_call_error e;
    if (m) {
        int with_payload = m->kind != M_REFLECT && m->kind != M_HOST;
        e = grpc_server_request_registered_call(l->server, m->handle, &c->call, &c->deadline, &c->md,
                                                with_payload ? &c->payload : NULL, r->cq, r->cq, &c->t_req);
    } else {
        e = grpc_server_request_call(l->server, &c->call, &c->details, &c->md, r->cq, r->cq, &c->t_req);
    }
    if (e != GRPC_CALL_OK) {
        log_error("rpc", "cannot request calls: grpc error %d", (int)e);
        ctx_unref(c);
    }
}

static void on_shutdown(struct rpc *r, void *p, int ok)
{
    (void)p;
    (void)ok;
    atomic_fetch_add(&r->shutdown_done, 1);
}

static void *cq_thread(void *arg)
{
    struct rpc *r = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(r->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        struct tag *t = ev.tag;
        t->fn(r, t->ctx, ev.success);
    }
    return NULL;
}

/* ---------- listeners ---------- */

/* The API's credentials: TLS (and mTLS with a client CA) when configured, else
 * plaintext.  NULL with the reason in err. */
static grpc_server_credentials *api_credentials(const struct config *cfg, char *err, size_t errlen)
{
    if (!cfg->tls_cert[0]) return grpc_insecure_server_credentials_create();
    char *cert = NULL, *key = NULL, *ca = NULL;
    size_t n_cert = 0, n_key = 0, n_ca = 0;
    grpc_server_credentials *creds = NULL;
    if (api_read_file("tls_cert", cfg->tls_cert, 1 << 20, &cert, &n_cert, err, errlen) ||
        api_read_file("tls_key", cfg->tls_key, 1 << 20, &key, &n_key, err, errlen) ||
        (cfg->tls_client_ca[0] && api_read_file("tls_client_ca", cfg->tls_client_ca, 1 << 20, &ca, &n_ca, err, errlen)))
        goto out;
    grpc_ssl_pem_key_cert_pair pair = {key, cert};
    /* With a client CA, a client without a certificate signed by it cannot finish
     * the TLS handshake: no call of its ever reaches us. */
    creds = grpc_ssl_server_credentials_create_ex(ca, &pair, 1,
                                                  ca ? GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY
                                                     : GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE,
                                                  NULL);
    if (!creds) snprintf(err, errlen, "cannot make TLS credentials from %s and %s", cfg->tls_cert, cfg->tls_key);
out:
    if (key) sodium_memzero(key, n_key);
    free(cert);
    free(key);
    free(ca);
    return creds;
}

/* The socket file of listen = unix:PATH (PATH may start with "//", as in unix:///run/x). */
static const char *unix_path(const char *listen)
{
    if (strncmp(listen, "unix:", 5)) return NULL;
    const char *p = listen + 5;
    if (!strncmp(p, "//", 2)) p += 2;
    return p;
}

/* Before binding a unix socket: a stale socket file is removed, anything else at
 * the path (a file, a directory, a socket someone still serves on) is refused. */
static int unix_prepare(const char *path, char *err, size_t errlen)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno == ENOENT) return 0;
        snprintf(err, errlen, "cannot listen on unix:%s: %s", path, strerror(errno));
        return -1;
    }
    if (!S_ISSOCK(st.st_mode)) {
        snprintf(err, errlen,
                 "cannot listen on unix:%s: the path exists and is not a socket (remove it or pick another)", path);
        return -1;
    }
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof sa.sun_path) {
        snprintf(err, errlen, "cannot listen on unix:%s: the path is longer than %zu bytes", path,
                 sizeof sa.sun_path - 1);
        return -1;
    }
    memcpy(sa.sun_path, path, strlen(path) + 1);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        snprintf(err, errlen, "socket: %s", strerror(errno));
        return -1;
    }
    /* Only a refused connection means nobody serves there (EAGAIN: a live server with
     * a full backlog). */
    int live = connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0 || errno != ECONNREFUSED;
    close(fd);
    if (live) {
        snprintf(err, errlen, "cannot listen on unix:%s: another process serves on that socket", path);
        return -1;
    }
    if (unlink(path) != 0) {
        snprintf(err, errlen, "cannot remove the stale socket %s: %s", path, strerror(errno));
        return -1;
    }
    log_info("rpc", "removed the stale socket %s", path);
    return 0;
}

/* After binding: the socket's group as configured (its mode came with the umask). */
static int unix_secure(const struct config *cfg, const char *path, char *err, size_t errlen)
{
    if (cfg->api_socket_group[0]) {
        errno = 0;
        struct group *g = getgrnam(cfg->api_socket_group);
        if (!g) {
            snprintf(err, errlen, "api_socket_group: no group named '%s'", cfg->api_socket_group);
            return -1;
        }
        if (lchown(path, (uid_t)-1, g->gr_gid) != 0) { /* never through a link put there since */
            snprintf(err, errlen, "cannot give %s to group %s: %s", path, cfg->api_socket_group, strerror(errno));
            return -1;
        }
    }
    return 0;
}

/* Creates a server on the shared queue with its methods registered. */
static void listener_init(struct rpc *r, struct listener *l, struct method *methods, size_t n, int health_only,
                          grpc_channel_args *args)
{
    l->server = grpc_server_create(args, NULL);
    l->methods = methods;
    l->n_methods = n;
    l->health_only = health_only;
    grpc_server_register_completion_queue(l->server, r->cq, NULL);
    for (size_t i = 0; i < n; i++) {
        grpc_server_register_method_payload_handling h = methods[i].kind == M_REFLECT || methods[i].kind == M_HOST
            ? GRPC_SRM_PAYLOAD_NONE
            : GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER;
        methods[i].handle = grpc_server_register_method(l->server, methods[i].path, NULL, h, 0);
    }
}

/* Shuts down and destroys a server that never served (no thread reads the queue yet). */
static void listener_discard(struct rpc *r, struct listener *l)
{
    struct tag t = {NULL, NULL};
    grpc_server_shutdown_and_notify(l->server, r->cq, &t);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(r->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE || ev.tag == &t) break;
    }
    grpc_server_destroy(l->server);
}

static void listener_serve(struct rpc *r, struct listener *l)
{
    grpc_server_start(l->server);
    for (size_t i = 0; i < l->n_methods; i++)
        for (int k = 0; k < REQUESTS_PER_METHOD; k++) request_one(r, l, &l->methods[i]);
    request_one(r, l, NULL);
}

/* Binds the API listener; the bound port (1 for a unix socket), or 0 with err. */
static int bind_api(struct rpc *r, char *err, size_t errlen)
{
    const struct config *cfg = r->cfg;
    const char *path = unix_path(cfg->listen);
    if (path && unix_prepare(path, err, errlen)) return 0;
    grpc_server_credentials *creds = api_credentials(cfg, err, errlen);
    if (!creds) return 0;
    /* The socket file is created with its final mode through the umask (the umask is
     * the process's, but no other thread runs yet that creates files): no chmod
     * afterwards, which would follow a link put at the path meanwhile. */
    mode_t old = path ? umask((mode_t)(0777 & ~cfg->api_socket_mode)) : 0;
    int port = grpc_server_add_http2_port(r->api.server, cfg->listen, creds);
    if (path) umask(old);
    grpc_server_credentials_release(creds);
    if (port <= 0) {
        snprintf(err, errlen, "cannot listen on %s (address in use, or not a HOST:PORT or unix:PATH?%s)", cfg->listen,
                 cfg->tls_cert[0] ? " or are tls_cert and tls_key not a PEM certificate and its key?" : "");
        return 0;
    }
    if (path && unix_secure(cfg, path, err, errlen)) return 0;
    if (path) {
        if (path[0] == '/') {
            snprintf(r->address, sizeof r->address, "unix:%s", path);
        } else {
            char cwd[PATH_MAX];
            if (!getcwd(cwd, sizeof cwd)) snprintf(cwd, sizeof cwd, ".");
            snprintf(r->address, sizeof r->address, "unix:%s/%s", cwd, path);
        }
    } else {
        const char *colon = strrchr(cfg->listen, ':');
        snprintf(r->address, sizeof r->address, "%.*s:%d", colon ? (int)(colon - cfg->listen) : 0, cfg->listen, port);
    }
    return port;
}

struct rpc *rpc_start(const struct config *cfg, struct core *core, int *port, char *err, size_t errlen)
{
    struct rpc *r = calloc(1, sizeof *r);
    if (!r) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    r->cfg = cfg;
    r->core = core;
    memcpy(r->methods, methods_template, sizeof methods_template);
    memcpy(r->hmethods, health_template, sizeof health_template);
    if (cfg->api_token_file[0] && api_auth_load(&r->auth, cfg->api_token_file, err, errlen)) {
        free(r);
        return NULL;
    }
    static const char *const services[] = {
        SUPERVISOR_SERVICE,
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        NULL,
    };
    r->refl = reflection_new(distsup_descriptor_set, distsup_descriptor_set_len, services, err, errlen);
    if (!r->refl) {
        free(r);
        return NULL;
    }
    /* grpc reads a call's whole first message before the call reaches us (and its
     * token is checked): what clients that are not yet authenticated can make the
     * daemon hold is bounded by a resource quota and a stream limit per connection. */
    size_t max_request = cfg->max_payload * 4 + (1 << 20);
    grpc_resource_quota *quota = grpc_resource_quota_create("distsup-api");
    grpc_resource_quota_resize(quota, max_request * 8 > API_QUOTA ? max_request * 8 : API_QUOTA);
    grpc_arg args[4];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    /* Room for the largest valid request; our own checks answer INVALID_ARGUMENT
     * above max_payload_bytes, grpc itself answers RESOURCE_EXHAUSTED above this. */
    args[0].value.integer = (int)max_request;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = -1;
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_MAX_CONCURRENT_STREAMS;
    args[2].value.integer = API_STREAMS;
    args[3].type = GRPC_ARG_POINTER;
    args[3].key = GRPC_ARG_RESOURCE_QUOTA;
    args[3].value.pointer.p = quota;
    args[3].value.pointer.vtable = grpc_resource_quota_arg_vtable();
    grpc_channel_args ch_args = {4, args};
    r->cq = grpc_completion_queue_create_for_next(NULL);
    listener_init(r, &r->api, r->methods, N_METHODS, 0, &ch_args);
    grpc_resource_quota_unref(quota);
    r->n_servers = 1;
    *port = bind_api(r, err, errlen);
    if (*port > 0 && cfg->health_listen[0]) {
        /* health requests are tiny, and nobody is authenticated here */
        grpc_resource_quota *hq = grpc_resource_quota_create("distsup-health");
        grpc_resource_quota_resize(hq, HEALTH_QUOTA);
        grpc_arg hargs[3];
        hargs[0].type = GRPC_ARG_INTEGER;
        hargs[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
        hargs[0].value.integer = 4096;
        hargs[1].type = GRPC_ARG_INTEGER;
        hargs[1].key = GRPC_ARG_MAX_CONCURRENT_STREAMS;
        hargs[1].value.integer = 16;
        hargs[2].type = GRPC_ARG_POINTER;
        hargs[2].key = GRPC_ARG_RESOURCE_QUOTA;
        hargs[2].value.pointer.p = hq;
        hargs[2].value.pointer.vtable = grpc_resource_quota_arg_vtable();
        grpc_channel_args hch = {3, hargs};
        listener_init(r, &r->health, r->hmethods, N_HEALTH, 1, &hch);
        grpc_resource_quota_unref(hq);
        r->n_servers = 2;
        grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
        r->health_port = grpc_server_add_http2_port(r->health.server, cfg->health_listen, creds);
        grpc_server_credentials_release(creds);
        if (r->health_port <= 0) {
            snprintf(err, errlen, "cannot listen on %s for health checks (address in use, or not a HOST:PORT?)",
                     cfg->health_listen);
            *port = 0;
        }
    }
    if (*port <= 0) {
        /* grpc destroys a server with a bound port only after its shutdown */
        listener_discard(r, &r->api);
        if (r->health.server) listener_discard(r, &r->health);
        gu_cq_discard(r->cq);
        reflection_free(r->refl);
        sodium_memzero(&r->auth, sizeof r->auth);
        free(r);
        return NULL;
    }
    listener_serve(r, &r->api);
    if (r->health.server) listener_serve(r, &r->health);
    if (!r->auth.enabled && !cfg->tls_client_ca[0]) {
        if (!config_listen_is_loopback(cfg->listen))
            log_warn("rpc",
                     "the API on %s has no authentication (--insecure-api): anyone who reaches it may run any "
                     "command as this daemon's user",
                     cfg->listen);
        else if (!unix_path(cfg->listen))
            log_info("rpc", "the API on %s has no authentication: every local user may use it (see docs/security.md)",
                     cfg->listen);
    }
    r->n_threads = cfg->threads;
    r->threads = calloc(r->n_threads, sizeof *r->threads);
    for (unsigned i = 0; r->threads && i < r->n_threads; i++) {
        if (pthread_create(&r->threads[i], NULL, cq_thread, r) != 0) {
            r->n_threads = i;
            break;
        }
    }
    if (!r->threads || r->n_threads == 0) {
        snprintf(err, errlen, "cannot start the completion-queue threads");
        rpc_stop(r);
        rpc_free(r);
        return NULL;
    }
    return r;
}

const char *rpc_address(const struct rpc *r) { return r->address; }
int rpc_health_port(const struct rpc *r) { return r->health_port; }

void rpc_stop(struct rpc *r)
{
    if (atomic_exchange(&r->stopping, 1)) return;
    struct listener *ls[2] = {&r->api, &r->health};
    for (int i = 0; i < 2; i++) {
        if (!ls[i]->server) continue;
        r->t_shutdown[i].fn = on_shutdown;
        r->t_shutdown[i].ctx = NULL;
        grpc_server_shutdown_and_notify(ls[i]->server, r->cq, &r->t_shutdown[i]);
        grpc_server_cancel_all_calls(ls[i]->server);
    }
}

void rpc_free(struct rpc *r)
{
    /* Calls parked in the core were answered by core_shutdown; wait for grpc to
     * report the servers down, then drain the queue and stop the threads. */
    for (int i = 0; i < 1000 && atomic_load(&r->shutdown_done) < r->n_servers; i++) {
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
    grpc_server_destroy(r->api.server);
    if (r->health.server) grpc_server_destroy(r->health.server);
    grpc_completion_queue_shutdown(r->cq);
    for (unsigned i = 0; i < r->n_threads; i++) pthread_join(r->threads[i], NULL);
    grpc_completion_queue_destroy(r->cq);
    long left = atomic_load(&r->live_ctx);
    if (left) log_warn("rpc", "%ld call contexts still alive at exit", left);
    free(r->threads);
    reflection_free(r->refl);
    sodium_memzero(&r->auth, sizeof r->auth);
    free(r);
}

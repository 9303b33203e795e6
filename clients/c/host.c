/* distsup host library: see host.h for the contract, docs/hosting.md for the protocol.
 *
 * One dispatcher thread (the caller of ds_host_run) owns everything but the stop
 * flag and the current call: it waits on one completion queue for the stream's
 * three kinds of events (a message down, a message up sent, the status), runs the
 * callbacks of the frames of each message down in order, and collects what they
 * produce in one output buffer that goes up as one HostUp as soon as the previous
 * one has been sent.  Frames are kept encoded: a HostUp is the concatenation of its
 * fields, so the buffer is a HostUp in the making (field 2 per frame, field 3 per
 * pong) and can be cut at any field boundary. */
#include "host.h"

#include "connect.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "distsup/v1/supervisor.pb-c.h"

#define HOST_METHOD "/distsup.v1.Supervisor/Host"
#define MAX_KINDS 64
#define KIND_NAME_MAX 200
#define UP_MAX (1u << 20)            /* bytes of frames in one HostUp (one frame may be more) */
#define FIELD_FRAMES 0x12            /* HostUp.frames: field 2, length-delimited */
#define FIELD_PONG 0x1a              /* HostUp.pong: field 3, length-delimited */
#define DEFAULT_DAEMON_TIMEOUT 10000 /* ms of silence before the welcome's timeout_ms is known */

struct kind {
    char *name;
    struct ds_host_kind vt;
    uint32_t capacity;
};

struct ds_host_reply {
    uint8_t *payload;
    size_t len;
    char *error;
    unsigned code;
};

struct ds_host_child {
    uint64_t num;
    const struct kind *kind;
    void *user;
    const char *name, *id, *supervisor, *node; /* in strs */
    const char *traceparent, *tracestate;      /* the message's, during a callback */
    char *stop_reason;                         /* set by ds_host_child_stop */
    bool stop, stop_normal;
    char strs[];
};

struct buf {
    uint8_t *data;
    size_t len, cap;
};

struct ds_host {
    char *target;
    grpc_channel *channel;
    grpc_metadata auth; /* "authorization: Bearer TOKEN" */
    size_t n_md;
    uint32_t welcome_ms; /* a new session's wait for the welcome */
    char *name;
    char **label_k, **label_v;
    size_t n_labels;
    void *arg;
    void (*on_attach)(void *arg, const char *node, const char *session);
    void (*on_detach)(void *arg, int code, const char *message);
    uint32_t backoff_min, backoff_max;

    struct kind kinds[MAX_KINDS];
    size_t n_kinds;

    /* shared with ds_host_stop */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    atomic_bool stop;
    atomic_bool running;
    grpc_call *call; /* the session's, under mu */

    /* the dispatcher's */
    ds_host_child **slots; /* open addressing, linear probing, by child number */
    size_t cap;
    atomic_size_t n_children;
    struct buf out;
    int sess_code; /* a reason to end the session found here (DS_OK: none) */
    char sess_msg[DS_ERROR_MESSAGE_MAX];
};

/* ---- errors and small helpers ------------------------------------------------- */

static uint64_t now_ms(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) abort(); /* cannot fail with this clock */
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static gpr_timespec at_ms(uint64_t ms_from_now)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis((int64_t)ms_from_now, GPR_TIMESPAN));
}

/* The mutex and condition are process-private defaults: an error here means memory
 * corruption, and nothing sensible can follow. */
static void lock(pthread_mutex_t *mu)
{
    int e = pthread_mutex_lock(mu);
    if (e != 0) {
        fprintf(stderr, "distsup host: pthread_mutex_lock: %s\n", strerror(e));
        abort();
    }
}

static void unlock(pthread_mutex_t *mu)
{
    int e = pthread_mutex_unlock(mu);
    if (e != 0) {
        fprintf(stderr, "distsup host: pthread_mutex_unlock: %s\n", strerror(e));
        abort();
    }
}

/* Cancels a call (a no-op on one that has ended). */
static void cancel_call(grpc_call *call)
{
    grpc_call_error e = grpc_call_cancel(call, NULL);
    if (e != GRPC_CALL_OK) fprintf(stderr, "distsup host: grpc_call_cancel: %s\n", grpc_call_error_to_string(e));
}

/* ---- host ---------------------------------------------------------------------- */

int ds_host_new(const char *target, const ds_host_options *opts, ds_host **out, ds_error *err)
{
    if (out == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_host_new: out is NULL");
    *out = NULL;
    ds_host_options none = {0};
    if (opts == NULL) opts = &none;
    if (opts->n_labels && opts->labels == NULL)
        return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_host_new: NULL labels with a count");
    if (ds_empty(target)) target = DS_DEFAULT_ADDRESS;
    ds_host *h = calloc(1, sizeof *h);
    if (h == NULL) return ds_err_set(err, DS_RESOURCE_EXHAUSTED, "out of memory");
    int rc = DS_OK;
    pthread_condattr_t ca;
    if (pthread_condattr_init(&ca) != 0) {
        free(h);
        return ds_err_set(err, DS_INTERNAL, "pthread_condattr_init failed");
    }
    int e1 = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    int e2 = e1 == 0 ? pthread_cond_init(&h->cv, &ca) : e1;
    (void)pthread_condattr_destroy(&ca); /* cannot fail on an initialised attribute */
    if (e2 != 0) {
        free(h);
        return ds_err_set(err, DS_INTERNAL, "pthread_cond_init: %s", strerror(e2));
    }
    if ((e1 = pthread_mutex_init(&h->mu, NULL)) != 0) {
        (void)pthread_cond_destroy(&h->cv);
        free(h);
        return ds_err_set(err, DS_INTERNAL, "pthread_mutex_init: %s", strerror(e1));
    }
    atomic_init(&h->stop, false);
    atomic_init(&h->running, false);
    atomic_init(&h->n_children, 0);
    grpc_init(); /* balanced in ds_host_free, which now also undoes the rest */
    h->welcome_ms = opts->connect.timeout_ms ? opts->connect.timeout_ms : DEFAULT_DAEMON_TIMEOUT;
    h->arg = opts->arg;
    h->on_attach = opts->on_attach;
    h->on_detach = opts->on_detach;
    h->backoff_min = opts->backoff_min_ms ? opts->backoff_min_ms : 100;
    h->backoff_max = opts->backoff_max_ms ? opts->backoff_max_ms : 5000;
    if (h->backoff_max < h->backoff_min) h->backoff_max = h->backoff_min;
    h->target = ds_strdup0(target);
    h->name = ds_strdup0(opts->name);
    if (!h->target || !h->name) {
        rc = ds_err_set(err, DS_RESOURCE_EXHAUSTED, "out of memory");
        goto bad;
    }
    if (opts->n_labels) {
        h->label_k = calloc(opts->n_labels, sizeof *h->label_k);
        h->label_v = calloc(opts->n_labels, sizeof *h->label_v);
        if (!h->label_k || !h->label_v) {
            rc = ds_err_set(err, DS_RESOURCE_EXHAUSTED, "out of memory");
            goto bad;
        }
        h->n_labels = opts->n_labels;
        for (size_t i = 0; i < opts->n_labels; i++) {
            h->label_k[i] = ds_strdup0(opts->labels[i].key);
            h->label_v[i] = ds_strdup0(opts->labels[i].value);
            if (!h->label_k[i] || !h->label_v[i]) {
                rc = ds_err_set(err, DS_RESOURCE_EXHAUSTED, "out of memory");
                goto bad;
            }
        }
    }
    if ((rc = ds_token_metadata(&opts->connect, &h->auth, &h->n_md, err)) != DS_OK) goto bad;
    grpc_channel_credentials *creds = ds_channel_credentials(&opts->connect, err, &rc);
    if (creds == NULL) goto bad;
    /* gRPC's own reconnect backoff (1 s growing to 120 s by default) would hold a
     * session attempt back long after the daemon is back: make it ours. */
    grpc_arg args[5];
    memset(args, 0, sizeof args);
    args[0].type = GRPC_ARG_STRING;
    args[0].key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING;
    args[0].value.string = (char *)"distsup-c-host/1";
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = (char *)GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[1].value.integer = -1; /* the daemon's batches are as large as they are */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = (char *)GRPC_ARG_INITIAL_RECONNECT_BACKOFF_MS;
    args[2].value.integer = (int)h->backoff_min;
    args[3].type = GRPC_ARG_INTEGER;
    args[3].key = (char *)GRPC_ARG_MIN_RECONNECT_BACKOFF_MS;
    args[3].value.integer = (int)h->backoff_min;
    args[4].type = GRPC_ARG_INTEGER;
    args[4].key = (char *)GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[4].value.integer = (int)h->backoff_max;
    grpc_channel_args chargs = {.num_args = 5, .args = args};
    h->channel = grpc_channel_create(h->target, creds, &chargs);
    grpc_channel_credentials_release(creds);
    if (h->channel == NULL) {
        rc = ds_err_set(err, DS_INVALID_ARGUMENT, "cannot create a channel to %s", h->target);
        goto bad;
    }
    *out = h;
    return ds_err_clear(err);
bad:
    ds_host_free(h);
    return rc;
}

static int check_kind_name(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > KIND_NAME_MAX) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c <= 0x20 || c == 0x7f) return -1;
    }
    return 0;
}

int ds_host_register(ds_host *h, const char *kind, const struct ds_host_kind *vt, uint32_t capacity)
{
    if (h == NULL || kind == NULL || vt == NULL) return DS_INVALID_ARGUMENT;
    if (atomic_load(&h->running)) return DS_FAILED_PRECONDITION;
    if (check_kind_name(kind) != 0 || h->n_kinds == MAX_KINDS) return DS_INVALID_ARGUMENT;
    for (size_t i = 0; i < h->n_kinds; i++)
        if (strcmp(h->kinds[i].name, kind) == 0) return DS_INVALID_ARGUMENT;
    char *name = ds_strdup0(kind);
    if (name == NULL) return DS_RESOURCE_EXHAUSTED;
    h->kinds[h->n_kinds].name = name;
    h->kinds[h->n_kinds].vt = *vt;
    h->kinds[h->n_kinds].capacity = capacity;
    h->n_kinds++;
    return DS_OK;
}

static void release_child(ds_host *h, ds_host_child *c);

void ds_host_free(ds_host *h)
{
    if (h == NULL) return;
    for (size_t i = 0; i < h->cap; i++)
        if (h->slots[i]) release_child(h, h->slots[i]);
    free(h->slots);
    free(h->out.data);
    for (size_t i = 0; i < h->n_kinds; i++) free(h->kinds[i].name);
    for (size_t i = 0; i < h->n_labels; i++) {
        if (h->label_k) free(h->label_k[i]);
        if (h->label_v) free(h->label_v[i]);
    }
    free(h->label_k);
    free(h->label_v);
    if (h->channel) grpc_channel_destroy(h->channel);
    if (h->n_md) grpc_slice_unref(h->auth.value);
    free(h->target);
    free(h->name);
    (void)pthread_mutex_destroy(&h->mu); /* nobody holds or waits on them now */
    (void)pthread_cond_destroy(&h->cv);
    free(h);
    grpc_shutdown();
}

void ds_host_stop(ds_host *h)
{
    if (h == NULL) return;
    lock(&h->mu);
    atomic_store(&h->stop, true);
    if (h->call) cancel_call(h->call);
    (void)pthread_cond_broadcast(&h->cv); /* cannot fail on an initialised condition */
    unlock(&h->mu);
}

size_t ds_host_child_count(const ds_host *h) { return h ? atomic_load(&((ds_host *)h)->n_children) : 0; }

/* ---- the children's table -------------------------------------------------------- */

static size_t home(uint64_t num, size_t cap)
{
    num ^= num >> 31;
    num *= 0x9e3779b97f4a7c15ull;
    return (size_t)(num >> 17) & (cap - 1);
}

static ds_host_child *table_get(const ds_host *h, uint64_t num)
{
    if (h->cap == 0) return NULL;
    for (size_t i = home(num, h->cap);; i = (i + 1) & (h->cap - 1)) {
        if (h->slots[i] == NULL) return NULL;
        if (h->slots[i]->num == num) return h->slots[i];
    }
}

static void table_insert(ds_host_child **slots, size_t cap, ds_host_child *c)
{
    size_t i = home(c->num, cap);
    while (slots[i]) i = (i + 1) & (cap - 1);
    slots[i] = c;
}

/* 0, or -1 when out of memory (the table is unchanged). */
static int table_put(ds_host *h, ds_host_child *c)
{
    size_t n = atomic_load(&h->n_children);
    if ((n + 1) * 2 > h->cap) {
        size_t cap = h->cap ? h->cap * 2 : 64;
        ds_host_child **s = calloc(cap, sizeof *s);
        if (s == NULL) return -1;
        for (size_t i = 0; i < h->cap; i++)
            if (h->slots[i]) table_insert(s, cap, h->slots[i]);
        free(h->slots);
        h->slots = s;
        h->cap = cap;
    }
    table_insert(h->slots, h->cap, c);
    atomic_store(&h->n_children, n + 1);
    return 0;
}

static void table_del(ds_host *h, uint64_t num)
{
    if (h->cap == 0) return;
    size_t mask = h->cap - 1, i = home(num, h->cap);
    while (h->slots[i] && h->slots[i]->num != num) i = (i + 1) & mask;
    if (h->slots[i] == NULL) return;
    h->slots[i] = NULL;
    /* backward shift: pull up every later entry of the run that may live at i */
    for (size_t j = (i + 1) & mask; h->slots[j]; j = (j + 1) & mask) {
        size_t k = home(h->slots[j]->num, h->cap);
        bool movable = i <= j ? (k <= i || k > j) : (k <= i && k > j);
        if (movable) {
            h->slots[i] = h->slots[j];
            h->slots[j] = NULL;
            i = j;
        }
    }
    atomic_store(&h->n_children, atomic_load(&h->n_children) - 1);
}

static void release_child(ds_host *h, ds_host_child *c)
{
    (void)h;
    if (c->kind->vt.release) c->kind->vt.release(c->kind->vt.arg, c->user);
    free(c->stop_reason);
    free(c);
}

/* Forgets a child: out of the table, released. */
static void forget(ds_host *h, ds_host_child *c)
{
    table_del(h, c->num);
    release_child(h, c);
}

static void drop_all(ds_host *h)
{
    for (size_t i = 0; i < h->cap; i++) {
        if (h->slots[i]) {
            release_child(h, h->slots[i]);
            h->slots[i] = NULL;
        }
    }
    atomic_store(&h->n_children, 0);
}

/* ---- output: a HostUp in the making ------------------------------------------------ */

/* Ends the session: an error found here (the first one wins). */
static void session_fail(ds_host *h, int code, const char *fmt, ...)
{
    if (h->sess_code == DS_OK) {
        h->sess_code = code;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(h->sess_msg, sizeof h->sess_msg, fmt, ap);
        va_end(ap);
        if (n < 0) h->sess_msg[0] = '\0';
    }
    lock(&h->mu);
    if (h->call) cancel_call(h->call);
    unlock(&h->mu);
}

static size_t varint(uint8_t *p, uint64_t v)
{
    size_t n = 0;
    while (v >= 0x80) {
        p[n++] = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    p[n++] = (uint8_t)v;
    return n;
}

/* Appends one length-delimited field (tag, length, the packed message). */
static void put_field(ds_host *h, uint8_t tag, const ProtobufCMessage *m)
{
    if (h->sess_code != DS_OK) return;
    size_t n = protobuf_c_message_get_packed_size(m);
    struct buf *b = &h->out;
    size_t need = b->len + 1 + 10 + n;
    if (need > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < need) cap *= 2;
        uint8_t *d = realloc(b->data, cap);
        if (d == NULL) {
            session_fail(h, DS_RESOURCE_EXHAUSTED, "out of memory for %zu bytes to send", n);
            return;
        }
        b->data = d;
        b->cap = cap;
    }
    b->data[b->len++] = tag;
    b->len += varint(b->data + b->len, n);
    b->len += protobuf_c_message_pack(m, b->data + b->len);
}

static void up_frame(ds_host *h, uint64_t num, Distsup__V1__ChildFrame *cf)
{
    Distsup__V1__HostFrame f = DISTSUP__V1__HOST_FRAME__INIT;
    f.child = num;
    f.frame = cf;
    put_field(h, FIELD_FRAMES, &f.base);
}

static void up_ready(ds_host *h, uint64_t num)
{
    Distsup__V1__Ready r = DISTSUP__V1__READY__INIT;
    Distsup__V1__ChildFrame cf = DISTSUP__V1__CHILD_FRAME__INIT;
    cf.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_READY;
    cf.ready = &r;
    up_frame(h, num, &cf);
}

static void up_exit(ds_host *h, uint64_t num, bool normal, const char *reason)
{
    Distsup__V1__HostExit e = DISTSUP__V1__HOST_EXIT__INIT;
    e.normal = normal;
    e.reason = (char *)(reason ? reason : "");
    Distsup__V1__HostFrame f = DISTSUP__V1__HOST_FRAME__INIT;
    f.child = num;
    f.exit = &e;
    put_field(h, FIELD_FRAMES, &f.base);
}

static void up_pong(ds_host *h, uint64_t seq)
{
    Distsup__V1__HostPong p = DISTSUP__V1__HOST_PONG__INIT;
    p.seq = seq;
    put_field(h, FIELD_PONG, &p.base);
}

/* The child's get_state, sent as its State (nothing without one). */
static void up_state(ds_host *h, ds_host_child *c)
{
    if (!c->kind->vt.get_state) return;
    size_t len = 0;
    uint8_t *st = c->kind->vt.get_state(c->user, &len, c);
    if (st == NULL) return;
    Distsup__V1__StateFrame s = DISTSUP__V1__STATE_FRAME__INIT;
    s.state.data = st;
    s.state.len = len;
    Distsup__V1__ChildFrame cf = DISTSUP__V1__CHILD_FRAME__INIT;
    cf.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_STATE;
    cf.state = &s;
    up_frame(h, c->num, &cf);
    free(st);
}

/* The length of the first fields of out that fit in UP_MAX bytes (at least one). */
static size_t up_chunk(const struct buf *b)
{
    size_t at = 0;
    while (at < b->len) {
        size_t p = at + 1, n = 0;
        for (unsigned shift = 0; p < b->len; shift += 7) {
            uint8_t byte = b->data[p++];
            n |= (size_t)(byte & 0x7f) << shift;
            if (!(byte & 0x80)) break;
        }
        size_t end = p + n;
        if (at > 0 && end > UP_MAX) break;
        at = end;
    }
    return at;
}

/* ---- running children ------------------------------------------------------------- */

static const struct kind *find_kind(const ds_host *h, const char *name)
{
    for (size_t i = 0; i < h->n_kinds; i++)
        if (strcmp(h->kinds[i].name, name) == 0) return &h->kinds[i];
    return NULL;
}

static void set_trace(ds_host_child *c, const char *parent, const char *state)
{
    c->traceparent = parent ? parent : "";
    c->tracestate = parent && parent[0] && state ? state : "";
}

/* After a callback: the child asked to stop.  Returns true when it is gone. */
static bool after_callback(ds_host *h, ds_host_child *c)
{
    set_trace(c, "", "");
    if (!c->stop) return false;
    up_state(h, c);
    up_exit(h, c->num, c->stop_normal, c->stop_reason ? c->stop_reason : "stopped");
    forget(h, c);
    return true;
}

/* A callback "raised": an abnormal exit, no State (as a crashed process hands none). */
static void crashed(ds_host *h, ds_host_child *c, const char *what, int rc)
{
    char reason[300];
    if (c->stop_reason) snprintf(reason, sizeof reason, "%s failed: %s", what, c->stop_reason);
    else snprintf(reason, sizeof reason, "%s failed (returned %d)", what, rc);
    up_exit(h, c->num, false, reason);
    forget(h, c);
}

static void start_child(ds_host *h, uint64_t num, const char *kind, const Distsup__V1__Init *in)
{
    const struct kind *k = find_kind(h, kind ? kind : "");
    if (k == NULL) {
        char reason[300];
        snprintf(reason, sizeof reason, "this host does not run kind \"%.200s\"", kind ? kind : "");
        up_exit(h, num, false, reason);
        return;
    }
    const char *s[4] = {in->name, in->id, in->supervisor, in->node};
    size_t len[4], total = 0;
    for (int i = 0; i < 4; i++) {
        if (s[i] == NULL) s[i] = "";
        len[i] = strlen(s[i]) + 1;
        total += len[i];
    }
    ds_host_child *c = calloc(1, sizeof *c + total);
    if (c == NULL) {
        up_exit(h, num, false, "the host is out of memory");
        return;
    }
    char *p = c->strs;
    const char **dst[4] = {&c->name, &c->id, &c->supervisor, &c->node};
    for (int i = 0; i < 4; i++) {
        memcpy(p, s[i], len[i]);
        *dst[i] = p;
        p += len[i];
    }
    c->num = num;
    c->kind = k;
    set_trace(c, "", "");
    struct ds_host_init hi = {
        .supervisor = c->supervisor,
        .name = c->name,
        .id = c->id,
        .node = c->node,
        .kind = k->name,
        .init = in->init.data,
        .init_len = in->init.len,
        .state = in->state.len ? in->state.data : NULL,
        .state_len = in->state.len,
    };
    void *user = NULL;
    int rc = k->vt.init ? k->vt.init(k->vt.arg, &hi, &user, c) : 0;
    if (rc != 0) {
        char reason[300];
        if (c->stop_reason) snprintf(reason, sizeof reason, "init failed: %s", c->stop_reason);
        else snprintf(reason, sizeof reason, "init failed (returned %d)", rc);
        up_exit(h, num, false, reason);
        free(c->stop_reason);
        free(c);
        return;
    }
    c->user = user;
    if (table_put(h, c) != 0) {
        up_exit(h, num, false, "the host is out of memory");
        release_child(h, c);
        return;
    }
    up_ready(h, num);
    after_callback(h, c);
}

static void do_call(ds_host *h, ds_host_child *c, const Distsup__V1__CallFrame *call)
{
    ds_host_reply r = {0};
    int rc = 0;
    set_trace(c, call->traceparent, call->tracestate);
    if (c->kind->vt.handle_call) rc = c->kind->vt.handle_call(c->user, call->payload.data, call->payload.len, &r, c);
    else if (ds_host_reply_error(&r, DS_UNIMPLEMENTED, "this child does not handle calls") != 0) rc = -1;
    Distsup__V1__Reply reply = DISTSUP__V1__REPLY__INIT;
    reply.ref = call->ref;
    if (r.error) {
        reply.error = r.error;
        reply.code = r.code;
    } else if (rc != 0) {
        reply.error = "handle_call failed";
        reply.code = DS_UNKNOWN;
    } else {
        reply.payload.data = r.payload;
        reply.payload.len = r.len;
    }
    Distsup__V1__ChildFrame cf = DISTSUP__V1__CHILD_FRAME__INIT;
    cf.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_REPLY;
    cf.reply = &reply;
    up_frame(h, c->num, &cf);
    free(r.payload);
    free(r.error);
    after_callback(h, c);
}

static void do_message(ds_host *h, ds_host_child *c, bool cast, const ProtobufCBinaryData *payload, const char *tp,
                       const char *ts)
{
    int (*fn)(void *, const uint8_t *, size_t, ds_host_child *) =
        cast ? c->kind->vt.handle_cast : c->kind->vt.handle_info;
    if (fn == NULL) return;
    set_trace(c, tp, ts);
    int rc = fn(c->user, payload->data, payload->len, c);
    if (rc != 0) crashed(h, c, cast ? "handle_cast" : "handle_info", rc);
    else after_callback(h, c);
}

static void do_terminate(ds_host *h, ds_host_child *c, const char *reason)
{
    if (c->kind->vt.terminate) c->kind->vt.terminate(c->user, reason ? reason : "", c);
    up_state(h, c);
    up_exit(h, c->num, true, "");
    forget(h, c);
}

static void handle_frame(ds_host *h, const Distsup__V1__HostFrame *f)
{
    ds_host_child *c = table_get(h, f->child);
    if (f->drop) {
        if (c) forget(h, c);
        return;
    }
    const Distsup__V1__ChildFrame *cf = f->frame;
    if (cf == NULL) return;
    switch (cf->frame_case) {
    case DISTSUP__V1__CHILD_FRAME__FRAME_INIT:
        if (c == NULL) start_child(h, f->child, f->kind, cf->init);
        break;
    case DISTSUP__V1__CHILD_FRAME__FRAME_CALL:
        if (c) do_call(h, c, cf->call);
        break;
    case DISTSUP__V1__CHILD_FRAME__FRAME_CAST:
        if (c) do_message(h, c, true, &cf->cast->payload, cf->cast->traceparent, cf->cast->tracestate);
        break;
    case DISTSUP__V1__CHILD_FRAME__FRAME_INFO:
        if (c) do_message(h, c, false, &cf->info->payload, cf->info->traceparent, cf->info->tracestate);
        break;
    case DISTSUP__V1__CHILD_FRAME__FRAME_TERMINATE:
        if (c) do_terminate(h, c, cf->terminate->reason);
        break;
    default: break; /* frames only a child sends, or newer ones: nothing to run */
    }
}

/* ---- in callbacks ------------------------------------------------------------------ */

int ds_host_reply_set(ds_host_reply *r, const void *payload, size_t n)
{
    if (r == NULL || (n && payload == NULL)) return -1;
    uint8_t *p = malloc(n ? n : 1);
    if (p == NULL) return -1;
    if (n) memcpy(p, payload, n);
    free(r->payload);
    r->payload = p;
    r->len = n;
    return 0;
}

int ds_host_reply_error(ds_host_reply *r, unsigned code, const char *message)
{
    if (r == NULL) return -1;
    char *m = ds_strdup0(ds_empty(message) ? "error" : message);
    if (m == NULL) return -1;
    free(r->error);
    r->error = m;
    r->code = code ? code : DS_UNKNOWN;
    return 0;
}

int ds_host_child_stop(ds_host_child *self, int normal, const char *reason)
{
    if (self == NULL) return -1;
    char *m = ds_strdup0(ds_empty(reason) ? "stopped" : reason);
    if (m == NULL) return -1;
    free(self->stop_reason);
    self->stop_reason = m;
    self->stop = true;
    self->stop_normal = normal != 0;
    return 0;
}

const char *ds_host_child_name(const ds_host_child *c) { return c ? c->name : ""; }
const char *ds_host_child_id(const ds_host_child *c) { return c ? c->id : ""; }
const char *ds_host_child_supervisor(const ds_host_child *c) { return c ? c->supervisor : ""; }
const char *ds_host_child_kind(const ds_host_child *c) { return c ? c->kind->name : ""; }
uint64_t ds_host_child_number(const ds_host_child *c) { return c ? c->num : 0; }
void *ds_host_child_user(const ds_host_child *c) { return c ? c->user : NULL; }
const char *ds_host_child_traceparent(const ds_host_child *c) { return c ? c->traceparent : ""; }
const char *ds_host_child_tracestate(const ds_host_child *c) { return c ? c->tracestate : ""; }

/* ---- one session ------------------------------------------------------------------- */

enum { TAG_SEND = 1, TAG_RECV, TAG_STATUS };
#define TAG(t) ((void *)(intptr_t)(t))

struct session {
    grpc_call *call;
    grpc_completion_queue *cq;
    grpc_byte_buffer *send_bb, *recv_bb;
    grpc_metadata_array initial_md, trailing_md;
    grpc_status_code status;
    grpc_slice details;
    bool send_busy, recv_busy, status_busy;
    bool write_closed, read_closed, cancelled;
    bool welcomed;
    uint32_t timeout_ms; /* the daemon's: silence this long ends the session */
    uint64_t last_rx;    /* ms: the last message down (or the start) */
};

static grpc_byte_buffer *hello_message(const ds_host *h)
{
    char *kinds[MAX_KINDS];
    uint64_t capacity = 0;
    bool unlimited = false;
    for (size_t i = 0; i < h->n_kinds; i++) {
        kinds[i] = h->kinds[i].name;
        if (h->kinds[i].capacity == 0) unlimited = true;
        capacity += h->kinds[i].capacity;
    }
    Distsup__V1__HostHello hello = DISTSUP__V1__HOST_HELLO__INIT;
    hello.kinds = kinds;
    hello.n_kinds = h->n_kinds;
    hello.capacity = unlimited ? 0 : capacity > UINT32_MAX ? UINT32_MAX : (uint32_t)capacity;
    hello.name = h->name;
    Distsup__V1__HostHello__LabelsEntry *entries = NULL, **ptrs = NULL;
    if (h->n_labels) {
        entries = calloc(h->n_labels, sizeof *entries);
        ptrs = calloc(h->n_labels, sizeof *ptrs);
        if (!entries || !ptrs) {
            free(entries);
            free(ptrs);
            return NULL;
        }
        for (size_t i = 0; i < h->n_labels; i++) {
            Distsup__V1__HostHello__LabelsEntry e = DISTSUP__V1__HOST_HELLO__LABELS_ENTRY__INIT;
            e.key = h->label_k[i];
            e.value = h->label_v[i];
            entries[i] = e;
            ptrs[i] = &entries[i];
        }
        hello.labels = ptrs;
        hello.n_labels = h->n_labels;
    }
    Distsup__V1__HostUp up = DISTSUP__V1__HOST_UP__INIT;
    up.hello = &hello;
    size_t n = distsup__v1__host_up__get_packed_size(&up);
    grpc_slice s = grpc_slice_malloc(n);
    distsup__v1__host_up__pack(&up, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    free(entries);
    free(ptrs);
    return bb;
}

static void cancel(ds_host *h, struct session *s)
{
    if (s->cancelled) return;
    s->cancelled = true;
    lock(&h->mu);
    cancel_call(s->call);
    unlock(&h->mu);
}

/* Sends the next part of the output, when nothing is being sent. */
static void flush(ds_host *h, struct session *s)
{
    if (s->send_busy || s->write_closed || s->cancelled || h->out.len == 0 || h->sess_code != DS_OK) return;
    size_t n = up_chunk(&h->out);
    grpc_slice sl = grpc_slice_from_copied_buffer((const char *)h->out.data, n);
    s->send_bb = grpc_raw_byte_buffer_create(&sl, 1);
    grpc_slice_unref(sl);
    memmove(h->out.data, h->out.data + n, h->out.len - n);
    h->out.len -= n;
    if (h->out.len == 0 && h->out.cap > 4 * UP_MAX) { /* give back what a burst took */
        free(h->out.data);
        h->out.data = NULL;
        h->out.cap = 0;
    }
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = s->send_bb;
    grpc_call_error e = grpc_call_start_batch(s->call, &op, 1, TAG(TAG_SEND), NULL);
    if (e != GRPC_CALL_OK) {
        grpc_byte_buffer_destroy(s->send_bb);
        s->send_bb = NULL;
        session_fail(h, DS_INTERNAL, "grpc_call_start_batch (send): %s", grpc_call_error_to_string(e));
        return;
    }
    s->send_busy = true;
}

static void arm_recv(ds_host *h, struct session *s, bool with_metadata)
{
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    if (with_metadata) {
        ops[n].op = GRPC_OP_RECV_INITIAL_METADATA;
        ops[n++].data.recv_initial_metadata.recv_initial_metadata = &s->initial_md;
    }
    ops[n].op = GRPC_OP_RECV_MESSAGE;
    ops[n++].data.recv_message.recv_message = &s->recv_bb;
    grpc_call_error e = grpc_call_start_batch(s->call, ops, n, TAG(TAG_RECV), NULL);
    if (e != GRPC_CALL_OK) {
        session_fail(h, DS_INTERNAL, "grpc_call_start_batch (receive): %s", grpc_call_error_to_string(e));
        return;
    }
    s->recv_busy = true;
}

static void handle_down(ds_host *h, struct session *s, const Distsup__V1__HostDown *d)
{
    if (d->welcome && !s->welcomed) {
        s->welcomed = true;
        if (d->welcome->timeout_ms) s->timeout_ms = d->welcome->timeout_ms;
        if (h->on_attach) h->on_attach(h->arg, d->welcome->node, d->welcome->session);
    }
    if (d->ping) up_pong(h, d->ping->seq);
    for (size_t i = 0; i < d->n_frames && h->sess_code == DS_OK; i++) {
        if (atomic_load(&h->stop)) break;
        handle_frame(h, d->frames[i]);
    }
}

static void on_recv(ds_host *h, struct session *s, bool success)
{
    s->recv_busy = false;
    if (!success || s->recv_bb == NULL) { /* the stream's end: the status follows */
        s->read_closed = true;
        if (s->recv_bb) grpc_byte_buffer_destroy(s->recv_bb);
        s->recv_bb = NULL;
        return;
    }
    s->last_rx = now_ms();
    grpc_byte_buffer_reader rd;
    Distsup__V1__HostDown *d = NULL;
    if (grpc_byte_buffer_reader_init(&rd, s->recv_bb)) {
        grpc_slice sl = grpc_byte_buffer_reader_readall(&rd);
        grpc_byte_buffer_reader_destroy(&rd);
        d = distsup__v1__host_down__unpack(NULL, GRPC_SLICE_LENGTH(sl), GRPC_SLICE_START_PTR(sl));
        grpc_slice_unref(sl);
    }
    grpc_byte_buffer_destroy(s->recv_bb);
    s->recv_bb = NULL;
    if (d == NULL) {
        session_fail(h, DS_INTERNAL, "a message from the daemon does not decode as HostDown");
        return;
    }
    handle_down(h, s, d);
    distsup__v1__host_down__free_unpacked(d, NULL);
    flush(h, s); /* the answers first, then ask for the next message */
    if (!s->cancelled && h->sess_code == DS_OK) arm_recv(h, s, false);
}

/* Runs one session to its end.  *welcomed: the daemon welcomed it.  Returns why it
 * ended (DS_OK: ds_host_stop); *from_daemon: the code is the daemon's status. */
static int session(ds_host *h, bool *welcomed, bool *from_daemon, ds_error *err)
{
    *welcomed = *from_daemon = false;
    struct session s = {.status = GRPC_STATUS_UNKNOWN, .timeout_ms = h->welcome_ms, .last_rx = now_ms()};
    s.details = grpc_empty_slice();
    grpc_metadata_array_init(&s.initial_md);
    grpc_metadata_array_init(&s.trailing_md);
    h->sess_code = DS_OK;
    h->sess_msg[0] = '\0';
    h->out.len = 0;
    s.cq = grpc_completion_queue_create_for_next(NULL);
    if (s.cq == NULL) return ds_err_set(err, DS_INTERNAL, "cannot create a completion queue");
    s.call = grpc_channel_create_call(h->channel, NULL, GRPC_PROPAGATE_DEFAULTS, s.cq,
                                      grpc_slice_from_static_string(HOST_METHOD), NULL,
                                      gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    int rc = DS_OK;
    if (s.call == NULL) {
        rc = ds_err_set(err, DS_INTERNAL, "cannot create a call for %s", HOST_METHOD);
        goto out;
    }
    lock(&h->mu);
    h->call = s.call;
    if (atomic_load(&h->stop)) {
        cancel_call(s.call);
        s.cancelled = true;
    }
    unlock(&h->mu);

    s.send_bb = hello_message(h);
    if (s.send_bb == NULL) {
        session_fail(h, DS_RESOURCE_EXHAUSTED, "out of memory for the hello");
    } else {
        grpc_op ops[2];
        memset(ops, 0, sizeof ops);
        ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
        ops[0].data.send_initial_metadata.count = h->n_md;
        ops[0].data.send_initial_metadata.metadata = h->n_md ? &h->auth : NULL;
        ops[1].op = GRPC_OP_SEND_MESSAGE;
        ops[1].data.send_message.send_message = s.send_bb;
        grpc_call_error e = grpc_call_start_batch(s.call, ops, 2, TAG(TAG_SEND), NULL);
        if (e == GRPC_CALL_OK) s.send_busy = true;
        else session_fail(h, DS_INTERNAL, "grpc_call_start_batch (hello): %s", grpc_call_error_to_string(e));
    }
    arm_recv(h, &s, true);
    grpc_op st;
    memset(&st, 0, sizeof st);
    st.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    st.data.recv_status_on_client.trailing_metadata = &s.trailing_md;
    st.data.recv_status_on_client.status = &s.status;
    st.data.recv_status_on_client.status_details = &s.details;
    grpc_call_error e = grpc_call_start_batch(s.call, &st, 1, TAG(TAG_STATUS), NULL);
    if (e == GRPC_CALL_OK) s.status_busy = true;
    else session_fail(h, DS_INTERNAL, "grpc_call_start_batch (status): %s", grpc_call_error_to_string(e));

    while (s.send_busy || s.recv_busy || s.status_busy) {
        if (h->sess_code != DS_OK) s.cancelled = true; /* session_fail cancelled the call */
        gpr_timespec dl = s.cancelled
            ? gpr_inf_future(GPR_CLOCK_MONOTONIC)
            : at_ms(s.last_rx + s.timeout_ms > now_ms() ? s.last_rx + s.timeout_ms - now_ms() : 0);
        grpc_event ev = grpc_completion_queue_next(s.cq, dl, NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            if (!s.cancelled && now_ms() >= s.last_rx + s.timeout_ms)
                session_fail(h, DS_UNAVAILABLE, "the daemon sent nothing for %u ms%s", (unsigned)s.timeout_ms,
                             s.welcomed ? "" : " (no welcome)");
            continue;
        }
        if (ev.type != GRPC_OP_COMPLETE) break; /* cannot happen: the queue is not shut down */
        switch ((intptr_t)ev.tag) {
        case TAG_SEND:
            s.send_busy = false;
            grpc_byte_buffer_destroy(s.send_bb);
            s.send_bb = NULL;
            if (!ev.success) s.write_closed = true;
            break;
        case TAG_RECV: on_recv(h, &s, ev.success != 0); break;
        case TAG_STATUS: s.status_busy = false; break;
        default: break;
        }
        if (atomic_load(&h->stop) && !s.cancelled) cancel(h, &s);
        if (s.status_busy && !s.send_busy) flush(h, &s);
    }
    *welcomed = s.welcomed;
    if (atomic_load(&h->stop)) {
        rc = ds_err_set(err, DS_OK, "stopped by ds_host_stop");
    } else if (h->sess_code != DS_OK) {
        rc = ds_err_set(err, h->sess_code, "%s", h->sess_msg);
    } else {
        *from_daemon = true;
        size_t n = GRPC_SLICE_LENGTH(s.details);
        if (n > DS_ERROR_MESSAGE_MAX - 1) n = DS_ERROR_MESSAGE_MAX - 1;
        if (s.status == GRPC_STATUS_OK)
            rc = ds_err_set(err, DS_UNAVAILABLE, "the daemon ended the session%s%.*s", n ? ": " : "", (int)n,
                            (const char *)GRPC_SLICE_START_PTR(s.details));
        else if (n) rc = ds_err_set(err, (int)s.status, "%.*s", (int)n, (const char *)GRPC_SLICE_START_PTR(s.details));
        else rc = ds_err_set(err, (int)s.status, "%s", ds_status_name((int)s.status));
    }
    lock(&h->mu);
    h->call = NULL;
    unlock(&h->mu);
    grpc_call_unref(s.call);
out:
    if (s.recv_bb) grpc_byte_buffer_destroy(s.recv_bb);
    grpc_metadata_array_destroy(&s.initial_md);
    grpc_metadata_array_destroy(&s.trailing_md);
    grpc_slice_unref(s.details);
    grpc_completion_queue_shutdown(s.cq);
    while (grpc_completion_queue_next(s.cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {}
    grpc_completion_queue_destroy(s.cq);
    h->out.len = 0;
    drop_all(h);
    return rc;
}

/* Waits ms, or until ds_host_stop. */
static void backoff_wait(ds_host *h, uint32_t ms)
{
    struct timespec until;
    if (clock_gettime(CLOCK_MONOTONIC, &until) != 0) abort(); /* cannot fail with this clock */
    until.tv_sec += ms / 1000;
    until.tv_nsec += (long)(ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    lock(&h->mu);
    while (!atomic_load(&h->stop)) {
        int e = pthread_cond_timedwait(&h->cv, &h->mu, &until);
        if (e == ETIMEDOUT) break;
    }
    unlock(&h->mu);
}

static bool hopeless(int code)
{
    return code == DS_INVALID_ARGUMENT || code == DS_UNAUTHENTICATED || code == DS_PERMISSION_DENIED ||
        code == DS_UNIMPLEMENTED;
}

int ds_host_run(ds_host *h, ds_error *err)
{
    if (h == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_host_run: no host");
    if (h->n_kinds == 0) return ds_err_set(err, DS_FAILED_PRECONDITION, "ds_host_run: no kind registered");
    bool expected = false;
    if (!atomic_compare_exchange_strong(&h->running, &expected, true))
        return ds_err_set(err, DS_FAILED_PRECONDITION, "ds_host_run: already running");
    uint32_t backoff = h->backoff_min;
    int rc = DS_OK;
    ds_error e;
    while (!atomic_load(&h->stop)) {
        bool welcomed, from_daemon;
        rc = session(h, &welcomed, &from_daemon, &e);
        if (h->on_detach) h->on_detach(h->arg, rc, e.message);
        else if (rc != DS_OK)
            fprintf(stderr, "distsup host: session with %s ended: %s: %s\n", h->target, ds_status_name(rc), e.message);
        if (rc == DS_OK || atomic_load(&h->stop)) {
            rc = DS_OK;
            break;
        }
        if (!welcomed && from_daemon && hopeless(rc)) {
            ds_err_set(err, rc, "%s", e.message);
            break;
        }
        if (welcomed) backoff = h->backoff_min;
        backoff_wait(h, backoff);
        backoff = backoff > h->backoff_max / 2 ? h->backoff_max : backoff * 2;
    }
    atomic_store(&h->stop, false);
    atomic_store(&h->running, false);
    return rc == DS_OK ? ds_err_clear(err) : rc;
}

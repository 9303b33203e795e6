/* libdistsup: see distsup.h for the contract. */
#include "distsup.h"
#include "connect.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>

#include "distsup/v1/supervisor.pb-c.h"
#include "grpc/health/v1/health.pb-c.h"

struct ds_client {
    grpc_channel *channel;
    char *address;
    _Atomic uint32_t timeout_ms;
    grpc_metadata auth;    /* "authorization: Bearer TOKEN", sent with every call */
    size_t n_md;           /* 1 with a token, else 0 */
    _Atomic int spec_data; /* include_spec_data in answers with children */
};

#define SVC "/distsup.v1.Supervisor/"
#define PM(m) ((const ProtobufCMessage *)(m))

/* ---- small helpers ----------------------------------------------------------- */

static const char *const status_names[] = {
    "OK",        "CANCELLED",       "UNKNOWN",           "INVALID_ARGUMENT",   "DEADLINE_EXCEEDED",
    "NOT_FOUND", "ALREADY_EXISTS",  "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION",
    "ABORTED",   "OUT_OF_RANGE",    "UNIMPLEMENTED",     "INTERNAL",           "UNAVAILABLE",
    "DATA_LOSS", "UNAUTHENTICATED",
};

const char *ds_status_name(int code)
{
    if (code < 0 || code >= (int)(sizeof status_names / sizeof status_names[0])) return "UNKNOWN_CODE";
    return status_names[code];
}

int ds_err_set(ds_error *err, int code, const char *fmt, ...)
{
    if (err) {
        err->code = code;
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(err->message, sizeof err->message, fmt, ap);
        va_end(ap);
        if (n < 0) err->message[0] = '\0';
    }
    return code;
}

int ds_err_clear(ds_error *err)
{
    if (err) {
        err->code = DS_OK;
        err->message[0] = '\0';
    }
    return DS_OK;
}

static int oom(ds_error *err) { return ds_err_set(err, DS_RESOURCE_EXHAUSTED, "out of memory"); }

static char *S(const char *s) { return (char *)(s ? s : ""); }
char *ds_strdup0(const char *s)
{
    if (s == NULL) s = "";
    size_t n = strlen(s);
    char *p = malloc(n + 1);
    if (p) memcpy(p, s, n + 1);
    return p;
}

void ds_free(void *p) { free(p); }

static gpr_timespec deadline_in(uint64_t ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC), gpr_time_from_millis((int64_t)ms, GPR_TIMESPAN));
}

static uint32_t client_timeout(const ds_client *c)
{
    uint32_t t = atomic_load(&((ds_client *)c)->timeout_ms);
    return t ? t : DS_DEFAULT_TIMEOUT_MS;
}

/* Caller owns the returned byte buffer. */
static grpc_byte_buffer *pack_message(const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    grpc_slice s = grpc_slice_malloc(n);
    size_t w = protobuf_c_message_pack(m, GRPC_SLICE_START_PTR(s));
    (void)w;
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static ProtobufCMessage *unpack_message(grpc_byte_buffer *bb, const ProtobufCMessageDescriptor *d)
{
    grpc_byte_buffer_reader r;
    if (!grpc_byte_buffer_reader_init(&r, bb)) return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&r);
    grpc_byte_buffer_reader_destroy(&r);
    ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    return m;
}

static int status_error(ds_error *err, grpc_status_code st, grpc_slice details)
{
    size_t n = GRPC_SLICE_LENGTH(details);
    if (n == 0) return ds_err_set(err, (int)st, "%s", ds_status_name((int)st));
    if (n > DS_ERROR_MESSAGE_MAX - 1) n = DS_ERROR_MESSAGE_MAX - 1;
    return ds_err_set(err, (int)st, "%.*s", (int)n, (const char *)GRPC_SLICE_START_PTR(details));
}

/* One unary RPC: method is a full path ("/pkg.Service/Method").  On DS_OK *resp is
 * the unpacked reply (protobuf_c_message_free_unpacked). */
static int rpc_unary(ds_client *c, const char *method, const ProtobufCMessage *req,
                     const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp, uint64_t timeout_ms,
                     ds_error *err)
{
    *resp = NULL;
    grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
    if (cq == NULL) return ds_err_set(err, DS_INTERNAL, "cannot create a completion queue");
    grpc_slice path = grpc_slice_from_static_string(method);
    grpc_call *call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq, path, NULL,
                                               deadline_in(timeout_ms), NULL);
    if (call == NULL) {
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_destroy(cq);
        return ds_err_set(err, DS_INTERNAL, "cannot create a call for %s", method);
    }

    grpc_byte_buffer *send_bb = pack_message(req);
    grpc_byte_buffer *recv_bb = NULL;
    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();

    grpc_op ops[6];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = c->n_md;
    ops[0].data.send_initial_metadata.metadata = c->n_md ? &c->auth : NULL;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = send_bb;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &recv_bb;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &trailing_md;
    ops[5].data.recv_status_on_client.status = &status;
    ops[5].data.recv_status_on_client.status_details = &details;

    int rc;
    void *tag = &ops;
    grpc_call_error ce = grpc_call_start_batch(call, ops, 6, tag, NULL);
    if (ce != GRPC_CALL_OK) {
        rc = ds_err_set(err, DS_INTERNAL, "grpc_call_start_batch: %s", grpc_call_error_to_string(ce));
    } else {
        grpc_event ev = grpc_completion_queue_pluck(cq, tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE) {
            rc = ds_err_set(err, DS_INTERNAL, "completion queue failed");
        } else if (status != GRPC_STATUS_OK) {
            rc = status_error(err, status, details);
        } else if (recv_bb == NULL) {
            rc = ds_err_set(err, DS_INTERNAL, "%s: the server sent no reply message", method);
        } else {
            *resp = unpack_message(recv_bb, resp_desc);
            rc = *resp ? ds_err_clear(err)
                       : ds_err_set(err, DS_INTERNAL, "%s: the reply does not parse as %s", method, resp_desc->name);
        }
    }

    grpc_byte_buffer_destroy(send_bb);
    if (recv_bb) grpc_byte_buffer_destroy(recv_bb);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_slice_unref(details);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    /* Every event was plucked: the queue is empty. */
    grpc_completion_queue_destroy(cq);
    return rc;
}

/* ---- client ------------------------------------------------------------------ */

static int wait_connected(grpc_channel *ch, uint32_t timeout_ms, ds_error *err, const char *address)
{
    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    if (cq == NULL) return ds_err_set(err, DS_INTERNAL, "cannot create a completion queue");
    gpr_timespec deadline = deadline_in(timeout_ms);
    int rc = DS_OK;
    grpc_connectivity_state st = grpc_channel_check_connectivity_state(ch, 1);
    while (st != GRPC_CHANNEL_READY) {
        if (st == GRPC_CHANNEL_SHUTDOWN) {
            rc = ds_err_set(err, DS_UNAVAILABLE, "channel to %s shut down", address);
            break;
        }
        grpc_channel_watch_connectivity_state(ch, st, deadline, cq, cq);
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type != GRPC_OP_COMPLETE || !ev.success) {
            rc = ds_err_set(err, DS_UNAVAILABLE, "cannot connect to %s within %u ms", address, (unsigned)timeout_ms);
            break;
        }
        st = grpc_channel_check_connectivity_state(ch, 1);
    }
    grpc_completion_queue_shutdown(cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    }
    grpc_completion_queue_destroy(cq);
    return rc == DS_OK ? ds_err_clear(err) : rc;
}

/* Reads a whole small file (a token or a PEM) into a new NUL-terminated string. */
static char *read_small_file(const char *what, const char *path, ds_error *err, int *rc)
{
    FILE *f = fopen(path, "re");
    if (f == NULL) {
        *rc = ds_err_set(err, DS_INVALID_ARGUMENT, "%s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 20;
    char *buf = malloc(cap + 1);
    if (buf == NULL) {
        fclose(f);
        *rc = oom(err);
        return NULL;
    }
    size_t n = fread(buf, 1, cap + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n == 0 || n > cap) {
        free(buf);
        *rc = ds_err_set(err, DS_INVALID_ARGUMENT, "%s %s: %s", what, path,
                         bad          ? "read error"
                             : n == 0 ? "the file is empty"
                                      : "the file is larger than 1 MiB");
        return NULL;
    }
    buf[n] = '\0';
    return buf;
}

int ds_token_metadata(const ds_connect_options *opts, grpc_metadata *auth, size_t *n_md, ds_error *err)
{
    char *owned = NULL;
    const char *t = opts->token;
    int rc = DS_OK;
    if (ds_empty(t) && !ds_empty(opts->token_file)) {
        if ((owned = read_small_file("token file", opts->token_file, err, &rc)) == NULL) return rc;
        t = owned;
    }
    if (ds_empty(t)) return DS_OK;
    while (*t == ' ' || *t == '\t' || *t == '\n' || *t == '\r') t++;
    size_t n = strlen(t);
    while (n > 0 && (t[n - 1] == ' ' || t[n - 1] == '\t' || t[n - 1] == '\n' || t[n - 1] == '\r')) n--;
    if (n == 0) {
        free(owned);
        return ds_err_set(err, DS_INVALID_ARGUMENT, "the token%s%s is empty", owned ? " file " : "",
                          owned ? opts->token_file : "");
    }
    char *value = malloc(n + 8);
    if (value == NULL) {
        free(owned);
        return oom(err);
    }
    memcpy(value, "Bearer ", 7);
    memcpy(value + 7, t, n);
    auth->key = grpc_slice_from_static_string("authorization");
    auth->value = grpc_slice_from_copied_buffer(value, n + 7);
    *n_md = 1;
    memset(value, 0, n + 7);
    free(value);
    if (owned) memset(owned, 0, strlen(owned));
    free(owned);
    return DS_OK;
}

grpc_channel_credentials *ds_channel_credentials(const ds_connect_options *opts, ds_error *err, int *rc)
{
    if (!opts ||
        (!opts->tls && ds_empty(opts->tls_ca_file) && ds_empty(opts->tls_cert_file) && ds_empty(opts->tls_key_file)))
        return grpc_insecure_credentials_create();
    if (ds_empty(opts->tls_cert_file) != ds_empty(opts->tls_key_file)) {
        *rc = ds_err_set(err, DS_INVALID_ARGUMENT, "a client certificate needs both tls_cert_file and tls_key_file");
        return NULL;
    }
    char *ca = NULL, *cert = NULL, *key = NULL;
    grpc_channel_credentials *creds = NULL;
    if (!ds_empty(opts->tls_ca_file) && (ca = read_small_file("TLS CA file", opts->tls_ca_file, err, rc)) == NULL)
        goto out;
    if (!ds_empty(opts->tls_cert_file) &&
        ((cert = read_small_file("TLS certificate", opts->tls_cert_file, err, rc)) == NULL ||
         (key = read_small_file("TLS key", opts->tls_key_file, err, rc)) == NULL))
        goto out;
    grpc_ssl_pem_key_cert_pair pair = {key, cert};
    creds = grpc_ssl_credentials_create(ca, cert ? &pair : NULL, NULL, NULL);
    if (creds == NULL) *rc = ds_err_set(err, DS_INVALID_ARGUMENT, "cannot make TLS credentials");
out:
    if (key) memset(key, 0, strlen(key));
    free(ca);
    free(cert);
    free(key);
    return creds;
}

int ds_connect(const char *address, const ds_connect_options *opts, ds_client **out, ds_error *err)
{
    if (out == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_connect: out is NULL");
    *out = NULL;
    if (ds_empty(address)) address = DS_DEFAULT_ADDRESS;
    ds_client *c = calloc(1, sizeof *c);
    if (c == NULL) return oom(err);
    c->address = ds_strdup0(address);
    if (c->address == NULL) {
        free(c);
        return oom(err);
    }
    uint32_t t = opts && opts->timeout_ms ? opts->timeout_ms : DS_DEFAULT_TIMEOUT_MS;
    atomic_init(&c->timeout_ms, t);

    grpc_init();
    int rc = DS_OK;
    if (opts && (rc = ds_token_metadata(opts, &c->auth, &c->n_md, err)) != DS_OK) {
        free(c->address);
        free(c);
        grpc_shutdown();
        return rc;
    }
    grpc_channel_credentials *creds = ds_channel_credentials(opts, err, &rc);
    if (creds == NULL) {
        if (c->n_md) grpc_slice_unref(c->auth.value);
        free(c->address);
        free(c);
        grpc_shutdown();
        return rc;
    }
    grpc_arg args[1];
    args[0].type = GRPC_ARG_STRING;
    args[0].key = (char *)GRPC_ARG_PRIMARY_USER_AGENT_STRING;
    args[0].value.string = (char *)"distsup-c/1";
    grpc_channel_args chargs = {.num_args = 1, .args = args};
    c->channel = grpc_channel_create(address, creds, &chargs);
    grpc_channel_credentials_release(creds);
    if (c->channel == NULL) {
        if (c->n_md) grpc_slice_unref(c->auth.value);
        free(c->address);
        free(c);
        grpc_shutdown();
        return ds_err_set(err, DS_INVALID_ARGUMENT, "cannot create a channel to %s", address);
    }
    if (opts && opts->wait_connected) {
        rc = wait_connected(c->channel, t, err, address);
        if (rc != DS_OK) {
            ds_close(c);
            return rc;
        }
    }
    *out = c;
    return ds_err_clear(err);
}

void ds_close(ds_client *c)
{
    if (c == NULL) return;
    grpc_channel_destroy(c->channel);
    if (c->n_md) grpc_slice_unref(c->auth.value);
    free(c->address);
    free(c);
    grpc_shutdown();
}

void ds_client_set_timeout_ms(ds_client *c, uint32_t timeout_ms)
{
    if (c) atomic_store(&c->timeout_ms, timeout_ms);
}

void ds_client_set_spec_data(ds_client *c, int on)
{
    if (c) atomic_store(&c->spec_data, on != 0);
}

static int spec_data(ds_client *c) { return atomic_load(&c->spec_data); }

const char *ds_client_address(const ds_client *c) { return c ? c->address : NULL; }

/* ---- names ------------------------------------------------------------------- */

const char *ds_restart_name(ds_restart r)
{
    switch (r) {
    case DS_RESTART_PERMANENT: return "PERMANENT";
    case DS_RESTART_TRANSIENT: return "TRANSIENT";
    case DS_RESTART_TEMPORARY: return "TEMPORARY";
    }
    return "UNKNOWN";
}

const char *ds_protocol_name(ds_protocol p)
{
    switch (p) {
    case DS_PROTOCOL_FRAMES: return "FRAMES";
    case DS_PROTOCOL_NONE: return "NONE";
    }
    return "UNKNOWN";
}

const char *ds_child_state_name(ds_child_state s)
{
    switch (s) {
    case DS_STATE_STARTING: return "STARTING";
    case DS_STATE_RUNNING: return "RUNNING";
    case DS_STATE_RESTARTING: return "RESTARTING";
    case DS_STATE_STOPPING: return "STOPPING";
    case DS_STATE_FAILED: return "FAILED";
    case DS_STATE_SUSPENDED: return "SUSPENDED";
    }
    return "UNKNOWN";
}

const char *ds_health_status_name(ds_health_status s)
{
    switch (s) {
    case DS_HEALTH_UNKNOWN: return "UNKNOWN";
    case DS_HEALTH_SERVING: return "SERVING";
    case DS_HEALTH_NOT_SERVING: return "NOT_SERVING";
    case DS_HEALTH_SERVICE_UNKNOWN: return "SERVICE_UNKNOWN";
    }
    return "UNKNOWN";
}

static const char *const event_names[] = {
    "UNSPECIFIED",   "PROCESS_START", "PROCESS_STOP", "PROCESS_RESTART", "PROCESS_FAILED",
    "PROCESS_MOVED", "NODE_UP",       "NODE_DOWN",    "NODE_TERMINATE",
};
#define N_EVENT_NAMES (sizeof event_names / sizeof event_names[0])

const char *ds_event_kind_name(ds_event_kind k)
{
    if ((unsigned)k >= N_EVENT_NAMES) return "UNSPECIFIED";
    return event_names[k];
}

int ds_event_kind_parse(const char *text)
{
    if (text == NULL) return -1;
    for (size_t i = 1; i < N_EVENT_NAMES; i++) {
        const char *n = event_names[i];
        size_t j = 0;
        for (; n[j] && text[j]; j++) {
            char a = text[j];
            if (a == '-') a = '_';
            if (a >= 'a' && a <= 'z') a = (char)(a - 'a' + 'A');
            if (a != n[j]) break;
        }
        if (n[j] == '\0' && text[j] == '\0') return (int)i;
    }
    return -1;
}

/* ---- children: conversion from the wire ------------------------------------- */

static void kv_array_free(const ds_kv *kv, size_t n)
{
    if (kv == NULL) return;
    for (size_t i = 0; i < n; i++) {
        free((void *)kv[i].key);
        free((void *)kv[i].value);
    }
    free((void *)kv);
}

static void child_clear(ds_child *ch)
{
    if (ch == NULL) return;
    free(ch->supervisor);
    free(ch->name);
    free(ch->id);
    free(ch->node);
    ds_child_spec *sp = &ch->spec;
    free((void *)sp->name);
    if (sp->argv) {
        for (size_t i = 0; i < sp->argc; i++) free((void *)sp->argv[i]);
        free((void *)sp->argv);
    }
    kv_array_free(sp->env, sp->n_env);
    free((void *)sp->kind);
    free((void *)sp->cwd);
    free((void *)sp->node);
    free((void *)sp->key);
    free((void *)sp->init);
    kv_array_free(sp->labels, sp->n_labels);
    memset(ch, 0, sizeof *ch);
}

void ds_child_free(ds_child *child)
{
    if (child == NULL) return;
    child_clear(child);
    free(child);
}

void ds_child_list_free(ds_child_list *list)
{
    if (list == NULL) return;
    for (size_t i = 0; i < list->count; i++) child_clear(&list->items[i]);
    free(list->items);
    free(list);
}

static ds_kv *copy_env(Distsup__V1__ChildSpec__EnvEntry **e, size_t n, bool *bad)
{
    if (n == 0) return NULL;
    ds_kv *kv = calloc(n, sizeof *kv);
    if (kv == NULL) {
        *bad = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        kv[i].key = ds_strdup0(e[i]->key);
        kv[i].value = ds_strdup0(e[i]->value);
        if (!kv[i].key || !kv[i].value) *bad = true;
    }
    return kv;
}

static ds_kv *copy_labels(Distsup__V1__ChildSpec__LabelsEntry **e, size_t n, bool *bad)
{
    if (n == 0) return NULL;
    ds_kv *kv = calloc(n, sizeof *kv);
    if (kv == NULL) {
        *bad = true;
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        kv[i].key = ds_strdup0(e[i]->key);
        kv[i].value = ds_strdup0(e[i]->value);
        if (!kv[i].key || !kv[i].value) *bad = true;
    }
    return kv;
}

/* Fills *ch (zeroed by the caller) from info; false when out of memory (then *ch
 * holds whatever was copied, to release with child_clear). */
static bool child_from_pb(ds_child *ch, const Distsup__V1__ChildInfo *info)
{
    bool bad = false;
    ch->supervisor = ds_strdup0(info->supervisor);
    ch->name = ds_strdup0(info->name);
    ch->id = ds_strdup0(info->id);
    ch->node = ds_strdup0(info->node);
    if (!ch->supervisor || !ch->name || !ch->id || !ch->node) bad = true;
    ch->os_pid = info->os_pid;
    ch->state = (ds_child_state)info->state;
    ch->restarts = info->restarts;
    ch->started_at_ms = info->started_at_ms;
    ch->incarnation = info->incarnation;
    ch->calls = info->calls;

    const Distsup__V1__ChildSpec *s = info->spec;
    ds_child_spec *sp = &ch->spec;
    sp->name = ds_strdup0(s ? s->name : NULL);
    sp->cwd = ds_strdup0(s ? s->cwd : NULL);
    sp->node = ds_strdup0(s ? s->node : NULL);
    sp->key = ds_strdup0(s ? s->key : NULL);
    sp->kind = ds_strdup0(s ? s->kind : NULL);
    if (!sp->name || !sp->cwd || !sp->node || !sp->key || !sp->kind) bad = true;
    if (s == NULL) return !bad;
    sp->restart = (ds_restart)s->restart;
    sp->shutdown_ms = s->shutdown_ms;
    sp->kill_immediately = s->kill_immediately ? 1 : 0;
    sp->protocol = (ds_protocol)s->protocol;
    if (s->n_argv) {
        char **argv = calloc(s->n_argv, sizeof *argv);
        if (argv == NULL) {
            bad = true;
        } else {
            sp->argv = (const char *const *)argv;
            sp->argc = s->n_argv;
            for (size_t i = 0; i < s->n_argv; i++)
                if ((argv[i] = ds_strdup0(s->argv[i])) == NULL) bad = true;
        }
    }
    sp->env = copy_env(s->env, s->n_env, &bad);
    if (sp->env) sp->n_env = s->n_env;
    sp->labels = copy_labels(s->labels, s->n_labels, &bad);
    if (sp->labels) sp->n_labels = s->n_labels;
    /* One extra NUL byte so text init is usable as a C string. */
    uint8_t *init = malloc(s->init.len + 1);
    if (init == NULL) {
        bad = true;
    } else {
        if (s->init.len) memcpy(init, s->init.data, s->init.len);
        init[s->init.len] = 0;
        sp->init = init;
        sp->init_len = s->init.len;
    }
    return !bad;
}

static int child_out(const Distsup__V1__ChildInfo *info, const char *what, ds_child **out, ds_error *err)
{
    if (out == NULL) return ds_err_clear(err);
    if (info == NULL) return ds_err_set(err, DS_INTERNAL, "%s: the reply has no child", what);
    ds_child *ch = calloc(1, sizeof *ch);
    if (ch == NULL) return oom(err);
    if (!child_from_pb(ch, info)) {
        ds_child_free(ch);
        return oom(err);
    }
    *out = ch;
    return ds_err_clear(err);
}

/* ---- children: RPCs ------------------------------------------------------------ */

int ds_start_child(ds_client *c, const char *sup, const ds_child_spec *spec, const char *node, ds_child **out,
                   ds_error *err)
{
    if (out) *out = NULL;
    if (c == NULL || spec == NULL)
        return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_start_child: client and spec are required");
    int hosted = !ds_empty(spec->kind);
    if (hosted && spec->argc)
        return ds_err_set(err, DS_INVALID_ARGUMENT,
                          "ds_start_child: a spec has argv (a process) or kind (hosted), not both");
    if (!hosted && (spec->argc == 0 || spec->argv == NULL || ds_empty(spec->argv[0])))
        return ds_err_set(err, DS_INVALID_ARGUMENT,
                          "ds_start_child: argv[0] (or a kind, for a hosted child) is required");
    if ((spec->n_env && spec->env == NULL) || (spec->n_labels && spec->labels == NULL) ||
        (spec->init_len && spec->init == NULL))
        return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_start_child: NULL array with a count");

    Distsup__V1__ChildSpec ps = DISTSUP__V1__CHILD_SPEC__INIT;
    ps.name = S(spec->name);
    ps.cwd = S(spec->cwd);
    ps.node = S(spec->node);
    ps.key = S(spec->key);
    ps.kind = S(spec->kind);
    ps.restart = (Distsup__V1__RestartType)spec->restart;
    ps.shutdown_ms = spec->shutdown_ms;
    ps.kill_immediately = spec->kill_immediately != 0;
    ps.protocol = (Distsup__V1__Protocol)spec->protocol;
    ps.init.data = (uint8_t *)spec->init;
    ps.init.len = spec->init_len;

    char **argv = calloc(spec->argc + 1, sizeof *argv);
    Distsup__V1__ChildSpec__EnvEntry *env = calloc(spec->n_env + 1, sizeof *env);
    Distsup__V1__ChildSpec__EnvEntry **envp = calloc(spec->n_env + 1, sizeof *envp);
    Distsup__V1__ChildSpec__LabelsEntry *lab = calloc(spec->n_labels + 1, sizeof *lab);
    Distsup__V1__ChildSpec__LabelsEntry **labp = calloc(spec->n_labels + 1, sizeof *labp);
    int rc;
    if (!argv || !env || !envp || !lab || !labp) {
        rc = oom(err);
        goto out;
    }
    for (size_t i = 0; i < spec->argc; i++) {
        if (spec->argv[i] == NULL) {
            rc = ds_err_set(err, DS_INVALID_ARGUMENT, "ds_start_child: argv[%zu] is NULL", i);
            goto out;
        }
        argv[i] = (char *)spec->argv[i];
    }
    ps.argv = argv;
    ps.n_argv = spec->argc;
    for (size_t i = 0; i < spec->n_env; i++) {
        Distsup__V1__ChildSpec__EnvEntry e = DISTSUP__V1__CHILD_SPEC__ENV_ENTRY__INIT;
        e.key = S(spec->env[i].key);
        e.value = S(spec->env[i].value);
        env[i] = e;
        envp[i] = &env[i];
    }
    ps.env = envp;
    ps.n_env = spec->n_env;
    for (size_t i = 0; i < spec->n_labels; i++) {
        Distsup__V1__ChildSpec__LabelsEntry e = DISTSUP__V1__CHILD_SPEC__LABELS_ENTRY__INIT;
        e.key = S(spec->labels[i].key);
        e.value = S(spec->labels[i].value);
        lab[i] = e;
        labp[i] = &lab[i];
    }
    ps.labels = labp;
    ps.n_labels = spec->n_labels;

    Distsup__V1__StartChildRequest req = DISTSUP__V1__START_CHILD_REQUEST__INIT;
    req.supervisor = S(sup);
    req.spec = &ps;
    req.node = S(node);
    req.include_spec_data = spec_data(c);
    ProtobufCMessage *resp;
    rc = rpc_unary(c, SVC "StartChild", PM(&req), &distsup__v1__start_child_response__descriptor, &resp,
                   client_timeout(c), err);
    if (rc == DS_OK) {
        rc = child_out(((Distsup__V1__StartChildResponse *)resp)->child, "StartChild", out, err);
        protobuf_c_message_free_unpacked(resp, NULL);
    }
out:
    free(argv);
    free(env);
    free(envp);
    free(lab);
    free(labp);
    return rc;
}

void ds_terminated_free(ds_terminated *t)
{
    if (t == NULL) return;
    free(t->name);
    free(t);
}

int ds_terminate_child(ds_client *c, const char *sup, const char *name, const char *id, ds_terminated **out,
                       ds_error *err)
{
    if (out) *out = NULL;
    if (c == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_terminate_child: no client");
    if (ds_empty(name) && ds_empty(id))
        return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_terminate_child: a name or an id is required");
    Distsup__V1__TerminateChildRequest req = DISTSUP__V1__TERMINATE_CHILD_REQUEST__INIT;
    req.supervisor = S(sup);
    req.name = S(name);
    req.id = ds_empty(name) ? S(id) : "";
    ProtobufCMessage *resp;
    int rc = rpc_unary(c, SVC "TerminateChild", PM(&req), &distsup__v1__terminate_child_response__descriptor, &resp,
                       client_timeout(c), err);
    if (rc != DS_OK) return rc;
    Distsup__V1__TerminateChildResponse *r = (Distsup__V1__TerminateChildResponse *)resp;
    if (out) {
        ds_terminated *t = calloc(1, sizeof *t);
        char *n = ds_strdup0(ds_empty(r->name) ? name : r->name);
        if (t == NULL || n == NULL) {
            free(t);
            free(n);
            rc = oom(err);
        } else {
            t->name = n;
            t->exit_code = r->exit_code;
            t->signal = r->signal;
            *out = t;
        }
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

int ds_children(ds_client *c, const char *sup, const char *node, ds_child_list **out, ds_error *err)
{
    if (out == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_children: out is NULL");
    *out = NULL;
    if (c == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_children: no client");
    ds_child_list *list = calloc(1, sizeof *list);
    if (list == NULL) return oom(err);
    char *token = NULL;
    int rc = DS_OK;
    do { /* page by page until the daemon gives no next_page_token */
        Distsup__V1__ChildrenRequest req = DISTSUP__V1__CHILDREN_REQUEST__INIT;
        req.supervisor = S(sup);
        req.node = S(node);
        req.page_token = token ? token : "";
        req.include_spec_data = spec_data(c);
        ProtobufCMessage *resp;
        rc = rpc_unary(c, SVC "Children", PM(&req), &distsup__v1__children_response__descriptor, &resp,
                       client_timeout(c), err);
        free(token);
        token = NULL;
        if (rc != DS_OK) break;
        Distsup__V1__ChildrenResponse *r = (Distsup__V1__ChildrenResponse *)resp;
        if (r->n_children) {
            ds_child *grown = realloc(list->items, (list->count + r->n_children) * sizeof *list->items);
            if (grown == NULL) {
                rc = oom(err);
            } else {
                list->items = grown;
                for (size_t i = 0; i < r->n_children; i++) {
                    memset(&list->items[list->count], 0, sizeof list->items[0]);
                    list->count++; /* so ds_child_list_free clears what was copied */
                    if (!child_from_pb(&list->items[list->count - 1], r->children[i])) {
                        rc = oom(err);
                        break;
                    }
                }
            }
        }
        if (rc == DS_OK && !ds_empty(r->next_page_token) && (token = ds_strdup0(r->next_page_token)) == NULL)
            rc = oom(err);
        protobuf_c_message_free_unpacked(resp, NULL);
    } while (rc == DS_OK && token);
    free(token);
    if (rc != DS_OK) {
        ds_child_list_free(list);
        return rc;
    }
    *out = list;
    return ds_err_clear(err);
}

int ds_count_children(ds_client *c, const char *sup, const char *node, ds_counts *out, ds_error *err)
{
    if (out == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_count_children: out is NULL");
    memset(out, 0, sizeof *out);
    if (c == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_count_children: no client");
    Distsup__V1__CountChildrenRequest req = DISTSUP__V1__COUNT_CHILDREN_REQUEST__INIT;
    req.supervisor = S(sup);
    req.node = S(node);
    ProtobufCMessage *resp;
    int rc = rpc_unary(c, SVC "CountChildren", PM(&req), &distsup__v1__count_children_response__descriptor, &resp,
                       client_timeout(c), err);
    if (rc != DS_OK) return rc;
    Distsup__V1__CountChildrenResponse *r = (Distsup__V1__CountChildrenResponse *)resp;
    out->specs = r->specs;
    out->active = r->active;
    out->supervisors = r->supervisors;
    out->workers = r->workers;
    out->failed = r->failed;
    protobuf_c_message_free_unpacked(resp, NULL);
    return ds_err_clear(err);
}

int ds_whereis(ds_client *c, const char *sup, const char *name, ds_child **out, ds_error *err)
{
    if (out == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_whereis: out is NULL");
    *out = NULL;
    if (c == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_whereis: no client");
    if (ds_empty(name)) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_whereis: a name is required");
    Distsup__V1__WhereIsRequest req = DISTSUP__V1__WHERE_IS_REQUEST__INIT;
    req.supervisor = S(sup);
    req.name = S(name);
    req.include_spec_data = spec_data(c);
    ProtobufCMessage *resp;
    int rc = rpc_unary(c, SVC "WhereIs", PM(&req), &distsup__v1__where_is_response__descriptor, &resp,
                       client_timeout(c), err);
    if (rc != DS_OK) return rc;
    rc = child_out(((Distsup__V1__WhereIsResponse *)resp)->child, "WhereIs", out, err);
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

int ds_whois(ds_client *c, const char *sup, const char *id, ds_child **out, ds_error *err)
{
    if (out == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_whois: out is NULL");
    *out = NULL;
    if (c == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_whois: no client");
    if (ds_empty(id)) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_whois: an id is required");
    Distsup__V1__WhoIsRequest req = DISTSUP__V1__WHO_IS_REQUEST__INIT;
    req.supervisor = S(sup);
    req.id = S(id);
    req.include_spec_data = spec_data(c);
    ProtobufCMessage *resp;
    int rc =
        rpc_unary(c, SVC "WhoIs", PM(&req), &distsup__v1__who_is_response__descriptor, &resp, client_timeout(c), err);
    if (rc != DS_OK) return rc;
    Distsup__V1__WhoIsResponse *r = (Distsup__V1__WhoIsResponse *)resp;
    if (r->child) {
        rc = child_out(r->child, "WhoIs", out, err);
        if (rc == DS_OK && ds_empty((*out)->name) && !ds_empty(r->name)) {
            char *n = ds_strdup0(r->name);
            if (n == NULL) {
                ds_child_free(*out);
                *out = NULL;
                rc = oom(err);
            } else {
                free((*out)->name);
                (*out)->name = n;
            }
        }
    } else {
        /* Only the name came back: make a child that carries it. */
        Distsup__V1__ChildInfo info = DISTSUP__V1__CHILD_INFO__INIT;
        info.name = r->name;
        info.id = (char *)id;
        info.supervisor = S(sup);
        rc = child_out(&info, "WhoIs", out, err);
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ---- messages ------------------------------------------------------------------ */

void ds_call_result_free(ds_call_result *r)
{
    if (r == NULL) return;
    free(r->data);
    free(r->node);
    free(r);
}

/* The options' trace context in a request's traceparent and tracestate fields. */
static void set_trace(const ds_message_options *opts, char **parent, char **state)
{
    if (opts == NULL || ds_empty(opts->traceparent)) return;
    *parent = (char *)opts->traceparent;
    if (!ds_empty(opts->tracestate)) *state = (char *)opts->tracestate;
}

int ds_call(ds_client *c, const char *sup, const char *name, const void *payload, size_t len, uint32_t timeout_ms,
            ds_call_result **out, ds_error *err)
{
    return ds_call_opts(c, sup, name, payload, len, timeout_ms, NULL, out, err);
}

int ds_call_opts(ds_client *c, const char *sup, const char *name, const void *payload, size_t len, uint32_t timeout_ms,
                 const ds_message_options *opts, ds_call_result **out, ds_error *err)
{
    if (out) *out = NULL;
    if (c == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_call: no client");
    if (ds_empty(name)) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_call: a name is required");
    if (len && payload == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_call: NULL payload");
    Distsup__V1__CallRequest req = DISTSUP__V1__CALL_REQUEST__INIT;
    req.supervisor = S(sup);
    req.name = S(name);
    req.payload.data = (uint8_t *)payload;
    req.payload.len = len;
    req.timeout_ms = timeout_ms;
    set_trace(opts, &req.traceparent, &req.tracestate);
    uint64_t rpc_ms = (uint64_t)(timeout_ms ? timeout_ms : 5000u) + client_timeout(c);
    ProtobufCMessage *resp;
    int rc = rpc_unary(c, SVC "Call", PM(&req), &distsup__v1__call_response__descriptor, &resp, rpc_ms, err);
    if (rc != DS_OK) return rc;
    Distsup__V1__CallResponse *r = (Distsup__V1__CallResponse *)resp;
    if (out) {
        ds_call_result *res = calloc(1, sizeof *res);
        uint8_t *data = malloc(r->payload.len + 1);
        char *node = ds_strdup0(r->node);
        if (!res || !data || !node) {
            free(res);
            free(data);
            free(node);
            rc = oom(err);
        } else {
            if (r->payload.len) memcpy(data, r->payload.data, r->payload.len);
            data[r->payload.len] = 0;
            res->data = data;
            res->len = r->payload.len;
            res->node = node;
            *out = res;
        }
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

int ds_cast(ds_client *c, const char *sup, const char *name, const void *payload, size_t len, ds_error *err)
{
    return ds_cast_opts(c, sup, name, payload, len, NULL, err);
}

int ds_cast_opts(ds_client *c, const char *sup, const char *name, const void *payload, size_t len,
                 const ds_message_options *opts, ds_error *err)
{
    if (c == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_cast: no client");
    if (ds_empty(name)) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_cast: a name is required");
    if (len && payload == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_cast: NULL payload");
    Distsup__V1__CastRequest req = DISTSUP__V1__CAST_REQUEST__INIT;
    req.supervisor = S(sup);
    req.name = S(name);
    req.payload.data = (uint8_t *)payload;
    req.payload.len = len;
    set_trace(opts, &req.traceparent, &req.tracestate);
    ProtobufCMessage *resp;
    int rc = rpc_unary(c, SVC "Cast", PM(&req), &distsup__v1__cast_response__descriptor, &resp, client_timeout(c), err);
    if (rc == DS_OK) protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

int ds_send(ds_client *c, const char *sup, const char *name, const void *payload, size_t len, ds_error *err)
{
    return ds_send_opts(c, sup, name, payload, len, NULL, err);
}

int ds_send_opts(ds_client *c, const char *sup, const char *name, const void *payload, size_t len,
                 const ds_message_options *opts, ds_error *err)
{
    if (c == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_send: no client");
    if (ds_empty(name)) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_send: a name is required");
    if (len && payload == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_send: NULL payload");
    Distsup__V1__SendRequest req = DISTSUP__V1__SEND_REQUEST__INIT;
    req.supervisor = S(sup);
    req.name = S(name);
    req.payload.data = (uint8_t *)payload;
    req.payload.len = len;
    set_trace(opts, &req.traceparent, &req.tracestate);
    ProtobufCMessage *resp;
    int rc = rpc_unary(c, SVC "Send", PM(&req), &distsup__v1__send_response__descriptor, &resp, client_timeout(c), err);
    if (rc == DS_OK) protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ---- cluster ------------------------------------------------------------------- */

void ds_node_list_free(ds_node_list *list)
{
    if (list == NULL) return;
    for (size_t i = 0; i < list->count; i++) {
        free(list->items[i].name);
        free(list->items[i].address);
        kv_array_free(list->items[i].labels, list->items[i].n_labels);
    }
    free(list->items);
    free(list);
}

int ds_nodes(ds_client *c, const char *sup, ds_node_list **out, ds_error *err)
{
    if (out == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_nodes: out is NULL");
    *out = NULL;
    if (c == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_nodes: no client");
    Distsup__V1__NodesRequest req = DISTSUP__V1__NODES_REQUEST__INIT;
    req.supervisor = S(sup);
    ProtobufCMessage *resp;
    int rc =
        rpc_unary(c, SVC "Nodes", PM(&req), &distsup__v1__nodes_response__descriptor, &resp, client_timeout(c), err);
    if (rc != DS_OK) return rc;
    Distsup__V1__NodesResponse *r = (Distsup__V1__NodesResponse *)resp;
    ds_node_list *list = calloc(1, sizeof *list);
    bool bad = list == NULL;
    if (!bad && r->n_nodes) {
        list->items = calloc(r->n_nodes, sizeof *list->items);
        bad = list->items == NULL;
        for (size_t i = 0; !bad && i < r->n_nodes; i++) {
            const Distsup__V1__NodeInfo *n = r->nodes[i];
            ds_node *d = &list->items[i];
            list->count = i + 1;
            d->name = ds_strdup0(n->name);
            d->address = ds_strdup0(n->address);
            d->up = n->up ? 1 : 0;
            d->self = n->self ? 1 : 0;
            d->children = n->children;
            if (!d->name || !d->address) bad = true;
            if (n->n_labels) {
                d->labels = calloc(n->n_labels, sizeof *d->labels);
                if (d->labels == NULL) {
                    bad = true;
                    break;
                }
                d->n_labels = n->n_labels;
                for (size_t j = 0; j < n->n_labels; j++) {
                    d->labels[j].key = ds_strdup0(n->labels[j]->key);
                    d->labels[j].value = ds_strdup0(n->labels[j]->value);
                    if (!d->labels[j].key || !d->labels[j].value) bad = true;
                }
            }
        }
    }
    protobuf_c_message_free_unpacked(resp, NULL);
    if (bad) {
        ds_node_list_free(list);
        return oom(err);
    }
    *out = list;
    return ds_err_clear(err);
}

int ds_node_for(ds_client *c, const char *sup, const char *key, char **node_out, ds_error *err)
{
    if (node_out == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_node_for: out is NULL");
    *node_out = NULL;
    if (c == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_node_for: no client");
    Distsup__V1__NodeForRequest req = DISTSUP__V1__NODE_FOR_REQUEST__INIT;
    req.supervisor = S(sup);
    req.key = S(key);
    ProtobufCMessage *resp;
    int rc = rpc_unary(c, SVC "NodeFor", PM(&req), &distsup__v1__node_for_response__descriptor, &resp,
                       client_timeout(c), err);
    if (rc != DS_OK) return rc;
    char *n = ds_strdup0(((Distsup__V1__NodeForResponse *)resp)->node);
    protobuf_c_message_free_unpacked(resp, NULL);
    if (n == NULL) return oom(err);
    *node_out = n;
    return ds_err_clear(err);
}

int ds_mine(ds_client *c, const char *sup, const char *key, int *mine, char **node_out, ds_error *err)
{
    if (node_out) *node_out = NULL;
    if (mine == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_mine: mine is NULL");
    *mine = 0;
    if (c == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_mine: no client");
    Distsup__V1__MineRequest req = DISTSUP__V1__MINE_REQUEST__INIT;
    req.supervisor = S(sup);
    req.key = S(key);
    ProtobufCMessage *resp;
    int rc = rpc_unary(c, SVC "Mine", PM(&req), &distsup__v1__mine_response__descriptor, &resp, client_timeout(c), err);
    if (rc != DS_OK) return rc;
    Distsup__V1__MineResponse *r = (Distsup__V1__MineResponse *)resp;
    if (node_out) {
        *node_out = ds_strdup0(r->node);
        if (*node_out == NULL) rc = oom(err);
    }
    if (rc == DS_OK) *mine = r->mine ? 1 : 0;
    protobuf_c_message_free_unpacked(resp, NULL);
    return rc;
}

/* ---- health -------------------------------------------------------------------- */

int ds_health_check(ds_client *c, const char *service, ds_health_status *status, ds_error *err)
{
    if (status == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_health_check: status is NULL");
    *status = DS_HEALTH_UNKNOWN;
    if (c == NULL) return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_health_check: no client");
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = S(service);
    ProtobufCMessage *resp;
    int rc = rpc_unary(c, "/grpc.health.v1.Health/Check", PM(&req),
                       &grpc__health__v1__health_check_response__descriptor, &resp, client_timeout(c), err);
    if (rc != DS_OK) return rc;
    *status = (ds_health_status)((Grpc__Health__V1__HealthCheckResponse *)resp)->status;
    protobuf_c_message_free_unpacked(resp, NULL);
    return ds_err_clear(err);
}

/* ---- watch --------------------------------------------------------------------- */

enum { TAG_SEND = 1, TAG_META, TAG_STATUS, TAG_MSG };
#define TAG(t) ((void *)(intptr_t)(t))

int ds_watch(ds_client *c, const ds_watch_options *opts, ds_watch_fn fn, void *arg, ds_error *err)
{
    if (c == NULL || fn == NULL)
        return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_watch: client and callback are required");
    ds_watch_options none = {0};
    if (opts == NULL) opts = &none;
    if (opts->n_kinds && opts->kinds == NULL)
        return ds_err_set(err, DS_INVALID_ARGUMENT, "ds_watch: NULL kinds with a count");

    Distsup__V1__WatchRequest req = DISTSUP__V1__WATCH_REQUEST__INIT;
    req.supervisor = S(opts->supervisor);
    req.cluster = opts->cluster != 0;
    Distsup__V1__EventKind *kinds = NULL;
    if (opts->n_kinds) {
        kinds = calloc(opts->n_kinds, sizeof *kinds);
        if (kinds == NULL) return oom(err);
        for (size_t i = 0; i < opts->n_kinds; i++) kinds[i] = (Distsup__V1__EventKind)opts->kinds[i];
        req.kinds = kinds;
        req.n_kinds = opts->n_kinds;
    }
    grpc_byte_buffer *send_bb = pack_message(PM(&req));
    free(kinds);

    grpc_completion_queue *cq = grpc_completion_queue_create_for_next(NULL);
    if (cq == NULL) {
        grpc_byte_buffer_destroy(send_bb);
        return ds_err_set(err, DS_INTERNAL, "cannot create a completion queue");
    }
    gpr_timespec deadline = opts->timeout_ms ? deadline_in(opts->timeout_ms) : gpr_inf_future(GPR_CLOCK_REALTIME);
    grpc_call *call = grpc_channel_create_call(c->channel, NULL, GRPC_PROPAGATE_DEFAULTS, cq,
                                               grpc_slice_from_static_string(SVC "Watch"), NULL, deadline, NULL);
    if (call == NULL) {
        grpc_byte_buffer_destroy(send_bb);
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_destroy(cq);
        return ds_err_set(err, DS_INTERNAL, "cannot create a call for Watch");
    }

    grpc_metadata_array initial_md, trailing_md;
    grpc_metadata_array_init(&initial_md);
    grpc_metadata_array_init(&trailing_md);
    grpc_status_code status = GRPC_STATUS_UNKNOWN;
    grpc_slice details = grpc_empty_slice();
    grpc_byte_buffer *recv_bb = NULL;
    int pending = 0;
    int local_rc = DS_OK;   /* an error found here, not reported by the server */
    bool cancelled = false; /* we cancelled the call */
    bool stopped = false;   /* ... because the caller asked to stop */
    grpc_call_error ce;

    grpc_op send_ops[3];
    memset(send_ops, 0, sizeof send_ops);
    send_ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    send_ops[0].data.send_initial_metadata.count = c->n_md;
    send_ops[0].data.send_initial_metadata.metadata = c->n_md ? &c->auth : NULL;
    send_ops[1].op = GRPC_OP_SEND_MESSAGE;
    send_ops[1].data.send_message.send_message = send_bb;
    send_ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    grpc_op meta_op, status_op, msg_op;
    memset(&meta_op, 0, sizeof meta_op);
    meta_op.op = GRPC_OP_RECV_INITIAL_METADATA;
    meta_op.data.recv_initial_metadata.recv_initial_metadata = &initial_md;
    memset(&status_op, 0, sizeof status_op);
    status_op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    status_op.data.recv_status_on_client.trailing_metadata = &trailing_md;
    status_op.data.recv_status_on_client.status = &status;
    status_op.data.recv_status_on_client.status_details = &details;
    memset(&msg_op, 0, sizeof msg_op);
    msg_op.op = GRPC_OP_RECV_MESSAGE;
    msg_op.data.recv_message.recv_message = &recv_bb;

    if ((ce = grpc_call_start_batch(call, send_ops, 3, TAG(TAG_SEND), NULL)) == GRPC_CALL_OK) pending++;
    if (ce == GRPC_CALL_OK && (ce = grpc_call_start_batch(call, &meta_op, 1, TAG(TAG_META), NULL)) == GRPC_CALL_OK)
        pending++;
    if (ce == GRPC_CALL_OK && (ce = grpc_call_start_batch(call, &status_op, 1, TAG(TAG_STATUS), NULL)) == GRPC_CALL_OK)
        pending++;
    if (ce == GRPC_CALL_OK && (ce = grpc_call_start_batch(call, &msg_op, 1, TAG(TAG_MSG), NULL)) == GRPC_CALL_OK)
        pending++;
    if (ce != GRPC_CALL_OK) {
        local_rc = ds_err_set(err, DS_INTERNAL, "grpc_call_start_batch: %s", grpc_call_error_to_string(ce));
        grpc_call_cancel(call, NULL);
        cancelled = true;
    }

    while (pending > 0) {
        if (!cancelled && opts->stop && *opts->stop) {
            grpc_call_cancel(call, NULL);
            cancelled = stopped = true;
        }
        grpc_event ev = grpc_completion_queue_next(cq, deadline_in(100), NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) continue;
        if (ev.type != GRPC_OP_COMPLETE) break; /* cannot happen: we never shut it down */
        pending--;
        switch ((intptr_t)ev.tag) {
        case TAG_META:
            if (ev.success && !cancelled && opts->on_open) opts->on_open(arg);
            break;
        case TAG_MSG: {
            if (recv_bb == NULL) break; /* end of stream: the status follows */
            Distsup__V1__Event *e = (Distsup__V1__Event *)unpack_message(recv_bb, &distsup__v1__event__descriptor);
            grpc_byte_buffer_destroy(recv_bb);
            recv_bb = NULL;
            if (e == NULL) {
                if (!cancelled) {
                    local_rc = ds_err_set(err, DS_INTERNAL, "Watch: an event does not parse");
                    grpc_call_cancel(call, NULL);
                    cancelled = true;
                }
                break;
            }
            if (!cancelled) {
                ds_event de = {
                    .seq = e->seq,
                    .kind = (ds_event_kind)e->kind,
                    .supervisor = S(e->supervisor),
                    .name = S(e->name),
                    .id = S(e->id),
                    .node = S(e->node),
                    .os_pid = e->os_pid,
                    .exit_code = e->exit_code,
                    .signal = e->signal,
                    .reason = S(e->reason),
                    .at_ms = e->at_ms,
                    .restarts = e->restarts,
                };
                if (fn(arg, &de) != 0) {
                    grpc_call_cancel(call, NULL);
                    cancelled = stopped = true;
                }
            }
            protobuf_c_message_free_unpacked(&e->base, NULL);
            if (!cancelled) {
                ce = grpc_call_start_batch(call, &msg_op, 1, TAG(TAG_MSG), NULL);
                if (ce == GRPC_CALL_OK) {
                    pending++;
                } else {
                    local_rc = ds_err_set(err, DS_INTERNAL, "grpc_call_start_batch: %s", grpc_call_error_to_string(ce));
                    grpc_call_cancel(call, NULL);
                    cancelled = true;
                }
            }
            break;
        }
        default: break;
        }
    }

    int rc;
    if (stopped) rc = ds_err_clear(err);
    else if (local_rc != DS_OK) rc = local_rc;
    else if (status != GRPC_STATUS_OK) rc = status_error(err, status, details);
    else rc = ds_err_clear(err);

    if (recv_bb) grpc_byte_buffer_destroy(recv_bb);
    grpc_byte_buffer_destroy(send_bb);
    grpc_metadata_array_destroy(&initial_md);
    grpc_metadata_array_destroy(&trailing_md);
    grpc_slice_unref(details);
    grpc_call_unref(call);
    grpc_completion_queue_shutdown(cq);
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
    }
    grpc_completion_queue_destroy(cq);
    return rc;
}

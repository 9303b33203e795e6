/* libdistsup: the C client of distsupd (service distsup.v1.Supervisor).
 *
 * Plain C11 over gRPC's C core.  Link with -lgrpc -lgpr -lprotobuf-c (Bazel:
 * deps = ["//clients/c:distsup"]).
 *
 *   ds_client *c; ds_error err;
 *   ds_connect_options o = { .token_file = "/etc/distsup/api.token" };  // or NULL options
 *   if (ds_connect("unix:/run/distsup/api.sock", &o, &c, &err) != DS_OK) { ... err.message ... }
 *   const char *argv[] = { "/usr/bin/sleep", "3600" };
 *   ds_child_spec spec = { .name = "sleeper", .argv = argv, .argc = 2,
 *                          .protocol = DS_PROTOCOL_NONE };
 *   ds_child *child;
 *   if (ds_start_child(c, NULL, &spec, NULL, &child, &err) == DS_OK) {
 *       printf("%s runs on %s as pid %d\n", child->name, child->node, child->os_pid);
 *       ds_child_free(child);
 *   }
 *   ds_close(c);
 *
 * Conventions (every function below):
 *  - The return value is the gRPC status code of the RPC: 0 (DS_OK) on success, else
 *    one of the DS_* codes below.  Errors made locally use the same codes:
 *    DS_INVALID_ARGUMENT for bad arguments (NULL client, missing name, ...),
 *    DS_RESOURCE_EXHAUSTED for out of memory, DS_INTERNAL for a reply that does not
 *    parse, DS_UNAVAILABLE when the daemon cannot be reached, DS_DEADLINE_EXCEEDED
 *    when the RPC deadline passes.
 *  - `err` may be NULL.  When non-NULL it is always written: code = the return value,
 *    message = "" on success, else a NUL-terminated text from the daemon (or from
 *    this library) a person can act on.  The ds_error belongs to the caller; nothing
 *    in it needs freeing.
 *  - `sup` names the supervisor; NULL or "" means "default".
 *  - Results come back through `out` pointers and belong to the caller, who releases
 *    them with the matching ds_*_free function (each accepts NULL).  On an error,
 *    *out is set to NULL (or zeroed for plain structs) and there is nothing to free.
 *  - Input pointers are only read during the call; the library keeps none of them.
 *  - Every RPC carries a deadline: the client's default (DS_DEFAULT_TIMEOUT_MS unless
 *    changed with ds_connect's options or ds_client_set_timeout_ms).  ds_call uses
 *    its own timeout plus that default as slack, so the daemon's DEADLINE_EXCEEDED
 *    (the child did not answer in time) reaches the caller with its message.
 *    ds_watch has its own optional deadline.
 *
 * Threads: a ds_client may be used from several threads at once.  All calls share
 * one gRPC channel (one HTTP/2 connection); each RPC has its own completion queue.
 * ds_close must not race with calls in flight on the same client.
 */
#ifndef DISTSUP_CLIENT_H
#define DISTSUP_CLIENT_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* gRPC status codes (the same numbers as grpc_status_code). */
enum {
    DS_OK = 0,
    DS_CANCELLED = 1,
    DS_UNKNOWN = 2,
    DS_INVALID_ARGUMENT = 3,
    DS_DEADLINE_EXCEEDED = 4,
    DS_NOT_FOUND = 5,
    DS_ALREADY_EXISTS = 6,
    DS_PERMISSION_DENIED = 7,
    DS_RESOURCE_EXHAUSTED = 8,
    DS_FAILED_PRECONDITION = 9,
    DS_ABORTED = 10,
    DS_OUT_OF_RANGE = 11,
    DS_UNIMPLEMENTED = 12,
    DS_INTERNAL = 13,
    DS_UNAVAILABLE = 14,
    DS_DATA_LOSS = 15,
    DS_UNAUTHENTICATED = 16,
};

#define DS_DEFAULT_ADDRESS "127.0.0.1:50051"
#define DS_DEFAULT_TIMEOUT_MS 10000u
#define DS_ERROR_MESSAGE_MAX 512

typedef struct ds_error {
    int code;                           /* gRPC status code; 0 = OK */
    char message[DS_ERROR_MESSAGE_MAX]; /* NUL-terminated; may be truncated */
} ds_error;

/* "NOT_FOUND" for 5, ... ; "UNKNOWN_CODE" outside 0..16.  Static string. */
const char *ds_status_name(int code);

/* ---- client ------------------------------------------------------------------ */

typedef struct ds_client ds_client;

typedef struct ds_connect_options {
    uint32_t timeout_ms; /* default RPC deadline; 0 = DS_DEFAULT_TIMEOUT_MS */
    /* Non-zero: ds_connect waits (up to timeout_ms) until the channel is connected
     * and fails with DS_UNAVAILABLE if it does not get there.  Zero (default):
     * connect lazily; the first RPC reports an unreachable daemon. */
    int wait_connected;
    /* The daemon's API token (its --api-token-file): every RPC then carries the
     * metadata "authorization: Bearer TOKEN".  token wins over token_file, a file
     * whose content (surrounding whitespace dropped) is the token, read once here.
     * NULL: no token.  The library reads no environment variable (distsupctl does). */
    const char *token;
    const char *token_file;
    /* TLS (the daemon's tls_cert): non-zero, or any of the files below set, makes
     * the channel TLS.  tls_ca_file: PEM roots that verify the daemon (NULL: gRPC's
     * default roots).  tls_cert_file and tls_key_file: this client's certificate and
     * key, for a daemon with tls_client_ca (mTLS). */
    int tls;
    const char *tls_ca_file;
    const char *tls_cert_file;
    const char *tls_key_file;
} ds_connect_options;

/* Opens a client for `address` ("HOST:PORT", "unix:/path", any gRPC target; NULL
 * means DS_DEFAULT_ADDRESS).  opts may be NULL.  On success *out is a client to
 * release with ds_close.  Calls grpc_init() (balanced by ds_close).  An unreadable or
 * empty token file or TLS file fails with DS_INVALID_ARGUMENT and its name. */
int ds_connect(const char *address, const ds_connect_options *opts, ds_client **out, ds_error *err);
/* Closes the channel and frees the client.  NULL is fine. */
void ds_close(ds_client *c);
/* Changes the default RPC deadline (0 = DS_DEFAULT_TIMEOUT_MS).  Thread-safe. */
void ds_client_set_timeout_ms(ds_client *c, uint32_t timeout_ms);
/* on: the children that ds_start_child, ds_children, ds_whereis and ds_whois return
 * carry their spec's init and env values (include_spec_data).  Off by default: they
 * come without them, so that large inits cannot make answers too big.  Thread-safe. */
void ds_client_set_spec_data(ds_client *c, int on);
/* The target string given to ds_connect (owned by the client). */
const char *ds_client_address(const ds_client *c);

/* Frees a string or byte buffer returned by this library.  NULL is fine. */
void ds_free(void *p);

/* ---- child specs and children ----------------------------------------------- */

typedef enum ds_restart {
    DS_RESTART_PERMANENT = 0, /* always restarted */
    DS_RESTART_TRANSIENT = 1, /* restarted after an abnormal exit only */
    DS_RESTART_TEMPORARY = 2, /* never restarted */
} ds_restart;

typedef enum ds_protocol {
    DS_PROTOCOL_FRAMES = 0, /* speaks the child frame protocol: call/cast work */
    DS_PROTOCOL_NONE = 1,   /* plain process: supervised only */
} ds_protocol;

typedef enum ds_child_state {
    DS_STATE_STARTING = 0,
    DS_STATE_RUNNING = 1,
    DS_STATE_RESTARTING = 2,
    DS_STATE_STOPPING = 3,
    DS_STATE_FAILED = 4,
    DS_STATE_SUSPENDED = 5, /* held back: its node is syncing with peers or has no quorum */
} ds_child_state;

typedef struct ds_kv {
    const char *key;
    const char *value;
} ds_kv;

/* A child spec.  As input (ds_start_child) every pointer is the caller's and may be
 * NULL when its count is 0; NULL strings mean "unset".  As part of a ds_child the
 * strings and arrays belong to that ds_child and are never NULL (empty strings and
 * zero counts instead, arrays may be NULL when their count is 0). */
typedef struct ds_child_spec {
    const char *name;        /* unique in its supervisor; generated when empty */
    const char *const *argv; /* argv[0] is looked up in PATH when it has no '/';
                                a relative path is resolved against cwd */
    size_t argc;
    const ds_kv *env; /* added to the allowlisted environment (docs/security.md) */
    size_t n_env;
    const char *cwd; /* default: "/" */
    ds_restart restart;
    uint32_t shutdown_ms; /* SIGTERM, wait, SIGKILL; 0 = the default 5000 */
    int kill_immediately; /* non-zero: SIGKILL at once (brutal_kill) */
    const char *node;     /* pin to this node */
    const char *key;      /* placement key; default: the name */
    const uint8_t *init;  /* handed to the child in its Init frame */
    size_t init_len;
    const ds_kv *labels;
    size_t n_labels;
    ds_protocol protocol;
    /* A hosted child (docs/hosting.md): run by an app attached with the kind; then
     * argv stays empty (argc 0).  NULL or "": a process child. */
    const char *kind;
} ds_child_spec;

/* One child as the daemon reports it.  Every string is non-NULL. */
typedef struct ds_child {
    char *supervisor;
    char *name;
    char *id; /* this incarnation's id ("node/seq") */
    char *node;
    int32_t os_pid; /* 0 when not running */
    ds_child_state state;
    uint32_t restarts;
    int64_t started_at_ms; /* unix ms of the current incarnation's start */
    uint64_t incarnation;
    ds_child_spec spec; /* owned by this ds_child */
    uint64_t calls;     /* calls, casts and sends delivered by its node since that node started it */
} ds_child;

typedef struct ds_child_list {
    ds_child *items; /* count entries (NULL when count is 0) */
    size_t count;
} ds_child_list;

void ds_child_free(ds_child *child);
void ds_child_list_free(ds_child_list *list);

/* "PERMANENT"/"TRANSIENT"/"TEMPORARY", "FRAMES"/"NONE", "RUNNING"...  Static. */
const char *ds_restart_name(ds_restart r);
const char *ds_protocol_name(ds_protocol p);
const char *ds_child_state_name(ds_child_state s);

/* StartChild.  `spec` must have at least one argv entry.  The spec's node and the
 * optional `node` argument pin the child (either may be set; NULL = anywhere).
 * *out: the started child (ds_child_free).  out may be NULL if not wanted. */
int ds_start_child(ds_client *c, const char *sup, const ds_child_spec *spec, const char *node, ds_child **out,
                   ds_error *err);

typedef struct ds_terminated {
    char *name;        /* owned: ds_terminated_free */
    int32_t exit_code; /* -1 if it died of a signal */
    int32_t signal;
} ds_terminated;
void ds_terminated_free(ds_terminated *t);

/* TerminateChild by name, or by id when name is NULL or "".  out may be NULL. */
int ds_terminate_child(ds_client *c, const char *sup, const char *name, const char *id, ds_terminated **out,
                       ds_error *err);

/* Children, cluster-wide (node NULL or "") or on one node: every page of them. */
int ds_children(ds_client *c, const char *sup, const char *node, ds_child_list **out, ds_error *err);

typedef struct ds_counts {
    uint32_t specs;       /* every child the supervisor knows */
    uint32_t active;      /* running now */
    uint32_t supervisors; /* always 0 */
    uint32_t workers;
    uint32_t failed;
} ds_counts;

/* CountChildren (node NULL or "" = every node).  Fills the caller's *out. */
int ds_count_children(ds_client *c, const char *sup, const char *node, ds_counts *out, ds_error *err);

/* WhereIs: name -> child.  DS_NOT_FOUND when no such child. */
int ds_whereis(ds_client *c, const char *sup, const char *name, ds_child **out, ds_error *err);

/* WhoIs: id -> child (its name is (*out)->name). */
int ds_whois(ds_client *c, const char *sup, const char *id, ds_child **out, ds_error *err);

/* ---- messages ------------------------------------------------------------------ */

typedef struct ds_call_result {
    uint8_t *data; /* the reply bytes; a NUL follows data[len] so a
                      text reply can be used as a C string */
    size_t len;
    char *node; /* node the child ran on */
} ds_call_result;
void ds_call_result_free(ds_call_result *r);

/* Call: sends payload to the child and waits for its reply.  timeout_ms is the
 * child's time to answer (0 = the daemon's default, 5000 ms); the daemon answers
 * DS_DEADLINE_EXCEEDED when it passes.  The RPC deadline is timeout_ms plus the
 * client's default deadline.  Errors the child returns come back as their status. */
int ds_call(ds_client *c, const char *sup, const char *name, const void *payload, size_t len, uint32_t timeout_ms,
            ds_call_result **out, ds_error *err);
/* Cast: fire and forget (delivered as a Cast frame). */
int ds_cast(ds_client *c, const char *sup, const char *name, const void *payload, size_t len, ds_error *err);
/* Send: a plain message (delivered as an Info frame). */
int ds_send(ds_client *c, const char *sup, const char *name, const void *payload, size_t len, ds_error *err);

/* Per-message options of the *_opts variants (NULL options: as without them). */
typedef struct ds_message_options {
    /* A W3C trace context the child receives with the message
     * (docs/observability.md): traceparent "00-<32 hex>-<16 hex>-<2 hex>", and
     * optionally tracestate.  The daemon drops one that is not valid.  NULL: none. */
    const char *traceparent;
    const char *tracestate;
} ds_message_options;
int ds_call_opts(ds_client *c, const char *sup, const char *name, const void *payload, size_t len, uint32_t timeout_ms,
                 const ds_message_options *opts, ds_call_result **out, ds_error *err);
int ds_cast_opts(ds_client *c, const char *sup, const char *name, const void *payload, size_t len,
                 const ds_message_options *opts, ds_error *err);
int ds_send_opts(ds_client *c, const char *sup, const char *name, const void *payload, size_t len,
                 const ds_message_options *opts, ds_error *err);

/* ---- cluster ------------------------------------------------------------------- */

typedef struct ds_node {
    char *name;
    char *address;
    int up;
    int self; /* the node this client talks to */
    uint32_t children;
    ds_kv *labels; /* owned by the list */
    size_t n_labels;
} ds_node;

typedef struct ds_node_list {
    ds_node *items;
    size_t count;
} ds_node_list;
void ds_node_list_free(ds_node_list *list);

int ds_nodes(ds_client *c, const char *sup, ds_node_list **out, ds_error *err);
/* NodeFor: the node a key is placed on.  *node_out: ds_free. */
int ds_node_for(ds_client *c, const char *sup, const char *key, char **node_out, ds_error *err);
/* Mine: is key placed on the daemon's own node?  *mine = 0 or 1; *node_out (may be
 * NULL if not wanted) is the key's node, to ds_free. */
int ds_mine(ds_client *c, const char *sup, const char *key, int *mine, char **node_out, ds_error *err);

/* ---- health (grpc.health.v1.Health/Check) --------------------------------------- */

typedef enum ds_health_status {
    DS_HEALTH_UNKNOWN = 0,
    DS_HEALTH_SERVING = 1,
    DS_HEALTH_NOT_SERVING = 2,
    DS_HEALTH_SERVICE_UNKNOWN = 3,
} ds_health_status;
const char *ds_health_status_name(ds_health_status s);

/* service NULL or "" asks about the server as a whole. */
int ds_health_check(ds_client *c, const char *service, ds_health_status *status, ds_error *err);

/* ---- watch ---------------------------------------------------------------------- */

typedef enum ds_event_kind {
    DS_EVENT_UNSPECIFIED = 0,
    DS_EVENT_PROCESS_START = 1,
    DS_EVENT_PROCESS_STOP = 2,
    DS_EVENT_PROCESS_RESTART = 3,
    DS_EVENT_PROCESS_FAILED = 4,
    DS_EVENT_PROCESS_MOVED = 5,
    DS_EVENT_NODE_UP = 6,
    DS_EVENT_NODE_DOWN = 7,
    DS_EVENT_NODE_TERMINATE = 8,
} ds_event_kind;
/* "PROCESS_START"...; "UNSPECIFIED" for unknown values.  Static. */
const char *ds_event_kind_name(ds_event_kind k);
/* Parses "PROCESS_START", "process_start" or "process-start"; -1 if unknown. */
int ds_event_kind_parse(const char *text);

/* One event.  Valid only during the callback: copy what you keep. */
typedef struct ds_event {
    uint64_t seq;
    ds_event_kind kind;
    const char *supervisor;
    const char *name;
    const char *id;
    const char *node;
    int32_t os_pid;
    int32_t exit_code; /* -1 when killed by a signal */
    int32_t signal;
    const char *reason;
    int64_t at_ms;
    uint32_t restarts;
} ds_event;

/* Return 0 to keep watching, non-zero to stop (ds_watch then returns DS_OK). */
typedef int (*ds_watch_fn)(void *arg, const ds_event *event);

typedef struct ds_watch_options {
    const char *supervisor;     /* NULL/"" = "default"; "*" = every supervisor */
    const ds_event_kind *kinds; /* NULL/0 = every kind */
    size_t n_kinds;
    uint32_t timeout_ms; /* 0: no deadline; else the stream's deadline, after
                            which ds_watch returns DS_DEADLINE_EXCEEDED */
    /* Optional.  Polled about every 100 ms; once non-zero the stream is cancelled and
     * ds_watch returns DS_OK.  A signal handler may set it. */
    const volatile sig_atomic_t *stop;
    /* Optional.  Called once when the daemon has accepted the stream (its initial
     * metadata arrived): events after this point will be delivered. */
    void (*on_open)(void *arg);
    /* Non-zero: every node's events (cluster mode); zero: this node's only. */
    int cluster;
} ds_watch_options;

/* Watch: follows lifecycle events, calling fn for each, until fn returns non-zero,
 * *opts->stop becomes non-zero (both DS_OK), the daemon ends the stream (its
 * status), or the deadline passes.  Blocks the calling thread.  opts may be NULL. */
int ds_watch(ds_client *c, const ds_watch_options *opts, ds_watch_fn fn, void *arg, ds_error *err);

#ifdef __cplusplus
}
#endif

#endif

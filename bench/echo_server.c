/* echo_server: the baseline of bench/call_bench — a bare gRPC C-core unary server
 * that answers /bench.Echo/Echo with the request's own bytes.  It is the floor of
 * any unary gRPC hop on this machine: distsupd's Call adds its reactor, a pipe to
 * the child, the child and the pipe back on top of this.
 *
 * Built like distsupd's gRPC side (rpc.c): one completion queue drained by N
 * threads (default 2, as distsupd), registered method with the payload read up
 * front, one batch of SEND_INITIAL_METADATA + SEND_MESSAGE + SEND_STATUS +
 * RECV_CLOSE per call.  Unknown methods get UNIMPLEMENTED.
 *
 *   echo_server [--listen HOST:PORT] [--port-file FILE] [--threads N]
 *
 * Stops cleanly on SIGTERM or SIGINT. */
#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/time.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define METHOD "/bench.Echo/Echo"
#define WAITING_PER_KIND 64 /* requested calls kept waiting, per method kind */

enum stage { ST_REQUESTED, ST_ANSWERED, ST_SHUTDOWN };

struct ctx {
    enum stage stage;
    int registered; /* 1: the echo method; 0: any other method */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_metadata_array md;
    grpc_call_details details;
    grpc_byte_buffer *payload;
    grpc_slice status_text;
    int cancelled;
};

static grpc_server *server;
static grpc_completion_queue *cq;
static void *method_handle;
static atomic_int stopping, shut_down;
static atomic_long live;
static struct ctx shutdown_tag = {.stage = ST_SHUTDOWN};

static void request_one(int registered)
{
    if (atomic_load(&stopping)) return;
    struct ctx *c = calloc(1, sizeof *c);
    if (!c) {
        fprintf(stderr, "echo_server: out of memory\n");
        return;
    }
    c->registered = registered;
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    atomic_fetch_add(&live, 1);
    grpc_call_error e = registered ? grpc_server_request_registered_call(server, method_handle, &c->call, &c->deadline,
                                                                         &c->md, &c->payload, cq, cq, c)
                                   : grpc_server_request_call(server, &c->call, &c->details, &c->md, cq, cq, c);
    if (e != GRPC_CALL_OK) {
        fprintf(stderr, "echo_server: request_call: error %d\n", (int)e);
        grpc_metadata_array_destroy(&c->md);
        grpc_call_details_destroy(&c->details);
        atomic_fetch_sub(&live, 1);
        free(c);
    }
}

static void ctx_free(struct ctx *c)
{
    if (c->call) grpc_call_unref(c->call);
    if (c->payload) grpc_byte_buffer_destroy(c->payload);
    if (c->stage == ST_ANSWERED) grpc_slice_unref(c->status_text);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    atomic_fetch_sub(&live, 1);
    free(c);
}

static void answer(struct ctx *c)
{
    grpc_op ops[4];
    memset(ops, 0, sizeof ops);
    size_t n = 0;
    ops[n++].op = GRPC_OP_SEND_INITIAL_METADATA;
    if (c->registered) {
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n++].data.send_message.send_message = c->payload; /* echo the bytes as they came */
        c->status_text = grpc_slice_from_static_string("");
    } else {
        c->status_text = grpc_slice_from_static_string("echo_server only serves " METHOD);
    }
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.status = c->registered ? GRPC_STATUS_OK : GRPC_STATUS_UNIMPLEMENTED;
    ops[n++].data.send_status_from_server.status_details = &c->status_text;
    ops[n].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[n++].data.recv_close_on_server.cancelled = &c->cancelled;
    c->stage = ST_ANSWERED;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, c, NULL);
    if (e != GRPC_CALL_OK) {
        fprintf(stderr, "echo_server: start_batch: error %d\n", (int)e);
        ctx_free(c);
    }
}

static void *cq_thread(void *arg)
{
    (void)arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        struct ctx *c = ev.tag;
        switch (c->stage) {
        case ST_SHUTDOWN: atomic_store(&shut_down, 1); break;
        case ST_REQUESTED:
            if (!ev.success || atomic_load(&stopping)) {
                ctx_free(c);
                break;
            }
            request_one(c->registered); /* keep one waiting in its place */
            answer(c);
            break;
        case ST_ANSWERED: ctx_free(c); break;
        }
    }
    return NULL;
}

/* Without threads: takes events here, freeing contexts, until the server reports
 * its shutdown (0) or the queue itself is shut down (1). */
static void drain_until(int queue_shutdown)
{
    for (;;) {
        if (!queue_shutdown && atomic_load(&shut_down)) return;
        grpc_event ev = grpc_completion_queue_next(cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) return;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        struct ctx *c = ev.tag;
        if (c->stage == ST_SHUTDOWN) atomic_store(&shut_down, 1);
        else ctx_free(c);
    }
}

static int write_port_file(const char *path, int port)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return -1;
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    int ok = fprintf(f, "%d\n", port) > 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) return -1;
    return 0;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: echo_server [--listen HOST:PORT] [--port-file FILE] [--threads N]\n"
            "A bare gRPC C-core unary echo server (" METHOD "), the baseline of call_bench.\n");
}

int main(int argc, char **argv)
{
    const char *listen = "127.0.0.1:0", *port_file = NULL;
    long threads = 2;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if (i + 1 >= argc) {
            usage(stderr);
            return 2;
        }
        if (!strcmp(argv[i], "--listen")) listen = argv[++i];
        else if (!strcmp(argv[i], "--port-file")) port_file = argv[++i];
        else if (!strcmp(argv[i], "--threads")) {
            char *end;
            threads = strtol(argv[++i], &end, 10);
            if (*end || threads < 1 || threads > 64) {
                fprintf(stderr, "echo_server: --threads takes 1 to 64\n");
                return 2;
            }
        } else {
            usage(stderr);
            return 2;
        }
    }
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0) {
        fprintf(stderr, "echo_server: cannot block signals\n");
        return 1;
    }
    grpc_init();
    server = grpc_server_create(NULL, NULL);
    cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(server, cq, NULL);
    method_handle = grpc_server_register_method(server, METHOD, NULL, GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    int port = grpc_server_add_http2_port(server, listen, creds);
    grpc_server_credentials_release(creds);
    int rc = 0;
    pthread_t *tids = NULL;
    long started = 0;
    if (port <= 0 || !method_handle) {
        fprintf(stderr, "echo_server: cannot listen on %s\n", listen);
        rc = 1;
        grpc_server_destroy(server);
        goto drain;
    }
    grpc_server_start(server);
    for (int k = 0; k < WAITING_PER_KIND; k++) {
        request_one(1);
        request_one(0);
    }
    tids = calloc((size_t)threads, sizeof *tids);
    for (; tids && started < threads; started++)
        if (pthread_create(&tids[started], NULL, cq_thread, NULL) != 0) break;
    if (started == 0) {
        fprintf(stderr, "echo_server: cannot start threads\n");
        rc = 1;
    } else {
        if (port_file && write_port_file(port_file, port) != 0) {
            fprintf(stderr, "echo_server: cannot write %s: %s\n", port_file, strerror(errno));
            rc = 1;
        } else {
            fprintf(stderr, "echo_server: serving %s on port %d with %ld threads\n", METHOD, port, started);
            int sig;
            while (sigwait(&set, &sig) != 0) {}
        }
    }
    atomic_store(&stopping, 1);
    grpc_server_shutdown_and_notify(server, cq, &shutdown_tag);
    grpc_server_cancel_all_calls(server);
    if (started == 0) drain_until(0); /* nobody drains the queue: do it here */
    for (int i = 0; i < 2000 && !atomic_load(&shut_down); i++) {
        struct timespec ts = {0, 5 * 1000000};
        nanosleep(&ts, NULL);
    }
    grpc_server_destroy(server);
drain:
    grpc_completion_queue_shutdown(cq);
    for (long i = 0; i < started; i++) pthread_join(tids[i], NULL);
    if (started == 0) drain_until(1);
    free(tids);
    grpc_completion_queue_destroy(cq);
    grpc_shutdown();
    if (atomic_load(&live) != 0) fprintf(stderr, "echo_server: %ld call contexts left at exit\n", atomic_load(&live));
    return rc;
}

#include "clients/c/worker.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "framing/frame.h"

struct ds_reply {
    uint8_t *payload;
    size_t len;
    char *error;
    unsigned code;
};

int ds_reply_set(struct ds_reply *r, const void *payload, size_t n)
{
    uint8_t *p = malloc(n ? n : 1);
    if (!p) return -1;
    if (n) memcpy(p, payload, n);
    free(r->payload);
    r->payload = p;
    r->len = n;
    return 0;
}

int ds_reply_error(struct ds_reply *r, unsigned code, const char *message)
{
    char *m = strdup(message ? message : "error");
    if (!m) return -1;
    free(r->error);
    r->error = m;
    r->code = code ? code : 2;
    return 0;
}

static int write_all(int fd, const uint8_t *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static int send_frame(const Distsup__V1__ChildFrame *f)
{
    struct dsbuf out = {0};
    int rc = frame_append(&out, f, FRAME_DEFAULT_MAX);
    if (rc == 0) rc = write_all(STDOUT_FILENO, out.data + out.off, dsbuf_unread(&out));
    dsbuf_free(&out);
    if (rc != 0) fprintf(stderr, "worker: cannot write a frame to stdout: %s\n", strerror(errno));
    return rc;
}

/* Reads one frame from stdin into in.  1 = frame, 0 = EOF, -1 = error. */
static int read_frame(struct dsbuf *in, Distsup__V1__ChildFrame **out)
{
    for (;;) {
        const uint8_t *body;
        size_t blen, used;
        enum frame_result r = frame_split(in->data + in->off, dsbuf_unread(in), FRAME_DEFAULT_MAX, &body, &blen, &used);
        if (r == FRAME_TOO_BIG) {
            fprintf(stderr, "worker: frame from the sidecar is too big\n");
            return -1;
        }
        if (r == FRAME_OK) {
            *out = frame_decode(body, blen);
            dsbuf_consume(in, used);
            if (!*out) {
                fprintf(stderr, "worker: undecodable frame from the sidecar\n");
                return -1;
            }
            return 1;
        }
        if (dsbuf_reserve(in, 65536) != 0) return -1;
        ssize_t n = read(STDIN_FILENO, in->data + in->len, in->cap - in->len);
        if (n < 0) {
            if (errno == EINTR) continue;
            fprintf(stderr, "worker: read stdin: %s\n", strerror(errno));
            return -1;
        }
        if (n == 0) return 0;
        in->len += (size_t)n;
    }
}

static int handle_call(const struct ds_worker_callbacks *cb, const Distsup__V1__CallFrame *c, int *stop)
{
    struct ds_reply r = {0};
    int rc = 0;
    if (!cb->on_call) {
        rc = ds_reply_error(&r, 12, "this worker does not handle calls");
    } else if (cb->on_call(cb->arg, c->payload.data, c->payload.len, &r) != 0) {
        *stop = 1;
    }
    Distsup__V1__Reply reply = DISTSUP__V1__REPLY__INIT;
    reply.ref = c->ref;
    reply.payload.data = r.payload;
    reply.payload.len = r.len;
    if (r.error) {
        reply.error = r.error;
        reply.code = r.code;
    }
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_REPLY;
    f.reply = &reply;
    if (rc == 0) rc = send_frame(&f);
    free(r.payload);
    free(r.error);
    return rc;
}

static int send_state(const struct ds_worker_callbacks *cb)
{
    size_t len = 0;
    uint8_t *st = cb->get_state(cb->arg, &len);
    if (!st) return 0;
    Distsup__V1__StateFrame s = DISTSUP__V1__STATE_FRAME__INIT;
    s.state.data = st;
    s.state.len = len;
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    f.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_STATE;
    f.state = &s;
    int rc = send_frame(&f);
    free(st);
    return rc;
}

/* The message's trace context for the callbacks, when they asked for it. */
static void set_trace(const struct ds_worker_callbacks *cb, const char *parent, const char *state)
{
    if (!cb->trace) return;
    cb->trace->traceparent = parent ? parent : "";
    cb->trace->tracestate = parent && parent[0] && state ? state : "";
}

int ds_worker_run(const struct ds_worker_callbacks *cb)
{
    struct dsbuf in = {0};
    Distsup__V1__ChildFrame *f = NULL;
    int rc = read_frame(&in, &f);
    if (rc <= 0) {
        dsbuf_free(&in);
        return rc == 0 ? 0 : 1;
    }
    if (f->frame_case != DISTSUP__V1__CHILD_FRAME__FRAME_INIT) {
        fprintf(stderr, "worker: the first frame from the sidecar is not Init\n");
        frame_decode_free(f);
        dsbuf_free(&in);
        return 1;
    }
    if (cb->on_init) {
        const Distsup__V1__Init *i = f->init;
        struct ds_worker_init wi = {
            .supervisor = i->supervisor,
            .name = i->name,
            .id = i->id,
            .node = i->node,
            .init = i->init.data,
            .init_len = i->init.len,
            .state = i->state.len ? i->state.data : NULL,
            .state_len = i->state.len,
        };
        int code = cb->on_init(cb->arg, &wi);
        if (code != 0) {
            frame_decode_free(f);
            dsbuf_free(&in);
            return code;
        }
    }
    frame_decode_free(f);
    Distsup__V1__Ready ready = DISTSUP__V1__READY__INIT;
    Distsup__V1__ChildFrame rf = DISTSUP__V1__CHILD_FRAME__INIT;
    rf.frame_case = DISTSUP__V1__CHILD_FRAME__FRAME_READY;
    rf.ready = &ready;
    if (send_frame(&rf) != 0) {
        dsbuf_free(&in);
        return 1;
    }
    int exit_code = 0, stop = 0;
    while (!stop) {
        rc = read_frame(&in, &f);
        if (rc <= 0) {
            exit_code = rc == 0 ? 0 : 1;
            break;
        }
        switch (f->frame_case) {
        case DISTSUP__V1__CHILD_FRAME__FRAME_CALL:
            set_trace(cb, f->call->traceparent, f->call->tracestate);
            if (handle_call(cb, f->call, &stop) != 0) {
                stop = 1;
                exit_code = 1;
            } else if (stop) exit_code = 1;
            break;
        case DISTSUP__V1__CHILD_FRAME__FRAME_CAST:
            set_trace(cb, f->cast->traceparent, f->cast->tracestate);
            if (cb->on_cast) cb->on_cast(cb->arg, f->cast->payload.data, f->cast->payload.len);
            break;
        case DISTSUP__V1__CHILD_FRAME__FRAME_INFO:
            set_trace(cb, f->info->traceparent, f->info->tracestate);
            if (cb->on_info) cb->on_info(cb->arg, f->info->payload.data, f->info->payload.len);
            break;
        case DISTSUP__V1__CHILD_FRAME__FRAME_TERMINATE:
            if (cb->get_state && send_state(cb) != 0) exit_code = 1;
            if (cb->on_terminate) cb->on_terminate(cb->arg, f->terminate->reason);
            stop = 1;
            break;
        default: fprintf(stderr, "worker: ignoring unexpected frame %d\n", (int)f->frame_case); break;
        }
        frame_decode_free(f);
    }
    dsbuf_free(&in);
    return exit_code;
}

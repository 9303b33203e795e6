/* cluster/forward.c: Requests run on another node, and their answers (cluster.h). */
#include <grpc/status.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar/cluster/cluster.h"
#include "sidecar/fnv.h"
#include "sidecar/log.h"
#include "sidecar/ops.h"
#include "sidecar/peer.h"

/* Sends req to node to be run there (REQ_LOCAL); done gets its answer, or
 * UNAVAILABLE if the node cannot be reached or goes down first, or
 * DEADLINE_EXCEEDED at deadline (absolute ms; 0: none). */
/* How long a forwarded request without a deadline of its own waits for its answer
 * (its request or answer may be lost with a broken link while the node stays up):
 * a minute, or longer than any supervisor's start_timeout_ms, so that a start or a
 * move on a slow node is never cut short. */
static uint64_t forward_wait_ms(const struct core *c)
{
    uint64_t ms = 60000;
    for (size_t i = 0; i < c->n_sups; i++)
        if (2ull * c->sups[i].cfg->start_timeout_ms + 5000 > ms) ms = 2ull * c->sups[i].cfg->start_timeout_ms + 5000;
    return ms;
}

/* ---------- the wire: Forward and ForwardReply in one pass ----------
 *
 * A forwarded request is ClusterMsg{forward = Forward{id, op, request, timeout_ms}}
 * with the request message packed into Forward.request (proto/distsup/v1/peer.proto).
 * Packing it with protobuf-c would pack the request into a buffer and then copy that
 * buffer into the envelope (and unpacking would copy it out again before unpacking
 * the request).  Here the envelope's few header bytes are written around the request,
 * which is packed once in place, and read back without a copy.  The bytes are the
 * ones protobuf-c writes (fields in number order, proto3 defaults left out;
 * tests/unit/forward_wire_test.c checks both ways). */

#define TAG_FORWARD 0x22u /* ClusterMsg.forward: field 4, length-delimited */
#define TAG_REPLY 0x2au   /* ClusterMsg.reply: field 5, length-delimited */

static size_t varint_len(uint64_t v)
{
    size_t n = 1;
    while (v >= 0x80) {
        v >>= 7;
        n++;
    }
    return n;
}

static uint8_t *put_varint(uint8_t *p, uint64_t v)
{
    while (v >= 0x80) {
        *p++ = (uint8_t)(v | 0x80);
        v >>= 7;
    }
    *p++ = (uint8_t)v;
    return p;
}

/* Size of field `num` as a varint (0 when v is 0) or as bytes of length n (0 when n is 0). */
static size_t f_varint(uint64_t v) { return v ? 1 + varint_len(v) : 0; }
static size_t f_bytes(size_t n) { return n ? 1 + varint_len(n) + n : 0; }

static uint8_t *put_fvarint(uint8_t *p, unsigned num, uint64_t v)
{
    if (!v) return p;
    *p++ = (uint8_t)(num << 3);
    return put_varint(p, v);
}

static uint8_t *put_fhead(uint8_t *p, unsigned num, size_t n)
{
    *p++ = (uint8_t)(num << 3 | 2);
    return put_varint(p, n);
}

uint8_t *forward_pack(uint64_t id, int op, const ProtobufCMessage *req, uint32_t timeout_ms, size_t *len)
{
    size_t rlen = protobuf_c_message_get_packed_size(req);
    size_t body = f_varint(id) + f_varint((uint32_t)op) + f_bytes(rlen) + f_varint(timeout_ms);
    *len = 1 + varint_len(body) + body;
    uint8_t *buf = malloc(*len), *p = buf;
    if (!buf) return NULL;
    p = put_fhead(p, 4, body);
    p = put_fvarint(p, 1, id);
    p = put_fvarint(p, 2, (uint32_t)op);
    if (rlen) p = put_fhead(p, 3, rlen), p += protobuf_c_message_pack(req, p);
    put_fvarint(p, 4, timeout_ms);
    return buf;
}

uint8_t *forward_pack_reply(uint64_t id, int code, const char *message, const ProtobufCMessage *reply, size_t *len)
{
    size_t mlen = message ? strlen(message) : 0;
    size_t rlen = reply ? protobuf_c_message_get_packed_size(reply) : 0;
    size_t body = f_varint(id) + f_varint((uint32_t)code) + f_bytes(mlen) + f_bytes(rlen);
    *len = 1 + varint_len(body) + body;
    uint8_t *buf = malloc(*len), *p = buf;
    if (!buf) return NULL;
    p = put_fhead(p, 5, body);
    p = put_fvarint(p, 1, id);
    p = put_fvarint(p, 2, (uint32_t)code);
    if (mlen) p = put_fhead(p, 3, mlen), memcpy(p, message, mlen), p += mlen;
    if (rlen) p = put_fhead(p, 4, rlen), protobuf_c_message_pack(reply, p);
    return buf;
}

static int get_varint(const uint8_t **p, const uint8_t *end, uint64_t *v)
{
    *v = 0;
    for (unsigned shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t b = *(*p)++;
        *v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) return 0;
    }
    return -1;
}

int forward_view(const uint8_t *data, size_t len, struct fwd_view *v)
{
    const uint8_t *p = data, *end = data + len;
    uint64_t tag, n;
    memset(v, 0, sizeof *v);
    if (get_varint(&p, end, &tag) || (tag != TAG_FORWARD && tag != TAG_REPLY) || get_varint(&p, end, &n) ||
        n != (uint64_t)(end - p))
        return -1; /* not one forward or reply spanning the whole message */
    v->reply = tag == TAG_REPLY;
    while (p < end) {
        uint64_t key, x;
        if (get_varint(&p, end, &key)) return -1;
        unsigned num = (unsigned)(key >> 3), type = (unsigned)(key & 7);
        if (type == 0) {
            if (get_varint(&p, end, &x)) return -1;
            if (num == 1) v->id = x;
            else if (num == 2) v->op_or_code = (uint32_t)x;
            else if (num == 4 && !v->reply) v->timeout_ms = (uint32_t)x;
        } else if (type == 2) {
            if (get_varint(&p, end, &x) || x > (uint64_t)(end - p)) return -1;
            if (num == 3 && !v->reply) v->body = p, v->body_len = (size_t)x;
            else if (num == 3) v->message = (const char *)p, v->message_len = (size_t)x;
            else if (num == 4 && v->reply) v->body = p, v->body_len = (size_t)x;
            p += x;
        } else if (type == 1 || type == 5) {
            size_t w = type == 1 ? 8 : 4;
            if ((size_t)(end - p) < w) return -1;
            p += w;
        } else {
            return -1;
        }
    }
    return 0;
}

void forward(struct core *c, struct node *to, int op, const ProtobufCMessage *req, uint32_t timeout_ms,
             uint64_t deadline, answer_fn done, void *arg)
{
    if (!deadline) deadline = reactor_now_ms() + forward_wait_ms(c);
    struct fwd *f = calloc(1, sizeof *f);
    size_t len = 0;
    uint8_t *buf = f ? forward_pack(c->next_fwd_id + 1, op, req, timeout_ms, &len) : NULL;
    if (!f || !buf) {
        free(f);
        answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    f->id = ++c->next_fwd_id;
    f->to = to;
    f->op = op;
    f->deadline = deadline;
    f->done = done;
    f->arg = arg;
    int rc = to->up && c->peer ? peer_send(c->peer, to->name, buf, len) : -1;
    free(buf);
    if (rc != 0) {
        free(f);
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "node %s cannot be reached now; try again", to->name);
        return;
    }
    f->next = c->fwds;
    c->fwds = f;
    if (deadline) loop_arm_tick(c->loop);
}

void fail_forwards(struct core *c, struct node *to, const char *why)
{
    struct fwd **pp = &c->fwds;
    while (*pp) {
        struct fwd *f = *pp;
        if (to && f->to != to) {
            pp = &f->next;
            continue;
        }
        *pp = f->next;
        answer_fail(f->done, f->arg, GRPC_STATUS_UNAVAILABLE, "node %s %s before answering", f->to->name, why);
        free(f);
    }
}

int expire_forwards(struct core *c, uint64_t now)
{
    int pending = 0;
    struct fwd **pp = &c->fwds;
    while (*pp) {
        struct fwd *f = *pp;
        if (!f->deadline || now < f->deadline) {
            pending |= f->deadline != 0;
            pp = &f->next;
            continue;
        }
        *pp = f->next;
        answer_fail(f->done, f->arg, GRPC_STATUS_DEADLINE_EXCEEDED, "node %s did not answer in time", f->to->name);
        free(f);
    }
    return pending;
}

/* Requests of one node running here at one time; more are answered RESOURCE_EXHAUSTED
 * (each holds memory until its child answers or its deadline). */
#define FWD_IN_MAX 65536

struct remote_req {
    struct core *c;
    struct node *from; /* its fwd_in counts this request */
    char *node;
    uint64_t id;
};

static void reply_remote(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct remote_req *rr = arg;
    size_t len;
    uint8_t *buf = forward_pack_reply(rr->id, code, code == GRPC_STATUS_OK ? NULL : message,
                                      code == GRPC_STATUS_OK ? reply : NULL, &len);
    if (!buf) buf = forward_pack_reply(rr->id, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory", NULL, &len);
    if (!buf || !rr->c->peer || peer_send(rr->c->peer, rr->node, buf, len) != 0)
        log_warn("cluster", "cannot answer node %s (request %llu): %s", rr->node, (unsigned long long)rr->id,
                 buf ? "no link" : "out of memory");
    if (rr->from && rr->from->fwd_in) rr->from->fwd_in--;
    free(buf);
    free(rr->node);
    free(rr);
}

static void run_forwarded(struct core *c, struct node *from, const struct fwd_view *v)
{
    struct remote_req *rr = calloc(1, sizeof *rr);
    if (!rr || !(rr->node = strdup(from->name))) {
        free(rr);
        log_error("cluster", "out of memory: dropping a request from %s", from->name);
        return;
    }
    rr->c = c;
    rr->id = v->id;
    if (from->fwd_in >= FWD_IN_MAX) {
        authz_refused(c, from, "more than %d of its requests run here at once; refused one", FWD_IN_MAX);
        answer_fail(reply_remote, rr, GRPC_STATUS_RESOURCE_EXHAUSTED, "node %s runs %d requests of node %s already",
                    c->cfg->node_name, FWD_IN_MAX, from->name);
        return;
    }
    rr->from = from;
    from->fwd_in++;
    const ProtobufCMessageDescriptor *d = ops_request((int)v->op_or_code);
    if (!d) {
        answer_fail(reply_remote, rr, GRPC_STATUS_UNIMPLEMENTED, "node %s does not know operation %u",
                    c->cfg->node_name, v->op_or_code);
        return;
    }
    ProtobufCMessage *req = protobuf_c_message_unpack(d, NULL, v->body_len, v->body);
    if (!req) {
        answer_fail(reply_remote, rr, GRPC_STATUS_INVALID_ARGUMENT, "malformed forwarded request");
        return;
    }
    char err[700];
    if (v->op_or_code == CORE_PLACE) {
        int code;
        if (authz_place(c, from, (const Distsup__V1__Place *)req, &code, err, sizeof err) != 0) {
            /* "not yet" (the child's node is still up here) is an ordinary race of who
             * sees a node down first, not a bad message */
            if (code == ANSWER_MOVED) log_debug("cluster", "a Place from node %s: %s", from->name, err);
            else authz_refused(c, from, "%s", err);
            answer_fail(reply_remote, rr, code, "node %s %s", c->cfg->node_name, err);
            protobuf_c_message_free_unpacked(req, NULL);
            return;
        }
    } else if (authz_forward(c, from, (int)v->op_or_code, req, err, sizeof err) != 0) {
        authz_refused(c, from, "%s", err);
        answer_fail(reply_remote, rr, GRPC_STATUS_UNAVAILABLE, "node %s %s", c->cfg->node_name, err);
        protobuf_c_message_free_unpacked(req, NULL);
        return;
    }
    uint64_t deadline = v->timeout_ms ? reactor_now_ms() + v->timeout_ms : 0;
    c->hooks.run_op(c, (int)v->op_or_code, req, deadline, REQ_LOCAL, reply_remote, rr);
    protobuf_c_message_free_unpacked(req, NULL);
}

static void take_reply(struct core *c, struct node *from, const struct fwd_view *v)
{
    struct fwd **pp = &c->fwds;
    while (*pp && ((*pp)->id != v->id || (*pp)->to != from)) pp = &(*pp)->next;
    struct fwd *f = *pp;
    if (!f) {
        log_debug("cluster", "an answer from %s to a request that is gone (%llu)", from->name,
                  (unsigned long long)v->id);
        return;
    }
    *pp = f->next;
    if (v->op_or_code != GRPC_STATUS_OK) {
        /* ANSWER_MOVED: only to a message (held by its caller) or a re-home (asked again) */
        int movable = f->op == CORE_CALL || f->op == CORE_CAST || f->op == CORE_SEND || f->op == CORE_PLACE;
        int code = v->op_or_code <= 16 || (v->op_or_code == ANSWER_MOVED && movable) ? (int)v->op_or_code
                                                                                     : GRPC_STATUS_UNKNOWN;
        answer_fail(f->done, f->arg, code, "%.*s", (int)(v->message_len < 1000 ? v->message_len : 1000),
                    v->message ? v->message : "");
    } else {
        const ProtobufCMessageDescriptor *d = ops_reply(f->op);
        ProtobufCMessage *msg = d ? protobuf_c_message_unpack(d, NULL, v->body_len, v->body) : NULL;
        if (!msg) answer_fail(f->done, f->arg, GRPC_STATUS_INTERNAL, "node %s sent an unreadable answer", from->name);
        else f->done(f->arg, GRPC_STATUS_OK, NULL, msg);
        if (msg) protobuf_c_message_free_unpacked(msg, NULL);
    }
    free(f);
}

void forward_handle(struct core *c, struct node *from, const struct fwd_view *v)
{
    if (v->reply) take_reply(c, from, v);
    else run_forwarded(c, from, v);
}

/* Sends a request about a remote child to its node.  0 if it was sent (or failed). */
void to_owner(struct core *c, struct rentry *e, int op, const ProtobufCMessage *req, uint32_t timeout_ms,
              uint64_t deadline, answer_fn done, void *arg)
{
    struct node *owner = find_node(c, e->info->node);
    if (!owner || !owner->up) {
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE,
                    "child '%s' was on node %s, which is down; it is being "
                    "re-homed, try again shortly",
                    e->info->name, e->info->node);
        return;
    }
    forward(c, owner, op, req, timeout_ms, deadline, done, arg);
}

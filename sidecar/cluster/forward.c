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

void forward(struct core *c, struct node *to, int op, const ProtobufCMessage *req,
                    uint32_t timeout_ms, uint64_t deadline, answer_fn done, void *arg)
{
    if (!deadline) deadline = reactor_now_ms() + forward_wait_ms(c);
    struct fwd *f = calloc(1, sizeof *f);
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len ? len : 1);
    if (!f || !buf) {
        free(f);
        free(buf);
        answer_fail(done, arg, GRPC_STATUS_RESOURCE_EXHAUSTED, "out of memory");
        return;
    }
    protobuf_c_message_pack(req, buf);
    f->id = ++c->next_fwd_id;
    f->to = to;
    f->op = op;
    f->deadline = deadline;
    f->done = done;
    f->arg = arg;
    Distsup__V1__Forward fw = DISTSUP__V1__FORWARD__INIT;
    fw.id = f->id;
    fw.op = (uint32_t)op;
    fw.request.data = buf;
    fw.request.len = len;
    fw.timeout_ms = timeout_ms;
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_FORWARD;
    m.forward = &fw;
    int rc = to->up ? cluster_send(c, to->name, &m) : -1;
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

struct remote_req {
    struct core *c;
    char *node;
    uint64_t id;
};

static void reply_remote(void *arg, int code, const char *message, const ProtobufCMessage *reply)
{
    struct remote_req *rr = arg;
    Distsup__V1__ForwardReply r = DISTSUP__V1__FORWARD_REPLY__INIT;
    r.id = rr->id;
    r.code = (uint32_t)code;
    r.message = (char *)(message ? message : "");
    uint8_t *buf = NULL;
    if (code == GRPC_STATUS_OK && reply) {
        r.reply.len = protobuf_c_message_get_packed_size(reply);
        if ((buf = malloc(r.reply.len ? r.reply.len : 1))) {
            protobuf_c_message_pack(reply, buf);
            r.reply.data = buf;
        } else {
            r.code = GRPC_STATUS_RESOURCE_EXHAUSTED;
            r.message = "out of memory";
            r.reply.len = 0;
        }
    }
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_REPLY;
    m.reply = &r;
    if (cluster_send(rr->c, rr->node, &m) != 0)
        log_warn("cluster", "cannot answer node %s (request %llu): no link", rr->node, (unsigned long long)rr->id);
    free(buf);
    free(rr->node);
    free(rr);
}

void on_forward(struct core *c, struct node *from, const Distsup__V1__Forward *f)
{
    struct remote_req *rr = calloc(1, sizeof *rr);
    if (!rr || !(rr->node = strdup(from->name))) {
        free(rr);
        log_error("cluster", "out of memory: dropping a request from %s", from->name);
        return;
    }
    rr->c = c;
    rr->id = f->id;
    const ProtobufCMessageDescriptor *d = ops_request((int)f->op);
    if (!d) {
        answer_fail(reply_remote, rr, GRPC_STATUS_UNIMPLEMENTED, "node %s does not know operation %u",
             c->cfg->node_name, f->op);
        return;
    }
    ProtobufCMessage *req = protobuf_c_message_unpack(d, NULL, f->request.len, f->request.data);
    if (!req) {
        answer_fail(reply_remote, rr, GRPC_STATUS_INVALID_ARGUMENT, "malformed forwarded request");
        return;
    }
    uint64_t deadline = f->timeout_ms ? reactor_now_ms() + f->timeout_ms : 0;
    c->hooks.run_op(c, (int)f->op, req, deadline, REQ_LOCAL, reply_remote, rr);
    protobuf_c_message_free_unpacked(req, NULL);
}

void on_forward_reply(struct core *c, struct node *from, const Distsup__V1__ForwardReply *r)
{
    struct fwd **pp = &c->fwds;
    while (*pp && ((*pp)->id != r->id || (*pp)->to != from)) pp = &(*pp)->next;
    struct fwd *f = *pp;
    if (!f) {
        log_debug("cluster", "an answer from %s to a request that is gone (%llu)", from->name,
                  (unsigned long long)r->id);
        return;
    }
    *pp = f->next;
    if (r->code != GRPC_STATUS_OK) {
        int code = r->code > 0 && r->code <= 16 ? (int)r->code : GRPC_STATUS_UNKNOWN;
        f->done(f->arg, code, r->message, NULL);
    } else {
        const ProtobufCMessageDescriptor *d = ops_reply(f->op);
        ProtobufCMessage *msg = d ? protobuf_c_message_unpack(d, NULL, r->reply.len, r->reply.data) : NULL;
        if (!msg) answer_fail(f->done, f->arg, GRPC_STATUS_INTERNAL, "node %s sent an unreadable answer", from->name);
        else f->done(f->arg, GRPC_STATUS_OK, NULL, msg);
        if (msg) protobuf_c_message_free_unpacked(msg, NULL);
    }
    free(f);
}

/* Sends a request about a remote child to its node.  0 if it was sent (or failed). */
void to_owner(struct core *c, struct rentry *e, int op, const ProtobufCMessage *req, uint32_t timeout_ms,
                     uint64_t deadline, answer_fn done, void *arg)
{
    struct node *owner = find_node(c, e->info->node);
    if (!owner || !owner->up) {
        answer_fail(done, arg, GRPC_STATUS_UNAVAILABLE, "child '%s' was on node %s, which is down; it is being "
                                                 "re-homed, try again shortly", e->info->name, e->info->node);
        return;
    }
    forward(c, owner, op, req, timeout_ms, deadline, done, arg);
}


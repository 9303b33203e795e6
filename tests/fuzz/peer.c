/* Fuzz target "peer": every message another node can send, unpacked and checked as
 * the core checks it (sidecar/peer/membership.c on_message, sidecar/core.c on_cmd,
 * sidecar/cluster/registry.c on_cluster_message, sidecar/cluster/forward.c,
 * sidecar/cluster/authz.c).  A peer is authenticated but not trusted with what it
 * says: this is the code that reads what it says.
 *
 * The input is, at once:
 *   - a PeerMsg (the link layer); its app bytes go on as a ClusterMsg;
 *   - a ClusterMsg: first through forward_view, the in-place reader of a Forward or
 *     ForwardReply, else through protobuf-c; a forwarded request is unpacked as its
 *     op's message, a Place and every ChildInfo (snapshot, broadcast, the child of
 *     a StartChildResponse) are put through the authorisation checks with their
 *     spec_validate, a ChildGone through authz_gone; a ChildInfo accepted goes into
 *     the supervisor's registry of remote children (fresh for each input), so later
 *     ones of the same input meet it there;
 *   - a Join, as the peer module hands it to the core.
 * The core is real (sidecar/reactor.h's struct core, its config from
 * config_defaults, one supervisor, two nodes: this one and the sender "n2@fuzz"),
 * not running: the fuzzer calls the checks the reactor calls, not the reactor.
 *
 * What must hold: forward_view never reads or points outside the message, and
 * agrees with protobuf-c on every message both accept; a spec that passes the
 * checks passes spec_validate; a refusal comes with a message. */
#include <grpc/status.h>
#include <string.h>

#include "sidecar/cluster/cluster.h"
#include "sidecar/config.h"
#include "sidecar/ops.h"
#include "sidecar/reactor.h"
#include "sidecar/registry.h"
#include "sidecar/spec.h"
#include "tests/fuzz/fuzz.h"

static struct config cfg;
static struct core core;
static struct sup sup;
static struct node self_node, sender;
static struct node *nodes[2];
static struct child *table[16];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    config_defaults(&cfg);
    snprintf(cfg.node_name, sizeof cfg.node_name, "node1@fuzz");
    snprintf(cfg.peer_listen, sizeof cfg.peer_listen, "127.0.0.1:0");
    self_node.name = cfg.node_name;
    self_node.up = self_node.self = 1;
    sender.name = "n2@fuzz";
    sender.up = 1;
    sender.epoch = 1;
    nodes[0] = &self_node;
    nodes[1] = &sender;
    sup.cfg = &cfg.sups[0];
    sup.table = table;
    sup.table_size = sizeof table / sizeof table[0];
    core.cfg = &cfg;
    core.sups = &sup;
    core.n_sups = 1;
    core.nodes = nodes;
    core.n_nodes = 2;
    return 0;
}

/* A ChildInfo from the sender (taken): authorised, then kept as apply_remote_info
 * keeps it. */
static void child_info(Distsup__V1__ChildInfo *info)
{
    char err[700];
    if (!info) return; /* a copy that did not read back (info_copy: the field-0 quirk): as learn_started */
    struct sup *s = find_sup(&core, info->supervisor);
    if (!s) {
        distsup__v1__child_info__free_unpacked(info, NULL);
        return;
    }
    memset(err, 0, sizeof err);
    int verdict = authz_child_info(&core, &sender, s, info, err, sizeof err);
    FUZZ_CHECK(verdict == AUTHZ_OK || verdict == AUTHZ_REFUSE || verdict == AUTHZ_CONTEND);
    if (verdict != AUTHZ_OK) {
        FUZZ_CHECK_ERR(err);
        distsup__v1__child_info__free_unpacked(info, NULL);
        return;
    }
    FUZZ_CHECK(!strcmp(info->node, sender.name));
    if (info->spec) {
        FUZZ_CHECK(spec_validate(info->spec, cfg.max_payload, err, sizeof err) == 0);
        FUZZ_CHECK(!strcmp(info->spec->name, info->name));
    }
    FUZZ_CHECK(spec_name_check("name", info->name, err, sizeof err) == 0);
    struct rentry *e = registry_put(s->remote, info, sender.epoch);
    FUZZ_CHECK(e != NULL && registry_get(s->remote, info->name) == e);
}

static Distsup__V1__ChildInfo *info_copy(const Distsup__V1__ChildInfo *info)
{
    size_t n = distsup__v1__child_info__get_packed_size(info);
    uint8_t *buf = malloc(n ? n : 1);
    FUZZ_CHECK(buf != NULL);
    FUZZ_CHECK(distsup__v1__child_info__pack(info, buf) == n);
    Distsup__V1__ChildInfo *copy = distsup__v1__child_info__unpack(NULL, n, buf);
    FUZZ_CHECK(copy != NULL || fuzz_has_field0(&info->base));
    free(buf);
    return copy;
}

/* A forwarded request or an answer, as forward_handle takes it. */
static void forwarded(const struct fwd_view *v)
{
    char err[700];
    if (v->reply) {
        /* the answer's type is that of the request that waits for it: any op's */
        const ProtobufCMessageDescriptor *done[32];
        size_t n_done = 0;
        for (int op = 0; op < 32; op++) {
            const ProtobufCMessageDescriptor *d = ops_reply(op);
            int seen = 0;
            for (size_t i = 0; i < n_done; i++) seen |= done[i] == d;
            if (!d || seen) continue;
            done[n_done++] = d;
            ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, v->body_len, v->body);
            if (!m) continue;
            if (d == &distsup__v1__start_child_response__descriptor) {
                const Distsup__V1__StartChildResponse *r = (const void *)m;
                if (r->child && !strcmp(r->child->node, sender.name))
                    child_info(info_copy(r->child)); /* learn_started */
            }
            protobuf_c_message_free_unpacked(m, NULL);
        }
        return;
    }
    const ProtobufCMessageDescriptor *d = ops_request((int)v->op_or_code);
    if (!d) return;
    ProtobufCMessage *req = protobuf_c_message_unpack(d, NULL, v->body_len, v->body);
    if (!req) return;
    memset(err, 0, sizeof err);
    if (v->op_or_code == CORE_PLACE) {
        const Distsup__V1__Place *pl = (const void *)req;
        int code = GRPC_STATUS_OK;
        if (authz_place(&core, &sender, pl, &code, err, sizeof err) != 0) {
            FUZZ_CHECK_ERR(err);
            FUZZ_CHECK(code == GRPC_STATUS_PERMISSION_DENIED || code == GRPC_STATUS_INVALID_ARGUMENT ||
                       code == ANSWER_MOVED);
        } else if (pl->request && pl->request->spec && find_sup(&core, pl->request->supervisor)) {
            FUZZ_CHECK(spec_validate(pl->request->spec, cfg.max_payload, err, sizeof err) == 0);
        }
    } else if (d == &distsup__v1__start_child_request__descriptor) {
        /* OP_START_CHILD, OP_DIR_START: requests.c validates the spec */
        const Distsup__V1__StartChildRequest *r = (const void *)req;
        if (r->spec && spec_validate(r->spec, cfg.max_payload, err, sizeof err) != 0) FUZZ_CHECK_ERR(err);
    }
    protobuf_c_message_free_unpacked(req, NULL);
}

/* forward_view against protobuf-c, on a message both read. */
static void same_as_protobuf_c(const struct fwd_view *v, const uint8_t *data, size_t len)
{
    Distsup__V1__ClusterMsg *m = distsup__v1__cluster_msg__unpack(NULL, len, data);
    if (!m) return; /* forward_view is more lenient (it skips what it does not use) */
    if (v->reply) {
        FUZZ_CHECK(m->msg_case == DISTSUP__V1__CLUSTER_MSG__MSG_REPLY);
        const Distsup__V1__ForwardReply *r = m->reply;
        FUZZ_CHECK(r->id == v->id && r->code == v->op_or_code);
        FUZZ_CHECK(r->reply.len == v->body_len && (!v->body_len || !memcmp(r->reply.data, v->body, v->body_len)));
        size_t ml = strlen(r->message);
        FUZZ_CHECK(ml <= v->message_len && (!ml || !memcmp(r->message, v->message, ml)));
    } else {
        FUZZ_CHECK(m->msg_case == DISTSUP__V1__CLUSTER_MSG__MSG_FORWARD);
        const Distsup__V1__Forward *f = m->forward;
        FUZZ_CHECK(f->id == v->id && (uint32_t)f->op == v->op_or_code && f->timeout_ms == v->timeout_ms);
        FUZZ_CHECK(f->request.len == v->body_len && (!v->body_len || !memcmp(f->request.data, v->body, v->body_len)));
    }
    distsup__v1__cluster_msg__free_unpacked(m, NULL);
}

static void cluster_msg(const uint8_t *data, size_t len)
{
    char err[600];
    struct fwd_view v;
    if (forward_view(data, len, &v) == 0) {
        FUZZ_CHECK(v.reply == 0 || v.reply == 1);
        if (v.body_len) FUZZ_CHECK(v.body >= data && v.body_len <= len && v.body <= data + len - v.body_len);
        if (v.message_len)
            FUZZ_CHECK((const uint8_t *)v.message >= data && v.message_len <= len &&
                       (const uint8_t *)v.message <= data + len - v.message_len);
        FUZZ_CHECK(v.reply || !v.message);
        same_as_protobuf_c(&v, data, len);
        forwarded(&v);
        return;
    }
    Distsup__V1__ClusterMsg *m = distsup__v1__cluster_msg__unpack(NULL, len, data);
    if (!m) return;
    switch (m->msg_case) {
    case DISTSUP__V1__CLUSTER_MSG__MSG_SNAPSHOT:
        for (size_t i = 0; i < m->snapshot->n_children; i++) {
            Distsup__V1__ChildInfo *info = m->snapshot->children[i];
            m->snapshot->children[i] = NULL;
            child_info(info);
        }
        m->snapshot->n_children = 0;
        break;
    case DISTSUP__V1__CLUSTER_MSG__MSG_CHILD:
        child_info(m->child);
        m->child = NULL;
        m->msg_case = DISTSUP__V1__CLUSTER_MSG__MSG__NOT_SET;
        break;
    case DISTSUP__V1__CLUSTER_MSG__MSG_GONE:
        memset(err, 0, sizeof err);
        if (authz_gone(&core, &sender, m->gone, err, sizeof err) != 0) FUZZ_CHECK_ERR(err);
        else FUZZ_CHECK(!strcmp(m->gone->node, sender.name));
        break;
    case DISTSUP__V1__CLUSTER_MSG__MSG_FORWARD: {
        struct fwd_view f = {.id = m->forward->id,
                             .op_or_code = (uint32_t)m->forward->op,
                             .timeout_ms = m->forward->timeout_ms,
                             .body = m->forward->request.data,
                             .body_len = m->forward->request.len};
        forwarded(&f);
        break;
    }
    case DISTSUP__V1__CLUSTER_MSG__MSG_REPLY: {
        struct fwd_view f = {.reply = 1,
                             .id = m->reply->id,
                             .op_or_code = m->reply->code,
                             .body = m->reply->reply.data,
                             .body_len = m->reply->reply.len,
                             .message = m->reply->message,
                             .message_len = strlen(m->reply->message)};
        forwarded(&f);
        break;
    }
    default: break;
    }
    distsup__v1__cluster_msg__free_unpacked(m, NULL);
}

static void join(const Distsup__V1__Join *j)
{
    /* what on_node_up reads: every string is there (protobuf-c gives "" for unset) */
    FUZZ_CHECK(j->name && j->peer_address && j->api_address);
    for (size_t i = 0; i < j->n_labels; i++) FUZZ_CHECK(j->labels[i]->key && j->labels[i]->value);
    for (size_t i = 0; i < j->n_members; i++) FUZZ_CHECK(j->members[i]->name && j->members[i]->peer_address);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    sup.remote = registry_new();
    FUZZ_CHECK(sup.remote != NULL);

    Distsup__V1__PeerMsg *pm = distsup__v1__peer_msg__unpack(NULL, size, data);
    if (pm) {
        if (pm->msg_case == DISTSUP__V1__PEER_MSG__MSG_JOIN) join(pm->join);
        /* an empty app is NULL here; core_cluster_message hands the core "" instead */
        if (pm->msg_case == DISTSUP__V1__PEER_MSG__MSG_APP)
            cluster_msg(pm->app.data ? pm->app.data : (const uint8_t *)"", pm->app.len);
        distsup__v1__peer_msg__free_unpacked(pm, NULL);
    }
    cluster_msg(data, size);
    Distsup__V1__Join *j = distsup__v1__join__unpack(NULL, size, data);
    if (j) {
        join(j);
        distsup__v1__join__free_unpacked(j, NULL);
    }

    registry_free(sup.remote);
    sup.remote = NULL;
    return 0;
}

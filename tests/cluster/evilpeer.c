/* evilpeer: a peer that speaks distsup's handshake and then misbehaves, to test that
 * a daemon refuses it.  Test tool only.
 *
 *   evilpeer ADDR KEYFILE MODE [NAME [ARG...]]
 *
 * KEYFILE is a node key (distsupd keygen); MODE is one of
 *   handshake  complete the handshake, send a valid Join, wait    (control: stays open)
 *   tamper     complete the handshake, send a Join with one bit flipped
 *   replay     send a valid Join, then the very same sealed packet again
 *   reorder    seal a Join then a Heartbeat, send the Heartbeat first
 *   fragment   send a valid Join, then a sealed middle fragment of a message that
 *              never began (it opens, but is out of place)
 *   garbage    send bytes that are not a handshake
 *   oldversion msg1 of link protocol 1
 * and, as a trusted member that joined (its Join sent, heartbeats kept up), one forged
 * cluster message (sidecar/cluster/authz.c says who may send what):
 *   place CHILD MARK        a Place{PLACE_START} of CHILD (argv: touch MARK) from a
 *                           node that is not the name's directory node
 *   childinfo CHILD         a ChildInfo of CHILD on this node, incarnation 2^40
 *   gone CHILD OWNER        a ChildGone of CHILD on node OWNER
 *   emptyargv CHILD...      a ChildInfo of each CHILD on this node whose spec has no
 *                           argv, then Leave
 *   gossip N                a Members message of N made-up members
 * before the handshake:
 *   bigfirst MIB            a first packet of MIB mebibytes instead of msg1
 *   flood N SECONDS         opens N streams that never send msg1 every half second,
 *                           for SECONDS
 * and prints one line:
 *   handshake=ok|refused received=N closed=yes|no [reply=CODE]
 * received counts the packets the daemon sent after its handshake reply (what the
 * peer learned); closed says whether the daemon ended the stream within 5 s (the
 * cluster-message modes stay 3 s, then leave); reply is the status code of the answer
 * to a forged Place.  NAME is the node name its Join claims (default evil@test). */
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/time.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "distsup/v1/peer.pb-c.h"
#include "sidecar/handshake.h"
#include "sidecar/identity.h"

static grpc_completion_queue *cq;
static grpc_call *call;

static gpr_timespec in_ms(int ms)
{
    return gpr_time_add(gpr_now(GPR_CLOCK_REALTIME), gpr_time_from_millis(ms, GPR_TIMESPAN));
}

/* Runs one batch and waits for it (ok = 1 when it succeeded). */
static int run(grpc_op *ops, size_t n, int timeout_ms)
{
    static int tag;
    if (grpc_call_start_batch(call, ops, n, &tag, NULL) != GRPC_CALL_OK) return 0;
    grpc_event ev = grpc_completion_queue_pluck(cq, &tag, in_ms(timeout_ms), NULL);
    if (ev.type == GRPC_QUEUE_TIMEOUT) {
        grpc_call_cancel(call, NULL);
        ev = grpc_completion_queue_pluck(cq, &tag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        return -1;
    }
    return ev.success;
}

static grpc_byte_buffer *packet_bb(const uint8_t *data, size_t len)
{
    Distsup__V1__PeerPacket pk = DISTSUP__V1__PEER_PACKET__INIT;
    pk.data.data = (uint8_t *)data;
    pk.data.len = len;
    size_t n = distsup__v1__peer_packet__get_packed_size(&pk);
    grpc_slice s = grpc_slice_malloc(n);
    distsup__v1__peer_packet__pack(&pk, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    return bb;
}

static int send_packet(const uint8_t *data, size_t len)
{
    grpc_byte_buffer *bb = packet_bb(data, len);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    int ok = run(&op, 1, 5000);
    grpc_byte_buffer_destroy(bb);
    return ok == 1;
}

/* The data of the PeerPacket in bb (taken) into buf; its length, or -1. */
static long packet_data(grpc_byte_buffer *bb, uint8_t *buf, size_t cap)
{
    grpc_byte_buffer_reader rd;
    grpc_byte_buffer_reader_init(&rd, bb);
    grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    grpc_byte_buffer_destroy(bb);
    Distsup__V1__PeerPacket *pk = distsup__v1__peer_packet__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    long n = -1;
    if (pk && pk->data.len <= cap) {
        memcpy(buf, pk->data.data, pk->data.len);
        n = (long)pk->data.len;
    }
    if (pk) distsup__v1__peer_packet__free_unpacked(pk, NULL);
    return n;
}

/* One packet's data into buf; returns its length, or -1 when the stream ended. */
static long recv_packet(uint8_t *buf, size_t cap, int timeout_ms, int *timed_out)
{
    grpc_byte_buffer *bb = NULL;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &bb;
    int ok = run(&op, 1, timeout_ms);
    *timed_out = ok == -1;
    if (ok != 1 || !bb) return -1;
    return packet_data(bb, buf, cap);
}

/* A sealed packet carrying m: its plaintext is the PeerMsg followed by a one-byte
 * trailer (the framing of docs/cluster.md): 0 a whole message, 2 a middle fragment.
 * malloc'd; *len gets its length. */
#define TRAILER_WHOLE 0
#define TRAILER_MIDDLE 2
static uint8_t *seal_msg(struct seal *s, const Distsup__V1__PeerMsg *m, uint8_t trailer, size_t *len)
{
    size_t n = distsup__v1__peer_msg__get_packed_size(m);
    uint8_t *buf = malloc(n + 1 + SEAL_OVERHEAD);
    if (!buf) exit(1);
    distsup__v1__peer_msg__pack(m, buf);
    buf[n++] = trailer;
    seal_encrypt(s, buf, n, buf);
    *len = n + SEAL_OVERHEAD;
    return buf;
}

static void send_sealed(struct seal *s, const Distsup__V1__PeerMsg *m)
{
    size_t n;
    uint8_t *p = seal_msg(s, m, TRAILER_WHOLE, &n);
    send_packet(p, n);
    free(p);
}

static void send_app(struct seal *s, const Distsup__V1__ClusterMsg *cm)
{
    size_t n = distsup__v1__cluster_msg__get_packed_size(cm);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) exit(1);
    distsup__v1__cluster_msg__pack(cm, buf);
    Distsup__V1__PeerMsg m = DISTSUP__V1__PEER_MSG__INIT;
    m.msg_case = DISTSUP__V1__PEER_MSG__MSG_APP;
    m.app.data = buf;
    m.app.len = n;
    send_sealed(s, &m);
    free(buf);
}

/* ---------- forged cluster messages ---------- */

static Distsup__V1__ChildSpec *make_spec(const char *name, char **argv, size_t n_argv)
{
    static Distsup__V1__ChildSpec sp;
    distsup__v1__child_spec__init(&sp);
    sp.name = (char *)name;
    sp.argv = argv;
    sp.n_argv = n_argv;
    return &sp;
}

static const char *forged_id; /* badid mode: the id its ChildInfo carries */

static void send_child_info(struct seal *s, const char *self, const char *child, uint64_t inc,
                            Distsup__V1__ChildSpec *spec)
{
    char id[1024];
    snprintf(id, sizeof id, "%s/evil.1", self);
    if (forged_id) snprintf(id, sizeof id, "%s", forged_id);
    Distsup__V1__ChildInfo ci = DISTSUP__V1__CHILD_INFO__INIT;
    ci.supervisor = "";
    ci.name = (char *)child;
    ci.node = (char *)self;
    ci.id = id;
    ci.incarnation = inc;
    ci.state = DISTSUP__V1__CHILD_STATE__RUNNING;
    ci.os_pid = 4242;
    ci.spec = spec;
    Distsup__V1__ClusterMsg cm = DISTSUP__V1__CLUSTER_MSG__INIT;
    cm.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_CHILD;
    cm.child = &ci;
    send_app(s, &cm);
}

static void attack(struct seal *s, const char *mode, const char *self, int argc, char **argv)
{
    const char *a1 = argc > 0 ? argv[0] : "victim", *a2 = argc > 1 ? argv[1] : "";
    if (!strcmp(mode, "place")) {
        char script[600];
        snprintf(script, sizeof script, "touch %s; sleep 60", a2);
        char *args[] = {"/bin/sh", "-c", script};
        Distsup__V1__StartChildRequest req = DISTSUP__V1__START_CHILD_REQUEST__INIT;
        req.supervisor = "";
        req.spec = make_spec(a1, args, 3);
        Distsup__V1__Place pl = DISTSUP__V1__PLACE__INIT;
        pl.request = &req;
        pl.why = DISTSUP__V1__PLACE_WHY__PLACE_START;
        size_t rlen = distsup__v1__place__get_packed_size(&pl);
        uint8_t *body = malloc(rlen ? rlen : 1);
        if (!body) exit(1);
        distsup__v1__place__pack(&pl, body);
        Distsup__V1__Forward f = DISTSUP__V1__FORWARD__INIT;
        f.id = 77;
        f.op = DISTSUP__V1__OP__OP_PLACE;
        f.request.data = body;
        f.request.len = rlen;
        Distsup__V1__ClusterMsg cm = DISTSUP__V1__CLUSTER_MSG__INIT;
        cm.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_FORWARD;
        cm.forward = &f;
        send_app(s, &cm);
        free(body);
    } else if (!strcmp(mode, "startchild") || !strcmp(mode, "dirstart")) {
        /* a StartChild forwarded as a public op, or as a directory node's, for a name
         * the target is not the directory node of, pinned to the target */
        char script[600];
        snprintf(script, sizeof script, "touch %s; sleep 60", a2);
        char *args[] = {"/bin/sh", "-c", script};
        Distsup__V1__StartChildRequest req = DISTSUP__V1__START_CHILD_REQUEST__INIT;
        req.supervisor = "";
        req.spec = make_spec(a1, args, 3);
        req.node = argc > 2 ? argv[2] : (char *)"";
        size_t rlen = distsup__v1__start_child_request__get_packed_size(&req);
        uint8_t *body = malloc(rlen ? rlen : 1);
        if (!body) exit(1);
        distsup__v1__start_child_request__pack(&req, body);
        Distsup__V1__Forward f = DISTSUP__V1__FORWARD__INIT;
        f.id = 77;
        f.op = !strcmp(mode, "startchild") ? DISTSUP__V1__OP__OP_START_CHILD : DISTSUP__V1__OP__OP_DIR_START;
        f.request.data = body;
        f.request.len = rlen;
        Distsup__V1__ClusterMsg cm = DISTSUP__V1__CLUSTER_MSG__INIT;
        cm.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_FORWARD;
        cm.forward = &f;
        send_app(s, &cm);
        free(body);
    } else if (!strcmp(mode, "badid")) { /* a new child of its own under another node's id */
        char *args[] = {"/bin/sleep", "60"};
        forged_id = a2;
        send_child_info(s, self, a1, 1, make_spec(a1, args, 2));
    } else if (!strcmp(mode, "childinfo")) {
        char *args[] = {"/bin/sleep", "60"};
        send_child_info(s, self, a1, 1ull << 40, make_spec(a1, args, 2));
    } else if (!strcmp(mode, "gone")) {
        Distsup__V1__ChildGone g = DISTSUP__V1__CHILD_GONE__INIT;
        g.supervisor = "";
        g.name = (char *)a1;
        g.node = (char *)a2;
        g.incarnation = 1ull << 40;
        g.reason = "forged";
        Distsup__V1__ClusterMsg cm = DISTSUP__V1__CLUSTER_MSG__INIT;
        cm.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_GONE;
        cm.gone = &g;
        send_app(s, &cm);
    } else if (!strcmp(mode, "emptyargv")) {
        for (int i = 0; i < argc; i++) send_child_info(s, self, argv[i], 1, make_spec(argv[i], NULL, 0));
        Distsup__V1__Leave lv = DISTSUP__V1__LEAVE__INIT;
        Distsup__V1__PeerMsg m = DISTSUP__V1__PEER_MSG__INIT;
        m.msg_case = DISTSUP__V1__PEER_MSG__MSG_LEAVE;
        m.leave = &lv;
        send_sealed(s, &m);
    } else if (!strcmp(mode, "kinds")) { /* NodeKinds: a1 kinds named "k0".., or the one name a2 */
        size_t n = (size_t)atol(a1);
        char **v = calloc(n + 1, sizeof *v);
        char(*names)[32] = calloc(n + 1, sizeof *names);
        if (!v || !names) exit(1);
        for (size_t i = 0; i < n; i++) {
            snprintf(names[i], sizeof names[i], "k%zu", i);
            v[i] = a2[0] ? (char *)a2 : names[i];
        }
        Distsup__V1__NodeKinds k = DISTSUP__V1__NODE_KINDS__INIT;
        k.n_kinds = n;
        k.kinds = v;
        Distsup__V1__ClusterMsg cm = DISTSUP__V1__CLUSTER_MSG__INIT;
        cm.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_KINDS;
        cm.kinds = &k;
        send_app(s, &cm);
        free(v);
        free(names);
    } else if (!strcmp(mode, "gossip")) {
        size_t n = (size_t)atol(a1);
        Distsup__V1__Member *arr = calloc(n + 1, sizeof *arr);
        Distsup__V1__Member **ptrs = calloc(n + 1, sizeof *ptrs);
        char(*names)[40] = calloc(n + 1, sizeof *names);
        if (!arr || !ptrs || !names) exit(1);
        for (size_t i = 0; i < n; i++) {
            distsup__v1__member__init(&arr[i]);
            snprintf(names[i], sizeof names[i], "fake%06zu@evil", i);
            arr[i].name = names[i];
            arr[i].peer_address = "127.0.0.1:9"; /* loopback, a closed port: nothing answers */
            ptrs[i] = &arr[i];
        }
        Distsup__V1__Members ms = DISTSUP__V1__MEMBERS__INIT;
        ms.n_members = n;
        ms.members = ptrs;
        Distsup__V1__PeerMsg m = DISTSUP__V1__PEER_MSG__INIT;
        m.msg_case = DISTSUP__V1__PEER_MSG__MSG_MEMBERS;
        m.members = &ms;
        send_sealed(s, &m);
        free(arr);
        free(ptrs);
        free(names);
    }
}

/* Reads what the daemon sends for ms milliseconds, keeping our heartbeats up; opens
 * every packet (in order) and notes the code of a ForwardReply.  0, or -1 when the
 * stream ended.  A receive stays pending between calls; listen_end ends it. */
static int rtag, recv_pending;
static grpc_byte_buffer *rbb;
static grpc_op recv_op;

static int recv_start(void)
{
    memset(&recv_op, 0, sizeof recv_op);
    recv_op.op = GRPC_OP_RECV_MESSAGE;
    recv_op.data.recv_message.recv_message = &rbb;
    rbb = NULL;
    recv_pending = grpc_call_start_batch(call, &recv_op, 1, &rtag, NULL) == GRPC_CALL_OK;
    return recv_pending ? 0 : -1;
}

static void listen_end(void)
{
    grpc_call_cancel(call, NULL);
    if (recv_pending) grpc_completion_queue_pluck(cq, &rtag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
    recv_pending = 0;
    if (rbb) grpc_byte_buffer_destroy(rbb);
    rbb = NULL;
}

static int listen_for(struct seal *s, int ms, long *received, int *reply)
{
    static int ttag;
    static uint64_t seq = 100;
    static uint8_t buf[1u << 20];
    if (!recv_pending && recv_start() != 0) return -1;
    gpr_timespec end = in_ms(ms);
    for (;;) {
        grpc_event ev = grpc_completion_queue_pluck(cq, &rtag, in_ms(150), NULL);
        if (ev.type == GRPC_QUEUE_TIMEOUT) {
            if (gpr_time_cmp(gpr_now(GPR_CLOCK_REALTIME), end) > 0) return 0;
            Distsup__V1__Heartbeat hb = DISTSUP__V1__HEARTBEAT__INIT;
            hb.seq = ++seq;
            Distsup__V1__PeerMsg hm = DISTSUP__V1__PEER_MSG__INIT;
            hm.msg_case = DISTSUP__V1__PEER_MSG__MSG_HEARTBEAT;
            hm.heartbeat = &hb;
            size_t n;
            uint8_t *p = seal_msg(s, &hm, TRAILER_WHOLE, &n);
            grpc_byte_buffer *sb = packet_bb(p, n);
            free(p);
            grpc_op so;
            memset(&so, 0, sizeof so);
            so.op = GRPC_OP_SEND_MESSAGE;
            so.data.send_message.send_message = sb;
            if (grpc_call_start_batch(call, &so, 1, &ttag, NULL) == GRPC_CALL_OK)
                grpc_completion_queue_pluck(cq, &ttag, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
            grpc_byte_buffer_destroy(sb);
            continue;
        }
        recv_pending = 0;
        grpc_byte_buffer *bb = rbb;
        rbb = NULL;
        if (!ev.success || !bb) return -1;
        long n = packet_data(bb, buf, sizeof buf);
        if (n < 0) return -1;
        (*received)++;
        if (n > SEAL_OVERHEAD && seal_decrypt(s, buf, (size_t)n, buf) == 0 && buf[n - SEAL_OVERHEAD - 1] == 0) {
            Distsup__V1__PeerMsg *pm = distsup__v1__peer_msg__unpack(NULL, (size_t)n - SEAL_OVERHEAD - 1, buf);
            if (pm && pm->msg_case == DISTSUP__V1__PEER_MSG__MSG_APP) {
                Distsup__V1__ClusterMsg *cm = distsup__v1__cluster_msg__unpack(NULL, pm->app.len, pm->app.data);
                if (cm && cm->msg_case == DISTSUP__V1__CLUSTER_MSG__MSG_REPLY && cm->reply->id == 77) {
                    *reply = (int)cm->reply->code;
                    fprintf(stderr, "evilpeer: reply %d: %s\n", *reply, cm->reply->message);
                }
                if (cm) distsup__v1__cluster_msg__free_unpacked(cm, NULL);
            }
            if (pm) distsup__v1__peer_msg__free_unpacked(pm, NULL);
        }
        if (recv_start() != 0) return -1;
    }
}

/* ---------- before the handshake ---------- */

/* Opens n streams that say nothing every half second, for secs seconds (the daemon's
 * refusals and timeouts are not waited for: it never runs out of silent streams). */
static int flood(grpc_channel *ch, int n, int secs)
{
    size_t cap = (size_t)n * (size_t)(2 * secs + 1), used = 0;
    grpc_call **calls = calloc(cap, sizeof *calls);
    grpc_metadata_array *mds = calloc(cap, sizeof *mds);
    grpc_status_code *st = calloc(cap, sizeof *st);
    grpc_slice *det = calloc(cap, sizeof *det);
    if (!calls || !mds || !st || !det) return 1;
    grpc_completion_queue *fq = grpc_completion_queue_create_for_next(NULL);
    grpc_slice method = grpc_slice_from_static_string("/distsup.v1.Peer/Link");
    for (int round = 0; round < 2 * secs; round++) {
        for (int k = 0; k < n && used < cap; k++, used++) {
            size_t i = used;
            calls[i] =
                grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, fq, method, NULL, in_ms(60000), NULL);
            grpc_metadata_array_init(&mds[i]);
            grpc_op ops[2];
            memset(ops, 0, sizeof ops);
            ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
            ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
            ops[1].data.recv_status_on_client.trailing_metadata = &mds[i];
            ops[1].data.recv_status_on_client.status = &st[i];
            ops[1].data.recv_status_on_client.status_details = &det[i];
            if (grpc_call_start_batch(calls[i], ops, 2, &calls[i], NULL) != GRPC_CALL_OK) return 1;
        }
        gpr_timespec until = in_ms(500);
        while (grpc_completion_queue_next(fq, until, NULL).type == GRPC_OP_COMPLETE) {}
    }
    for (size_t i = 0; i < used; i++) grpc_call_cancel(calls[i], NULL);
    for (size_t done = 0; done < used;) {
        grpc_event ev = grpc_completion_queue_next(fq, in_ms(5000), NULL);
        if (ev.type != GRPC_OP_COMPLETE) break;
        done++;
    }
    for (size_t i = 0; i < used; i++) {
        grpc_slice_unref(det[i]);
        grpc_metadata_array_destroy(&mds[i]);
        grpc_call_unref(calls[i]);
    }
    grpc_completion_queue_shutdown(fq);
    while (grpc_completion_queue_next(fq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type != GRPC_QUEUE_SHUTDOWN) {}
    grpc_completion_queue_destroy(fq);
    printf("opened=%zu\n", used);
    free(calls);
    free(mds);
    free(st);
    free(det);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: evilpeer ADDR KEYFILE MODE [NAME [ARG...]]\n");
        return 2;
    }
    const char *addr = argv[1], *mode = argv[3], *name = argc >= 5 ? argv[4] : "evil@test";
    if (sodium_init() < 0) return 1;
    /* The key file only: a trust file that trusts everyone is not needed to dial. */
    char trust[] = "/tmp/evilpeer-trust-XXXXXX";
    int tfd = mkstemp(trust);
    if (tfd < 0) return 1;
    close(tfd);
    struct identity id;
    char err[512];
    int rc = identity_load(&id, argv[2], trust, NULL, err, sizeof err);
    unlink(trust);
    if (rc != 0) {
        fprintf(stderr, "evilpeer: %s\n", err);
        return 1;
    }
    grpc_init();
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(addr, creds, NULL);
    grpc_channel_credentials_release(creds);
    if (!strcmp(mode, "flood")) {
        int frc = flood(ch, argc >= 5 ? atoi(argv[4]) : 100, argc >= 6 ? atoi(argv[5]) : 10);
        grpc_channel_destroy(ch);
        grpc_shutdown();
        identity_free(&id);
        return frc;
    }
    cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_slice method = grpc_slice_from_static_string("/distsup.v1.Peer/Link");
    call = grpc_channel_create_call(ch, NULL, GRPC_PROPAGATE_DEFAULTS, cq, method, NULL, in_ms(20000), NULL);

    grpc_metadata_array md, trailing;
    grpc_metadata_array_init(&md);
    grpc_metadata_array_init(&trailing);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_INITIAL_METADATA;
    run(&op, 1, 5000);

    struct hs hs;
    struct seal seal;
    uint8_t msg1[HS_MSG1_LEN];
    static uint8_t buf[1u << 20];
    int handshake_ok = 0, timed_out = 0, reply = -1, cluster_mode = 0;
    long received = 0, n;
    if (!strcmp(mode, "garbage")) {
        send_packet((const uint8_t *)"GET / HTTP/1.0\r\n\r\n", 18);
    } else if (!strcmp(mode, "bigfirst")) {
        size_t big = (size_t)(argc >= 5 ? atol(argv[4]) : 60) << 20;
        uint8_t *junk = calloc(big, 1);
        if (!junk) return 1;
        send_packet(junk, big);
        free(junk);
    } else {
        hs_initiator_begin(&hs, &id.kp, NULL, msg1);
        if (!strcmp(mode, "oldversion")) msg1[3] = '1'; /* the link protocol before fragments */
        send_packet(msg1, sizeof msg1);
    }
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_INITIAL_METADATA;
    op.data.recv_initial_metadata.recv_initial_metadata = &md;
    run(&op, 1, 5000);
    n = recv_packet(buf, sizeof buf, 5000, &timed_out);
    uint8_t peer[HS_KEY_LEN];
    if (n == HS_MSG2_LEN && strcmp(mode, "garbage") && strcmp(mode, "bigfirst") &&
        hs_initiator_read2(&hs, buf, (size_t)n, peer) == HS_OK) {
        uint8_t msg3[HS_MSG3_LEN];
        hs_initiator_write3(&hs, msg3, &seal);
        send_packet(msg3, sizeof msg3);
        handshake_ok = 1;
        Distsup__V1__Join j = DISTSUP__V1__JOIN__INIT;
        j.name = (char *)name;
        j.boot_id = 42;
        j.peer_address = "127.0.0.1:1";
        j.api_address = "127.0.0.1:1";
        Distsup__V1__PeerMsg jm = DISTSUP__V1__PEER_MSG__INIT;
        jm.msg_case = DISTSUP__V1__PEER_MSG__MSG_JOIN;
        jm.join = &j;
        Distsup__V1__Heartbeat hb = DISTSUP__V1__HEARTBEAT__INIT;
        hb.seq = 1;
        Distsup__V1__PeerMsg hm = DISTSUP__V1__PEER_MSG__INIT;
        hm.msg_case = DISTSUP__V1__PEER_MSG__MSG_HEARTBEAT;
        hm.heartbeat = &hb;
        size_t an, bn;
        uint8_t *a = seal_msg(&seal, &jm, TRAILER_WHOLE, &an);
        uint8_t *b = seal_msg(&seal, &hm, strcmp(mode, "fragment") ? TRAILER_WHOLE : TRAILER_MIDDLE, &bn);
        if (!strcmp(mode, "handshake")) {
            send_packet(a, an);
            send_packet(b, bn);
        } else if (!strcmp(mode, "tamper")) {
            a[an / 2] ^= 0x01;
            send_packet(a, an);
        } else if (!strcmp(mode, "replay")) {
            send_packet(a, an);
            send_packet(a, an);
        } else if (!strcmp(mode, "reorder")) {
            send_packet(b, bn);
            send_packet(a, an);
        } else if (!strcmp(mode, "fragment")) {
            send_packet(a, an);
            send_packet(b, bn);
        } else if (strcmp(mode, "oldversion")) { /* a cluster-message mode */
            cluster_mode = 1;
            send_packet(a, an);
            send_packet(b, bn);
            /* the daemon's Join, snapshot and gossip first: then it knows us as up */
            int up = listen_for(&seal, 700, &received, &reply) == 0;
            attack(&seal, mode, name, argc - 5, argv + 5);
            timed_out = up && listen_for(&seal, 3000, &received, &reply) == 0;
            listen_end();
        }
        free(a);
        free(b);
    }
    /* What does the daemon send now, and does it hang up? */
    for (int i = 0; i < 100 && !cluster_mode; i++) {
        n = recv_packet(buf, sizeof buf, 5000, &timed_out);
        if (n < 0) break;
        received++;
    }
    int closed = !timed_out;
    if (!closed) grpc_call_cancel(call, NULL);
    grpc_status_code status;
    grpc_slice details;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    op.data.recv_status_on_client.trailing_metadata = &trailing;
    op.data.recv_status_on_client.status = &status;
    op.data.recv_status_on_client.status_details = &details;
    run(&op, 1, 5000);
    printf("handshake=%s received=%ld closed=%s", handshake_ok ? "ok" : "refused", received, closed ? "yes" : "no");
    if (reply >= 0) printf(" reply=%d", reply);
    printf("\n");
    fflush(stdout);
    grpc_slice_unref(details);
    grpc_metadata_array_destroy(&md);
    grpc_metadata_array_destroy(&trailing);
    grpc_call_unref(call);
    grpc_channel_destroy(ch);
    grpc_completion_queue_shutdown(cq);
    while (grpc_completion_queue_pluck(cq, NULL, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
           GRPC_QUEUE_SHUTDOWN) {}
    grpc_completion_queue_destroy(cq);
    grpc_shutdown();
    identity_free(&id);
    return 0;
}

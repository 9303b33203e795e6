/* evilpeer: a peer that speaks distsup's handshake and then misbehaves, to test that
 * a daemon refuses it.  Test tool only.
 *
 *   evilpeer ADDR KEYFILE MODE [NAME]
 *
 * KEYFILE is a node key (distsupd keygen); MODE is one of
 *   handshake  complete the handshake, send a valid Join, wait    (control: stays open)
 *   tamper     complete the handshake, send a Join with one bit flipped
 *   replay     send a valid Join, then the very same sealed packet again
 *   reorder    seal a Join then a Heartbeat, send the Heartbeat first
 *   fragment   send a valid Join, then a sealed middle fragment of a message that
 *              never began (it opens, but is out of place)
 *   garbage    send bytes that are not a handshake
 * and prints one line:
 *   handshake=ok|refused received=N closed=yes|no
 * received counts the packets the daemon sent after its handshake reply (what the
 * peer learned); closed says whether the daemon ended the stream within 5 s.  NAME is
 * the node name its Join claims (default evil@test). */
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

static int send_packet(const uint8_t *data, size_t len)
{
    Distsup__V1__PeerPacket pk = DISTSUP__V1__PEER_PACKET__INIT;
    pk.data.data = (uint8_t *)data;
    pk.data.len = len;
    size_t n = distsup__v1__peer_packet__get_packed_size(&pk);
    grpc_slice s = grpc_slice_malloc(n);
    distsup__v1__peer_packet__pack(&pk, GRPC_SLICE_START_PTR(s));
    grpc_byte_buffer *bb = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = bb;
    int ok = run(&op, 1, 5000);
    grpc_byte_buffer_destroy(bb);
    return ok == 1;
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

/* A sealed packet carrying m: its plaintext is the PeerMsg followed by a one-byte
 * trailer (the framing of docs/cluster.md): 0 a whole message, 2 a middle fragment. */
#define TRAILER_WHOLE 0
#define TRAILER_MIDDLE 2
static size_t seal_msg(struct seal *s, const Distsup__V1__PeerMsg *m, uint8_t trailer, uint8_t *out)
{
    uint8_t plain[512];
    size_t n = distsup__v1__peer_msg__pack(m, plain);
    plain[n++] = trailer;
    seal_encrypt(s, plain, n, out);
    return n + SEAL_OVERHEAD;
}

int main(int argc, char **argv)
{
    if (argc != 4 && argc != 5) {
        fprintf(stderr, "usage: evilpeer ADDR KEYFILE MODE [NAME]\n");
        return 2;
    }
    const char *addr = argv[1], *mode = argv[3], *name = argc == 5 ? argv[4] : "evil@test";
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
    cq = grpc_completion_queue_create_for_pluck(NULL);
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    grpc_channel *ch = grpc_channel_create(addr, creds, NULL);
    grpc_channel_credentials_release(creds);
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
    uint8_t msg1[HS_MSG1_LEN], buf[65536];
    int handshake_ok = 0, timed_out = 0;
    long received = 0, n;
    if (!strcmp(mode, "garbage")) {
        send_packet((const uint8_t *)"GET / HTTP/1.0\r\n\r\n", 18);
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
    if (n == HS_MSG2_LEN && strcmp(mode, "garbage") && hs_initiator_read2(&hs, buf, (size_t)n, peer) == HS_OK) {
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
        uint8_t a[600], b[600];
        size_t an = seal_msg(&seal, &jm, TRAILER_WHOLE, a);
        size_t bn = seal_msg(&seal, &hm, strcmp(mode, "fragment") ? TRAILER_WHOLE : TRAILER_MIDDLE, b);
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
        }
    }
    /* What does the daemon send now, and does it hang up? */
    for (int i = 0; i < 100; i++) {
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
    printf("handshake=%s received=%ld closed=%s\n", handshake_ok ? "ok" : "refused", received, closed ? "yes" : "no");
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

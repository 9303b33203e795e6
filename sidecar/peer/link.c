#include "sidecar/peer/internal.h"

#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sidecar/log.h"
#include "sidecar/spec.h"

/* ---------- links: life cycle ---------- */

static void link_free(struct link *l)
{
    struct peer *p = l->p;
    for (struct link **pp = &p->links; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    if (l->call) grpc_call_unref(l->call);
    if (l->chan) grpc_channel_destroy(l->chan);
    if (l->rbuf) grpc_byte_buffer_destroy(l->rbuf);
    if (l->sbuf) grpc_byte_buffer_destroy(l->sbuf);
    for (struct outmsg *o = l->qhead, *n; o; o = n) {
        n = o->next;
        free(o);
    }
    grpc_metadata_array_destroy(&l->md_a);
    grpc_metadata_array_destroy(&l->md_b);
    grpc_call_details_destroy(&l->details);
    grpc_slice_unref(l->status_details);
    hs_wipe(&l->hs);
    seal_wipe(&l->seal);
    free(l);
    pthread_cond_broadcast(&p->cond);
}

static void link_unref(struct link *l)
{
    if (--l->refs == 0) link_free(l);
}

static struct link *link_new(struct peer *p, int initiator)
{
    struct link *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->p = p;
    l->initiator = initiator;
    l->refs = 1; /* p->links' own reference, dropped by link_close */
    l->opened = now_ms();
    l->status_details = grpc_empty_slice();
    grpc_metadata_array_init(&l->md_a);
    grpc_metadata_array_init(&l->md_b);
    grpc_call_details_init(&l->details);
    l->next = p->links;
    p->links = l;
    return l;
}

/* Drops a link: cancels its call; tags still in flight keep it until they return. */
void link_close(struct link *l, const char *why)
{
    if (l->state == L_CLOSED) return;
    struct peer *p = l->p;
    if (why) log_debug("peer", "closing link with %s: %s", who(l), why);
    l->state = L_CLOSED;
    if (l->m && l->m->link == l) l->m->link = NULL;
    l->m = NULL;
    if (l->seed) {
        l->seed->dialing = 0;
        l->seed->tried = 1;
        l->seed = NULL;
    }
    if (l->dial_for) {
        l->dial_for->dialing = 0;
        l->dial_for->tried = 1;
        l->dial_for = NULL;
    }
    if (l->call) grpc_call_cancel(l->call, NULL);
    (void)p;
    link_unref(l);
}

static int start_batch(struct link *l, const grpc_op *ops, size_t n, struct ptag *t,
                       void (*fn)(struct link *, int))
{
    t->fn = fn;
    t->l = l;
    l->refs++;
    grpc_call_error e = grpc_call_start_batch(l->call, ops, n, t, NULL);
    if (e != GRPC_CALL_OK) {
        log_error("peer", "grpc_call_start_batch for %s: error %d", who(l), (int)e);
        l->refs--;
        return -1;
    }
    return 0;
}

/* ---------- sending ---------- */

static void on_sent(struct link *l, int ok);

static void pump_send(struct link *l)
{
    if (l->sending || !l->qhead || l->state == L_CLOSED) return;
    struct outmsg *o = l->qhead;
    l->qhead = o->next;
    if (!l->qhead) l->qtail = NULL;
    l->qbytes -= o->len;
    /* PeerPacket{data = o}: field 1, length-delimited. */
    uint8_t hdr[12];
    size_t h = 0;
    hdr[h++] = 0x0a;
    for (size_t v = o->len;; v >>= 7) {
        hdr[h++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80) break;
    }
    grpc_slice s = grpc_slice_malloc(h + o->len);
    memcpy(GRPC_SLICE_START_PTR(s), hdr, h);
    memcpy(GRPC_SLICE_START_PTR(s) + h, o->data, o->len);
    free(o);
    l->sbuf = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_SEND_MESSAGE;
    op.data.send_message.send_message = l->sbuf;
    l->sending = 1;
    if (start_batch(l, &op, 1, &l->t_send, on_sent) != 0) {
        l->sending = 0;
        link_close(l, "cannot send");
    }
}

static void on_sent(struct link *l, int ok)
{
    l->sending = 0;
    if (l->sbuf) {
        grpc_byte_buffer_destroy(l->sbuf);
        l->sbuf = NULL;
    }
    if (!ok) link_close(l, "send failed");
    else pump_send(l);
    if (!l->qhead && !l->sending) pthread_cond_broadcast(&l->p->cond);
    link_unref(l);
}

/* Queues raw bytes (handshake) or, when sealed, the sealed form of them. */
static int enqueue(struct link *l, const uint8_t *data, size_t len, int sealed)
{
    if (l->state == L_CLOSED) return -1;
    size_t n = sealed ? len + SEAL_OVERHEAD : len;
    if (l->qbytes + n > SENDQ_MAX) {
        log_error("peer", "node %s is not reading (%zu bytes queued); dropping the link", who(l), l->qbytes);
        link_close(l, "send queue full");
        return -1;
    }
    struct outmsg *o = malloc(sizeof *o + n);
    if (!o) {
        log_error("peer", "out of memory queueing %zu bytes for %s", n, who(l));
        return -1;
    }
    o->next = NULL;
    o->len = n;
    if (sealed) seal_encrypt(&l->seal, data, len, o->data);
    else memcpy(o->data, data, len);
    if (l->qtail) l->qtail->next = o;
    else l->qhead = o;
    l->qtail = o;
    l->qbytes += n;
    pump_send(l);
    return 0;
}

int send_msg(struct link *l, const Distsup__V1__PeerMsg *m)
{
    if (l->state != L_OPEN) return -1;
    size_t n = distsup__v1__peer_msg__get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) return -1;
    distsup__v1__peer_msg__pack(m, buf);
    int rc = enqueue(l, buf, n, 1);
    free(buf);
    return rc;
}

/* ---------- receiving ---------- */

static void on_recv(struct link *l, int ok);

static void recv_next(struct link *l)
{
    if (l->state == L_CLOSED) return;
    grpc_op op;
    memset(&op, 0, sizeof op);
    op.op = GRPC_OP_RECV_MESSAGE;
    op.data.recv_message.recv_message = &l->rbuf;
    if (start_batch(l, &op, 1, &l->t_recv, on_recv) != 0) link_close(l, "cannot receive");
}

/* The data of one PeerPacket, copied into a malloc'd buffer. */
static uint8_t *packet_data(grpc_byte_buffer *bb, size_t *len)
{
    grpc_byte_buffer_reader rd;
    if (!grpc_byte_buffer_reader_init(&rd, bb)) return NULL;
    grpc_slice s = grpc_byte_buffer_reader_readall(&rd);
    grpc_byte_buffer_reader_destroy(&rd);
    Distsup__V1__PeerPacket *pk =
        distsup__v1__peer_packet__unpack(NULL, GRPC_SLICE_LENGTH(s), GRPC_SLICE_START_PTR(s));
    grpc_slice_unref(s);
    if (!pk) return NULL;
    uint8_t *out = malloc(pk->data.len ? pk->data.len : 1);
    if (out) {
        memcpy(out, pk->data.data, pk->data.len);
        *len = pk->data.len;
    }
    distsup__v1__peer_packet__free_unpacked(pk, NULL);
    return out;
}

static void handshake_step(struct peer *p, struct link *l, const uint8_t *d, size_t n)
{
    uint8_t peer_static[HS_KEY_LEN];
    char hex[2 * HS_KEY_LEN + 1];
    const uint8_t *psk = p->id->has_psk ? p->id->psk : NULL;
    if (!l->initiator && l->hs_step == 0) {
        if (hs_responder_read1(&l->hs, &p->id->kp, psk, d, n, peer_static) != HS_OK) {
            log_warn("peer", "refused a link from %s: not a distsup peer handshake", l->addr);
            link_close(l, NULL);
            return;
        }
        if (!identity_trusts(p->id, peer_static)) {
            key_hex(peer_static, hex);
            log_warn("peer", "refused a link from %s: key %s is not in the trust file", l->addr, hex);
            link_close(l, NULL);
            return;
        }
        memcpy(l->peer_pk, peer_static, HS_KEY_LEN);
        uint8_t msg2[HS_MSG2_LEN];
        if (hs_responder_write2(&l->hs, msg2) != HS_OK) {
            log_warn("peer", "refused a link from %s: degenerate ephemeral key", l->addr);
            link_close(l, NULL);
            return;
        }
        l->hs_step = 1;
        enqueue(l, msg2, sizeof msg2, 0);
    } else if (!l->initiator) {
        if (hs_responder_read3(&l->hs, d, n, &l->seal) != HS_OK) {
            log_warn("peer", "refused a link from %s: it did not prove it holds its key, or it has "
                             "another cluster key", l->addr);
            link_close(l, NULL);
            return;
        }
        hs_wipe(&l->hs);
        l->state = L_OPEN;
        send_join(p, l);
    } else {
        enum hs_result r = hs_initiator_read2(&l->hs, d, n, peer_static);
        if (r != HS_OK) {
            log_warn("peer", "link to %s refused: %s", l->addr,
                     r == HS_BAD_PROOF ? "the node did not prove it holds its key, or it has another "
                                         "cluster key"
                                       : "not a distsup peer handshake");
            link_close(l, NULL);
            return;
        }
        if (!identity_trusts(p->id, peer_static)) {
            key_hex(peer_static, hex);
            log_warn("peer", "link to %s refused: its key %s is not in the trust file", l->addr, hex);
            link_close(l, NULL);
            return;
        }
        memcpy(l->peer_pk, peer_static, HS_KEY_LEN);
        uint8_t msg3[HS_MSG3_LEN];
        hs_initiator_write3(&l->hs, msg3, &l->seal);
        hs_wipe(&l->hs);
        enqueue(l, msg3, sizeof msg3, 0);
        l->state = L_OPEN;
        send_join(p, l);
    }
}

static void on_recv(struct link *l, int ok)
{
    struct peer *p = l->p;
    grpc_byte_buffer *bb = l->rbuf;
    l->rbuf = NULL;
    if (!ok || !bb || l->state == L_CLOSED) {
        if (bb) grpc_byte_buffer_destroy(bb);
        if (l->state != L_CLOSED && l->m) log_info("peer", "link with %s closed by the other end", who(l));
        link_close(l, "the stream ended");
        link_unref(l);
        return;
    }
    size_t n = 0;
    uint8_t *d = packet_data(bb, &n);
    grpc_byte_buffer_destroy(bb);
    if (!d) {
        log_warn("peer", "link with %s: a packet that is not a PeerPacket; dropping the link", who(l));
        link_close(l, NULL);
    } else if (l->state == L_HANDSHAKE) {
        handshake_step(p, l, d, n);
    } else {
        uint8_t *plain = n >= SEAL_OVERHEAD ? malloc(n - SEAL_OVERHEAD + 1) : NULL;
        if (!plain || seal_decrypt(&l->seal, d, n, plain) != 0) {
            log_error("peer", "link with %s: a packet failed authentication (modified, replayed or out "
                              "of order); dropping the link", who(l));
            link_close(l, NULL);
        } else {
            if (l->m) l->m->last_heard = now_ms();
            Distsup__V1__PeerMsg *pm = distsup__v1__peer_msg__unpack(NULL, n - SEAL_OVERHEAD, plain);
            if (!pm) {
                log_error("peer", "link with %s: an undecodable message; dropping the link", who(l));
                link_close(l, NULL);
            } else {
                on_peer_msg(p, l, pm);
                distsup__v1__peer_msg__free_unpacked(pm, NULL);
            }
        }
        free(plain);
    }
    free(d);
    recv_next(l);
    link_unref(l);
}

static void on_closed(struct link *l, int ok)
{
    (void)ok;
    link_close(l, "the call ended");
    link_unref(l);
}

/* ---------- accepting and dialing ---------- */

static void on_accept(struct link *l, int ok);

void request_accept(struct peer *p)
{
    if (p->stopping) return;
    struct link *l = link_new(p, 0);
    if (!l) {
        log_error("peer", "out of memory: not accepting peer links");
        return;
    }
    l->t_start.fn = on_accept;
    l->t_start.l = l;
    l->refs++;
    grpc_call_error e = grpc_server_request_registered_call(p->server, p->method, &l->call, &l->deadline,
                                                            &l->md_a, NULL, p->cq, p->cq, &l->t_start);
    if (e != GRPC_CALL_OK) {
        log_error("peer", "cannot accept peer links: grpc error %d", (int)e);
        l->refs--;
        link_close(l, NULL);
    }
}

static size_t count_handshaking(const struct peer *p)
{
    size_t n = 0;
    for (const struct link *l = p->links; l; l = l->next)
        if (l->state == L_HANDSHAKE && l->addr[0]) n++;
    return n;
}

static void on_accept(struct link *l, int ok)
{
    struct peer *p = l->p;
    if (!ok || p->stopping) {
        link_close(l, NULL);
        link_unref(l);
        return;
    }
    request_accept(p);
    char *addr = grpc_call_get_peer(l->call);
    copy_str(l->addr, sizeof l->addr, addr ? addr : "?");
    gpr_free(addr);
    l->opened = now_ms();
    if (count_handshaking(p) > MAX_HANDSHAKING) {
        log_warn("peer", "refused a link from %s: %d handshakes in progress already", l->addr, MAX_HANDSHAKING);
        link_close(l, NULL);
        link_unref(l);
        return;
    }
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[1].data.recv_close_on_server.cancelled = &l->cancelled;
    if (start_batch(l, ops, 2, &l->t_close, on_closed) != 0) link_close(l, NULL);
    recv_next(l);
    link_unref(l);
}

struct link *dial(struct peer *p, const char *addr)
{
    struct link *l = link_new(p, 1);
    if (!l) return NULL;
    copy_str(l->addr, sizeof l->addr, addr);
    grpc_arg args[2];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = MAX_MESSAGE;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[1].value.integer = DIAL_BACKOFF_MAX_MS;
    grpc_channel_args ca = {2, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    l->chan = grpc_channel_create(addr, creds, &ca);
    grpc_channel_credentials_release(creds);
    grpc_slice method = grpc_slice_from_static_string(METHOD);
    l->call = l->chan ? grpc_channel_create_call(l->chan, NULL, GRPC_PROPAGATE_DEFAULTS, p->cq, method, NULL,
                                                 gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                      : NULL;
    if (!l->call) {
        log_warn("peer", "cannot dial %s", addr);
        link_close(l, NULL);
        return NULL;
    }
    uint8_t msg1[HS_MSG1_LEN];
    hs_initiator_begin(&l->hs, &p->id->kp, p->id->has_psk ? p->id->psk : NULL, msg1);
    grpc_op ops[2];
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[1].data.recv_status_on_client.trailing_metadata = &l->md_b;
    ops[1].data.recv_status_on_client.status = &l->status;
    ops[1].data.recv_status_on_client.status_details = &l->status_details;
    if (start_batch(l, ops, 2, &l->t_close, on_closed) != 0) {
        link_close(l, NULL);
        return NULL;
    }
    memset(ops, 0, sizeof ops);
    ops[0].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[0].data.recv_initial_metadata.recv_initial_metadata = &l->md_a;
    ops[1].op = GRPC_OP_RECV_MESSAGE;
    ops[1].data.recv_message.recv_message = &l->rbuf;
    if (start_batch(l, ops, 2, &l->t_recv, on_recv) != 0) {
        link_close(l, NULL);
        return NULL;
    }
    enqueue(l, msg1, sizeof msg1, 0);
    log_debug("peer", "dialing %s", addr);
    return l;
}

void *cq_main(void *arg)
{
    struct peer *p = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(p->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        struct ptag *t = ev.tag;
        pthread_mutex_lock(&p->mu);
        if (t == &p->t_shutdown) {
            p->shutdown_done = 1;
            pthread_cond_broadcast(&p->cond);
        } else {
            t->fn(t->l, ev.success);
        }
        pthread_mutex_unlock(&p->mu);
    }
    return NULL;
}

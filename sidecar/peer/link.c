#include "sidecar/peer/link.h"

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sidecar/grpcutil.h"
#include "sidecar/handshake.h"
#include "sidecar/log.h"
#include "sidecar/metrics.h"

#define METHOD "/distsup.v1.Peer/Link"
#define HANDSHAKE_TIMEOUT_MS 5000
#define END_TIMEOUT_MS 5000      /* an ended link whose other end does not end its side is cancelled then */
#define MAX_HANDSHAKING 64       /* accepted links in handshake at once; a new one replaces the oldest */
#define MAX_PER_SOURCE 4         /* ... and from one address */
#define SENDQ_MAX (256u << 20)   /* bytes queued to one peer before it is dropped */
#define DIAL_BACKOFF_MAX_MS 2000 /* gRPC's own reconnect backoff cap */
/* gRPC's receive limit, for every packet, before and after the handshake: a bulk
 * fragment, or a whole control message (Join and Members name at most 1,024 members:
 * well under this).  gRPC refuses a larger message by its length prefix, before it
 * buffers it, so a stranger cannot make this node hold more than this per stream
 * (and MAX_HANDSHAKING streams in handshake). */
#define MAX_PACKET (1u << 20)
#define PEER_QUOTA (16u << 20) /* bytes the peer server's transport may hold at once */

/* Framing inside the seal: every sealed packet's plaintext ends with a trailer.
 *   [message][0]                  F_WHOLE  a whole message
 *   [part][total u32 LE][1]       F_FIRST  the first fragment of a message of total bytes
 *   [part][2]                     F_MORE   a middle fragment
 *   [part][3]                     F_LAST   the last fragment
 * A trailer (not a header) lets a fragment be opened in place at its spot in the
 * reassembled message. */
enum { F_WHOLE = 0, F_FIRST = 1, F_MORE = 2, F_LAST = 3 };
#define TRAILER_MAX 5
/* Room before each packet's plaintext for the PeerPacket header written in front of
 * it: the tag byte and a varint length (a packet is under 2^28 bytes: 4 bytes). */
#define HDR_ROOM 6
#define STRIDE (HDR_ROOM + LINK_FRAGMENT + TRAILER_MAX + SEAL_OVERHEAD)

enum lstate { L_HANDSHAKE, L_OPEN, L_CLOSED };

struct ltag {
    void (*fn)(struct link *l, int ok);
    struct link *l;
};

/* A message laid out as its packets will go out: packet i at buf + i * STRIDE is
 * HDR_ROOM bytes of room, its part of the message, its trailer, SEAL_OVERHEAD bytes
 * of room for the tag.  Sealing happens in place when the packet is sent. */
struct link_out {
    struct link_out *next;
    atomic_int refs;     /* its holder's, plus one per packet gRPC may still read */
    int raw;             /* a handshake message: no trailer, not sealed */
    size_t total;        /* message bytes */
    size_t n_pkts, sent; /* its packets, and how many went out */
    size_t size;         /* bytes of buf */
    uint8_t buf[];
};

struct lane {
    struct link_out *head, *tail;
};

struct link {
    struct linkset *ls;
    struct link *next; /* ls->links */
    int initiator;
    int state; /* enum lstate */
    int hs_step;
    struct hs hs;
    struct seal seal;
    grpc_call *call;
    grpc_channel *chan;          /* the initiator's own channel */
    char name[LINK_ADDR_MAX];    /* the node, once its owner knows it */
    uint8_t peer_pk[HS_KEY_LEN]; /* its static key, once the handshake checked it */
    char addr[LINK_ADDR_MAX];    /* dialed address, or the remote socket */
    void *user;
    uint64_t opened;
    int refs;
    grpc_byte_buffer *rbuf, *sbuf;
    struct lane lanes[2]; /* enum link_lane */
    size_t qbytes;
    int sending;
    const char *close_drained; /* link_close_drained: end once nothing is left to send (a static string) */
    int ending;                /* the stream is being ended in order (link_end): nothing more goes out */
    uint64_t ending_since;
    uint8_t *rx_msg; /* a fragmented message being put together */
    size_t rx_len, rx_total, rx_cap;
    struct ltag t_recv, t_send, t_close, t_start, t_end;
    grpc_metadata_array md_a, md_b;
    gpr_timespec deadline;
    grpc_status_code status;
    grpc_slice status_details;
    int cancelled;
};

struct linkset {
    const struct identity *id;
    struct link_hooks hooks;
    pthread_mutex_t *mu;
    pthread_cond_t *cond;
    struct metrics *metrics;
    grpc_server *server;
    grpc_completion_queue *cq;
    void *method;
    pthread_t cq_thread;
    int thread_started;
    struct link *links;
    int stopping, shutdown_done;
    struct ltag t_shutdown;
    uint64_t replaced_at; /* the last "replaced the oldest handshake" line */
    unsigned replaced_quiet;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---------- outgoing messages ---------- */

/* Packet i of o: where its plaintext starts, its part's length and its trailer's. */
static uint8_t *pkt_geometry(const struct link_out *o, size_t i, size_t *part, size_t *trailer)
{
    if (o->n_pkts == 1) {
        *part = o->total;
        *trailer = o->raw ? 0 : 1;
    } else {
        size_t start = i * LINK_FRAGMENT;
        *part = o->total - start < LINK_FRAGMENT ? o->total - start : LINK_FRAGMENT;
        *trailer = i == 0 ? 5 : 1;
    }
    return (uint8_t *)o->buf + i * STRIDE + HDR_ROOM;
}

static size_t pkt_wire(const struct link_out *o, size_t i)
{
    size_t part, trailer;
    pkt_geometry(o, i, &part, &trailer);
    return part + trailer + (o->raw ? 0 : SEAL_OVERHEAD) + HDR_ROOM;
}

static struct link_out *out_alloc(size_t total, int raw, int whole)
{
    if (total > LINK_MAX_MESSAGE) return NULL;
    size_t n = whole || total <= LINK_FRAGMENT ? 1 : (total + LINK_FRAGMENT - 1) / LINK_FRAGMENT;
    size_t last = n == 1 ? total : total - (n - 1) * LINK_FRAGMENT;
    size_t size = (n - 1) * STRIDE + HDR_ROOM + last + TRAILER_MAX + SEAL_OVERHEAD;
    struct link_out *o = malloc(sizeof *o + size);
    if (!o) return NULL;
    o->next = NULL;
    atomic_init(&o->refs, 1);
    o->raw = raw;
    o->total = total;
    o->n_pkts = n;
    o->sent = 0;
    o->size = size;
    return o;
}

/* Writes each packet's trailer after its part. */
static void out_trailers(struct link_out *o)
{
    for (size_t i = 0; i < o->n_pkts && !o->raw; i++) {
        size_t part, trailer;
        uint8_t *t = pkt_geometry(o, i, &part, &trailer) + part;
        if (o->n_pkts == 1) {
            t[0] = F_WHOLE;
        } else if (i == 0) {
            for (int k = 0; k < 4; k++) t[k] = (uint8_t)(o->total >> (8 * k));
            t[4] = F_FIRST;
        } else {
            t[0] = i + 1 == o->n_pkts ? F_LAST : F_MORE;
        }
    }
}

/* Copies the message bytes [from, from + n) of src into o's packets. */
static void out_fill(struct link_out *o, size_t from, const uint8_t *src, size_t n)
{
    while (n > 0) {
        size_t i = o->n_pkts == 1 ? 0 : from / LINK_FRAGMENT, off = o->n_pkts == 1 ? from : from % LINK_FRAGMENT;
        size_t part, trailer;
        uint8_t *dst = pkt_geometry(o, i, &part, &trailer);
        size_t take = part - off < n ? part - off : n;
        memcpy(dst + off, src, take);
        src += take;
        from += take;
        n -= take;
    }
}

struct link_out *link_out_new(const uint8_t *prefix, size_t plen, const uint8_t *data, size_t len)
{
    if (plen > 16 || len > LINK_MAX_MESSAGE) return NULL;
    struct link_out *o = out_alloc(plen + len, 0, 0);
    if (!o) return NULL;
    out_fill(o, 0, prefix, plen);
    out_fill(o, plen, data, len);
    out_trailers(o);
    return o;
}

static struct link_out *out_raw(const uint8_t *data, size_t len)
{
    struct link_out *o = out_alloc(len, 1, 1);
    if (o) memcpy(o->buf + HDR_ROOM, data, len);
    return o;
}

struct link_out *link_out_clone(const struct link_out *o)
{
    struct link_out *c = malloc(sizeof *c + o->size);
    if (!c) return NULL;
    memcpy(c, o, sizeof *c + o->size);
    c->next = NULL;
    atomic_init(&c->refs, 1);
    c->sent = 0;
    return c;
}

/* Drops one reference; called by gRPC (any thread) when it is done with a packet. */
static void out_release(void *arg)
{
    struct link_out *o = arg;
    if (atomic_fetch_sub(&o->refs, 1) == 1) free(o);
}

void link_out_free(struct link_out *o)
{
    if (o) out_release(o);
}

/* ---------- links: life cycle ---------- */

const char *link_who(const struct link *l) { return l->name[0] ? l->name : l->addr; }

static void link_free(struct link *l)
{
    struct linkset *ls = l->ls;
    for (struct link **pp = &ls->links; *pp; pp = &(*pp)->next)
        if (*pp == l) {
            *pp = l->next;
            break;
        }
    if (l->call) grpc_call_unref(l->call);
    if (l->chan) grpc_channel_destroy(l->chan);
    if (l->rbuf) grpc_byte_buffer_destroy(l->rbuf);
    if (l->sbuf) grpc_byte_buffer_destroy(l->sbuf);
    for (int k = 0; k < 2; k++)
        for (struct link_out *o = l->lanes[k].head, *n; o; o = n) {
            n = o->next;
            link_out_free(o);
        }
    free(l->rx_msg);
    grpc_metadata_array_destroy(&l->md_a);
    grpc_metadata_array_destroy(&l->md_b);
    grpc_slice_unref(l->status_details);
    hs_wipe(&l->hs);
    seal_wipe(&l->seal);
    free(l);
    pthread_cond_broadcast(ls->cond);
}

static void link_unref(struct link *l)
{
    if (--l->refs == 0) link_free(l);
}

static struct link *link_new(struct linkset *ls, int initiator)
{
    struct link *l = calloc(1, sizeof *l);
    if (!l) return NULL;
    l->ls = ls;
    l->initiator = initiator;
    l->refs = 1; /* ls->links' own reference, dropped by link_close */
    l->opened = now_ms();
    l->status_details = grpc_empty_slice();
    grpc_metadata_array_init(&l->md_a);
    grpc_metadata_array_init(&l->md_b);
    l->next = ls->links;
    ls->links = l;
    return l;
}

/* Cancels the call; tags still in flight keep l until they return. */
void link_close(struct link *l, const char *why)
{
    if (l->state == L_CLOSED) return;
    if (why) log_debug("peer", "closing link with %s: %s", link_who(l), why);
    if (l->state == L_OPEN) metrics_gauge_add(l->ls->metrics, MG_PEER_LINKS_UP, -1);
    l->state = L_CLOSED;
    if (l->call) grpc_call_cancel(l->call, NULL);
    l->ls->hooks.closed(l->ls->hooks.arg, l);
    l->user = NULL;
    link_unref(l);
}

static int start_batch(struct link *l, const struct gu_batch *b, struct ltag *t, void (*fn)(struct link *, int))
{
    t->fn = fn;
    t->l = l;
    l->refs++;
    if (gu_batch_start(l->call, b, t, "peer", link_who(l)) != GRPC_CALL_OK) {
        l->refs--;
        return -1;
    }
    return 0;
}

/* ---------- sending ---------- */

static void on_sent(struct link *l, int ok);

/* Seals the next packet in place and hands it to gRPC: control first, then bulk. */
static void pump_send(struct link *l)
{
    if (l->sending || l->state == L_CLOSED || l->ending) return;
    struct lane *q = l->lanes[LANE_CONTROL].head ? &l->lanes[LANE_CONTROL] : &l->lanes[LANE_BULK];
    struct link_out *o = q->head;
    if (!o) return;
    size_t i = o->sent, part, trailer;
    uint8_t *plain = pkt_geometry(o, i, &part, &trailer);
    size_t n = part + trailer;
    l->qbytes -= pkt_wire(o, i);
    if (!o->raw) {
        seal_encrypt(&l->seal, plain, n, plain); /* the tag lands in the room after it */
        n += SEAL_OVERHEAD;
        metrics_add(l->ls->metrics, MN_PEER_MESSAGES_SENT, 1);
        metrics_add(l->ls->metrics, MN_PEER_BYTES_SENT, n);
    }
    /* PeerPacket{data}: field 1, length-delimited, written just before the data. */
    uint8_t hdr[HDR_ROOM];
    size_t h = 0;
    hdr[h++] = 0x0a;
    for (size_t v = n;; v >>= 7) {
        hdr[h++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80) break;
    }
    memcpy(plain - h, hdr, h);
    atomic_fetch_add(&o->refs, 1);
    l->sbuf = gu_bb_borrow(plain - h, h + n, out_release, o);
    if (++o->sent == o->n_pkts) {
        if (!(q->head = o->next)) q->tail = NULL;
        link_out_free(o); /* gRPC's reference keeps the bytes until it is done */
    }
    struct gu_batch b;
    gu_batch_init(&b);
    gu_send_message(&b, l->sbuf);
    l->sending = 1;
    if (start_batch(l, &b, &l->t_send, on_sent) != 0) {
        l->sending = 0;
        link_close(l, "cannot send");
    }
}

static void on_ended(struct link *l, int ok)
{
    if (!ok) link_close(l, "its end could not be sent");
    link_unref(l);
}

/* Ends l's stream in order, after what was sent: the dialer half-closes, the acceptor
 * sends status OK.  Unlike a cancel, which may drop what gRPC had not yet handed to
 * the other end, this reaches the other end after every message sent before it; the
 * other end then ends its side, and the link closes here when the stream is over (or
 * after END_TIMEOUT_MS, see linkset_tick). */
static void link_end(struct link *l, const char *why)
{
    if (l->state != L_OPEN || l->ending) {
        if (l->state != L_OPEN) link_close(l, why);
        return;
    }
    log_debug("peer", "ending link with %s: %s", link_who(l), why);
    l->ending = 1;
    l->ending_since = now_ms();
    struct gu_batch b;
    gu_batch_init(&b);
    if (l->initiator) gu_send_close_from_client(&b);
    else gu_send_status(&b, GRPC_STATUS_OK, NULL);
    if (start_batch(l, &b, &l->t_end, on_ended) != 0) link_close(l, why);
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
    if (l->close_drained && l->state != L_CLOSED && !l->sending && !l->lanes[LANE_CONTROL].head &&
        !l->lanes[LANE_BULK].head)
        link_end(l, l->close_drained);
    if (!l->sending) pthread_cond_broadcast(l->ls->cond);
    link_unref(l);
}

void link_close_drained(struct link *l, const char *why)
{
    if (l->state == L_CLOSED) return;
    if (!why) why = "everything sent";
    if (!l->sending && !l->lanes[LANE_CONTROL].head && !l->lanes[LANE_BULK].head) {
        link_end(l, why);
        return;
    }
    l->close_drained = why;
}

static int queue_out(struct link *l, enum link_lane lane, struct link_out *o)
{
    if (l->state == L_CLOSED || l->ending || (lane == LANE_CONTROL && o->n_pkts != 1)) {
        link_out_free(o);
        return -1;
    }
    size_t wire = 0;
    for (size_t i = 0; i < o->n_pkts; i++) wire += pkt_wire(o, i);
    if (l->qbytes + wire > SENDQ_MAX) {
        log_error("peer", "node %s is not reading (%zu bytes queued); dropping the link", link_who(l), l->qbytes);
        link_out_free(o);
        link_close(l, "send queue full");
        return -1;
    }
    struct lane *q = &l->lanes[lane];
    if (q->tail) q->tail->next = o;
    else q->head = o;
    q->tail = o;
    l->qbytes += wire;
    pump_send(l);
    return 0;
}

int link_queue(struct link *l, enum link_lane lane, struct link_out *o)
{
    if (!o) return -1;
    if (l->state != L_OPEN) {
        link_out_free(o);
        return -1;
    }
    return queue_out(l, lane, o);
}

int link_send_msg(struct link *l, enum link_lane lane, const ProtobufCMessage *m)
{
    if (l->state != L_OPEN) return -1;
    size_t n = protobuf_c_message_get_packed_size(m);
    if (lane == LANE_CONTROL && n > MAX_PACKET - (HDR_ROOM + TRAILER_MAX + SEAL_OVERHEAD)) {
        log_error("peer", "a control message of %zu bytes for %s is over the packet limit; not sent", n, link_who(l));
        return -1;
    }
    struct link_out *o = out_alloc(n, 0, lane == LANE_CONTROL);
    if (!o) {
        log_error("peer", "out of memory queueing %zu bytes for %s", n, link_who(l));
        return -1;
    }
    if (o->n_pkts == 1) {
        protobuf_c_message_pack(m, o->buf + HDR_ROOM); /* packed straight into its packet */
    } else {
        uint8_t *tmp = malloc(n);
        if (!tmp) {
            link_out_free(o);
            return -1;
        }
        protobuf_c_message_pack(m, tmp);
        out_fill(o, 0, tmp, n);
        free(tmp);
    }
    out_trailers(o);
    return queue_out(l, lane, o);
}

static void send_raw(struct link *l, const uint8_t *data, size_t len)
{
    struct link_out *o = out_raw(data, len);
    if (!o) link_close(l, "out of memory");
    else queue_out(l, LANE_CONTROL, o);
}

int linkset_busy(const struct linkset *ls)
{
    for (const struct link *l = ls->links; l; l = l->next)
        if (l->state == L_OPEN && (l->lanes[0].head || l->lanes[1].head || l->sending)) return 1;
    return 0;
}

/* ---------- receiving ---------- */

static void on_recv(struct link *l, int ok);

static void recv_next(struct link *l)
{
    if (l->state == L_CLOSED) return;
    struct gu_batch b;
    gu_batch_init(&b);
    gu_recv_message(&b, &l->rbuf);
    if (start_batch(l, &b, &l->t_recv, on_recv) != 0) link_close(l, "cannot receive");
}

/* Where a PeerPacket's data starts in bb, and its length; -1 if bb is not one. */
static int packet_bounds(grpc_byte_buffer *bb, size_t *off, size_t *len)
{
    size_t total = grpc_byte_buffer_length(bb);
    uint8_t h[HDR_ROOM];
    size_t n = total < sizeof h ? total : sizeof h;
    if (n < 2 || gu_bb_copy(bb, 0, h, n) != 0 || h[0] != 0x0a) return -1;
    uint64_t v = 0;
    for (size_t i = 1; i < n; i++) {
        v |= (uint64_t)(h[i] & 0x7f) << (7 * (i - 1));
        if (!(h[i] & 0x80)) {
            if (v != total - (i + 1)) return -1;
            *off = i + 1;
            *len = (size_t)v;
            return 0;
        }
    }
    return -1;
}

/* A handshake that failed: logged, counted by reason, the link closed. */
static void hs_refuse(struct link *l, enum log_level level, enum metric_counter why, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void hs_refuse(struct link *l, enum log_level level, enum metric_counter why, const char *fmt, ...)
{
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    log_msg(level, "peer", "%s", msg);
    metrics_add(l->ls->metrics, why, 1);
    link_close(l, NULL);
}

/* The peer's static key, on either side: not this node's own, and in the trust file.
 * 0, or -1 with the link refused. */
static int hs_check_key(struct link *l, const uint8_t peer_static[HS_KEY_LEN])
{
    struct linkset *ls = l->ls;
    if (sodium_memcmp(peer_static, ls->id->kp.pk, HS_KEY_LEN) == 0) {
        if (l->initiator)
            hs_refuse(l, LOG_INFO, MN_HS_FAIL_UNTRUSTED,
                      "link to %s refused: the node there presented this node's own key (this node "
                      "itself, or a dial sent back here)",
                      l->addr);
        else
            hs_refuse(l, LOG_WARN, MN_HS_FAIL_UNTRUSTED,
                      "refused a link from %s: it presented this node's own key (a dial of this node "
                      "sent back to it, or a stolen key)",
                      l->addr);
        return -1;
    }
    if (!identity_trusts(ls->id, peer_static)) {
        char hex[2 * HS_KEY_LEN + 1];
        key_hex(peer_static, hex);
        if (l->initiator)
            hs_refuse(l, LOG_WARN, MN_HS_FAIL_UNTRUSTED, "link to %s refused: its key %s is not in the trust file",
                      l->addr, hex);
        else
            hs_refuse(l, LOG_WARN, MN_HS_FAIL_UNTRUSTED, "refused a link from %s: key %s is not in the trust file",
                      l->addr, hex);
        return -1;
    }
    memcpy(l->peer_pk, peer_static, HS_KEY_LEN);
    return 0;
}

static void handshake_step(struct link *l, const uint8_t *d, size_t n)
{
    struct linkset *ls = l->ls;
    uint8_t peer_static[HS_KEY_LEN];
    const uint8_t *psk = ls->id->has_psk ? ls->id->psk : NULL;
    if (!l->initiator && l->hs_step == 0) {
        enum hs_result r = hs_responder_read1(&l->hs, &ls->id->kp, psk, d, n, peer_static);
        if (r == HS_BAD_VERSION) {
            hs_refuse(l, LOG_WARN, MN_HS_FAIL_BAD_MESSAGE,
                      "refused a link from %s: it speaks peer link protocol %c, this node %d (another "
                      "distsupd release: every node of a cluster must run a release with the same link "
                      "protocol; docs/cluster.md)",
                      l->addr, (char)d[3], HS_LINK_VERSION);
            return;
        }
        if (r != HS_OK) {
            hs_refuse(l, LOG_WARN, MN_HS_FAIL_BAD_MESSAGE, "refused a link from %s: not a distsup peer handshake",
                      l->addr);
            return;
        }
        if (hs_check_key(l, peer_static) != 0) return;
        uint8_t msg2[HS_MSG2_LEN];
        if (hs_responder_write2(&l->hs, msg2) != HS_OK) {
            hs_refuse(l, LOG_WARN, MN_HS_FAIL_OTHER, "refused a link from %s: degenerate ephemeral key", l->addr);
            return;
        }
        l->hs_step = 1;
        send_raw(l, msg2, sizeof msg2);
    } else if (!l->initiator) {
        if (hs_responder_read3(&l->hs, d, n, &l->seal) != HS_OK) {
            hs_refuse(l, LOG_WARN, MN_HS_FAIL_BAD_MESSAGE,
                      "refused a link from %s: it did not prove it holds its key, or it has "
                      "another cluster key",
                      l->addr);
            return;
        }
        hs_wipe(&l->hs);
        l->state = L_OPEN;
        metrics_gauge_add(ls->metrics, MG_PEER_LINKS_UP, 1);
        ls->hooks.opened(ls->hooks.arg, l);
    } else {
        enum hs_result r = hs_initiator_read2(&l->hs, d, n, peer_static);
        if (r != HS_OK) {
            hs_refuse(l, LOG_WARN, MN_HS_FAIL_BAD_MESSAGE, "link to %s refused: %s", l->addr,
                      r == HS_BAD_PROOF ? "the node did not prove it holds its key, or it has another "
                                          "cluster key"
                                        : "not a distsup peer handshake");
            return;
        }
        if (hs_check_key(l, peer_static) != 0) return;
        uint8_t msg3[HS_MSG3_LEN];
        hs_initiator_write3(&l->hs, msg3, &l->seal);
        hs_wipe(&l->hs);
        send_raw(l, msg3, sizeof msg3);
        if (l->state == L_HANDSHAKE) {
            l->state = L_OPEN;
            metrics_gauge_add(ls->metrics, MG_PEER_LINKS_UP, 1);
            ls->hooks.opened(ls->hooks.arg, l);
        }
    }
}

static void drop_bad(struct link *l, uint8_t *own, const char *what)
{
    free(own);
    log_error("peer", "link with %s: %s; dropping the link", link_who(l), what);
    link_close(l, NULL);
}
#define AUTH_FAILED "a packet failed authentication (modified, replayed or out of order)"

/* Opens the sealed packet of n bytes at offset off of bb and acts on it.  It is opened
 * where its plaintext belongs: at the end of the message being put together, or in a
 * buffer of its own. */
static void sealed_packet(struct link *l, grpc_byte_buffer *bb, size_t off, size_t n)
{
    struct linkset *ls = l->ls;
    if (n < SEAL_OVERHEAD + 1) {
        metrics_add(ls->metrics, MN_PEER_SEALED_DROPPED, 1);
        drop_bad(l, NULL, AUTH_FAILED);
        return;
    }
    int in_place = l->rx_msg && l->rx_len + n <= l->rx_cap;
    uint8_t *dst = in_place ? l->rx_msg + l->rx_len : malloc(n);
    if (!dst) {
        drop_bad(l, NULL, "out of memory for a packet");
        return;
    }
    /* One slice (the usual case for a packet): opened straight out of gRPC's buffer.
     * Else gathered once, then opened in place. */
    const uint8_t *src = gu_bb_span(bb, off, n);
    int rc = src                           ? seal_decrypt(&l->seal, src, n, dst)
        : gu_bb_copy(bb, off, dst, n) == 0 ? seal_decrypt(&l->seal, dst, n, dst)
                                           : -1;
    uint8_t *own = in_place ? NULL : dst; /* freed on every way out */
    if (rc != 0) {
        metrics_add(ls->metrics, MN_PEER_SEALED_DROPPED, 1);
        drop_bad(l, own, AUTH_FAILED);
        return;
    }
    metrics_add(ls->metrics, MN_PEER_MESSAGES_RECEIVED, 1);
    metrics_add(ls->metrics, MN_PEER_BYTES_RECEIVED, n);
    ls->hooks.heard(ls->hooks.arg, l);
    size_t plain = n - SEAL_OVERHEAD;
    uint8_t kind = dst[plain - 1];
    if (kind == F_WHOLE) {
        ls->hooks.message(ls->hooks.arg, l, dst, plain - 1);
        free(own);
        return;
    }
    if (kind == F_FIRST) {
        size_t part = plain >= 5 ? plain - 5 : 0;
        uint32_t total = 0;
        for (int k = 0; plain >= 5 && k < 4; k++) total |= (uint32_t)dst[part + k] << (8 * k);
        if (l->rx_msg || plain < 5 || total <= part || total > LINK_MAX_MESSAGE) {
            drop_bad(l, own, "a fragment out of place");
            return;
        }
        size_t cap = (size_t)total + TRAILER_MAX + SEAL_OVERHEAD;
        uint8_t *grown = realloc(dst, cap);
        if (!grown) {
            drop_bad(l, own, "out of memory for a fragmented message");
            return;
        }
        l->rx_msg = grown;
        l->rx_len = part;
        l->rx_total = total;
        l->rx_cap = cap;
        return;
    }
    size_t part = plain - 1;
    if (!in_place || (kind != F_MORE && kind != F_LAST) || l->rx_len + part > l->rx_total ||
        (kind == F_LAST) != (l->rx_len + part == l->rx_total)) {
        drop_bad(l, own, "a fragment out of place");
        return;
    }
    l->rx_len += part;
    if (kind == F_LAST) {
        uint8_t *msg = l->rx_msg;
        size_t len = l->rx_len;
        l->rx_msg = NULL;
        l->rx_len = l->rx_total = l->rx_cap = 0;
        ls->hooks.message(ls->hooks.arg, l, msg, len);
        free(msg);
    }
}

static void on_recv(struct link *l, int ok)
{
    grpc_byte_buffer *bb = l->rbuf;
    l->rbuf = NULL;
    if (!ok || !bb || l->state == L_CLOSED) {
        if (bb) grpc_byte_buffer_destroy(bb);
        if (l->state == L_OPEN && l->name[0] && !l->ending)
            log_info("peer", "link with %s closed by the other end", link_who(l));
        link_close(l, l->ending ? "ended" : "the stream ended");
        link_unref(l);
        return;
    }
    size_t off = 0, n = 0;
    if (packet_bounds(bb, &off, &n) != 0) {
        log_warn("peer", "link with %s: a packet that is not a PeerPacket; dropping the link", link_who(l));
        link_close(l, NULL);
    } else if (l->state == L_HANDSHAKE) {
        uint8_t d[HS_MSG2_LEN];
        /* Longer than any handshake message: passed on as length 0, which fails as such. */
        if (n > sizeof d || gu_bb_copy(bb, off, d, n) != 0) n = 0;
        handshake_step(l, d, n);
    } else {
        sealed_packet(l, bb, off, n);
    }
    grpc_byte_buffer_destroy(bb);
    recv_next(l);
    link_unref(l);
}

static void on_closed(struct link *l, int ok)
{
    (void)ok;
    if (l->initiator && l->state == L_OPEN && l->status == GRPC_STATUS_OK) {
        /* The other end ended the stream in order (link_end): the messages before its
         * status may still wait to be read; the pending receive ends the link after
         * them (or linkset_tick does). */
        if (!l->ending) l->ending_since = now_ms();
        l->ending = 1;
    } else {
        link_close(l, "the call ended");
    }
    link_unref(l);
}

/* ---------- accepting and dialing ---------- */

static void on_accept(struct link *l, int ok);

static void request_accept(struct linkset *ls)
{
    if (ls->stopping) return;
    struct link *l = link_new(ls, 0);
    if (!l) {
        log_error("peer", "out of memory: not accepting peer links");
        return;
    }
    l->t_start.fn = on_accept;
    l->t_start.l = l;
    l->refs++;
    grpc_call_error e = grpc_server_request_registered_call(ls->server, ls->method, &l->call, &l->deadline, &l->md_a,
                                                            NULL, ls->cq, ls->cq, &l->t_start);
    if (e != GRPC_CALL_OK) {
        log_error("peer", "cannot accept peer links: grpc error %d", (int)e);
        l->refs--;
        link_close(l, NULL);
    }
}

/* The host part of an address as gRPC gives it ("ipv4:10.0.0.1:5000"): its length. */
static size_t host_len(const char *addr)
{
    const char *colon = strrchr(addr, ':');
    return colon ? (size_t)(colon - addr) : strlen(addr);
}

static int same_host(const char *a, const char *b)
{
    size_t n = host_len(a);
    return n == host_len(b) && !strncmp(a, b, n);
}

/* The accepted link in handshake (other than l) to give way to l, or NULL when there is
 * room: when MAX_PER_SOURCE come from l's address, the oldest of those; when
 * MAX_HANDSHAKING are under way, the oldest of all.  Links that sent nothing yet go
 * before those whose msg1 arrived. */
static struct link *to_replace(const struct linkset *ls, const struct link *l)
{
    size_t all = 0, mine = 0;
    struct link *old_all = NULL, *old_mine = NULL;
    for (struct link *o = ls->links; o; o = o->next) {
        if (o == l || o->initiator || o->state != L_HANDSHAKE || !o->addr[0]) continue;
        all++;
        int older_all = !old_all || o->hs_step < old_all->hs_step ||
            (o->hs_step == old_all->hs_step && o->opened <= old_all->opened);
        if (older_all) old_all = o;
        if (!same_host(o->addr, l->addr)) continue;
        mine++;
        int older_mine = !old_mine || o->hs_step < old_mine->hs_step ||
            (o->hs_step == old_mine->hs_step && o->opened <= old_mine->opened);
        if (older_mine) old_mine = o;
    }
    if (mine >= MAX_PER_SOURCE) return old_mine;
    if (all >= MAX_HANDSHAKING) return old_all;
    return NULL;
}

static void on_accept(struct link *l, int ok)
{
    struct linkset *ls = l->ls;
    if (!ok || ls->stopping) {
        link_close(l, NULL);
        link_unref(l);
        return;
    }
    request_accept(ls);
    char *addr = grpc_call_get_peer(l->call);
    snprintf(l->addr, sizeof l->addr, "%s", addr ? addr : "?");
    gpr_free(addr);
    l->opened = now_ms();
    struct link *old = to_replace(ls, l);
    if (old) {
        /* As WireGuard does under load, no one who has not proven a key holds a slot for
         * long: the newest comes in, the oldest goes (logged once a second at most). */
        uint64_t now = now_ms();
        if (now - ls->replaced_at >= 1000) {
            log_warn("peer",
                     "replaced the oldest handshake (from %s) with one from %s: %d in handshake, or %d from "
                     "one address%s",
                     old->addr, l->addr, MAX_HANDSHAKING, MAX_PER_SOURCE,
                     ls->replaced_quiet ? " (more replaced since the last line)" : "");
            ls->replaced_at = now;
            ls->replaced_quiet = 0;
        } else {
            ls->replaced_quiet++;
        }
        link_close(old, "replaced by a newer handshake");
    }
    struct gu_batch b;
    gu_batch_init(&b);
    gu_send_initial_metadata(&b);
    gu_recv_close_on_server(&b, &l->cancelled);
    if (start_batch(l, &b, &l->t_close, on_closed) != 0) link_close(l, NULL);
    recv_next(l);
    link_unref(l);
}

struct link *link_dial(struct linkset *ls, const char *addr)
{
    struct link *l = link_new(ls, 1);
    if (!l) return NULL;
    snprintf(l->addr, sizeof l->addr, "%s", addr);
    grpc_arg args[2];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = MAX_PACKET;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_RECONNECT_BACKOFF_MS;
    args[1].value.integer = DIAL_BACKOFF_MAX_MS;
    grpc_channel_args ca = {2, args};
    grpc_channel_credentials *creds = grpc_insecure_credentials_create();
    l->chan = grpc_channel_create(addr, creds, &ca);
    grpc_channel_credentials_release(creds);
    grpc_slice method = grpc_slice_from_static_string(METHOD);
    l->call = l->chan ? grpc_channel_create_call(l->chan, NULL, GRPC_PROPAGATE_DEFAULTS, ls->cq, method, NULL,
                                                 gpr_inf_future(GPR_CLOCK_REALTIME), NULL)
                      : NULL;
    if (!l->call) {
        log_warn("peer", "cannot dial %s", addr);
        link_close(l, NULL);
        return NULL;
    }
    uint8_t msg1[HS_MSG1_LEN];
    hs_initiator_begin(&l->hs, &ls->id->kp, ls->id->has_psk ? ls->id->psk : NULL, msg1);
    struct gu_batch b;
    gu_batch_init(&b);
    gu_send_initial_metadata(&b);
    gu_recv_status_on_client(&b, &l->md_b, &l->status, &l->status_details);
    if (start_batch(l, &b, &l->t_close, on_closed) != 0) {
        link_close(l, NULL);
        return NULL;
    }
    gu_batch_init(&b);
    gu_recv_initial_metadata(&b, &l->md_a);
    gu_recv_message(&b, &l->rbuf);
    if (start_batch(l, &b, &l->t_recv, on_recv) != 0) {
        link_close(l, NULL);
        return NULL;
    }
    send_raw(l, msg1, sizeof msg1);
    if (l->state == L_CLOSED) return NULL;
    log_debug("peer", "dialing %s", addr);
    return l;
}

void linkset_tick(struct linkset *ls, uint64_t now)
{
    for (struct link *l = ls->links, *next; l; l = next) {
        next = l->next; /* taken first: closing l may free it */
        if (l->ending && l->state == L_OPEN && now > l->ending_since && now - l->ending_since > END_TIMEOUT_MS) {
            log_warn("peer", "link with %s did not end within %dms; cancelled", link_who(l), END_TIMEOUT_MS);
            link_close(l, NULL);
            continue;
        }
        if (l->state == L_HANDSHAKE && l->addr[0] && now - l->opened > HANDSHAKE_TIMEOUT_MS) {
            log_warn("peer", "handshake with %s took longer than %dms; dropped", l->addr, HANDSHAKE_TIMEOUT_MS);
            metrics_add(ls->metrics, MN_HS_FAIL_TIMEOUT, 1);
            link_close(l, NULL);
        }
    }
}

/* ---------- accessors ---------- */

int link_is_open(const struct link *l) { return l->state == L_OPEN && !l->ending; }
int link_initiator(const struct link *l) { return l->initiator; }
const char *link_addr(const struct link *l) { return l->addr; }
const char *link_name(const struct link *l) { return l->name; }
const uint8_t *link_peer_key(const struct link *l) { return l->peer_pk; }
void *link_user(const struct link *l) { return l->user; }
void link_set_user(struct link *l, void *user) { l->user = user; }

void link_set_name(struct link *l, const char *name) { snprintf(l->name, sizeof l->name, "%s", name); }

/* ---------- the set: server, completion queue, thread ---------- */

static void *cq_main(void *arg)
{
    struct linkset *ls = arg;
    for (;;) {
        grpc_event ev = grpc_completion_queue_next(ls->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN) break;
        if (ev.type != GRPC_OP_COMPLETE) continue;
        struct ltag *t = ev.tag;
        pthread_mutex_lock(ls->mu);
        if (t == &ls->t_shutdown) {
            ls->shutdown_done = 1;
            pthread_cond_broadcast(ls->cond);
        } else {
            t->fn(t->l, ev.success);
        }
        pthread_mutex_unlock(ls->mu);
    }
    return NULL;
}

struct linkset *linkset_start(const struct linkset_options *opt, const struct link_hooks *hooks, int *port, char *err,
                              size_t errlen)
{
    struct linkset *ls = calloc(1, sizeof *ls);
    if (!ls) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    ls->id = opt->id;
    ls->hooks = *hooks;
    ls->mu = opt->mu;
    ls->cond = opt->cond;
    ls->metrics = opt->metrics;
    /* gRPC 1.51 reads a whole message before it compares its length with the limit,
     * and opens a stream's flow-control window as far as the length prefix asks: a
     * stranger's huge first packet would be held in full.  A resource quota bounds
     * what the peer server's transport may hold at once (gRPC shrinks windows under
     * its pressure); the bulk lane's fragments are far below it. */
    grpc_arg args[2];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = MAX_PACKET;
    grpc_resource_quota *quota = grpc_resource_quota_create("distsup-peer");
    grpc_resource_quota_resize(quota, PEER_QUOTA);
    args[1].type = GRPC_ARG_POINTER;
    args[1].key = GRPC_ARG_RESOURCE_QUOTA;
    args[1].value.pointer.p = quota;
    args[1].value.pointer.vtable = grpc_resource_quota_arg_vtable();
    grpc_channel_args chargs = {2, args};
    ls->server = grpc_server_create(&chargs, NULL);
    grpc_resource_quota_unref(quota);
    ls->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(ls->server, ls->cq, NULL);
    ls->method = grpc_server_register_method(ls->server, METHOD, NULL, GRPC_SRM_PAYLOAD_NONE, 0);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    *port = grpc_server_add_http2_port(ls->server, opt->listen, creds);
    grpc_server_credentials_release(creds);
    if (*port <= 0) {
        snprintf(err, errlen, "cannot listen for peers on %s (address in use, or not a HOST:PORT?)", opt->listen);
        grpc_server_destroy(ls->server);
        gu_cq_discard(ls->cq);
        free(ls);
        return NULL;
    }
    grpc_server_start(ls->server);
    pthread_mutex_lock(ls->mu);
    for (int i = 0; i < 4; i++) request_accept(ls);
    pthread_mutex_unlock(ls->mu);
    if (pthread_create(&ls->cq_thread, NULL, cq_main, ls) != 0) {
        snprintf(err, errlen, "cannot start the peer thread");
        linkset_stop(ls);
        linkset_free(ls);
        return NULL;
    }
    ls->thread_started = 1;
    return ls;
}

void linkset_stop(struct linkset *ls)
{
    pthread_mutex_lock(ls->mu);
    if (ls->stopping) {
        pthread_mutex_unlock(ls->mu);
        return;
    }
    ls->stopping = 1;
    for (struct link *l = ls->links, *n; l; l = n) {
        n = l->next;
        link_close(l, NULL);
    }
    ls->t_shutdown.fn = NULL;
    grpc_server_shutdown_and_notify(ls->server, ls->cq, &ls->t_shutdown);
    grpc_server_cancel_all_calls(ls->server);
    if (ls->thread_started) {
        /* Wait (bounded) for the server to report down and every link to be freed. */
        uint64_t end = now_ms() + 5000;
        while ((!ls->shutdown_done || ls->links) && now_ms() < end) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 20 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(ls->cond, ls->mu, &ts);
        }
        if (ls->links) log_warn("peer", "peer links still open at shutdown");
    }
    pthread_mutex_unlock(ls->mu);
    grpc_server_destroy(ls->server);
    ls->server = NULL;
    grpc_completion_queue_shutdown(ls->cq);
    if (ls->thread_started) pthread_join(ls->cq_thread, NULL);
    ls->thread_started = 0;
}

void linkset_free(struct linkset *ls)
{
    if (!ls) return;
    /* Links whose tags never came back leak rather than crash. */
    grpc_completion_queue_destroy(ls->cq);
    free(ls);
}

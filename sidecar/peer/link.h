/* link: the sealed transport between two nodes, one gRPC bidirectional stream
 * (distsup.v1.Peer/Link) per link, and the peer server that accepts them.
 *
 * A link opens with the handshake of sidecar/handshake.h (a key not in the trust file,
 * a failed proof or another cluster key: refused, logged, nothing learned).  After it
 * every packet is sealed under its direction's key and counter, so a modified,
 * replayed, reordered or dropped packet fails to open and drops the link.
 *
 * Two send lanes per link, one gRPC SEND_MESSAGE in flight at a time:
 *   LANE_CONTROL  small messages that liveness depends on; whole, never fragmented;
 *   LANE_BULK     everything else, in order; messages over LINK_FRAGMENT bytes go out
 *                 as fragments of at most LINK_FRAGMENT bytes.
 * Whenever a send completes, the next packet is the oldest control message if there
 * is one, else the next fragment of the bulk lane.  So a control message is never
 * more than one fragment (plus what gRPC buffers) behind bulk data.  Messages are
 * sealed when they go out, so counters follow the order on the wire.  The fragment
 * framing (a trailer, see docs/cluster.md) is inside the seal.
 *
 * Threads and locking: the caller (the membership layer) owns one mutex, `mu`, and
 * calls every link_* function with it held, except linkset_start, linkset_stop and
 * linkset_free.  The link layer runs one completion-queue thread; it takes mu around
 * each completion, and calls the hooks with mu held.  Hooks must not call linkset_stop
 * or linkset_free; they may call the other link_* functions.
 *
 * Ownership: the linkset owns its links.  A `struct link *` stays valid for the caller
 * until the `closed` hook has run for it (or link_close returned); after that it must
 * not be used.  link_out objects belong to whoever holds them; link_queue takes the
 * one it is given. */
#ifndef DISTSUP_PEER_LINK_H
#define DISTSUP_PEER_LINK_H

#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "sidecar/identity.h"

#define LINK_FRAGMENT (256u << 10)   /* largest bulk fragment (plaintext bytes) */
#define LINK_MAX_MESSAGE (64u << 20) /* largest message either way */
#define LINK_ADDR_MAX 256

struct linkset;
struct link;
struct link_out;

enum link_lane { LANE_CONTROL, LANE_BULK };

/* How the link layer tells its owner what happened; every hook runs with mu held. */
struct link_hooks {
    void *arg;
    /* The handshake is done: l is open and sealed (the first message goes out now). */
    void (*opened)(void *arg, struct link *l);
    /* A sealed packet opened on l (any packet: a fragment, a heartbeat): its node is
     * heard.  Comes before `message` for the same packet. */
    void (*heard)(void *arg, struct link *l);
    /* One whole message arrived on l, in the order its node sent them; valid during the
     * call. */
    void (*message)(void *arg, struct link *l, const uint8_t *data, size_t len);
    /* l is closed (once per link; also when the owner closed it). */
    void (*closed)(void *arg, struct link *l);
};

struct linkset_options {
    const char *listen;        /* HOST:PORT to serve links on */
    const struct identity *id; /* keys and trust; outlives the linkset */
    pthread_mutex_t *mu;       /* the owner's lock; outlives the linkset */
    pthread_cond_t *cond;      /* broadcast when a send queue drains or a link is freed */
    struct metrics *metrics;   /* links up, bytes, packets, failures (NULL: off); outlives the linkset */
};

/* Binds opt->listen and starts the completion-queue thread.  *port gets the bound port.
 * NULL + err on failure. */
struct linkset *linkset_start(const struct linkset_options *opt, const struct link_hooks *hooks, int *port, char *err,
                              size_t errlen);

/* Closes every link and the server; joins the thread.  Called without mu.  Then
 * linkset_free (which leaks, rather than frees, links whose tags never came back). */
void linkset_stop(struct linkset *ls);
void linkset_free(struct linkset *ls);

/* Handshakes older than 5 s are dropped (call now and then). */
void linkset_tick(struct linkset *ls, uint64_t now_ms);

/* 1 while some open link has something queued or in flight. */
int linkset_busy(const struct linkset *ls);

/* Dials addr: a new link in handshake, or NULL (logged). */
struct link *link_dial(struct linkset *ls, const char *addr);

/* Drops l (why: logged at debug level, may be NULL): cancels its stream; the closed
 * hook runs before this returns.  No effect on a closed link. */
void link_close(struct link *l, const char *why);
/* Ends l in order once what is queued on l has been sent (at once when nothing is):
 * the dialer half-closes the stream, the acceptor sends status OK, so the other end
 * reads every message sent before the end (a cancel may drop the last ones: the ack
 * of a link being retired) and then sees the link close.  Nothing more can be queued
 * on l after the end goes out.  l closes here (the closed hook runs) when the other
 * end has ended its side too, or after 5 s.  why: a static string. */
void link_close_drained(struct link *l, const char *why);

/* Queues o on lane (taking it).  0, or -1 if l is not open or the queue would pass
 * 256 MiB (the link is then dropped: its node does not read).  A message of more than
 * one fragment may only go on LANE_BULK. */
int link_queue(struct link *l, enum link_lane lane, struct link_out *o);

/* Packs m and queues it on lane (a convenience for small messages). */
int link_send_msg(struct link *l, enum link_lane lane, const ProtobufCMessage *m);

/* A message for the wire, not yet sealed: prefix (at most 16 bytes) then data, copied
 * once into the layout the packets go out in.  NULL when out of memory or over
 * LINK_MAX_MESSAGE.  Needs no lock. */
struct link_out *link_out_new(const uint8_t *prefix, size_t plen, const uint8_t *data, size_t len);
/* A copy of o for another link (a sealed message cannot be shared). */
struct link_out *link_out_clone(const struct link_out *o);
void link_out_free(struct link_out *o);

int link_is_open(const struct link *l);
int link_initiator(const struct link *l);           /* 1 if this node dialed it */
const char *link_addr(const struct link *l);        /* dialed address or remote socket */
const char *link_name(const struct link *l);        /* set by link_set_name, or "" */
const char *link_who(const struct link *l);         /* name, else address: for logs */
const uint8_t *link_peer_key(const struct link *l); /* its static key, once checked */
void link_set_name(struct link *l, const char *name);
void *link_user(const struct link *l); /* the owner's pointer, or NULL */
void link_set_user(struct link *l, void *user);

#endif

/* peer: the links between sidecars, and who is in the cluster.
 *
 * Serves distsup.v1.Peer/Link on --peer-listen and dials the seeds and every member
 * it learns of (full mesh).  Each link is one gRPC bidirectional stream that opens
 * with the handshake of sidecar/handshake.h: a peer whose key is not in the trust
 * file, or that cannot prove it holds its key, or that has another cluster key, is
 * refused and logged, and learns nothing.  After it, every packet is sealed; one
 * that fails to open (modified, replayed, reordered) drops the link.
 *
 * Membership: a node is up from its first Join on a link until it is silent for
 * down_after_ms and no other member reports hearing it (an indirect check), or until
 * it says Leave (a clean leave).  Heartbeats every heartbeat_ms keep a quiet link
 * heard.  When two links to one node come up (both dialed), both ends keep the one
 * dialed by the node with the smaller name.
 *
 * Threads: its own completion queue thread and a ticker thread.  The callbacks run
 * on those threads with the module's lock held: they must only hand the news on
 * (queue it) and must not call peer_*.  For one node, `up` comes before any
 * `message` from it, and messages come in the order it sent them. */
#ifndef DISTSUP_PEER_H
#define DISTSUP_PEER_H

#include <stddef.h>
#include <stdint.h>

#include "distsup/v1/peer.pb-c.h"
#include "sidecar/config.h"
#include "sidecar/identity.h"

struct peer;

struct peer_callbacks {
    void *arg;
    /* A node came up, came back with a new boot_id, or has a new link after its old one
     * broke (the core then exchanges snapshots again).  join is valid during the call. */
    void (*up)(void *arg, const Distsup__V1__Join *join);
    /* A node is down (clean = 0) or left cleanly (clean = 1). */
    void (*down)(void *arg, const char *node, int clean);
    /* A ClusterMsg from node (PeerMsg.app), valid during the call.  0, or -1 when the
     * receiver is too far behind to take it: the link is closed then (it reopens, and
     * the two nodes exchange snapshots again). */
    int (*message)(void *arg, const char *node, const uint8_t *data, size_t len);
    /* Once: every seed and every member learned so far has been tried at least once
     * (linked or failed), or sync_timeout_ms passed. */
    void (*settled)(void *arg);
};

/* Binds cfg->peer_listen and starts dialing cfg->seeds.  boot_id: this run's id.
 * api_address: what Join advertises for the Supervisor API.  metrics: the links count
 * into it (NULL: off; sidecar/metrics.h); it outlives the peer.  *port gets the bound
 * peer port.  NULL + err on failure. */
struct metrics;
struct peer *peer_start(const struct config *cfg, const struct identity *id, uint64_t boot_id, const char *api_address,
                        const struct peer_callbacks *cb, struct metrics *metrics, int *port, char *err, size_t errlen);

/* Seals and queues a ClusterMsg for node.  0, or -1 if there is no open link to it. */
int peer_send(struct peer *p, const char *node, const uint8_t *data, size_t len);

/* To every node with an open link; returns how many. */
size_t peer_broadcast(struct peer *p, const uint8_t *data, size_t len);

/* Tells every linked node that this one leaves, waits (at most timeout_ms) until that
 * is sent, and stops dialing. */
void peer_leave(struct peer *p, unsigned timeout_ms);

/* Closes every link and the server; joins the threads.  Then peer_free. */
void peer_stop(struct peer *p);
void peer_free(struct peer *p);

#endif

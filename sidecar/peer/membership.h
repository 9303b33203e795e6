/* membership: who is in the cluster; the implementation of sidecar/peer.h.
 *
 * Built on sidecar/peer/link.h (one sealed link per node pair) and talking to it only
 * through that header; the links call back through struct link_hooks.  It owns:
 *   - the member table: Join (the first sealed message each way), Members gossip,
 *     dialing the seeds and every member learned (full mesh, with backoff; the
 *     larger-named end of a pair dials later), which of two links to one node is kept;
 *   - liveness: a Heartbeat on every link every heartbeat_ms, a node heard from any
 *     packet of it (every fragment counts), silence past down_after_ms answered by
 *     PingReq to the other members and down when none answers PingAck alive;
 *     Heartbeat, PingReq, PingAck, Join and Members go on the control lane, so bulk
 *     data never holds them back more than one fragment;
 *   - settled (first round of contact) and Leave (on the bulk lane, after everything
 *     said before it).
 *
 * Threads: the ticker thread (every heartbeat_ms / 2) and the link layer's
 * completion-queue thread, both under the one mutex of struct peer, which the
 * linkset borrows; peer_send and peer_broadcast lay the message out before taking
 * it.  The peer_callbacks run under that mutex (see sidecar/peer.h). */
#ifndef DISTSUP_PEER_MEMBERSHIP_H
#define DISTSUP_PEER_MEMBERSHIP_H

#include "sidecar/peer.h"

#endif

/* cluster: the supervisor core's cluster half (docs/cluster.md), in six files:
 *
 *   nodes.c     the node table as this node sees it, quorum, the directory node of a
 *               name, the strategy's input (struct nodeset) and placement
 *   forward.c   requests run on another node (Forward / ForwardReply), each with a
 *               deadline; failed at once when the link to that node breaks
 *   registry.c  what other nodes say of their children (broadcasts and snapshots,
 *               cached in the store), which copy of a duplicated name survives
 *   failover.c  sync before a node's own children run, re-homing the children of a
 *               node that went down (its directory node does it), quorum loss
 *   moves.c     moves after a join (a bounded number at a time), pinned children
 *               going home, the graceful leave
 *   authz.c     who may say what: each message of another node checked against the
 *               sender's role (docs/cluster.md "Who may send what")
 *
 * Everything runs on the reactor thread over struct core (sidecar/reactor.h); the
 * other nodes are reached only through sidecar/peer.h.  In a single node (c->peer
 * NULL) every function here is a no-op or answers for this node alone. */
#ifndef DISTSUP_CLUSTER_H
#define DISTSUP_CLUSTER_H

#include "sidecar/reactor.h"

/* ---------- nodes.c ---------- */

struct node *find_node(struct core *c, const char *name);
/* The node of that name, added (down, weight 100) when new.  NULL: out of memory. */
struct node *add_node(struct core *c, const char *name);
void free_node(struct node *n);
int parse_labels(struct node *n, const char *text); /* "k=v,k=v"; 0 or -1 */
int node_usable(const struct node *n);              /* up and not leaving */
size_t up_count(struct core *c);
int others_usable(struct core *c);
int node_cmp(const void *a, const void *b); /* qsort of struct node *, by name */
int sup_eligible(const struct sup *s, const char *node);

/* The directory node of a name: rendezvous hashing over the usable nodes, whatever
 * the placement strategy, so that every node agrees on who serializes a name. */
struct node *directory_of(struct core *c, struct sup *s, const char *name);

/* The usable, eligible nodes of s sorted by name, with their loads: the strategy's
 * input.  without_self: leave this node out (it is leaving). */
struct nodeset {
    struct ds_node *v;
    struct node **src;
    size_t n;
};
/* kind: hosted children of this kind (docs/hosting.md): only the nodes a host of it
 * is attached to (NULL or "": every node). */
int nodeset_build(struct core *c, struct sup *s, int without_self, const char *kind, struct nodeset *ns);
/* 1 when node n runs hosted children of kind (a host of it is attached there). */
int node_has_kind(struct core *c, const struct node *n, const char *kind);
/* Which kinds nodes host: this node's to one node (NULL: all), a change of this
 * node's (broadcast, rebalance), another node's NodeKinds. */
void send_kinds(struct core *c, const char *node);
void kinds_changed(struct core *c);
void on_kinds(struct core *c, struct node *from, const Distsup__V1__NodeKinds *k);
void nodeset_free(struct nodeset *ns);

/* The strategy's view of a child. */
struct dchild {
    struct ds_child c;
    struct ds_label *labels;
};
int dchild_make(struct dchild *d, const char *sup, const char *name, const Distsup__V1__ChildSpec *spec);

/* Where a child of s goes: a node, or NULL with the reason in err. */
struct node *place_child(struct core *c, struct sup *s, const char *name, const Distsup__V1__ChildSpec *spec,
                         int without_self, char *err, size_t errlen);
void strategies_nodes_changed(struct core *c);

/* The peer module's news. */
void on_node_up(struct core *c, const Distsup__V1__Join *j);
void on_node_down(struct core *c, const char *name, int clean);

/* A node filter (Children, CountChildren): "" or a known node.  0, or NOT_FOUND. */
int check_node(struct core *c, const char *node, answer_fn done, void *arg);
/* A node to start on that the cluster does not know: answers UNAVAILABLE. */
void unknown_target(struct core *c, const char *node, answer_fn done, void *arg);

/* ---------- forward.c ---------- */

/* Sends req to node `to` to be run there (REQ_LOCAL); done gets its answer, or
 * UNAVAILABLE if the node cannot be reached or its link breaks first, or
 * DEADLINE_EXCEEDED at deadline (absolute ms; 0: a long default).  timeout_ms is the
 * time the other node may take. */
void forward(struct core *c, struct node *to, int op, const ProtobufCMessage *req, uint32_t timeout_ms,
             uint64_t deadline, answer_fn done, void *arg);
/* Sends a request about a remote child to the node that runs it. */
void to_owner(struct core *c, struct rentry *e, int op, const ProtobufCMessage *req, uint32_t timeout_ms,
              uint64_t deadline, answer_fn done, void *arg);
/* Fails what waits for node `to` (NULL: every node) with UNAVAILABLE. */
void fail_forwards(struct core *c, struct node *to, const char *why);
/* Answers what is past its deadline; 1 while some wait with a deadline. */
int expire_forwards(struct core *c, uint64_t now);

/* A Forward or ForwardReply as it lies in a received ClusterMsg: no copies. */
struct fwd_view {
    int reply; /* 0: Forward, 1: ForwardReply */
    uint64_t id;
    uint32_t op_or_code; /* Forward.op, or ForwardReply.code */
    uint32_t timeout_ms; /* Forward */
    const uint8_t *body; /* Forward.request, or ForwardReply.reply */
    size_t body_len;
    const char *message; /* ForwardReply.message (not NUL-terminated) */
    size_t message_len;
};
/* ClusterMsg{forward} / ClusterMsg{reply}, packed in one pass (malloc'd; NULL when out
 * of memory).  The bytes are the ones protobuf-c would write. */
uint8_t *forward_pack(uint64_t id, int op, const ProtobufCMessage *req, uint32_t timeout_ms, size_t *len);
uint8_t *forward_pack_reply(uint64_t id, int code, const char *message, const ProtobufCMessage *reply, size_t *len);
/* Reads a ClusterMsg that is one forward or reply into v.  0, or -1 when it is
 * anything else (or malformed). */
int forward_view(const uint8_t *data, size_t len, struct fwd_view *v);
/* Runs a forwarded request here, or hands an answer to the request that waits for it. */
void forward_handle(struct core *c, struct node *from, const struct fwd_view *v);

/* ---------- registry.c ---------- */

int cluster_send(struct core *c, const char *node, const Distsup__V1__ClusterMsg *m); /* 0 or -1 */
void cluster_broadcast(struct core *c, const Distsup__V1__ClusterMsg *m);
void announce(struct core *c, struct child *ch);                          /* how a child of ours is now */
void announce_gone(struct core *c, struct child *ch, const char *reason); /* gone for good */
void broadcast_event(struct core *c, const Distsup__V1__Event *ev);
void send_snapshot(struct core *c, const char *node); /* our children, in chunks */
/* A copy of a name, as the duplicate rule sees it. */
struct copy {
    const char *node;
    uint64_t incarnation;
    const char *rehomed_from; /* a failover copy: its predecessor's node ("" or NULL: not one) */
    uint64_t rehomed_from_inc;
    int running; /* it kept running: not held back (SUSPENDED), not FAILED */
};
void copy_of_info(const Distsup__V1__ChildInfo *i, struct copy *k);
void copy_of_child(const struct core *c, const struct child *ch, struct copy *k);
/* Of two copies of one name, whether a survives b (docs/cluster.md, "Which copy
 * survives"): an original that kept running beats its own failover copy; otherwise the
 * higher incarnation, then the smaller node name.  Every node applies the same rule to
 * the same facts. */
int copy_wins(const struct copy *a, const struct copy *b);
/* q is a failover copy of p: started elsewhere when p's node was taken for down, from
 * p's incarnation or an earlier one. */
int copy_derives(const struct copy *q, const struct copy *p);
void cache_remove(struct core *c, struct sup *s, struct rentry *e);
/* The copy kept aside in e (authz.c's AUTHZ_CONTEND) replaces e when its node is up and
 * its incarnation is after + 1 (a move or a re-home of e's copy at incarnation
 * `after`): 1 then; else it is dropped, and 0. */
int promote_contender(struct core *c, struct sup *s, struct rentry *e, uint64_t after);
/* What node `from` says of one of its children (info is taken). */
void apply_remote_info(struct core *c, struct node *from, Distsup__V1__ChildInfo *info);
/* A child started elsewhere, from the StartChildResponse that node `asked` sent:
 * credited only when the child is on `asked`; else (a directory node's answer about
 * a third node) taken only as a hint for a name this node knows nothing of. */
void learn_started(struct core *c, const char *asked, const ProtobufCMessage *reply);
/* A ClusterMsg from node (PeerMsg.app). */
void on_cluster_message(struct core *c, const char *node, const uint8_t *data, size_t len);

/* ---------- failover.c ---------- */

/* Starts this node's own children once it has synced with its peers. */
void maybe_finish_sync(struct core *c);
/* No quorum: stops our children and keeps them. */
void suspend_children(struct core *c);
/* After a membership change: re-homes what down nodes ran, drops their temporary
 * children. */
void reconcile(struct core *c);

/* ---------- moves.c ---------- */

/* A moving child has exited (its State captured): starts it on its new node. */
void finish_move(struct core *c, struct child *ch);
/* Starts the moves that are due, a bounded number at a time. */
void plan_moves(struct core *c);
/* SIGTERM in a cluster: begins handing every child to the other nodes.  1 when the
 * leave began, 0 when it cannot be (alone, no quorum, not synced). */
int begin_leave(struct core *c);
/* Hosted children waiting for a host here past host_grace_ms move to a node with one. */
void rehome_waiting(struct core *c, uint64_t now);
/* The leave's tick: when the moves are done (or it took too long), says Leave to the
 * peers and stops the rest. */
void check_leave(struct core *c, uint64_t now);

/* ---------- authz.c ---------- */

/* Logs a refused message of node from (at most a few lines a second per sender). */
void authz_refused(struct core *c, struct node *from, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* A child name and spec (NULL: none) from another node: valid, and the spec names it.
 * 0, or -1 with the reason. */
int authz_spec(struct core *c, const char *name, const Distsup__V1__ChildSpec *spec, char *err, size_t errlen);
/* Whether from may have this node run pl: a start only from the name's directory node
 * (incarnation 0, no state); a move only from the node that runs the child (a later
 * incarnation); a re-home only from the directory node, of a child whose node is not
 * up here, at its incarnation + 1.  0, or -1 with the answer's code and reason. */
int authz_place(struct core *c, struct node *from, const Distsup__V1__Place *pl, int *code, char *err, size_t errlen);
enum { AUTHZ_OK = 0, AUTHZ_REFUSE = -1, AUTHZ_CONTEND = 1 };
/* Whether from may say info (of supervisor s): only of its own children, with a valid
 * spec; a copy that would win over a live copy here, or over one of a third node that
 * is up, only while from comes back from being down here (AUTHZ_CONTEND: kept aside
 * until the third node says its copy is gone, e.g. a move); within
 * peer_max_children. */
int authz_child_info(struct core *c, struct node *from, struct sup *s, const Distsup__V1__ChildInfo *info, char *err,
                     size_t errlen);
/* Whether from may say g: only of its own children.  0 or -1. */
/* A forwarded request other than Place: StartChild is refused (nodes send DIR_START),
 * DIR_START only when this node is the name's directory node.  0, or -1 with err. */
int authz_forward(struct core *c, struct node *from, int op, const ProtobufCMessage *req, char *err, size_t errlen);
int authz_gone(struct core *c, struct node *from, const Distsup__V1__ChildGone *g, char *err, size_t errlen);

#endif

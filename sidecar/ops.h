/* ops: THE operation table.  Every operation the supervisor core runs, public (a
 * Supervisor RPC) or internal (run on one node for another), is one row here; the
 * rows generate the op enum, the request/reply descriptors (ops_request, ops_reply)
 * and the RPC method table of sidecar/rpc.c.  The numbers are the wire numbers of
 * distsup.v1.Op (proto/distsup/v1/peer.proto), fixed forever: a row added here
 * needs a value added there, at the end.
 *
 * Pure data: no state, usable from any thread. */
#ifndef DISTSUP_OPS_H
#define DISTSUP_OPS_H

#include <stddef.h>

#include "distsup/v1/peer.pb-c.h"
#include "distsup/v1/supervisor.pb-c.h"

/* The tables below are macros laid out by hand. */
/* clang-format off */

/* X(NAME, RPC method name, request message, reply message): the public operations,
 * each served as /distsup.v1.Supervisor/<RPC>. */
#define DS_PUBLIC_OPS(X)                                                          \
    X(START_CHILD, StartChild, start_child_request, start_child_response)         \
    X(TERMINATE_CHILD, TerminateChild, terminate_child_request, terminate_child_response) \
    X(CHILDREN, Children, children_request, children_response)                    \
    X(COUNT_CHILDREN, CountChildren, count_children_request, count_children_response) \
    X(WHEREIS, WhereIs, where_is_request, where_is_response)                      \
    X(WHOIS, WhoIs, who_is_request, who_is_response)                              \
    X(CALL, Call, call_request, call_response)                                    \
    X(CAST, Cast, cast_request, cast_response)                                    \
    X(SEND, Send, send_request, send_response)                                    \
    X(NODES, Nodes, nodes_request, nodes_response)                                \
    X(NODE_FOR, NodeFor, node_for_request, node_for_response)                     \
    X(MINE, Mine, mine_request, mine_response)

/* X(NAME, request message, reply message): run by one node for another only. */
#define DS_INTERNAL_OPS(X)                                                        \
    X(DIR_START, start_child_request, start_child_response) /* at the name's directory node */ \
    X(PLACE, place, start_child_response)                   /* start it here */

enum core_op {
#define DS_OP_PUB(name, rpc, req, rep) CORE_##name = DISTSUP__V1__OP__OP_##name,
#define DS_OP_INT(name, req, rep) CORE_##name = DISTSUP__V1__OP__OP_##name,
    DS_PUBLIC_OPS(DS_OP_PUB) DS_INTERNAL_OPS(DS_OP_INT)
#undef DS_OP_PUB
#undef DS_OP_INT
};

/* The request and reply message types of op; NULL for a number no row has. */
static inline const ProtobufCMessageDescriptor *ops_request(int op)
{
    switch (op) {
#define DS_OP_PUB(name, rpc, req, rep) case CORE_##name: return &distsup__v1__##req##__descriptor;
#define DS_OP_INT(name, req, rep) case CORE_##name: return &distsup__v1__##req##__descriptor;
        DS_PUBLIC_OPS(DS_OP_PUB) DS_INTERNAL_OPS(DS_OP_INT)
#undef DS_OP_PUB
#undef DS_OP_INT
    default: return NULL;
    }
}

static inline const ProtobufCMessageDescriptor *ops_reply(int op)
{
    switch (op) {
#define DS_OP_PUB(name, rpc, req, rep) case CORE_##name: return &distsup__v1__##rep##__descriptor;
#define DS_OP_INT(name, req, rep) case CORE_##name: return &distsup__v1__##rep##__descriptor;
        DS_PUBLIC_OPS(DS_OP_PUB) DS_INTERNAL_OPS(DS_OP_INT)
#undef DS_OP_PUB
#undef DS_OP_INT
    default: return NULL;
    }
}

/* 1 for the operations a client may ask for (the Supervisor RPCs). */
static inline int ops_public(int op)
{
    switch (op) {
#define DS_OP_PUB(name, rpc, req, rep) case CORE_##name: return 1;
        DS_PUBLIC_OPS(DS_OP_PUB)
#undef DS_OP_PUB
    default: return 0;
    }
}

/* clang-format on */

#endif

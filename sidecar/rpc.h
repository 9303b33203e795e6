/* rpc: the gRPC C-core server.  Owns the grpc_server, its completion queue and the
 * threads that drain it; turns calls of distsup.v1.Supervisor into core requests,
 * and serves grpc.health.v1.Health and grpc.reflection.v1{,alpha}.ServerReflection.
 *
 * Each RPC is a heap context whose tags live inside it; handlers never block a
 * queue thread (answers arrive later through core callbacks).  This is the only
 * file that includes grpc.h's call API. */
#ifndef DISTSUP_RPC_H
#define DISTSUP_RPC_H

#include <stddef.h>

#include "sidecar/config.h"
#include "sidecar/core.h"

struct rpc;

/* Binds cfg->listen and starts serving.  *port gets the bound port. */
struct rpc *rpc_start(const struct config *cfg, struct core *core, int *port, char *err, size_t errlen);

/* Stops taking calls and cancels the ones in flight (Watch streams end).  Call
 * before core_shutdown, then rpc_free after it. */
void rpc_stop(struct rpc *r);
void rpc_free(struct rpc *r);

#endif

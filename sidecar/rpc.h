/* rpc: the gRPC C-core server.  Owns the grpc_servers, their completion queue and
 * the threads that drain it; turns calls of distsup.v1.Supervisor into core requests,
 * and serves grpc.health.v1.Health and grpc.reflection.v1{,alpha}.ServerReflection.
 *
 * Two listeners (docs/security.md):
 *  - the API on cfg->listen (HOST:PORT, or unix:PATH with api_socket_mode and
 *    api_socket_group), plaintext or TLS (tls_cert, tls_key; with tls_client_ca a
 *    verified client certificate is required).  With api_token_file, every call on
 *    it (Supervisor, Watch, reflection, health, unknown methods) must carry the
 *    metadata `authorization: Bearer TOKEN`, or it ends UNAUTHENTICATED before
 *    anything else runs;
 *  - optionally cfg->health_listen: grpc.health.v1.Health (Check, Watch) only,
 *    plaintext, without authentication; any other method there is UNIMPLEMENTED.
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

/* Reads the token file and TLS files, binds cfg->listen (and cfg->health_listen)
 * and starts serving.  *port gets the bound API port (1 for a unix socket).  NULL
 * with a message naming the file or address and the reason in err. */
struct rpc *rpc_start(const struct config *cfg, struct core *core, int *port, char *err, size_t errlen);

/* The address clients use: "HOST:PORT" with the bound port, or "unix:/ABSOLUTE/PATH".
 * Owned by r. */
const char *rpc_address(const struct rpc *r);
/* The bound health port; 0 without health_listen. */
int rpc_health_port(const struct rpc *r);

/* Stops taking calls and cancels the ones in flight (Watch streams end).  Call
 * before core_shutdown, then rpc_free after it. */
void rpc_stop(struct rpc *r);
void rpc_free(struct rpc *r);

#endif

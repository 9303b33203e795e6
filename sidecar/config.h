/* config: the daemon's settings, from embedded defaults, an INI config file
 * (parsed by Debian's libinih) and command-line flags, in that order of precedence.
 *
 *   [daemon]
 *   listen = 127.0.0.1:50051
 *   data_dir = ./data
 *   log_level = info
 *   log_format = text          ; or json: one object a line (ts, level, subsystem, node, msg)
 *   node_name = node1@localhost
 *   threads = 2
 *   max_payload_bytes = 4194304
 *
 *   ; cluster mode (docs/cluster.md): on when peer_listen is set
 *   peer_listen = 0.0.0.0:50052 ; peer links (mutually authenticated, encrypted)
 *   peer_advertise = host1:50052 ; the address peers dial (default: peer_listen)
 *   seeds = host2:50052,host3:50052
 *   key_file = /etc/distsup/node.key     ; from `distsupd keygen FILE`
 *   trust_file = /etc/distsup/trusted    ; the peers' public keys
 *   cluster_key_file =                   ; optional pre-shared key
 *   heartbeat_ms = 200
 *   down_after_ms = 1000       ; silence after which a peer is suspected, then down
 *   sync_timeout_ms = 3000     ; how long a starting node waits for its peers
 *   weight = 100               ; this node's capacity, for strategies
 *   labels = zone=a,disk=ssd   ; this node's labels, for strategies
 *   quorum = false             ; true: a side without a majority of cluster_size stops
 *   cluster_size = 0           ; ... its children and refuses StartChild
 *   trust_unnamed = false      ; true: a trusted key with no name may join as any
 *                              ; name the trust file does not give to another key
 *   peer_max_children = 100000 ; children one other node may have in this node's
 *                              ; registry, per supervisor (docs/security.md)
 *
 *   ; the API's protection (docs/security.md)
 *   api_token_file = /etc/distsup/api.token ; calls need 'authorization: Bearer TOKEN'
 *   tls_cert = server.pem      ; TLS on the API, with tls_key
 *   tls_key = server.key
 *   tls_client_ca = ca.pem     ; mTLS: client certificates required
 *   insecure_api = false       ; true: allow a non-loopback listen with no token nor mTLS
 *   api_socket_mode = 0600     ; listen = unix:/path: the socket file's mode ...
 *   api_socket_group =         ; ... and group
 *   health_listen = 0.0.0.0:8081 ; grpc.health.v1 only, no authentication
 *   metrics_listen = 0.0.0.0:9464 ; Prometheus text on GET /metrics (off when empty)
 *
 *   ; hosted children (docs/hosting.md)
 *   host_ping_ms = 2000        ; how often each attached host is pinged
 *   host_timeout_ms = 10000    ; a host silent this long is taken for gone
 *   host_grace_ms = 2000       ; no host of its kind left here: wait this long, then re-home
 *   host_queue_bytes = 67108864 ; bytes waiting to be written to one host
 *   max_hosts = 64             ; Host sessions at once
 *
 *   [supervisor:NAME]          ; one per supervisor; "default" always exists
 *   strategy = hash_ring       ; a built-in name or a path to a .so
 *   strategy_options = vnodes=160
 *   max_restarts = 3           ; restart intensity: at most this many restarts ...
 *   max_seconds = 5            ; ... within this many seconds, then the child is FAILED
 *   restart_backoff_ms = 100   ; delay before the 2nd restart in a window (doubles after)
 *   restart_backoff_max_ms = 2000
 *   mailbox = 1024             ; calls in flight per child before RESOURCE_EXHAUSTED
 *   mailbox_bytes = 16777216   ; bytes queued to a child before RESOURCE_EXHAUSTED
 *   start_timeout_ms = 10000   ; a FRAMES child must send Ready within this
 *   watch_queue = 4096         ; events buffered per Watch subscriber
 *   nodes = a@h1,b@h2          ; eligible nodes (empty: all)
 *   monitor_nodes = true       ; node events on Watch, and moves when nodes join
 *   max_moves = 16             ; children moving between nodes at one time
 *   inherit_env = JAVA_*,PGHOST ; daemon variables its children get beyond the allowlist
 *   run_as = nobody            ; children run as this user (the daemon must be root)
 *   max_output_rate = 4194304  ; bytes a second of a child's log output read (0: no limit)
 *
 * See docs/configuration.md. */
#ifndef DISTSUP_CONFIG_H
#define DISTSUP_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define CONFIG_MAX_SUPERVISORS 64
#define CONFIG_MAX_GROUPS 64 /* supplementary groups of a run_as user */

struct sup_config {
    char name[201];
    char strategy[512];
    char strategy_options[1024];
    unsigned max_restarts;
    unsigned max_seconds;
    unsigned backoff_ms;
    unsigned backoff_max_ms;
    unsigned mailbox;
    size_t mailbox_bytes;
    unsigned start_timeout_ms;
    unsigned watch_queue;
    char nodes[2048]; /* comma-separated; empty = every node */
    int monitor_nodes;
    unsigned max_moves;
    /* the host (docs/security.md) */
    char inherit_env[1024]; /* daemon variables children also get: names, or prefixes ending in '*' */
    char run_as[256];       /* user the children run as; empty = the daemon's */
    int run_as_set;         /* run_as resolved (config_from_args): */
    unsigned run_uid, run_gid;
    char run_home[1024];
    unsigned run_groups[CONFIG_MAX_GROUPS];
    size_t n_run_groups;
    size_t max_output_rate; /* bytes/s of a child's log output (stderr, NONE's stdout); 0: no limit */
};

struct config {
    char listen[256];
    char data_dir[1024];
    int log_level; /* enum log_level */
    int log_json;  /* log_format = json */
    char node_name[256];
    char strategy_dir[1024]; /* where built-in strategies live; empty = beside the binary */
    char port_file[1024];
    unsigned threads;
    size_t max_payload;
    /* cluster mode */
    char peer_listen[256]; /* empty: a single node */
    char peer_advertise[256];
    char seeds[4096]; /* comma-separated HOST:PORT */
    char key_file[1024];
    char trust_file[1024];
    char cluster_key_file[1024];
    unsigned heartbeat_ms;
    unsigned down_after_ms;
    unsigned sync_timeout_ms;
    unsigned weight;
    char labels[1024]; /* k=v,k=v */
    int quorum;
    unsigned cluster_size;
    /* the API's protection (docs/security.md) */
    char api_token_file[1024];                             /* bearer token; default $DISTSUP_API_TOKEN_FILE */
    char tls_cert[1024], tls_key[1024];                    /* TLS on the API */
    char tls_client_ca[1024];                              /* mTLS: client certificates required, verified against it */
    int insecure_api;                                      /* allow a non-loopback listen without token or mTLS */
    unsigned api_socket_mode;                              /* listen = unix:PATH: the socket's mode (default 0600) */
    char api_socket_group[256];                            /* ... and group (empty: the daemon's) */
    char health_listen[256];                               /* a second listener serving grpc.health.v1 only */
    char metrics_listen[256];                              /* GET /metrics (sidecar/metrics.h); empty: off */
    int trust_unnamed;                                     /* a key without a name in the trust file may join */
    unsigned peer_max_children;                            /* per other node, per supervisor */
    unsigned host_ping_ms, host_timeout_ms, host_grace_ms; /* hosted children (docs/hosting.md) */
    unsigned host_queue_bytes, max_hosts;
    struct sup_config sups[CONFIG_MAX_SUPERVISORS];
    size_t n_sups;
};

/* Fills the embedded defaults: one supervisor named "default". */
void config_defaults(struct config *c);

/* Reads an INI file over c.  0, or -1 with "FILE:LINE: reason" in err.  Checks made
 * once everything is read (cluster settings that need each other) are in
 * config_from_args. */
int config_load_file(struct config *c, const char *path, char *err, size_t errlen);

/* 1 when the daemon runs in cluster mode (peer_listen set). */
int config_cluster(const struct config *c);

/* Applies command-line flags (argv[1..]).  Returns 0, 1 when --help or --version was
 * printed (exit 0), or -1 with the reason in err.  --config FILE is read first,
 * wherever it appears, so flags override the file. */
int config_from_args(struct config *c, int argc, char **argv, char *err, size_t errlen);

const struct sup_config *config_find_sup(const struct config *c, const char *name);

void config_usage(FILE *out);

/* 1 when a listen address is reachable from this host only: unix:PATH, 127.0.0.0/8,
 * ::1 or localhost. */
int config_listen_is_loopback(const char *listen);

#endif

#include "sidecar/config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <grp.h>
#include <ini.h>
#include <pwd.h>
#include <stddef.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sidecar/log.h"
#include "sidecar/spec.h"

#define DISTSUP_VERSION "0.1.0"

static void sup_defaults(struct sup_config *s, const char *name)
{
    memset(s, 0, sizeof *s);
    snprintf(s->name, sizeof s->name, "%s", name);
    snprintf(s->strategy, sizeof s->strategy, "hash_ring");
    s->max_restarts = 3;
    s->max_seconds = 5;
    s->backoff_ms = 100;
    s->backoff_max_ms = 2000;
    s->mailbox = 1024;
    s->mailbox_bytes = 16u << 20;
    s->start_timeout_ms = 10000;
    s->watch_queue = 4096;
    s->monitor_nodes = 1;
    s->max_moves = 16;
    s->max_output_rate = 4u << 20;
}

void config_defaults(struct config *c)
{
    memset(c, 0, sizeof *c);
    snprintf(c->listen, sizeof c->listen, "127.0.0.1:50051");
    snprintf(c->data_dir, sizeof c->data_dir, "./data");
    c->log_level = LOG_INFO;
    char host[200] = "localhost";
    if (gethostname(host, sizeof host - 1) != 0) snprintf(host, sizeof host, "localhost");
    host[sizeof host - 1] = 0;
    snprintf(c->node_name, sizeof c->node_name, "node1@%s", host);
    c->threads = 2;
    c->max_payload = 4u << 20;
    c->heartbeat_ms = 200;
    c->down_after_ms = 1000;
    c->sync_timeout_ms = 3000;
    c->weight = 100;
    c->api_socket_mode = 0600;
    c->peer_max_children = 100000;
    c->host_ping_ms = 2000;
    c->host_timeout_ms = 10000;
    c->host_grace_ms = 2000;
    c->host_queue_bytes = 64u << 20;
    c->max_hosts = 64;
    sup_defaults(&c->sups[0], "default");
    c->n_sups = 1;
}

const struct sup_config *config_find_sup(const struct config *c, const char *name)
{
    for (size_t i = 0; i < c->n_sups; i++)
        if (!strcmp(c->sups[i].name, name)) return &c->sups[i];
    return NULL;
}

static int set_str(char *dst, size_t cap, const char *v, char *err, size_t errlen)
{
    if (strlen(v) >= cap) {
        snprintf(err, errlen, "value is too long (limit %zu bytes)", cap - 1);
        return -1;
    }
    memcpy(dst, v, strlen(v) + 1);
    return 0;
}

static int set_uint(unsigned long long *out, const char *v, unsigned long long lo, unsigned long long hi, char *err,
                    size_t errlen)
{
    char *end;
    errno = 0;
    unsigned long long x = strtoull(v, &end, 10);
    if (errno || end == v || *end || v[0] == '-' || x < lo || x > hi) {
        snprintf(err, errlen, "'%s' is not a whole number from %llu to %llu", v, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

static int set_bool(int *out, const char *v, char *err, size_t errlen)
{
    if (!strcmp(v, "true") || !strcmp(v, "yes") || !strcmp(v, "1") || !strcmp(v, "on")) *out = 1;
    else if (!strcmp(v, "false") || !strcmp(v, "no") || !strcmp(v, "0") || !strcmp(v, "off")) *out = 0;
    else {
        snprintf(err, errlen, "'%s' is not true or false", v);
        return -1;
    }
    return 0;
}

/* Sets one daemon-level key; shared by the [daemon] section and the flags. */
static int set_daemon_key(struct config *c, const char *k, const char *v, char *err, size_t errlen)
{
    unsigned long long x;
    if (!strcmp(k, "listen")) return set_str(c->listen, sizeof c->listen, v, err, errlen);
    if (!strcmp(k, "data_dir")) return set_str(c->data_dir, sizeof c->data_dir, v, err, errlen);
    if (!strcmp(k, "node_name")) {
        if (spec_name_check("node_name", v, err, errlen)) return -1;
        return set_str(c->node_name, sizeof c->node_name, v, err, errlen);
    }
    if (!strcmp(k, "strategy_dir")) return set_str(c->strategy_dir, sizeof c->strategy_dir, v, err, errlen);
    static const struct {
        const char *key;
        size_t off, cap;
    } strs[] = {
        {"peer_listen", offsetof(struct config, peer_listen), sizeof c->peer_listen},
        {"peer_advertise", offsetof(struct config, peer_advertise), sizeof c->peer_advertise},
        {"seeds", offsetof(struct config, seeds), sizeof c->seeds},
        {"key_file", offsetof(struct config, key_file), sizeof c->key_file},
        {"trust_file", offsetof(struct config, trust_file), sizeof c->trust_file},
        {"cluster_key_file", offsetof(struct config, cluster_key_file), sizeof c->cluster_key_file},
        {"labels", offsetof(struct config, labels), sizeof c->labels},
        {"api_token_file", offsetof(struct config, api_token_file), sizeof c->api_token_file},
        {"tls_cert", offsetof(struct config, tls_cert), sizeof c->tls_cert},
        {"tls_key", offsetof(struct config, tls_key), sizeof c->tls_key},
        {"tls_client_ca", offsetof(struct config, tls_client_ca), sizeof c->tls_client_ca},
        {"api_socket_group", offsetof(struct config, api_socket_group), sizeof c->api_socket_group},
        {"health_listen", offsetof(struct config, health_listen), sizeof c->health_listen},
        {"metrics_listen", offsetof(struct config, metrics_listen), sizeof c->metrics_listen},
    };
    for (size_t i = 0; i < sizeof strs / sizeof strs[0]; i++)
        if (!strcmp(k, strs[i].key)) return set_str((char *)c + strs[i].off, strs[i].cap, v, err, errlen);
    static const struct {
        const char *key;
        size_t off;
        unsigned long long lo, hi;
    } nums[] = {
        {"heartbeat_ms", offsetof(struct config, heartbeat_ms), 10, 60000},
        {"down_after_ms", offsetof(struct config, down_after_ms), 50, 600000},
        {"sync_timeout_ms", offsetof(struct config, sync_timeout_ms), 0, 600000},
        {"weight", offsetof(struct config, weight), 1, 1000000},
        {"cluster_size", offsetof(struct config, cluster_size), 0, 10000},
        {"peer_max_children", offsetof(struct config, peer_max_children), 1, 10000000},
        {"host_ping_ms", offsetof(struct config, host_ping_ms), 100, 600000},
        {"host_timeout_ms", offsetof(struct config, host_timeout_ms), 200, 3600000},
        {"host_grace_ms", offsetof(struct config, host_grace_ms), 0, 3600000},
        {"host_queue_bytes", offsetof(struct config, host_queue_bytes), 1u << 20, 1u << 31},
        {"max_hosts", offsetof(struct config, max_hosts), 1, 4096},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (strcmp(k, nums[i].key)) continue;
        if (set_uint(&x, v, nums[i].lo, nums[i].hi, err, errlen)) return -1;
        *(unsigned *)((char *)c + nums[i].off) = (unsigned)x;
        return 0;
    }
    if (!strcmp(k, "quorum")) return set_bool(&c->quorum, v, err, errlen);
    if (!strcmp(k, "insecure_api")) return set_bool(&c->insecure_api, v, err, errlen);
    if (!strcmp(k, "api_socket_mode")) {
        char *end;
        errno = 0;
        unsigned long m = strtoul(v, &end, 8);
        if (errno || end == v || *end || v[0] == '-' || m > 0777) {
            snprintf(err, errlen, "'%s' is not an octal file mode from 0 to 0777 (e.g. 0660)", v);
            return -1;
        }
        c->api_socket_mode = (unsigned)m;
        return 0;
    }
    if (!strcmp(k, "trust_unnamed")) return set_bool(&c->trust_unnamed, v, err, errlen);
    if (!strcmp(k, "port_file")) return set_str(c->port_file, sizeof c->port_file, v, err, errlen);
    if (!strcmp(k, "log_format")) {
        if (strcmp(v, "text") && strcmp(v, "json")) {
            snprintf(err, errlen, "log format '%s' is not text or json", v);
            return -1;
        }
        c->log_json = !strcmp(v, "json");
        return 0;
    }
    if (!strcmp(k, "log_level")) {
        int l = log_level_parse(v);
        if (l < 0) {
            snprintf(err, errlen, "log level '%s' is not debug, info, warn or error", v);
            return -1;
        }
        c->log_level = l;
        return 0;
    }
    if (!strcmp(k, "threads")) {
        if (set_uint(&x, v, 1, 64, err, errlen)) return -1;
        c->threads = (unsigned)x;
        return 0;
    }
    if (!strcmp(k, "max_payload_bytes")) {
        /* a payload travels to its child in one frame (framing/frame.h): at most 4 MiB of it */
        if (set_uint(&x, v, 1024, 4u << 20, err, errlen)) return -1;
        c->max_payload = (size_t)x;
        return 0;
    }
    snprintf(err, errlen, "unknown key '%s'", k);
    return -1;
}

static int set_sup_key(struct sup_config *s, const char *k, const char *v, char *err, size_t errlen)
{
    unsigned long long x;
    if (!strcmp(k, "strategy")) return set_str(s->strategy, sizeof s->strategy, v, err, errlen);
    if (!strcmp(k, "strategy_options")) return set_str(s->strategy_options, sizeof s->strategy_options, v, err, errlen);
    if (!strcmp(k, "nodes")) return set_str(s->nodes, sizeof s->nodes, v, err, errlen);
    if (!strcmp(k, "monitor_nodes")) return set_bool(&s->monitor_nodes, v, err, errlen);
    if (!strcmp(k, "inherit_env")) return set_str(s->inherit_env, sizeof s->inherit_env, v, err, errlen);
    if (!strcmp(k, "run_as")) return set_str(s->run_as, sizeof s->run_as, v, err, errlen);
    struct {
        const char *key;
        unsigned long long lo, hi;
    } nums[] = {
        {"max_restarts", 0, 100},          {"max_seconds", 1, 86400},
        {"restart_backoff_ms", 0, 600000}, {"restart_backoff_max_ms", 0, 3600000},
        {"mailbox", 1, 1000000},           {"mailbox_bytes", 4096, 1ull << 32},
        {"start_timeout_ms", 1, 3600000},  {"watch_queue", 1, 1000000},
        {"max_moves", 1, 100000},          {"max_output_rate", 0, 1ull << 32},
    };
    for (size_t i = 0; i < sizeof nums / sizeof nums[0]; i++) {
        if (strcmp(k, nums[i].key)) continue;
        if (set_uint(&x, v, nums[i].lo, nums[i].hi, err, errlen)) return -1;
        switch (i) {
        case 0: s->max_restarts = (unsigned)x; break;
        case 1: s->max_seconds = (unsigned)x; break;
        case 2: s->backoff_ms = (unsigned)x; break;
        case 3: s->backoff_max_ms = (unsigned)x; break;
        case 4: s->mailbox = (unsigned)x; break;
        case 5: s->mailbox_bytes = (size_t)x; break;
        case 6: s->start_timeout_ms = (unsigned)x; break;
        case 7: s->watch_queue = (unsigned)x; break;
        case 8: s->max_moves = (unsigned)x; break;
        default: s->max_output_rate = (size_t)x; break;
        }
        return 0;
    }
    snprintf(err, errlen, "unknown key '%s'", k);
    return -1;
}

int config_listen_is_loopback(const char *listen)
{
    if (!strncmp(listen, "unix:", 5)) return 1;
    const char *colon = strrchr(listen, ':');
    if (!colon) return 0;
    char host[256];
    size_t n = (size_t)(colon - listen);
    if (n >= sizeof host) return 0;
    memcpy(host, listen, n);
    host[n] = 0;
    char *h = host;
    if (h[0] == '[' && n >= 2 && h[n - 1] == ']') {
        h[n - 1] = 0;
        h++;
    }
    if (!strcmp(h, "localhost") || !strcmp(h, "::1")) return 1;
    struct in_addr a;
    return inet_pton(AF_INET, h, &a) == 1 && (ntohl(a.s_addr) >> 24) == 127;
}

/* The API's protection: TLS files come in pairs, and a listener others can reach
 * needs a token or client certificates. */
static int check_api(const struct config *c, char *err, size_t errlen)
{
    if (!c->tls_cert[0] != !c->tls_key[0]) {
        snprintf(err, errlen, "TLS needs both tls_cert and tls_key (--tls-cert, --tls-key)");
        return -1;
    }
    if (c->tls_client_ca[0] && !c->tls_cert[0]) {
        snprintf(err, errlen, "tls_client_ca (mTLS) needs tls_cert and tls_key: the server's own certificate");
        return -1;
    }
    if (c->tls_cert[0] && !strncmp(c->listen, "unix:", 5)) {
        snprintf(err, errlen, "TLS is for a TCP listen address, not %s (a unix socket is protected by its mode)",
                 c->listen);
        return -1;
    }
    if (!config_listen_is_loopback(c->listen) && !c->api_token_file[0] && !c->tls_client_ca[0] && !c->insecure_api) {
        snprintf(err, errlen,
                 "listen %s is reachable from other hosts but the API has no authentication: add "
                 "--api-token-file FILE (a bearer token), or mTLS (--tls-cert, --tls-key, --tls-client-ca), or "
                 "listen on 127.0.0.1 or unix:/PATH; --insecure-api serves it unauthenticated anyway",
                 c->listen);
        return -1;
    }
    if (c->health_listen[0] && !strcmp(c->health_listen, c->listen)) {
        snprintf(err, errlen, "health_listen must differ from listen (%s)", c->listen);
        return -1;
    }
    if (c->metrics_listen[0] &&
        (!strcmp(c->metrics_listen, c->listen) || !strcmp(c->metrics_listen, c->health_listen))) {
        snprintf(err, errlen, "metrics_listen must differ from listen and health_listen (%s)", c->metrics_listen);
        return -1;
    }
    if (c->host_timeout_ms < 2 * c->host_ping_ms) {
        snprintf(err, errlen, "host_timeout_ms (%u) must be at least twice host_ping_ms (%u): a host answers each ping",
                 c->host_timeout_ms, c->host_ping_ms);
        return -1;
    }
    return 0;
}

/* run_as: resolved here, before any thread or child exists (getpwnam is not
 * async-signal-safe, so the child cannot look the user up itself). */
static int resolve_run_as(struct sup_config *s, char *err, size_t errlen)
{
    if (!s->run_as[0]) return 0;
    if (geteuid() != 0) {
        snprintf(err, errlen, "supervisor %s: run_as = %s needs distsupd to run as root (it runs as uid %u)", s->name,
                 s->run_as, (unsigned)geteuid());
        return -1;
    }
    errno = 0;
    struct passwd *pw = getpwnam(s->run_as);
    if (!pw) {
        snprintf(err, errlen, "supervisor %s: run_as: no user named '%s'%s%s", s->name, s->run_as, errno ? ": " : "",
                 errno ? strerror(errno) : "");
        return -1;
    }
    gid_t groups[CONFIG_MAX_GROUPS];
    int ng = CONFIG_MAX_GROUPS;
    if (getgrouplist(pw->pw_name, pw->pw_gid, groups, &ng) < 0) {
        snprintf(err, errlen, "supervisor %s: run_as %s is in more than %d groups", s->name, s->run_as,
                 CONFIG_MAX_GROUPS);
        return -1;
    }
    if (snprintf(s->run_home, sizeof s->run_home, "%s", pw->pw_dir ? pw->pw_dir : "/") >= (int)sizeof s->run_home)
        snprintf(s->run_home, sizeof s->run_home, "/");
    s->run_uid = (unsigned)pw->pw_uid;
    s->run_gid = (unsigned)pw->pw_gid;
    for (int i = 0; i < ng; i++) s->run_groups[i] = (unsigned)groups[i];
    s->n_run_groups = (size_t)ng;
    s->run_as_set = 1;
    return 0;
}

/* Settings that only make sense together. */
static int config_check(struct config *c, char *err, size_t errlen)
{
    if (check_api(c, err, errlen)) return -1;
    for (size_t i = 0; i < c->n_sups; i++)
        if (resolve_run_as(&c->sups[i], err, errlen)) return -1;
    if (!config_cluster(c)) {
        if (c->seeds[0]) {
            snprintf(err, errlen, "seeds are set but peer_listen is not: cluster mode needs --peer-listen");
            return -1;
        }
        if (c->quorum) {
            snprintf(err, errlen, "quorum needs cluster mode (--peer-listen)");
            return -1;
        }
        return 0;
    }
    if (!c->key_file[0] || !c->trust_file[0]) {
        snprintf(err, errlen,
                 "cluster mode needs key_file and trust_file (--key-file, --trust-file; "
                 "see `distsupd keygen`)");
        return -1;
    }
    if (c->quorum && c->cluster_size < 2) {
        snprintf(err, errlen, "quorum needs cluster_size (the number of nodes), at least 2");
        return -1;
    }
    if (c->heartbeat_ms * 2 > c->down_after_ms) {
        snprintf(err, errlen, "heartbeat_ms (%u) must be at most half of down_after_ms (%u)", c->heartbeat_ms,
                 c->down_after_ms);
        return -1;
    }
    return 0;
}

struct ini_ctx {
    struct config *c;
    char err[512];
};

static int on_ini(void *user, const char *section, const char *key, const char *value)
{
    struct ini_ctx *x = user;
    char e[400];
    if (!strcmp(section, "daemon")) {
        if (set_daemon_key(x->c, key, value, e, sizeof e) == 0) return 1;
    } else if (!strncmp(section, "supervisor:", 11)) {
        const char *name = section + 11;
        if (spec_name_check("supervisor name", name, e, sizeof e) != 0) goto bad;
        struct sup_config *s = (struct sup_config *)config_find_sup(x->c, name);
        if (!s) {
            if (x->c->n_sups == CONFIG_MAX_SUPERVISORS) {
                snprintf(e, sizeof e, "more than %d supervisors", CONFIG_MAX_SUPERVISORS);
                goto bad;
            }
            s = &x->c->sups[x->c->n_sups++];
            sup_defaults(s, name);
        }
        if (set_sup_key(s, key, value, e, sizeof e) == 0) return 1;
    } else {
        snprintf(e, sizeof e, "unknown section [%s] (use [daemon] or [supervisor:NAME])", section);
    }
bad:
    /* libinih reports the first bad line: keep that line's reason */
    if (!x->err[0]) snprintf(x->err, sizeof x->err, "[%s] %s: %s", section, key, e);
    return 0;
}

/* The number (from 1) of the first line of a file that libinih cannot hold in one
 * piece (INI_MAX_LINE bytes with the NUL: 199 characters), or 0 when there is none. */
static int first_long_line(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    size_t len = 0;
    int line = 1, ch, found = 0;
    while (!found && (ch = getc(f)) != EOF) {
        if (ch == '\n') {
            line++;
            len = 0;
        } else if (++len > INI_MAX_LINE - 1) {
            found = line;
        }
    }
    fclose(f);
    return found;
}

int config_load_file(struct config *c, const char *path, char *err, size_t errlen)
{
    struct ini_ctx x = {.c = c};
    int rc = ini_parse(path, on_ini, &x);
    if (rc == -1) {
        snprintf(err, errlen, "cannot read config file %s: %s", path, strerror(errno));
        return -1;
    }
    if (rc == -2) {
        snprintf(err, errlen, "config file %s: out of memory", path);
        return -1;
    }
    int long_line = rc > 0 ? first_long_line(path) : 0;
    if (long_line > 0 && long_line <= rc) {
        snprintf(err, errlen,
                 "%s:%d: the line is longer than %d characters, the config parser's limit "
                 "(for a long path, use a shorter one or a symlink)",
                 path, long_line, INI_MAX_LINE - 1);
        return -1;
    }
    if (rc > 0) {
        snprintf(err, errlen, "%s:%d: %s", path, rc, x.err[0] ? x.err : "syntax error");
        return -1;
    }
    return 0;
}

void config_usage(FILE *out)
{
    fprintf(out,
            "usage: distsupd [options]\n"
            "\n"
            "Runs the distsup sidecar: a gRPC distsup.v1.Supervisor service that starts,\n"
            "supervises and messages worker processes.\n"
            "\n"
            "  --listen HOST:PORT     gRPC address (default 127.0.0.1:50051; port 0 picks one)\n"
            "  --data-dir DIR         SQLite state and children's default cwd (default ./data)\n"
            "  --config FILE          INI config file (docs/configuration.md)\n"
            "  --log-level LEVEL      debug, info, warn or error (default info)\n"
            "  --log-format FORMAT    text (default) or json: one JSON object a line\n"
            "  --node-name NAME       this node's name (default node1@HOSTNAME)\n"
            "  --strategy-dir DIR     where built-in strategies live (default: beside the binary)\n"
            "  --port-file FILE       write the bound port here once serving\n"
            "  --threads N            gRPC completion-queue threads (default 2)\n"
            "\n"
            "the API's protection (docs/security.md):\n"
            "  --listen unix:/PATH        serve the API on a unix socket (mode --api-socket-mode, default 0600)\n"
            "  --api-socket-mode MODE     the socket's mode, octal;  --api-socket-group GROUP  its group\n"
            "  --api-token-file FILE      every call needs 'authorization: Bearer TOKEN' (TOKEN: the file's\n"
            "                             content; also $DISTSUP_API_TOKEN_FILE); the file must be mode 0600\n"
            "  --tls-cert PEM --tls-key PEM   TLS on the API\n"
            "  --tls-client-ca PEM        mTLS: clients need a certificate signed by this CA\n"
            "  --health-listen HOST:PORT  a second listener: grpc.health.v1 only, no authentication\n"
            "  --metrics-listen HOST:PORT Prometheus metrics on GET /metrics (plain HTTP, no authentication)\n"
            "  --insecure-api             allow a non-loopback --listen with neither token nor mTLS\n"
            "\n"
            "cluster mode (docs/cluster.md):\n"
            "  --peer-listen HOST:PORT    serve peer links here (turns cluster mode on)\n"
            "  --peer-advertise HOST:PORT the address peers dial (default: --peer-listen)\n"
            "  --seeds HOST:PORT,...      peers to dial at start; the rest are learned\n"
            "  --key-file FILE            this node's key pair (distsupd keygen FILE)\n"
            "  --trust-file FILE          the public keys of the nodes to trust\n"
            "  --cluster-key-file FILE    optional pre-shared cluster key\n"
            "  --down-after-ms MS         silence before a peer is down (default 1000)\n"
            "  --heartbeat-ms MS          heartbeat period on each peer link (default 200)\n"
            "  --sync-timeout-ms MS       how long a starting node waits for its peers (default 3000)\n"
            "  --cluster-size N           the cluster's size, for --quorum\n"
            "  --quorum                   stop children and refuse starts without a majority\n"
            "\n"
            "hosted children (docs/hosting.md):\n"
            "  --host-ping-ms MS          ping each attached host this often (default 2000)\n"
            "  --host-timeout-ms MS       a host silent this long is gone (default 10000)\n"
            "  --host-grace-ms MS         no host of a child's kind here: wait this long, then move it (default 2000)\n"
            "  --host-queue-bytes N       bytes queued to one host (default 67108864)\n"
            "  --max-hosts N              Host sessions at once (default 64)\n"
            "\n"
            "  distsupd keygen FILE [--force]   write a new node key pair, print its public key\n"
            "  --help, --version\n");
}

int config_from_args(struct config *c, int argc, char **argv, char *err, size_t errlen)
{
    static const struct {
        const char *flag, *key;
    } flags[] = {
        {"--listen", "listen"},
        {"--data-dir", "data_dir"},
        {"--log-level", "log_level"},
        {"--log-format", "log_format"},
        {"--node-name", "node_name"},
        {"--strategy-dir", "strategy_dir"},
        {"--port-file", "port_file"},
        {"--threads", "threads"},
        {"--peer-listen", "peer_listen"},
        {"--peer-advertise", "peer_advertise"},
        {"--seeds", "seeds"},
        {"--key-file", "key_file"},
        {"--trust-file", "trust_file"},
        {"--cluster-key-file", "cluster_key_file"},
        {"--down-after-ms", "down_after_ms"},
        {"--heartbeat-ms", "heartbeat_ms"},
        {"--cluster-size", "cluster_size"},
        {"--sync-timeout-ms", "sync_timeout_ms"},
        {"--api-token-file", "api_token_file"},
        {"--tls-cert", "tls_cert"},
        {"--tls-key", "tls_key"},
        {"--tls-client-ca", "tls_client_ca"},
        {"--api-socket-mode", "api_socket_mode"},
        {"--api-socket-group", "api_socket_group"},
        {"--health-listen", "health_listen"},
        {"--metrics-listen", "metrics_listen"},
        {"--host-ping-ms", "host_ping_ms"},
        {"--host-timeout-ms", "host_timeout_ms"},
        {"--host-grace-ms", "host_grace_ms"},
        {"--host-queue-bytes", "host_queue_bytes"},
        {"--max-hosts", "max_hosts"},
    };
    /* The environment's token file comes before every file and flag. */
    const char *env_token = getenv("DISTSUP_API_TOKEN_FILE");
    if (env_token && env_token[0] && set_str(c->api_token_file, sizeof c->api_token_file, env_token, err, errlen)) {
        char e[400];
        snprintf(e, sizeof e, "%s", err);
        snprintf(err, errlen, "DISTSUP_API_TOKEN_FILE: %s", e);
        return -1;
    }
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--config")) {
            if (i + 1 >= argc) {
                snprintf(err, errlen, "--config needs a file");
                return -1;
            }
            if (config_load_file(c, argv[i + 1], err, errlen)) return -1;
        }
    }
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            config_usage(stdout);
            return 1;
        }
        if (!strcmp(a, "--version")) {
            printf("distsupd %s\n", DISTSUP_VERSION);
            return 1;
        }
        if (!strcmp(a, "--config")) {
            i++;
            continue;
        }
        if (!strcmp(a, "--quorum")) {
            c->quorum = 1;
            continue;
        }
        if (!strcmp(a, "--insecure-api")) {
            c->insecure_api = 1;
            continue;
        }
        size_t j;
        for (j = 0; j < sizeof flags / sizeof flags[0]; j++) {
            size_t fl = strlen(flags[j].flag);
            const char *v = NULL;
            if (!strcmp(a, flags[j].flag)) {
                if (i + 1 >= argc) {
                    snprintf(err, errlen, "%s needs a value", a);
                    return -1;
                }
                v = argv[++i];
            } else if (!strncmp(a, flags[j].flag, fl) && a[fl] == '=') {
                v = a + fl + 1;
            }
            if (!v) continue;
            char e[400];
            if (set_daemon_key(c, flags[j].key, v, e, sizeof e)) {
                snprintf(err, errlen, "%s: %s", flags[j].flag, e);
                return -1;
            }
            break;
        }
        if (j == sizeof flags / sizeof flags[0]) {
            snprintf(err, errlen, "unknown option '%s' (see --help)", a);
            return -1;
        }
    }
    return config_check(c, err, errlen);
}

int config_cluster(const struct config *c) { return c->peer_listen[0] != 0; }

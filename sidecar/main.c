/* distsupd: the distsup sidecar.  Wires config, store, core and rpc together and
 * waits for SIGTERM/SIGINT (a clean stop) in the main thread. */
#include <errno.h>
#include <fcntl.h>
#include <grpc/grpc.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

#include <sodium.h>

#include "sidecar/config.h"
#include "sidecar/core.h"
#include "sidecar/identity.h"
#include "sidecar/log.h"
#include "sidecar/metrics.h"
#include "sidecar/peer.h"
#include "sidecar/rpc.h"
#include "sidecar/store.h"

/* The API port (or, on a unix socket, its unix:/PATH address), and in cluster mode the
 * peer port on a second line. */
static int write_port_file(const char *path, const char *api, int port, int peer_port)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return -1;
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    int ok = (strncmp(api, "unix:", 5) ? fprintf(f, "%d\n", port) : fprintf(f, "%s\n", api)) > 0;
    if (ok && peer_port > 0) ok = fprintf(f, "%d\n", peer_port) > 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) return -1;
    return 0;
}

/* distsupd keygen FILE [--force] */
static int keygen(int argc, char **argv)
{
    const char *path = NULL;
    int force = 0;
    for (int i = 2; i < argc; i++) {
        if (!strcmp(argv[i], "--force")) force = 1;
        else if (!path && argv[i][0] != '-') path = argv[i];
        else {
            fprintf(stderr, "usage: distsupd keygen FILE [--force]\n");
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr,
                "usage: distsupd keygen FILE [--force]\n"
                "Writes a new node key pair to FILE (mode 0600) and prints its public key,\n"
                "the line to add to the other nodes' trust files.\n");
        return 2;
    }
    char pub[2 * HS_KEY_LEN + 1], err[512];
    if (identity_keygen(path, force, pub, err, sizeof err) != 0) {
        fprintf(stderr, "distsupd keygen: %s\n", err);
        return 1;
    }
    printf("%s\n", pub);
    return 0;
}

/* The peer module's news goes to the core's queue. */
static void on_up(void *arg, const Distsup__V1__Join *j) { core_node_up(arg, j); }
static void on_down(void *arg, const char *node, int clean) { core_node_down(arg, node, clean); }
static int on_message(void *arg, const char *node, const uint8_t *d, size_t n)
{
    return core_cluster_message(arg, node, d, n);
}
static void on_settled(void *arg) { core_peers_settled(arg); }

/* Each child takes a few fds (pipes, pidfd): the soft limit a shell gives (1024) would
 * cap the children at about 250.  Raised to the hard limit; the cap is logged. */
static void raise_fd_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
        log_warn("main", "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
        return;
    }
    if (rl.rlim_cur < rl.rlim_max) {
        rlim_t was = rl.rlim_cur;
        rl.rlim_cur = rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
            log_warn("main", "cannot raise the open-file limit from %llu to %llu: %s", (unsigned long long)was,
                     (unsigned long long)rl.rlim_max, strerror(errno));
            if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return;
        }
    }
    log_info("main", "open files: %llu (about %llu children)", (unsigned long long)rl.rlim_cur,
             (unsigned long long)(rl.rlim_cur > 64 ? (rl.rlim_cur - 64) / 4 : 0));
}

int main(int argc, char **argv)
{
    static struct config cfg;
    static struct identity id;
    char err[1024] = "";
    /* fds 0..2 stay taken (by /dev/null if the caller closed them), so no pipe to a
     * child is ever one of them: the child moves its pipes onto 0..2 (proc.c). */
    for (int fd = 0; fd < 3; fd++) {
        if (fcntl(fd, F_GETFD) < 0 && open("/dev/null", O_RDWR) != fd) {
            perror("distsupd: /dev/null");
            return 1;
        }
    }
    if (sodium_init() < 0) {
        fprintf(stderr, "distsupd: libsodium failed to initialize\n");
        return 1;
    }
    if (argc > 1 && !strcmp(argv[1], "keygen")) return keygen(argc, argv);
    config_defaults(&cfg);
    int rc = config_from_args(&cfg, argc, argv, err, sizeof err);
    if (rc == 1) return 0;
    if (rc != 0) {
        fprintf(stderr, "distsupd: %s\n", err);
        return 2;
    }
    log_set_level((enum log_level)cfg.log_level);
    if (cfg.log_json) log_set_json(cfg.node_name);
    raise_fd_limit();

    /* Signals are taken synchronously by this thread; every thread started from
     * here on inherits the mask.  Children's pipes must not kill us. */
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGHUP);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0 || signal(SIGPIPE, SIG_IGN) == SIG_ERR) {
        fprintf(stderr, "distsupd: cannot set up signals\n");
        return 1;
    }

    int cluster = config_cluster(&cfg);
    if (cluster && identity_load(&id, cfg.key_file, cfg.trust_file, cfg.cluster_key_file, err, sizeof err) != 0) {
        log_error("main", "%s", err);
        return 1;
    }
    struct metrics *metrics = NULL;
    if (cfg.metrics_listen[0] && !(metrics = metrics_new(&cfg))) {
        log_error("main", "out of memory");
        identity_free(&id);
        return 1;
    }
    struct store *st = store_open(cfg.data_dir, err, sizeof err);
    if (!st) {
        log_error("main", "%s", err);
        metrics_free(metrics);
        identity_free(&id);
        return 1;
    }
    store_set_metrics(st, metrics);
    struct core *core = core_new(&cfg, st, err, sizeof err);
    if (!core) {
        log_error("main", "%s", err);
        store_close(st);
        metrics_free(metrics);
        identity_free(&id);
        return 1;
    }
    core_set_metrics(core, metrics);
    grpc_init();
    int port = 0, peer_port = 0;
    struct peer *peer = NULL;
    struct rpc *rpc = rpc_start(&cfg, core, &port, err, sizeof err);
    if (!rpc) goto fail;
    const char *api = rpc_address(rpc);
    core_set_address(core, api);
    if (cluster) {
        uint64_t boot_id;
        randombytes_buf(&boot_id, sizeof boot_id);
        struct peer_callbacks cb = {core, on_up, on_down, on_message, on_settled};
        if (!(peer = peer_start(&cfg, &id, boot_id, api, &cb, metrics, &peer_port, err, sizeof err))) goto fail;
        core_set_peer(core, peer);
    }
    if (core_start(core, err, sizeof err) != 0) goto fail;
    if (metrics) {
        int mport = 0;
        metrics_set_collector(metrics, core_publish_metrics, core);
        if (metrics_serve(metrics, cfg.metrics_listen, &mport, err, sizeof err) != 0) goto fail_started;
        log_info("main", "serving Prometheus metrics on %s (port %d), GET /metrics", cfg.metrics_listen, mport);
    }
    log_info("main", "distsupd %s serving distsup.v1.Supervisor on %s, data in %s%s", cfg.node_name, api, cfg.data_dir,
             cluster ? ", cluster mode" : "");
    if (rpc_health_port(rpc) > 0)
        log_info("main", "serving grpc.health.v1 only on %s (port %d)", cfg.health_listen, rpc_health_port(rpc));
    if (cfg.port_file[0] && write_port_file(cfg.port_file, api, port, peer_port) != 0)
        log_error("main", "cannot write the port file %s: %s", cfg.port_file, strerror(errno));

    int sig = 0;
    while (sigwait(&set, &sig) != 0 || sig == SIGHUP) {
        if (sig == SIGHUP) log_info("main", "SIGHUP ignored (restart to reload the config)");
    }
    log_info("main", "received %s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    /* The API stops first; the core then hands its children off (cluster mode) or
     * stops them, and only then do the peer links close. */
    rpc_stop(rpc);
    core_shutdown(core);
    if (peer) peer_stop(peer);
    metrics_stop(metrics); /* before the core it asks goes */
    rpc_free(rpc);
    core_free(core);
    peer_free(peer);
    store_close(st);
    metrics_free(metrics); /* its HTTP thread stops here; nothing counts any more */
    identity_free(&id);
    grpc_shutdown();
    log_info("main", "stopped cleanly");
    return 0;
fail_started:
    log_error("main", "%s", err);
    rpc_stop(rpc);
    core_shutdown(core);
    if (peer) peer_stop(peer);
    metrics_stop(metrics);
    rpc_free(rpc);
    core_free(core);
    peer_free(peer);
    store_close(st);
    metrics_free(metrics);
    identity_free(&id);
    grpc_shutdown();
    return 1;
fail:
    log_error("main", "%s", err);
    if (rpc) rpc_stop(rpc);
    if (peer) peer_stop(peer);
    if (rpc) rpc_free(rpc);
    core_free(core);
    peer_free(peer);
    store_close(st);
    metrics_free(metrics);
    identity_free(&id);
    grpc_shutdown();
    return 1;
}

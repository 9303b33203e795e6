/* distsupd: the distsup sidecar.  Wires config, store, core and rpc together and
 * waits for SIGTERM/SIGINT (a clean stop) in the main thread. */
#include <errno.h>
#include <grpc/grpc.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sidecar/config.h"
#include "sidecar/core.h"
#include "sidecar/log.h"
#include "sidecar/rpc.h"
#include "sidecar/store.h"

static int write_port_file(const char *path, int port)
{
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp", path) >= (int)sizeof tmp) return -1;
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    int ok = fprintf(f, "%d\n", port) > 0;
    if (fclose(f) != 0) ok = 0;
    if (!ok || rename(tmp, path) != 0) return -1;
    return 0;
}

int main(int argc, char **argv)
{
    static struct config cfg;
    char err[1024] = "";
    config_defaults(&cfg);
    int rc = config_from_args(&cfg, argc, argv, err, sizeof err);
    if (rc == 1) return 0;
    if (rc != 0) {
        fprintf(stderr, "distsupd: %s\n", err);
        return 2;
    }
    log_set_level((enum log_level)cfg.log_level);

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

    struct store *st = store_open(cfg.data_dir, err, sizeof err);
    if (!st) {
        log_error("main", "%s", err);
        return 1;
    }
    struct core *core = core_new(&cfg, st, err, sizeof err);
    if (!core) {
        log_error("main", "%s", err);
        store_close(st);
        return 1;
    }
    grpc_init();
    int port = 0;
    struct rpc *rpc = rpc_start(&cfg, core, &port, err, sizeof err);
    if (!rpc) {
        log_error("main", "%s", err);
        core_free(core);
        store_close(st);
        grpc_shutdown();
        return 1;
    }
    if (core_start(core, err, sizeof err) != 0) {
        log_error("main", "%s", err);
        rpc_stop(rpc);
        rpc_free(rpc);
        core_free(core);
        store_close(st);
        grpc_shutdown();
        return 1;
    }
    log_info("main", "distsupd %s serving distsup.v1.Supervisor on %s (port %d), data in %s",
             cfg.node_name, cfg.listen, port, cfg.data_dir);
    if (cfg.port_file[0] && write_port_file(cfg.port_file, port) != 0)
        log_error("main", "cannot write the port file %s: %s", cfg.port_file, strerror(errno));

    int sig = 0;
    while (sigwait(&set, &sig) != 0 || sig == SIGHUP) {
        if (sig == SIGHUP) log_info("main", "SIGHUP ignored (restart to reload the config)");
    }
    log_info("main", "received %s: shutting down", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    rpc_stop(rpc);
    core_shutdown(core);
    rpc_free(rpc);
    core_free(core);
    store_close(st);
    grpc_shutdown();
    log_info("main", "stopped cleanly");
    return 0;
}

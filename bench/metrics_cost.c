/* metrics_cost: what metrics add to one Call in the reactor, measured in-process
 * (docs/performance.md, "Metrics on and off"): the timing context of
 * sidecar/requests.c (a malloc and a free), two clock reads and one histogram
 * observation, as time_request and timed_done do them; also one counter add.  One
 * thread, so the atomics are uncontended, as they are on the reactor.
 *
 *   bazel run //bench:metrics_cost */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "sidecar/config.h"
#include "sidecar/metrics.h"

struct timed { /* the size of requests.c's context */
    void *done, *arg, *m;
    const void *sup;
    int hist;
    uint64_t t0;
};

int main(void)
{
    static struct config cfg;
    cfg.n_sups = 1;
    snprintf(cfg.sups[0].name, sizeof cfg.sups[0].name, "default");
    struct metrics *m = metrics_new(&cfg);
    if (!m) return 1;
    enum { N = 5000000 };
    volatile uintptr_t sink = 0;
    for (int round = 0; round < 3; round++) {
        uint64_t t0 = metrics_now_ns();
        for (int i = 0; i < N; i++) {
            struct timed *t = malloc(sizeof *t);
            if (!t) return 1;
            t->t0 = metrics_now_ns();
            sink += (uintptr_t)t;
            metrics_sup_observe(m, &cfg.sups[0], MH_CALL_LOCAL, metrics_now_ns() - t->t0);
            free(t);
        }
        uint64_t t1 = metrics_now_ns();
        for (int i = 0; i < N; i++) metrics_sup_inc(m, &cfg.sups[0], MC_CASTS);
        uint64_t t2 = metrics_now_ns();
        printf("RESULT\tmetrics cost\ttimed Call (context, 2 clock reads, histogram)\t%.1f\tns\n",
               (double)(t1 - t0) / N);
        printf("RESULT\tmetrics cost\tcounter add\t%.1f\tns\n", (double)(t2 - t1) / N);
    }
    metrics_free(m);
    return sink == 1;
}

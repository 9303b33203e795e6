/* latency: what the bench clients (call_bench, hosted_bench) keep of a run of calls:
 * counts, the first error, and every successful call's latency, with percentiles.
 * Ownership: lat is the struct's (stats_free). */
#ifndef DISTSUP_BENCH_LATENCY_H
#define DISTSUP_BENCH_LATENCY_H

#include <stddef.h>
#include <stdint.h>

struct stats {
    size_t ok, failed;
    double elapsed_s;
    uint64_t *lat; /* ns, one per successful call */
    size_t n_lat, cap_lat;
    char first_error[300];
};

/* A successful call that took ns.  0, or -1 when out of memory. */
int stats_ok(struct stats *st, uint64_t ns);
/* Sorts the latencies: before stats_pct_us. */
void stats_sort(struct stats *st);
/* The q-quantile (0..1) of the sorted latencies, in µs (0 with none). */
double stats_pct_us(const struct stats *st, double q);
void stats_free(struct stats *st);

#endif

#include "bench/latency.h"

#include <stdlib.h>

int stats_ok(struct stats *st, uint64_t ns)
{
    if (st->n_lat == st->cap_lat) {
        size_t cap = st->cap_lat ? st->cap_lat * 2 : 65536;
        uint64_t *p = realloc(st->lat, cap * sizeof *p);
        if (!p) return -1;
        st->lat = p;
        st->cap_lat = cap;
    }
    st->ok++;
    st->lat[st->n_lat++] = ns;
    return 0;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

void stats_sort(struct stats *st)
{
    if (st->n_lat) qsort(st->lat, st->n_lat, sizeof *st->lat, cmp_u64);
}

double stats_pct_us(const struct stats *st, double q)
{
    if (!st->n_lat) return 0;
    return (double)st->lat[(size_t)(q * (double)(st->n_lat - 1) + 0.5)] / 1000.0;
}

void stats_free(struct stats *st)
{
    free(st->lat);
    st->lat = NULL;
    st->n_lat = st->cap_lat = 0;
}

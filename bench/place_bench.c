/* place_bench: nanoseconds per placement_place() call for each built-in strategy (and
 * the rendezvous example) with 3, 30 and 300 nodes, plus what a hash ring rebuild
 * costs when the node list changes.  Method in docs/strategies.md ("Performance").
 *
 *   place_bench hash_ring.so least_loaded.so pinned.so [rendezvous.so]
 *   bazel run //bench:place_bench        (the paths are filled in) */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sidecar/placement.h"

#define N_KEYS 4096          /* distinct keys, cycled: lookups do not all hit one cache line */
#define ROUNDS 5             /* timed rounds per cell; the median is printed */
#define ROUND_NS 100000000.0 /* aim for about 0.1 s per round */

struct config {
    const char *label;
    int so; /* index into the .so paths */
    const char *options;
};

static double now_ns(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0) {
        perror("clock_gettime");
        exit(1);
    }
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Nodes "node007@10.0.1.7" (sorted: zero-padded), some load, every third in zone eu. */
struct nodes {
    struct ds_node *v;
    char (*names)[32];
    size_t n;
};

static const struct ds_label EU[] = {{"zone", "eu"}};
static const struct ds_label US[] = {{"zone", "us"}};

static int make_nodes(struct nodes *s, size_t n)
{
    s->n = n;
    s->v = calloc(n, sizeof *s->v);
    s->names = calloc(n, sizeof *s->names);
    if (!s->v || !s->names) return -1;
    for (size_t i = 0; i < n; i++) {
        snprintf(s->names[i], sizeof s->names[i], "node%03zu@10.0.%zu.%zu", i, i / 250, i % 250);
        s->v[i].name = s->names[i];
        s->v[i].weight = 100;
        s->v[i].children = (uint32_t)((i * 7919) % 97);
        s->v[i].labels = i % 3 == 0 ? EU : US;
        s->v[i].n_labels = 1;
    }
    return 0;
}

static void free_nodes(struct nodes *s)
{
    free(s->v);
    free(s->names);
}

static volatile long sink;

/* ns per place() over `calls` calls, cycling the keys. */
static double run(struct placement *p, const struct ds_child *children, const struct nodes *s, size_t calls)
{
    char err[256];
    long acc = 0;
    double t0 = now_ns();
    for (size_t i = 0; i < calls; i++) acc += placement_place(p, &children[i % N_KEYS], s->v, s->n, err, sizeof err);
    double t1 = now_ns();
    sink += acc;
    return (t1 - t0) / (double)calls;
}

static double measure(struct placement *p, const struct ds_child *children, const struct nodes *s)
{
    (void)run(p, children, s, N_KEYS); /* warm-up: builds caches, faults pages in */
    double per = run(p, children, s, 10000);
    size_t calls = (size_t)(ROUND_NS / (per > 1 ? per : 1));
    if (calls < 1000) calls = 1000;
    double r[ROUNDS];
    for (int i = 0; i < ROUNDS; i++) r[i] = run(p, children, s, calls);
    qsort(r, ROUNDS, sizeof r[0], cmp_double);
    return r[ROUNDS / 2];
}

/* ns for the first place() after the node list changes: alternates two lists. */
static double rebuild(struct placement *p, const struct ds_child *c, const struct nodes *a, const struct nodes *b)
{
    char err[256];
    int iters = a->n >= 300 ? 200 : 2000;
    double t0 = now_ns();
    for (int i = 0; i < iters; i++) {
        sink += placement_place(p, c, a->v, a->n, err, sizeof err);
        sink += placement_place(p, c, b->v, b->n, err, sizeof err);
    }
    return (now_ns() - t0) / (2.0 * iters);
}

int main(int argc, char **argv)
{
    if (argc < 4) {
        fprintf(stderr, "usage: %s hash_ring.so least_loaded.so pinned.so [rendezvous.so]\n", argv[0]);
        return 2;
    }
    const struct config configs[] = {
        {"hash_ring", 1, ""},
        {"hash_ring epsilon=0.25", 1, "epsilon=0.25"},
        {"least_loaded", 2, ""},
        {"least_loaded weighted", 2, "weighted=true"},
        {"pinned node=<last>", 3, NULL}, /* options made per node count */
        {"pinned label=zone=eu", 3, "label=zone=eu"},
        {"rendezvous (example)", 4, ""},
    };
    static const size_t sizes[] = {3, 30, 300};

    char(*keys)[24] = calloc(N_KEYS, sizeof *keys);
    struct ds_child *children = calloc(N_KEYS, sizeof *children);
    if (!keys || !children) {
        fprintf(stderr, "out of memory\n");
        return 1;
    }
    for (size_t i = 0; i < N_KEYS; i++) {
        snprintf(keys[i], sizeof keys[i], "user:%zu", i * 2654435761u % 1000003u);
        children[i] = (struct ds_child){.supervisor = "default", .name = keys[i], .key = keys[i]};
    }
    struct nodes lists[3];
    for (size_t s = 0; s < 3; s++) {
        if (make_nodes(&lists[s], sizes[s]) != 0) {
            fprintf(stderr, "out of memory\n");
            return 1;
        }
    }

    printf("ns per placement_place() call (median of %d rounds of ~0.1 s, %d distinct keys)\n", ROUNDS, N_KEYS);
    printf("%-24s %10s %10s %10s\n", "strategy", "3 nodes", "30 nodes", "300 nodes");
    int rc = 0;
    for (size_t c = 0; c < sizeof configs / sizeof configs[0]; c++) {
        if (configs[c].so >= argc) continue;
        printf("%-24s", configs[c].label);
        for (size_t s = 0; s < 3; s++) {
            char options[128], err[1024];
            if (configs[c].options) snprintf(options, sizeof options, "%s", configs[c].options);
            else snprintf(options, sizeof options, "node=%s", lists[s].names[sizes[s] - 1]);
            struct placement *p = placement_load(argv[configs[c].so], options, "", err, sizeof err);
            if (!p) {
                fprintf(stderr, "\n%s\n", err);
                rc = 1;
                break;
            }
            printf(" %10.1f", measure(p, children, &lists[s]));
            fflush(stdout);
            placement_free(p);
        }
        printf("\n");
    }

    /* Ring rebuilds: a list and the same list with one weight changed, alternately. */
    printf("\nhash_ring: ns for a place() that rebuilds the ring (160 vnodes a node)\n");
    printf("%-24s %10s %10s %10s\n", "", "3 nodes", "30 nodes", "300 nodes");
    printf("%-24s", "rebuild + place");
    for (size_t s = 0; s < 3; s++) {
        char err[1024];
        struct placement *p = placement_load(argv[1], "", "", err, sizeof err);
        struct nodes other;
        if (!p || make_nodes(&other, sizes[s]) != 0) {
            fprintf(stderr, "\n%s\n", p ? "out of memory" : err);
            return 1;
        }
        other.v[0].weight = 101;
        printf(" %10.0f", rebuild(p, &children[0], &lists[s], &other));
        fflush(stdout);
        free_nodes(&other);
        placement_free(p);
    }
    printf("\n");
    for (size_t s = 0; s < 3; s++) free_nodes(&lists[s]);
    free(keys);
    free(children);
    return rc;
}

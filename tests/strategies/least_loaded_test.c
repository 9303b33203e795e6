/* least_loaded.so, loaded through placement_load: fewest children, weighted ratios,
 * tie-breaking, fills evenly, never moves running children.
 *
 * argv[1]: least_loaded.so */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sidecar/placement.h"
#include "strategies/hash.h"
#include "tests/strategies/testutil.h"

static const char *so_path;

static void set_loads(struct tnodes *t, const uint32_t *children, const uint32_t *weights)
{
    for (size_t i = 0; i < t->n; i++) {
        t->nodes[i].children = children[i];
        if (weights) t->nodes[i].weight = weights[i];
    }
}

/* The documented tie-break: the highest dsh_score(name, hash of key) among the tied,
 * computed here from the hash alone. */
static int tie_winner(const struct tnodes *t, const int *tied, size_t n_tied, const char *key)
{
    uint64_t kh = dsh_str(key, 0);
    int best = tied[0];
    for (size_t i = 1; i < n_tied; i++)
        if (dsh_str(t->nodes[tied[i]].name, kh) > dsh_str(t->nodes[best].name, kh)) best = tied[i];
    return best;
}

static void test_fewest_children(void **unused)
{
    (void)unused;
    struct placement *p = tload(so_path, "");
    struct tnodes t;
    tnodes_make(&t, 5, 1, "node%zu@h");
    set_loads(&t, (const uint32_t[]){5, 4, 7, 2, 9}, NULL);
    struct ds_child c = tchild("a");
    assert_int_equal(tplace(p, &c, &t), 3);
    t.nodes[3].children = 100;
    assert_int_equal(tplace(p, &c, &t), 1);

    /* Ties between nodes 1 and 3: each key goes where the documented score says, and
     * keys do not all pick the same one. */
    set_loads(&t, (const uint32_t[]){5, 3, 7, 3, 9}, NULL);
    const int tied[2] = {1, 3};
    size_t to1 = 0;
    for (size_t i = 0; i < 1000; i++) {
        char key[32];
        snprintf(key, sizeof key, "child-%zu", i);
        c = tchild(key);
        int r = tplace(p, &c, &t);
        assert_int_equal(r, tie_winner(&t, tied, 2, key));
        if (r == 1) to1++;
    }
    print_message("ties between 2 nodes over 1000 keys: %zu / %zu\n", to1, 1000 - to1);
    assert_true(to1 > 400 && to1 < 600);

    char err[128];
    c = tchild("a");
    assert_int_equal(placement_place(p, &c, NULL, 0, err, sizeof err), -1);
    assert_string_equal(err, "no node is up");
    placement_free(p);
    tnodes_free(&t);
}

static void test_weighted(void **unused)
{
    (void)unused;
    struct placement *plain = tload(so_path, "");
    struct placement *weighted = tload(so_path, "weighted=true");
    struct tnodes t;
    tnodes_make(&t, 3, 1, "node%zu@h");
    /* children/weight: 0.10, 0.075, 0.08 */
    set_loads(&t, (const uint32_t[]){10, 15, 4}, (const uint32_t[]){100, 200, 50});
    struct ds_child c = tchild("x");
    assert_int_equal(tplace(plain, &c, &t), 2);    /* fewest children */
    assert_int_equal(tplace(weighted, &c, &t), 1); /* lowest ratio */

    /* Equal ratios, 2/200 and 3/300, tie exactly (no rounding). */
    set_loads(&t, (const uint32_t[]){2, 3, 9}, (const uint32_t[]){200, 300, 100});
    const int tied[2] = {0, 1};
    for (size_t i = 0; i < 100; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%zu", i);
        c = tchild(key);
        assert_int_equal(tplace(weighted, &c, &t), tie_winner(&t, tied, 2, key));
    }
    /* Near the top of the ranges: 4e9/4e9 against (4e9-1)/4e9 (no overflow). */
    set_loads(&t, (const uint32_t[]){4000000000u, 3999999999u, 4000000000u},
              (const uint32_t[]){4000000000u, 4000000000u, 4000000000u});
    c = tchild("x");
    assert_int_equal(tplace(weighted, &c, &t), 1);

    /* Filling from empty: weighted loads end proportional to weight. */
    set_loads(&t, (const uint32_t[]){0, 0, 0}, (const uint32_t[]){100, 200, 300});
    for (size_t i = 0; i < 600; i++) {
        char key[32];
        snprintf(key, sizeof key, "fill-%zu", i);
        c = tchild(key);
        t.nodes[tplace(weighted, &c, &t)].children++;
    }
    assert_int_equal(t.nodes[0].children, 100);
    assert_int_equal(t.nodes[1].children, 200);
    assert_int_equal(t.nodes[2].children, 300);
    placement_free(plain);
    placement_free(weighted);
    tnodes_free(&t);
}

static void test_fills_evenly(void **unused)
{
    (void)unused;
    struct placement *p = tload(so_path, "");
    struct tnodes t;
    tnodes_make(&t, 10, 1, "node%02zu@h");
    t.nodes[4].children = 50; /* a head start: it gets nothing until the others catch up */
    for (size_t i = 0; i < 950; i++) {
        char key[32];
        snprintf(key, sizeof key, "c%zu", i);
        struct ds_child c = tchild(key);
        int r = tplace(p, &c, &t);
        if (i < 450) assert_int_not_equal(r, 4);
        t.nodes[r].children++;
    }
    for (size_t i = 0; i < t.n; i++) assert_int_equal(t.nodes[i].children, 100);
    placement_free(p);
    tnodes_free(&t);
}

/* A running child stays however uneven the loads (joins are filled by new children);
 * a child whose node is gone goes to the least loaded node. */
static void test_should_move(void **unused)
{
    (void)unused;
    struct placement *p = tload(so_path, "");
    struct tnodes t;
    tnodes_make(&t, 4, 1, "node%zu@h");
    set_loads(&t, (const uint32_t[]){1000, 1000, 1000, 0}, NULL);
    struct ds_child c = tchild("busy");
    int to = -5;
    for (int cur = 0; cur < 3; cur++) assert_int_equal(placement_should_move(p, &c, cur, t.nodes, t.n, &to), 0);
    assert_int_equal(to, -5);
    assert_int_equal(placement_should_move(p, &c, -1, t.nodes, t.n, &to), 1);
    assert_int_equal(to, 3);
    assert_int_equal(placement_should_move(p, &c, -1, NULL, 0, &to), 0);
    placement_free(p);
    tnodes_free(&t);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s least_loaded.so\n", argv[0]);
        return 2;
    }
    so_path = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fewest_children),
        cmocka_unit_test(test_weighted),
        cmocka_unit_test(test_fills_evenly),
        cmocka_unit_test(test_should_move),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* examples/rendezvous: the custom strategy, loaded by path, against an independent
 * computation of the formula in its README, and the loader's default should_move
 * (it has no hook).
 *
 * argv[1]: rendezvous.so */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "sidecar/placement.h"
#include "tests/strategies/testutil.h"

static const char *so_path;

/* score = fmix64(FNV-1a-64(key bytes, 0xff, name bytes)), written out afresh from the
 * README: one byte buffer, one FNV loop. */
static uint64_t ref_score(const char *key, const char *name)
{
    unsigned char buf[256];
    size_t kl = strlen(key), nl = strlen(name);
    assert_true(kl + 1 + nl <= sizeof buf);
    memcpy(buf, key, kl);
    buf[kl] = 0xff;
    memcpy(buf + kl + 1, name, nl);
    uint64_t h = 14695981039346656037ull; /* 0xcbf29ce484222325 */
    for (size_t i = 0; i < kl + 1 + nl; i++) h = (h ^ buf[i]) * 1099511628211ull;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

static int ref_place(const struct tnodes *t, const char *key)
{
    int best = 0;
    for (size_t i = 1; i < t->n; i++)
        if (ref_score(key, t->nodes[i].name) > ref_score(key, t->nodes[best].name)) best = (int)i;
    return best;
}

static void test_matches_formula(void **unused)
{
    (void)unused;
    /* A value computed outside C (Python, from the README's formula), so the reference
     * itself is checked too. */
    assert_true(ref_score("user:1", "node1@10.1.0.1") == 0xb2e41a5e40c7bdfdull);
    struct placement *p = tload(so_path, "");
    assert_string_equal(placement_name(p), "rendezvous");
    assert_string_equal(placement_path(p), so_path);
    struct tnodes t;
    tnodes_make(&t, 7, 1, "node%zu@10.1.0.1");
    size_t used[7] = {0};
    for (size_t i = 0; i < 20000; i++) {
        char key[32];
        snprintf(key, sizeof key, "user:%zu", i);
        struct ds_child c = tchild(key);
        int r = tplace(p, &c, &t);
        assert_int_equal(r, ref_place(&t, key));
        used[r]++;
    }
    for (size_t i = 0; i < 7; i++) {
        print_message("%s: %zu keys\n", t.nodes[i].name, used[i]);
        assert_true(used[i] > 2400 && used[i] < 3400); /* 20000/7 = 2857 */
    }
    char err[128];
    struct ds_child c = tchild("k");
    assert_int_equal(placement_place(p, &c, NULL, 0, err, sizeof err), -1);
    assert_string_equal(err, "no node is up");
    placement_free(p);
    tnodes_free(&t);
}

static void test_options_rejected(void **unused)
{
    (void)unused;
    char err[1024], want[2048];
    assert_null(placement_load(so_path, "vnodes=3", "strategies", err, sizeof err));
    snprintf(want, sizeof want, "strategy %s: options rejected: rendezvous takes no options (got 'vnodes=3')", so_path);
    assert_string_equal(err, want);
}

/* No should_move hook: the loader moves a child exactly when place() names another
 * node; on a join only keys won by the new node move. */
static void test_default_should_move(void **unused)
{
    (void)unused;
    struct placement *p = tload(so_path, "");
    struct tnodes t5, t6;
    tnodes_make(&t5, 5, 1, "node%zu@h");
    tnodes_make(&t6, 6, 1, "node%zu@h");
    size_t moved = 0;
    for (size_t i = 0; i < 6000; i++) {
        char key[32];
        snprintf(key, sizeof key, "k%zu", i);
        struct ds_child c = tchild(key);
        int cur = tplace(p, &c, &t5), to = -1;
        int m = placement_should_move(p, &c, cur, t6.nodes, t6.n, &to);
        if (m) {
            assert_int_equal(to, 5); /* node6@h */
            moved++;
        } else {
            assert_int_equal(ref_place(&t6, key), cur);
        }
    }
    print_message("join 5 -> 6: %zu of 6000 moved (ideal 1000)\n", moved);
    assert_true(moved > 800 && moved < 1200);
    placement_free(p);
    tnodes_free(&t5);
    tnodes_free(&t6);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s rendezvous.so\n", argv[0]);
        return 2;
    }
    so_path = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_matches_formula),
        cmocka_unit_test(test_options_rejected),
        cmocka_unit_test(test_default_should_move),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* pinned.so, loaded through placement_load: a named node, node labels, the child's own
 * labels, fallbacks, and when a running child moves.
 *
 * argv[1]: pinned.so  argv[2]: hash_ring.so (the fallback must agree with it) */
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

static const char *pinned_so, *hash_ring_so;

static const struct ds_label EU[] = {{"zone", "eu"}, {"disk", "hdd"}};
static const struct ds_label EU_SSD[] = {{"disk", "ssd"}, {"zone", "eu"}};
static const struct ds_label US[] = {{"zone", "us"}, {"disk", "ssd"}};

/* n0..n5: n0 us, n1 eu, n2 eu+ssd, n3 no labels, n4 eu, n5 us. */
static void zoned(struct tnodes *t)
{
    tnodes_make(t, 6, 0, "n%zu");
    const struct ds_label *labels[6] = {US, EU, EU_SSD, NULL, EU, US};
    for (size_t i = 0; i < 6; i++) {
        t->nodes[i].labels = labels[i];
        t->nodes[i].n_labels = labels[i] ? 2 : 0;
    }
}

/* The documented pick among acceptable nodes: highest dsh_score(name, key hash). */
static int hrw(const struct tnodes *t, const int *ok, size_t n_ok, const char *key)
{
    uint64_t kh = dsh_str(key, 0);
    int best = ok[0];
    for (size_t i = 1; i < n_ok; i++)
        if (dsh_str(t->nodes[ok[i]].name, kh) > dsh_str(t->nodes[best].name, kh)) best = ok[i];
    return best;
}

static void expect_fail(struct placement *p, const struct ds_child *c, const struct tnodes *t, const char *want)
{
    char err[256];
    assert_int_equal(placement_place(p, c, t->nodes, t->n, err, sizeof err), -1);
    assert_string_equal(err, want);
}

static void test_node(void **unused)
{
    (void)unused;
    struct placement *p = tload(pinned_so, "node=n3");
    struct tnodes t;
    zoned(&t);
    for (size_t i = 0; i < 100; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%zu", i);
        struct ds_child c = tchild(key);
        assert_int_equal(tplace(p, &c, &t), 3);
    }
    const char *names[] = {"n1", "n2", "n4"};
    struct tnodes without;
    tnodes_from(&without, names, 3);
    struct ds_child c = tchild("k");
    expect_fail(p, &c, &without, "pinned node n3 is not up");
    char err[128];
    assert_int_equal(placement_place(p, &c, NULL, 0, err, sizeof err), -1);
    assert_string_equal(err, "pinned node n3 is not up");
    placement_free(p);
    tnodes_free(&t);
    tnodes_free(&without);
}

static void test_labels(void **unused)
{
    (void)unused;
    struct tnodes t;
    zoned(&t);
    struct placement *p = tload(pinned_so, "label=zone=eu");
    const int eu[3] = {1, 2, 4};
    size_t used[6] = {0};
    for (size_t i = 0; i < 3000; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%zu", i);
        struct ds_child c = tchild(key);
        int r = tplace(p, &c, &t);
        assert_int_equal(r, hrw(&t, eu, 3, key));
        used[r]++;
    }
    for (size_t i = 0; i < 3; i++) assert_true(used[eu[i]] > 800); /* about 1000 each */

    /* Keys stick: dropping n4 moves only n4's keys. */
    const char *names[] = {"n0", "n1", "n2", "n3", "n5"};
    struct tnodes less;
    tnodes_from(&less, names, 5);
    for (size_t i = 0; i < 5; i++) {
        less.nodes[i].labels = t.nodes[tnodes_find(&t, names[i])].labels;
        less.nodes[i].n_labels = t.nodes[tnodes_find(&t, names[i])].n_labels;
    }
    for (size_t i = 0; i < 3000; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%zu", i);
        struct ds_child c = tchild(key);
        int before = tplace(p, &c, &t), after = tplace(p, &c, &less);
        if (before != 4) assert_string_equal(less.nodes[after].name, t.nodes[before].name);
    }
    placement_free(p);

    /* Several labels: all must match. */
    p = tload(pinned_so, "label=zone=eu,label=disk=ssd");
    struct ds_child c = tchild("any");
    assert_int_equal(tplace(p, &c, &t), 2);
    const char *hdd_names[] = {"n1", "n4"};
    struct tnodes hdd;
    tnodes_from(&hdd, hdd_names, 2);
    hdd.nodes[0].labels = hdd.nodes[1].labels = EU;
    hdd.nodes[0].n_labels = hdd.nodes[1].n_labels = 2;
    expect_fail(p, &c, &hdd, "no up node has labels zone=eu, disk=ssd");
    tnodes_free(&hdd);
    placement_free(p);
    p = tload(pinned_so, "label=zone=asia");
    expect_fail(p, &c, &t, "no up node has label zone=asia");
    placement_free(p);
    tnodes_free(&less);
    tnodes_free(&t);
}

/* label=KEY: the child's own value of KEY chooses. */
static void test_child_labels(void **unused)
{
    (void)unused;
    struct tnodes t;
    zoned(&t);
    struct placement *p = tload(pinned_so, "label=zone");
    const struct ds_label want_us[] = {{"team", "x"}, {"zone", "us"}};
    const int us[2] = {0, 5};
    for (size_t i = 0; i < 200; i++) {
        char key[16];
        snprintf(key, sizeof key, "k%zu", i);
        struct ds_child c = tchild(key);
        c.labels = want_us;
        c.n_labels = 2;
        assert_int_equal(tplace(p, &c, &t), hrw(&t, us, 2, key));
    }
    const struct ds_label want_mars[] = {{"zone", "mars"}};
    struct ds_child c = tchild("k");
    c.labels = want_mars;
    c.n_labels = 1;
    expect_fail(p, &c, &t, "no up node has label zone=mars");
    c.labels = NULL;
    c.n_labels = 0;
    c.name = "worker-7";
    expect_fail(p, &c, &t,
                "child worker-7 has no label zone (option label=zone pins to the child's own "
                "value)");
    placement_free(p);

    /* A fixed label and the child's own together. */
    p = tload(pinned_so, "label=disk=ssd,label=zone");
    const struct ds_label want_eu[] = {{"zone", "eu"}};
    c = tchild("k");
    c.labels = want_eu;
    c.n_labels = 1;
    assert_int_equal(tplace(p, &c, &t), 2);
    placement_free(p);
    tnodes_free(&t);
}

/* fallback=hash_ring (and any): with no acceptable node up, the child goes where
 * hash_ring with its defaults would put it. */
static void test_fallback(void **unused)
{
    (void)unused;
    struct tnodes t;
    zoned(&t);
    struct placement *ring = tload(hash_ring_so, "");
    static const char *const opts[] = {"node=gone,fallback=hash_ring", "label=zone=asia,fallback=any"};
    for (size_t o = 0; o < 2; o++) {
        struct placement *p = tload(pinned_so, opts[o]);
        size_t used[6] = {0};
        for (size_t i = 0; i < 600; i++) {
            char key[16];
            snprintf(key, sizeof key, "k%zu", i);
            struct ds_child c = tchild(key);
            int r = tplace(p, &c, &t);
            assert_int_equal(r, tplace(ring, &c, &t));
            used[r]++;
        }
        for (size_t i = 0; i < 6; i++) assert_true(used[i] > 0);
        /* ...and no node at all is still a failure. */
        char err[128];
        struct ds_child c = tchild("k");
        assert_int_equal(placement_place(p, &c, NULL, 0, err, sizeof err), -1);
        placement_free(p);
    }
    /* An acceptable node up wins over the fallback. */
    struct placement *p = tload(pinned_so, "node=n3,fallback=hash_ring");
    struct ds_child c = tchild("k");
    assert_int_equal(tplace(p, &c, &t), 3);
    placement_free(p);
    /* fallback=none is the default's behaviour. */
    p = tload(pinned_so, "node=gone,fallback=none");
    expect_fail(p, &c, &t, "pinned node gone is not up");
    placement_free(p);
    placement_free(ring);
    tnodes_free(&t);
}

static void test_should_move(void **unused)
{
    (void)unused;
    struct tnodes t, no_eu;
    zoned(&t);
    const char *names[] = {"n0", "n3", "n5"};
    tnodes_from(&no_eu, names, 3);
    no_eu.nodes[0].labels = US;
    no_eu.nodes[0].n_labels = 2;
    no_eu.nodes[2].labels = US;
    no_eu.nodes[2].n_labels = 2;

    struct placement *p = tload(pinned_so, "label=zone=eu,fallback=hash_ring");
    struct ds_child c = tchild("k1");
    int to = -9;
    /* On an acceptable node: stays, even one the hash would not pick. */
    for (int cur = 1; cur <= 4; cur += cur == 2 ? 2 : 1)
        assert_int_equal(placement_should_move(p, &c, cur, t.nodes, t.n, &to), 0);
    assert_int_equal(to, -9);
    /* On a fallback node while an acceptable one is up: goes back. */
    const int eu[3] = {1, 2, 4};
    assert_int_equal(placement_should_move(p, &c, 3, t.nodes, t.n, &to), 1);
    assert_int_equal(to, hrw(&t, eu, 3, "k1"));
    /* On a fallback node and still nothing acceptable: stays. */
    to = -9;
    assert_int_equal(placement_should_move(p, &c, 1, no_eu.nodes, no_eu.n, &to), 0);
    assert_int_equal(to, -9);
    /* Its node gone, nothing acceptable: the fallback places it. */
    struct placement *ring = tload(hash_ring_so, "");
    assert_int_equal(placement_should_move(p, &c, -1, no_eu.nodes, no_eu.n, &to), 1);
    assert_int_equal(to, tplace(ring, &c, &no_eu));
    placement_free(ring);
    placement_free(p);

    /* Without a fallback a child whose node is gone has nowhere to go. */
    p = tload(pinned_so, "label=zone=eu");
    to = -9;
    assert_int_equal(placement_should_move(p, &c, -1, no_eu.nodes, no_eu.n, &to), 0);
    assert_int_equal(placement_should_move(p, &c, 0, no_eu.nodes, no_eu.n, &to), 0);
    assert_int_equal(to, -9);
    assert_int_equal(placement_should_move(p, &c, -1, t.nodes, t.n, &to), 1);
    assert_int_equal(to, hrw(&t, eu, 3, "k1"));
    placement_free(p);
    tnodes_free(&t);
    tnodes_free(&no_eu);
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: %s pinned.so hash_ring.so\n", argv[0]);
        return 2;
    }
    pinned_so = argv[1];
    hash_ring_so = argv[2];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_node),     cmocka_unit_test(test_labels),      cmocka_unit_test(test_child_labels),
        cmocka_unit_test(test_fallback), cmocka_unit_test(test_should_move),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* placement_load and the checked calls (sidecar/placement.c): built-ins by name, paths,
 * and one exact message for each way loading can fail; indexes out of range refused.
 *
 * argv: hash_ring.so no_symbol.so bad_abi.so null_place.so short_table.so scripted.so
 * (the built-ins' directory is hash_ring.so's). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sidecar/placement.h"
#include "tests/strategies/testutil.h"

enum { HASH_RING = 1, NO_SYMBOL, BAD_ABI, NULL_PLACE, SHORT_TABLE, SCRIPTED, N_ARGS };

static char **args;
static char builtin_dir[1024];

/* Loading must fail with exactly this message. */
static void expect_error(const char *strategy, const char *options, const char *dir, const char *want)
{
    char err[1024];
    memset(err, 'x', sizeof err);
    struct placement *p = placement_load(strategy, options, dir, err, sizeof err);
    if (p) {
        placement_free(p);
        fail_msg("%s \"%s\" loaded; want: %s", strategy, options, want);
    }
    if (strcmp(err, want) != 0) fail_msg("%s \"%s\":\n got: %s\nwant: %s", strategy, options, err, want);
}

/* Loading must fail with a message starting with prefix and containing needle. */
static void expect_error_like(const char *strategy, const char *dir, const char *prefix, const char *needle)
{
    char err[1024];
    struct placement *p = placement_load(strategy, "", dir, err, sizeof err);
    if (p) {
        placement_free(p);
        fail_msg("%s loaded", strategy);
    }
    print_message("%s: %s\n", strategy, err);
    if (strncmp(err, prefix, strlen(prefix)) != 0 || !strstr(err, needle))
        fail_msg("got: %s\nwant: %s...%s...", err, prefix, needle);
}

static void test_builtins_by_name(void **unused)
{
    (void)unused;
    static const char *const names[] = {"hash_ring", "least_loaded", "pinned"};
    static const char *const options[] = {"vnodes=10", "weighted=true", "node=a@h"};
    for (size_t i = 0; i < 3; i++) {
        char err[512], want[1100];
        struct placement *p = placement_load(names[i], options[i], builtin_dir, err, sizeof err);
        if (!p) fail_msg("%s: %s", names[i], err);
        snprintf(want, sizeof want, "%s/%s.so", builtin_dir, names[i]);
        assert_string_equal(placement_path(p), want);
        assert_string_equal(placement_name(p), names[i]);
        placement_free(p);
    }
    /* A trailing slash on the directory is fine. */
    char dir[1100], err[512], want[1100];
    snprintf(dir, sizeof dir, "%s/", builtin_dir);
    struct placement *p = placement_load("hash_ring", NULL, dir, err, sizeof err);
    if (!p) fail_msg("%s", err);
    snprintf(want, sizeof want, "%s/hash_ring.so", builtin_dir);
    assert_string_equal(placement_path(p), want);
    placement_free(p);
    /* A value with '/' is a path: the directory is not used. */
    p = placement_load(args[HASH_RING], "", "/nonexistent", err, sizeof err);
    if (!p) fail_msg("%s", err);
    assert_string_equal(placement_path(p), args[HASH_RING]);
    assert_string_equal(placement_name(p), "hash_ring");
    placement_free(p);
}

static void test_missing_file(void **unused)
{
    (void)unused;
    expect_error_like("/nonexistent/dir/x.so", builtin_dir,
                      "strategy /nonexistent/dir/x.so: cannot load: /nonexistent/dir/x.so: ", "No such file");
    char prefix[1200];
    snprintf(prefix, sizeof prefix, "strategy nosuch (%s/nosuch.so): cannot load: ", builtin_dir);
    expect_error_like("nosuch", builtin_dir, prefix, "nosuch.so");

    /* A file that is not a shared object at all. */
    char path[1024];
    snprintf(path, sizeof path, "%s/garbage.so", ttmpdir());
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs("this is not an ELF file\n", f) >= 0);
    assert_int_equal(fclose(f), 0);
    snprintf(prefix, sizeof prefix, "strategy %s: cannot load: ", path);
    expect_error_like(path, builtin_dir, prefix, path);
    remove(path);
}

static void test_bad_objects(void **unused)
{
    (void)unused;
    char want[2048];
    snprintf(want, sizeof want, "strategy %s: no symbol distsup_strategy (is it a distsup strategy?)", args[NO_SYMBOL]);
    expect_error(args[NO_SYMBOL], "", builtin_dir, want);

    snprintf(want, sizeof want, "strategy %s: ABI version 7, this distsupd speaks 1", args[BAD_ABI]);
    expect_error(args[BAD_ABI], "", builtin_dir, want);

    snprintf(want, sizeof want, "strategy %s: required function place is NULL", args[NULL_PLACE]);
    expect_error(args[NULL_PLACE], "", builtin_dir, want);

    snprintf(want, sizeof want,
             "strategy %s: struct_size 16 is smaller than the ABI version 1 table (%zu bytes); "
             "rebuild it against strategies/strategy.h",
             args[SHORT_TABLE], sizeof(struct ds_strategy));
    expect_error(args[SHORT_TABLE], "", builtin_dir, want);
}

static void test_names_and_dirs(void **unused)
{
    (void)unused;
    expect_error("", "", builtin_dir, "strategy: empty name (give a built-in name or a path to a .so)");
    expect_error("hash_ring", "", NULL,
                 "strategy hash_ring: no directory for built-in strategies (give a path with '/')");
    expect_error("hash_ring", "", "",
                 "strategy hash_ring: no directory for built-in strategies (give a path with '/')");
    /* A NULL or zero-length err buffer is not written and does not crash. */
    assert_null(placement_load("/nonexistent/x.so", "", builtin_dir, NULL, 0));
    char one = 'z';
    assert_null(placement_load("/nonexistent/x.so", "", builtin_dir, &one, 0));
    assert_int_equal(one, 'z');
}

static void test_options_rejected(void **unused)
{
    (void)unused;
    static const struct {
        const char *strategy, *options, *reason;
    } cases[] = {
        {"hash_ring", "vnodes=0", "vnodes=0: expected an integer from 1 to 10000"},
        {"hash_ring", "vnodes=10001", "vnodes=10001: expected an integer from 1 to 10000"},
        {"hash_ring", "vnodes=12x", "vnodes=12x: expected an integer from 1 to 10000"},
        {"hash_ring", "replicas=3", "unknown option 'replicas' (hash_ring takes vnodes, epsilon)"},
        {"hash_ring", "epsilon=-1", "epsilon=-1: expected a decimal from 0 to 100.000000 with at most 6 decimals"},
        {"hash_ring", "epsilon=0.1234567",
         "epsilon=0.1234567: expected a decimal from 0 to 100.000000 with at most 6 decimals"},
        {"hash_ring", "epsilon=1e-3", "epsilon=1e-3: expected a decimal from 0 to 100.000000 with at most 6 decimals"},
        {"hash_ring", "vnodes=160,,epsilon=1", "option 2 is empty (stray ',')"},
        {"hash_ring", "vnodes", "option 'vnodes' is not key=value"},
        {"hash_ring", "=3", "option '=3' has no key"},
        {"least_loaded", "weighted=maybe", "weighted=maybe: expected true or false"},
        {"least_loaded", "vnodes=3", "unknown option 'vnodes' (least_loaded takes weighted)"},
        {"pinned", "", "pinned needs node=NAME or label=KEY=VALUE"},
        {"pinned", "node=a,label=zone=eu", "give node= or label=, not both"},
        {"pinned", "node=a,node=b", "node= given twice"},
        {"pinned", "node=", "node= needs a node name"},
        {"pinned", "label==eu", "label==eu: expected label=KEY=VALUE or label=KEY"},
        {"pinned", "label=zone=", "label=zone=: expected label=KEY=VALUE or label=KEY"},
        {"pinned", "node=a,fallback=random", "fallback=random: expected none, hash_ring or any"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char want[2048];
        snprintf(want, sizeof want, "strategy %s (%s/%s.so): options rejected: %s", cases[i].strategy, builtin_dir,
                 cases[i].strategy, cases[i].reason);
        expect_error(cases[i].strategy, cases[i].options, builtin_dir, want);
    }
    /* Accepted spellings, blanks included. */
    static const struct {
        const char *strategy, *options;
    } ok[] = {
        {"hash_ring", " vnodes = 160 , epsilon = 0.25 "},
        {"hash_ring", "epsilon=1"},
        {"hash_ring", "epsilon=.5"},
        {"hash_ring", "   "},
        {"least_loaded", "weighted=TRUE"},
        {"least_loaded", "weighted=0"},
        {"pinned", "label=zone=eu,label=disk=ssd,fallback=any"},
        {"pinned", "label=zone,fallback=none"},
    };
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++) {
        char err[512];
        struct placement *p = placement_load(ok[i].strategy, ok[i].options, builtin_dir, err, sizeof err);
        if (!p) fail_msg("%s \"%s\": %s", ok[i].strategy, ok[i].options, err);
        placement_free(p);
    }

    /* The strategy's own reason, or a note that it gave none. */
    char want[2048];
    snprintf(want, sizeof want, "strategy %s: options rejected: scripted: unknown option 'bogus'", args[SCRIPTED]);
    expect_error(args[SCRIPTED], "bogus", builtin_dir, want);
    snprintf(want, sizeof want, "strategy %s: options rejected: (no reason given)", args[SCRIPTED]);
    expect_error(args[SCRIPTED], "silent", builtin_dir, want);
}

static struct placement *scripted(int index)
{
    char options[32], err[512];
    snprintf(options, sizeof options, "index=%d", index);
    struct placement *p = placement_load(args[SCRIPTED], options, builtin_dir, err, sizeof err);
    if (!p) fail_msg("%s", err);
    return p;
}

static void test_answers_checked(void **unused)
{
    (void)unused;
    struct tnodes t;
    tnodes_make(&t, 3, 1, "n%zu");
    struct ds_child c = tchild("k");
    char err[256];

    /* A table larger than version 1's is accepted; no name: named after its file. */
    struct placement *p = scripted(2);
    assert_string_equal(placement_name(p), "scripted");
    assert_int_equal(placement_place(p, &c, t.nodes, t.n, err, sizeof err), 2);
    placement_free(p);

    p = scripted(3);
    assert_int_equal(placement_place(p, &c, t.nodes, t.n, err, sizeof err), -1);
    assert_string_equal(err, "strategy scripted returned node index 3, not in 0..2: refused");
    assert_int_equal(placement_place(p, &c, t.nodes, t.n, NULL, 0), -1); /* no buffer: fine */
    int to = 42;
    assert_int_equal(placement_should_move(p, &c, 0, t.nodes, t.n, &to), 0);
    assert_int_equal(to, 42);
    placement_free(p);

    p = scripted(-3);
    assert_int_equal(placement_place(p, &c, t.nodes, t.n, err, sizeof err), -1);
    assert_string_equal(err, "strategy scripted returned node index -3, not in 0..2: refused");
    assert_int_equal(placement_should_move(p, &c, 0, t.nodes, t.n, &to), 0);
    assert_int_equal(to, 42);
    placement_free(p);

    p = scripted(0);
    assert_int_equal(placement_place(p, &c, NULL, 0, err, sizeof err), -1);
    assert_string_equal(err, "strategy scripted returned node index 0 for an empty node list: refused");
    /* should_move to the node it is on is no move; to another one is. */
    assert_int_equal(placement_should_move(p, &c, 0, t.nodes, t.n, &to), 0);
    assert_int_equal(placement_should_move(p, &c, 2, t.nodes, t.n, &to), 1);
    assert_int_equal(to, 0);
    assert_int_equal(placement_should_move(p, &c, -1, t.nodes, t.n, &to), 1);
    placement_free(p);

    /* -1 without a reason: the loader says which strategy found nothing. */
    p = scripted(-1);
    assert_int_equal(placement_place(p, &c, t.nodes, t.n, err, sizeof err), -1);
    assert_string_equal(err, "strategy scripted found no node");
    placement_free(p);

    /* A strategy's own reason passes through untouched. */
    p = tload(args[HASH_RING], "");
    assert_int_equal(placement_place(p, &c, NULL, 0, err, sizeof err), -1);
    assert_string_equal(err, "no node is up");
    placement_nodes_changed(p, t.nodes, t.n); /* has the hook */
    placement_free(p);
    p = tload("least_loaded", "");
    placement_nodes_changed(p, t.nodes, t.n); /* has none: a no-op */
    assert_int_not_equal(placement_place(p, &c, t.nodes, t.n, err, sizeof err), -1);
    placement_free(p);
    tnodes_free(&t);
}

int main(int argc, char **argv)
{
    if (argc != N_ARGS) {
        fprintf(stderr,
                "usage: %s hash_ring.so no_symbol.so bad_abi.so null_place.so short_table.so "
                "scripted.so\n",
                argv[0]);
        return 2;
    }
    args = argv;
    const char *slash = strrchr(argv[HASH_RING], '/');
    if (!slash) {
        fprintf(stderr, "hash_ring.so must be named with a directory\n");
        return 2;
    }
    snprintf(builtin_dir, sizeof builtin_dir, "%.*s", (int)(slash - argv[HASH_RING]), argv[HASH_RING]);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_builtins_by_name), cmocka_unit_test(test_missing_file),
        cmocka_unit_test(test_bad_objects),      cmocka_unit_test(test_names_and_dirs),
        cmocka_unit_test(test_options_rejected), cmocka_unit_test(test_answers_checked),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

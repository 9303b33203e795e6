/* Unit tests of child spec validation (sidecar/spec.h): names, argv, env, the size
 * limits, shutdown bounds, init size, and spec_shutdown_ms. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sidecar/spec.h"

#define MAX_INIT 4096

static char err[512];

/* A spec that is valid as it stands; tests break one thing at a time. */
struct fixture {
    Distsup__V1__ChildSpec spec;
    char *argv[SPEC_ARGV_MAX + 2];
    Distsup__V1__ChildSpec__EnvEntry env_e[SPEC_ENV_MAX + 2];
    Distsup__V1__ChildSpec__EnvEntry *env[SPEC_ENV_MAX + 2];
    Distsup__V1__ChildSpec__LabelsEntry lab_e[2];
    Distsup__V1__ChildSpec__LabelsEntry *lab[2];
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof *f);
    if (!f) return -1;
    distsup__v1__child_spec__init(&f->spec);
    f->spec.name = "worker-1";
    f->argv[0] = "/bin/true";
    f->argv[1] = "--flag";
    f->spec.argv = f->argv;
    f->spec.n_argv = 2;
    for (size_t i = 0; i < SPEC_ENV_MAX + 2; i++) {
        distsup__v1__child_spec__env_entry__init(&f->env_e[i]);
        f->env_e[i].key = "K";
        f->env_e[i].value = "v";
        f->env[i] = &f->env_e[i];
    }
    f->env_e[0].key = "MODE";
    f->env_e[0].value = "a=b c\td"; /* values may hold anything */
    f->spec.env = f->env;
    f->spec.n_env = 1;
    for (size_t i = 0; i < 2; i++) {
        distsup__v1__child_spec__labels_entry__init(&f->lab_e[i]);
        f->lab_e[i].key = "team";
        f->lab_e[i].value = "";
        f->lab[i] = &f->lab_e[i];
    }
    f->spec.labels = f->lab;
    f->spec.n_labels = 1;
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    free(*state);
    return 0;
}

static int validate(struct fixture *f)
{
    err[0] = 0;
    int rc = spec_validate(&f->spec, MAX_INIT, err, sizeof err);
    if (rc == 0) assert_string_equal(err, "");
    else assert_true(err[0] != 0); /* a refusal always says why */
    return rc;
}

static void assert_refused(struct fixture *f, const char *why)
{
    assert_int_equal(validate(f), -1);
    if (!strstr(err, why)) fail_msg("message '%s' does not mention '%s'", err, why);
}

static char *repeat(char c, size_t n)
{
    char *s = malloc(n + 1);
    assert_non_null(s);
    memset(s, c, n);
    s[n] = 0;
    return s;
}

/* ---------- names ---------- */

static void test_name_check(void **state)
{
    (void)state;
    assert_int_equal(spec_name_check("child name", "a", err, sizeof err), 0);
    assert_int_equal(spec_name_check("child name", "node1@host.example:50051/x-y_z", err, sizeof err), 0);
    assert_int_equal(spec_name_check("child name", "caf\xc3\xa9", err, sizeof err), 0); /* UTF-8 is fine */

    assert_int_equal(spec_name_check("child name", "", err, sizeof err), -1);
    assert_string_equal(err, "child name is empty");

    char *max = repeat('n', SPEC_NAME_MAX);
    assert_int_equal(spec_name_check("child name", max, err, sizeof err), 0);
    char *over = repeat('n', SPEC_NAME_MAX + 1);
    assert_int_equal(spec_name_check("child name", over, err, sizeof err), -1);
    assert_non_null(strstr(err, "201 bytes"));
    assert_non_null(strstr(err, "200"));
    free(max);
    free(over);

    static const char *const bad[] = {
        "has space", " lead", "trail ", "tab\there", "new\nline", "cr\r", "bell\a", "\x01", "del\x7f", "esc\x1b[0m",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        err[0] = 0;
        if (spec_name_check("child name", bad[i], err, sizeof err) != -1) fail_msg("name #%zu accepted", i);
        assert_non_null(strstr(err, "space or control character"));
    }
    /* the message points at the offending byte */
    assert_int_equal(spec_name_check("supervisor name", "ab cd", err, sizeof err), -1);
    assert_non_null(strstr(err, "supervisor name"));
    assert_non_null(strstr(err, "at byte 2"));
    /* a tiny error buffer is still NUL-terminated and nothing overflows */
    char tiny[8];
    memset(tiny, 'x', sizeof tiny);
    assert_int_equal(spec_name_check("child name", "", tiny, sizeof tiny), -1);
    assert_int_equal(strlen(tiny), sizeof tiny - 1);
}

static void test_valid_spec_passes(void **state)
{
    struct fixture *f = *state;
    assert_int_equal(validate(f), 0);
    f->spec.name = ""; /* empty: the core generates one */
    assert_int_equal(validate(f), 0);
    f->spec.restart = DISTSUP__V1__RESTART_TYPE__TEMPORARY;
    f->spec.protocol = DISTSUP__V1__PROTOCOL__NONE;
    f->spec.node = "n2@host";
    f->spec.key = "any key, even with spaces";
    f->spec.cwd = "/tmp";
    assert_int_equal(validate(f), 0);
}

static void test_spec_names(void **state)
{
    struct fixture *f = *state;
    f->spec.name = "two words";
    assert_refused(f, "child name");
    f->spec.name = "ctl\x02";
    assert_refused(f, "control character");
    char *over = repeat('a', SPEC_NAME_MAX + 1);
    f->spec.name = over;
    assert_refused(f, "limit is 200");
    over[SPEC_NAME_MAX] = 0;
    assert_int_equal(validate(f), 0);
    free(over);
    f->spec.name = "ok";
    f->spec.node = "bad node";
    assert_refused(f, "spec.node");
}

/* ---------- argv ---------- */

static void test_argv(void **state)
{
    struct fixture *f = *state;
    f->spec.n_argv = 0;
    assert_refused(f, "argv is empty");
    f->spec.n_argv = 1;
    f->argv[0] = "";
    assert_refused(f, "argv is empty");
    f->argv[0] = "prog-in-path"; /* looked up at start, not here */
    assert_int_equal(validate(f), 0);
    /* empty later arguments are fine */
    f->argv[1] = "";
    f->spec.n_argv = 2;
    assert_int_equal(validate(f), 0);

    for (size_t i = 0; i < SPEC_ARGV_MAX + 1; i++) f->argv[i] = "a";
    f->spec.n_argv = SPEC_ARGV_MAX;
    assert_int_equal(validate(f), 0);
    f->spec.n_argv = SPEC_ARGV_MAX + 1;
    assert_refused(f, "1025 entries");
}

/* ---------- env and labels ---------- */

static void test_env_keys(void **state)
{
    struct fixture *f = *state;
    static const char *const bad[] = {"", "A=B", "=", "=X", "X=", "A\nB", "\x01"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        f->env_e[0].key = (char *)bad[i];
        err[0] = 0;
        if (spec_validate(&f->spec, MAX_INIT, err, sizeof err) != -1) fail_msg("env key #%zu accepted", i);
        assert_non_null(strstr(err, "not a valid variable name"));
    }
    f->env_e[0].key = "PATH";
    f->env_e[0].value = "";
    assert_int_equal(validate(f), 0);
    /* the bad key is found wherever it is in the list */
    f->spec.n_env = 5;
    f->env_e[4].key = "LAST=1";
    assert_refused(f, "LAST=1");
    f->env_e[4].key = "LAST";
    assert_int_equal(validate(f), 0);
    /* the daemon's own names for the child are not the spec's to set */
    f->env_e[4].key = "DISTSUP_NAME";
    assert_refused(f, "'DISTSUP_NAME' is reserved");
    f->env_e[4].key = "DISTSUP";
    assert_int_equal(validate(f), 0);
    f->spec.n_env = SPEC_ENV_MAX;
    assert_int_equal(validate(f), 0);
    f->spec.n_env = SPEC_ENV_MAX + 1;
    assert_refused(f, "1025 entries");
}

static void test_labels(void **state)
{
    struct fixture *f = *state;
    f->lab_e[1].key = "";
    f->spec.n_labels = 2;
    assert_refused(f, "labels has an empty key");
    f->lab_e[1].key = "tier";
    f->lab_e[1].value = "gold with spaces";
    assert_int_equal(validate(f), 0);
}

/* ---------- size limits ---------- */

/* argv, env, cwd, labels and key count together against SPEC_TEXT_MAX. */
static void test_text_size_limit(void **state)
{
    struct fixture *f = *state;
    f->spec.n_env = 0;
    f->spec.n_labels = 0;
    /* argv counts strlen + 1 per entry: one argument of SPEC_TEXT_MAX - 1 bytes is exactly the limit */
    char *big = repeat('x', SPEC_TEXT_MAX - 1);
    f->argv[0] = big;
    f->spec.n_argv = 1;
    assert_int_equal(validate(f), 0);
    char *bigger = repeat('x', SPEC_TEXT_MAX);
    f->argv[0] = bigger;
    assert_refused(f, "65537 bytes");
    assert_non_null(strstr(err, "65536"));
    free(bigger);

    /* the same budget is shared: a 1-byte cwd on top of the full argv is too much */
    f->argv[0] = big;
    f->spec.cwd = "/";
    assert_refused(f, "spec text");
    f->spec.cwd = "";
    f->spec.key = "k";
    assert_refused(f, "spec text");
    f->spec.key = "";
    f->env_e[0].key = "K";
    f->env_e[0].value = "";
    f->spec.n_env = 1;
    assert_refused(f, "spec text");
    f->spec.n_env = 0;
    f->lab_e[0].key = "l";
    f->lab_e[0].value = "";
    f->spec.n_labels = 1;
    assert_refused(f, "spec text");
    f->spec.n_labels = 0;
    assert_int_equal(validate(f), 0);
    free(big);

    /* env alone: key + value + 2 per entry */
    f->argv[0] = "/bin/true";
    char *val = repeat('v', SPEC_TEXT_MAX - 10 - 1 - 2);
    f->env_e[0].key = "K";
    f->env_e[0].value = val;
    f->spec.n_env = 1;
    assert_int_equal(validate(f), 0); /* 10 ("/bin/true" + 1) + 1 + len + 2 = limit */
    f->spec.key = "k";
    assert_refused(f, "spec text");
    free(val);
}

static void test_shutdown_bounds(void **state)
{
    struct fixture *f = *state;
    f->spec.shutdown_ms = SPEC_SHUTDOWN_MAX_MS;
    assert_int_equal(validate(f), 0);
    f->spec.shutdown_ms = SPEC_SHUTDOWN_MAX_MS + 1;
    assert_refused(f, "shutdown_ms 3600001");
    f->spec.shutdown_ms = UINT32_MAX;
    assert_refused(f, "above the limit");
    f->spec.shutdown_ms = 0;
    f->spec.kill_immediately = 1;
    assert_int_equal(validate(f), 0);
}

static void test_init_size(void **state)
{
    struct fixture *f = *state;
    uint8_t *buf = calloc(1, MAX_INIT + 1);
    assert_non_null(buf);
    f->spec.init.data = buf;
    f->spec.init.len = MAX_INIT;
    assert_int_equal(validate(f), 0);
    f->spec.init.len = MAX_INIT + 1;
    assert_refused(f, "spec.init is 4097 bytes; the limit is 4096");
    /* the limit is the caller's: with max_init 0 only an empty init passes */
    f->spec.init.len = 1;
    assert_int_equal(spec_validate(&f->spec, 0, err, sizeof err), -1);
    f->spec.init.len = 0;
    assert_int_equal(spec_validate(&f->spec, 0, err, sizeof err), 0);
    free(buf);
}

static void test_enums_out_of_range(void **state)
{
    struct fixture *f = *state;
    f->spec.restart = (Distsup__V1__RestartType)3;
    assert_refused(f, "spec.restart 3");
    f->spec.restart = (Distsup__V1__RestartType)-1;
    assert_refused(f, "PERMANENT, TRANSIENT or TEMPORARY");
    f->spec.restart = DISTSUP__V1__RESTART_TYPE__TRANSIENT;
    f->spec.protocol = (Distsup__V1__Protocol)2;
    assert_refused(f, "spec.protocol 2");
}

/* A spec as it arrives off the wire: unpacked by protobuf-c, then validated. */
static void test_spec_from_the_wire(void **state)
{
    (void)state;
    Distsup__V1__ChildSpec s = DISTSUP__V1__CHILD_SPEC__INIT;
    char *argv[] = {"counter"};
    s.argv = argv;
    s.n_argv = 1;
    Distsup__V1__ChildSpec__EnvEntry e = DISTSUP__V1__CHILD_SPEC__ENV_ENTRY__INIT;
    e.key = "A=B";
    e.value = "1";
    Distsup__V1__ChildSpec__EnvEntry *ep = &e;
    s.env = &ep;
    s.n_env = 1;
    size_t n = distsup__v1__child_spec__get_packed_size(&s);
    uint8_t *buf = malloc(n);
    assert_non_null(buf);
    distsup__v1__child_spec__pack(&s, buf);
    Distsup__V1__ChildSpec *u = distsup__v1__child_spec__unpack(NULL, n, buf);
    assert_non_null(u);
    assert_int_equal(spec_validate(u, MAX_INIT, err, sizeof err), -1);
    assert_non_null(strstr(err, "A=B"));
    distsup__v1__child_spec__free_unpacked(u, NULL);
    /* and the fixed spec passes */
    e.key = "A";
    size_t n2 = distsup__v1__child_spec__get_packed_size(&s);
    assert_true(n2 < n);
    distsup__v1__child_spec__pack(&s, buf);
    u = distsup__v1__child_spec__unpack(NULL, n2, buf);
    assert_non_null(u);
    assert_int_equal(spec_validate(u, MAX_INIT, err, sizeof err), 0);
    distsup__v1__child_spec__free_unpacked(u, NULL);
    free(buf);
}

/* ---------- spec_shutdown_ms ---------- */

static void test_shutdown_ms(void **state)
{
    (void)state;
    Distsup__V1__ChildSpec s = DISTSUP__V1__CHILD_SPEC__INIT;
    assert_int_equal(spec_shutdown_ms(&s), SPEC_DEFAULT_SHUTDOWN_MS); /* 0 -> default */
    assert_int_equal(SPEC_DEFAULT_SHUTDOWN_MS, 5000);
    s.shutdown_ms = 1;
    assert_int_equal(spec_shutdown_ms(&s), 1);
    s.shutdown_ms = 1234;
    assert_int_equal(spec_shutdown_ms(&s), 1234);
    s.shutdown_ms = SPEC_SHUTDOWN_MAX_MS;
    assert_int_equal(spec_shutdown_ms(&s), SPEC_SHUTDOWN_MAX_MS);
    s.kill_immediately = 1; /* brutal_kill wins over any grace */
    assert_int_equal(spec_shutdown_ms(&s), 0);
    s.shutdown_ms = 0;
    assert_int_equal(spec_shutdown_ms(&s), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_name_check),
        cmocka_unit_test_setup_teardown(test_valid_spec_passes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spec_names, setup, teardown),
        cmocka_unit_test_setup_teardown(test_argv, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_keys, setup, teardown),
        cmocka_unit_test_setup_teardown(test_labels, setup, teardown),
        cmocka_unit_test_setup_teardown(test_text_size_limit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_bounds, setup, teardown),
        cmocka_unit_test_setup_teardown(test_init_size, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enums_out_of_range, setup, teardown),
        cmocka_unit_test(test_spec_from_the_wire),
        cmocka_unit_test(test_shutdown_ms),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

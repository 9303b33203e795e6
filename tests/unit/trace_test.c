/* trace_test: which W3C trace contexts the daemon carries to a child (sidecar/trace.c). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "sidecar/trace.h"

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

static int parent_ok(const char *s) { return trace_parent_valid(s, strlen(s)); }

static void test_valid_parents(void **state)
{
    (void)state;
    assert_true(parent_ok(TP));
    assert_true(parent_ok("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00"));
    assert_true(parent_ok("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-ff"));
    assert_true(parent_ok("00-00000000000000000000000000000001-0000000000000001-00"));
}

static void test_invalid_parents(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "garbage",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",  /* upper case */
        "00-00000000000000000000000000000000-00f067aa0ba902b7-01",  /* zero trace id */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",  /* zero parent id */
        "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* version ff */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1",   /* short */
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-", /* long */
        "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",  /* separator */
        "00-4bf92f3577b34da6a3ce929d0e0e4736_00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7_01",
        "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01", /* not hex */
        "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0z",
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        if (parent_ok(bad[i])) fail_msg("accepted '%s'", bad[i]);
    }
    assert_false(trace_parent_valid(NULL, 55));
    /* a NUL inside: the length is what counts */
    char with_nul[56];
    memcpy(with_nul, TP, 56);
    with_nul[10] = 0;
    assert_false(trace_parent_valid(with_nul, 55));
}

static void test_tracestate(void **state)
{
    (void)state;
    assert_true(trace_state_valid("congo=t61rcWkgMzE", 17));
    assert_true(trace_state_valid("a=1, b=2", 8));
    assert_false(trace_state_valid("", 0));
    assert_false(trace_state_valid("a=1\n", 4));
    assert_false(trace_state_valid("a=\x7f", 3));
    assert_false(trace_state_valid("a=\xc3\xa9", 4));
    char big[TRACE_STATE_MAX + 2];
    memset(big, 'a', sizeof big);
    assert_true(trace_state_valid(big, TRACE_STATE_MAX));
    assert_false(trace_state_valid(big, TRACE_STATE_MAX + 1));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_parents),
        cmocka_unit_test(test_invalid_parents),
        cmocka_unit_test(test_tracestate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

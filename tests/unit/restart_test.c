/* Unit tests of the restart-bound and backoff arithmetic (sidecar/spec.h):
 * restart_allow's sliding window and restart_backoff_ms's doubling and cap. */
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sidecar/spec.h"

/* restart_allow, asserting its answer and the count it reports. */
static void expect(struct restart_window *w, unsigned max, uint64_t period, uint64_t now, int allowed,
                   unsigned recent_want)
{
    unsigned recent = 0xdeadbeef;
    int got = restart_allow(w, max, period, now, &recent);
    if (got != allowed || recent != recent_want)
        fail_msg("restart_allow(max %u, period %llu, now %llu) = %d with recent %u; want %d with %u", max,
                 (unsigned long long)period, (unsigned long long)now, got, recent, allowed, recent_want);
    assert_true(w->n <= RESTART_TRACK);
}

/* ---------- restart_allow ---------- */

/* OTP's default, 3 restarts in 5 s: the 4th within the window is refused. */
static void test_three_in_five_seconds(void **state)
{
    (void)state;
    struct restart_window w = {0};
    expect(&w, 3, 5000, 1000, 1, 0);
    expect(&w, 3, 5000, 1001, 1, 1);
    expect(&w, 3, 5000, 1002, 1, 2);
    assert_int_equal(w.n, 3);
    expect(&w, 3, 5000, 1003, 0, 3);
    /* a refusal records nothing: asking again gives the same answer */
    assert_int_equal(w.n, 3);
    expect(&w, 3, 5000, 1004, 0, 3);
    assert_int_equal(w.n, 3);
    assert_int_equal(w.at_ms[0], 1000);
    assert_int_equal(w.at_ms[2], 1002);
    restart_window_free(&w);
}

/* The window is (now - period, now]: a restart exactly period old no longer counts. */
static void test_exactly_at_the_boundary(void **state)
{
    (void)state;
    struct restart_window w = {0};
    expect(&w, 3, 5000, 1000, 1, 0);
    expect(&w, 3, 5000, 2000, 1, 1);
    expect(&w, 3, 5000, 3000, 1, 2);
    expect(&w, 3, 5000, 5999, 0, 3); /* 1000 is 4999 ms old: still in */
    expect(&w, 3, 5000, 6000, 1, 2); /* 1000 is exactly 5000 ms old: out */
    assert_int_equal(w.n, 3);
    assert_int_equal(w.at_ms[0], 2000);
    assert_int_equal(w.at_ms[1], 3000);
    assert_int_equal(w.at_ms[2], 6000);
    expect(&w, 3, 5000, 6999, 0, 3);
    expect(&w, 3, 5000, 7000, 1, 2);
    restart_window_free(&w);
}

static void test_old_restarts_are_forgotten(void **state)
{
    (void)state;
    struct restart_window w = {0};
    for (uint64_t t = 0; t < 3; t++) expect(&w, 3, 5000, 100 + t, 1, (unsigned)t);
    expect(&w, 3, 5000, 200, 0, 3);
    /* long after: all three are gone and the window starts over */
    expect(&w, 3, 5000, 1000000, 1, 0);
    assert_int_equal(w.n, 1);
    assert_int_equal(w.at_ms[0], 1000000);
    /* partly forgotten: only those still inside count, oldest first is kept */
    struct restart_window v = {0};
    expect(&v, 5, 1000, 0, 1, 0);
    expect(&v, 5, 1000, 400, 1, 1);
    expect(&v, 5, 1000, 800, 1, 2);
    expect(&v, 5, 1000, 1200, 1, 2); /* 0 fell out */
    assert_int_equal(v.n, 3);
    assert_int_equal(v.at_ms[0], 400);
    assert_int_equal(v.at_ms[1], 800);
    assert_int_equal(v.at_ms[2], 1200);
    restart_window_free(&w);
    restart_window_free(&v);
}

/* A flapping child restarted every 2 s with a bound of 3 in 5 s never reaches it. */
static void test_steady_rate_below_the_bound(void **state)
{
    (void)state;
    struct restart_window w = {0};
    for (int i = 0; i < 1000; i++) {
        unsigned recent;
        assert_int_equal(restart_allow(&w, 3, 5000, 10000 + (uint64_t)i * 2000, &recent), 1);
        assert_true(recent <= 2);
        assert_true(w.n <= 3);
    }
    /* the window now holds T-4000, T-2000 and T: one more right away is refused,
     * and allowed again once T-4000 is 5 s old */
    const uint64_t T = 10000 + 999 * 2000;
    expect(&w, 3, 5000, T + 1, 0, 3);
    expect(&w, 3, 5000, T + 999, 0, 3);
    expect(&w, 3, 5000, T + 1000, 1, 2);
    restart_window_free(&w);
}

static void test_max_restarts_zero_never_restarts(void **state)
{
    (void)state;
    struct restart_window w = {0};
    for (uint64_t t = 0; t < 10; t++) expect(&w, 0, 5000, t * 100000, 0, 0);
    assert_int_equal(w.n, 0);
    restart_window_free(&w);
}

static void test_max_restarts_one(void **state)
{
    (void)state;
    struct restart_window w = {0};
    expect(&w, 1, 5000, 0, 1, 0);
    expect(&w, 1, 5000, 4999, 0, 1);
    expect(&w, 1, 5000, 5000, 1, 0);
    restart_window_free(&w);
}

/* period 0: nothing stays in the window, so any bound above 0 is never reached. */
static void test_period_zero(void **state)
{
    (void)state;
    struct restart_window w = {0};
    for (int i = 0; i < 10; i++) expect(&w, 1, 0, 500, 1, 0);
    assert_int_equal(w.n, 1);
    restart_window_free(&w);
}

/* A clock that steps back keeps the restarts it cannot age (never underflows). */
static void test_clock_going_back(void **state)
{
    (void)state;
    struct restart_window w = {0};
    expect(&w, 3, 5000, 100000, 1, 0);
    expect(&w, 3, 5000, 50, 1, 1); /* 100000 is "in the future": kept */
    assert_int_equal(w.n, 2);
    expect(&w, 3, 5000, 60, 1, 2);
    expect(&w, 3, 5000, 70, 0, 3);
    restart_window_free(&w);
}

/* The window tracks at most RESTART_TRACK restarts.  The config caps max_restarts at
 * 100, below it; a larger bound drops the oldest entry instead of overflowing. */
static void test_restart_track_overflow(void **state)
{
    (void)state;
    struct restart_window w = {0};
    for (unsigned i = 0; i < RESTART_TRACK; i++) expect(&w, 1000, UINT64_MAX, i, 1, i);
    assert_int_equal(w.n, RESTART_TRACK);
    assert_int_equal(w.cap, RESTART_TRACK); /* grown as restarts came, never beyond */
    for (unsigned i = RESTART_TRACK; i < 3 * RESTART_TRACK; i++) expect(&w, 1000, UINT64_MAX, i, 1, RESTART_TRACK);
    assert_int_equal(w.n, RESTART_TRACK);
    /* the newest RESTART_TRACK remain, oldest first */
    for (unsigned i = 0; i < RESTART_TRACK; i++) assert_int_equal(w.at_ms[i], 2 * RESTART_TRACK + i);

    /* a bound of exactly RESTART_TRACK is still enforced */
    struct restart_window v = {0};
    for (unsigned i = 0; i < RESTART_TRACK; i++) expect(&v, RESTART_TRACK, 1u << 20, i, 1, i);
    expect(&v, RESTART_TRACK, 1u << 20, RESTART_TRACK, 0, RESTART_TRACK);
    assert_int_equal(v.n, RESTART_TRACK);
    restart_window_free(&v);
    restart_window_free(&w);
}

/* ---------- restart_backoff_ms ---------- */

static void test_backoff_doubles_then_caps(void **state)
{
    (void)state;
    /* defaults: restart_backoff_ms 100, restart_backoff_max_ms 2000 */
    static const uint64_t want[] = {0, 100, 200, 400, 800, 1600, 2000, 2000, 2000};
    for (unsigned r = 0; r < sizeof want / sizeof want[0]; r++)
        assert_int_equal(restart_backoff_ms(r, 100, 2000), want[r]);
    /* the first restart in a window is immediate whatever the base */
    assert_int_equal(restart_backoff_ms(0, 600000, 3600000), 0);
    /* a cap that is not a doubling of the base is hit exactly */
    assert_int_equal(restart_backoff_ms(3, 300, 1000), 1000);
    assert_int_equal(restart_backoff_ms(2, 300, 1000), 600);
    /* a base above the cap is capped */
    assert_int_equal(restart_backoff_ms(1, 5000, 2000), 2000);
    /* cap 0 turns backoff off; base 0 too */
    for (unsigned r = 0; r < 200; r++) {
        assert_int_equal(restart_backoff_ms(r, 100, 0), 0);
        assert_int_equal(restart_backoff_ms(r, 0, 0), 0);
        assert_int_equal(restart_backoff_ms(r, 0, 2000), 0);
    }
}

/* Over the whole range the config accepts (restart_backoff_ms <= 600000,
 * restart_backoff_max_ms <= 3600000) and any recent: never above the cap,
 * never decreasing, never wrapping. */
static void test_backoff_large_recent_no_overflow(void **state)
{
    (void)state;
    static const uint64_t bases[] = {1, 3, 100, 999, 65536, 600000};
    static const uint64_t caps[] = {1, 2000, 60000, 3600000};
    for (size_t b = 0; b < sizeof bases / sizeof bases[0]; b++) {
        for (size_t m = 0; m < sizeof caps / sizeof caps[0]; m++) {
            uint64_t prev = 0;
            for (unsigned r = 0; r < 300; r++) {
                uint64_t d = restart_backoff_ms(r, bases[b], caps[m]);
                assert_true(d <= caps[m]);
                assert_true(d >= prev);
                if (r > 0) assert_true(d >= (bases[b] < caps[m] ? bases[b] : caps[m]));
                prev = d;
            }
            assert_int_equal(prev, caps[m]);
            /* huge recent: the loop stops at the cap (this returns at once) */
            assert_int_equal(restart_backoff_ms(UINT_MAX, bases[b], caps[m]), caps[m]);
            assert_int_equal(restart_backoff_ms(UINT_MAX - 1, bases[b], caps[m]), caps[m]);
        }
    }
    /* 2^(recent-1) * base exceeds 64 bits long before recent = 100 */
    assert_int_equal(restart_backoff_ms(100, 600000, 3600000), 3600000);
    assert_int_equal(restart_backoff_ms(64, 1, 1ull << 40), 1ull << 40);
}

/* The limits the types allow (not reachable through the config): the doubling
 * saturates at UINT64_MAX instead of wrapping past it to 0. */
static void test_backoff_extreme_values(void **state)
{
    (void)state;
    assert_int_equal(restart_backoff_ms(64, 1, UINT64_MAX), 1ull << 63);
    assert_int_equal(restart_backoff_ms(65, 1, UINT64_MAX), UINT64_MAX);
    assert_int_equal(restart_backoff_ms(100, 1, UINT64_MAX), UINT64_MAX);
    assert_int_equal(restart_backoff_ms(3, (1ull << 62) + 1, UINT64_MAX), UINT64_MAX);
    uint64_t prev = 0;
    for (unsigned r = 1; r < 200; r++) {
        uint64_t d = restart_backoff_ms(r, 3, UINT64_MAX - 1);
        assert_true(d >= prev);
        prev = d;
    }
}

/* The two together as the core uses them: restart k in a window waits
 * restart_backoff_ms(recent); past the bound there is no restart at all. */
static void test_core_sequence(void **state)
{
    (void)state;
    struct restart_window w = {0};
    uint64_t now = 50000;
    static const uint64_t delays[] = {0, 100, 200};
    for (int i = 0; i < 3; i++) {
        unsigned recent;
        assert_int_equal(restart_allow(&w, 3, 5000, now, &recent), 1);
        uint64_t d = restart_backoff_ms(recent, 100, 2000);
        assert_int_equal(d, delays[i]);
        now += d + 5; /* the child lives 5 ms after each restart */
    }
    unsigned recent;
    assert_int_equal(restart_allow(&w, 3, 5000, now, &recent), 0);
    assert_int_equal(recent, 3);
    restart_window_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_three_in_five_seconds),
        cmocka_unit_test(test_exactly_at_the_boundary),
        cmocka_unit_test(test_old_restarts_are_forgotten),
        cmocka_unit_test(test_steady_rate_below_the_bound),
        cmocka_unit_test(test_max_restarts_zero_never_restarts),
        cmocka_unit_test(test_max_restarts_one),
        cmocka_unit_test(test_period_zero),
        cmocka_unit_test(test_clock_going_back),
        cmocka_unit_test(test_restart_track_overflow),
        cmocka_unit_test(test_backoff_doubles_then_caps),
        cmocka_unit_test(test_backoff_large_recent_no_overflow),
        cmocka_unit_test(test_backoff_extreme_values),
        cmocka_unit_test(test_core_sequence),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

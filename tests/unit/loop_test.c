/* loop_test: the reactor's event loop (sidecar/loop.c): its lanes take turns, a
 * wake-up runs a bounded batch, the queue refuses what is over its bound, a closed
 * queue refuses everything, fds and the tick reach their handlers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <cmocka.h>

#include "sidecar/loop.h"

struct msg {
    struct loop_msg link; /* first */
    int id;
};

static int order[1024];
static size_t n_order;
static int ticks;

static void on_drain(void *arg, struct loop_msg *m)
{
    (void)arg;
    if (n_order < 1024) order[n_order++] = ((struct msg *)m)->id;
    free(m);
}

static struct loop *tick_loop; /* the loop whose tick stops itself after 3 */

static void on_tick(void *arg)
{
    (void)arg;
    if (++ticks == 3 && tick_loop) loop_tick_idle(tick_loop);
}

static void free_msg(struct loop_msg *m) { free(m); }

static struct loop *new_loop(size_t cap)
{
    char err[256];
    struct loop_hooks h = {.arg = NULL, .drain = on_drain, .tick = on_tick};
    struct loop *l = loop_new(cap, &h, err, sizeof err);
    assert_non_null(l);
    n_order = 0;
    ticks = 0;
    return l;
}

static int post(struct loop *l, int id, enum loop_lane lane, int must)
{
    struct msg *m = calloc(1, sizeof *m);
    assert_non_null(m);
    m->id = id;
    int rc = loop_post(l, &m->link, lane, must);
    if (rc != LOOP_POSTED) free(m);
    return rc;
}

/* Runs the loop until nothing happens within 50 ms; returns how many wake-ups ran messages. */
static int run_until_quiet(struct loop *l)
{
    int turns = 0;
    for (int i = 0; i < 10000; i++) {
        size_t before = n_order;
        int t = ticks;
        assert_int_equal(loop_run_once(l, 50), 0);
        if (n_order == before && ticks == t) break;
        turns += n_order != before;
    }
    return turns;
}

/* A flood on the cluster lane (a failover's Place messages) does not hold back a
 * client's request posted after it: the lanes take turns. */
static void test_lanes_take_turns(void **state)
{
    (void)state;
    struct loop *l = new_loop(100000);
    for (int i = 0; i < 500; i++) assert_int_equal(post(l, 1000 + i, LOOP_LANE_CLUSTER, 1), LOOP_POSTED);
    assert_int_equal(post(l, 1, LOOP_LANE_REQUEST, 0), LOOP_POSTED);
    assert_int_equal(post(l, 2, LOOP_LANE_REQUEST, 0), LOOP_POSTED);
    run_until_quiet(l);
    assert_int_equal(n_order, 502);
    size_t at1 = 0, at2 = 0;
    for (size_t i = 0; i < n_order; i++) {
        if (order[i] == 1) at1 = i;
        if (order[i] == 2) at2 = i;
    }
    assert_true(at1 <= 1); /* first or second, not after the 500 */
    assert_true(at2 <= 3);
    /* each lane in the order it was posted */
    int last = 0;
    for (size_t i = 0; i < n_order; i++)
        if (order[i] >= 1000) {
            assert_true(order[i] > last);
            last = order[i];
        }
    loop_free(l, free_msg);
}

/* One wake-up runs at most LOOP_DRAIN_BATCH messages; the rest come at the next ones. */
static void test_a_wake_up_runs_a_bounded_batch(void **state)
{
    (void)state;
    struct loop *l = new_loop(100000);
    for (int i = 0; i < 3 * LOOP_DRAIN_BATCH; i++) assert_int_equal(post(l, i, LOOP_LANE_REQUEST, 0), LOOP_POSTED);
    assert_int_equal(loop_run_once(l, 50), 0);
    assert_true(n_order >= 1 && n_order <= LOOP_DRAIN_BATCH);
    int turns = 1 + run_until_quiet(l);
    assert_int_equal(n_order, 3 * LOOP_DRAIN_BATCH);
    assert_true(turns >= 3);
    loop_free(l, free_msg);
}

static void test_bound_must_and_closed(void **state)
{
    (void)state;
    struct loop *l = new_loop(3);
    for (int i = 0; i < 3; i++) assert_int_equal(post(l, i, LOOP_LANE_REQUEST, 0), LOOP_POSTED);
    assert_int_equal(post(l, 3, LOOP_LANE_REQUEST, 0), LOOP_FULL);
    assert_int_equal(post(l, 4, LOOP_LANE_CLUSTER, 0), LOOP_FULL);
    assert_int_equal(post(l, 5, LOOP_LANE_CLUSTER, 1), LOOP_POSTED); /* news that may not be lost */
    loop_close_queue(l);                                             /* runs what waits, then refuses */
    assert_int_equal(n_order, 4);
    assert_int_equal(post(l, 6, LOOP_LANE_CLUSTER, 1), LOOP_CLOSED);
    loop_free(l, free_msg);
}

/* Messages still queued when the loop is freed go to free_msg (ASan checks the leak). */
static void test_free_with_messages(void **state)
{
    (void)state;
    struct loop *l = new_loop(10);
    assert_int_equal(post(l, 1, LOOP_LANE_REQUEST, 0), LOOP_POSTED);
    assert_int_equal(post(l, 2, LOOP_LANE_CLUSTER, 0), LOOP_POSTED);
    loop_free(l, free_msg);
    assert_int_equal(n_order, 0);
}

struct pipe_watch {
    struct loop_watch w; /* first */
    int fd, reads;
};

static void on_readable(struct loop_watch *w, uint32_t events)
{
    struct pipe_watch *p = (struct pipe_watch *)w;
    assert_true(events & EPOLLIN);
    char buf[16];
    assert_true(read(p->fd, buf, sizeof buf) > 0);
    p->reads++;
}

static void test_fds_and_tick(void **state)
{
    (void)state;
    struct loop *l = new_loop(10);
    tick_loop = l;
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    struct pipe_watch pw = {.w = {.fn = on_readable}, .fd = fds[0]};
    assert_int_equal(loop_add(l, fds[0], EPOLLIN, &pw.w), 0);
    assert_int_equal(write(fds[1], "x", 1), 1);
    assert_int_equal(loop_run_once(l, 1000), 0);
    assert_int_equal(pw.reads, 1);
    loop_arm_tick(l);
    for (int i = 0; i < 100 && ticks < 3; i++) assert_int_equal(loop_run_once(l, 1000), 0);
    assert_int_equal(ticks, 3);
    assert_int_equal(loop_run_once(l, 3 * LOOP_TICK_MS), 0); /* idle now: no 4th tick */
    assert_int_equal(ticks, 3);
    loop_close_fd(l, &pw.fd);
    assert_int_equal(pw.fd, -1);
    close(fds[1]);
    tick_loop = NULL;
    loop_free(l, NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lanes_take_turns),      cmocka_unit_test(test_a_wake_up_runs_a_bounded_batch),
        cmocka_unit_test(test_bound_must_and_closed), cmocka_unit_test(test_free_with_messages),
        cmocka_unit_test(test_fds_and_tick),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

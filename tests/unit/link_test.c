/* link_test: two real linksets (sidecar/peer/link.c) on loopback, real gRPC and real
 * handshakes.  What it checks is the end of a link: a link ended with
 * link_close_drained hands the other end every message queued before it, whichever end
 * (the dialer or the acceptor) ends it, before the other end's closed hook runs.  This
 * is what retiring a replaced peer link relies on: the last message there is an ack,
 * and a lost ack makes the other end take the link for broken and resync (failing the
 * requests in flight).  A link that was cancelled outright instead can lose what gRPC
 * had not yet handed over. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>

#include <cmocka.h>
#include <grpc/grpc.h>

#include "sidecar/identity.h"
#include "sidecar/log.h"
#include "sidecar/peer/link.h"

#define ROUNDS 60    /* links opened and ended per test, half ended by each end */
#define MESSAGES 40  /* bulk messages queued just before the end, then one control */
#define WAIT_MS 5000 /* the most any one step may take */

struct side {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    struct identity id;
    struct linkset *ls;
    int port;
    struct link *cur;           /* the link of this round, once open */
    unsigned got;               /* messages of this round */
    uint8_t seen[MESSAGES + 2]; /* which sequence numbers came */
    int closed;                 /* the closed hook ran for cur */
    unsigned got_at_close;
};

static struct side A, B;
static char dir[] = "/tmp/link_test.XXXXXX";

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void h_opened(void *arg, struct link *l)
{
    struct side *s = arg;
    s->cur = l;
}

static void h_heard(void *arg, struct link *l)
{
    (void)arg;
    (void)l;
}

static void h_message(void *arg, struct link *l, const uint8_t *d, size_t n)
{
    struct side *s = arg;
    if (l != s->cur || n != 4) return;
    uint32_t seq = (uint32_t)d[0] | (uint32_t)d[1] << 8 | (uint32_t)d[2] << 16 | (uint32_t)d[3] << 24;
    if (seq >= 1 && seq <= MESSAGES + 1 && !s->seen[seq]) {
        s->seen[seq] = 1;
        s->got++;
    }
}

static void h_closed(void *arg, struct link *l)
{
    struct side *s = arg;
    if (l != s->cur) return;
    s->closed = 1;
    s->got_at_close = s->got;
    s->cur = NULL;
}

static const struct link_hooks hooks_a = {&A, h_opened, h_heard, h_message, h_closed};
static const struct link_hooks hooks_b = {&B, h_opened, h_heard, h_message, h_closed};

/* Polls pred on s (under its lock) until it holds or WAIT_MS pass. */
static int wait_on(struct side *s, int (*pred)(struct side *))
{
    uint64_t end = now_ms() + WAIT_MS;
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int ok = pred(s);
        pthread_mutex_unlock(&s->mu);
        if (ok) return 1;
        if (now_ms() >= end) return 0;
        usleep(1000);
    }
}

static int is_open(struct side *s) { return s->cur != NULL && link_is_open(s->cur); }
static int is_closed(struct side *s) { return s->closed; }

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_true(fputs(text, f) >= 0);
    assert_int_equal(fclose(f), 0);
    assert_int_equal(chmod(path, 0600), 0);
}

static void start_side(struct side *s, const struct link_hooks *hooks, const char *key, const char *trust)
{
    char err[512];
    assert_int_equal(pthread_mutex_init(&s->mu, NULL), 0);
    assert_int_equal(pthread_cond_init(&s->cond, NULL), 0);
    if (identity_load(&s->id, key, trust, NULL, err, sizeof err) != 0) fail_msg("identity_load: %s", err);
    struct linkset_options o = {.listen = "127.0.0.1:0", .id = &s->id, .mu = &s->mu, .cond = &s->cond};
    s->ls = linkset_start(&o, hooks, &s->port, err, sizeof err);
    if (!s->ls) fail_msg("linkset_start: %s", err);
}

static int setup(void **state)
{
    (void)state;
    grpc_init();
    log_set_level(LOG_WARN);
    assert_non_null(mkdtemp(dir));
    char ka[300], kb[300], trust[300], pa[2 * HS_KEY_LEN + 1], pb[2 * HS_KEY_LEN + 1], err[512], text[300];
    snprintf(ka, sizeof ka, "%s/a.key", dir);
    snprintf(kb, sizeof kb, "%s/b.key", dir);
    snprintf(trust, sizeof trust, "%s/trusted", dir);
    if (identity_keygen(ka, 0, pa, err, sizeof err) != 0) fail_msg("keygen: %s", err);
    if (identity_keygen(kb, 0, pb, err, sizeof err) != 0) fail_msg("keygen: %s", err);
    snprintf(text, sizeof text, "%s\n%s\n", pa, pb);
    write_file(trust, text);
    start_side(&A, &hooks_a, ka, trust);
    start_side(&B, &hooks_b, kb, trust);
    return 0;
}

static void stop_side(struct side *s)
{
    linkset_stop(s->ls);
    linkset_free(s->ls);
    identity_free(&s->id);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->mu);
}

static int teardown(void **state)
{
    (void)state;
    stop_side(&A);
    stop_side(&B);
    char cmd[400];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
    grpc_shutdown();
    return 0;
}

static void reset(struct side *s)
{
    pthread_mutex_lock(&s->mu);
    s->cur = NULL;
    s->got = s->got_at_close = 0;
    s->closed = 0;
    memset(s->seen, 0, sizeof s->seen);
    pthread_mutex_unlock(&s->mu);
}

static void queue_seq(struct link *l, enum link_lane lane, uint32_t seq)
{
    uint8_t d[4] = {(uint8_t)seq, (uint8_t)(seq >> 8), (uint8_t)(seq >> 16), (uint8_t)(seq >> 24)};
    assert_int_equal(link_queue(l, lane, link_out_new(NULL, 0, d, sizeof d)), 0);
}

/* One round: A dials B; `ender` queues MESSAGES bulk messages and one control message
 * and ends the link with link_close_drained; the other side must have had them all
 * when its closed hook ran. */
static void round_trip(struct side *ender, struct side *other, int round)
{
    reset(&A);
    reset(&B);
    char addr[64];
    snprintf(addr, sizeof addr, "127.0.0.1:%d", B.port);
    pthread_mutex_lock(&A.mu);
    struct link *dialed = link_dial(A.ls, addr);
    pthread_mutex_unlock(&A.mu);
    assert_non_null(dialed);
    if (!wait_on(&A, is_open) || !wait_on(&B, is_open)) fail_msg("round %d: the link did not open", round);
    pthread_mutex_lock(&ender->mu);
    for (uint32_t i = 1; i <= MESSAGES; i++) queue_seq(ender->cur, LANE_BULK, i);
    queue_seq(ender->cur, LANE_CONTROL, MESSAGES + 1);
    link_close_drained(ender->cur, "the test ends it");
    pthread_mutex_unlock(&ender->mu);
    if (!wait_on(other, is_closed)) fail_msg("round %d: the other end never saw the link end", round);
    if (!wait_on(ender, is_closed)) fail_msg("round %d: the ending end never closed it", round);
    pthread_mutex_lock(&other->mu);
    unsigned got = other->got_at_close;
    pthread_mutex_unlock(&other->mu);
    if (got != MESSAGES + 1)
        fail_msg("round %d, ended by the %s: the other end had %u of %d messages when the link closed", round,
                 ender == &A ? "dialer" : "acceptor", got, MESSAGES + 1);
}

static void test_the_dialer_ends_a_link_and_every_message_arrives(void **state)
{
    (void)state;
    for (int i = 0; i < ROUNDS; i++) round_trip(&A, &B, i);
}

static void test_the_acceptor_ends_a_link_and_every_message_arrives(void **state)
{
    (void)state;
    for (int i = 0; i < ROUNDS; i++) round_trip(&B, &A, i);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_the_dialer_ends_a_link_and_every_message_arrives),
        cmocka_unit_test(test_the_acceptor_ends_a_link_and_every_message_arrives),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}

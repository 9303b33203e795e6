/* libdistsup against a real distsupd with real children (examples/counter).
 *
 * usage: client_test DISTSUPD COUNTER   (Bazel passes both as $(rootpath)s) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "distsup.h"
#include "tests/clients/c/daemon.h"

static const char *g_daemon_bin;
static char g_counter[PATH_MAX];
static struct test_daemon g_d;
static ds_client *g_c;

#define CHECK_OK(call, err) \
    do { \
        int rc_ = (call); \
        if (rc_ != DS_OK) fail_msg("%s -> %s: %s", #call, ds_status_name(rc_), (err).message); \
        assert_int_equal((err).code, 0); \
        assert_string_equal((err).message, ""); \
    } while (0)

#define CHECK_STATUS(call, want, err) \
    do { \
        int rc_ = (call); \
        if (rc_ != (want)) \
            fail_msg("%s -> %s (%s), wanted %s", #call, ds_status_name(rc_), (err).message, ds_status_name(want)); \
        assert_int_equal((err).code, (want)); \
        assert_true((err).message[0] != '\0'); \
    } while (0)

static void sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {}
}

/* Starts a counter child named `name` with init text. */
static void start_counter(const char *name, const char *init, ds_child **out)
{
    const char *argv[] = {g_counter};
    ds_child_spec spec = {
        .name = name,
        .argv = argv,
        .argc = 1,
        .init = (const uint8_t *)init,
        .init_len = init ? strlen(init) : 0,
        .restart = DS_RESTART_PERMANENT,
    };
    ds_error err;
    ds_child *child = NULL;
    CHECK_OK(ds_start_child(g_c, NULL, &spec, NULL, &child, &err), err);
    assert_non_null(child);
    assert_string_equal(child->name, name);
    if (out) *out = child;
    else ds_child_free(child);
}

static void stop_child(const char *name)
{
    ds_error err;
    CHECK_OK(ds_terminate_child(g_c, NULL, name, NULL, NULL, &err), err);
}

/* Calls and checks the text reply. */
static void expect_call(const char *name, const char *payload, const char *want)
{
    ds_error err;
    ds_call_result *r = NULL;
    CHECK_OK(ds_call(g_c, NULL, name, payload, strlen(payload), 0, &r, &err), err);
    assert_non_null(r);
    assert_int_equal(r->len, strlen(want));
    assert_memory_equal(r->data, want, r->len);
    assert_int_equal(r->data[r->len], 0); /* NUL after the bytes */
    assert_string_equal(r->node, "n1");
    ds_call_result_free(r);
}

/* ---- setup ------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    if (test_daemon_start(&g_d, g_daemon_bin, "n1", 20000) != 0) return -1;
    ds_connect_options o = {.timeout_ms = 10000, .wait_connected = 1};
    ds_error err;
    if (ds_connect(g_d.addr, &o, &g_c, &err) != DS_OK) {
        fprintf(stderr, "ds_connect(%s): %s\n", g_d.addr, err.message);
        test_daemon_stop(&g_d);
        return -1;
    }
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    ds_close(g_c);
    g_c = NULL;
    int st = test_daemon_stop(&g_d);
    if (st != 0) {
        fprintf(stderr, "distsupd did not stop cleanly (status %d)\n", st);
        test_daemon_dump_log(&g_d);
        return -1;
    }
    return 0;
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_connect_errors(void **state)
{
    (void)state;
    ds_error err;
    ds_client *c = (ds_client *)&err; /* must be overwritten with NULL */
    ds_connect_options o = {.timeout_ms = 300, .wait_connected = 1};
    CHECK_STATUS(ds_connect("127.0.0.1:1", &o, &c, &err), DS_UNAVAILABLE, err);
    assert_null(c);

    /* Lazy connect succeeds; the first RPC says the daemon is unreachable. */
    o.wait_connected = 0;
    CHECK_OK(ds_connect("127.0.0.1:1", &o, &c, &err), err);
    assert_string_equal(ds_client_address(c), "127.0.0.1:1");
    ds_counts k;
    CHECK_STATUS(ds_count_children(c, NULL, NULL, &k, &err), DS_UNAVAILABLE, err);
    ds_close(c);

    CHECK_STATUS(ds_connect(NULL, NULL, NULL, &err), DS_INVALID_ARGUMENT, err);
    CHECK_STATUS(ds_count_children(NULL, NULL, NULL, &k, &err), DS_INVALID_ARGUMENT, err);
    /* err may be NULL. */
    assert_int_equal(ds_whereis(g_c, NULL, "", &(ds_child *){NULL}, NULL), DS_INVALID_ARGUMENT);
}

static void test_health(void **state)
{
    (void)state;
    ds_error err;
    ds_health_status s = DS_HEALTH_UNKNOWN;
    CHECK_OK(ds_health_check(g_c, NULL, &s, &err), err);
    assert_int_equal(s, DS_HEALTH_SERVING);
    CHECK_OK(ds_health_check(g_c, "distsup.v1.Supervisor", &s, &err), err);
    assert_int_equal(s, DS_HEALTH_SERVING);
    CHECK_STATUS(ds_health_check(g_c, "no.such.Service", &s, &err), DS_NOT_FOUND, err);
    assert_string_equal(ds_health_status_name(DS_HEALTH_SERVING), "SERVING");
}

static void test_start_call_cast_send(void **state)
{
    (void)state;
    const char *argv[] = {g_counter};
    ds_kv env[] = {{"COUNTER_TEST", "yes"}};
    ds_kv labels[] = {{"team", "clients"}, {"tier", "c"}};
    ds_child_spec spec = {
        .name = "basic",
        .argv = argv,
        .argc = 1,
        .env = env,
        .n_env = 1,
        .labels = labels,
        .n_labels = 2,
        .init = (const uint8_t *)"41",
        .init_len = 2,
        .restart = DS_RESTART_TRANSIENT,
        .shutdown_ms = 2000,
    };
    ds_error err;
    ds_child *ch = NULL;
    CHECK_OK(ds_start_child(g_c, "", &spec, NULL, &ch, &err), err);
    assert_string_equal(ch->name, "basic");
    assert_string_equal(ch->supervisor, "default");
    assert_string_equal(ch->node, "n1");
    assert_true(ch->os_pid > 0);
    assert_true(ch->id[0] != '\0');
    assert_int_equal(ch->spec.argc, 1);
    assert_string_equal(ch->spec.argv[0], g_counter);
    assert_int_equal(ch->spec.restart, DS_RESTART_TRANSIENT);
    assert_int_equal(ch->spec.shutdown_ms, 2000);
    /* init and env values only when asked for (ds_client_set_spec_data) */
    assert_int_equal(ch->spec.init_len, 0);
    assert_int_equal(ch->spec.n_env, 1);
    assert_string_equal(ch->spec.env[0].key, "COUNTER_TEST");
    assert_string_equal(ch->spec.env[0].value, "");
    ds_child *full = NULL;
    ds_client_set_spec_data(g_c, 1);
    CHECK_OK(ds_whereis(g_c, "", "basic", &full, &err), err);
    ds_client_set_spec_data(g_c, 0);
    assert_int_equal(full->spec.init_len, 2);
    assert_memory_equal(full->spec.init, "41", 2);
    assert_string_equal(full->spec.env[0].value, "yes");
    ds_child_free(full);
    assert_int_equal(ch->spec.n_labels, 2);
    int found = 0;
    for (size_t i = 0; i < ch->spec.n_labels; i++)
        if (strcmp(ch->spec.labels[i].key, "tier") == 0 && strcmp(ch->spec.labels[i].value, "c") == 0) found = 1;
    assert_true(found);
    ds_child_free(ch);

    expect_call("basic", "get", "41");
    expect_call("basic", "incr", "42");
    CHECK_OK(ds_cast(g_c, NULL, "basic", "incr", 4, &err), err);
    expect_call("basic", "get", "43");
    CHECK_OK(ds_send(g_c, NULL, "basic", "incr", 4, &err), err);
    expect_call("basic", "get", "44");

    /* Binary payloads travel byte for byte, NULs included. */
    static const uint8_t bin[] = {'e', 'c', 'h', 'o', ':', 0x00, 0xff, 0x01, 0x80};
    ds_call_result *r = NULL;
    CHECK_OK(ds_call(g_c, NULL, "basic", bin, sizeof bin, 2000, &r, &err), err);
    assert_int_equal(r->len, 4);
    assert_memory_equal(r->data, bin + 5, 4);
    ds_call_result_free(r);

    /* An empty reply is a valid reply. */
    CHECK_OK(ds_call(g_c, NULL, "basic", "echo:", 5, 0, &r, &err), err);
    assert_int_equal(r->len, 0);
    assert_int_equal(r->data[0], 0);
    ds_call_result_free(r);

    /* out may be NULL when the reply is not wanted. */
    CHECK_OK(ds_call(g_c, NULL, "basic", "incr", 4, 0, NULL, &err), err);
    expect_call("basic", "get", "45");

    ds_terminated *t = NULL;
    CHECK_OK(ds_terminate_child(g_c, NULL, "basic", NULL, &t, &err), err);
    assert_string_equal(t->name, "basic");
    assert_int_equal(t->signal, 0);
    ds_terminated_free(t);
}

static void test_error_paths(void **state)
{
    (void)state;
    ds_error err;
    start_counter("dup", "0", NULL);

    /* Duplicate name: ALREADY_EXISTS, and the message says where. */
    const char *argv[] = {g_counter};
    ds_child_spec spec = {.name = "dup", .argv = argv, .argc = 1};
    ds_child *ch = (ds_child *)&err;
    CHECK_STATUS(ds_start_child(g_c, NULL, &spec, NULL, &ch, &err), DS_ALREADY_EXISTS, err);
    assert_null(ch);
    assert_non_null(strstr(err.message, "dup"));
    assert_non_null(strstr(err.message, "n1"));

    /* Unknown names. */
    CHECK_STATUS(ds_whereis(g_c, NULL, "no-such-child", &ch, &err), DS_NOT_FOUND, err);
    assert_null(ch);
    ds_call_result *r = (ds_call_result *)&err;
    CHECK_STATUS(ds_call(g_c, NULL, "no-such-child", "get", 3, 0, &r, &err), DS_NOT_FOUND, err);
    assert_null(r);
    CHECK_STATUS(ds_cast(g_c, NULL, "no-such-child", "x", 1, &err), DS_NOT_FOUND, err);
    CHECK_STATUS(ds_terminate_child(g_c, NULL, "no-such-child", NULL, NULL, &err), DS_NOT_FOUND, err);
    CHECK_STATUS(ds_whereis(g_c, "no-such-supervisor", "dup", &ch, &err), DS_NOT_FOUND, err);

    /* The child does not answer in time: DEADLINE_EXCEEDED from the daemon. */
    CHECK_STATUS(ds_call(g_c, NULL, "dup", "sleep:3000", 10, 200, &r, &err), DS_DEADLINE_EXCEEDED, err);
    assert_null(r);

    /* An error the worker replies comes back with its code and message. */
    CHECK_STATUS(ds_call(g_c, NULL, "dup", "bogus", 5, 0, &r, &err), DS_INVALID_ARGUMENT, err);
    assert_non_null(strstr(err.message, "unknown request"));

    /* A plain process: call and cast answer FAILED_PRECONDITION. */
    const char *sleep_argv[] = {"sleep", "600"};
    ds_child_spec plain = {
        .name = "plain", .argv = sleep_argv, .argc = 2, .protocol = DS_PROTOCOL_NONE, .kill_immediately = 1};
    CHECK_OK(ds_start_child(g_c, NULL, &plain, NULL, &ch, &err), err);
    assert_int_equal(ch->spec.protocol, DS_PROTOCOL_NONE);
    assert_true(ch->spec.kill_immediately);
    ds_child_free(ch);
    CHECK_STATUS(ds_call(g_c, NULL, "plain", "get", 3, 0, &r, &err), DS_FAILED_PRECONDITION, err);
    CHECK_STATUS(ds_cast(g_c, NULL, "plain", "get", 3, &err), DS_FAILED_PRECONDITION, err);
    ds_terminated *t = NULL;
    CHECK_OK(ds_terminate_child(g_c, NULL, "plain", NULL, &t, &err), err);
    assert_int_equal(t->signal, SIGKILL);
    assert_int_equal(t->exit_code, -1);
    ds_terminated_free(t);

    /* Local validation, no RPC. */
    ds_child_spec noargv = {.name = "x"};
    CHECK_STATUS(ds_start_child(g_c, NULL, &noargv, NULL, &ch, &err), DS_INVALID_ARGUMENT, err);
    CHECK_STATUS(ds_call(g_c, NULL, NULL, "x", 1, 0, &r, &err), DS_INVALID_ARGUMENT, err);
    CHECK_STATUS(ds_terminate_child(g_c, NULL, NULL, "", NULL, &err), DS_INVALID_ARGUMENT, err);

    /* The daemon still serves after all that. */
    expect_call("dup", "get", "0");
    stop_child("dup");
}

static bool has_child(const ds_child_list *l, const char *name, const ds_child **out)
{
    for (size_t i = 0; i < l->count; i++)
        if (strcmp(l->items[i].name, name) == 0) {
            if (out) *out = &l->items[i];
            return true;
        }
    return false;
}

static void test_children_count_whereis_whois(void **state)
{
    (void)state;
    ds_error err;
    ds_counts before;
    CHECK_OK(ds_count_children(g_c, NULL, NULL, &before, &err), err);
    ds_child *a = NULL, *b = NULL;
    start_counter("list-a", "1", &a);
    start_counter("list-b", "2", &b);

    ds_child_list *l = NULL;
    CHECK_OK(ds_children(g_c, NULL, NULL, &l, &err), err);
    const ds_child *la = NULL, *lb = NULL;
    assert_true(has_child(l, "list-a", &la));
    assert_true(has_child(l, "list-b", &lb));
    assert_string_equal(la->id, a->id);
    assert_string_equal(lb->node, "n1");
    assert_int_equal(la->os_pid, a->os_pid);
    assert_true(la->started_at_ms > 0);
    ds_child_list_free(l);

    /* One node's children only. */
    CHECK_OK(ds_children(g_c, NULL, "n1", &l, &err), err);
    assert_true(has_child(l, "list-a", NULL));
    ds_child_list_free(l);

    ds_counts k;
    CHECK_OK(ds_count_children(g_c, NULL, NULL, &k, &err), err);
    assert_int_equal(k.specs, before.specs + 2);
    assert_int_equal(k.active, before.active + 2);
    assert_int_equal(k.workers, before.workers + 2);
    assert_int_equal(k.supervisors, 0);

    ds_child *w = NULL;
    CHECK_OK(ds_whereis(g_c, NULL, "list-a", &w, &err), err);
    assert_string_equal(w->id, a->id);
    assert_int_equal(w->os_pid, a->os_pid);
    assert_int_equal(w->state, DS_STATE_RUNNING);
    ds_child_free(w);

    CHECK_OK(ds_whois(g_c, NULL, b->id, &w, &err), err);
    assert_string_equal(w->name, "list-b");
    ds_child_free(w);
    CHECK_STATUS(ds_whois(g_c, NULL, "n1/no-such-id", &w, &err), DS_NOT_FOUND, err);

    /* Terminate by id reports the name. */
    ds_terminated *t = NULL;
    CHECK_OK(ds_terminate_child(g_c, NULL, NULL, b->id, &t, &err), err);
    assert_string_equal(t->name, "list-b");
    ds_terminated_free(t);
    stop_child("list-a");

    CHECK_STATUS(ds_whereis(g_c, NULL, "list-a", &w, &err), DS_NOT_FOUND, err);
    CHECK_OK(ds_children(g_c, NULL, NULL, &l, &err), err);
    assert_false(has_child(l, "list-a", NULL));
    assert_false(has_child(l, "list-b", NULL));
    ds_child_list_free(l);
    CHECK_OK(ds_count_children(g_c, NULL, NULL, &k, &err), err);
    assert_int_equal(k.specs, before.specs);
    ds_child_free(a);
    ds_child_free(b);
}

static void test_cluster(void **state)
{
    (void)state;
    ds_error err;
    ds_node_list *nodes = NULL;
    CHECK_OK(ds_nodes(g_c, NULL, &nodes, &err), err);
    assert_int_equal(nodes->count, 1);
    assert_string_equal(nodes->items[0].name, "n1");
    assert_true(nodes->items[0].up);
    assert_true(nodes->items[0].self);
    ds_node_list_free(nodes);

    char *node = NULL;
    CHECK_OK(ds_node_for(g_c, NULL, "some-key", &node, &err), err);
    assert_string_equal(node, "n1");
    ds_free(node);

    int mine = 0;
    CHECK_OK(ds_mine(g_c, NULL, "some-key", &mine, &node, &err), err);
    assert_int_equal(mine, 1);
    assert_string_equal(node, "n1");
    ds_free(node);
    CHECK_OK(ds_mine(g_c, NULL, "other", &mine, NULL, &err), err);
    assert_int_equal(mine, 1);
}

/* ---- watch ------------------------------------------------------------------------ */

#define MAX_EV 32
struct watcher {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool open;
    const char *name;    /* only events of this child are recorded */
    ds_event_kind until; /* stop after this kind for `name` */
    size_t n;
    ds_event_kind kinds[MAX_EV];
    uint64_t seqs[MAX_EV];
    int32_t pids[MAX_EV];
    int32_t exit_codes[MAX_EV];
    char ids[MAX_EV][64];
    ds_watch_options opts;
    int rc;
    ds_error err;
};

static void w_open(void *arg)
{
    struct watcher *w = arg;
    pthread_mutex_lock(&w->mu);
    w->open = true;
    pthread_cond_broadcast(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

static int w_event(void *arg, const ds_event *e)
{
    struct watcher *w = arg;
    if (strcmp(e->name, w->name) != 0) return 0;
    pthread_mutex_lock(&w->mu);
    int stop = 0;
    if (w->n < MAX_EV) {
        w->kinds[w->n] = e->kind;
        w->seqs[w->n] = e->seq;
        w->pids[w->n] = e->os_pid;
        w->exit_codes[w->n] = e->exit_code;
        snprintf(w->ids[w->n], sizeof w->ids[0], "%s", e->id);
        w->n++;
    }
    if (e->kind == w->until || w->n == MAX_EV) stop = 1;
    pthread_mutex_unlock(&w->mu);
    return stop;
}

static void *w_thread(void *arg)
{
    struct watcher *w = arg;
    w->rc = ds_watch(g_c, &w->opts, w_event, w, &w->err);
    return NULL;
}

static void watcher_init(struct watcher *w, const char *name, ds_event_kind until)
{
    memset(w, 0, sizeof *w);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->name = name;
    w->until = until;
    w->opts.on_open = w_open;
    w->opts.timeout_ms = 20000; /* bounds the test if events never come */
}

static void watcher_wait_open(struct watcher *w)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 10;
    pthread_mutex_lock(&w->mu);
    while (!w->open) {
        if (pthread_cond_timedwait(&w->cv, &w->mu, &ts) != 0) break;
    }
    bool open = w->open;
    pthread_mutex_unlock(&w->mu);
    assert_true(open);
}

static void watcher_destroy(struct watcher *w)
{
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cv);
}

static void test_watch_events(void **state)
{
    (void)state;
    static struct watcher w; /* static: the thread may outlive a failed assertion */
    watcher_init(&w, "watched", DS_EVENT_PROCESS_STOP);
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, w_thread, &w), 0);
    watcher_wait_open(&w);

    ds_child *ch = NULL;
    start_counter("watched", "0", &ch);
    stop_child("watched");
    assert_int_equal(pthread_join(th, NULL), 0);
    if (w.rc != DS_OK) fail_msg("ds_watch: %s: %s", ds_status_name(w.rc), w.err.message);

    assert_true(w.n >= 2);
    assert_int_equal(w.kinds[0], DS_EVENT_PROCESS_START);
    assert_int_equal(w.pids[0], ch->os_pid);
    assert_string_equal(w.ids[0], ch->id);
    assert_int_equal(w.kinds[w.n - 1], DS_EVENT_PROCESS_STOP);
    for (size_t i = 1; i < w.n; i++) assert_true(w.seqs[i] > w.seqs[i - 1]);
    ds_child_free(ch);
    watcher_destroy(&w);
}

static void test_watch_kinds_filter_and_restart(void **state)
{
    (void)state;
    /* Only PROCESS_RESTART and PROCESS_STOP: the start events must not arrive. */
    static struct watcher w; /* static: the thread may outlive a failed assertion */
    watcher_init(&w, "crashy", DS_EVENT_PROCESS_STOP);
    ds_event_kind kinds[] = {DS_EVENT_PROCESS_RESTART, DS_EVENT_PROCESS_STOP};
    w.opts.kinds = kinds;
    w.opts.n_kinds = 2;
    w.opts.supervisor = "*";
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, w_thread, &w), 0);
    watcher_wait_open(&w);

    start_counter("crashy", "7", NULL);
    ds_error err;
    ds_call_result *r = NULL;
    /* The child exits while the call waits: UNAVAILABLE. */
    CHECK_STATUS(ds_call(g_c, NULL, "crashy", "crash", 5, 0, &r, &err), DS_UNAVAILABLE, err);

    /* It is restarted (PERMANENT) with its init again. */
    ds_child *ch = NULL;
    int restarts = 0;
    for (int i = 0; i < 500 && restarts == 0; i++) {
        CHECK_OK(ds_whereis(g_c, NULL, "crashy", &ch, &err), err);
        if (ch->state == DS_STATE_RUNNING && ch->restarts >= 1) restarts = (int)ch->restarts;
        ds_child_free(ch);
        if (restarts == 0) sleep_ms(20);
    }
    assert_int_equal(restarts, 1);
    expect_call("crashy", "get", "7");
    stop_child("crashy");

    assert_int_equal(pthread_join(th, NULL), 0);
    if (w.rc != DS_OK) fail_msg("ds_watch: %s: %s", ds_status_name(w.rc), w.err.message);
    assert_int_equal(w.n, 2);
    assert_int_equal(w.kinds[0], DS_EVENT_PROCESS_RESTART);
    assert_int_equal(w.exit_codes[0], 1);
    assert_int_equal(w.kinds[1], DS_EVENT_PROCESS_STOP);
    watcher_destroy(&w);
}

static volatile sig_atomic_t g_stop_flag;

static int never_stop(void *arg, const ds_event *e)
{
    (void)arg;
    (void)e;
    return 0;
}

static void test_watch_stop_timeout_errors(void **state)
{
    (void)state;
    ds_error err;
    /* A deadline with no events: DEADLINE_EXCEEDED. */
    ds_watch_options o = {
        .timeout_ms = 300, .supervisor = "default", .kinds = (ds_event_kind[]){DS_EVENT_NODE_DOWN}, .n_kinds = 1};
    CHECK_STATUS(ds_watch(g_c, &o, never_stop, NULL, &err), DS_DEADLINE_EXCEEDED, err);

    /* The stop flag ends it with DS_OK. */
    g_stop_flag = 1;
    ds_watch_options s = {.stop = &g_stop_flag, .timeout_ms = 20000};
    CHECK_OK(ds_watch(g_c, &s, never_stop, NULL, &err), err);
    g_stop_flag = 0;

    /* Unknown supervisor: the stream ends with NOT_FOUND. */
    ds_watch_options u = {.supervisor = "no-such-supervisor", .timeout_ms = 5000};
    CHECK_STATUS(ds_watch(g_c, &u, never_stop, NULL, &err), DS_NOT_FOUND, err);

    CHECK_STATUS(ds_watch(g_c, NULL, NULL, NULL, &err), DS_INVALID_ARGUMENT, err);
}

/* ---- threads ---------------------------------------------------------------------- */

#define THREADS 8
#define CALLS 40

struct worker_arg {
    int failures;
    char msg[DS_ERROR_MESSAGE_MAX];
};

static void *hammer(void *p)
{
    struct worker_arg *a = p;
    for (int i = 0; i < CALLS; i++) {
        ds_error err;
        ds_call_result *r = NULL;
        int rc = (i % 2) ? ds_call(g_c, NULL, "shared", "incr", 4, 5000, &r, &err)
                         : ds_cast(g_c, NULL, "shared", "incr", 4, &err);
        if (rc != DS_OK) {
            a->failures++;
            snprintf(a->msg, sizeof a->msg, "%s", err.message);
        }
        ds_call_result_free(r);
        ds_child *ch = NULL;
        if (ds_whereis(g_c, NULL, "shared", &ch, &err) != DS_OK) a->failures++;
        ds_child_free(ch);
    }
    return NULL;
}

static void test_threads_share_one_client(void **state)
{
    (void)state;
    start_counter("shared", "1000", NULL);
    pthread_t th[THREADS];
    struct worker_arg args[THREADS];
    memset(args, 0, sizeof args);
    for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&th[i], NULL, hammer, &args[i]), 0);
    for (int i = 0; i < THREADS; i++) {
        assert_int_equal(pthread_join(th[i], NULL), 0);
        if (args[i].failures) fail_msg("thread %d: %d failures (%s)", i, args[i].failures, args[i].msg);
    }
    char want[32];
    snprintf(want, sizeof want, "%d", 1000 + THREADS * CALLS);
    expect_call("shared", "get", want);
    stop_child("shared");
}

static void test_names(void **state)
{
    (void)state;
    assert_string_equal(ds_status_name(DS_DEADLINE_EXCEEDED), "DEADLINE_EXCEEDED");
    assert_string_equal(ds_status_name(16), "UNAUTHENTICATED");
    assert_string_equal(ds_status_name(17), "UNKNOWN_CODE");
    assert_string_equal(ds_status_name(-1), "UNKNOWN_CODE");
    assert_string_equal(ds_event_kind_name(DS_EVENT_NODE_TERMINATE), "NODE_TERMINATE");
    assert_int_equal(ds_event_kind_parse("process-start"), DS_EVENT_PROCESS_START);
    assert_int_equal(ds_event_kind_parse("PROCESS_STOP"), DS_EVENT_PROCESS_STOP);
    assert_int_equal(ds_event_kind_parse("node_up"), DS_EVENT_NODE_UP);
    assert_int_equal(ds_event_kind_parse("node_u"), -1);
    assert_int_equal(ds_event_kind_parse("node_upx"), -1);
    assert_int_equal(ds_event_kind_parse("unspecified"), -1);
    assert_string_equal(ds_child_state_name(DS_STATE_FAILED), "FAILED");
    assert_string_equal(ds_restart_name(DS_RESTART_TEMPORARY), "TEMPORARY");
    assert_string_equal(ds_protocol_name(DS_PROTOCOL_NONE), "NONE");
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: %s DISTSUPD COUNTER\n", argv[0]);
        return 2;
    }
    g_daemon_bin = argv[1];
    if (realpath(argv[2], g_counter) == NULL) {
        fprintf(stderr, "%s: %s\n", argv[2], strerror(errno));
        return 2;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_connect_errors),
        cmocka_unit_test(test_health),
        cmocka_unit_test(test_start_call_cast_send),
        cmocka_unit_test(test_error_paths),
        cmocka_unit_test(test_children_count_whereis_whois),
        cmocka_unit_test(test_cluster),
        cmocka_unit_test(test_watch_events),
        cmocka_unit_test(test_watch_kinds_filter_and_restart),
        cmocka_unit_test(test_watch_stop_timeout_errors),
        cmocka_unit_test(test_threads_share_one_client),
    };
    int failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
    if (failed) test_daemon_dump_log(&g_d);
    return failed ? 1 : 0;
}

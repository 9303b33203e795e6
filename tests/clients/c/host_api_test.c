/* The C host library's API (clients/c/host.h): argument checks, and the session's
 * life against a real distsupd: attach, stop from a callback and from another
 * thread, retries while the daemon cannot be reached, giving up when the daemon
 * refuses the hello.  Children are exercised by host_test.py (examples/counter_host).
 *
 * usage: host_api_test DISTSUPD   (Bazel passes it as a $(rootpath)) */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "host.h"
#include "tests/clients/c/daemon.h"

static const char *g_daemon_bin;
static struct test_daemon g_d;

static struct ds_host_kind g_kind; /* no callbacks: no children are started here */

/* What the session callbacks saw. */
struct seen {
    ds_host *h;
    pthread_t run_thread;
    int attaches, detaches;
    int last_code;
    char node[128], session[128], message[DS_ERROR_MESSAGE_MAX];
    int other_thread; /* a callback ran on a thread other than ds_host_run's */
    int stop_after_attaches, stop_after_detaches;
    pthread_mutex_t mu;
};

static void seen_init(struct seen *s)
{
    memset(s, 0, sizeof *s);
    assert_int_equal(pthread_mutex_init(&s->mu, NULL), 0);
}

static void on_attach(void *arg, const char *node, const char *session)
{
    struct seen *s = arg;
    assert_int_equal(pthread_mutex_lock(&s->mu), 0);
    if (!pthread_equal(pthread_self(), s->run_thread)) s->other_thread = 1;
    s->attaches++;
    snprintf(s->node, sizeof s->node, "%s", node);
    snprintf(s->session, sizeof s->session, "%s", session);
    int stop = s->stop_after_attaches && s->attaches >= s->stop_after_attaches;
    assert_int_equal(pthread_mutex_unlock(&s->mu), 0);
    if (stop) ds_host_stop(s->h);
}

static void on_detach(void *arg, int code, const char *message)
{
    struct seen *s = arg;
    assert_int_equal(pthread_mutex_lock(&s->mu), 0);
    if (!pthread_equal(pthread_self(), s->run_thread)) s->other_thread = 1;
    s->detaches++;
    s->last_code = code;
    snprintf(s->message, sizeof s->message, "%s", message);
    int stop = s->stop_after_detaches && s->detaches >= s->stop_after_detaches;
    assert_int_equal(pthread_mutex_unlock(&s->mu), 0);
    if (stop) ds_host_stop(s->h);
}

static ds_host *new_host(const char *target, struct seen *s)
{
    ds_host_options o = {
        .name = "api-test",
        .arg = s,
        .on_attach = on_attach,
        .on_detach = on_detach,
        .backoff_min_ms = 10,
        .backoff_max_ms = 40,
    };
    ds_host *h = NULL;
    ds_error err;
    int rc = ds_host_new(target, &o, &h, &err);
    if (rc != DS_OK) fail_msg("ds_host_new: %s", err.message);
    s->h = h;
    s->run_thread = pthread_self();
    return h;
}

/* ---- setup ------------------------------------------------------------------------ */

static int group_setup(void **state)
{
    (void)state;
    return test_daemon_start(&g_d, g_daemon_bin, "api", 20000) == 0 ? 0 : -1;
}

static int group_teardown(void **state)
{
    (void)state;
    int st = test_daemon_stop(&g_d);
    if (st != 0) {
        fprintf(stderr, "distsupd did not stop cleanly (status %d)\n", st);
        test_daemon_dump_log(&g_d);
        return -1;
    }
    return 0;
}

/* ---- tests ------------------------------------------------------------------------- */

static void test_argument_checks(void **state)
{
    (void)state;
    ds_error err;
    assert_int_equal(ds_host_new(NULL, NULL, NULL, &err), DS_INVALID_ARGUMENT);
    ds_host *h = (ds_host *)&err; /* must be overwritten with NULL */
    ds_host_options o = {.connect.token_file = "/nonexistent/token"};
    assert_int_equal(ds_host_new("127.0.0.1:1", &o, &h, &err), DS_INVALID_ARGUMENT);
    assert_null(h);
    assert_non_null(strstr(err.message, "/nonexistent/token"));
    o = (ds_host_options){.connect.tls_cert_file = "/etc/hostname"};
    assert_int_equal(ds_host_new("127.0.0.1:1", &o, &h, &err), DS_INVALID_ARGUMENT);
    assert_non_null(strstr(err.message, "tls_key_file"));
    o = (ds_host_options){.n_labels = 1};
    assert_int_equal(ds_host_new("127.0.0.1:1", &o, &h, &err), DS_INVALID_ARGUMENT);

    ds_kv labels[] = {{"zone", "eu"}};
    o = (ds_host_options){.labels = labels, .n_labels = 1, .name = "x"};
    assert_int_equal(ds_host_new("127.0.0.1:1", &o, &h, &err), DS_OK);
    assert_int_equal(err.code, DS_OK);

    /* no kind yet: nothing to run */
    assert_int_equal(ds_host_run(h, &err), DS_FAILED_PRECONDITION);
    assert_int_equal(err.code, DS_FAILED_PRECONDITION);

    assert_int_equal(ds_host_register(h, "k", NULL, 0), DS_INVALID_ARGUMENT);
    assert_int_equal(ds_host_register(NULL, "k", &g_kind, 0), DS_INVALID_ARGUMENT);
    assert_int_equal(ds_host_register(h, NULL, &g_kind, 0), DS_INVALID_ARGUMENT);
    assert_int_equal(ds_host_register(h, "", &g_kind, 0), DS_INVALID_ARGUMENT);
    assert_int_equal(ds_host_register(h, "a b", &g_kind, 0), DS_INVALID_ARGUMENT);
    assert_int_equal(ds_host_register(h, "tab\there", &g_kind, 0), DS_INVALID_ARGUMENT);
    char long_name[202];
    memset(long_name, 'x', 201);
    long_name[201] = '\0';
    assert_int_equal(ds_host_register(h, long_name, &g_kind, 0), DS_INVALID_ARGUMENT);
    long_name[200] = '\0';
    assert_int_equal(ds_host_register(h, long_name, &g_kind, 0), DS_OK);
    assert_int_equal(ds_host_register(h, long_name, &g_kind, 0), DS_INVALID_ARGUMENT); /* twice */
    for (int i = 1; i < 64; i++) {
        char name[16];
        snprintf(name, sizeof name, "kind%d", i);
        assert_int_equal(ds_host_register(h, name, &g_kind, 10), DS_OK);
    }
    assert_int_equal(ds_host_register(h, "one-too-many", &g_kind, 0), DS_INVALID_ARGUMENT);

    /* stopped before it runs: ds_host_run returns at once, and may run again */
    ds_host_stop(h);
    assert_int_equal(ds_host_run(h, &err), DS_OK);
    ds_host_stop(h);
    assert_int_equal(ds_host_run(h, &err), DS_OK);
    assert_int_equal(ds_host_child_count(h), 0);
    ds_host_free(h);
    ds_host_free(NULL);
    ds_host_stop(NULL);
    assert_int_equal(ds_host_run(NULL, &err), DS_INVALID_ARGUMENT);
}

static void test_attach_and_stop_from_a_callback(void **state)
{
    (void)state;
    struct seen s;
    seen_init(&s);
    s.stop_after_attaches = 1;
    ds_host *h = new_host(g_d.addr, &s);
    assert_int_equal(ds_host_register(h, "api-kind", &g_kind, 0), DS_OK);
    ds_error err;
    assert_int_equal(ds_host_run(h, &err), DS_OK);
    assert_int_equal(err.code, DS_OK);
    assert_int_equal(s.attaches, 1);
    assert_string_equal(s.node, "api");
    assert_true(s.session[0] != '\0');
    assert_int_equal(s.detaches, 1);
    assert_int_equal(s.last_code, DS_OK);
    assert_int_equal(s.other_thread, 0);
    /* registering while not running is allowed again, then it runs again */
    assert_int_equal(ds_host_register(h, "api-kind-2", &g_kind, 0), DS_OK);
    assert_int_equal(ds_host_run(h, &err), DS_OK);
    assert_int_equal(s.attaches, 2);
    ds_host_free(h);
    pthread_mutex_destroy(&s.mu);
}

static void *run_thread(void *arg)
{
    struct seen *s = arg;
    ds_error err;
    intptr_t rc = ds_host_run(s->h, &err);
    return (void *)rc;
}

static void test_stop_from_another_thread(void **state)
{
    (void)state;
    struct seen s;
    seen_init(&s);
    ds_host *h = new_host(g_d.addr, &s);
    assert_int_equal(ds_host_register(h, "api-kind", &g_kind, 0), DS_OK);
    /* run_thread sets run_thread before it runs; callbacks compare under the lock */
    assert_int_equal(pthread_mutex_lock(&s.mu), 0);
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, run_thread, &s), 0);
    s.run_thread = t;
    assert_int_equal(pthread_mutex_unlock(&s.mu), 0);
    int attached = 0;
    for (int i = 0; i < 1000 && !attached; i++) { /* at most 10 s */
        assert_int_equal(pthread_mutex_lock(&s.mu), 0);
        attached = s.attaches;
        assert_int_equal(pthread_mutex_unlock(&s.mu), 0);
        if (!attached) usleep(10000);
    }
    assert_int_equal(attached, 1);
    ds_host_stop(h);
    void *rc;
    assert_int_equal(pthread_join(t, &rc), 0);
    assert_int_equal((intptr_t)rc, DS_OK);
    assert_int_equal(s.detaches, 1);
    assert_int_equal(s.last_code, DS_OK);
    assert_int_equal(s.other_thread, 0);
    ds_host_free(h);
    pthread_mutex_destroy(&s.mu);
}

static void test_retries_an_unreachable_daemon(void **state)
{
    (void)state;
    struct seen s;
    seen_init(&s);
    s.stop_after_detaches = 4;
    ds_host *h = new_host("127.0.0.1:1", &s); /* nothing listens on port 1 */
    assert_int_equal(ds_host_register(h, "api-kind", &g_kind, 0), DS_OK);
    ds_error err;
    assert_int_equal(ds_host_run(h, &err), DS_OK);
    assert_int_equal(s.attaches, 0);
    assert_int_equal(s.detaches, 4);
    assert_int_equal(s.last_code, DS_UNAVAILABLE);
    assert_true(s.message[0] != '\0');
    ds_host_free(h);
    pthread_mutex_destroy(&s.mu);
}

static void test_gives_up_when_the_hello_is_refused(void **state)
{
    (void)state;
    struct seen s;
    seen_init(&s);
    s.stop_after_detaches = 10; /* a safety net: it must give up after the first */
    ds_host *h = new_host(g_d.addr, &s);
    /* the library lets through bytes above 0x7f; the daemon checks the UTF-8 */
    assert_int_equal(ds_host_register(h, "bad\xff\xfekind", &g_kind, 0), DS_OK);
    ds_error err;
    assert_int_equal(ds_host_run(h, &err), DS_INVALID_ARGUMENT);
    assert_int_equal(err.code, DS_INVALID_ARGUMENT);
    assert_true(err.message[0] != '\0');
    assert_int_equal(s.attaches, 0);
    assert_int_equal(s.detaches, 1);
    ds_host_free(h);
    pthread_mutex_destroy(&s.mu);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: %s DISTSUPD\n", argv[0]);
        return 2;
    }
    g_daemon_bin = argv[1];
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_argument_checks),
        cmocka_unit_test(test_attach_and_stop_from_a_callback),
        cmocka_unit_test(test_stop_from_another_thread),
        cmocka_unit_test(test_retries_an_unreachable_daemon),
        cmocka_unit_test(test_gives_up_when_the_hello_is_refused),
    };
    int failed = cmocka_run_group_tests(tests, group_setup, group_teardown);
    if (failed) test_daemon_dump_log(&g_d);
    return failed ? 1 : 0;
}

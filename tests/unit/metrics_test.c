/* metrics_test: the registry and its text exposition (sidecar/metrics.c): counters by
 * supervisor, cumulative histogram buckets that agree with _count, label values
 * escaped, a NULL registry a no-op, and the HTTP endpoint on a loopback port. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "sidecar/config.h"
#include "sidecar/metrics.h"

static struct config cfg;

static int setup(void **state)
{
    (void)state;
    memset(&cfg, 0, sizeof cfg);
    cfg.n_sups = 2;
    snprintf(cfg.sups[0].name, sizeof cfg.sups[0].name, "default");
    snprintf(cfg.sups[1].name, sizeof cfg.sups[1].name, "we\"ird\\name");
    return 0;
}

static char *render(struct metrics *m)
{
    size_t len = 0;
    char *t = metrics_render(m, &len);
    assert_non_null(t);
    assert_int_equal(strlen(t), len);
    return t;
}

static void has(const char *text, const char *line)
{
    if (!strstr(text, line)) fail_msg("missing: %s", line);
}

static void test_counters_and_gauges(void **state)
{
    (void)state;
    struct metrics *m = metrics_new(&cfg);
    assert_non_null(m);
    metrics_sup_inc(m, &cfg.sups[0], MC_STARTS);
    metrics_sup_inc(m, &cfg.sups[0], MC_STARTS);
    metrics_sup_inc(m, &cfg.sups[1], MC_EXITS_SIGNAL);
    metrics_add(m, MN_FAILOVERS, 3);
    metrics_gauge_add(m, MG_PEER_LINKS_UP, 2);
    metrics_gauge_add(m, MG_PEER_LINKS_UP, -1);
    uint64_t kids[MS_NSTATES] = {[MS_RUNNING] = 5, [MS_FAILED] = 1};
    metrics_set_children(m, &cfg.sups[0], kids);
    char *t = render(m);
    has(t, "# TYPE distsup_child_starts_total counter\n");
    has(t, "distsup_child_starts_total{supervisor=\"default\"} 2\n");
    has(t, "distsup_child_exits_total{supervisor=\"we\\\"ird\\\\name\",reason=\"signal\"} 1\n");
    has(t, "distsup_failovers_total 3\n");
    has(t, "distsup_peer_links_up 1\n");
    has(t, "distsup_children{supervisor=\"default\",state=\"RUNNING\"} 5\n");
    has(t, "distsup_children{supervisor=\"default\",state=\"FAILED\"} 1\n");
    has(t, "distsup_quorum 1\n");
    has(t, "# TYPE process_resident_memory_bytes gauge\n");
    has(t, "process_open_fds ");
    /* every sample line belongs to a family announced by a TYPE line before it */
    for (char *line = t; *line;) {
        char *end = strchr(line, '\n');
        assert_non_null(end);
        if (line[0] != '#') {
            char name[128], type[160];
            assert_int_equal(sscanf(line, "%127[a-z_]", name), 1);
            char saved = *line;
            *line = 0; /* the text before this line */
            snprintf(type, sizeof type, "# TYPE %s ", name);
            int found = strstr(t, type) != NULL;
            for (const char **suf = (const char *[]){"_bucket", "_sum", "_count", NULL}; !found && *suf; suf++) {
                size_t n = strlen(name), k = strlen(*suf);
                if (n > k && !strcmp(name + n - k, *suf)) {
                    snprintf(type, sizeof type, "# TYPE %.*s histogram", (int)(n - k), name);
                    found = strstr(t, type) != NULL;
                }
            }
            *line = saved;
            if (!found) fail_msg("no TYPE line before %s", name);
        }
        line = end + 1;
    }
    free(t);
    metrics_free(m);
}

static void test_histogram(void **state)
{
    (void)state;
    struct metrics *m = metrics_new(&cfg);
    assert_non_null(m);
    metrics_sup_observe(m, &cfg.sups[0], MH_CALL_LOCAL, 30000);       /* 30 µs: first bucket */
    metrics_sup_observe(m, &cfg.sups[0], MH_CALL_LOCAL, 700000);      /* 0.7 ms: le 0.001 */
    metrics_sup_observe(m, &cfg.sups[0], MH_CALL_LOCAL, 20000000000); /* 20 s: +Inf only */
    char *t = render(m);
    const char *l = "distsup_call_duration_seconds_bucket{supervisor=\"default\",location=\"local\",";
    char want[256];
    snprintf(want, sizeof want, "%sle=\"5e-05\"} 1\n", l);
    has(t, want);
    snprintf(want, sizeof want, "%sle=\"0.0005\"} 1\n", l);
    has(t, want);
    snprintf(want, sizeof want, "%sle=\"0.001\"} 2\n", l);
    has(t, want);
    snprintf(want, sizeof want, "%sle=\"10\"} 2\n", l);
    has(t, want);
    snprintf(want, sizeof want, "%sle=\"+Inf\"} 3\n", l);
    has(t, want);
    has(t, "distsup_call_duration_seconds_count{supervisor=\"default\",location=\"local\"} 3\n");
    has(t, "distsup_call_duration_seconds_sum{supervisor=\"default\",location=\"local\"} 20.000730000\n");
    has(t, "distsup_call_duration_seconds_count{supervisor=\"default\",location=\"forwarded\"} 0\n");
    free(t);
    /* Casts have their own histogram, apart from the Calls'. */
    metrics_sup_observe(m, &cfg.sups[0], MH_CAST_FORWARDED, 2000000); /* 2 ms */
    t = render(m);
    has(t, "distsup_cast_duration_seconds_bucket{supervisor=\"default\",location=\"forwarded\",le=\"0.001\"} 0\n");
    has(t, "distsup_cast_duration_seconds_bucket{supervisor=\"default\",location=\"forwarded\",le=\"0.0025\"} 1\n");
    has(t, "distsup_cast_duration_seconds_count{supervisor=\"default\",location=\"local\"} 0\n");
    has(t, "distsup_call_duration_seconds_count{supervisor=\"default\",location=\"forwarded\"} 0\n");
    free(t);
    metrics_set_mailbox(m, &cfg.sups[0], 7, 5);
    t = render(m);
    has(t, "# TYPE distsup_mailbox_calls gauge\ndistsup_mailbox_calls{supervisor=\"default\"} 7\n");
    has(t, "distsup_mailbox_calls_max{supervisor=\"default\"} 5\n");
    free(t);
    metrics_free(m);
}

static void test_null_registry(void **state)
{
    (void)state;
    metrics_sup_inc(NULL, &cfg.sups[0], MC_STARTS);
    metrics_sup_observe(NULL, &cfg.sups[0], MH_START_CHILD, 1);
    metrics_add(NULL, MN_MOVES, 1);
    metrics_set(NULL, MG_QUORUM, 0);
    metrics_store_write(NULL, 1);
    metrics_stop(NULL);
    metrics_free(NULL);
    /* a sup_config that is not the registry's is ignored */
    struct metrics *m = metrics_new(&cfg);
    assert_non_null(m);
    struct sup_config other;
    metrics_sup_inc(m, &other, MC_STARTS);
    metrics_free(m);
}

static int collected;
static void collect(void *arg)
{
    (void)arg;
    collected++;
}

static void test_http(void **state)
{
    (void)state;
    struct metrics *m = metrics_new(&cfg);
    assert_non_null(m);
    metrics_set_collector(m, collect, NULL);
    char err[256];
    int port = 0;
    assert_int_equal(metrics_serve(m, "127.0.0.1:0", &port, err, sizeof err), 0);
    assert_true(port > 0);
    const char *reqs[2] = {"GET /metrics HTTP/1.0\r\n\r\n", "GET /nope HTTP/1.0\r\n\r\n"};
    const char *status[2] = {"HTTP/1.0 200", "HTTP/1.0 404"};
    for (int i = 0; i < 2; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        assert_true(fd >= 0);
        struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        assert_int_equal(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
        assert_int_equal(write(fd, reqs[i], strlen(reqs[i])), (ssize_t)strlen(reqs[i]));
        size_t cap = 1 << 20, n = 0;
        char *buf = malloc(cap);
        assert_non_null(buf);
        ssize_t r;
        while (n < cap - 1 && (r = read(fd, buf + n, cap - 1 - n)) > 0) n += (size_t)r;
        buf[n] = 0;
        close(fd);
        if (strncmp(buf, status[i], strlen(status[i])) && strncmp(buf, "HTTP/1.1", 8))
            fail_msg("answer %d: %.40s", i, buf);
        assert_non_null(strstr(buf, i == 0 ? "200" : "404"));
        if (i == 0) {
            assert_non_null(strstr(buf, "text/plain; version=0.0.4"));
            assert_non_null(strstr(buf, "\r\n\r\n# HELP distsup_children "));
        }
        free(buf);
    }
    assert_int_equal(collected, 1); /* only /metrics collects */
    assert_int_equal(metrics_serve(m, "nonsense", &port, err, sizeof err), -1);
    metrics_free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_counters_and_gauges, setup),
        cmocka_unit_test_setup(test_histogram, setup),
        cmocka_unit_test_setup(test_null_registry, setup),
        cmocka_unit_test_setup(test_http, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

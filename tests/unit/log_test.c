/* log_test: every message is one line, whatever its strings hold (sidecar/log.c):
 * control characters from a peer's, a child's or a client's strings are written as
 * \xNN, so nobody can forge or garble the daemon's log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "sidecar/log.h"

/* Runs one log call with stderr on a pipe (log_child when child is not NULL);
 * returns what it wrote. */
static char *capture_child(const char *sup, const char *child, const char *who, const char *s)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    int saved = dup(STDERR_FILENO);
    assert_true(saved >= 0);
    assert_true(dup2(fds[1], STDERR_FILENO) >= 0);
    if (child) log_child(LOG_INFO, "test", sup, child, "node %s said: %s", who, s);
    else log_info("test", "node %s said: %s", who, s);
    assert_true(dup2(saved, STDERR_FILENO) >= 0);
    close(saved);
    close(fds[1]);
    char *buf = calloc(1, 16384);
    assert_non_null(buf);
    ssize_t n = read(fds[0], buf, 16383);
    assert_true(n > 0);
    close(fds[0]);
    return buf;
}

static char *capture(const char *who, const char *s) { return capture_child(NULL, NULL, who, s); }

static void test_a_forged_line_stays_one_line(void **state)
{
    (void)state;
    char *out = capture("n2@test", "hello\n2026-01-01T00:00:00.000Z ERROR core: forged\r\x1b[2Jbye\x7f");
    assert_non_null(strstr(out,
                           "node n2@test said: hello\\x0a2026-01-01T00:00:00.000Z ERROR core: forged"
                           "\\x0d\\x1b[2Jbye\\x7f\n"));
    assert_int_equal(strchr(out, '\n') - out + 1, (long)strlen(out)); /* one newline: the end */
    free(out);
}

static void test_plain_text_and_utf8_are_unchanged(void **state)
{
    (void)state;
    char *out = capture("n1@test", "caf\xc3\xa9 \\x41 100%");
    assert_non_null(strstr(out, "node n1@test said: caf\xc3\xa9 \\x41 100%\n"));
    free(out);
}

static void test_a_long_message_is_cut_not_overrun(void **state)
{
    (void)state;
    char *big = malloc(10000);
    assert_non_null(big);
    for (int i = 0; i < 9999; i++) big[i] = i % 2 ? '\x01' : 'a';
    big[9999] = 0;
    char *out = capture("n3@test", big);
    size_t len = strlen(out);
    assert_true(len <= 4096);
    assert_int_equal(out[len - 1], '\n');
    assert_int_equal(strchr(out, '\n') - out + 1, (long)len);
    free(out);
    free(big);
}

/* In text, a line about a child is the same as any other (its message names it). */
static void test_text_child_line_has_no_fields(void **state)
{
    (void)state;
    char *out = capture_child("default", "w1", "n1@test", "hi");
    assert_non_null(strstr(out, " INFO  test: node n1@test said: hi\n"));
    assert_null(strstr(out, "default"));
    free(out);
}

/* log_format = json: one object a line that a JSON parser reads back, whatever the
 * message holds.  Run last: the format is the process's from then on. */
static void test_json_lines(void **state)
{
    (void)state;
    log_set_json("n1@test");
    char *out = capture("n2@test", "a \"quoted\" \\path\\ and\na second line\x01");
    assert_int_equal(strchr(out, '\n') - out + 1, (long)strlen(out));
    assert_true(!strncmp(out, "{\"ts\":\"", 7));
    assert_non_null(strstr(out,
                           "\",\"level\":\"info\",\"subsystem\":\"test\",\"node\":\"n1@test\",\"msg\":\"node n2@test "
                           "said: a \\\"quoted\\\" \\\\path\\\\ and\\u000aa second line\\u0001\"}\n"));
    free(out);
    /* a line about a child: its supervisor and name as fields, escaped */
    out = capture_child("default", "w\"1\n", "n2@test", "up");
    assert_non_null(strstr(out,
                           "\"node\":\"n1@test\",\"supervisor\":\"default\",\"child\":\"w\\\"1\\u000a\",\"msg\":"
                           "\"node n2@test said: up\"}\n"));
    free(out);
    out = capture_child(NULL, "w2", "n2@test", "up"); /* no supervisor known */
    assert_non_null(strstr(out, "\"node\":\"n1@test\",\"child\":\"w2\",\"msg\":"));
    free(out);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_a_forged_line_stays_one_line),
        cmocka_unit_test(test_plain_text_and_utf8_are_unchanged),
        cmocka_unit_test(test_a_long_message_is_cut_not_overrun),
        cmocka_unit_test(test_text_child_line_has_no_fields),
        cmocka_unit_test(test_json_lines),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

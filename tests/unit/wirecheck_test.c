/* Unit tests of sidecar/wirecheck.h: strings are checked as they are on the wire
 * (NUL bytes, UTF-8), in nested messages and map entries, before protobuf-c's unpack
 * would cut them; and of the UTF-8 and control-character rules in sidecar/spec.h. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "distsup/v1/supervisor.pb-c.h"
#include "sidecar/spec.h"
#include "sidecar/wirecheck.h"

static char err[512];

/* A packed StartChildRequest whose spec has name (len bytes), one label and one env
 * entry; the caller frees it. */
static uint8_t *packed(const char *name, size_t len, const char *label_value, const char *env_value, size_t *out_len)
{
    char *nm = malloc(len + 1);
    assert_non_null(nm);
    memcpy(nm, name, len);
    nm[len] = 0;
    /* a placeholder of the same length, replaced in the packed bytes */
    char *ph = malloc(len + 1);
    assert_non_null(ph);
    memset(ph, 'Q', len);
    ph[len] = 0;
    Distsup__V1__ChildSpec spec = DISTSUP__V1__CHILD_SPEC__INIT;
    spec.name = ph;
    char *argv[] = {"/bin/true"};
    spec.argv = argv;
    spec.n_argv = 1;
    Distsup__V1__ChildSpec__LabelsEntry le = DISTSUP__V1__CHILD_SPEC__LABELS_ENTRY__INIT, *lp = &le;
    le.key = "team";
    le.value = (char *)label_value;
    spec.labels = &lp;
    spec.n_labels = 1;
    Distsup__V1__ChildSpec__EnvEntry ee = DISTSUP__V1__CHILD_SPEC__ENV_ENTRY__INIT, *ep = &ee;
    ee.key = "X";
    ee.value = (char *)env_value;
    spec.env = &ep;
    spec.n_env = 1;
    Distsup__V1__StartChildRequest req = DISTSUP__V1__START_CHILD_REQUEST__INIT;
    req.spec = &spec;
    *out_len = distsup__v1__start_child_request__get_packed_size(&req);
    uint8_t *buf = malloc(*out_len);
    assert_non_null(buf);
    distsup__v1__start_child_request__pack(&req, buf);
    uint8_t *at = memmem(buf, *out_len, ph, len);
    assert_non_null(at);
    memcpy(at, nm, len);
    free(nm);
    free(ph);
    return buf;
}

static int check(const char *name, size_t len, const char *lv, const char *ev)
{
    size_t n;
    uint8_t *buf = packed(name, len, lv, ev, &n);
    err[0] = 0;
    int rc = wirecheck_strings(&distsup__v1__start_child_request__descriptor, buf, n, err, sizeof err);
    free(buf);
    return rc;
}

static void test_plain_and_utf8_names_pass(void **state)
{
    (void)state;
    assert_int_equal(check("worker-1", 8, "a", "b"), 0);
    assert_int_equal(check("caf\xc3\xa9-\xe2\x82\xac-\xf0\x9f\x98\x80", 14, "\xc3\xbc", "x y\tz"), 0);
}

static void test_nul_in_a_name_is_refused_and_named(void **state)
{
    (void)state;
    assert_int_equal(check("nul\0tail", 8, "a", "b"), -1);
    assert_non_null(strstr(err, "spec.name"));
    assert_non_null(strstr(err, "NUL"));
    assert_non_null(strstr(err, "byte 3"));
    /* protobuf-c itself would have cut it: the reason for checking the wire form */
    size_t n;
    uint8_t *buf = packed("nul\0tail", 8, "a", "b", &n);
    Distsup__V1__StartChildRequest *r = distsup__v1__start_child_request__unpack(NULL, n, buf);
    assert_non_null(r);
    assert_string_equal(r->spec->name, "nul");
    distsup__v1__start_child_request__free_unpacked(r, NULL);
    free(buf);
}

static void test_bad_utf8_is_refused(void **state)
{
    (void)state;
    assert_int_equal(check("bad\xff\xfe", 5, "a", "b"), -1);
    assert_non_null(strstr(err, "UTF-8"));
    assert_int_equal(check("ov\xc0\xafr", 5, "a", "b"), -1);         /* overlong '/' */
    assert_int_equal(check("su\xed\xa0\x80r", 6, "a", "b"), -1);     /* a surrogate */
    assert_int_equal(check("cut\xe2\x82", 5, "a", "b"), -1);         /* truncated */
    assert_int_equal(check("big\xf4\x90\x80\x80", 7, "a", "b"), -1); /* above U+10FFFF */
}

static void test_map_values_are_checked(void **state)
{
    (void)state;
    assert_int_equal(check("ok", 2, "bad\xff", "b"), -1);
    assert_non_null(strstr(err, "spec.labels.value"));
    assert_int_equal(check("ok", 2, "a", "e\xc3"), -1);
    assert_non_null(strstr(err, "spec.env.value"));
}

static void test_malformed_input_is_left_to_protobuf_c(void **state)
{
    (void)state;
    const uint8_t junk[] = {0x0a, 0x7f, 0x01};
    assert_int_equal(
        wirecheck_strings(&distsup__v1__start_child_request__descriptor, junk, sizeof junk, err, sizeof err), 0);
    assert_int_equal(wirecheck_strings(&distsup__v1__start_child_request__descriptor, NULL, 0, err, sizeof err), 0);
}

static void test_names_refuse_c1_controls_and_bad_utf8(void **state)
{
    (void)state;
    assert_int_equal(spec_name_check("name", "caf\xc3\xa9", err, sizeof err), 0);
    assert_int_equal(spec_name_check("name",
                                     "a\xc2\x85"
                                     "b",
                                     err, sizeof err),
                     -1); /* U+0085 NEL */
    assert_int_equal(spec_name_check("name", "a\xff", err, sizeof err), -1);
    assert_non_null(strstr(err, "UTF-8"));
    assert_int_equal(spec_has_control("tab\tok"), 0);
    assert_int_equal(spec_has_control("bell\a"), 1);
    assert_int_equal(spec_has_control("c1\xc2\x9b"), 1);
    assert_int_equal(spec_has_control("latin \xc2\xa0 nbsp"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_and_utf8_names_pass),
        cmocka_unit_test(test_nul_in_a_name_is_refused_and_named),
        cmocka_unit_test(test_bad_utf8_is_refused),
        cmocka_unit_test(test_map_values_are_checked),
        cmocka_unit_test(test_malformed_input_is_left_to_protobuf_c),
        cmocka_unit_test(test_names_refuse_c1_controls_and_bad_utf8),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

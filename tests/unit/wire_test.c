/* wire_test: peer messages keep their meaning across releases.  The fixtures are the
 * bytes that the release before distsup.v1.Op and PlaceWhy existed (commit c7ba32b,
 * where Forward.op and Place.why were plain uint32 numbered by sidecar/core.c)
 * produced for a forwarded move, Call and directory StartChild, frozen here; a node
 * of this release must read them as that release meant them, and the op numbers of
 * sidecar/ops.h must never change. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "distsup/v1/peer.pb-c.h"
#include "sidecar/fnv.h"
#include "sidecar/ops.h"

/* ClusterMsg{forward{id 7, op 13, request Place{request{supervisor "default", spec{name
 * "w1", argv ["/bin/cat"]}}, incarnation 4, state "st", why 2}, timeout_ms 1500}} */
static const uint8_t place_move[] =
    "\x22\x2c\x08\x07\x10\x0d\x1a\x23\x0a\x19\x0a\x07\x64\x65\x66\x61\x75\x6c\x74\x12\x0e\x0a\x02\x77\x31\x12\x08"
    "\x2f\x62\x69\x6e\x2f\x63\x61\x74\x10\x04\x1a\x02\x73\x74\x20\x02\x20\xdc\x0b";
/* ClusterMsg{forward{id 8, op 6, request CallRequest{"default", "w1", payload "hi", timeout_ms 100}}} */
static const uint8_t call[] =
    "\x22\x19\x08\x08\x10\x06\x1a\x13\x0a\x07\x64\x65\x66\x61\x75\x6c\x74\x12\x02\x77\x31\x1a\x02\x68\x69\x20\x64";
/* ClusterMsg{forward{id 9, op 12, request StartChildRequest{"default", spec{name "w2", argv ["/bin/cat"]}}}} */
static const uint8_t dir_start[] =
    "\x22\x1f\x08\x09\x10\x0c\x1a\x19\x0a\x07\x64\x65\x66\x61\x75\x6c\x74\x12\x0e\x0a\x02\x77\x32\x12\x08\x2f\x62"
    "\x69\x6e\x2f\x63\x61\x74";

static Distsup__V1__ClusterMsg *decode(const uint8_t *b, size_t len)
{
    Distsup__V1__ClusterMsg *m = distsup__v1__cluster_msg__unpack(NULL, len, b);
    assert_non_null(m);
    assert_int_equal(m->msg_case, DISTSUP__V1__CLUSTER_MSG__MSG_FORWARD);
    return m;
}

static void test_place_move(void **state)
{
    (void)state;
    Distsup__V1__ClusterMsg *m = decode(place_move, sizeof place_move - 1);
    assert_int_equal(m->forward->id, 7);
    assert_int_equal(m->forward->op, CORE_PLACE);
    assert_int_equal(m->forward->timeout_ms, 1500);
    assert_ptr_equal(ops_request((int)m->forward->op), &distsup__v1__place__descriptor);
    assert_ptr_equal(ops_reply((int)m->forward->op), &distsup__v1__start_child_response__descriptor);
    Distsup__V1__Place *pl = (Distsup__V1__Place *)protobuf_c_message_unpack(
        ops_request((int)m->forward->op), NULL, m->forward->request.len, m->forward->request.data);
    assert_non_null(pl);
    assert_int_equal(pl->why, DISTSUP__V1__PLACE_WHY__PLACE_MOVE);
    assert_int_equal(pl->incarnation, 4);
    assert_int_equal(pl->state.len, 2);
    assert_memory_equal(pl->state.data, "st", 2);
    assert_string_equal(pl->request->spec->name, "w1");
    assert_string_equal(pl->request->spec->argv[0], "/bin/cat");
    protobuf_c_message_free_unpacked(&pl->base, NULL);
    distsup__v1__cluster_msg__free_unpacked(m, NULL);
}

static void test_call(void **state)
{
    (void)state;
    Distsup__V1__ClusterMsg *m = decode(call, sizeof call - 1);
    assert_int_equal(m->forward->op, CORE_CALL);
    assert_true(ops_public((int)m->forward->op));
    Distsup__V1__CallRequest *r = (Distsup__V1__CallRequest *)protobuf_c_message_unpack(
        ops_request((int)m->forward->op), NULL, m->forward->request.len, m->forward->request.data);
    assert_non_null(r);
    assert_string_equal(r->name, "w1");
    assert_int_equal(r->timeout_ms, 100);
    assert_memory_equal(r->payload.data, "hi", 2);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    distsup__v1__cluster_msg__free_unpacked(m, NULL);
}

static void test_dir_start(void **state)
{
    (void)state;
    Distsup__V1__ClusterMsg *m = decode(dir_start, sizeof dir_start - 1);
    assert_int_equal(m->forward->op, CORE_DIR_START);
    assert_false(ops_public((int)m->forward->op));
    assert_ptr_equal(ops_request((int)m->forward->op), &distsup__v1__start_child_request__descriptor);
    distsup__v1__cluster_msg__free_unpacked(m, NULL);
}

/* The numbers themselves: what every release sends and reads. */
static void test_numbers_are_frozen(void **state)
{
    (void)state;
    static const struct {
        int op;
        int wire;
    } want[] = {
        {CORE_START_CHILD, 0}, {CORE_TERMINATE_CHILD, 1}, {CORE_CHILDREN, 2},  {CORE_COUNT_CHILDREN, 3},
        {CORE_WHEREIS, 4},     {CORE_WHOIS, 5},           {CORE_CALL, 6},      {CORE_CAST, 7},
        {CORE_SEND, 8},        {CORE_NODES, 9},           {CORE_NODE_FOR, 10}, {CORE_MINE, 11},
        {CORE_DIR_START, 12},  {CORE_PLACE, 13},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        assert_int_equal(want[i].op, want[i].wire);
        assert_non_null(ops_request(want[i].op));
        assert_non_null(ops_reply(want[i].op));
        assert_int_equal(ops_public(want[i].op), want[i].wire <= 11);
    }
    assert_null(ops_request(14));
    assert_null(ops_request(-1));
    assert_int_equal(DISTSUP__V1__PLACE_WHY__PLACE_START, 0);
    assert_int_equal(DISTSUP__V1__PLACE_WHY__PLACE_REHOME, 1);
    assert_int_equal(DISTSUP__V1__PLACE_WHY__PLACE_MOVE, 2);
}

/* A number a later release may add reads as an op this node does not know (it
 * answers UNIMPLEMENTED), not as a decoding failure. */
static void test_unknown_op_still_decodes(void **state)
{
    (void)state;
    uint8_t b[sizeof call - 1];
    memcpy(b, call, sizeof b);
    b[5] = 0x63; /* op 99 */
    Distsup__V1__ClusterMsg *m = decode(b, sizeof b);
    assert_int_equal(m->forward->op, 99);
    assert_null(ops_request((int)m->forward->op));
    distsup__v1__cluster_msg__free_unpacked(m, NULL);
}

/* Every node must pick the same directory node for a name, whatever its release: the
 * scores are those of the release before fnv.h (computed from its formula). */
static void test_directory_scores_are_frozen(void **state)
{
    (void)state;
    static const struct {
        const char *sup, *name, *node;
        uint64_t score;
    } want[] = {
        {"default", "w1", "n1@test", 0x72d175730fa87ee2ull},
        {"default", "w1", "n2@test", 0x8b32277edb8620ccull},
        {"jobs", "counter-17", "node3@host", 0xd65dbd61f71524dbull},
        {"default", "", "n1", 0xea9fcdfbf6d12863ull},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
        assert_int_equal(fnv_directory(want[i].sup, want[i].name, want[i].node), want[i].score);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_place_move),
        cmocka_unit_test(test_call),
        cmocka_unit_test(test_dir_start),
        cmocka_unit_test(test_numbers_are_frozen),
        cmocka_unit_test(test_unknown_op_still_decodes),
        cmocka_unit_test(test_directory_scores_are_frozen),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* forward_wire_test: the one-pass packing and the in-place reading of forwarded
 * requests and their answers (sidecar/cluster/forward.c) agree byte for byte with
 * protobuf-c, and bad input is refused without a crash. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sidecar/cluster/cluster.h"
#include "sidecar/ops.h"

static uint8_t *pack_ref(const Distsup__V1__ClusterMsg *m, size_t *len)
{
    *len = distsup__v1__cluster_msg__get_packed_size(m);
    uint8_t *b = malloc(*len ? *len : 1);
    assert_non_null(b);
    distsup__v1__cluster_msg__pack(m, b);
    return b;
}

static void check_forward(uint64_t id, int op, const char *payload, size_t plen, uint32_t timeout)
{
    Distsup__V1__CallRequest req = DISTSUP__V1__CALL_REQUEST__INIT;
    req.supervisor = "default";
    req.name = "w1";
    req.payload.data = (uint8_t *)payload;
    req.payload.len = plen;
    size_t len;
    uint8_t *mine = forward_pack(id, op, &req.base, timeout, &len);
    assert_non_null(mine);

    size_t rlen = protobuf_c_message_get_packed_size(&req.base);
    uint8_t *rbuf = malloc(rlen ? rlen : 1);
    protobuf_c_message_pack(&req.base, rbuf);
    Distsup__V1__Forward fw = DISTSUP__V1__FORWARD__INIT;
    fw.id = id;
    fw.op = (Distsup__V1__Op)op;
    fw.request.data = rbuf;
    fw.request.len = rlen;
    fw.timeout_ms = timeout;
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_FORWARD;
    m.forward = &fw;
    size_t reflen;
    uint8_t *ref = pack_ref(&m, &reflen);
    assert_int_equal(len, reflen);
    assert_memory_equal(mine, ref, len);

    struct fwd_view v;
    assert_int_equal(forward_view(mine, len, &v), 0);
    assert_int_equal(v.reply, 0);
    assert_int_equal(v.id, id);
    assert_int_equal(v.op_or_code, (uint32_t)op);
    assert_int_equal(v.timeout_ms, timeout);
    assert_int_equal(v.body_len, rlen);
    assert_memory_equal(v.body, rbuf, rlen);
    free(mine);
    free(ref);
    free(rbuf);
}

static void test_forward_matches_protobuf_c(void **state)
{
    (void)state;
    check_forward(1, CORE_CALL, "hi", 2, 100);
    check_forward(0, CORE_START_CHILD, "", 0, 0); /* every default left out */
    check_forward(UINT64_MAX, CORE_PLACE, "x", 1, UINT32_MAX);
    char *big = malloc(300000);
    memset(big, 'b', 300000);
    check_forward(12345678901ull, CORE_CAST, big, 300000, 5000); /* multi-byte lengths */
    free(big);
}

static void check_reply(uint64_t id, int code, const char *message, const char *payload)
{
    Distsup__V1__CallResponse resp = DISTSUP__V1__CALL_RESPONSE__INIT;
    resp.payload.data = (uint8_t *)payload;
    resp.payload.len = payload ? strlen(payload) : 0;
    resp.node = "n1";
    size_t len;
    uint8_t *mine = forward_pack_reply(id, code, message, payload ? &resp.base : NULL, &len);
    assert_non_null(mine);

    Distsup__V1__ForwardReply r = DISTSUP__V1__FORWARD_REPLY__INIT;
    r.id = id;
    r.code = (uint32_t)code;
    r.message = (char *)(message ? message : "");
    uint8_t *rbuf = NULL;
    if (payload) {
        r.reply.len = protobuf_c_message_get_packed_size(&resp.base);
        rbuf = malloc(r.reply.len);
        protobuf_c_message_pack(&resp.base, rbuf);
        r.reply.data = rbuf;
    }
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_REPLY;
    m.reply = &r;
    size_t reflen;
    uint8_t *ref = pack_ref(&m, &reflen);
    assert_int_equal(len, reflen);
    assert_memory_equal(mine, ref, len);

    struct fwd_view v;
    assert_int_equal(forward_view(ref, reflen, &v), 0);
    assert_int_equal(v.reply, 1);
    assert_int_equal(v.id, id);
    assert_int_equal(v.op_or_code, (uint32_t)code);
    assert_int_equal(v.message_len, message ? strlen(message) : 0);
    if (message) assert_memory_equal(v.message, message, strlen(message));
    assert_int_equal(v.body_len, r.reply.len);
    free(mine);
    free(ref);
    free(rbuf);
}

static void test_reply_matches_protobuf_c(void **state)
{
    (void)state;
    check_reply(7, 0, NULL, "pong");
    check_reply(8, 5, "child 'x' is not here", NULL);
    check_reply(0, 0, NULL, NULL);
}

static void test_other_messages_are_not_views(void **state)
{
    (void)state;
    Distsup__V1__ChildGone g = DISTSUP__V1__CHILD_GONE__INIT;
    g.supervisor = "default";
    g.name = "w";
    g.node = "n";
    Distsup__V1__ClusterMsg m = DISTSUP__V1__CLUSTER_MSG__INIT;
    m.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_GONE;
    m.gone = &g;
    size_t len;
    uint8_t *b = pack_ref(&m, &len);
    struct fwd_view v;
    assert_int_equal(forward_view(b, len, &v), -1);
    free(b);
    assert_int_equal(forward_view((const uint8_t *)"", 0, &v), -1);
}

/* Truncations and random bytes: refused or read, never a read past the end (ASan). */
static void test_hostile_bytes(void **state)
{
    (void)state;
    Distsup__V1__CallRequest req = DISTSUP__V1__CALL_REQUEST__INIT;
    req.name = "w1";
    req.payload.data = (uint8_t *)"payload";
    req.payload.len = 7;
    size_t len;
    uint8_t *good = forward_pack(3, CORE_CALL, &req.base, 10, &len);
    struct fwd_view v;
    for (size_t n = 0; n < len; n++) {
        uint8_t *cut = malloc(n ? n : 1); /* exactly n bytes: ASan sees any overread */
        memcpy(cut, good, n);
        assert_int_equal(forward_view(cut, n, &v), -1);
        free(cut);
    }
    srand(42);
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(rand() % 64) + 1;
        uint8_t *b = malloc(n);
        for (size_t i = 0; i < n; i++) b[i] = (uint8_t)rand();
        if (round % 2) b[0] = 0x22; /* looks like a forward */
        if (forward_view(b, n, &v) == 0 && v.body) assert_true(v.body >= b && v.body + v.body_len <= b + n);
        free(b);
    }
    free(good);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_forward_matches_protobuf_c),
        cmocka_unit_test(test_reply_matches_protobuf_c),
        cmocka_unit_test(test_other_messages_are_not_views),
        cmocka_unit_test(test_hostile_bytes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

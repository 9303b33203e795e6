/* gen_seeds: writes the generated part of each fuzz target's seed corpus
 * (tests/fuzz/corpus/TARGET/NAME): valid inputs packed with the project's own
 * protobuf-c code and forward_pack, and a few edge cases.  Run by
 * `tools/fuzz.sh --seeds`; the output is committed, so this only runs when the
 * messages change.
 *
 *   gen_seeds DIR */
#include <errno.h>
#include <sodium.h>
#include <string.h>
#include <sys/stat.h>

#include "framing/frame.h"
#include "grpc/reflection/v1/reflection.pb-c.h"
#include "sidecar/cluster/cluster.h"
#include "sidecar/handshake.h"
#include "sidecar/ops.h"

static const char *root;
static int failed;

static void put(const char *target, const char *name, const void *p, size_t n)
{
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/%s", root, target);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "gen_seeds: mkdir %s: %s\n", dir, strerror(errno));
        failed = 1;
        return;
    }
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f || (n && fwrite(p, 1, n, f) != n) || fclose(f) != 0) {
        fprintf(stderr, "gen_seeds: cannot write %s\n", path);
        failed = 1;
    }
}

static void put_msg(const char *target, const char *name, const ProtobufCMessage *m)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf) abort();
    if (protobuf_c_message_pack(m, buf) != n) abort();
    put(target, name, buf, n);
    free(buf);
}

static void put_str(const char *target, const char *name, const char *s) { put(target, name, s, strlen(s)); }

/* ---------- messages ---------- */

static Distsup__V1__ChildSpec__EnvEntry env_e = {
    PROTOBUF_C_MESSAGE_INIT(&distsup__v1__child_spec__env_entry__descriptor), "GREETING", "hello"};
static Distsup__V1__ChildSpec__EnvEntry *env_p[] = {&env_e};
static Distsup__V1__ChildSpec__LabelsEntry label_e = {
    PROTOBUF_C_MESSAGE_INIT(&distsup__v1__child_spec__labels_entry__descriptor), "tier", "web"};
static Distsup__V1__ChildSpec__LabelsEntry *label_p[] = {&label_e};
static char *argv_v[] = {"/usr/bin/python3", "worker.py", "--port=0"};

static void spec_full(Distsup__V1__ChildSpec *s, const char *name)
{
    distsup__v1__child_spec__init(s);
    s->name = (char *)name;
    s->n_argv = 3;
    s->argv = argv_v;
    s->n_env = 1;
    s->env = env_p;
    s->cwd = "/tmp";
    s->restart = DISTSUP__V1__RESTART_TYPE__TRANSIENT;
    s->shutdown_ms = 2000;
    s->key = "user-42";
    s->init.data = (uint8_t *)"init bytes";
    s->init.len = 10;
    s->n_labels = 1;
    s->labels = label_p;
    s->protocol = DISTSUP__V1__PROTOCOL__FRAMES;
}

static void info_of(Distsup__V1__ChildInfo *i, Distsup__V1__ChildSpec *s, const char *name, const char *node)
{
    distsup__v1__child_info__init(i);
    i->supervisor = "default";
    i->name = (char *)name;
    i->id = "n2@fuzz/1.7";
    i->node = (char *)node;
    i->os_pid = 4242;
    i->state = DISTSUP__V1__CHILD_STATE__RUNNING;
    i->restarts = 1;
    i->started_at_ms = 1700000000000;
    i->spec = s;
    i->incarnation = 1;
}

/* ---------- frame ---------- */

static void frames(void)
{
    struct dsbuf all = {0};
    Distsup__V1__ChildFrame f = DISTSUP__V1__CHILD_FRAME__INIT;
    Distsup__V1__Init init = DISTSUP__V1__INIT__INIT;
    init.name = "w1";
    init.node = "node1@localhost";
    init.supervisor = "default";
    init.id = "node1@localhost/1.1";
    init.init.data = (uint8_t *)"cfg";
    init.init.len = 3;
    Distsup__V1__CallFrame call = DISTSUP__V1__CALL_FRAME__INIT;
    call.ref = 7;
    call.payload.data = (uint8_t *)"ping";
    call.payload.len = 4;
    Distsup__V1__CastFrame cast = DISTSUP__V1__CAST_FRAME__INIT;
    cast.payload = call.payload;
    Distsup__V1__InfoFrame info = DISTSUP__V1__INFO_FRAME__INIT;
    info.payload = call.payload;
    Distsup__V1__Terminate term = DISTSUP__V1__TERMINATE__INIT;
    term.reason = "shutdown";
    Distsup__V1__Ready ready = DISTSUP__V1__READY__INIT;
    Distsup__V1__Reply reply = DISTSUP__V1__REPLY__INIT;
    reply.ref = 7;
    reply.error = "no such method";
    reply.code = 12;
    Distsup__V1__StateFrame state = DISTSUP__V1__STATE_FRAME__INIT;
    state.state.data = (uint8_t *)"counter=3";
    state.state.len = 9;
    struct {
        const char *name;
        Distsup__V1__ChildFrame__FrameCase c;
    } kinds[] = {
        {"init", DISTSUP__V1__CHILD_FRAME__FRAME_INIT},           {"call", DISTSUP__V1__CHILD_FRAME__FRAME_CALL},
        {"cast", DISTSUP__V1__CHILD_FRAME__FRAME_CAST},           {"info", DISTSUP__V1__CHILD_FRAME__FRAME_INFO},
        {"terminate", DISTSUP__V1__CHILD_FRAME__FRAME_TERMINATE}, {"ready", DISTSUP__V1__CHILD_FRAME__FRAME_READY},
        {"reply", DISTSUP__V1__CHILD_FRAME__FRAME_REPLY},         {"state", DISTSUP__V1__CHILD_FRAME__FRAME_STATE},
    };
    for (size_t i = 0; i < sizeof kinds / sizeof kinds[0]; i++) {
        f.frame_case = kinds[i].c;
        switch (kinds[i].c) {
        case DISTSUP__V1__CHILD_FRAME__FRAME_INIT: f.init = &init; break;
        case DISTSUP__V1__CHILD_FRAME__FRAME_CALL: f.call = &call; break;
        case DISTSUP__V1__CHILD_FRAME__FRAME_CAST: f.cast = &cast; break;
        case DISTSUP__V1__CHILD_FRAME__FRAME_INFO: f.info = &info; break;
        case DISTSUP__V1__CHILD_FRAME__FRAME_TERMINATE: f.terminate = &term; break;
        case DISTSUP__V1__CHILD_FRAME__FRAME_READY: f.ready = &ready; break;
        case DISTSUP__V1__CHILD_FRAME__FRAME_REPLY: f.reply = &reply; break;
        default: f.state = &state; break;
        }
        struct dsbuf one = {0};
        if (frame_append(&one, &f, FRAME_DEFAULT_MAX) != 0 || frame_append(&all, &f, FRAME_DEFAULT_MAX) != 0) abort();
        put("frame", kinds[i].name, one.data, one.len);
        if (!strcmp(kinds[i].name, "call")) put("frame", "call_truncated", one.data, one.len - 2);
        dsbuf_free(&one);
    }
    put("frame", "stream_of_all", all.data, all.len);
    dsbuf_free(&all);
    put("frame", "empty_body", "\0\0\0\0", 4);
    put("frame", "too_big", "\x7f\xff\xff\xff\x0a\x00", 6);
    put("frame", "header_only", "\0\0\0\x05", 4);
    put("frame", "not_a_frame", "\0\0\0\x03\xff\xff\xff", 7);
}

/* ---------- spec ---------- */

static void specs(void)
{
    Distsup__V1__ChildSpec s;
    Distsup__V1__StartChildRequest r = DISTSUP__V1__START_CHILD_REQUEST__INIT;
    r.supervisor = "default";
    r.spec = &s;
    spec_full(&s, "worker-1");
    put_msg("spec", "start_full", &r.base);
    put_msg("spec", "childspec_full", &s.base);
    s.kill_immediately = 1;
    s.node = "node2@host";
    put_msg("spec", "start_pinned_kill", &r.base);
    distsup__v1__child_spec__init(&s);
    s.n_argv = 1;
    s.argv = argv_v;
    put_msg("spec", "start_minimal", &r.base);
    r.supervisor = "";
    put_msg("spec", "start_minimal_default_sup", &r.base);
    s.n_argv = 0;
    put_msg("spec", "start_empty_argv", &r.base);
    spec_full(&s, "bad name");
    put_msg("spec", "start_bad_name", &r.base);
    spec_full(&s, "w");
    static Distsup__V1__ChildSpec__EnvEntry reserved = {
        PROTOBUF_C_MESSAGE_INIT(&distsup__v1__child_spec__env_entry__descriptor), "DISTSUP_NAME", "x"};
    static Distsup__V1__ChildSpec__EnvEntry *reserved_p[] = {&reserved};
    s.env = reserved_p;
    put_msg("spec", "start_reserved_env", &r.base);
    spec_full(&s, "w");
    s.shutdown_ms = 3600001;
    put_msg("spec", "start_long_shutdown", &r.base);
    spec_full(&s, "w");
    s.restart = 7;
    s.protocol = 9;
    put_msg("spec", "start_bad_enums", &r.base);
    put("spec", "empty", "", 0);
}

/* ---------- peer ---------- */

static void peer(void)
{
    /* the link layer */
    Distsup__V1__PeerMsg pm = DISTSUP__V1__PEER_MSG__INIT;
    Distsup__V1__Join j = DISTSUP__V1__JOIN__INIT;
    j.name = "n2@fuzz";
    j.boot_id = 99;
    j.peer_address = "10.0.0.2:50052";
    j.api_address = "10.0.0.2:50051";
    j.weight = 100;
    Distsup__V1__Join__LabelsEntry jl = {PROTOBUF_C_MESSAGE_INIT(&distsup__v1__join__labels_entry__descriptor), "zone",
                                         "a"};
    Distsup__V1__Join__LabelsEntry *jlp[] = {&jl};
    j.n_labels = 1;
    j.labels = jlp;
    Distsup__V1__Member mem = DISTSUP__V1__MEMBER__INIT;
    mem.name = "n3@fuzz";
    mem.peer_address = "10.0.0.3:50052";
    Distsup__V1__Member *memp[] = {&mem};
    j.n_members = 1;
    j.members = memp;
    put_msg("peer", "join_raw", &j.base);
    pm.msg_case = DISTSUP__V1__PEER_MSG__MSG_JOIN;
    pm.join = &j;
    put_msg("peer", "peer_join", &pm.base);
    Distsup__V1__Heartbeat hb = DISTSUP__V1__HEARTBEAT__INIT;
    hb.seq = 12345;
    pm.msg_case = DISTSUP__V1__PEER_MSG__MSG_HEARTBEAT;
    pm.heartbeat = &hb;
    put_msg("peer", "peer_heartbeat", &pm.base);
    Distsup__V1__PingReq pr = DISTSUP__V1__PING_REQ__INIT;
    pr.id = 5;
    pr.target = "n3@fuzz";
    pm.msg_case = DISTSUP__V1__PEER_MSG__MSG_PING_REQ;
    pm.ping_req = &pr;
    put_msg("peer", "peer_ping_req", &pm.base);
    Distsup__V1__PingAck pa = DISTSUP__V1__PING_ACK__INIT;
    pa.id = 5;
    pa.target = "n3@fuzz";
    pa.alive = 1;
    pm.msg_case = DISTSUP__V1__PEER_MSG__MSG_PING_ACK;
    pm.ping_ack = &pa;
    put_msg("peer", "peer_ping_ack", &pm.base);
    Distsup__V1__Members ms = DISTSUP__V1__MEMBERS__INIT;
    ms.n_members = 1;
    ms.members = memp;
    pm.msg_case = DISTSUP__V1__PEER_MSG__MSG_MEMBERS;
    pm.members = &ms;
    put_msg("peer", "peer_members", &pm.base);
    Distsup__V1__Leave lv = DISTSUP__V1__LEAVE__INIT;
    pm.msg_case = DISTSUP__V1__PEER_MSG__MSG_LEAVE;
    pm.leave = &lv;
    put_msg("peer", "peer_leave", &pm.base);

    /* the core's messages */
    Distsup__V1__ChildSpec s;
    spec_full(&s, "worker-1");
    Distsup__V1__ChildInfo ci, ci2;
    info_of(&ci, &s, "worker-1", "n2@fuzz");
    Distsup__V1__ClusterMsg cm = DISTSUP__V1__CLUSTER_MSG__INIT;
    cm.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_CHILD;
    cm.child = &ci;
    put_msg("peer", "cluster_child", &cm.base);
    /* the same inside a PeerMsg.app */
    size_t n = distsup__v1__cluster_msg__get_packed_size(&cm);
    uint8_t *app = malloc(n);
    if (!app || distsup__v1__cluster_msg__pack(&cm, app) != n) abort();
    pm.msg_case = DISTSUP__V1__PEER_MSG__MSG_APP;
    pm.app.data = app;
    pm.app.len = n;
    put_msg("peer", "peer_app_child", &pm.base);
    free(app);
    ci.node = "node1@fuzz";
    put_msg("peer", "cluster_child_not_senders", &cm.base);
    ci.node = "n2@fuzz";
    Distsup__V1__ChildSpec s2;
    spec_full(&s2, "worker-2");
    info_of(&ci2, &s2, "worker-2", "n2@fuzz");
    Distsup__V1__ChildInfo *kids[] = {&ci, &ci2, &ci};
    Distsup__V1__Snapshot snap = DISTSUP__V1__SNAPSHOT__INIT;
    snap.n_children = 3;
    snap.children = kids;
    snap.last = 1;
    cm.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_SNAPSHOT;
    cm.snapshot = &snap;
    put_msg("peer", "cluster_snapshot", &cm.base);
    Distsup__V1__ChildGone g = DISTSUP__V1__CHILD_GONE__INIT;
    g.supervisor = "default";
    g.name = "worker-1";
    g.node = "n2@fuzz";
    g.incarnation = 1;
    g.reason = "exited";
    cm.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_GONE;
    cm.gone = &g;
    put_msg("peer", "cluster_gone", &cm.base);
    Distsup__V1__Event ev = DISTSUP__V1__EVENT__INIT;
    ev.seq = 3;
    ev.supervisor = "default";
    ev.name = "worker-1";
    ev.node = "n2@fuzz";
    ev.reason = "exit 1";
    cm.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_EVENT;
    cm.event = &ev;
    put_msg("peer", "cluster_event", &cm.base);
    Distsup__V1__Leaving lg = DISTSUP__V1__LEAVING__INIT;
    cm.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_LEAVING;
    cm.leaving = &lg;
    put_msg("peer", "cluster_leaving", &cm.base);

    /* forwards, in forward_pack's layout (forward_view's fast path) */
    Distsup__V1__StartChildRequest sr = DISTSUP__V1__START_CHILD_REQUEST__INIT;
    sr.supervisor = "default";
    sr.spec = &s;
    Distsup__V1__Place pl = DISTSUP__V1__PLACE__INIT;
    pl.request = &sr;
    pl.why = DISTSUP__V1__PLACE_WHY__PLACE_START;
    struct {
        const char *name;
        int op;
        const ProtobufCMessage *m;
    } fw[] = {
        {"forward_start_child", CORE_START_CHILD, &sr.base},
        {"forward_dir_start", CORE_DIR_START, &sr.base},
        {"forward_place_start", CORE_PLACE, &pl.base},
    };
    for (size_t i = 0; i < sizeof fw / sizeof fw[0]; i++) {
        uint8_t *buf = forward_pack(17 + i, fw[i].op, fw[i].m, 5000, &n);
        if (!buf) abort();
        put("peer", fw[i].name, buf, n);
        free(buf);
    }
    pl.why = DISTSUP__V1__PLACE_WHY__PLACE_REHOME;
    pl.incarnation = 2;
    pl.from_node = "n3@fuzz";
    uint8_t *buf = forward_pack(20, CORE_PLACE, &pl.base, 0, &n);
    if (!buf) abort();
    put("peer", "forward_place_rehome", buf, n);
    free(buf);
    pl.why = DISTSUP__V1__PLACE_WHY__PLACE_MOVE;
    pl.state.data = (uint8_t *)"state";
    pl.state.len = 5;
    buf = forward_pack(21, CORE_PLACE, &pl.base, 0, &n);
    if (!buf) abort();
    put("peer", "forward_place_move", buf, n);
    free(buf);
    Distsup__V1__StartChildResponse resp = DISTSUP__V1__START_CHILD_RESPONSE__INIT;
    resp.child = &ci;
    buf = forward_pack_reply(17, 0, NULL, &resp.base, &n);
    if (!buf) abort();
    put("peer", "reply_started", buf, n);
    free(buf);
    buf = forward_pack_reply(18, 5, "child 'x' not found", NULL, &n);
    if (!buf) abort();
    put("peer", "reply_error", buf, n);
    free(buf);
    /* a Forward as protobuf-c packs it (field 3 before 2: not forward_view's layout) */
    Distsup__V1__Forward f = DISTSUP__V1__FORWARD__INIT;
    f.id = 22;
    f.op = DISTSUP__V1__OP__OP_WHEREIS;
    Distsup__V1__WhereIsRequest wr = DISTSUP__V1__WHERE_IS_REQUEST__INIT;
    wr.supervisor = "default";
    wr.name = "worker-1";
    n = distsup__v1__where_is_request__get_packed_size(&wr);
    uint8_t *body = malloc(n ? n : 1);
    if (!body || distsup__v1__where_is_request__pack(&wr, body) != n) abort();
    f.request.data = body;
    f.request.len = n;
    cm.msg_case = DISTSUP__V1__CLUSTER_MSG__MSG_FORWARD;
    cm.forward = &f;
    put_msg("peer", "cluster_forward_whereis", &cm.base);
    free(body);
    put("peer", "forward_truncated", "\x22\x10\x08\x01", 4);
    put("peer", "forward_bad_varint", "\x22\x0b\x08\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff", 13);
}

/* ---------- reflection ---------- */

static void reflection(void)
{
    Grpc__Reflection__V1__ServerReflectionRequest q = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__INIT;
    q.host = "localhost:50051";
    q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES;
    q.list_services = "*";
    put_msg("reflection", "list_services", &q.base);
    q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME;
    q.file_by_filename = "distsup/v1/supervisor.proto";
    put_msg("reflection", "file_supervisor", &q.base);
    q.file_by_filename = "grpc/health/v1/health.proto";
    put_msg("reflection", "file_health", &q.base);
    q.file_by_filename = "no/such.proto";
    put_msg("reflection", "file_missing", &q.base);
    q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL;
    q.file_containing_symbol = "distsup.v1.Supervisor";
    put_msg("reflection", "symbol_service", &q.base);
    q.file_containing_symbol = "distsup.v1.Supervisor.StartChild";
    put_msg("reflection", "symbol_method", &q.base);
    q.file_containing_symbol = ".distsup.v1.ChildSpec.EnvEntry";
    put_msg("reflection", "symbol_nested", &q.base);
    q.file_containing_symbol = "distsup.v1.PERMANENT";
    put_msg("reflection", "symbol_enum_value", &q.base);
    q.message_request_case =
        GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE;
    q.all_extension_numbers_of_type = "distsup.v1.ChildSpec";
    put_msg("reflection", "extension_numbers", &q.base);
    q.message_request_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION;
    Grpc__Reflection__V1__ExtensionRequest ex = GRPC__REFLECTION__V1__EXTENSION_REQUEST__INIT;
    ex.containing_type = "distsup.v1.ChildSpec";
    ex.extension_number = 100;
    q.file_containing_extension = &ex;
    put_msg("reflection", "extension", &q.base);
    put("reflection", "empty", "", 0);
}

/* ---------- config ---------- */

static void configs(void)
{
    put_str("config", "daemon",
            "; a single node\n[daemon]\nlisten = 127.0.0.1:50051\ndata_dir = ./data\nlog_level = debug\n"
            "node_name = node1@localhost\nthreads = 4\nmax_payload_bytes = 4194304\n");
    put_str("config", "cluster",
            "[daemon]\nlisten = unix:/run/distsup.sock\napi_socket_mode = 0660\npeer_listen = 0.0.0.0:50052\n"
            "peer_advertise = host1:50052\nseeds = host2:50052,host3:50052\nkey_file = /etc/distsup/node.key\n"
            "trust_file = /etc/distsup/trusted\nheartbeat_ms = 200\ndown_after_ms = 1000\nquorum = true\n"
            "cluster_size = 3\nweight = 100\nlabels = zone=a,disk=ssd\ntrust_unnamed = false\n"
            "peer_max_children = 1000\n");
    put_str(
        "config", "supervisors",
        "[supervisor:default]\nstrategy = least_loaded\nmax_restarts = 5\nmax_seconds = 10\n"
        "[supervisor:web]\nstrategy = hash_ring\nstrategy_options = vnodes=160\nrestart_backoff_ms = 100\n"
        "restart_backoff_max_ms = 2000\nmailbox = 1024\nmailbox_bytes = 16777216\nstart_timeout_ms = 10000\n"
        "watch_queue = 4096\nnodes = a@h1,b@h2\nmonitor_nodes = false\nmax_moves = 16\ninherit_env = JAVA_*,PGHOST\n");
    put_str("config", "api",
            "[daemon]\nlisten = 0.0.0.0:50051\napi_token_file = /etc/distsup/api.token\ntls_cert = server.pem\n"
            "tls_key = server.key\ntls_client_ca = ca.pem\nhealth_listen = 0.0.0.0:8081\n");
    put_str("config", "errors", "[daemon]\nthreads = 0\n[nowhere]\nx = 1\n[supervisor:bad name]\nmailbox = 1\n");
    char long_line[400];
    snprintf(long_line, sizeof long_line, "[daemon]\ndata_dir = /%0300d\n", 0);
    put_str("config", "long_line", long_line);
    static const char args[] = "--listen\0127.0.0.1:0\0--threads=3\0--peer-listen\0127.0.0.1:0\0--key-file\0k\0"
                               "--trust-file\0t\0--heartbeat-ms\0100\0--down-after-ms=500\0--quorum\0--cluster-size\0"
                               "3\0--config\0x";
    put("config", "argv_cluster", args, sizeof args - 1);
    static const char args2[] = "--listen\0[::1]:5\0--insecure-api\0--api-socket-mode\0777\0--log-level\0warn";
    put("config", "argv_api", args2, sizeof args2 - 1);
}

/* ---------- identity (first byte: 0 key file, 1 trust file, 2 cluster key file) ---------- */

static void identities(void)
{
    struct keypair a, b;
    keypair_generate(&a);
    keypair_generate(&b);
    char apk[2 * HS_KEY_LEN + 1], ask[2 * HS_KEY_LEN + 1], bpk[2 * HS_KEY_LEN + 1], text[1024];
    key_hex(a.pk, apk);
    key_hex(a.sk, ask);
    key_hex(b.pk, bpk);
    snprintf(text, sizeof text, "%c# distsup node key (X25519). Keep it secret.\npublic %s\nsecret %s\n", 0, apk, ask);
    put("identity", "key", text, 1 + strlen(text + 1));
    snprintf(text, sizeof text, "%c\tpublic %s  \r\n\nsecret %s\n", 0, apk, bpk);
    put("identity", "key_mismatch", text, 1 + strlen(text + 1));
    snprintf(text, sizeof text, "%cpublic %.60s\n", 0, apk);
    put("identity", "key_short", text, 1 + strlen(text + 1));
    snprintf(text, sizeof text, "\1# the cluster\n%s node1@host1\n%s node2@host2 # comment\n%s\n\n%s node2@host2\n",
             apk, bpk, apk, bpk);
    put_str("identity", "trust", text);
    snprintf(text, sizeof text, "\1%s node1@host1\n%s node1@host1\n", apk, bpk);
    put_str("identity", "trust_name_twice", text);
    snprintf(text, sizeof text, "\1%s a b\n", apk);
    put_str("identity", "trust_two_names", text);
    snprintf(text, sizeof text, "\1%s node1@host1\n%s other\n", apk, apk);
    put_str("identity", "trust_key_renamed", text);
    put_str("identity", "psk", "\2correct horse battery staple\n");
    put_str("identity", "psk_short", "\2  short  \n");
    sodium_memzero(&a, sizeof a);
    sodium_memzero(&b, sizeof b);
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gen_seeds DIR\n");
        return 2;
    }
    if (sodium_init() < 0) return 1;
    root = argv[1];
    frames();
    specs();
    peer();
    reflection();
    configs();
    identities();
    return failed;
}

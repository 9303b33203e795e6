/* Unit tests of the SQLite store (sidecar/store.h) on real database files in a
 * scratch directory: round trips, order, reopening, WAL, transactions, and the
 * errors store_open gives for corrupt files and unusable directories. */
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "sidecar/store.h"

/* ---------- scratch directories ---------- */

struct scratch {
    char root[PATH_MAX]; /* removed at teardown */
    char data[PATH_MAX]; /* root/data: not created yet; store_open makes it */
    char db[PATH_MAX];   /* data/distsup.db */
};

static int rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT) fprintf(stderr, "cannot remove %s: %s\n", path, strerror(errno));
    return 0;
}

static int setup(void **state)
{
    struct scratch *s = calloc(1, sizeof *s);
    if (!s) return -1;
    const char *tmp = getenv("TEST_TMPDIR");
    snprintf(s->root, sizeof s->root, "%s/store-test-XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(s->root)) {
        free(s);
        return -1;
    }
    snprintf(s->data, sizeof s->data, "%s/data", s->root);
    snprintf(s->db, sizeof s->db, "%s/distsup.db", s->data);
    *state = s;
    return 0;
}

static int teardown(void **state)
{
    struct scratch *s = *state;
    chmod(s->root, 0700);
    chmod(s->data, 0700);
    nftw(s->root, rm_one, 16, FTW_DEPTH | FTW_PHYS);
    free(s);
    return 0;
}

static struct store *open_ok(const char *dir)
{
    char err[512] = "";
    struct store *st = store_open(dir, err, sizeof err);
    if (!st) fail_msg("store_open(%s): %s", dir, err);
    return st;
}

/* store_open must fail; returns its message, which must name what went wrong. */
static const char *open_fails(const char *dir, const char *want1, const char *want2)
{
    static char err[1024];
    memset(err, 0, sizeof err);
    struct store *st = store_open(dir, err, sizeof err);
    if (st) {
        store_close(st);
        fail_msg("store_open(%s) succeeded; expected an error", dir);
    }
    if (!err[0]) fail_msg("store_open(%s) failed without a message", dir);
    if (want1 && !strstr(err, want1)) fail_msg("message '%s' lacks '%s'", err, want1);
    if (want2 && !strstr(err, want2)) fail_msg("message '%s' lacks '%s'", err, want2);
    /* one line of it in the test log (SQLite's integrity report can be long) */
    char line[240];
    snprintf(line, sizeof line, "%s", err);
    char *nl = strchr(line, '\n');
    if (nl) *nl = 0;
    print_message("  store_open refused %s: %s\n", dir, line);
    return err;
}

static void write_file(const char *path, const void *p, size_t n, off_t at)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0600);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, p, n, at), (ssize_t)n);
    assert_int_equal(fsync(fd), 0);
    assert_int_equal(close(fd), 0);
}

/* ---------- loading into a list ---------- */

#define MAX_ROWS 2048
struct row {
    char sup[64], name[64];
    uint8_t spec[256];
    size_t spec_len;
    int state;
    uint32_t restarts;
    uint64_t incarnation;
};
struct rows {
    struct row r[MAX_ROWS];
    size_t n;
    size_t stop_at; /* 0: never; k: fn returns 7 on the k-th row */
};

static int collect(void *arg, const struct store_child *c)
{
    struct rows *rs = arg;
    assert_true(rs->n < MAX_ROWS);
    struct row *r = &rs->r[rs->n++];
    assert_non_null(c->supervisor);
    assert_non_null(c->name);
    assert_true(strlen(c->supervisor) < sizeof r->sup && strlen(c->name) < sizeof r->name);
    assert_true(c->spec_len <= sizeof r->spec);
    strcpy(r->sup, c->supervisor);
    strcpy(r->name, c->name);
    if (c->spec_len) memcpy(r->spec, c->spec, c->spec_len);
    r->spec_len = c->spec_len;
    r->state = c->state;
    r->restarts = c->restarts;
    r->incarnation = c->incarnation;
    return rs->stop_at && rs->n == rs->stop_at ? 7 : 0;
}

static struct rows *load(struct store *st)
{
    static struct rows rs;
    memset(&rs, 0, sizeof rs);
    assert_int_equal(store_load_children(st, collect, &rs), 0);
    return &rs;
}

static void put(struct store *st, const char *sup, const char *name, const char *spec, int state, uint32_t restarts,
                uint64_t inc)
{
    struct store_child c = {.supervisor = sup,
                            .name = name,
                            .spec = (const uint8_t *)spec,
                            .spec_len = strlen(spec),
                            .state = state,
                            .restarts = restarts,
                            .incarnation = inc};
    assert_int_equal(store_put_child(st, &c), 0);
}

static void assert_names(const struct rows *rs, const char *const *names, size_t n)
{
    assert_int_equal(rs->n, n);
    for (size_t i = 0; i < n; i++) assert_string_equal(rs->r[i].name, names[i]);
}

/* ---------- tests ---------- */

static void test_put_and_load_round_trip(void **state)
{
    struct scratch *s = *state;
    struct store *st = open_ok(s->data);
    struct stat sb;
    assert_int_equal(stat(s->data, &sb), 0); /* the data dir was created ... */
    assert_true(S_ISDIR(sb.st_mode));
    assert_int_equal(sb.st_mode & 0777, 0700); /* ... private */
    assert_int_equal(stat(s->db, &sb), 0);

    assert_int_equal(load(st)->n, 0);
    /* binary spec bytes, including NULs, survive as they are */
    const uint8_t bin[] = {0x0a, 0x00, 0x12, 0xff, 0x00, 0x7f};
    struct store_child c = {.supervisor = "default",
                            .name = "a",
                            .spec = bin,
                            .spec_len = sizeof bin,
                            .state = STORE_RUNNING,
                            .restarts = 0,
                            .incarnation = 1};
    assert_int_equal(store_put_child(st, &c), 0);
    put(st, "jobs", "b", "spec-b", STORE_FAILED, UINT32_MAX, UINT64_MAX);
    put(st, "default", "c", "spec-c", STORE_RUNNING, 7, 1ull << 40);
    struct rows *rs = load(st);
    assert_int_equal(rs->n, 3);
    assert_string_equal(rs->r[0].sup, "default");
    assert_string_equal(rs->r[0].name, "a");
    assert_int_equal(rs->r[0].spec_len, sizeof bin);
    assert_memory_equal(rs->r[0].spec, bin, sizeof bin);
    assert_int_equal(rs->r[0].state, STORE_RUNNING);
    assert_int_equal(rs->r[0].incarnation, 1);
    assert_string_equal(rs->r[1].sup, "jobs");
    assert_int_equal(rs->r[1].state, STORE_FAILED);
    assert_int_equal(rs->r[1].restarts, UINT32_MAX);
    assert_int_equal(rs->r[1].incarnation, UINT64_MAX);
    assert_int_equal(rs->r[1].spec_len, 6);
    assert_memory_equal(rs->r[1].spec, "spec-b", 6);
    assert_int_equal(rs->r[2].restarts, 7);
    assert_int_equal(rs->r[2].incarnation, 1ull << 40);
    /* loading twice gives the same (the statement is reset) */
    assert_int_equal(load(st)->n, 3);
    store_close(st);
}

static char *query_text(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *q = NULL;
    assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK);
    char *out = NULL;
    if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_text(q, 0))
        out = strdup((const char *)sqlite3_column_text(q, 0));
    sqlite3_finalize(q);
    assert_non_null(out);
    return out;
}

/* Specs are group-committed: another connection (a daemon after a crash) sees a
 * put only once store_flush ran; the daemon flushes before it answers a start. */
static void test_put_is_on_disk_after_flush(void **state)
{
    struct scratch *s = *state;
    struct store *st = open_ok(s->data);
    put(st, "default", "g1", "spec-g1", STORE_RUNNING, 0, 1);
    put(st, "default", "g2", "spec-g2", STORE_RUNNING, 0, 1);
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open_v2(s->db, &other, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    char *n = query_text(other, "SELECT count(*) FROM children");
    assert_string_equal(n, "0");
    free(n);
    assert_int_equal(store_flush(st), 0);
    n = query_text(other, "SELECT count(*) FROM children");
    assert_string_equal(n, "2");
    free(n);
    assert_int_equal(store_flush(st), 0); /* nothing pending: a no-op */
    sqlite3_close(other);
    store_close(st);
}

static void test_insertion_order_is_kept(void **state)
{
    struct scratch *s = *state;
    struct store *st = open_ok(s->data);
    /* names that sort differently from their insertion order */
    const char *const names[] = {"zeta", "alpha", "mu", "beta", "omega", "delta"};
    for (size_t i = 0; i < 6; i++) put(st, "default", names[i], "x", STORE_RUNNING, 0, 1);
    assert_names(load(st), names, 6);
    /* putting an existing child again updates it in place: its position stays */
    put(st, "default", "alpha", "new-spec", STORE_RUNNING, 2, 3);
    struct rows *rs = load(st);
    assert_names(rs, names, 6);
    assert_int_equal(rs->r[1].spec_len, 8);
    assert_memory_equal(rs->r[1].spec, "new-spec", 8);
    assert_int_equal(rs->r[1].incarnation, 3);
    /* deleting from the middle keeps the others' order; a re-added name goes last */
    assert_int_equal(store_delete_child(st, "default", "mu"), 0);
    const char *const after[] = {"zeta", "alpha", "beta", "omega", "delta"};
    assert_names(load(st), after, 5);
    put(st, "default", "mu", "x", STORE_RUNNING, 0, 1);
    const char *const readded[] = {"zeta", "alpha", "beta", "omega", "delta", "mu"};
    assert_names(load(st), readded, 6);
    /* many rows */
    char name[32];
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "n%04d", 999 - i);
        put(st, "bulk", name, "x", STORE_RUNNING, 0, 1);
    }
    rs = load(st);
    assert_int_equal(rs->n, 1006);
    for (int i = 0; i < 1000; i++) {
        snprintf(name, sizeof name, "n%04d", 999 - i);
        assert_string_equal(rs->r[6 + i].name, name);
    }
    store_close(st);
}

static void test_update_state_and_delete(void **state)
{
    struct scratch *s = *state;
    struct store *st = open_ok(s->data);
    put(st, "default", "w", "the-spec", STORE_RUNNING, 0, 1);
    put(st, "other", "w", "other-spec", STORE_RUNNING, 0, 1); /* same name, other supervisor */
    assert_int_equal(store_set_child_state(st, "default", "w", STORE_FAILED, 3, 4), 0);
    struct rows *rs = load(st);
    assert_int_equal(rs->n, 2);
    assert_int_equal(rs->r[0].state, STORE_FAILED);
    assert_int_equal(rs->r[0].restarts, 3);
    assert_int_equal(rs->r[0].incarnation, 4);
    assert_memory_equal(rs->r[0].spec, "the-spec", 8); /* the spec is untouched */
    assert_int_equal(rs->r[1].state, STORE_RUNNING);   /* the namesake too */
    assert_int_equal(rs->r[1].incarnation, 1);
    /* updating or deleting a child that is not there changes nothing */
    assert_int_equal(store_set_child_state(st, "default", "ghost", STORE_FAILED, 1, 1), 0);
    assert_int_equal(store_delete_child(st, "default", "ghost"), 0);
    assert_int_equal(load(st)->n, 2);
    assert_int_equal(store_delete_child(st, "default", "w"), 0);
    rs = load(st);
    assert_int_equal(rs->n, 1);
    assert_string_equal(rs->r[0].sup, "other");
    assert_int_equal(store_delete_child(st, "other", "w"), 0);
    assert_int_equal(load(st)->n, 0);
    store_close(st);
}

static void test_reopen_sees_the_data(void **state)
{
    struct scratch *s = *state;
    struct store *st = open_ok(s->data);
    put(st, "default", "p1", "s1", STORE_RUNNING, 1, 2);
    put(st, "default", "p2", "s2", STORE_FAILED, 3, 4);
    put(st, "default", "gone", "s3", STORE_RUNNING, 0, 1);
    assert_int_equal(store_delete_child(st, "default", "gone"), 0);
    assert_int_equal(store_set_child_state(st, "default", "p1", STORE_RUNNING, 5, 6), 0);
    store_close(st);

    st = open_ok(s->data);
    struct rows *rs = load(st);
    const char *const names[] = {"p1", "p2"};
    assert_names(rs, names, 2);
    assert_int_equal(rs->r[0].restarts, 5);
    assert_int_equal(rs->r[0].incarnation, 6);
    assert_int_equal(rs->r[1].state, STORE_FAILED);
    /* and it keeps working after the reopen */
    put(st, "default", "p3", "s4", STORE_RUNNING, 0, 1);
    store_close(st);
    st = open_ok(s->data);
    assert_int_equal(load(st)->n, 3);
    store_close(st);
}

static void test_wal_mode_and_schema(void **state)
{
    struct scratch *s = *state;
    struct store *st = open_ok(s->data);
    put(st, "default", "a", "x", STORE_RUNNING, 0, 1);
    assert_int_equal(store_flush(st), 0);
    /* WAL: the write went to distsup.db-wal while the store is open */
    char wal[PATH_MAX + 8];
    snprintf(wal, sizeof wal, "%s-wal", s->db);
    struct stat sb;
    assert_int_equal(stat(wal, &sb), 0);
    /* another connection sees journal_mode=wal (it is persistent in the file) and the row */
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(s->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    char *mode = query_text(db, "PRAGMA journal_mode");
    assert_string_equal(mode, "wal");
    free(mode);
    char *ver = query_text(db, "SELECT value FROM meta WHERE key = 'schema_version'");
    assert_string_equal(ver, "1");
    free(ver);
    char *n = query_text(db, "SELECT count(*) FROM children");
    assert_string_equal(n, "1");
    free(n);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    store_close(st);
    /* closed cleanly: the WAL was checkpointed into the main file, still WAL mode */
    assert_int_equal(sqlite3_open_v2(s->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    mode = query_text(db, "PRAGMA journal_mode");
    assert_string_equal(mode, "wal");
    free(mode);
    n = query_text(db, "SELECT name FROM children");
    assert_string_equal(n, "a");
    free(n);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
}

/* store_begin groups writes: another reader sees none of them until store_commit. */
static void test_begin_commit_groups_writes(void **state)
{
    struct scratch *s = *state;
    struct store *st = open_ok(s->data);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(s->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    assert_int_equal(store_commit(st), 0); /* no transaction: nothing to do */
    assert_int_equal(store_begin(st), 0);
    assert_int_equal(store_begin(st), 0); /* nested begin is a no-op */
    char name[16];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "t%d", i);
        put(st, "default", name, "x", STORE_RUNNING, 0, 1);
    }
    char *n = query_text(db, "SELECT count(*) FROM children");
    assert_string_equal(n, "0");
    free(n);
    assert_int_equal(load(st)->n, 100); /* the writer sees its own writes */
    assert_int_equal(store_commit(st), 0);
    n = query_text(db, "SELECT count(*) FROM children");
    assert_string_equal(n, "100");
    free(n);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    store_close(st);
}

/* ---------- the cluster child cache ---------- */

struct cache_rows {
    size_t n;
    char key[8][64]; /* "supervisor/name@node=info" */
};

static int collect_cache(void *arg, const char *supervisor, const char *name, const char *node, const uint8_t *info,
                         size_t len)
{
    struct cache_rows *r = arg;
    if (r->n == 8) return -1;
    snprintf(r->key[r->n++], sizeof r->key[0], "%s/%s@%s=%.*s", supervisor, name, node, (int)len, (const char *)info);
    return 0;
}

static int has_key(const struct cache_rows *r, const char *key)
{
    for (size_t i = 0; i < r->n; i++)
        if (!strcmp(r->key[i], key)) return 1;
    return 0;
}

static void test_cache_put_replace_delete_and_reload(void **state)
{
    struct scratch *s = *state;
    struct store *st = open_ok(s->data);
    const uint8_t a[] = "info-a", b[] = "info-b", c[] = "info-c";
    assert_int_equal(store_cache_put(st, "default", "x", "n2", a, 6), 0);
    assert_int_equal(store_cache_put(st, "default", "y", "n3", b, 6), 0);
    assert_int_equal(store_cache_put(st, "other", "x", "n2", b, 6), 0);   /* same name, other supervisor */
    assert_int_equal(store_cache_put(st, "default", "x", "n3", c, 6), 0); /* moved: replaces */
    assert_int_equal(store_cache_delete(st, "default", "y"), 0);
    assert_int_equal(store_cache_delete(st, "default", "never"), 0); /* absent: fine */
    assert_int_equal(store_flush(st), 0);
    assert_int_equal(store_flush(st), 0); /* nothing open: nothing to do */
    store_close(st);

    st = open_ok(s->data);
    struct cache_rows r = {0};
    assert_int_equal(store_cache_load(st, collect_cache, &r), 0);
    assert_int_equal(r.n, 2);
    assert_true(has_key(&r, "default/x@n3=info-c"));
    assert_true(has_key(&r, "other/x@n2=info-b"));
    /* the cache and this node's own children are apart */
    assert_int_equal(load(st)->n, 0);
    store_close(st);
}

/* SELECT count(*) FROM table, on another connection, is want. */
static void assert_rows(sqlite3 *db, const char *table, const char *want)
{
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT count(*) FROM %s", table);
    char *n = query_text(db, sql);
    assert_string_equal(n, want);
    free(n);
}

static void test_every_write_is_batched_until_flush(void **state)
{
    struct scratch *s = *state;
    struct store *st = open_ok(s->data);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(s->db, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    const uint8_t info[] = "i";
    char name[16];
    for (int i = 0; i < 50; i++) {
        snprintf(name, sizeof name, "c%d", i);
        assert_int_equal(store_cache_put(st, "default", name, "n2", info, 1), 0);
    }
    /* another connection sees nothing of an open batch ... */
    assert_rows(db, "cache", "0");
    /* ... nor of a spec put in it (group commit: the daemon flushes before it answers) */
    put(st, "default", "own", "spec", STORE_RUNNING, 0, 1);
    assert_rows(db, "cache", "0");
    assert_rows(db, "children", "0");
    /* ... nor of a state update (batched as well) ... */
    assert_int_equal(store_set_child_state(st, "default", "own", STORE_RUNNING, 1, 2), 0);
    assert_rows(db, "children", "0");
    /* ... nor of a delete (TerminateChild: the reactor commits the turn's removals,
     * then answers them) ... */
    assert_int_equal(store_delete_child(st, "default", "nobody"), 0);
    assert_rows(db, "children", "0");
    /* ... until store_flush commits them all in one */
    assert_int_equal(store_flush(st), 0);
    assert_rows(db, "cache", "50");
    assert_rows(db, "children", "1");
    assert_int_equal(store_delete_child(st, "default", "own"), 0);
    assert_rows(db, "children", "1");
    assert_int_equal(store_flush(st), 0);
    assert_rows(db, "children", "0");
    /* and a later batch waits for store_flush */
    assert_int_equal(store_cache_delete(st, "default", "c0"), 0);
    assert_rows(db, "cache", "50");
    assert_int_equal(store_flush(st), 0);
    assert_rows(db, "cache", "49");
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    store_close(st);
}

static void test_cache_load_callback_stops_the_walk(void **state)
{
    struct scratch *s = *state;
    struct store *st = open_ok(s->data);
    const uint8_t info[] = "i";
    char name[16];
    for (int i = 0; i < 20; i++) {
        snprintf(name, sizeof name, "c%d", i);
        assert_int_equal(store_cache_put(st, "default", name, "n2", info, 1), 0);
    }
    assert_int_equal(store_flush(st), 0);
    struct cache_rows r = {0}; /* collect_cache answers -1 at the 9th row */
    assert_int_equal(store_cache_load(st, collect_cache, &r), -1);
    assert_int_equal(r.n, 8);
    store_close(st);
}

static void test_load_callback_stops_the_walk(void **state)
{
    struct scratch *s = *state;
    struct store *st = open_ok(s->data);
    for (int i = 0; i < 5; i++) {
        char name[8];
        snprintf(name, sizeof name, "c%d", i);
        put(st, "default", name, "x", STORE_RUNNING, 0, 1);
    }
    static struct rows rs;
    memset(&rs, 0, sizeof rs);
    rs.stop_at = 2;
    assert_int_equal(store_load_children(st, collect, &rs), 7);
    assert_int_equal(rs.n, 2);
    /* the next walk starts from the first row again */
    assert_int_equal(load(st)->n, 5);
    store_close(st);
}

/* ---------- errors ---------- */

static void test_garbage_file_is_refused(void **state)
{
    struct scratch *s = *state;
    assert_int_equal(mkdir(s->data, 0700), 0);
    char junk[8192];
    for (size_t i = 0; i < sizeof junk; i++) junk[i] = "this is not a database\n"[i % 23];
    write_file(s->db, junk, sizeof junk, 0);
    open_fails(s->data, s->db, "not a database");
    /* the file was left as it was: nothing overwritten */
    char back[64];
    int fd = open(s->db, O_RDONLY | O_CLOEXEC);
    assert_true(fd >= 0);
    assert_int_equal(read(fd, back, sizeof back), (ssize_t)sizeof back);
    assert_int_equal(close(fd), 0);
    assert_memory_equal(back, junk, sizeof back);
}

/* A real database whose header is intact but whose pages were damaged. */
static void test_damaged_pages_are_refused(void **state)
{
    struct scratch *s = *state;
    struct store *st = open_ok(s->data);
    static char spec[200];
    memset(spec, 's', sizeof spec - 1);
    char name[32];
    for (int i = 0; i < 400; i++) {
        snprintf(name, sizeof name, "child-%d", i);
        put(st, "default", name, spec, STORE_RUNNING, 0, 1);
    }
    store_close(st);
    struct stat sb;
    assert_int_equal(stat(s->db, &sb), 0);
    assert_true(sb.st_size >= 8 * 4096); /* several pages */
    /* scribble over pages 2..5 (the header page, 1, stays valid) */
    static char junk[4 * 4096];
    memset(junk, 0xA5, sizeof junk);
    write_file(s->db, junk, sizeof junk, 4096);
    open_fails(s->data, s->db, NULL);
}

/* An empty distsup.db is a new, empty database (as sqlite3 treats it), not an error. */
static void test_empty_file_is_a_new_database(void **state)
{
    struct scratch *s = *state;
    assert_int_equal(mkdir(s->data, 0700), 0);
    write_file(s->db, "", 0, 0);
    struct store *st = open_ok(s->data);
    assert_int_equal(load(st)->n, 0);
    put(st, "default", "a", "x", STORE_RUNNING, 0, 1);
    store_close(st);
}

static void test_file_where_the_dir_should_be(void **state)
{
    struct scratch *s = *state;
    write_file(s->data, "x", 1, 0);
    open_fails(s->data, s->data, "not a directory");
    /* and a dir below a file cannot be created */
    char below[PATH_MAX + 8];
    snprintf(below, sizeof below, "%s/sub", s->data);
    open_fails(below, below, "cannot create data dir");
    /* a directory where the database file should be */
    char other[PATH_MAX + 16];
    snprintf(other, sizeof other, "%s/d2", s->root);
    assert_int_equal(mkdir(other, 0700), 0);
    snprintf(other, sizeof other, "%s/d2/distsup.db", s->root);
    assert_int_equal(mkdir(other, 0700), 0);
    snprintf(other, sizeof other, "%s/d2", s->root);
    open_fails(other, "distsup.db", NULL);
}

static void test_missing_parent_dir(void **state)
{
    struct scratch *s = *state;
    char deep[PATH_MAX + 16];
    snprintf(deep, sizeof deep, "%s/no/such/dir", s->root);
    open_fails(deep, deep, "cannot create data dir");
    assert_int_equal(access(deep, F_OK), -1);
}

/* A directory the daemon cannot write: a read-only mode bit when we are not root
 * (root ignores those), and a directory of /proc, where nobody can create files. */
static void test_unwritable_dir(void **state)
{
    struct scratch *s = *state;
    if (geteuid() != 0) {
        assert_int_equal(mkdir(s->data, 0500), 0);
        open_fails(s->data, s->db, "cannot open database");
        char sub[PATH_MAX + 8];
        snprintf(sub, sizeof sub, "%s/sub", s->data);
        open_fails(sub, sub, "cannot create data dir");
    } else {
        print_message("  running as root: mode bits do not stop root; using /proc instead\n");
    }
    open_fails("/proc/self", "/proc/self/distsup.db", "cannot open database");
    open_fails("/proc/self/distsup-data", "/proc/self/distsup-data", "cannot create data dir");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_put_and_load_round_trip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_put_is_on_disk_after_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_insertion_order_is_kept, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_state_and_delete, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reopen_sees_the_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wal_mode_and_schema, setup, teardown),
        cmocka_unit_test_setup_teardown(test_begin_commit_groups_writes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_load_callback_stops_the_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_put_replace_delete_and_reload, setup, teardown),
        cmocka_unit_test_setup_teardown(test_every_write_is_batched_until_flush, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cache_load_callback_stops_the_walk, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_file_is_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_damaged_pages_are_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_file_is_a_new_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_where_the_dir_should_be, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_parent_dir, setup, teardown),
        cmocka_unit_test_setup_teardown(test_unwritable_dir, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

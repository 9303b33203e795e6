#include "sidecar/store.h"

#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sidecar/log.h"
#include "sidecar/metrics.h"

struct store {
    sqlite3 *db;
    sqlite3_stmt *put, *set_state, *set_proc, *del, *del_all, *load, *begin, *commit, *rollback;
    sqlite3_stmt *c_put, *c_del, *c_load;
    int in_txn;              /* store_begin .. store_commit */
    int in_batch;            /* a cache batch is open */
    int dirty;               /* a write or a commit of a batch failed: the file lacks some of it */
    struct metrics *metrics; /* write latency (NULL: off) */
};

static const char schema[] = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
                             "CREATE TABLE IF NOT EXISTS children ("
                             "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
                             "  supervisor TEXT NOT NULL, name TEXT NOT NULL, spec BLOB NOT NULL,"
                             "  state INTEGER NOT NULL, restarts INTEGER NOT NULL, incarnation INTEGER NOT NULL,"
                             "  UNIQUE (supervisor, name));"
                             "CREATE TABLE IF NOT EXISTS cache ("
                             "  supervisor TEXT NOT NULL, name TEXT NOT NULL, node TEXT NOT NULL, info BLOB NOT NULL,"
                             "  PRIMARY KEY (supervisor, name));"
                             "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', '1');";

static int prep(struct store *s, const char *sql, sqlite3_stmt **st, char *err, size_t errlen)
{
    if (sqlite3_prepare_v2(s->db, sql, -1, st, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "cannot prepare '%.40s...': %s", sql, sqlite3_errmsg(s->db));
        return -1;
    }
    return 0;
}

static int exec_sql(sqlite3 *db, const char *sql, const char *path, char *err, size_t errlen)
{
    char *msg = NULL;
    if (sqlite3_exec(db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        snprintf(err, errlen, "database %s: %s", path, msg ? msg : sqlite3_errmsg(db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

struct store *store_open(const char *dir, char *err, size_t errlen)
{
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create data dir %s: %s", dir, strerror(errno));
        return NULL;
    }
    struct stat st;
    if (stat(dir, &st) != 0 || !S_ISDIR(st.st_mode)) {
        snprintf(err, errlen, "data dir %s is not a directory", dir);
        return NULL;
    }
    char path[PATH_MAX];
    if (snprintf(path, sizeof path, "%s/distsup.db", dir) >= (int)sizeof path) {
        snprintf(err, errlen, "data dir path is too long");
        return NULL;
    }
    struct store *s = calloc(1, sizeof *s);
    if (!s) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open database %s: %s", path, s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
        goto fail;
    }
    sqlite3_busy_timeout(s->db, 5000);
    /* quick_check reads every page: a file that is not a database, or a damaged
     * one, is refused here rather than half-way through serving. */
    sqlite3_stmt *chk = NULL;
    if (sqlite3_prepare_v2(s->db, "PRAGMA quick_check", -1, &chk, NULL) != SQLITE_OK) {
        snprintf(err, errlen, "database %s is not usable (corrupt or not a database?): %s", path,
                 sqlite3_errmsg(s->db));
        goto fail;
    }
    rc = sqlite3_step(chk);
    const unsigned char *res = rc == SQLITE_ROW ? sqlite3_column_text(chk, 0) : NULL;
    if (!res || strcmp((const char *)res, "ok") != 0) {
        snprintf(err, errlen, "database %s failed its integrity check: %s", path,
                 res ? (const char *)res : sqlite3_errmsg(s->db));
        sqlite3_finalize(chk);
        goto fail;
    }
    sqlite3_finalize(chk);
    if (exec_sql(s->db, "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;", path, err, errlen) ||
        exec_sql(s->db, schema, path, err, errlen))
        goto fail;
    /* Databases from before the process group was recorded get its columns. */
    sqlite3_stmt *has = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT pgid FROM children LIMIT 0", -1, &has, NULL) != SQLITE_OK &&
        exec_sql(s->db,
                 "ALTER TABLE children ADD COLUMN pgid INTEGER NOT NULL DEFAULT 0;"
                 "ALTER TABLE children ADD COLUMN pg_start INTEGER NOT NULL DEFAULT 0;",
                 path, err, errlen))
        goto fail;
    sqlite3_finalize(has);
    if (prep(s,
             "INSERT INTO children (supervisor, name, spec, state, restarts, incarnation) "
             "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (supervisor, name) DO UPDATE SET "
             "spec = ?3, state = ?4, restarts = ?5, incarnation = ?6",
             &s->put, err, errlen) ||
        prep(s,
             "UPDATE children SET state = ?3, restarts = ?4, incarnation = ?5 "
             "WHERE supervisor = ?1 AND name = ?2",
             &s->set_state, err, errlen) ||
        prep(s, "UPDATE children SET pgid = ?3, pg_start = ?4 WHERE supervisor = ?1 AND name = ?2", &s->set_proc, err,
             errlen) ||
        prep(s, "DELETE FROM children WHERE supervisor = ?1 AND name = ?2", &s->del, err, errlen) ||
        prep(s, "DELETE FROM children", &s->del_all, err, errlen) || prep(s, "ROLLBACK", &s->rollback, err, errlen) ||
        prep(s,
             "SELECT supervisor, name, spec, state, restarts, incarnation, pgid, pg_start FROM children "
             "ORDER BY seq",
             &s->load, err, errlen) ||
        prep(s, "BEGIN IMMEDIATE", &s->begin, err, errlen) || prep(s, "COMMIT", &s->commit, err, errlen) ||
        prep(s,
             "INSERT INTO cache (supervisor, name, node, info) VALUES (?1, ?2, ?3, ?4) "
             "ON CONFLICT (supervisor, name) DO UPDATE SET node = ?3, info = ?4",
             &s->c_put, err, errlen) ||
        prep(s, "DELETE FROM cache WHERE supervisor = ?1 AND name = ?2", &s->c_del, err, errlen) ||
        prep(s, "SELECT supervisor, name, node, info FROM cache", &s->c_load, err, errlen))
        goto fail;
    return s;
fail:
    store_close(s);
    return NULL;
}

void store_close(struct store *s)
{
    if (!s) return;
    if (s->db && s->commit && s->in_batch) store_flush(s);
    sqlite3_finalize(s->put);
    sqlite3_finalize(s->set_state);
    sqlite3_finalize(s->set_proc);
    sqlite3_finalize(s->del);
    sqlite3_finalize(s->load);
    sqlite3_finalize(s->begin);
    sqlite3_finalize(s->commit);
    sqlite3_finalize(s->rollback);
    sqlite3_finalize(s->del_all);
    sqlite3_finalize(s->c_put);
    sqlite3_finalize(s->c_del);
    sqlite3_finalize(s->c_load);
    if (s->db && sqlite3_close(s->db) != SQLITE_OK)
        log_error("store", "closing the database: %s", sqlite3_errmsg(s->db));
    free(s);
}

void store_set_metrics(struct store *s, struct metrics *m) { s->metrics = m; }

/* Every write goes through here: a statement, BEGIN or COMMIT (where the fsync is). */
static int run(struct store *s, sqlite3_stmt *st, const char *what)
{
    uint64_t t0 = s->metrics ? metrics_now_ns() : 0;
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (s->metrics) metrics_store_write(s->metrics, metrics_now_ns() - t0);
    if (rc != SQLITE_DONE) {
        metrics_add(s->metrics, MN_STORE_WRITES_FAILED, 1);
        log_error("store", "%s failed: %s", what, sqlite3_errmsg(s->db));
        if (s->in_batch) s->dirty = 1; /* the batch lacks this write, whatever becomes of it */
        return -1;
    }
    return 0;
}

/* Ends a failed transaction (SQLite may have rolled it back already: a disk full). */
static void abandon(struct store *s)
{
    s->in_batch = 0;
    if (sqlite3_get_autocommit(s->db)) return;
    sqlite3_step(s->rollback);
    sqlite3_reset(s->rollback);
}

static int batch(struct store *s);

int store_put_child(struct store *s, const struct store_child *c)
{
    if (batch(s) != 0) return -1;
    sqlite3_bind_text(s->put, 1, c->supervisor, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->put, 2, c->name, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s->put, 3, c->spec, (int)c->spec_len, SQLITE_STATIC);
    sqlite3_bind_int(s->put, 4, c->state);
    sqlite3_bind_int64(s->put, 5, c->restarts);
    sqlite3_bind_int64(s->put, 6, (sqlite3_int64)c->incarnation);
    return run(s, s->put, "saving a child spec");
}

int store_set_child_state(struct store *s, const char *supervisor, const char *name, int state, uint32_t restarts,
                          uint64_t incarnation)
{
    if (batch(s) != 0) return -1;
    sqlite3_bind_text(s->set_state, 1, supervisor, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->set_state, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_int(s->set_state, 3, state);
    sqlite3_bind_int64(s->set_state, 4, restarts);
    sqlite3_bind_int64(s->set_state, 5, (sqlite3_int64)incarnation);
    return run(s, s->set_state, "updating a child's state");
}

int store_set_child_proc(struct store *s, const char *supervisor, const char *name, int64_t pgid, uint64_t pg_start)
{
    if (batch(s) != 0) return -1;
    sqlite3_bind_text(s->set_proc, 1, supervisor, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->set_proc, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_int64(s->set_proc, 3, pgid);
    sqlite3_bind_int64(s->set_proc, 4, (sqlite3_int64)pg_start);
    return run(s, s->set_proc, "recording a child's process group");
}

int store_delete_child(struct store *s, const char *supervisor, const char *name)
{
    if (batch(s) != 0) return -1;
    sqlite3_bind_text(s->del, 1, supervisor, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->del, 2, name, -1, SQLITE_STATIC);
    return run(s, s->del, "deleting a child");
}

int store_load_children(struct store *s, store_child_fn fn, void *arg)
{
    int rc, ret = 0;
    while ((rc = sqlite3_step(s->load)) == SQLITE_ROW) {
        struct store_child c = {
            .supervisor = (const char *)sqlite3_column_text(s->load, 0),
            .name = (const char *)sqlite3_column_text(s->load, 1),
            .spec = sqlite3_column_blob(s->load, 2),
            .spec_len = (size_t)sqlite3_column_bytes(s->load, 2),
            .state = sqlite3_column_int(s->load, 3),
            .restarts = (uint32_t)sqlite3_column_int64(s->load, 4),
            .incarnation = (uint64_t)sqlite3_column_int64(s->load, 5),
            .pgid = sqlite3_column_int64(s->load, 6),
            .pg_start = (uint64_t)sqlite3_column_int64(s->load, 7),
        };
        if (!c.supervisor || !c.name) continue;
        if ((ret = fn(arg, &c)) != 0) break;
    }
    if (ret == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        log_error("store", "loading children: %s", sqlite3_errmsg(s->db));
        ret = -1;
    }
    sqlite3_reset(s->load);
    return ret;
}

int store_begin(struct store *s)
{
    if (s->in_txn) return 0;
    if (s->in_batch && store_flush(s) != 0) return -1;
    if (run(s, s->begin, "BEGIN") != 0) return -1;
    s->in_txn = 1;
    return 0;
}

int store_commit(struct store *s)
{
    if (!s->in_txn) return 0;
    s->in_txn = 0;
    return run(s, s->commit, "COMMIT");
}

static int batch(struct store *s)
{
    if (s->in_txn || s->in_batch) return 0;
    if (run(s, s->begin, "BEGIN (cache)") != 0) return -1;
    s->in_batch = 1;
    return 0;
}

int store_flush(struct store *s)
{
    if (s->in_batch) {
        if (run(s, s->commit, "COMMIT") != 0) {
            abandon(s); /* the whole batch is lost */
            s->dirty = 1;
        }
        s->in_batch = 0;
    }
    return s->dirty ? -1 : 0;
}

int store_dirty(const struct store *s) { return s->dirty; }

int store_rewrite_children(struct store *s, int (*fill)(void *arg), void *arg)
{
    if (s->in_txn) return -1;
    if (s->in_batch) abandon(s);
    /* The WAL only grows between checkpoints (every 1,000 pages): on a full disk it is
     * what took the room; copying it into the database and truncating it gives that
     * back before the rewrite needs it. */
    int rc = sqlite3_wal_checkpoint_v2(s->db, NULL, SQLITE_CHECKPOINT_TRUNCATE, NULL, NULL);
    if (rc != SQLITE_OK) log_warn("store", "checkpoint before the rewrite: %s", sqlite3_errmsg(s->db));
    if (batch(s) != 0) return -1;
    if (run(s, s->del_all, "clearing the children table for its rewrite") != 0 || fill(arg) != 0 ||
        run(s, s->commit, "COMMIT (rewrite)") != 0) {
        abandon(s);
        return -1;
    }
    s->in_batch = 0;
    s->dirty = 0;
    return 0;
}

int store_cache_put(struct store *s, const char *supervisor, const char *name, const char *node, const uint8_t *info,
                    size_t len)
{
    if (batch(s) != 0) return -1;
    sqlite3_bind_text(s->c_put, 1, supervisor, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->c_put, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->c_put, 3, node, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s->c_put, 4, info, (int)len, SQLITE_STATIC);
    return run(s, s->c_put, "caching a peer's child");
}

int store_cache_delete(struct store *s, const char *supervisor, const char *name)
{
    if (batch(s) != 0) return -1;
    sqlite3_bind_text(s->c_del, 1, supervisor, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->c_del, 2, name, -1, SQLITE_STATIC);
    return run(s, s->c_del, "uncaching a peer's child");
}

int store_cache_load(struct store *s, store_cache_fn fn, void *arg)
{
    int rc, ret = 0;
    while ((rc = sqlite3_step(s->c_load)) == SQLITE_ROW) {
        const char *sup = (const char *)sqlite3_column_text(s->c_load, 0);
        const char *name = (const char *)sqlite3_column_text(s->c_load, 1);
        const char *node = (const char *)sqlite3_column_text(s->c_load, 2);
        if (!sup || !name || !node) continue;
        if ((ret = fn(arg, sup, name, node, sqlite3_column_blob(s->c_load, 3),
                      (size_t)sqlite3_column_bytes(s->c_load, 3))) != 0)
            break;
    }
    if (ret == 0 && rc != SQLITE_DONE && rc != SQLITE_ROW) {
        log_error("store", "loading the cluster cache: %s", sqlite3_errmsg(s->db));
        ret = -1;
    }
    sqlite3_reset(s->c_load);
    return ret;
}

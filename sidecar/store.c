#include "sidecar/store.h"

#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "sidecar/log.h"

struct store {
    sqlite3 *db;
    sqlite3_stmt *put, *set_state, *del, *load, *begin, *commit;
    int in_txn;
};

static const char schema[] =
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
    "CREATE TABLE IF NOT EXISTS children ("
    "  seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    "  supervisor TEXT NOT NULL, name TEXT NOT NULL, spec BLOB NOT NULL,"
    "  state INTEGER NOT NULL, restarts INTEGER NOT NULL, incarnation INTEGER NOT NULL,"
    "  UNIQUE (supervisor, name));"
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
    int rc = sqlite3_open_v2(path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
                                               SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "cannot open database %s: %s", path,
                 s->db ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc));
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
    if (prep(s, "INSERT INTO children (supervisor, name, spec, state, restarts, incarnation) "
                "VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (supervisor, name) DO UPDATE SET "
                "spec = ?3, state = ?4, restarts = ?5, incarnation = ?6", &s->put, err, errlen) ||
        prep(s, "UPDATE children SET state = ?3, restarts = ?4, incarnation = ?5 "
                "WHERE supervisor = ?1 AND name = ?2", &s->set_state, err, errlen) ||
        prep(s, "DELETE FROM children WHERE supervisor = ?1 AND name = ?2", &s->del, err, errlen) ||
        prep(s, "SELECT supervisor, name, spec, state, restarts, incarnation FROM children "
                "ORDER BY seq", &s->load, err, errlen) ||
        prep(s, "BEGIN IMMEDIATE", &s->begin, err, errlen) ||
        prep(s, "COMMIT", &s->commit, err, errlen))
        goto fail;
    return s;
fail:
    store_close(s);
    return NULL;
}

void store_close(struct store *s)
{
    if (!s) return;
    sqlite3_finalize(s->put);
    sqlite3_finalize(s->set_state);
    sqlite3_finalize(s->del);
    sqlite3_finalize(s->load);
    sqlite3_finalize(s->begin);
    sqlite3_finalize(s->commit);
    if (s->db && sqlite3_close(s->db) != SQLITE_OK)
        log_error("store", "closing the database: %s", sqlite3_errmsg(s->db));
    free(s);
}

static int run(struct store *s, sqlite3_stmt *st, const char *what)
{
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    if (rc != SQLITE_DONE) {
        log_error("store", "%s failed: %s", what, sqlite3_errmsg(s->db));
        return -1;
    }
    return 0;
}

int store_put_child(struct store *s, const struct store_child *c)
{
    sqlite3_bind_text(s->put, 1, c->supervisor, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->put, 2, c->name, -1, SQLITE_STATIC);
    sqlite3_bind_blob(s->put, 3, c->spec, (int)c->spec_len, SQLITE_STATIC);
    sqlite3_bind_int(s->put, 4, c->state);
    sqlite3_bind_int64(s->put, 5, c->restarts);
    sqlite3_bind_int64(s->put, 6, (sqlite3_int64)c->incarnation);
    return run(s, s->put, "saving a child spec");
}

int store_set_child_state(struct store *s, const char *supervisor, const char *name, int state,
                          uint32_t restarts, uint64_t incarnation)
{
    sqlite3_bind_text(s->set_state, 1, supervisor, -1, SQLITE_STATIC);
    sqlite3_bind_text(s->set_state, 2, name, -1, SQLITE_STATIC);
    sqlite3_bind_int(s->set_state, 3, state);
    sqlite3_bind_int64(s->set_state, 4, restarts);
    sqlite3_bind_int64(s->set_state, 5, (sqlite3_int64)incarnation);
    return run(s, s->set_state, "updating a child's state");
}

int store_delete_child(struct store *s, const char *supervisor, const char *name)
{
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

/* store: each node's durable state in one SQLite file (WAL) under the data dir.
 *
 * Holds the specs of the children this node runs, with their state, restart count
 * and incarnation, and (in cluster mode) a cache of the other nodes' children.  Writes
 * join an open batch (group commit): store_flush commits it with synchronous=FULL, and
 * the caller flushes (and checks) before it acknowledges anything the batch holds, so
 * what it acknowledged is on disk.  One connection, used by one thread at a time (the
 * supervisor core's reactor, which flushes once a turn). */
#ifndef DISTSUP_STORE_H
#define DISTSUP_STORE_H

#include <stddef.h>
#include <stdint.h>

struct store;

/* Opens (creating) DIR/distsup.db, creating DIR if missing.  Checks the file's
 * integrity; a corrupt or unwritable database gives NULL and a clear message. */
struct store *store_open(const char *dir, char *err, size_t errlen);
void store_close(struct store *s);
/* Times every write into m (sidecar/metrics.h; NULL: off).  Before the reactor starts. */
struct metrics;
void store_set_metrics(struct store *s, struct metrics *m);

/* Child states as stored. */
enum store_child_state { STORE_RUNNING = 0, STORE_FAILED = 1 };

struct store_child {
    const char *supervisor;
    const char *name;
    const uint8_t *spec; /* a packed distsup.v1.ChildSpec */
    size_t spec_len;
    int state; /* enum store_child_state */
    uint32_t restarts;
    uint64_t incarnation;
    /* its last process group and the leader's start time (0: none recorded); a
     * daemon that died leaves that group behind (proc_kill_leftovers) */
    int64_t pgid;
    uint64_t pg_start;
};

/* Inserts or replaces, in the open batch (group commit): it is on disk only after
 * the next store_flush, which the caller must run (and check) before it tells
 * anyone the child exists.  0, or -1 (logged) on failure. */
int store_put_child(struct store *s, const struct store_child *c);
/* A child's state, restarts and incarnation: in the open batch too (the reactor
 * commits it at the end of its turn: a burst of restarts, thousands of hosted
 * children whose host went away, costs one fsync). */
int store_set_child_state(struct store *s, const char *supervisor, const char *name, int state, uint32_t restarts,
                          uint64_t incarnation);
/* Deletes a child: in the open batch too (the reactor commits the turn's removals
 * together, then answers their TerminateChild requests). */
int store_delete_child(struct store *s, const char *supervisor, const char *name);
/* Records the process group of its new process.  It joins the open batch (below):
 * committed by store_flush or the next write of a child, at the latest at the end of
 * the reactor's turn.  0 or -1 (logged). */
int store_set_child_proc(struct store *s, const char *supervisor, const char *name, int64_t pgid, uint64_t pg_start);

/* Calls fn for every stored child, in insertion order.  fn's pointers are valid only
 * during the call.  A non-zero return from fn stops and is returned. */
typedef int (*store_child_fn)(void *arg, const struct store_child *c);
int store_load_children(struct store *s, store_child_fn fn, void *arg);

/* Groups the writes that follow into one transaction (one fsync) until store_commit. */
int store_begin(struct store *s);
int store_commit(struct store *s);

/* The cluster child cache: the other nodes' children as they last told us, each a
 * packed distsup.v1.ChildInfo.  Cache writes join the same batch, so a burst of
 * updates costs one fsync.  The cache can always be rebuilt from the peers; losing a
 * batch to a crash is harmless. */
int store_cache_put(struct store *s, const char *supervisor, const char *name, const char *node, const uint8_t *info,
                    size_t len);
int store_cache_delete(struct store *s, const char *supervisor, const char *name);
typedef int (*store_cache_fn)(void *arg, const char *supervisor, const char *name, const char *node,
                              const uint8_t *info, size_t len);
int store_cache_load(struct store *s, store_cache_fn fn, void *arg);
/* Commits the open batch.  0, or -1 (logged) when this commit failed or an earlier
 * write or commit did (the store is dirty, below): what is acknowledged after a -1
 * may not be on disk. */
int store_flush(struct store *s);

/* A write or a commit failed (a disk full, an I/O error): the file lacks writes the
 * caller made, and store_flush fails until store_rewrite_children succeeds. */
int store_dirty(const struct store *s);
/* Replaces every stored child with what fill writes (store_put_child and
 * store_set_child_proc of each child the caller has), in one transaction, after a
 * checkpoint that truncates the WAL (the room a full disk lacks); on success
 * the store is clean again.  0, or -1 (the store stays dirty).  Cache writes of a lost
 * batch stay lost: the cache is rebuilt from the peers. */
int store_rewrite_children(struct store *s, int (*fill)(void *arg), void *arg);

#endif

/* placement: loads placement strategies (strategies/strategy.h) and calls them safely.
 *
 * A strategy is named by the config either as a built-in ("hash_ring", "least_loaded",
 * "pinned": the file BUILTIN_DIR/NAME.so) or as a path to any shared object (a value
 * containing '/').  Loading checks everything it can before the daemon serves: the
 * file opens, it exports DS_STRATEGY_SYMBOL, abi_version and struct_size match, the
 * required functions are there, and create() accepts the options.  Every failure is
 * one message naming the file and the reason.
 *
 * Calls are checked too: an index out of range from place() or should_move() is
 * treated as "no node" with a message naming the strategy, never used.
 *
 * A struct placement is used by one thread at a time (the core's reactor). */
#ifndef DISTSUP_PLACEMENT_H
#define DISTSUP_PLACEMENT_H

#include <stddef.h>

#include "strategies/strategy.h"

struct placement;

/* strategy: a built-in name or a path.  options: the supervisor's strategy_options
 * ("" for none).  builtin_dir: where NAME.so files live.  NULL + err on failure, e.g.
 *   "strategy /x/y.so: cannot load: /x/y.so: cannot open shared object file: ..."
 *   "strategy /x/y.so: no symbol distsup_strategy (is it a distsup strategy?)"
 *   "strategy /x/y.so: ABI version 7, this distsupd speaks 1"
 *   "strategy hash_ring (/usr/lib/distsup/strategies/hash_ring.so): options rejected: ..." */
struct placement *placement_load(const char *strategy, const char *options, const char *builtin_dir, char *err,
                                 size_t errlen);
void placement_free(struct placement *p);

/* The strategy's short name, and the file it came from. */
const char *placement_name(const struct placement *p);
const char *placement_path(const struct placement *p);

/* place(): an index into nodes, or -1 with the reason in err. */
int placement_place(struct placement *p, const struct ds_child *child, const struct ds_node *nodes, size_t n_nodes,
                    char *err, size_t errlen);

/* Tells the strategy the node set changed (a no-op if it has no hook). */
void placement_nodes_changed(struct placement *p, const struct ds_node *nodes, size_t n_nodes);

/* 1 and *to set if child (now on nodes[current], or current = -1) should move;
 * 0 to stay.  Without a should_move hook: moves when place() names another node. */
int placement_should_move(struct placement *p, const struct ds_child *child, int current, const struct ds_node *nodes,
                          size_t n_nodes, int *to);

#endif

/* strategy.h: the placement strategy ABI, version 1.
 *
 * A strategy is a shared object that exports one symbol:
 *
 *     const struct ds_strategy distsup_strategy = { DS_STRATEGY_ABI_VERSION,
 *                                                   sizeof(struct ds_strategy), ... };
 *
 * distsupd dlopen()s it at start-up (a built-in by name, or any .so by path), checks
 * abi_version and struct_size, and calls create() once per supervisor that names it,
 * with that supervisor's `strategy_options` string.  A missing file, a missing
 * symbol, a wrong version or options that create() rejects stop start-up with a
 * message naming the file and the reason.
 *
 * Threading: every call for one state comes from one thread (the supervisor core's
 * reactor), never two at once.  Different states may be used from different threads.
 *
 * Determinism: place() must be a pure function of its arguments and of the options
 * given to create(): every node of the cluster calls it with the same inputs and must
 * get the same answer.  No clocks, no randomness, no process-local addresses in the
 * hashing.  A strategy may cache what it derives from the node list (a hash ring, say)
 * as long as the answer stays that pure function.
 *
 * Strings are NUL-terminated UTF-8, valid only during the call.  Nodes come sorted by
 * name (bytewise), names unique; only nodes that are up and eligible for the
 * supervisor are passed.  See docs/strategies.md for a complete example. */
#ifndef DISTSUP_STRATEGY_H
#define DISTSUP_STRATEGY_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DS_STRATEGY_ABI_VERSION 1u
#define DS_STRATEGY_SYMBOL "distsup_strategy"

struct ds_label {
    const char *key;
    const char *value;
};

struct ds_node {
    const char *name;              /* "node1@host" */
    uint32_t children;             /* this supervisor's children running there now */
    uint32_t weight;               /* relative capacity, >= 1 (node option `weight`, default 100) */
    const struct ds_label *labels; /* the node's labels (node option `labels`) */
    size_t n_labels;
};

struct ds_child {
    const char *supervisor;
    const char *name;
    const char *key;               /* placement key: the spec's key, or its name when unset */
    const struct ds_label *labels; /* the spec's labels */
    size_t n_labels;
};

struct ds_strategy {
    uint32_t abi_version; /* DS_STRATEGY_ABI_VERSION */
    uint32_t struct_size; /* sizeof(struct ds_strategy) as the plug-in was built */
    const char *name;     /* short name for logs: "hash_ring" */

    /* Parses options ("k=v,k=v", possibly empty) and returns the strategy's state.
     * NULL with a reason in err (NUL-terminated, at most errlen bytes) if the options
     * are not acceptable: unknown key, bad value.  Required. */
    void *(*create)(const char *options, char *err, size_t errlen);

    /* Frees the state.  Required. */
    void (*destroy)(void *state);

    /* Where child should run: an index into nodes[0..n_nodes), or -1 with a reason in
     * err when no node is acceptable (the request then fails with UNAVAILABLE and that
     * reason).  n_nodes may be 0.  Required. */
    int (*place)(void *state, const struct ds_child *child, const struct ds_node *nodes, size_t n_nodes, char *err,
                 size_t errlen);

    /* Optional (NULL = not interested): the set of up, eligible nodes changed. */
    void (*nodes_changed)(void *state, const struct ds_node *nodes, size_t n_nodes);

    /* Optional: whether a running child should move now that the nodes are what they
     * are.  current is its node's index in nodes[], or -1 if that node is not among
     * them.  Returns 1 to move it to nodes[*to], 0 to leave it.  When NULL the core
     * moves a child when place() names another node.  Must be deterministic too. */
    int (*should_move)(void *state, const struct ds_child *child, int current, const struct ds_node *nodes,
                       size_t n_nodes, int *to);
};

#ifdef __cplusplus
}
#endif

#endif

/* testutil: node lists, children and strategy loading for the strategy tests.
 *
 * Every function that can fail fails the running cmocka test (fail_msg) instead of
 * returning an error, so tests read straight through. */
#ifndef DISTSUP_TESTS_STRATEGIES_TESTUTIL_H
#define DISTSUP_TESTS_STRATEGIES_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "sidecar/placement.h"
#include "strategies/strategy.h"

/* A node list that owns its names: nodes[i].name is names[i].  Weight 100, no
 * children, no labels until a test sets them. */
struct tnodes {
    struct ds_node *nodes;
    char **names;
    size_t n;
};

/* n nodes named by printf(fmt, i) for i = first .. first + n - 1, then sorted by name
 * (bytewise), as distsupd passes them.  fmt takes one size_t ("node%02zu@host"). */
void tnodes_make(struct tnodes *t, size_t n, size_t first, const char *fmt);

/* Nodes with the given names (sorted here), each name its own allocation. */
void tnodes_from(struct tnodes *t, const char *const *names, size_t n);

void tnodes_free(struct tnodes *t);

/* The index of a name in t, or -1. */
int tnodes_find(const struct tnodes *t, const char *name);

/* A child of supervisor "default" whose name and key are both key. */
struct ds_child tchild(const char *key);

/* Loads a strategy (a path, or a built-in name looked up in "strategies", where the
 * built-ins sit in a test's runfiles) and fails the test, printing the loader's
 * message, if it does not load. */
struct placement *tload(const char *strategy, const char *options);

/* placement_place that fails the test, printing the reason, when no node is chosen. */
int tplace(struct placement *p, const struct ds_child *c, const struct tnodes *t);

/* Copies a file (a .so, to load a second, separate copy of it).  Fails the test on
 * any error. */
void tcopy(const char *from, const char *to);

/* A directory for scratch files: $TEST_TMPDIR, or /tmp. */
const char *ttmpdir(void);

#endif

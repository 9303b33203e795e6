/* hash: the 64-bit hash every built-in strategy uses (strategies/ internal).
 *
 * dsh_xxh64 is XXH64 (Yann Collet's xxHash, 64-bit variant), written here from the
 * published algorithm: same output as the reference for every input and seed (the
 * tests check published vectors).  It reads the input as bytes, little-endian, so
 * the result is the same on every machine whatever its endianness or alignment
 * rules: a hash computed on one node equals the hash computed on any other.
 *
 * Pure functions, no state: safe from any thread. */
#ifndef DISTSUP_STRATEGIES_HASH_H
#define DISTSUP_STRATEGIES_HASH_H

#include <stddef.h>
#include <stdint.h>

/* XXH64 of len bytes at data (data may be NULL when len is 0). */
uint64_t dsh_xxh64(const void *data, size_t len, uint64_t seed);

/* XXH64 of a NUL-terminated string, without its NUL.  NULL hashes as "". */
uint64_t dsh_str(const char *s, uint64_t seed);

/* The rendezvous score of a node name for a key hash: dsh_str(name, key_hash).  The
 * built-ins break ties and pick among equals by the highest score (lowest index when
 * two scores are equal), which spreads keys evenly and moves few when a node joins. */
uint64_t dsh_score(const char *node_name, uint64_t key_hash);

#endif

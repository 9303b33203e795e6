/* fnv: the daemon's one string hash (64-bit FNV-1a) and a 64-bit finalizer.  Used
 * for its hash tables and for the directory node of a name, which every node must
 * compute alike: these functions never change (a rolling upgrade mixes releases).
 * Pure, header-only, any thread.  (Placement strategies hash with XXH64 instead:
 * strategies/hash.h.) */
#ifndef DISTSUP_FNV_H
#define DISTSUP_FNV_H

#include <stdint.h>

/* Not FNV's published offset basis (14695981039346656037): a digit short, as every
 * release has had it.  It hashes as well; changing it would move every name's
 * directory node in a cluster that mixes releases. */
#define FNV_OFFSET 1469598103934665603ull
#define FNV_PRIME 1099511628211ull

/* Continues hash h over the bytes of s (without its NUL). */
static inline uint64_t fnv_add(uint64_t h, const char *s)
{
    for (; *s; s++) h = (h ^ (unsigned char)*s) * FNV_PRIME;
    return h;
}

/* Continues hash h over one byte (a separator between strings). */
static inline uint64_t fnv_byte(uint64_t h, unsigned char b) { return (h ^ b) * FNV_PRIME; }

static inline uint64_t fnv_str(const char *s) { return fnv_add(FNV_OFFSET, s); }

/* A finalizer that spreads every input bit over the output (MurmurHash3's fmix64). */
static inline uint64_t fnv_mix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return h;
}

/* The rendezvous score of node for the directory of (supervisor, name): the node
 * with the highest score is the name's directory node (cluster/nodes.c).  Frozen:
 * tests/unit/wire_test.c pins its values. */
static inline uint64_t fnv_directory(const char *supervisor, const char *name, const char *node)
{
    uint64_t h = fnv_add(FNV_OFFSET, supervisor);
    h = fnv_add(fnv_byte(fnv_add(fnv_byte(h, 0xff), name), 0xfe), node);
    return fnv_mix64(h);
}

#endif

/* identity: a node's key pair, the public keys it trusts, and the optional cluster
 * pre-shared key, read from files at start-up (docs/cluster.md).
 *
 *   Each file is opened without following a symbolic link and refused unless it is a
 *   regular file owned by the daemon's effective user and writable by nobody else.
 *
 *   key file     written by `distsupd keygen FILE` (mode 0600; refused if group- or
 *                world-readable too):
 *                    # distsup node key (X25519). Keep it secret.
 *                    public 6f1c...   (64 hex digits)
 *                    secret 9a02...
 *   trust file   one trusted public key per line (64 hex digits), optionally followed
 *                by the one node name that key may join as (a name belongs to one key
 *                only); '#' starts a comment.
 *   cluster key  any text of at least 16 bytes (like an Erlang cookie, but never sent):
 *                hashed into a 32-byte key that both sides of every link must share.
 *
 * Read-only after identity_load: safe from any thread. */
#ifndef DISTSUP_IDENTITY_H
#define DISTSUP_IDENTITY_H

#include <stddef.h>
#include <stdint.h>

#include "sidecar/handshake.h"

#define IDENTITY_MAX_TRUSTED 4096
#define IDENTITY_NAME_MAX 256

struct trusted_key {
    uint8_t pk[HS_KEY_LEN];
    char name[IDENTITY_NAME_MAX]; /* "" = any name */
};

struct identity {
    struct keypair kp;
    struct trusted_key *trusted;
    size_t n_trusted;
    uint8_t psk[HS_KEY_LEN];
    int has_psk;
};

/* Writes a new key pair to path (created with mode 0600; an existing file is refused
 * unless force).  pub_hex gets the public key.  0, or -1 with the reason in err. */
int identity_keygen(const char *path, int force, char pub_hex[2 * HS_KEY_LEN + 1], char *err, size_t errlen);

/* Reads the three files (psk_file may be NULL or "").  0, or -1 with "FILE:LINE:
 * reason" in err.  Free with identity_free. */
int identity_load(struct identity *id, const char *key_file, const char *trust_file, const char *psk_file, char *err,
                  size_t errlen);
void identity_free(struct identity *id);

/* 1 if pk is in the trust list. */
int identity_trusts(const struct identity *id, const uint8_t pk[HS_KEY_LEN]);

/* The node name the trust file binds pk to: "" when any name may use it, NULL when pk
 * is not trusted. */
const char *identity_bound_name(const struct identity *id, const uint8_t pk[HS_KEY_LEN]);

/* 1 if the trust file gives name to some key. */
int identity_name_bound(const struct identity *id, const char *name);

/* 1 if the trust file gives name to a key other than pk. */
int identity_name_taken(const struct identity *id, const char *name, const uint8_t pk[HS_KEY_LEN]);

#endif

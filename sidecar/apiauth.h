/* apiauth: the API's bearer token.  Loads the token file once at start-up and checks
 * the value of a call's `authorization` metadata against it in constant time.  Also
 * reads the PEM files of the API's TLS credentials.
 *
 * The token never stays in memory: only its BLAKE2b-256 hash does, and a presented
 * token is hashed the same way and compared with sodium_memcmp, so the comparison
 * takes the same time whatever the token's length or content.
 *
 * No grpc here (sidecar/rpc.c gives the metadata's bytes).  No globals: struct
 * api_auth belongs to its caller.  Threads: api_auth_check only reads, from any
 * thread, once api_auth_load has returned.  Needs sodium_init() first. */
#ifndef DISTSUP_APIAUTH_H
#define DISTSUP_APIAUTH_H

#include <stddef.h>
#include <stdint.h>

#define API_AUTH_HASH_LEN 32
#define API_AUTH_TOKEN_MAX 4096 /* bytes of a token file */

struct api_auth {
    int enabled; /* a token is required */
    uint8_t hash[API_AUTH_HASH_LEN];
};

/* Reads the token file at path: a regular file, not group- or other-accessible
 * (mode 0600 or stricter), holding one token (surrounding whitespace and a final
 * newline are dropped) of 1 to API_AUTH_TOKEN_MAX printable ASCII bytes.  0 with
 * a->enabled set, or -1 with a message that names the file and what to do in err. */
int api_auth_load(struct api_auth *a, const char *path, char *err, size_t errlen);

enum api_auth_result {
    API_AUTH_OK = 0,
    API_AUTH_MISSING,    /* no authorization metadata */
    API_AUTH_NOT_BEARER, /* it is not "Bearer TOKEN" */
    API_AUTH_WRONG,      /* the token does not match */
    API_AUTH_DUPLICATE,  /* more than one authorization entry */
};

/* Checks the value of one `authorization` metadata entry ("Bearer TOKEN"; the
 * scheme's case does not matter). */
enum api_auth_result api_auth_check(const struct api_auth *a, const uint8_t *value, size_t len);

/* The status message for a refused call: says what is missing or wrong, never
 * anything about the token. */
const char *api_auth_message(enum api_auth_result r);

/* Reads a whole file of at most max bytes into a new NUL-terminated buffer
 * (*out, to free; *len excludes the NUL).  0, or -1 with "WHAT FILE: reason". */
int api_read_file(const char *what, const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen);

#endif

/* connect: what a client (distsup.c) and a host (host.c) of libdistsup share: errors,
 * strings, and reaching a daemon with the options of ds_connect_options.  Internal to
 * clients/c: not part of the installed API.
 *
 * Ownership: the caller's.  Secrets read from files are wiped once used. */
#ifndef DISTSUP_CLIENT_CONNECT_H
#define DISTSUP_CLIENT_CONNECT_H

#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <stddef.h>

#include "distsup.h"

/* Sets err (when given) to code and the formatted message; returns code. */
int ds_err_set(ds_error *err, int code, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Sets err (when given) to DS_OK; returns DS_OK. */
int ds_err_clear(ds_error *err);
/* A malloc'ed copy of s ("" for NULL), or NULL when out of memory. */
char *ds_strdup0(const char *s);
static inline int ds_empty(const char *s) { return s == NULL || s[0] == '\0'; }

/* The API token (opts->token, else the content of opts->token_file, blanks trimmed)
 * as "authorization: Bearer TOKEN" in *auth with *n_md = 1; with no token, *n_md
 * is left as it is (0).  DS_OK, or an error code with err set (an empty token, an
 * unreadable file); *auth's value slice is the caller's to unref. */
int ds_token_metadata(const ds_connect_options *opts, grpc_metadata *auth, size_t *n_md, ds_error *err);

/* Plaintext, or TLS with opts' roots and client key pair.  NULL with *rc and err set
 * on failure; the caller releases the credentials. */
grpc_channel_credentials *ds_channel_credentials(const ds_connect_options *opts, ds_error *err, int *rc);

#endif

/* distsupctl internals: argument parsing and output helpers (unit-tested on their own,
 * see tests/clients/c/ctl_unit_test.c).  Not a public API. */
#ifndef DISTSUP_CTL_H
#define DISTSUP_CTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "distsup.h"

/* ---- exit codes -------------------------------------------------------------------
 *  0  success
 *  1  usage error (unknown command or option, missing or malformed argument)
 *  2  local failure (out of memory, unreadable payload file, output write error)
 *  3  health: the daemon answered, but is not SERVING
 *  10 + gRPC status code for an RPC that failed, e.g.
 *     13 INVALID_ARGUMENT, 14 DEADLINE_EXCEEDED, 15 NOT_FOUND, 16 ALREADY_EXISTS,
 *     18 RESOURCE_EXHAUSTED, 19 FAILED_PRECONDITION, 22 UNIMPLEMENTED, 23 INTERNAL,
 *     24 UNAVAILABLE (daemon unreachable, no eligible node) */
enum {
    CTL_EXIT_OK = 0,
    CTL_EXIT_USAGE = 1,
    CTL_EXIT_LOCAL = 2,
    CTL_EXIT_NOT_SERVING = 3,
    CTL_EXIT_STATUS_BASE = 10,
};
/* 0 for DS_OK, else CTL_EXIT_STATUS_BASE + code (codes outside 1..16 map to 12,
 * UNKNOWN). */
int ctl_exit_code(int status);

enum ctl_cmd {
    CMD_NONE = 0,
    CMD_HELP,
    CMD_START,
    CMD_STOP,
    CMD_LS,
    CMD_WHEREIS,
    CMD_WHOIS,
    CMD_CALL,
    CMD_CAST,
    CMD_SEND,
    CMD_COUNT,
    CMD_NODES,
    CMD_NODE_FOR,
    CMD_MINE,
    CMD_WATCH,
    CMD_HEALTH,
    CMD_TOP,
};

#define CTL_MAX_KINDS 16

struct ctl_opts {
    enum ctl_cmd cmd;
    enum ctl_cmd help_cmd; /* `help CMD` or `CMD --help`: the command to describe */
    bool help;             /* print help and exit 0 */

    /* global */
    const char *addr;       /* --addr, else $DISTSUP_ADDR, else 127.0.0.1:50051 */
    const char *supervisor; /* --supervisor; NULL = default */
    bool json;
    bool spec_data;         /* --spec-data: children with their init and env values */
    uint32_t deadline_ms;   /* --deadline-ms: RPC deadline; 0 = library default */
    const char *token_file; /* --token-file (else $DISTSUP_TOKEN, else $DISTSUP_TOKEN_FILE, in main) */
    const char *tls_ca;     /* --tls-ca PEM: TLS, verifying the daemon with this CA */
    const char *tls_cert;   /* --tls-cert PEM, --tls-key PEM: a client certificate (mTLS) */
    const char *tls_key;

    /* positionals and per-command options (pointers into argv) */
    const char *name;
    const char *id;
    const char *key;
    const char *node;
    const char *payload;      /* literal PAYLOAD argument */
    const char *payload_file; /* --payload-file FILE ('-' = stdin) */
    bool raw;                 /* call --raw: no newline after the reply */
    uint32_t timeout_ms;      /* call: child's time to reply; watch: stream deadline */

    /* start */
    ds_restart restart;
    uint32_t shutdown_ms;
    bool kill_immediately;
    const char *cwd;
    const char *init;
    ds_protocol protocol;
    const char *kind; /* a hosted child */
    const char **env; /* "K=V" strings (array owned by the opts) */
    size_t n_env;
    const char **labels;
    size_t n_labels;
    char **child_argv; /* the words after `--` (points into argv) */
    size_t child_argc;

    /* watch */
    unsigned long count; /* 0 = until interrupted */
    bool cluster;        /* --cluster: every node's events */
    ds_event_kind kinds[CTL_MAX_KINDS];
    size_t n_kinds;

    /* health */
    const char *service;

    /* call, cast, send: a W3C trace context for the child (--traceparent, --tracestate) */
    const char *traceparent;
    const char *tracestate;

    /* top */
    uint32_t interval_ms; /* --interval SECONDS (default 1 s) */
    bool once;            /* --once: one table (two polls an interval apart), then exit */
};

/* Parses argv (argv[0] is the program).  env_addr is $DISTSUP_ADDR (may be NULL).
 * Returns 0, or -1 with a message in errbuf for a usage error.  Free with
 * ctl_opts_free in both cases. */
int ctl_parse(int argc, char **argv, const char *env_addr, struct ctl_opts *o, char *errbuf, size_t errlen);
void ctl_opts_free(struct ctl_opts *o);

const char *ctl_cmd_name(enum ctl_cmd cmd);
/* Help text for a command (CMD_NONE: the overview).  Static. */
const char *ctl_help_text(enum ctl_cmd cmd);

/* Splits "K=V" (K non-empty) into a ds_kv pointing at malloc'd copies, freed
 * with ctl_kv_free.  -1 when malformed or out of memory. */
int ctl_split_kv(const char *text, ds_kv *out);
void ctl_kv_free(ds_kv *kv);

/* ---- output helpers -------------------------------------------------------------- */

/* Strict UTF-8 check (no overlongs, no surrogates, <= U+10FFFF). */
bool ctl_utf8_valid(const uint8_t *p, size_t n);
/* Base64 (RFC 4648, padded).  malloc'd NUL-terminated string, NULL when out of memory. */
char *ctl_base64(const uint8_t *p, size_t n);
/* Writes p[0..n) as a JSON string literal, with quotes.  Control characters are
 * escaped; bytes that are not valid UTF-8 become U+FFFD, so the output is always
 * valid JSON. */
void ctl_json_str(FILE *f, const char *p, size_t n);
void ctl_json_cstr(FILE *f, const char *s);
/* Writes bytes as JSON members: always "<field>_base64": "...", and also
 * "<field>": "text" when the bytes are valid UTF-8.  Leading comma is the caller's. */
int ctl_json_bytes(FILE *f, const char *field, const uint8_t *p, size_t n);

/* "3d04h", "2h05m", "4m07s", "12s", "850ms"; "-" for negative. */
void ctl_fmt_duration(int64_t ms, char *buf, size_t n);

/* A table printed with aligned columns (two spaces apart, last column unpadded). */
struct ctl_table {
    size_t ncols;
    size_t nrows; /* including the header */
    size_t cap;
    char **cells; /* nrows * ncols, malloc'd */
};
/* 0, or -1 when out of memory.  The header row is given as the first row. */
int ctl_table_init(struct ctl_table *t, size_t ncols, const char *const *header);
int ctl_table_add(struct ctl_table *t, const char *const *row);
void ctl_table_print(const struct ctl_table *t, FILE *f);
void ctl_table_free(struct ctl_table *t);

#endif

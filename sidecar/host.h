/* host: hosted children (docs/hosting.md).  An app attached over the Host stream is
 * a host session: it names the kinds it runs, and every hosted child of those kinds
 * that starts on this node runs in one of its sessions.  This file keeps the
 * sessions, multiplexes the children's frames over their streams (HostFrame), pings
 * them, and is the sv_proc_ops of hosted children: the state machine
 * (sidecar/supervise.c) starts, messages, stops and kills a hosted child through it
 * exactly as it does an OS process through sidecar/proc.c.
 *
 * What a session's end means: each of its children exits abnormally ("its host went
 * away") and restarts under its restart type, on another session of its kind or,
 * with none, waits (SV_IDLE, host_wait) until one attaches.
 *
 * Below: the gRPC stream, through struct host_port (sidecar/rpc.c implements it).
 * Above: nothing; the core hands it each session's messages.
 *
 * Threads: the reactor's only (the port's functions are thread-safe).  Ownership:
 * struct hosts owns its sessions; a session is freed when its stream is over
 * (hosts_gone).  Children are the core's; a session only points at them. */
#ifndef DISTSUP_HOST_H
#define DISTSUP_HOST_H

#include <stddef.h>
#include <stdint.h>

#include "sidecar/supervise.h"

/* One Host stream, as the reactor drives it.  Every function may be called from the
 * reactor thread; none blocks. */
struct host_port {
    void *arg;
    /* Queues bytes (one or more serialized HostDown messages) to write to the app.
     * 0, or -1 when the stream is ending or past host_queue_bytes. */
    int (*send)(void *arg, const uint8_t *data, size_t len);
    size_t (*queued)(void *arg); /* bytes queued and not yet written */
    void (*more)(void *arg);     /* read its next message (one at a time) */
    /* Ends the stream with a status (its last message: nothing more is sent). */
    void (*end)(void *arg, int code, const char *msg);
    /* The session is over for the reactor: no call on this port will come.  Called
     * by the core (sidecar/core.c), once, never by this file. */
    void (*release)(void *arg);
};

struct host_limits {
    unsigned ping_ms, timeout_ms;
    size_t queue_bytes;
    unsigned max_hosts;
};

struct hosts;
struct host_sess;

/* The core above (cluster mode; either may be NULL). */
struct host_hooks {
    void *arg;
    /* The kinds attached here changed (a host of a new kind came, the last of one left). */
    void (*kinds_changed)(void *arg);
    /* Children wait for a host (hosts_first_waiting): at most every HOST_WAIT_SCAN_MS
     * while any do, the core may move them to a node that has one. */
    void (*waiting)(void *arg, uint64_t now);
};
#define HOST_WAIT_SCAN_MS 250

/* The hosts of node (for the Welcome).  NULL when out of memory. */
struct hosts *hosts_new(struct sv *sv, const struct host_limits *lim, const char *node, const struct host_hooks *hooks);
/* Ends every stream (UNAVAILABLE: the daemon stops) and frees the sessions; the
 * children must be gone (or never have a host again). */
void hosts_free(struct hosts *h);

/* The sv_proc_ops of hosted children (sv->hosted_ops, with sv->hosts = h). */
const struct sv_proc_ops *hosts_ops(void);

/* A new Host stream: its session (it waits for hello).  NULL when max_hosts are
 * attached or out of memory: the stream has been ended then. */
struct host_sess *hosts_attach(struct hosts *h, const struct host_port *port);
/* A message from the app (a serialized HostUp; data is the caller's). */
void hosts_message(struct hosts *h, struct host_sess *s, const uint8_t *data, size_t len);
/* Its stream is over (the app left, or the stream was ended): its children go and
 * the session is freed.  The last call for s. */
void hosts_gone(struct hosts *h, struct host_sess *s);

/* Pings, silent hosts, the children whose kill is due.  1 while it needs the tick. */
int hosts_tick(struct hosts *h, uint64_t now);

/* 1 when a session of kind is attached. */
int hosts_have_kind(const struct hosts *h, const char *kind);
/* The kinds attached now, sorted, without repeats; *out is malloc'ed (the strings
 * are the sessions': valid until the next call into hosts).  -1 when out of memory. */
int hosts_kinds(const struct hosts *h, const char ***out, size_t *n);
/* The children waiting for a host, oldest last; the next is ch->host_next.  Each has
 * host_wait set and host_wait_since when it began to wait. */
struct child *hosts_first_waiting(const struct hosts *h);
/* Takes ch off the waiting list (it moves elsewhere): host_wait is cleared. */
void hosts_unwait(struct hosts *h, struct child *ch);

/* Sessions attached (metrics, logs). */
size_t hosts_count(const struct hosts *h);
/* For the metrics: sessions attached, children they run, children waiting. */
void hosts_stats(const struct hosts *h, size_t *sessions, size_t *running, size_t *waiting);

#endif

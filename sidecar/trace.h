/* trace: W3C Trace Context (https://www.w3.org/TR/trace-context/) values that ride
 * with a Call, Cast or Send from the client's gRPC metadata (or the request's own
 * traceparent field) to the child (docs/observability.md, "Trace context").
 *
 * Only checks: the daemon never makes or changes a trace context, it carries the
 * caller's, and drops one that is not valid so that a child never sees garbage.
 * No grpc, no globals; any thread. */
#ifndef DISTSUP_TRACE_H
#define DISTSUP_TRACE_H

#include <stddef.h>

#define TRACE_PARENT_LEN 55 /* "00-" 32 hex "-" 16 hex "-" 2 hex */
#define TRACE_STATE_MAX 512 /* the W3C's limit a vendor may rely on */

/* 1 when s[0..len) is a traceparent: version-traceid-parentid-flags, lowercase hex,
 * version not "ff", trace id and parent id not all zeros, exactly 55 bytes (a future
 * version may be longer; this daemon carries version 00's form only). */
int trace_parent_valid(const char *s, size_t len);

/* 1 when s[0..len) may be carried as a tracestate: 1 to TRACE_STATE_MAX bytes of
 * printable ASCII (space included).  Its list members are not parsed; it goes on
 * only with a valid traceparent. */
int trace_state_valid(const char *s, size_t len);

#endif

/* spec: what a valid child spec is, and the arithmetic of restart bounds.
 *
 * Pure functions, no I/O: the supervisor core and the unit tests share them. */
#ifndef DISTSUP_SPEC_H
#define DISTSUP_SPEC_H

#include <stddef.h>
#include <stdint.h>

#include "distsup/v1/supervisor.pb-c.h"

#define SPEC_NAME_MAX 200         /* bytes in a child or supervisor name */
#define SPEC_ARGV_MAX 1024        /* arguments */
#define SPEC_ENV_MAX 1024         /* variables */
#define SPEC_TEXT_MAX (64 * 1024) /* bytes of argv + env + cwd + labels together */
#define SPEC_SHUTDOWN_MAX_MS 3600000u
#define SPEC_DEFAULT_SHUTDOWN_MS 5000u

/* 0 if name is a usable name: 1..SPEC_NAME_MAX bytes of UTF-8, no whitespace or
 * control characters (C0, DEL, C1).  Otherwise -1 with the reason in err. */
int spec_name_check(const char *what, const char *name, char *err, size_t errlen);

/* The length of the valid UTF-8 prefix of s[0..n) (n when all of it is valid: no
 * overlong forms, surrogates or code points above U+10FFFF). */
size_t spec_utf8_prefix(const uint8_t *s, size_t n);
/* 1 if the UTF-8 text s has a control character (C0 but tab, DEL, C1). */
int spec_has_control(const char *s);

/* 0 if spec can be started (the name may still be empty: the core generates one).
 * Otherwise -1 with a message a person can act on ("argv is empty", ...). */
int spec_validate(const Distsup__V1__ChildSpec *spec, size_t max_init, char *err, size_t errlen);

/* The shutdown grace in ms: 0 for kill_immediately, else shutdown_ms or the default. */
uint32_t spec_shutdown_ms(const Distsup__V1__ChildSpec *spec);

/* OTP's restart intensity: at most max_restarts restarts within period_ms.  The
 * times are kept in a buffer that grows as restarts come (a child that never
 * restarts has none: thousands of children cost a few bytes each here). */
#define RESTART_TRACK 128
struct restart_window {
    uint64_t *at_ms; /* times of the recent restarts, oldest first (malloc'ed; NULL: none yet) */
    unsigned n, cap;
};
/* Frees the times (the window is empty again). */
void restart_window_free(struct restart_window *w);

/* Called when a child must be restarted at now_ms.  Forgets restarts older than
 * period_ms; if max_restarts are still within the window, returns 0 (the bound is
 * reached: do not restart).  Otherwise records this restart and returns 1.
 * *recent gets how many restarts were in the window before this one. */
int restart_allow(struct restart_window *w, unsigned max_restarts, uint64_t period_ms, uint64_t now_ms,
                  unsigned *recent);

/* Delay before a restart: 0 for the first in a window, then base, 2*base, 4*base ...
 * capped at max_ms. */
uint64_t restart_backoff_ms(unsigned recent, uint64_t base_ms, uint64_t max_ms);

#endif

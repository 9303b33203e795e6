/* options: the "k=v,k=v" strategy_options parser shared by the built-in strategies
 * (strategies/ internal).
 *
 * Syntax: items separated by ',', each "key=value"; spaces and tabs around keys and
 * values are ignored; the value is everything after the first '=' (so "label=a=b" is
 * key "label", value "a=b").  An empty string, or one of blanks only, is no options.
 * An empty item ("a=1,,b=2"), an item without '=' or with an empty key is an error.
 *
 * Every function writes a reason into err (at most errlen bytes, NUL-terminated) when
 * it returns -1, and nothing else. */
#ifndef DISTSUP_STRATEGIES_OPTIONS_H
#define DISTSUP_STRATEGIES_OPTIONS_H

#include <stddef.h>
#include <stdint.h>

/* Called once per item, in order.  key and value are valid only during the call.
 * Returns 0 to go on, -1 (with err set) to stop: ds_opts_parse then returns -1. */
typedef int (*ds_opt_fn)(void *ctx, const char *key, const char *value, char *err, size_t errlen);

/* Parses options (NULL = none), calling fn for each item.  0, or -1 with err set. */
int ds_opts_parse(const char *options, ds_opt_fn fn, void *ctx, char *err, size_t errlen);

/* A decimal integer in [min, max]. */
int ds_opt_u32(const char *key, const char *value, uint32_t min, uint32_t max, uint32_t *out, char *err, size_t errlen);

/* true/false, yes/no, on/off, 1/0. */
int ds_opt_bool(const char *key, const char *value, int *out, char *err, size_t errlen);

/* A non-negative decimal with at most 6 digits after the point ("0.25", "1", "0.000001")
 * no larger than max_units, in millionths: "0.25" -> 250000.  No exponents, no signs. */
int ds_opt_micros(const char *key, const char *value, uint64_t max_units, uint64_t *out, char *err, size_t errlen);

#endif

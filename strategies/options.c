#include "strategies/options.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
    return s;
}

int ds_opts_parse(const char *options, ds_opt_fn fn, void *ctx, char *err, size_t errlen)
{
    if (!options) return 0;
    char *copy = strdup(options);
    if (!copy) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = 0;
    if (*trim(copy) == 0) goto out; /* blanks only: no options */

    size_t index = 0;
    char *item = copy;
    for (;;) {
        char *comma = strchr(item, ',');
        if (comma) *comma = 0;
        index++;
        char *t = trim(item);
        char *eq = strchr(t, '=');
        if (*t == 0) {
            snprintf(err, errlen, "option %zu is empty (stray ',')", index);
            rc = -1;
            break;
        }
        if (!eq) {
            snprintf(err, errlen, "option '%.60s' is not key=value", t);
            rc = -1;
            break;
        }
        *eq = 0;
        char *key = trim(t);
        char *value = trim(eq + 1);
        if (*key == 0) {
            snprintf(err, errlen, "option '=%.60s' has no key", value);
            rc = -1;
            break;
        }
        if (fn(ctx, key, value, err, errlen) != 0) {
            rc = -1;
            break;
        }
        if (!comma) break;
        item = comma + 1;
    }
out:
    free(copy);
    return rc;
}

int ds_opt_u32(const char *key, const char *value, uint32_t min, uint32_t max, uint32_t *out, char *err, size_t errlen)
{
    uint64_t v = 0;
    const char *p = value;
    if (*p == 0) goto bad;
    for (; *p; p++) {
        if (*p < '0' || *p > '9') goto bad;
        v = v * 10 + (uint64_t)(*p - '0');
        if (v > max) goto bad;
    }
    if (v < min) goto bad;
    *out = (uint32_t)v;
    return 0;
bad:
    snprintf(err, errlen, "%s=%.40s: expected an integer from %u to %u", key, value, min, max);
    return -1;
}

int ds_opt_bool(const char *key, const char *value, int *out, char *err, size_t errlen)
{
    static const char *const yes[] = {"true", "yes", "on", "1"};
    static const char *const no[] = {"false", "no", "off", "0"};
    for (size_t i = 0; i < sizeof yes / sizeof yes[0]; i++) {
        if (!strcasecmp(value, yes[i])) {
            *out = 1;
            return 0;
        }
        if (!strcasecmp(value, no[i])) {
            *out = 0;
            return 0;
        }
    }
    snprintf(err, errlen, "%s=%.40s: expected true or false", key, value);
    return -1;
}

int ds_opt_micros(const char *key, const char *value, uint64_t max_units, uint64_t *out, char *err, size_t errlen)
{
    uint64_t whole = 0, frac = 0;
    unsigned frac_digits = 0;
    const char *p = value;
    int digits = 0;
    for (; *p >= '0' && *p <= '9'; p++, digits++) {
        whole = whole * 10 + (uint64_t)(*p - '0');
        if (whole > max_units / 1000000u + 1) goto bad;
    }
    if (*p == '.') {
        p++;
        for (; *p >= '0' && *p <= '9'; p++, digits++) {
            if (frac_digits == 6) goto bad;
            frac = frac * 10 + (uint64_t)(*p - '0');
            frac_digits++;
        }
    }
    if (*p != 0 || digits == 0) goto bad;
    while (frac_digits < 6) {
        frac *= 10;
        frac_digits++;
    }
    uint64_t v = whole * 1000000u + frac;
    if (v > max_units) goto bad;
    *out = v;
    return 0;
bad:
    snprintf(err, errlen, "%s=%.40s: expected a decimal from 0 to %llu.%06llu with at most 6 decimals", key, value,
             (unsigned long long)(max_units / 1000000u), (unsigned long long)(max_units % 1000000u));
    return -1;
}

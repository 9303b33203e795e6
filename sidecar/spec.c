#include "sidecar/spec.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t spec_utf8_prefix(const uint8_t *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        uint8_t c = s[i];
        size_t len;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            len = 2, cp = c & 0x1f;
        } else if (c >= 0xe0 && c <= 0xef) {
            len = 3, cp = c & 0x0f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            len = 4, cp = c & 0x07;
        } else {
            return i;
        }
        if (n - i < len) return i;
        for (size_t k = 1; k < len; k++) {
            if ((s[i + k] & 0xc0) != 0x80) return i;
            cp = cp << 6 | (s[i + k] & 0x3f);
        }
        if ((len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return i;
        i += len;
    }
    return n;
}

int spec_has_control(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if ((*p < 0x20 && *p != '\t') || *p == 0x7f) return 1;
        if (*p == 0xc2 && p[1] >= 0x80 && p[1] <= 0x9f) return 1; /* C1: U+0080..U+009F */
    }
    return 0;
}

int spec_name_check(const char *what, const char *name, char *err, size_t errlen)
{
    size_t n = strlen(name);
    if (n == 0) {
        snprintf(err, errlen, "%s is empty", what);
        return -1;
    }
    if (n > SPEC_NAME_MAX) {
        snprintf(err, errlen, "%s is %zu bytes long; the limit is %d", what, n, SPEC_NAME_MAX);
        return -1;
    }
    size_t ok = spec_utf8_prefix((const uint8_t *)name, n);
    if (ok < n) {
        snprintf(err, errlen, "%s is not valid UTF-8 (at byte %zu)", what, ok);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c <= 0x20 || c == 0x7f ||
            (c == 0xc2 && (unsigned char)name[i + 1] >= 0x80 && (unsigned char)name[i + 1] <= 0x9f)) {
            snprintf(err, errlen, "%s '%.*s' contains a space or control character at byte %zu", what, (int)i, name, i);
            return -1;
        }
    }
    return 0;
}

static int has_control(const char *s)
{
    for (; *s; s++)
        if ((unsigned char)*s < 0x20 && *s != '\t') return 1;
    return 0;
}

/* 1 if m holds a field of number 0.  protobuf-c 1.4.1 reads one written with a long
 * varint key (0x80 0x00), keeps it as an unknown field, and packs it back as 0x00,
 * which it refuses to read: a spec holding one would not read back from the store
 * (deleted at the next start) nor in a peer's ChildInfo (the whole message dropped). */
static int has_field0(const ProtobufCMessage *m)
{
    for (unsigned i = 0; i < m->n_unknown_fields; i++)
        if (m->unknown_fields[i].tag == 0) return 1;
    return 0;
}

int spec_validate(const Distsup__V1__ChildSpec *s, size_t max_init, char *err, size_t errlen)
{
    size_t text = 0;
    int field0 = has_field0(&s->base);
    for (size_t i = 0; i < s->n_env; i++) field0 |= has_field0(&s->env[i]->base);
    for (size_t i = 0; i < s->n_labels; i++) field0 |= has_field0(&s->labels[i]->base);
    if (field0) {
        snprintf(err, errlen, "spec holds a field number 0, which protobuf does not allow");
        return -1;
    }
    if (s->name[0] && spec_name_check("child name", s->name, err, errlen) != 0) return -1;
    if (s->kind[0]) { /* a hosted child (docs/hosting.md) */
        if (s->n_argv) {
            snprintf(err, errlen,
                     "spec names both argv and kind: argv is a process child, kind a hosted one; give one");
            return -1;
        }
        if (spec_name_check("spec.kind", s->kind, err, errlen) != 0) return -1;
        if (s->n_env || s->cwd[0]) {
            snprintf(err, errlen,
                     "spec.env and spec.cwd are for process children; a hosted child (kind '%.64s') takes neither",
                     s->kind);
            return -1;
        }
        if (s->protocol != DISTSUP__V1__PROTOCOL__FRAMES) {
            snprintf(err, errlen, "a hosted child (kind '%.64s') always speaks frames: leave spec.protocol unset",
                     s->kind);
            return -1;
        }
        text += strlen(s->kind);
    } else if (s->n_argv == 0 || s->argv[0][0] == 0) {
        snprintf(err, errlen, "spec.argv is empty: give the program to run as argv[0], or a kind for a hosted child");
        return -1;
    }
    if (s->n_argv > SPEC_ARGV_MAX) {
        snprintf(err, errlen, "spec.argv has %zu entries; the limit is %d", s->n_argv, SPEC_ARGV_MAX);
        return -1;
    }
    for (size_t i = 0; i < s->n_argv; i++) text += strlen(s->argv[i]) + 1;
    if (s->n_env > SPEC_ENV_MAX) {
        snprintf(err, errlen, "spec.env has %zu entries; the limit is %d", s->n_env, SPEC_ENV_MAX);
        return -1;
    }
    for (size_t i = 0; i < s->n_env; i++) {
        const char *k = s->env[i]->key, *v = s->env[i]->value;
        if (!k[0] || strchr(k, '=') || has_control(k)) {
            snprintf(err, errlen, "spec.env key '%.40s' is not a valid variable name", k);
            return -1;
        }
        if (!strncmp(k, "DISTSUP_", 8)) {
            snprintf(err, errlen, "spec.env key '%.40s' is reserved: the daemon sets DISTSUP_* for each child", k);
            return -1;
        }
        text += strlen(k) + strlen(v) + 2;
    }
    text += strlen(s->cwd);
    for (size_t i = 0; i < s->n_labels; i++) {
        if (!s->labels[i]->key[0]) {
            snprintf(err, errlen, "spec.labels has an empty key");
            return -1;
        }
        if (spec_has_control(s->labels[i]->key) || spec_has_control(s->labels[i]->value)) {
            snprintf(err, errlen, "spec.labels entry '%.40s' has a control character", s->labels[i]->key);
            return -1;
        }
        text += strlen(s->labels[i]->key) + strlen(s->labels[i]->value);
    }
    if (s->node[0] && spec_name_check("spec.node", s->node, err, errlen) != 0) return -1;
    if (spec_has_control(s->key)) {
        snprintf(err, errlen, "spec.key has a control character");
        return -1;
    }
    text += strlen(s->key);
    if (text > SPEC_TEXT_MAX) {
        snprintf(err, errlen, "spec text (argv, env, cwd, labels, key) is %zu bytes; the limit is %d", text,
                 SPEC_TEXT_MAX);
        return -1;
    }
    if (s->shutdown_ms > SPEC_SHUTDOWN_MAX_MS) {
        snprintf(err, errlen, "spec.shutdown_ms %u is above the limit of %u", s->shutdown_ms, SPEC_SHUTDOWN_MAX_MS);
        return -1;
    }
    if (s->restart != DISTSUP__V1__RESTART_TYPE__PERMANENT && s->restart != DISTSUP__V1__RESTART_TYPE__TRANSIENT &&
        s->restart != DISTSUP__V1__RESTART_TYPE__TEMPORARY) {
        snprintf(err, errlen, "spec.restart %d is not PERMANENT, TRANSIENT or TEMPORARY", (int)s->restart);
        return -1;
    }
    if (s->protocol != DISTSUP__V1__PROTOCOL__FRAMES && s->protocol != DISTSUP__V1__PROTOCOL__NONE) {
        snprintf(err, errlen, "spec.protocol %d is not FRAMES or NONE", (int)s->protocol);
        return -1;
    }
    if (s->init.len > max_init) {
        snprintf(err, errlen, "spec.init is %zu bytes; the limit is %zu", s->init.len, max_init);
        return -1;
    }
    return 0;
}

uint32_t spec_shutdown_ms(const Distsup__V1__ChildSpec *spec)
{
    if (spec->kill_immediately) return 0;
    return spec->shutdown_ms ? spec->shutdown_ms : SPEC_DEFAULT_SHUTDOWN_MS;
}

int restart_allow(struct restart_window *w, unsigned max_restarts, uint64_t period_ms, uint64_t now_ms,
                  unsigned *recent)
{
    unsigned keep = 0;
    for (unsigned i = 0; i < w->n; i++)
        if (now_ms < w->at_ms[i] || now_ms - w->at_ms[i] < period_ms) w->at_ms[keep++] = w->at_ms[i];
    w->n = keep;
    *recent = w->n;
    if (w->n >= max_restarts) return 0;
    if (w->n == w->cap && w->cap < RESTART_TRACK) {
        unsigned cap = w->cap ? w->cap * 2 : 4;
        if (cap > RESTART_TRACK) cap = RESTART_TRACK;
        uint64_t *t = realloc(w->at_ms, cap * sizeof *t);
        if (t) {
            w->at_ms = t;
            w->cap = cap;
        }
    }
    if (w->n == w->cap) {      /* full (out of memory, or RESTART_TRACK): forget the oldest */
        if (!w->cap) return 1; /* nothing can be kept: allowed, unrecorded */
        memmove(w->at_ms, w->at_ms + 1, (w->cap - 1) * sizeof w->at_ms[0]);
        w->n--;
    }
    w->at_ms[w->n++] = now_ms;
    return 1;
}

void restart_window_free(struct restart_window *w)
{
    free(w->at_ms);
    w->at_ms = NULL;
    w->n = w->cap = 0;
}

uint64_t restart_backoff_ms(unsigned recent, uint64_t base_ms, uint64_t max_ms)
{
    if (recent == 0) return 0;
    uint64_t d = base_ms;
    for (unsigned i = 1; i < recent && d < max_ms; i++) d = d > UINT64_MAX / 2 ? UINT64_MAX : d * 2;
    return d < max_ms ? d : max_ms;
}

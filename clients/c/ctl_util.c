/* distsupctl output helpers: JSON, base64, UTF-8, durations, tables, exit codes. */
#include "ctl.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

int ctl_exit_code(int status)
{
    if (status == DS_OK) return CTL_EXIT_OK;
    if (status < 1 || status > 16) status = DS_UNKNOWN;
    return CTL_EXIT_STATUS_BASE + status;
}

int ctl_split_kv(const char *text, ds_kv *out)
{
    out->key = out->value = NULL;
    if (text == NULL) return -1;
    const char *eq = strchr(text, '=');
    if (eq == NULL || eq == text) return -1;
    size_t kl = (size_t)(eq - text);
    char *k = malloc(kl + 1);
    char *v = strdup(eq + 1);
    if (k == NULL || v == NULL) {
        free(k);
        free(v);
        return -1;
    }
    memcpy(k, text, kl);
    k[kl] = '\0';
    out->key = k;
    out->value = v;
    return 0;
}

void ctl_kv_free(ds_kv *kv)
{
    if (kv == NULL) return;
    free((void *)kv->key);
    free((void *)kv->value);
    kv->key = kv->value = NULL;
}

/* Length of the valid UTF-8 sequence at p (n bytes left), 0 if invalid. */
static size_t utf8_seq(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    if (c < 0x80) return 1;
    size_t len;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        len = 2;
        cp = c & 0x1Fu;
    } else if (c >= 0xE0 && c <= 0xEF) {
        len = 3;
        cp = c & 0x0Fu;
    } else if (c >= 0xF0 && c <= 0xF4) {
        len = 4;
        cp = c & 0x07u;
    } else {
        return 0;
    }
    if (n < len) return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xC0) != 0x80) return 0;
        cp = (cp << 6) | (p[i] & 0x3Fu);
    }
    if (len == 3 && (cp < 0x800 || (cp >= 0xD800 && cp <= 0xDFFF))) return 0;
    if (len == 4 && (cp < 0x10000 || cp > 0x10FFFF)) return 0;
    return len;
}

bool ctl_utf8_valid(const uint8_t *p, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t l = utf8_seq(p + i, n - i);
        if (l == 0) return false;
        i += l;
    }
    return true;
}

char *ctl_base64(const uint8_t *p, size_t n)
{
    static const char tbl[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t out_len = 4 * ((n + 2) / 3);
    char *out = malloc(out_len + 1);
    if (out == NULL) return NULL;
    size_t o = 0, i = 0;
    for (; i + 3 <= n; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) | p[i + 2];
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = tbl[(v >> 6) & 63];
        out[o++] = tbl[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8);
        out[o++] = tbl[(v >> 18) & 63];
        out[o++] = tbl[(v >> 12) & 63];
        out[o++] = tbl[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return out;
}

void ctl_json_str(FILE *f, const char *s, size_t n)
{
    const uint8_t *p = (const uint8_t *)s;
    fputc('"', f);
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            switch (c) {
            case '"': fputs("\\\"", f); break;
            case '\\': fputs("\\\\", f); break;
            case '\n': fputs("\\n", f); break;
            case '\r': fputs("\\r", f); break;
            case '\t': fputs("\\t", f); break;
            case '\b': fputs("\\b", f); break;
            case '\f': fputs("\\f", f); break;
            default:
                if (c < 0x20 || c == 0x7f) fprintf(f, "\\u%04x", c);
                else fputc(c, f);
            }
            i++;
            continue;
        }
        size_t l = utf8_seq(p + i, n - i);
        if (l == 0) {
            fputs("\\ufffd", f);
            i++;
        } else {
            fwrite(p + i, 1, l, f);
            i += l;
        }
    }
    fputc('"', f);
}

void ctl_json_cstr(FILE *f, const char *s)
{
    if (s == NULL) s = "";
    ctl_json_str(f, s, strlen(s));
}

int ctl_json_bytes(FILE *f, const char *field, const uint8_t *p, size_t n)
{
    char *b64 = ctl_base64(p, n);
    if (b64 == NULL) return -1;
    fprintf(f, "\"%s_base64\":\"%s\"", field, b64);
    free(b64);
    if (ctl_utf8_valid(p, n)) {
        fprintf(f, ",\"%s\":", field);
        ctl_json_str(f, (const char *)p, n);
    }
    return 0;
}

void ctl_fmt_duration(int64_t ms, char *buf, size_t n)
{
    if (ms < 0) {
        snprintf(buf, n, "-");
        return;
    }
    int64_t s = ms / 1000;
    if (s == 0) snprintf(buf, n, "%" PRId64 "ms", ms);
    else if (s < 60) snprintf(buf, n, "%" PRId64 "s", s);
    else if (s < 3600) snprintf(buf, n, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
    else if (s < 86400) snprintf(buf, n, "%" PRId64 "h%02" PRId64 "m", s / 3600, (s / 60) % 60);
    else snprintf(buf, n, "%" PRId64 "d%02" PRId64 "h", s / 86400, (s / 3600) % 24);
}

/* ---- tables ------------------------------------------------------------------------ */

int ctl_table_init(struct ctl_table *t, size_t ncols, const char *const *header)
{
    memset(t, 0, sizeof *t);
    t->ncols = ncols;
    return ctl_table_add(t, header);
}

/* A copy with control characters shown as '?', so a row stays on one line. */
static char *cell_dup(const char *s)
{
    if (s == NULL) s = "";
    char *d = strdup(s);
    if (d == NULL) return NULL;
    for (char *q = d; *q; q++)
        if ((unsigned char)*q < 0x20 || *q == 0x7f) *q = '?';
    return d;
}

int ctl_table_add(struct ctl_table *t, const char *const *row)
{
    if (t->nrows == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 8;
        char **cells = realloc(t->cells, cap * t->ncols * sizeof *cells);
        if (cells == NULL) return -1;
        t->cells = cells;
        t->cap = cap;
    }
    char **r = t->cells + t->nrows * t->ncols;
    for (size_t i = 0; i < t->ncols; i++) {
        r[i] = cell_dup(row[i]);
        if (r[i] == NULL) {
            for (size_t j = 0; j < i; j++) free(r[j]);
            return -1;
        }
    }
    t->nrows++;
    return 0;
}

/* Display width: code points, not bytes. */
static size_t width(const char *s)
{
    size_t w = 0;
    for (; *s; s++)
        if (((unsigned char)*s & 0xC0) != 0x80) w++;
    return w;
}

void ctl_table_print(const struct ctl_table *t, FILE *f)
{
    size_t *w = calloc(t->ncols ? t->ncols : 1, sizeof *w);
    for (size_t r = 0; r < t->nrows; r++)
        for (size_t c = 0; c < t->ncols; c++) {
            size_t x = width(t->cells[r * t->ncols + c]);
            if (w && x > w[c]) w[c] = x;
        }
    for (size_t r = 0; r < t->nrows; r++) {
        for (size_t c = 0; c < t->ncols; c++) {
            const char *cell = t->cells[r * t->ncols + c];
            fputs(cell, f);
            if (c + 1 < t->ncols) {
                size_t pad = (w ? w[c] : 0) - width(cell) + 2;
                if (!w) pad = 2;
                for (size_t i = 0; i < pad; i++) fputc(' ', f);
            }
        }
        fputc('\n', f);
    }
    free(w);
}

void ctl_table_free(struct ctl_table *t)
{
    for (size_t i = 0; i < t->nrows * t->ncols; i++) free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof *t);
}

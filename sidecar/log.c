#include "sidecar/log.h"

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static atomic_int current_level = LOG_INFO;

static const char *const level_names[] = {"DEBUG", "INFO", "WARN", "ERROR"};
static const char *const level_json[] = {"debug", "info", "warn", "error"};

/* log_set_json: set once at start-up, before other threads log. */
static int json;
static char json_node[256];

void log_set_json(const char *node)
{
    snprintf(json_node, sizeof json_node, "%s", node ? node : "");
    json = 1;
}

/* s as the inside of a JSON string, at out[*len..cap-2); control characters, quotes and
 * backslashes escaped. */
static void json_str(char *out, size_t *len, size_t cap, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < n && *len < cap - 2; i++) {
        unsigned char ch = (unsigned char)s[i];
        if (ch == '"' || ch == '\\') {
            if (*len + 2 > cap - 2) break;
            out[(*len)++] = '\\';
            out[(*len)++] = (char)ch;
        } else if (ch < 0x20 || ch == 0x7f) {
            if (*len + 6 > cap - 2) break;
            memcpy(out + *len, "\\u00", 4);
            *len += 4;
            out[(*len)++] = hex[ch >> 4];
            out[(*len)++] = hex[ch & 15];
        } else {
            out[(*len)++] = (char)ch;
        }
    }
}

int log_level_parse(const char *s)
{
    if (!strcmp(s, "debug")) return LOG_DEBUG;
    if (!strcmp(s, "info")) return LOG_INFO;
    if (!strcmp(s, "warn") || !strcmp(s, "warning")) return LOG_WARN;
    if (!strcmp(s, "error")) return LOG_ERROR;
    return -1;
}

void log_set_level(enum log_level level) { atomic_store(&current_level, (int)level); }

int log_enabled(enum log_level level) { return (int)level >= atomic_load(&current_level); }

static void write_line(const char *line, size_t len)
{
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(STDERR_FILENO, line + off, len - off);
        if (w <= 0) return; /* nowhere left to report a logging failure */
        off += (size_t)w;
    }
}

/* One JSON field ,"key":"value" at line[*len..]; value at most 255 bytes. */
static void json_field(char *line, size_t *len, size_t cap, const char *key, const char *value)
{
    size_t k = strlen(key);
    if (*len + k + 6 > cap) return;
    memcpy(line + *len, "\",\"", 3);
    *len += 3;
    memcpy(line + *len, key, k);
    *len += k;
    memcpy(line + *len, "\":\"", 3);
    *len += 3;
    json_str(line, len, cap, value, strnlen(value, 255));
}

static void vlog(enum log_level level, const char *component, const char *sup, const char *child, const char *fmt,
                 va_list ap)
{
    char line[4096], ts_text[40];
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(ts_text, sizeof ts_text, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
    char msg[4096];
    int m = vsnprintf(msg, sizeof msg, fmt, ap);
    if (m < 0) return;
    size_t mlen = (size_t)m < sizeof msg ? (size_t)m : sizeof msg - 1;
    size_t len = 0;
    if (json) {
        int n =
            snprintf(line, sizeof line, "{\"ts\":\"%s\",\"level\":\"%s\",\"subsystem\":\"", ts_text, level_json[level]);
        if (n < 0 || (size_t)n >= sizeof line) return;
        len = (size_t)n;
        /* the head is short: a component of at most 64 and a node name of at most 255
         * bytes, 6 bytes each escaped, leave room for the message */
        json_str(line, &len, sizeof line - 16, component, strnlen(component, 64));
        const char *mid = "\",\"node\":\"";
        memcpy(line + len, mid, strlen(mid));
        len += strlen(mid);
        json_str(line, &len, sizeof line - 16, json_node, strnlen(json_node, sizeof json_node - 1));
        /* names are at most 255 bytes; a line of names full of escapes cuts the
         * message, never the line's end */
        if (sup) json_field(line, &len, sizeof line - 16, "supervisor", sup);
        if (child) json_field(line, &len, sizeof line - 16, "child", child);
        memcpy(line + len, "\",\"msg\":\"", 9);
        len += 9;
        json_str(line, &len, sizeof line - 4, msg, mlen);
        line[len++] = '"';
        line[len++] = '}';
        line[len++] = '\n';
        write_line(line, len);
        return;
    }
    int n = snprintf(line, sizeof line, "%s %-5s %s: ", ts_text, level_names[level], component);
    if (n < 0) return;
    len = (size_t)n < sizeof line ? (size_t)n : sizeof line - 1;
    /* One line per message, whatever its strings hold (a peer's, a child's, a client's):
     * control characters are written as \xNN. */
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < mlen && len < sizeof line - 2; i++) {
        unsigned char ch = (unsigned char)msg[i];
        if (ch >= 0x20 && ch != 0x7f) {
            line[len++] = (char)ch;
        } else if (len + 4 <= sizeof line - 2) {
            line[len++] = '\\';
            line[len++] = 'x';
            line[len++] = hex[ch >> 4];
            line[len++] = hex[ch & 15];
        } else {
            break;
        }
    }
    line[len++] = '\n';
    write_line(line, len);
}

void log_msg(enum log_level level, const char *component, const char *fmt, ...)
{
    if (!log_enabled(level)) return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, component, NULL, NULL, fmt, ap);
    va_end(ap);
}

void log_child(enum log_level level, const char *component, const char *sup, const char *child, const char *fmt, ...)
{
    if (!log_enabled(level)) return;
    va_list ap;
    va_start(ap, fmt);
    vlog(level, component, sup, child, fmt, ap);
    va_end(ap);
}

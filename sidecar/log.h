/* log: leveled, line-atomic logging to stderr.
 *
 * Every line: "2026-11-24T10:00:00.123Z LEVEL component: message", or with
 * log_set_json one JSON object.  Lines from
 * different threads never interleave (one write(2) per line).  The level is the
 * process's one logging setting, set once at start-up by main. */
#ifndef DISTSUP_LOG_H
#define DISTSUP_LOG_H

enum log_level { LOG_DEBUG = 0, LOG_INFO = 1, LOG_WARN = 2, LOG_ERROR = 3 };

/* Parses "debug", "info", "warn", "error"; returns -1 for anything else. */
int log_level_parse(const char *s);
void log_set_level(enum log_level level);
/* From now on one JSON object a line: {"ts":"...","level":"info","subsystem":"core",
 * "node":NODE,"msg":"..."}, with "supervisor" and "child" after "node" for log_child.  node is copied.  Once, before
 * other threads log. */
void log_set_json(const char *node);
int log_enabled(enum log_level level);

void log_msg(enum log_level level, const char *component, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* As log_msg, about one child: in JSON lines also "supervisor" (when sup is not
 * NULL) and "child" fields.  Text lines are the same as log_msg's (the message names
 * the child). */
void log_child(enum log_level level, const char *component, const char *sup, const char *child, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define log_debug(c, ...) \
    do { \
        if (log_enabled(LOG_DEBUG)) log_msg(LOG_DEBUG, c, __VA_ARGS__); \
    } while (0)
#define log_info(c, ...) log_msg(LOG_INFO, c, __VA_ARGS__)
#define log_warn(c, ...) log_msg(LOG_WARN, c, __VA_ARGS__)
#define log_error(c, ...) log_msg(LOG_ERROR, c, __VA_ARGS__)

#endif

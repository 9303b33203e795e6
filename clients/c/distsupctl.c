/* distsupctl: command-line client of distsupd, built on libdistsup.
 * `distsupctl --help` and docs/quickstart-distsupctl.md describe it. */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "ctl.h"
#include "distsup.h"

static volatile sig_atomic_t g_stop;

static void on_signal(int sig)
{
    (void)sig;
    g_stop = 1;
}

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Reports an RPC error: stderr always; with --json also an object on stdout. */
static int report(const struct ctl_opts *o, const ds_error *err)
{
    fprintf(stderr, "distsupctl %s: %s: %s\n", ctl_cmd_name(o->cmd), ds_status_name(err->code), err->message);
    if (o->json) {
        printf("{\"error\":{\"code\":%d,\"status\":\"%s\",\"message\":", err->code, ds_status_name(err->code));
        ctl_json_cstr(stdout, err->message);
        printf("}}\n");
    }
    return ctl_exit_code(err->code);
}

static int local_failure(const char *what)
{
    fprintf(stderr, "distsupctl: %s\n", what);
    return CTL_EXIT_LOCAL;
}

/* ---- children ---------------------------------------------------------------------- */

static bool running(const ds_child *c) { return c->state == DS_STATE_RUNNING && c->started_at_ms > 0; }

static void json_kvs(FILE *f, const ds_kv *kv, size_t n)
{
    fputc('{', f);
    for (size_t i = 0; i < n; i++) {
        if (i) fputc(',', f);
        ctl_json_cstr(f, kv[i].key);
        fputc(':', f);
        ctl_json_cstr(f, kv[i].value);
    }
    fputc('}', f);
}

static int json_child(FILE *f, const ds_child *c)
{
    fputs("{\"supervisor\":", f);
    ctl_json_cstr(f, c->supervisor);
    fputs(",\"name\":", f);
    ctl_json_cstr(f, c->name);
    fputs(",\"id\":", f);
    ctl_json_cstr(f, c->id);
    fputs(",\"node\":", f);
    ctl_json_cstr(f, c->node);
    fprintf(f, ",\"os_pid\":%" PRId32 ",\"state\":\"%s\",\"restarts\":%" PRIu32 ",\"started_at_ms\":%" PRId64,
            c->os_pid, ds_child_state_name(c->state), c->restarts, c->started_at_ms);
    if (running(c)) fprintf(f, ",\"uptime_ms\":%" PRId64, now_ms() - c->started_at_ms);
    else fputs(",\"uptime_ms\":null", f);
    fprintf(f, ",\"incarnation\":%" PRIu64, c->incarnation);
    const ds_child_spec *s = &c->spec;
    fputs(",\"spec\":{\"name\":", f);
    ctl_json_cstr(f, s->name);
    fputs(",\"argv\":[", f);
    for (size_t i = 0; i < s->argc; i++) {
        if (i) fputc(',', f);
        ctl_json_cstr(f, s->argv[i]);
    }
    fputs("],\"env\":", f);
    json_kvs(f, s->env, s->n_env);
    fputs(",\"cwd\":", f);
    ctl_json_cstr(f, s->cwd);
    fprintf(f, ",\"restart\":\"%s\",\"shutdown_ms\":%" PRIu32 ",\"kill_immediately\":%s", ds_restart_name(s->restart),
            s->shutdown_ms, s->kill_immediately ? "true" : "false");
    fputs(",\"node\":", f);
    ctl_json_cstr(f, s->node);
    fputs(",\"key\":", f);
    ctl_json_cstr(f, s->key);
    fputc(',', f);
    if (ctl_json_bytes(f, "init", s->init, s->init_len) != 0) return -1;
    fputs(",\"labels\":", f);
    json_kvs(f, s->labels, s->n_labels);
    fprintf(f, ",\"protocol\":\"%s\",\"kind\":", ds_protocol_name(s->protocol));
    ctl_json_cstr(f, s->kind);
    fputs("}}", f);
    return 0;
}

/* Table of children; with_id adds an ID column. */
static int table_children(const ds_child *items, size_t n, bool with_id)
{
    static const char *const hdr[] = {"NAME", "NODE", "PID", "STATE", "RESTARTS", "UPTIME", "ID"};
    size_t ncols = with_id ? 7 : 6;
    struct ctl_table t;
    if (ctl_table_init(&t, ncols, hdr) != 0) return -1;
    for (size_t i = 0; i < n; i++) {
        const ds_child *c = &items[i];
        char pid[16], restarts[16], up[32];
        if (c->os_pid > 0) snprintf(pid, sizeof pid, "%" PRId32, c->os_pid);
        else snprintf(pid, sizeof pid, "-");
        snprintf(restarts, sizeof restarts, "%" PRIu32, c->restarts);
        if (running(c)) ctl_fmt_duration(now_ms() - c->started_at_ms, up, sizeof up);
        else snprintf(up, sizeof up, "-");
        const char *row[] = {c->name, c->node, pid, ds_child_state_name(c->state), restarts, up, c->id};
        if (ctl_table_add(&t, row) != 0) {
            ctl_table_free(&t);
            return -1;
        }
    }
    ctl_table_print(&t, stdout);
    ctl_table_free(&t);
    return 0;
}

static int cmd_start(ds_client *c, const struct ctl_opts *o)
{
    ds_kv *env = calloc(o->n_env + 1, sizeof *env);
    ds_kv *labels = calloc(o->n_labels + 1, sizeof *labels);
    int rc = CTL_EXIT_OK;
    if (!env || !labels) {
        rc = local_failure("out of memory");
        goto out;
    }
    for (size_t i = 0; i < o->n_env; i++)
        if (ctl_split_kv(o->env[i], &env[i]) != 0) {
            rc = local_failure("out of memory");
            goto out;
        }
    for (size_t i = 0; i < o->n_labels; i++)
        if (ctl_split_kv(o->labels[i], &labels[i]) != 0) {
            rc = local_failure("out of memory");
            goto out;
        }
    ds_child_spec spec = {
        .name = o->name,
        .argv = (const char *const *)o->child_argv,
        .argc = o->child_argc,
        .env = env,
        .n_env = o->n_env,
        .cwd = o->cwd,
        .restart = o->restart,
        .shutdown_ms = o->shutdown_ms,
        .kill_immediately = o->kill_immediately,
        .node = o->node,
        .key = o->key,
        .init = (const uint8_t *)o->init,
        .init_len = o->init ? strlen(o->init) : 0,
        .labels = labels,
        .n_labels = o->n_labels,
        .protocol = o->protocol,
        .kind = o->kind,
    };
    ds_child *child;
    ds_error err;
    if (ds_start_child(c, o->supervisor, &spec, NULL, &child, &err) != DS_OK) {
        rc = report(o, &err);
        goto out;
    }
    if (o->json) {
        if (json_child(stdout, child) != 0) rc = local_failure("out of memory");
        fputc('\n', stdout);
    } else {
        if (child->spec.kind[0])
            printf("started %s on %s (hosted, kind %s, id %s)\n", child->name, child->node, child->spec.kind,
                   child->id);
        else printf("started %s on %s (pid %" PRId32 ", id %s)\n", child->name, child->node, child->os_pid, child->id);
    }
    ds_child_free(child);
out:
    if (env)
        for (size_t i = 0; i < o->n_env; i++) ctl_kv_free(&env[i]);
    if (labels)
        for (size_t i = 0; i < o->n_labels; i++) ctl_kv_free(&labels[i]);
    free(env);
    free(labels);
    return rc;
}

static int cmd_stop(ds_client *c, const struct ctl_opts *o)
{
    ds_terminated *t;
    ds_error err;
    if (ds_terminate_child(c, o->supervisor, o->name, o->id, &t, &err) != DS_OK) return report(o, &err);
    if (o->json) {
        fputs("{\"name\":", stdout);
        ctl_json_cstr(stdout, t->name);
        printf(",\"exit_code\":%" PRId32 ",\"signal\":%" PRId32 "}\n", t->exit_code, t->signal);
    } else if (t->signal) {
        printf("stopped %s (signal %" PRId32 ")\n", t->name, t->signal);
    } else {
        printf("stopped %s (exit %" PRId32 ")\n", t->name, t->exit_code);
    }
    ds_terminated_free(t);
    return CTL_EXIT_OK;
}

static int cmd_ls(ds_client *c, const struct ctl_opts *o)
{
    ds_child_list *list;
    ds_error err;
    if (ds_children(c, o->supervisor, o->node, &list, &err) != DS_OK) return report(o, &err);
    int rc = CTL_EXIT_OK;
    if (o->json) {
        fputs("{\"children\":[", stdout);
        for (size_t i = 0; i < list->count && rc == 0; i++) {
            if (i) fputc(',', stdout);
            if (json_child(stdout, &list->items[i]) != 0) rc = local_failure("out of memory");
        }
        fputs("]}\n", stdout);
    } else if (table_children(list->items, list->count, false) != 0) {
        rc = local_failure("out of memory");
    }
    ds_child_list_free(list);
    return rc;
}

static int cmd_whereis(ds_client *c, const struct ctl_opts *o)
{
    ds_child *child;
    ds_error err;
    int st = o->cmd == CMD_WHOIS ? ds_whois(c, o->supervisor, o->id, &child, &err)
                                 : ds_whereis(c, o->supervisor, o->name, &child, &err);
    if (st != DS_OK) return report(o, &err);
    int rc = CTL_EXIT_OK;
    if (o->json) {
        if (json_child(stdout, child) != 0) rc = local_failure("out of memory");
        fputc('\n', stdout);
    } else if (table_children(child, 1, true) != 0) {
        rc = local_failure("out of memory");
    }
    ds_child_free(child);
    return rc;
}

/* ---- messages ---------------------------------------------------------------------- */

/* Reads all of f into a malloc'd buffer. */
static int read_all(FILE *f, uint8_t **out, size_t *len)
{
    size_t cap = 4096, n = 0;
    uint8_t *buf = malloc(cap);
    if (buf == NULL) return -1;
    for (;;) {
        if (n == cap) {
            uint8_t *b = realloc(buf, cap * 2);
            if (b == NULL) {
                free(buf);
                return -1;
            }
            buf = b;
            cap *= 2;
        }
        size_t r = fread(buf + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    if (ferror(f)) {
        free(buf);
        return -1;
    }
    *out = buf;
    *len = n;
    return 0;
}

/* The payload of call/cast/send: the argument, or --payload-file.  *owned is what
 * to free. */
static int get_payload(const struct ctl_opts *o, const uint8_t **p, size_t *n, uint8_t **owned)
{
    *owned = NULL;
    if (o->payload_file == NULL) {
        *p = (const uint8_t *)o->payload;
        *n = strlen(o->payload);
        return 0;
    }
    bool is_stdin = strcmp(o->payload_file, "-") == 0;
    FILE *f = is_stdin ? stdin : fopen(o->payload_file, "rb");
    if (f == NULL) {
        fprintf(stderr, "distsupctl: cannot open %s: %s\n", o->payload_file, strerror(errno));
        return -1;
    }
    int rc = read_all(f, owned, n);
    if (rc != 0) fprintf(stderr, "distsupctl: cannot read %s\n", o->payload_file);
    if (!is_stdin) fclose(f);
    *p = *owned;
    return rc;
}

static int cmd_message(ds_client *c, const struct ctl_opts *o)
{
    const uint8_t *p;
    size_t n;
    uint8_t *owned;
    if (get_payload(o, &p, &n, &owned) != 0) return CTL_EXIT_LOCAL;
    ds_error err;
    int rc = CTL_EXIT_OK;
    ds_message_options mo = {.traceparent = o->traceparent, .tracestate = o->tracestate};
    if (o->cmd == CMD_CALL) {
        ds_call_result *r;
        if (ds_call_opts(c, o->supervisor, o->name, p, n, o->timeout_ms, &mo, &r, &err) != DS_OK) {
            rc = report(o, &err);
        } else {
            if (o->json) {
                fputs("{\"name\":", stdout);
                ctl_json_cstr(stdout, o->name);
                fputs(",\"node\":", stdout);
                ctl_json_cstr(stdout, r->node);
                fputc(',', stdout);
                if (ctl_json_bytes(stdout, "payload", r->data, r->len) != 0) rc = local_failure("out of memory");
                fputs("}\n", stdout);
            } else {
                fwrite(r->data, 1, r->len, stdout);
                if (!o->raw) fputc('\n', stdout);
            }
            ds_call_result_free(r);
        }
    } else {
        int st = o->cmd == CMD_CAST ? ds_cast_opts(c, o->supervisor, o->name, p, n, &mo, &err)
                                    : ds_send_opts(c, o->supervisor, o->name, p, n, &mo, &err);
        if (st != DS_OK) rc = report(o, &err);
        else if (o->json) puts("{\"ok\":true}");
        else puts("ok");
    }
    free(owned);
    return rc;
}

/* ---- cluster ----------------------------------------------------------------------- */

static int cmd_count(ds_client *c, const struct ctl_opts *o)
{
    ds_counts k;
    ds_error err;
    if (ds_count_children(c, o->supervisor, o->node, &k, &err) != DS_OK) return report(o, &err);
    if (o->json) {
        printf("{\"specs\":%" PRIu32 ",\"active\":%" PRIu32 ",\"supervisors\":%" PRIu32 ",\"workers\":%" PRIu32
               ",\"failed\":%" PRIu32 "}\n",
               k.specs, k.active, k.supervisors, k.workers, k.failed);
        return CTL_EXIT_OK;
    }
    static const char *const hdr[] = {"SPECS", "ACTIVE", "WORKERS", "SUPERVISORS", "FAILED"};
    char v[5][16];
    snprintf(v[0], 16, "%" PRIu32, k.specs);
    snprintf(v[1], 16, "%" PRIu32, k.active);
    snprintf(v[2], 16, "%" PRIu32, k.workers);
    snprintf(v[3], 16, "%" PRIu32, k.supervisors);
    snprintf(v[4], 16, "%" PRIu32, k.failed);
    const char *row[] = {v[0], v[1], v[2], v[3], v[4]};
    struct ctl_table t;
    if (ctl_table_init(&t, 5, hdr) != 0 || ctl_table_add(&t, row) != 0) {
        ctl_table_free(&t);
        return local_failure("out of memory");
    }
    ctl_table_print(&t, stdout);
    ctl_table_free(&t);
    return CTL_EXIT_OK;
}

static int cmd_nodes(ds_client *c, const struct ctl_opts *o)
{
    ds_node_list *list;
    ds_error err;
    if (ds_nodes(c, o->supervisor, &list, &err) != DS_OK) return report(o, &err);
    int rc = CTL_EXIT_OK;
    if (o->json) {
        fputs("{\"nodes\":[", stdout);
        for (size_t i = 0; i < list->count; i++) {
            const ds_node *n = &list->items[i];
            fputs(i ? ",{\"name\":" : "{\"name\":", stdout);
            ctl_json_cstr(stdout, n->name);
            fputs(",\"address\":", stdout);
            ctl_json_cstr(stdout, n->address);
            printf(",\"up\":%s,\"self\":%s,\"children\":%" PRIu32 ",\"labels\":", n->up ? "true" : "false",
                   n->self ? "true" : "false", n->children);
            json_kvs(stdout, n->labels, n->n_labels);
            fputc('}', stdout);
        }
        fputs("]}\n", stdout);
    } else {
        static const char *const hdr[] = {"NAME", "ADDRESS", "UP", "SELF", "CHILDREN", "LABELS"};
        struct ctl_table t;
        if (ctl_table_init(&t, 6, hdr) != 0) {
            rc = local_failure("out of memory");
        } else {
            for (size_t i = 0; i < list->count && rc == 0; i++) {
                const ds_node *n = &list->items[i];
                char kids[16];
                snprintf(kids, sizeof kids, "%" PRIu32, n->children);
                size_t cap = 1;
                for (size_t j = 0; j < n->n_labels; j++)
                    cap += strlen(n->labels[j].key) + strlen(n->labels[j].value) + 2;
                char *labels = malloc(cap);
                if (labels == NULL) {
                    rc = local_failure("out of memory");
                    break;
                }
                labels[0] = '\0';
                size_t off = 0;
                for (size_t j = 0; j < n->n_labels; j++)
                    off += (size_t)snprintf(labels + off, cap - off, "%s%s=%s", j ? "," : "", n->labels[j].key,
                                            n->labels[j].value);
                const char *row[] = {
                    n->name, n->address[0] ? n->address : "-", n->up ? "yes" : "no", n->self ? "*" : "",
                    kids,    labels[0] ? labels : "-"};
                if (ctl_table_add(&t, row) != 0) rc = local_failure("out of memory");
                free(labels);
            }
            if (rc == 0) ctl_table_print(&t, stdout);
            ctl_table_free(&t);
        }
    }
    ds_node_list_free(list);
    return rc;
}

static int cmd_node_for(ds_client *c, const struct ctl_opts *o)
{
    ds_error err;
    char *node;
    int mine = 0;
    int st = o->cmd == CMD_MINE ? ds_mine(c, o->supervisor, o->key, &mine, &node, &err)
                                : ds_node_for(c, o->supervisor, o->key, &node, &err);
    if (st != DS_OK) return report(o, &err);
    if (o->json) {
        fputs("{\"key\":", stdout);
        ctl_json_cstr(stdout, o->key);
        if (o->cmd == CMD_MINE) printf(",\"mine\":%s", mine ? "true" : "false");
        fputs(",\"node\":", stdout);
        ctl_json_cstr(stdout, node);
        fputs("}\n", stdout);
    } else if (o->cmd == CMD_MINE) {
        printf("%s %s\n", mine ? "true" : "false", node);
    } else {
        printf("%s\n", node);
    }
    ds_free(node);
    return CTL_EXIT_OK;
}

static int cmd_health(ds_client *c, const struct ctl_opts *o)
{
    ds_health_status s;
    ds_error err;
    if (ds_health_check(c, o->service, &s, &err) != DS_OK) return report(o, &err);
    if (o->json) printf("{\"status\":\"%s\"}\n", ds_health_status_name(s));
    else printf("%s\n", ds_health_status_name(s));
    return s == DS_HEALTH_SERVING ? CTL_EXIT_OK : CTL_EXIT_NOT_SERVING;
}

/* ---- watch ------------------------------------------------------------------------- */

struct watch_state {
    const struct ctl_opts *o;
    unsigned long seen;
    bool header_done;
};

static void watch_header(struct watch_state *w)
{
    if (w->header_done || w->o->json) return;
    printf("%-12s  %-6s  %-15s  %-10s  %-20s  %-16s  %-7s  %s\n", "TIME", "SEQ", "KIND", "SUPERVISOR", "NAME", "NODE",
           "PID", "DETAIL");
    fflush(stdout);
    w->header_done = true;
}

/* The daemon has subscribed the stream: the table's header shows that events from
 * now on will be printed (scripts may wait for it before acting). */
static void on_open(void *arg) { watch_header(arg); }

static int on_event(void *arg, const ds_event *e)
{
    struct watch_state *w = arg;
    const struct ctl_opts *o = w->o;
    if (o->json) {
        printf("{\"seq\":%" PRIu64 ",\"kind\":\"%s\",\"supervisor\":", e->seq, ds_event_kind_name(e->kind));
        ctl_json_cstr(stdout, e->supervisor);
        fputs(",\"name\":", stdout);
        ctl_json_cstr(stdout, e->name);
        fputs(",\"id\":", stdout);
        ctl_json_cstr(stdout, e->id);
        fputs(",\"node\":", stdout);
        ctl_json_cstr(stdout, e->node);
        printf(",\"os_pid\":%" PRId32 ",\"exit_code\":%" PRId32 ",\"signal\":%" PRId32 ",\"reason\":", e->os_pid,
               e->exit_code, e->signal);
        ctl_json_cstr(stdout, e->reason);
        printf(",\"at_ms\":%" PRId64 ",\"restarts\":%" PRIu32 "}\n", e->at_ms, e->restarts);
    } else {
        watch_header(w);
        char when[32] = "-";
        if (e->at_ms > 0) {
            time_t t = (time_t)(e->at_ms / 1000);
            struct tm tm;
            if (localtime_r(&t, &tm)) {
                char hms[16];
                strftime(hms, sizeof hms, "%H:%M:%S", &tm);
                snprintf(when, sizeof when, "%s.%03d", hms, (int)(e->at_ms % 1000));
            }
        }
        char pid[16] = "-";
        if (e->os_pid > 0) snprintf(pid, sizeof pid, "%" PRId32, e->os_pid);
        char detail[600] = "";
        size_t off = 0;
        if (e->kind == DS_EVENT_PROCESS_STOP || e->kind == DS_EVENT_PROCESS_RESTART ||
            e->kind == DS_EVENT_PROCESS_FAILED) {
            if (e->signal) off += (size_t)snprintf(detail, sizeof detail, "signal=%" PRId32 " ", e->signal);
            else off += (size_t)snprintf(detail, sizeof detail, "exit=%" PRId32 " ", e->exit_code);
        }
        if (e->restarts && off < sizeof detail)
            off += (size_t)snprintf(detail + off, sizeof detail - off, "restarts=%" PRIu32 " ", e->restarts);
        if (e->reason[0] && off < sizeof detail) snprintf(detail + off, sizeof detail - off, "%s", e->reason);
        printf("%-12s  %-6" PRIu64 "  %-15s  %-10s  %-20s  %-16s  %-7s  %s\n", when, e->seq,
               ds_event_kind_name(e->kind), e->supervisor, e->name[0] ? e->name : "-", e->node[0] ? e->node : "-", pid,
               detail);
    }
    fflush(stdout);
    w->seen++;
    return o->count && w->seen >= o->count ? 1 : 0;
}

static int cmd_watch(ds_client *c, const struct ctl_opts *o)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        return local_failure("cannot install signal handlers");
    struct watch_state w = {.o = o};
    ds_watch_options wo = {
        .supervisor = o->supervisor,
        .kinds = o->kinds,
        .n_kinds = o->n_kinds,
        .timeout_ms = o->timeout_ms,
        .stop = &g_stop,
        .on_open = on_open,
        .cluster = o->cluster,
    };
    ds_error err;
    if (ds_watch(c, &wo, on_event, &w, &err) != DS_OK) {
        fflush(stdout);
        return report(o, &err);
    }
    return CTL_EXIT_OK;
}

/* ---- top ----------------------------------------------------------------------------- */

/* One row of top: a child of this poll and what changed since the previous one. */
struct top_row {
    const ds_child *c;
    uint32_t restarts_delta;
    double rate; /* calls per second; < 0: not in the previous poll */
    bool remote; /* on another node than the daemon asked: its count is not live here */
};

static int child_by_name(const void *a, const void *b)
{
    return strcmp(((const ds_child *)a)->name, ((const ds_child *)b)->name);
}

static int row_order(const void *a, const void *b)
{
    const struct top_row *x = a, *y = b;
    if (x->rate != y->rate) return x->rate < y->rate ? 1 : -1; /* busiest first */
    return strcmp(x->c->name, y->c->name);
}

/* 1 when the row's child was not in the previous poll (no deltas for it). */
static bool p_prev_missing(const struct top_row *r, const ds_child_list *prev)
{
    return !prev || !prev->count || !bsearch(r->c, prev->items, prev->count, sizeof *prev->items, child_by_name);
}

/* Pauses ms milliseconds, or less when a signal asked to stop. */
static void top_sleep(uint32_t ms)
{
    while (ms > 0 && !g_stop) {
        uint32_t step = ms < 100 ? ms : 100;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)step * 1000000L};
        nanosleep(&ts, NULL);
        ms -= step;
    }
}

/* Prints the table of cur against prev (sorted by name; NULL: the first poll), over
 * elapsed_ms.  0, or -1 when out of memory. */
static int top_print(const struct ctl_opts *o, const ds_child_list *cur, const ds_child_list *prev, int64_t elapsed_ms,
                     bool tty, const char *self)
{
    struct top_row *rows = calloc(cur->count ? cur->count : 1, sizeof *rows);
    if (!rows) return -1;
    for (size_t i = 0; i < cur->count; i++) {
        const ds_child *c = &cur->items[i];
        const ds_child *p =
            prev && prev->count ? bsearch(c, prev->items, prev->count, sizeof *prev->items, child_by_name) : NULL;
        rows[i].c = c;
        rows[i].rate = -1;
        rows[i].remote = strcmp(c->node, self) != 0;
        if (p) {
            /* a counter that went down was restarted elsewhere (a move): count from 0 */
            uint64_t calls = c->calls >= p->calls ? c->calls - p->calls : c->calls;
            if (!rows[i].remote) rows[i].rate = elapsed_ms > 0 ? (double)calls * 1000.0 / (double)elapsed_ms : 0;
            rows[i].restarts_delta = c->restarts >= p->restarts ? c->restarts - p->restarts : 0;
        }
    }
    qsort(rows, cur->count, sizeof *rows, row_order);
    int64_t now = now_ms();
    int rc = 0;
    if (o->json) {
        printf("{\"at_ms\":%" PRId64 ",\"interval_ms\":%" PRId64 ",\"children\":[", now, elapsed_ms);
        for (size_t i = 0; i < cur->count; i++) {
            const ds_child *c = rows[i].c;
            fputs(i ? ",{\"name\":" : "{\"name\":", stdout);
            ctl_json_cstr(stdout, c->name);
            fputs(",\"node\":", stdout);
            ctl_json_cstr(stdout, c->node);
            printf(",\"state\":\"%s\",\"restarts\":%" PRIu32, ds_child_state_name(c->state), c->restarts);
            if (p_prev_missing(&rows[i], prev)) fputs(",\"restarts_delta\":null", stdout);
            else printf(",\"restarts_delta\":%" PRIu32, rows[i].restarts_delta);
            if (rows[i].remote) fputs(",\"calls\":null", stdout);
            else printf(",\"calls\":%" PRIu64, c->calls);
            if (rows[i].rate < 0) fputs(",\"calls_per_s\":null}", stdout);
            else printf(",\"calls_per_s\":%.1f}", rows[i].rate);
        }
        fputs("]}\n", stdout);
    } else {
        static const char *const hdr[] = {"NAME", "NODE", "STATE", "RESTARTS", "+RESTARTS", "CALLS", "CALLS/S"};
        struct ctl_table t;
        if (ctl_table_init(&t, 7, hdr) != 0) {
            free(rows);
            return -1;
        }
        for (size_t i = 0; i < cur->count && rc == 0; i++) {
            const ds_child *c = rows[i].c;
            char restarts[16], delta[16], calls[24], rate[32];
            snprintf(restarts, sizeof restarts, "%" PRIu32, c->restarts);
            if (p_prev_missing(&rows[i], prev)) snprintf(delta, sizeof delta, "-");
            else snprintf(delta, sizeof delta, "%" PRIu32, rows[i].restarts_delta);
            if (rows[i].remote) snprintf(calls, sizeof calls, "-");
            else snprintf(calls, sizeof calls, "%" PRIu64, c->calls);
            if (rows[i].rate < 0) snprintf(rate, sizeof rate, "-");
            else snprintf(rate, sizeof rate, "%.1f", rows[i].rate);
            const char *row[] = {c->name, c->node, ds_child_state_name(c->state), restarts, delta, calls, rate};
            rc = ctl_table_add(&t, row);
        }
        if (rc == 0) {
            time_t secs = (time_t)(now / 1000);
            struct tm tm;
            char when[32] = "?";
            if (localtime_r(&secs, &tm)) strftime(when, sizeof when, "%H:%M:%S", &tm);
            if (tty) fputs("\033[H\033[2J", stdout); /* home, clear the screen */
            printf("top: %s, %zu children, every %.1f s\n", when, cur->count, o->interval_ms / 1000.0);
            ctl_table_print(&t, stdout);
            if (!tty) fputc('\n', stdout);
        }
        ctl_table_free(&t);
    }
    free(rows);
    fflush(stdout);
    return rc;
}

static int cmd_top(ds_client *c, const struct ctl_opts *o)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGINT, &sa, NULL) != 0 || sigaction(SIGTERM, &sa, NULL) != 0)
        return local_failure("cannot install signal handlers");
    bool tty = !o->json && isatty(STDOUT_FILENO);
    /* the node the daemon asked runs: only its children's counts are live */
    char self[256] = "";
    ds_node_list *nodes;
    ds_error nerr;
    if (ds_nodes(c, o->supervisor, &nodes, &nerr) != DS_OK) return report(o, &nerr);
    for (size_t i = 0; i < nodes->count; i++)
        if (nodes->items[i].self) snprintf(self, sizeof self, "%s", nodes->items[i].name);
    ds_node_list_free(nodes);
    ds_child_list *prev = NULL;
    int64_t prev_at = 0;
    int rc = CTL_EXIT_OK;
    for (unsigned polls = 0; !g_stop; polls++) {
        ds_child_list *cur;
        ds_error err;
        int64_t at = now_ms();
        if (ds_children(c, o->supervisor, o->node, &cur, &err) != DS_OK) {
            rc = report(o, &err);
            break;
        }
        qsort(cur->items, cur->count, sizeof *cur->items, child_by_name);
        /* --once prints only the second poll's table, which has the rates */
        if (!(o->once && polls == 0) && top_print(o, cur, prev, prev ? at - prev_at : 0, tty, self) != 0) {
            ds_child_list_free(cur);
            rc = local_failure("out of memory");
            break;
        }
        if (ferror(stdout)) {
            ds_child_list_free(cur);
            rc = local_failure("cannot write the output");
            break;
        }
        ds_child_list_free(prev);
        prev = cur;
        prev_at = at;
        if (o->once && polls == 1) break;
        top_sleep(o->interval_ms);
    }
    ds_child_list_free(prev);
    return rc;
}

/* ---- main -------------------------------------------------------------------------- */

int main(int argc, char **argv)
{
    struct ctl_opts o;
    char errbuf[512];
    if (ctl_parse(argc, argv, getenv("DISTSUP_ADDR"), &o, errbuf, sizeof errbuf) != 0) {
        fprintf(stderr, "distsupctl: %s\n", errbuf);
        if (o.cmd != CMD_NONE && o.cmd != CMD_HELP)
            fprintf(stderr, "Try 'distsupctl %s --help'.\n", ctl_cmd_name(o.cmd));
        else fprintf(stderr, "Try 'distsupctl --help'.\n");
        ctl_opts_free(&o);
        return CTL_EXIT_USAGE;
    }
    if (o.help) {
        fputs(ctl_help_text(o.help_cmd), stdout);
        ctl_opts_free(&o);
        return fflush(stdout) == 0 && !ferror(stdout) ? CTL_EXIT_OK : CTL_EXIT_LOCAL;
    }

    ds_client *c;
    ds_error err;
    /* the token: --token-file, else $DISTSUP_TOKEN, else the file $DISTSUP_TOKEN_FILE */
    const char *env_token = getenv("DISTSUP_TOKEN");
    const char *env_token_file = getenv("DISTSUP_TOKEN_FILE");
    ds_connect_options copts = {
        .timeout_ms = o.deadline_ms,
        .token = o.token_file ? NULL : env_token,
        .token_file = o.token_file    ? o.token_file
            : env_token && *env_token ? NULL
                                      : env_token_file,
        .tls_ca_file = o.tls_ca,
        .tls_cert_file = o.tls_cert,
        .tls_key_file = o.tls_key,
    };
    int rc;
    if (ds_connect(o.addr, &copts, &c, &err) != DS_OK) {
        rc = report(&o, &err);
        ctl_opts_free(&o);
        return rc;
    }
    ds_client_set_spec_data(c, o.spec_data);
    switch (o.cmd) {
    case CMD_START: rc = cmd_start(c, &o); break;
    case CMD_STOP: rc = cmd_stop(c, &o); break;
    case CMD_LS: rc = cmd_ls(c, &o); break;
    case CMD_WHEREIS:
    case CMD_WHOIS: rc = cmd_whereis(c, &o); break;
    case CMD_CALL:
    case CMD_CAST:
    case CMD_SEND: rc = cmd_message(c, &o); break;
    case CMD_COUNT: rc = cmd_count(c, &o); break;
    case CMD_NODES: rc = cmd_nodes(c, &o); break;
    case CMD_NODE_FOR:
    case CMD_MINE: rc = cmd_node_for(c, &o); break;
    case CMD_WATCH: rc = cmd_watch(c, &o); break;
    case CMD_HEALTH: rc = cmd_health(c, &o); break;
    case CMD_TOP: rc = cmd_top(c, &o); break;
    default: rc = CTL_EXIT_USAGE; break;
    }
    ds_close(c);
    ctl_opts_free(&o);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "distsupctl: cannot write the output\n");
        if (rc == CTL_EXIT_OK) rc = CTL_EXIT_LOCAL;
    }
    return rc;
}

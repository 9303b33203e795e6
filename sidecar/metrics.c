/* metrics.c: the registry, its text exposition and its HTTP server (metrics.h). */
#include "sidecar/metrics.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "sidecar/log.h"

/* Bucket upper bounds in ns: 50 µs to 10 s (then +Inf). */
static const uint64_t bounds_ns[] = {
    50000,    100000,   250000,    500000,    1000000,   2500000,    5000000,    10000000,
    25000000, 50000000, 100000000, 250000000, 500000000, 1000000000, 2500000000, 10000000000ull,
};
#define NBUCKETS (sizeof bounds_ns / sizeof bounds_ns[0])

struct hist {
    _Atomic uint64_t bucket[NBUCKETS + 1]; /* not cumulative; the last is +Inf */
    _Atomic uint64_t sum_ns, count;
};

struct sup_metrics {
    _Atomic uint64_t counter[MC_NSUP_COUNTERS];
    _Atomic uint64_t children[MS_NSTATES];
    _Atomic uint64_t mailbox, mailbox_max; /* calls awaiting replies: all children, the fullest */
    struct hist hist[MH_NSUP_HISTS];
};

struct metrics {
    const struct config *cfg;
    struct sup_metrics sup[CONFIG_MAX_SUPERVISORS];
    _Atomic uint64_t counter[MN_NCOUNTERS];
    _Atomic int64_t gauge[MG_NGAUGES];
    struct hist store_write;
    char *label[CONFIG_MAX_SUPERVISORS]; /* each supervisor's name, escaped for a label value */
    metrics_collect_fn collect;
    void *collect_arg;
    struct MHD_Daemon *httpd;
    /* the peers' round trips (metrics_set_peer_rtt), names escaped for a label value */
    pthread_mutex_t rtt_mu;
    int rtt_mu_ok;
    struct peer_rtt {
        char *label;
        double seconds;
    } * rtt;
    size_t n_rtt;
};

/* name as a label value: the exposition format escapes \, " and newline.  NULL when out of memory. */
static char *label_escape(const char *n)
{
    char *o0 = malloc(2 * strlen(n) + 1), *o = o0;
    if (!o) return NULL;
    for (; *n; n++) {
        if (*n == '\\' || *n == '"') *o++ = '\\';
        if (*n == '\n') {
            *o++ = '\\';
            *o++ = 'n';
        } else *o++ = *n;
    }
    *o = 0;
    return o0;
}

struct metrics *metrics_new(const struct config *cfg)
{
    struct metrics *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->cfg = cfg;
    if (pthread_mutex_init(&m->rtt_mu, NULL) != 0) {
        free(m);
        return NULL;
    }
    m->rtt_mu_ok = 1;
    for (size_t i = 0; i < cfg->n_sups; i++) {
        if (!(m->label[i] = label_escape(cfg->sups[i].name))) {
            metrics_free(m);
            return NULL;
        }
    }
    atomic_store_explicit(&m->gauge[MG_QUORUM], 1, memory_order_relaxed);
    atomic_store_explicit(&m->gauge[MG_NODES_UP], 1, memory_order_relaxed);
    return m;
}

void metrics_set_collector(struct metrics *m, metrics_collect_fn fn, void *arg)
{
    if (!m) return;
    m->collect = fn;
    m->collect_arg = arg;
}

uint64_t metrics_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static struct sup_metrics *sup_of(struct metrics *m, const struct sup_config *sup)
{
    if (!m || !sup || sup < m->cfg->sups || sup >= m->cfg->sups + m->cfg->n_sups) return NULL;
    return &m->sup[sup - m->cfg->sups];
}

static void hist_observe(struct hist *h, uint64_t ns)
{
    size_t i = 0;
    while (i < NBUCKETS && ns > bounds_ns[i]) i++;
    atomic_fetch_add_explicit(&h->bucket[i], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->sum_ns, ns, memory_order_relaxed);
    atomic_fetch_add_explicit(&h->count, 1, memory_order_relaxed);
}

void metrics_sup_inc(struct metrics *m, const struct sup_config *sup, enum metric_sup_counter k)
{
    struct sup_metrics *s = sup_of(m, sup);
    if (s) atomic_fetch_add_explicit(&s->counter[k], 1, memory_order_relaxed);
}

void metrics_sup_observe(struct metrics *m, const struct sup_config *sup, enum metric_sup_hist h, uint64_t ns)
{
    struct sup_metrics *s = sup_of(m, sup);
    if (s) hist_observe(&s->hist[h], ns);
}

void metrics_set_children(struct metrics *m, const struct sup_config *sup, const uint64_t counts[MS_NSTATES])
{
    struct sup_metrics *s = sup_of(m, sup);
    if (!s) return;
    for (int i = 0; i < MS_NSTATES; i++) atomic_store_explicit(&s->children[i], counts[i], memory_order_relaxed);
}

void metrics_set_mailbox(struct metrics *m, const struct sup_config *sup, uint64_t total, uint64_t max)
{
    struct sup_metrics *s = sup_of(m, sup);
    if (!s) return;
    atomic_store_explicit(&s->mailbox, total, memory_order_relaxed);
    atomic_store_explicit(&s->mailbox_max, max, memory_order_relaxed);
}

void metrics_add(struct metrics *m, enum metric_counter k, uint64_t n)
{
    if (m) atomic_fetch_add_explicit(&m->counter[k], n, memory_order_relaxed);
}

void metrics_set(struct metrics *m, enum metric_gauge g, int64_t v)
{
    if (m) atomic_store_explicit(&m->gauge[g], v, memory_order_relaxed);
}

void metrics_gauge_add(struct metrics *m, enum metric_gauge g, int64_t d)
{
    if (m) atomic_fetch_add_explicit(&m->gauge[g], d, memory_order_relaxed);
}

void metrics_store_write(struct metrics *m, uint64_t ns)
{
    if (m) hist_observe(&m->store_write, ns);
}

/* ---------- rendering ---------- */

struct buf {
    char *p;
    size_t len, cap;
    int oom;
};

static void put(struct buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct buf *b, const char *fmt, ...)
{
    if (b->oom) return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < b->cap - b->len) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap * 2 + (size_t)n + 1;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

static void head(struct buf *b, const char *name, const char *type, const char *help)
{
    put(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static uint64_t ld(_Atomic uint64_t *v) { return atomic_load_explicit(v, memory_order_relaxed); }

static void put_hist(struct buf *b, const char *name, const char *labels, struct hist *h)
{
    uint64_t cum = 0;
    const char *sep = labels[0] ? "," : "";
    for (size_t i = 0; i <= NBUCKETS; i++) {
        cum += ld(&h->bucket[i]);
        if (i < NBUCKETS)
            put(b, "%s_bucket{%s%sle=\"%g\"} %llu\n", name, labels, sep, (double)bounds_ns[i] / 1e9,
                (unsigned long long)cum);
        else put(b, "%s_bucket{%s%sle=\"+Inf\"} %llu\n", name, labels, sep, (unsigned long long)cum);
    }
    /* The count is the buckets' total, so that +Inf and _count always agree. */
    if (labels[0]) {
        put(b, "%s_sum{%s} %.9f\n", name, labels, (double)ld(&h->sum_ns) / 1e9);
        put(b, "%s_count{%s} %llu\n", name, labels, (unsigned long long)cum);
    } else {
        put(b, "%s_sum %.9f\n", name, (double)ld(&h->sum_ns) / 1e9);
        put(b, "%s_count %llu\n", name, (unsigned long long)cum);
    }
}

static void sup_counter(struct buf *b, struct metrics *m, const char *name, const char *help, enum metric_sup_counter k)
{
    head(b, name, "counter", help);
    for (size_t i = 0; i < m->cfg->n_sups; i++)
        put(b, "%s{supervisor=\"%s\"} %llu\n", name, m->label[i], (unsigned long long)ld(&m->sup[i].counter[k]));
}

/* A histogram per supervisor: local's, or with forwarded < MH_NSUP_HISTS local's and
 * forwarded's under a location label. */
static void sup_hist(struct buf *b, struct metrics *m, const char *name, const char *help, enum metric_sup_hist local,
                     enum metric_sup_hist forwarded)
{
    head(b, name, "histogram", help);
    for (size_t i = 0; i < m->cfg->n_sups; i++) {
        char l[300];
        if (forwarded == MH_NSUP_HISTS) {
            snprintf(l, sizeof l, "supervisor=\"%s\"", m->label[i]);
            put_hist(b, name, l, &m->sup[i].hist[local]);
            continue;
        }
        snprintf(l, sizeof l, "supervisor=\"%s\",location=\"local\"", m->label[i]);
        put_hist(b, name, l, &m->sup[i].hist[local]);
        snprintf(l, sizeof l, "supervisor=\"%s\",location=\"forwarded\"", m->label[i]);
        put_hist(b, name, l, &m->sup[i].hist[forwarded]);
    }
}

static void node_counter(struct buf *b, struct metrics *m, const char *name, const char *help, enum metric_counter k)
{
    head(b, name, "counter", help);
    put(b, "%s %llu\n", name, (unsigned long long)ld(&m->counter[k]));
}

static void node_gauge(struct buf *b, struct metrics *m, const char *name, const char *help, enum metric_gauge g)
{
    head(b, name, "gauge", help);
    put(b, "%s %lld\n", name, (long long)atomic_load_explicit(&m->gauge[g], memory_order_relaxed));
}

/* process_*: from /proc/self. */
static void process_metrics(struct buf *b)
{
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    char stat[2048];
    FILE *f = fopen("/proc/self/stat", "r");
    size_t n = f ? fread(stat, 1, sizeof stat - 1, f) : 0;
    if (f) fclose(f);
    stat[n] = 0;
    /* Fields after the command (which may hold spaces) start after its last ')'. */
    char *p = strrchr(stat, ')');
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
    long long rss = 0;
    if (!p ||
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %*d %*d %llu %llu %lld",
               &utime, &stime, &start, &vsize, &rss) != 5 ||
        tick <= 0 || page <= 0)
        return;
    double btime = 0;
    if ((f = fopen("/proc/stat", "r"))) {
        char line[256];
        while (fgets(line, sizeof line, f))
            if (sscanf(line, "btime %lf", &btime) == 1) break;
        fclose(f);
    }
    long fds = 0;
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)))
            if (e->d_name[0] != '.') fds++;
        closedir(d);
        fds--; /* the directory's own fd */
    }
    struct rlimit rl;
    head(b, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.");
    put(b, "process_cpu_seconds_total %.2f\n", (double)(utime + stime) / (double)tick);
    head(b, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.");
    put(b, "process_resident_memory_bytes %lld\n", rss * page);
    head(b, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.");
    put(b, "process_virtual_memory_bytes %llu\n", vsize);
    head(b, "process_start_time_seconds", "gauge", "Start time of the process since unix epoch in seconds.");
    put(b, "process_start_time_seconds %.2f\n", btime + (double)start / (double)tick);
    if (d) {
        head(b, "process_open_fds", "gauge", "Number of open file descriptors.");
        put(b, "process_open_fds %ld\n", fds);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        head(b, "process_max_fds", "gauge", "Maximum number of open file descriptors.");
        put(b, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
}

char *metrics_render(struct metrics *m, size_t *len)
{
    struct buf b = {0};
    b.cap = 16384;
    if (!(b.p = malloc(b.cap))) return NULL;
    b.p[0] = 0;
    static const char *const states[MS_NSTATES] = {"STARTING",   "RUNNING", "STOPPING",
                                                   "RESTARTING", "FAILED",  "SUSPENDED"};
    head(&b, "distsup_children", "gauge", "Children running on this node, by supervisor and state.");
    for (size_t i = 0; i < m->cfg->n_sups; i++)
        for (int s = 0; s < MS_NSTATES; s++)
            put(&b, "distsup_children{supervisor=\"%s\",state=\"%s\"} %llu\n", m->label[i], states[s],
                (unsigned long long)ld(&m->sup[i].children[s]));
    head(&b, "distsup_mailbox_calls", "gauge",
         "Calls written to this node's children and awaiting their reply (mailbox depth), summed.");
    for (size_t i = 0; i < m->cfg->n_sups; i++)
        put(&b, "distsup_mailbox_calls{supervisor=\"%s\"} %llu\n", m->label[i],
            (unsigned long long)ld(&m->sup[i].mailbox));
    head(&b, "distsup_mailbox_calls_max", "gauge", "Calls awaiting a reply in this node's fullest child mailbox.");
    for (size_t i = 0; i < m->cfg->n_sups; i++)
        put(&b, "distsup_mailbox_calls_max{supervisor=\"%s\"} %llu\n", m->label[i],
            (unsigned long long)ld(&m->sup[i].mailbox_max));
    sup_counter(&b, m, "distsup_child_starts_total", "Child processes started (every incarnation).", MC_STARTS);
    sup_counter(&b, m, "distsup_child_restarts_total", "Child restarts scheduled by the restart policy.", MC_RESTARTS);
    sup_counter(&b, m, "distsup_child_start_failures_total",
                "Child processes that could not be spawned or died or timed out before Ready.", MC_START_FAILURES);
    head(&b, "distsup_child_exits_total", "counter", "Child process exits, by reason (normal, abnormal, signal).");
    static const char *const reasons[3] = {"normal", "abnormal", "signal"};
    for (size_t i = 0; i < m->cfg->n_sups; i++)
        for (int r = 0; r < 3; r++)
            put(&b, "distsup_child_exits_total{supervisor=\"%s\",reason=\"%s\"} %llu\n", m->label[i], reasons[r],
                (unsigned long long)ld(&m->sup[i].counter[MC_EXITS_NORMAL + r]));
    sup_counter(&b, m, "distsup_child_restart_bound_hits_total",
                "Children that reached their restart bound and FAILED.", MC_RESTART_BOUND);
    sup_counter(&b, m, "distsup_casts_total", "Casts written to a child on this node.", MC_CASTS);
    sup_counter(&b, m, "distsup_calls_timed_out_total",
                "Calls answered DEADLINE_EXCEEDED, counted on the node the client asked.", MC_CALLS_TIMED_OUT);
    sup_counter(&b, m, "distsup_calls_refused_total", "Calls refused because the child's mailbox was full.",
                MC_CALLS_REFUSED);
    sup_hist(&b, m, "distsup_call_duration_seconds",
             "Call latency in the reactor, from the request to its answer, by location of the child.", MH_CALL_LOCAL,
             MH_CALL_FORWARDED);
    sup_hist(&b, m, "distsup_cast_duration_seconds",
             "Cast latency in the reactor, from the request to its answer, by location of the child.", MH_CAST_LOCAL,
             MH_CAST_FORWARDED);
    sup_hist(&b, m, "distsup_start_child_duration_seconds",
             "StartChild latency in the reactor, from the request to its answer.", MH_START_CHILD, MH_NSUP_HISTS);
    head(&b, "distsup_store_write_duration_seconds", "histogram", "SQLite write (or commit) latency.");
    put_hist(&b, "distsup_store_write_duration_seconds", "", &m->store_write);
    node_counter(&b, m, "distsup_store_write_failures_total", "SQLite writes that failed.", MN_STORE_WRITES_FAILED);
    node_gauge(&b, m, "distsup_peer_links_up", "Peer links with a finished handshake.", MG_PEER_LINKS_UP);
    head(&b, "distsup_peer_rtt_seconds", "gauge",
         "Round trip to another node on its peer link (heartbeats, smoothed), by node.");
    pthread_mutex_lock(&m->rtt_mu);
    for (size_t i = 0; i < m->n_rtt; i++)
        put(&b, "distsup_peer_rtt_seconds{peer=\"%s\"} %.6f\n", m->rtt[i].label, m->rtt[i].seconds);
    pthread_mutex_unlock(&m->rtt_mu);
    node_counter(&b, m, "distsup_peer_sent_bytes_total", "Bytes of sealed packets sent to peers.", MN_PEER_BYTES_SENT);
    node_counter(&b, m, "distsup_peer_received_bytes_total", "Bytes of sealed packets received from peers.",
                 MN_PEER_BYTES_RECEIVED);
    node_counter(&b, m, "distsup_peer_sent_messages_total", "Sealed packets sent to peers.", MN_PEER_MESSAGES_SENT);
    node_counter(&b, m, "distsup_peer_received_messages_total", "Sealed packets received from peers.",
                 MN_PEER_MESSAGES_RECEIVED);
    head(&b, "distsup_peer_handshake_failures_total", "counter", "Peer handshakes that failed, by reason.");
    static const char *const hs[4] = {"untrusted", "bad_message", "timeout", "other"};
    for (int i = 0; i < 4; i++)
        put(&b, "distsup_peer_handshake_failures_total{reason=\"%s\"} %llu\n", hs[i],
            (unsigned long long)ld(&m->counter[MN_HS_FAIL_UNTRUSTED + i]));
    node_counter(&b, m, "distsup_peer_sealed_dropped_total", "Sealed packets dropped: they did not open.",
                 MN_PEER_SEALED_DROPPED);
    node_gauge(&b, m, "distsup_nodes_up", "Nodes of the cluster up as this node sees them, itself included.",
               MG_NODES_UP);
    node_gauge(&b, m, "distsup_nodes_down", "Known nodes of the cluster that are down.", MG_NODES_DOWN);
    node_gauge(&b, m, "distsup_quorum", "1 when this node has quorum (always 1 without quorum mode).", MG_QUORUM);
    node_counter(&b, m, "distsup_failovers_total",
                 "Node-down events (not clean leaves) handled: the node's children are re-homed.", MN_FAILOVERS);
    node_counter(&b, m, "distsup_children_rehomed_total",
                 "Children of a down node re-homed by this node (their directory node).", MN_REHOMED);
    node_counter(&b, m, "distsup_moves_total", "Child moves started from this node.", MN_MOVES);
    node_counter(&b, m, "distsup_duplicates_resolved_total", "Duplicate names resolved by stopping this node's copy.",
                 MN_DUPLICATES);
    node_gauge(&b, m, "distsup_hosts", "Host sessions attached (apps hosting children).", MG_HOSTS);
    node_gauge(&b, m, "distsup_hosted_children", "Hosted children that a host here runs.", MG_HOSTED_RUNNING);
    node_gauge(&b, m, "distsup_hosted_waiting", "Hosted children here waiting for a host of their kind.",
               MG_HOSTED_WAITING);
    head(&b, "distsup_host_sessions_ended_total", "counter", "Host sessions that ended, by why.");
    static const char *const hend[3] = {"left", "timeout", "refused"};
    for (int i = 0; i < 3; i++)
        put(&b, "distsup_host_sessions_ended_total{reason=\"%s\"} %llu\n", hend[i],
            (unsigned long long)ld(&m->counter[MN_HOSTS_LEFT + i]));
    process_metrics(&b);
    if (b.oom) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* ---------- HTTP ---------- */

static enum MHD_Result queue_text(struct MHD_Connection *conn, unsigned status, char *body, size_t len,
                                  enum MHD_ResponseMemoryMode mode, const char *type)
{
    struct MHD_Response *r = MHD_create_response_from_buffer(len, body, mode);
    if (!r) {
        if (mode == MHD_RESPMEM_MUST_FREE) free(body);
        return MHD_NO;
    }
    enum MHD_Result ok = MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
    if (ok == MHD_YES) ok = MHD_queue_response(conn, status, r);
    MHD_destroy_response(r);
    return ok;
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
                                  const char *version, const char *upload, size_t *upload_size, void **con_cls)
{
    (void)version, (void)upload, (void)con_cls;
    struct metrics *m = cls;
    static char not_found[] = "not found: try /metrics\n", bad_method[] = "only GET\n", oom[] = "out of memory\n";
    const char *plain = "text/plain; charset=utf-8";
    if (*upload_size) return MHD_NO; /* no bodies */
    if (strcmp(method, MHD_HTTP_METHOD_GET) && strcmp(method, MHD_HTTP_METHOD_HEAD))
        return queue_text(conn, MHD_HTTP_METHOD_NOT_ALLOWED, bad_method, sizeof bad_method - 1, MHD_RESPMEM_PERSISTENT,
                          plain);
    if (strcmp(url, "/metrics"))
        return queue_text(conn, MHD_HTTP_NOT_FOUND, not_found, sizeof not_found - 1, MHD_RESPMEM_PERSISTENT, plain);
    if (m->collect) m->collect(m->collect_arg);
    size_t len = 0;
    char *text = metrics_render(m, &len);
    if (!text)
        return queue_text(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, oom, sizeof oom - 1, MHD_RESPMEM_PERSISTENT, plain);
    return queue_text(conn, MHD_HTTP_OK, text, len, MHD_RESPMEM_MUST_FREE, "text/plain; version=0.0.4; charset=utf-8");
}

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    log_warn("metrics", "%s", msg);
}

int metrics_serve(struct metrics *m, const char *listen, int *port, char *err, size_t errlen)
{
    char host[256];
    const char *colon = strrchr(listen, ':');
    if (!colon || colon == listen || (size_t)(colon - listen) >= sizeof host) {
        snprintf(err, errlen, "metrics_listen '%s': want HOST:PORT", listen);
        return -1;
    }
    memcpy(host, listen, (size_t)(colon - listen));
    host[colon - listen] = 0;
    if (host[0] == '[' && host[strlen(host) - 1] == ']') {
        memmove(host, host + 1, strlen(host));
        host[strlen(host) - 1] = 0;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *ai = NULL;
    int rc = getaddrinfo(host, colon + 1, &hints, &ai);
    if (rc != 0 || !ai) {
        snprintf(err, errlen, "metrics_listen '%s': %s", listen, gai_strerror(rc));
        return -1;
    }
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG;
    if (ai->ai_family == AF_INET6) flags |= MHD_USE_IPv6;
    m->httpd = MHD_start_daemon(flags, 0, NULL, NULL, on_request, m, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
                                MHD_OPTION_SOCK_ADDR, ai->ai_addr, MHD_OPTION_CONNECTION_LIMIT, 64u,
                                MHD_OPTION_CONNECTION_TIMEOUT, 10u, MHD_OPTION_END);
    freeaddrinfo(ai);
    if (!m->httpd) {
        snprintf(err, errlen, "metrics_listen '%s': cannot listen (in use?)", listen);
        return -1;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(m->httpd, MHD_DAEMON_INFO_BIND_PORT);
    *port = info ? (int)info->port : 0;
    return 0;
}

void metrics_stop(struct metrics *m)
{
    if (!m || !m->httpd) return;
    MHD_stop_daemon(m->httpd);
    m->httpd = NULL;
}

void metrics_free(struct metrics *m)
{
    if (!m) return;
    metrics_stop(m);
    for (size_t i = 0; i < CONFIG_MAX_SUPERVISORS; i++) free(m->label[i]);
    for (size_t i = 0; i < m->n_rtt; i++) free(m->rtt[i].label);
    free(m->rtt);
    if (m->rtt_mu_ok) pthread_mutex_destroy(&m->rtt_mu);
    free(m);
}

void metrics_set_peer_rtt(struct metrics *m, const char *peer, double seconds)
{
    if (!m) return;
    char *label = label_escape(peer);
    if (!label) return;
    pthread_mutex_lock(&m->rtt_mu);
    size_t i = 0;
    while (i < m->n_rtt && strcmp(m->rtt[i].label, label)) i++;
    if (seconds < 0) {
        if (i < m->n_rtt) {
            free(m->rtt[i].label);
            m->rtt[i] = m->rtt[--m->n_rtt];
        }
    } else if (i < m->n_rtt) {
        m->rtt[i].seconds = seconds;
    } else if (m->n_rtt < METRICS_MAX_PEERS) {
        struct peer_rtt *g = realloc(m->rtt, (m->n_rtt + 1) * sizeof *g);
        if (g) {
            m->rtt = g;
            g[m->n_rtt].label = label;
            g[m->n_rtt].seconds = seconds;
            m->n_rtt++;
            label = NULL;
        }
    }
    pthread_mutex_unlock(&m->rtt_mu);
    free(label);
}

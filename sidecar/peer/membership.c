#include "sidecar/peer/internal.h"

#include <errno.h>
#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/slice.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sidecar/log.h"
#include "sidecar/spec.h"

/* ---------- helpers ---------- */

uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

void copy_str(char *dst, size_t cap, const char *src)
{
    snprintf(dst, cap, "%s", src ? src : "");
}

const char *who(const struct link *l)
{
    return l->name[0] ? l->name : l->addr;
}

static struct member *find_member(struct peer *p, const char *name)
{
    for (size_t i = 0; i < p->n_members; i++)
        if (!strcmp(p->members[i]->name, name)) return p->members[i];
    return NULL;
}

static struct member *add_member(struct peer *p, const char *name, const char *addr)
{
    struct member *m = find_member(p, name);
    if (m) return m;
    void *grown = realloc(p->members, (p->n_members + 1) * sizeof *p->members);
    if (!grown) return NULL;
    p->members = grown;
    if (!(m = calloc(1, sizeof *m))) return NULL;
    copy_str(m->name, sizeof m->name, name);
    copy_str(m->addr, sizeof m->addr, addr);
    m->state = M_DOWN;
    p->members[p->n_members++] = m;
    return m;
}

/* ---------- membership ---------- */

static void fill_members(struct peer *p, Distsup__V1__Member *arr, Distsup__V1__Member **ptrs, size_t *n)
{
    *n = 0;
    for (size_t i = 0; i < p->n_members; i++) {
        struct member *m = p->members[i];
        if (m->state != M_UP || !m->link) continue;
        distsup__v1__member__init(&arr[*n]);
        arr[*n].name = m->name;
        arr[*n].peer_address = m->addr;
        ptrs[*n] = &arr[*n];
        (*n)++;
    }
}

void send_join(struct peer *p, struct link *l)
{
    const struct config *c = p->cfg;
    Distsup__V1__Member *arr = calloc(p->n_members + 1, sizeof *arr);
    Distsup__V1__Member **ptrs = calloc(p->n_members + 1, sizeof *ptrs);
    Distsup__V1__Join__LabelsEntry *lab = NULL, **labp = NULL;
    char labels[sizeof c->labels];
    size_t n_lab = 0, n_mem = 0;
    if (!arr || !ptrs) goto out;
    fill_members(p, arr, ptrs, &n_mem);
    copy_str(labels, sizeof labels, c->labels);
    size_t max_lab = 1;
    for (const char *s = labels; *s; s++) max_lab += *s == ',';
    lab = calloc(max_lab, sizeof *lab);
    labp = calloc(max_lab, sizeof *labp);
    if (!lab || !labp) goto out;
    for (char *save = NULL, *tok = strtok_r(labels, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(tok, '=');
        if (!eq) continue;
        *eq = 0;
        distsup__v1__join__labels_entry__init(&lab[n_lab]);
        lab[n_lab].key = tok;
        lab[n_lab].value = eq + 1;
        labp[n_lab] = &lab[n_lab];
        n_lab++;
    }
    Distsup__V1__Join j = DISTSUP__V1__JOIN__INIT;
    j.name = (char *)c->node_name;
    j.boot_id = p->boot_id;
    j.peer_address = p->advertise;
    j.api_address = p->api_address;
    j.weight = c->weight;
    j.n_labels = n_lab;
    j.labels = labp;
    j.n_members = n_mem;
    j.members = ptrs;
    Distsup__V1__PeerMsg m = DISTSUP__V1__PEER_MSG__INIT;
    m.msg_case = DISTSUP__V1__PEER_MSG__MSG_JOIN;
    m.join = &j;
    send_msg(l, &m);
out:
    free(arr);
    free(ptrs);
    free(lab);
    free(labp);
}

/* Tells every other open link about the members we have (gossip). */
static void gossip(struct peer *p, const struct link *except)
{
    Distsup__V1__Member *arr = calloc(p->n_members + 1, sizeof *arr);
    Distsup__V1__Member **ptrs = calloc(p->n_members + 1, sizeof *ptrs);
    if (arr && ptrs) {
        size_t n;
        fill_members(p, arr, ptrs, &n);
        Distsup__V1__Members ms = DISTSUP__V1__MEMBERS__INIT;
        ms.n_members = n;
        ms.members = ptrs;
        Distsup__V1__PeerMsg m = DISTSUP__V1__PEER_MSG__INIT;
        m.msg_case = DISTSUP__V1__PEER_MSG__MSG_MEMBERS;
        m.members = &ms;
        for (struct link *l = p->links; l; l = l->next)
            if (l != except && l->state == L_OPEN && l->m) send_msg(l, &m);
    }
    free(arr);
    free(ptrs);
}

static void learn(struct peer *p, Distsup__V1__Member **ms, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        const char *name = ms[i]->name, *addr = ms[i]->peer_address;
        if (!name[0] || !addr[0] || !strcmp(name, p->cfg->node_name)) continue;
        char e[128];
        if (spec_name_check("node name", name, e, sizeof e) != 0 || strlen(addr) >= NAME_MAX_) continue;
        struct member *m = find_member(p, name);
        if (!m) {
            if (!(m = add_member(p, name, addr))) return;
            log_info("peer", "learned of node %s at %s", name, addr);
            /* Both may learn of each other at once and dial: the link both keep is the one
             * the smaller-named node dialed, so the larger-named one gives it time first
             * (a replaced link loses what was in flight on it). */
            if (strcmp(p->cfg->node_name, name) > 0) m->next_dial = now_ms() + 4ull * p->cfg->heartbeat_ms;
        } else if (m->state != M_UP && strcmp(m->addr, addr)) {
            copy_str(m->addr, sizeof m->addr, addr);
        }
    }
}

/* The initiator's name of a link. */
static const char *initiator_of(const struct peer *p, const struct link *l)
{
    return l->initiator ? p->cfg->node_name : l->name;
}

static void on_join(struct peer *p, struct link *l, Distsup__V1__Join *j)
{
    if (!j->name[0] || strlen(j->name) >= NAME_MAX_) {
        link_close(l, "Join without a usable name");
        return;
    }
    if (!strcmp(j->name, p->cfg->node_name)) {
        if (j->boot_id == p->boot_id) { /* dialed ourselves */
            if (l->seed) l->seed->self = 1;
            link_close(l, "that is this node");
        } else {
            log_error("peer", "a node at %s calls itself %s, this node's own name: check node_name",
                      l->addr, j->name);
            link_close(l, "name clash");
        }
        return;
    }
    if (l->name[0] && strcmp(l->name, j->name)) {
        link_close(l, "a second Join with another name");
        return;
    }
    const char *bound = identity_bound_name(p->id, l->peer_pk);
    if (!bound || (bound[0] && strcmp(bound, j->name))) {
        char hex[2 * HS_KEY_LEN + 1];
        key_hex(l->peer_pk, hex);
        log_warn("peer", "refused the link with %s: it calls itself %s, but the trust file gives its key %s "
                 "to node %s", l->addr, j->name, hex, bound ? bound : "(none)");
        link_close(l, NULL);
        return;
    }
    copy_str(l->name, sizeof l->name, j->name);
    if (l->seed) copy_str(l->seed->name, sizeof l->seed->name, j->name);
    struct member *m = add_member(p, j->name, j->peer_address);
    if (!m) {
        link_close(l, "out of memory");
        return;
    }
    if (m->link && m->link != l) {
        /* Two links to one node: both ends keep the one its smaller-named node dialed. */
        struct link *old = m->link;
        int keep_new = strcmp(initiator_of(p, l), initiator_of(p, old)) < 0;
        if (!keep_new) {
            link_close(l, "a link to this node exists already");
            return;
        }
        link_close(old, "replaced by a link dialed by the smaller-named node");
    }
    if (l->dial_for) {
        l->dial_for->dialing = 0;
        l->dial_for->tried = 1;
        l->dial_for = NULL;
    }
    if (l->seed) {
        l->seed->dialing = 0;
        l->seed->tried = 1;
        l->seed->backoff = 0;
        l->seed = NULL;
    }
    m->link = l;
    l->m = m;
    m->last_heard = now_ms();
    m->backoff = 0;
    m->tried = 1;
    m->probe_id = 0;
    if (j->peer_address[0]) copy_str(m->addr, sizeof m->addr, j->peer_address);
    int news = m->state != M_UP || m->boot_id != j->boot_id;
    int restarted = m->state == M_UP && m->boot_id != j->boot_id;
    m->state = M_UP;
    m->boot_id = j->boot_id;
    learn(p, j->members, j->n_members);
    if (news) {
        log_info("peer", "node %s is up (%s%s)", m->name, m->addr, restarted ? ", restarted" : "");
        p->cb.up(p->cb.arg, j);
        gossip(p, l);
    } else {
        /* A new link to a node that stayed up: what was broadcast while there was no
         * link is lost, so the core exchanges snapshots again. */
        log_info("peer", "link with node %s open again; resyncing", m->name);
        p->cb.up(p->cb.arg, j);
    }
}

static void member_down(struct peer *p, struct member *m, int clean, const char *why)
{
    if (m->state != M_UP) return;
    m->state = clean ? M_LEFT : M_DOWN;
    m->probe_id = 0;
    if (clean) log_info("peer", "node %s left the cluster", m->name);
    else log_warn("peer", "node %s is down: %s", m->name, why);
    if (m->link) link_close(m->link, clean ? "it left" : "it is down");
    p->cb.down(p->cb.arg, m->name, clean);
}

void on_peer_msg(struct peer *p, struct link *l, Distsup__V1__PeerMsg *pm)
{
    if (pm->msg_case == DISTSUP__V1__PEER_MSG__MSG_JOIN) {
        on_join(p, l, pm->join);
        return;
    }
    if (!l->m) {
        link_close(l, "a message before Join");
        return;
    }
    struct member *m = l->m;
    switch (pm->msg_case) {
    case DISTSUP__V1__PEER_MSG__MSG_HEARTBEAT:
        break;
    case DISTSUP__V1__PEER_MSG__MSG_PING_REQ: {
        struct member *t = find_member(p, pm->ping_req->target);
        Distsup__V1__PingAck a = DISTSUP__V1__PING_ACK__INIT;
        a.id = pm->ping_req->id;
        a.target = pm->ping_req->target;
        a.alive = t && t->state == M_UP && t->link && now_ms() - t->last_heard <= p->cfg->down_after_ms;
        Distsup__V1__PeerMsg r = DISTSUP__V1__PEER_MSG__INIT;
        r.msg_case = DISTSUP__V1__PEER_MSG__MSG_PING_ACK;
        r.ping_ack = &a;
        send_msg(l, &r);
        break;
    }
    case DISTSUP__V1__PEER_MSG__MSG_PING_ACK: {
        struct member *t = find_member(p, pm->ping_ack->target);
        if (t && t->probe_id == pm->ping_ack->id && pm->ping_ack->alive) {
            t->probe_alive = 1;
            log_info("peer", "node %s is silent to this node but %s hears it; not down", t->name, m->name);
        }
        break;
    }
    case DISTSUP__V1__PEER_MSG__MSG_MEMBERS:
        learn(p, pm->members->members, pm->members->n_members);
        break;
    case DISTSUP__V1__PEER_MSG__MSG_LEAVE:
        member_down(p, m, 1, "left");
        break;
    case DISTSUP__V1__PEER_MSG__MSG_APP:
        p->cb.message(p->cb.arg, m->name, pm->app.data, pm->app.len);
        break;
    default:
        log_warn("peer", "node %s sent a message of unknown kind %d; ignored", m->name, (int)pm->msg_case);
        break;
    }
}

static uint64_t next_backoff(uint64_t b)
{
    b = b ? b * 2 : DIAL_BACKOFF_MIN_MS;
    return b > DIAL_BACKOFF_MAX_MS ? DIAL_BACKOFF_MAX_MS : b;
}

/* ---------- the ticker: heartbeats, silence, dialing ---------- */

static int seed_satisfied(struct peer *p, const struct seed *s)
{
    if (s->self) return 1;
    if (!s->name[0]) return 0;
    struct member *m = find_member(p, s->name);
    return m && m->link && m->link->state == L_OPEN;
}

static void tick(struct peer *p, uint64_t now)
{
    const struct config *c = p->cfg;
    /* heartbeats, every heartbeat_ms (the ticker runs twice as often) */
    int beat = now - p->last_beat >= c->heartbeat_ms;
    if (beat) p->last_beat = now;
    Distsup__V1__Heartbeat hb = DISTSUP__V1__HEARTBEAT__INIT;
    hb.seq = ++p->hb_seq;
    Distsup__V1__PeerMsg msg = DISTSUP__V1__PEER_MSG__INIT;
    msg.msg_case = DISTSUP__V1__PEER_MSG__MSG_HEARTBEAT;
    msg.heartbeat = &hb;
    for (struct link *l = p->links; l; l = l->next) {
        if (l->state == L_OPEN && l->m) {
            if (beat) send_msg(l, &msg);
        } else if (l->state == L_HANDSHAKE && l->addr[0] && now - l->opened > HANDSHAKE_TIMEOUT_MS) {
            log_warn("peer", "handshake with %s took longer than %dms; dropped", l->addr, HANDSHAKE_TIMEOUT_MS);
            link_close(l, NULL);
        }
    }
    /* silence -> indirect check -> down */
    for (size_t i = 0; i < p->n_members; i++) {
        struct member *m = p->members[i];
        if (m->state != M_UP) continue;
        if (now - m->last_heard <= c->down_after_ms) {
            m->probe_id = 0; /* it spoke for itself: a check still open is over */
            continue;
        }
        if (now < m->quiet_until) continue;
        if (!m->probe_id) {
            m->probe_id = ++p->probe_seq;
            m->probe_alive = 0;
            uint64_t wait = c->down_after_ms / 2;
            if (wait < 2u * c->heartbeat_ms) wait = 2u * c->heartbeat_ms;
            m->probe_deadline = now + wait;
            Distsup__V1__PingReq pr = DISTSUP__V1__PING_REQ__INIT;
            pr.id = m->probe_id;
            pr.target = m->name;
            Distsup__V1__PeerMsg q = DISTSUP__V1__PEER_MSG__INIT;
            q.msg_case = DISTSUP__V1__PEER_MSG__MSG_PING_REQ;
            q.ping_req = &pr;
            size_t asked = 0;
            for (size_t k = 0; k < p->n_members; k++) {
                struct member *o = p->members[k];
                if (o == m || o->state != M_UP || !o->link || o->link->state != L_OPEN) continue;
                if (send_msg(o->link, &q) == 0) asked++;
            }
            if (!asked) m->probe_deadline = now; /* nobody to ask */
            log_info("peer", "node %s silent for %llums; asked %zu other nodes", m->name,
                     (unsigned long long)(now - m->last_heard), asked);
        } else if (m->probe_alive) {
            m->probe_id = 0;
            m->quiet_until = now + c->down_after_ms;
        }
        if (m->probe_id && !m->probe_alive && now >= m->probe_deadline) {
            char why[128];
            snprintf(why, sizeof why, "no word from it for %llums, and no other node hears it",
                     (unsigned long long)(now - m->last_heard));
            member_down(p, m, 0, why);
        }
    }
    if (p->leaving || p->stopping) return;
    /* dialing */
    for (size_t i = 0; i < p->n_members; i++) {
        struct member *m = p->members[i];
        if (m->state == M_LEFT || m->link || m->dialing || now < m->next_dial || !m->addr[0]) continue;
        m->backoff = next_backoff(m->backoff);
        m->next_dial = now + m->backoff;
        /* the larger-named end redials later, so that after a heal the link both keep
         * (the one the smaller-named node dialed) is usually the only one */
        if (strcmp(c->node_name, m->name) > 0) m->next_dial += 4ull * c->heartbeat_ms;
        struct link *l = dial(p, m->addr);
        if (l) {
            l->dial_for = m;
            m->dialing = 1;
        } else {
            m->tried = 1;
        }
    }
    for (size_t i = 0; i < p->n_seeds; i++) {
        struct seed *s = &p->seeds[i];
        if (seed_satisfied(p, s) || s->dialing || now < s->next_dial) continue;
        s->backoff = next_backoff(s->backoff);
        s->next_dial = now + s->backoff;
        struct link *l = dial(p, s->addr);
        if (l) {
            l->seed = s;
            s->dialing = 1;
        } else {
            s->tried = 1;
        }
    }
    /* settled: every seed and member tried once, or sync_timeout_ms */
    if (!p->settled) {
        int all = 1;
        for (size_t i = 0; i < p->n_seeds && all; i++) all = p->seeds[i].tried || seed_satisfied(p, &p->seeds[i]);
        for (size_t i = 0; i < p->n_members && all; i++)
            all = p->members[i]->tried || p->members[i]->state == M_UP;
        if (all || now - p->started >= c->sync_timeout_ms) {
            p->settled = 1;
            size_t up = 0;
            for (size_t i = 0; i < p->n_members; i++) up += p->members[i]->state == M_UP;
            log_info("peer", "initial contact done: %zu of %zu known nodes up%s", up, p->n_members,
                     all ? "" : " (sync_timeout_ms reached)");
            p->cb.settled(p->cb.arg);
        }
    }
}

static void *tick_main(void *arg)
{
    struct peer *p = arg;
    pthread_mutex_lock(&p->mu);
    while (!p->stopping) {
        tick(p, now_ms());
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t ns = (uint64_t)ts.tv_nsec + (uint64_t)p->cfg->heartbeat_ms * 1000000u / 2;
        ts.tv_sec += (time_t)(ns / 1000000000u);
        ts.tv_nsec = (long)(ns % 1000000000u);
        pthread_cond_timedwait(&p->cond, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* ---------- public ---------- */

static int parse_seeds(struct peer *p, const char *list, char *err, size_t errlen)
{
    char buf[sizeof p->cfg->seeds];
    copy_str(buf, sizeof buf, list);
    for (char *save = NULL, *tok = strtok_r(buf, ", ", &save); tok; tok = strtok_r(NULL, ", ", &save)) {
        if (strlen(tok) >= NAME_MAX_ || !strchr(tok, ':')) {
            snprintf(err, errlen, "seed '%s' is not HOST:PORT", tok);
            return -1;
        }
        void *grown = realloc(p->seeds, (p->n_seeds + 1) * sizeof *p->seeds);
        if (!grown) {
            snprintf(err, errlen, "out of memory");
            return -1;
        }
        p->seeds = grown;
        memset(&p->seeds[p->n_seeds], 0, sizeof *p->seeds);
        copy_str(p->seeds[p->n_seeds].addr, NAME_MAX_, tok);
        p->n_seeds++;
    }
    return 0;
}

struct peer *peer_start(const struct config *cfg, const struct identity *id, uint64_t boot_id,
                        const char *api_address, const struct peer_callbacks *cb, int *port,
                        char *err, size_t errlen)
{
    struct peer *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->cfg = cfg;
    p->id = id;
    p->cb = *cb;
    p->boot_id = boot_id;
    p->started = now_ms();
    copy_str(p->api_address, sizeof p->api_address, api_address);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (parse_seeds(p, cfg->seeds, err, errlen) != 0) goto fail;

    grpc_arg args[1];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = MAX_MESSAGE;
    grpc_channel_args chargs = {1, args};
    p->server = grpc_server_create(&chargs, NULL);
    p->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(p->server, p->cq, NULL);
    p->method = grpc_server_register_method(p->server, METHOD, NULL, GRPC_SRM_PAYLOAD_NONE, 0);
    grpc_server_credentials *creds = grpc_insecure_server_credentials_create();
    *port = grpc_server_add_http2_port(p->server, cfg->peer_listen, creds);
    grpc_server_credentials_release(creds);
    if (*port <= 0) {
        snprintf(err, errlen, "cannot listen for peers on %s (address in use, or not a HOST:PORT?)",
                 cfg->peer_listen);
        grpc_server_destroy(p->server);
        p->server = NULL;
        goto fail;
    }
    /* What peers dial: peer_advertise, or peer_listen with its real port. */
    if (cfg->peer_advertise[0]) {
        copy_str(p->advertise, sizeof p->advertise, cfg->peer_advertise);
    } else {
        const char *colon = strrchr(cfg->peer_listen, ':');
        int hl = colon ? (int)(colon - cfg->peer_listen) : 0;
        snprintf(p->advertise, sizeof p->advertise, "%.*s:%d", hl, cfg->peer_listen, *port);
        if (!strncmp(cfg->peer_listen, "0.0.0.0:", 8) || !strncmp(cfg->peer_listen, "[::]:", 5))
            log_warn("peer", "peer_listen %s is a wildcard: set peer_advertise to the address other nodes "
                             "can reach", cfg->peer_listen);
    }
    grpc_server_start(p->server);
    pthread_mutex_lock(&p->mu);
    for (int i = 0; i < 4; i++) request_accept(p);
    pthread_mutex_unlock(&p->mu);
    if (pthread_create(&p->cq_thread, NULL, cq_main, p) != 0) {
        snprintf(err, errlen, "cannot start the peer thread");
        peer_stop(p);
        peer_free(p);
        return NULL;
    }
    p->threads_started = 1;
    if (pthread_create(&p->tick_thread, NULL, tick_main, p) != 0) {
        snprintf(err, errlen, "cannot start the peer ticker thread");
        p->threads_started = 1; /* cq thread only: peer_stop joins it */
        peer_stop(p);
        peer_free(p);
        return NULL;
    }
    p->threads_started = 2;
    log_info("peer", "node %s serving peer links on %s (advertised as %s), %zu seed(s)", cfg->node_name,
             cfg->peer_listen, p->advertise, p->n_seeds);
    return p;
fail:
    if (p->cq) {
        grpc_completion_queue_shutdown(p->cq);
        while (grpc_completion_queue_next(p->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {}
        grpc_completion_queue_destroy(p->cq);
    }
    free(p->seeds);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->mu);
    free(p);
    return NULL;
}

static int send_app(struct link *l, const uint8_t *data, size_t len)
{
    Distsup__V1__PeerMsg m = DISTSUP__V1__PEER_MSG__INIT;
    m.msg_case = DISTSUP__V1__PEER_MSG__MSG_APP;
    m.app.data = (uint8_t *)data;
    m.app.len = len;
    return send_msg(l, &m);
}

int peer_send(struct peer *p, const char *node, const uint8_t *data, size_t len)
{
    pthread_mutex_lock(&p->mu);
    struct member *m = find_member(p, node);
    int rc = m && m->state == M_UP && m->link ? send_app(m->link, data, len) : -1;
    pthread_mutex_unlock(&p->mu);
    return rc;
}

size_t peer_broadcast(struct peer *p, const uint8_t *data, size_t len)
{
    size_t n = 0;
    pthread_mutex_lock(&p->mu);
    for (size_t i = 0; i < p->n_members; i++) {
        struct member *m = p->members[i];
        if (m->state == M_UP && m->link && send_app(m->link, data, len) == 0) n++;
    }
    pthread_mutex_unlock(&p->mu);
    return n;
}

void peer_leave(struct peer *p, unsigned timeout_ms)
{
    pthread_mutex_lock(&p->mu);
    p->leaving = 1;
    Distsup__V1__Leave lv = DISTSUP__V1__LEAVE__INIT;
    Distsup__V1__PeerMsg m = DISTSUP__V1__PEER_MSG__INIT;
    m.msg_case = DISTSUP__V1__PEER_MSG__MSG_LEAVE;
    m.leave = &lv;
    for (struct link *l = p->links; l; l = l->next)
        if (l->state == L_OPEN && l->m) send_msg(l, &m);
    uint64_t end = now_ms() + timeout_ms;
    for (;;) {
        int busy = 0;
        for (struct link *l = p->links; l; l = l->next)
            if (l->state == L_OPEN && (l->qhead || l->sending)) busy = 1;
        uint64_t now = now_ms();
        if (!busy || now >= end) break;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        ts.tv_nsec += 20 * 1000000L;
        if (ts.tv_nsec >= 1000000000L) {
            ts.tv_sec++;
            ts.tv_nsec -= 1000000000L;
        }
        pthread_cond_timedwait(&p->cond, &p->mu, &ts);
    }
    pthread_mutex_unlock(&p->mu);
}

void peer_stop(struct peer *p)
{
    pthread_mutex_lock(&p->mu);
    if (p->stopping) {
        pthread_mutex_unlock(&p->mu);
        return;
    }
    p->stopping = 1;
    pthread_cond_broadcast(&p->cond);
    pthread_mutex_unlock(&p->mu);
    if (p->threads_started == 2) pthread_join(p->tick_thread, NULL);
    pthread_mutex_lock(&p->mu);
    for (struct link *l = p->links, *n; l; l = n) {
        n = l->next;
        link_close(l, NULL);
    }
    p->t_shutdown.fn = NULL;
    grpc_server_shutdown_and_notify(p->server, p->cq, &p->t_shutdown);
    grpc_server_cancel_all_calls(p->server);
    pthread_mutex_unlock(&p->mu);
    if (p->threads_started) {
        /* Wait (bounded) for the server to report down and every link to be freed. */
        pthread_mutex_lock(&p->mu);
        uint64_t end = now_ms() + 5000;
        while ((!p->shutdown_done || p->links) && now_ms() < end) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 20 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&p->cond, &p->mu, &ts);
        }
        if (p->links) log_warn("peer", "peer links still open at shutdown");
        pthread_mutex_unlock(&p->mu);
    }
    grpc_server_destroy(p->server);
    p->server = NULL;
    grpc_completion_queue_shutdown(p->cq);
    if (p->threads_started) pthread_join(p->cq_thread, NULL);
    p->threads_started = 0;
}

void peer_free(struct peer *p)
{
    if (!p) return;
    /* Links that could not be freed (their tags never came back) leak rather than crash. */
    grpc_completion_queue_destroy(p->cq);
    for (size_t i = 0; i < p->n_members; i++) free(p->members[i]);
    free(p->members);
    free(p->seeds);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

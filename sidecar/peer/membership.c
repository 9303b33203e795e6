#include "sidecar/peer/membership.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sidecar/handshake.h"
#include "sidecar/log.h"
#include "sidecar/metrics.h"
#include "sidecar/peer/link.h"
#include "sidecar/spec.h"

#define NAME_MAX_ LINK_ADDR_MAX
#define DIAL_BACKOFF_MIN_MS 100
#define DIAL_BACKOFF_MAX_MS 2000
#define MEMBERS_MAX 1024     /* members known, and named in one Join or Members message */
#define RETIRING_MAX 4       /* replaced links of one node being drained at once */
#define RETIRE_MS 5000       /* a replaced link not drained by then is closed as broken */
#define HOLD_MAX (64u << 20) /* bytes held from a kept link while the replaced one drains */

enum mstate { M_DOWN, M_UP, M_LEFT };

/* A link to a node that another link to it replaced (both ends keep the one its
 * smaller-named node dialed).  It is drained, not dropped: each end sends Retire after
 * the last thing it sends on it and answers the other's Retire with an ack; an end
 * closes it once it has both, so nothing sent on it is lost and the core is told
 * nothing.  What arrives on the kept link meanwhile is held, and handed on after what
 * the replaced one carried (the order the node sent them in). */
struct retiring {
    struct link *l;
    uint64_t deadline;
    int mine;       /* this end retired it (sent Retire) */
    int got_retire; /* the other end's Retire arrived: nothing more comes on it */
    int got_ack;    /* the other end has everything this one sent on it */
    int extra;      /* a second link dialed by the same node: its dialer says which goes */
};

struct held_msg {
    struct held_msg *next;
    size_t n;
    uint8_t d[];
};

#define HB_SENT 8 /* heartbeats remembered per member for the round trip */

struct member {
    char name[NAME_MAX_];
    char addr[NAME_MAX_]; /* peer address it advertises */
    int state;            /* enum mstate */
    uint64_t boot_id;
    uint64_t last_heard; /* monotonic ms of its last packet */
    struct link *link;   /* the open link (its user pointer is this member), or NULL */
    struct link *dial;   /* a link dialed for it, until it opens or fails */
    int tried;           /* a dial finished (either way) at least once */
    uint64_t next_dial, backoff;
    uint64_t probe_id, probe_deadline, quiet_until;
    int probe_alive;
    /* Its link closed and a dial to it failed since (a killed process: its sockets
     * closed at once and its port refuses), with no other link to it open: the
     * indirect check starts now, not after down_after_ms of silence, and it is down as
     * soon as every node asked says the same of its own link to it (PingAck.lost;
     * probe_denied == probe_asked).  A link that closes and is dialled again at once (a
     * reset connection) takes no one down; nor does a peer that no other node ever had
     * a link to (a peer that talks to one node only): silence decides then. */
    int link_lost, redial_failed;
    unsigned probe_asked, probe_denied;
    /* the link's round trip, from heartbeats: ours it echoed (Heartbeat.echo and
     * held_us) against when we sent them (the last HB_SENT of them) */
    uint64_t hb_sent_seq[HB_SENT], hb_sent_us[HB_SENT];
    uint64_t hb_rx_seq, hb_rx_us; /* its last heartbeat to us, and when it came */
    int64_t rtt_us;               /* smoothed; 0: none yet */
    struct retiring ret[RETIRING_MAX];
    size_t n_ret;
    struct held_msg *held, *held_tail; /* from the kept link, while a replaced one drains */
    size_t held_bytes;
    uint8_t *join; /* its last Join, packed (a replaced link that breaks resyncs with it) */
    size_t join_len;
};

struct seed {
    char addr[NAME_MAX_];
    char name[NAME_MAX_]; /* learned from its Join */
    struct link *dial;    /* a link dialed for it, until its Join or failure */
    int tried, self;
    uint64_t next_dial, backoff;
};

struct peer {
    const struct config *cfg;
    const struct identity *id;
    struct peer_callbacks cb;
    uint64_t boot_id;
    char api_address[NAME_MAX_];
    char advertise[NAME_MAX_];
    pthread_mutex_t mu; /* guards everything here and the linkset */
    pthread_cond_t cond;
    struct linkset *ls;
    pthread_t tick_thread;
    int tick_started;
    struct member **members;
    size_t n_members;
    struct seed *seeds;
    size_t n_seeds;
    uint64_t hb_seq, probe_seq, started, last_beat;
    uint64_t last_tick; /* when the ticker last ran: a long gap means this node was paused */
    int stopping, leaving, settled;
    struct metrics *metrics; /* the links' round trips go there (NULL: off) */
};

/* Why a link is closed when the core is too far behind on a node's messages. */
#define BEHIND "this node is too far behind on that node's messages; the link reopens and they resync"

/* ---------- helpers ---------- */

static uint64_t now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static void copy_str(char *dst, size_t cap, const char *src) { snprintf(dst, cap, "%s", src ? src : ""); }

/* Control-lane messages: never behind more than one bulk fragment. */
static int send_ctl(struct link *l, const Distsup__V1__PeerMsg *m) { return link_send_msg(l, LANE_CONTROL, &m->base); }

static struct seed *seed_dialed_by(struct peer *p, const struct link *l)
{
    for (size_t i = 0; i < p->n_seeds; i++)
        if (p->seeds[i].dial == l) return &p->seeds[i];
    return NULL;
}

static struct member *member_dialed_by(struct peer *p, const struct link *l)
{
    for (size_t i = 0; i < p->n_members; i++)
        if (p->members[i]->dial == l) return p->members[i];
    return NULL;
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
    if (p->n_members >= MEMBERS_MAX) {
        log_warn("peer", "not adding node %s: %d members known already", name, MEMBERS_MAX);
        return NULL;
    }
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

/* ---------- replaced links ---------- */

static void on_message(void *arg, struct link *l, const uint8_t *d, size_t n);

static struct retiring *find_retiring(struct member *m, const struct link *l)
{
    for (size_t i = 0; i < m->n_ret; i++)
        if (m->ret[i].l == l) return &m->ret[i];
    return NULL;
}

static void forget_retiring(struct member *m, struct retiring *r) { *r = m->ret[--m->n_ret]; }

/* Messages on the kept link wait while a replaced link may still carry older ones. */
static int holding(const struct member *m)
{
    for (size_t i = 0; i < m->n_ret; i++)
        if (m->ret[i].l != m->link && !m->ret[i].got_retire && !m->ret[i].extra) return 1;
    return 0;
}

static void free_held(struct member *m)
{
    for (struct held_msg *h = m->held, *next; h; h = next) {
        next = h->next;
        free(h);
    }
    m->held = m->held_tail = NULL;
    m->held_bytes = 0;
}

/* Hands on what the kept link brought while the replaced one drained, in order. */
static void release_held(struct peer *p, struct member *m)
{
    while (m->held && !holding(m)) {
        struct held_msg *h = m->held;
        m->held = h->next;
        if (!m->held) m->held_tail = NULL;
        m->held_bytes -= h->n;
        if (m->link && m->state == M_UP) on_message(p, m->link, h->d, h->n);
        free(h);
    }
}

static int hold(struct member *m, const uint8_t *d, size_t n)
{
    if (m->held_bytes + n > HOLD_MAX) return -1;
    struct held_msg *h = malloc(sizeof *h + (n ? n : 1));
    if (!h) return -1;
    h->next = NULL;
    h->n = n;
    memcpy(h->d, d, n);
    if (m->held_tail) m->held_tail->next = h;
    else m->held = h;
    m->held_tail = h;
    m->held_bytes += n;
    return 0;
}

static void send_retire(struct link *l, int ack)
{
    Distsup__V1__Retire r = DISTSUP__V1__RETIRE__INIT;
    r.ack = ack;
    Distsup__V1__PeerMsg m = DISTSUP__V1__PEER_MSG__INIT;
    m.msg_case = DISTSUP__V1__PEER_MSG__MSG_RETIRE;
    m.retire = &r;
    /* Retire after everything this node queued on the link; its ack at once */
    link_send_msg(l, ack ? LANE_CONTROL : LANE_BULK, &m.base);
}

/* Closes r's link when both ends have drained it.  1 when it was closed. */
static int retire_done(struct member *m, struct retiring *r)
{
    if (!r->mine || !r->got_retire || !r->got_ack) return 0;
    struct link *l = r->l;
    forget_retiring(m, r);
    log_debug("peer", "the replaced link with node %s is drained; closing it", m->name);
    /* the ack of its Retire may still be queued: it goes out first, or the other end
     * takes the close for a break and resyncs (failing the requests in flight) */
    link_close_drained(l, "replaced by a link dialed by the smaller-named node; drained");
    return 1;
}

/* l, a link to m, is replaced by another: drained, then closed (see struct retiring). */
static void retire(struct peer *p, struct member *m, struct link *l, const char *dialer)
{
    struct retiring *r = find_retiring(m, l);
    if (!r) {
        if (m->n_ret == RETIRING_MAX) {
            link_close(l, "replaced by a link dialed by the smaller-named node (too many to drain)");
            return;
        }
        r = &m->ret[m->n_ret++];
        *r = (struct retiring){.l = l};
    }
    if (r->mine) return;
    r->mine = 1;
    r->extra = 0;
    r->deadline = now_ms() + RETIRE_MS;
    link_set_user(l, m);
    log_info("peer", "link with node %s dialed by %s replaced by a link dialed by the smaller-named node; draining it",
             m->name, dialer);
    send_retire(l, 0);
    retire_done(m, r);
    (void)p;
}

/* A Retire (or its ack) from m on l. */
static void on_retire(struct peer *p, struct member *m, struct link *l, int ack)
{
    struct retiring *r = find_retiring(m, l);
    if (!r) {
        if (ack || m->n_ret == RETIRING_MAX) return;
        r = &m->ret[m->n_ret++];
        *r = (struct retiring){.l = l, .deadline = now_ms() + RETIRE_MS};
    }
    if (ack) {
        r->got_ack = 1;
    } else {
        r->got_retire = 1;
        send_retire(l, 1);
        /* two links dialed by m: m keeps the other one, and so does this end */
        if (r->extra) {
            retire(p, m, l, m->name);
            r = find_retiring(m, l);
        } else if (l == m->link) {
            for (size_t i = 0; i < m->n_ret; i++)
                if (m->ret[i].extra) {
                    m->link = m->ret[i].l;
                    forget_retiring(m, &m->ret[i]);
                    retire(p, m, l, m->name);
                    break;
                }
            r = find_retiring(m, l);
        }
    }
    if (r) retire_done(m, r);
    release_held(p, m);
}

/* A replaced link closed before it was drained (it broke, or took too long): what was
 * in flight on it may be lost, as after any broken link, so the core resyncs. */
static void retiring_broke(struct peer *p, struct member *m)
{
    if (p->stopping || m->state != M_UP || !m->join) return;
    Distsup__V1__Join *j = distsup__v1__join__unpack(NULL, m->join_len, m->join);
    if (!j) return;
    log_info("peer", "a replaced link with node %s closed before it was drained; resyncing", m->name);
    p->cb.up(p->cb.arg, j);
    distsup__v1__join__free_unpacked(j, NULL);
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

static void send_join(struct peer *p, struct link *l)
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
    send_ctl(l, &m);
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
        for (size_t i = 0; i < p->n_members; i++) {
            struct link *l = p->members[i]->link;
            if (l && l != except && link_is_open(l)) send_ctl(l, &m);
        }
    }
    free(arr);
    free(ptrs);
}

/* The members a node named: 0, or -1 when it named too many (nothing is learned then:
 * the caller drops the link). */
static int learn(struct peer *p, struct link *from, Distsup__V1__Member **ms, size_t n)
{
    if (n > MEMBERS_MAX) {
        log_warn("peer", "refused a Members message of %zu members from %s (at most %d); dropping the link", n,
                 link_who(from), MEMBERS_MAX);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        const char *name = ms[i]->name, *addr = ms[i]->peer_address;
        if (!name[0] || !addr[0] || !strcmp(name, p->cfg->node_name)) continue;
        char e[128];
        if (spec_name_check("node name", name, e, sizeof e) != 0 || strlen(addr) >= NAME_MAX_) continue;
        /* Unless unnamed keys may join, only the trust file's names can ever be members:
         * gossip of any other name would only fill the table and be dialled for nothing. */
        if (!p->cfg->trust_unnamed && !identity_name_bound(p->id, name)) {
            log_debug("peer", "%s gossiped node %s, which the trust file does not name; ignored", link_who(from), name);
            continue;
        }
        struct member *m = find_member(p, name);
        if (!m) {
            if (!(m = add_member(p, name, addr))) return 0;
            log_info("peer", "learned of node %s at %s", name, addr);
            /* Both may learn of each other at once and dial: the link both keep is the one
             * the smaller-named node dialed, so the larger-named one gives it time first
             * (a replaced link loses what was in flight on it). */
            if (strcmp(p->cfg->node_name, name) > 0) m->next_dial = now_ms() + 4ull * p->cfg->heartbeat_ms;
        } else if (m->state != M_UP && strcmp(m->addr, addr)) {
            copy_str(m->addr, sizeof m->addr, addr);
        }
    }
    return 0;
}

/* The initiator's name of a link. */
static const char *initiator_of(const struct peer *p, const struct link *l)
{
    return link_initiator(l) ? p->cfg->node_name : link_name(l);
}

static void on_join(struct peer *p, struct link *l, Distsup__V1__Join *j)
{
    char e[300];
    if (spec_name_check("node name", j->name, e, sizeof e) != 0 || strlen(j->name) >= NAME_MAX_ ||
        strlen(j->peer_address) >= NAME_MAX_ || strlen(j->api_address) >= NAME_MAX_ || j->n_labels > 64) {
        log_warn("peer", "refused the link with %s: its Join is not usable (%s)", link_addr(l),
                 j->n_labels > 64 ? "more than 64 labels" : "a name or address that is not valid");
        link_close(l, "Join without a usable name");
        return;
    }
    if (j->n_members > MEMBERS_MAX) {
        learn(p, l, j->members, j->n_members); /* logs it */
        link_close(l, NULL);
        return;
    }
    struct seed *seed = seed_dialed_by(p, l);
    if (!strcmp(j->name, p->cfg->node_name)) {
        if (j->boot_id == p->boot_id) { /* dialed ourselves (the handshake refuses our own key first) */
            link_close(l, "that is this node");
        } else {
            log_error("peer", "a node at %s calls itself %s, this node's own name: check node_name", link_addr(l),
                      j->name);
            link_close(l, "name clash");
        }
        return;
    }
    if (link_name(l)[0] && strcmp(link_name(l), j->name)) {
        link_close(l, "a second Join with another name");
        return;
    }
    /* Names are bound both ways: a named key joins only under its name, a name the
     * trust file gives to a key is usable only with that key, and an unnamed key only
     * with trust_unnamed. */
    const char *bound = identity_bound_name(p->id, link_peer_key(l));
    if (bound && !bound[0] && (!p->cfg->trust_unnamed || identity_name_taken(p->id, j->name, link_peer_key(l)))) {
        char hex[2 * HS_KEY_LEN + 1];
        key_hex(link_peer_key(l), hex);
        log_warn("peer", "refused the link with %s: it calls itself %s, but its key %s has no name in the trust file%s",
                 link_addr(l), j->name, hex,
                 p->cfg->trust_unnamed ? " and the trust file gives that name to another key"
                                       : " (set trust_unnamed = true to let such keys join)");
        link_close(l, NULL);
        return;
    }
    if (!bound || (bound[0] && strcmp(bound, j->name))) {
        char hex[2 * HS_KEY_LEN + 1];
        key_hex(link_peer_key(l), hex);
        log_warn("peer",
                 "refused the link with %s: it calls itself %s, but the trust file gives its key %s "
                 "to node %s",
                 link_addr(l), j->name, hex, bound ? bound : "(none)");
        link_close(l, NULL);
        return;
    }
    link_set_name(l, j->name);
    if (seed) copy_str(seed->name, sizeof seed->name, j->name);
    struct member *m = add_member(p, j->name, j->peer_address);
    if (!m) {
        link_close(l, "out of memory");
        return;
    }
    struct member *dialed_for = member_dialed_by(p, l);
    if (dialed_for) {
        dialed_for->dial = NULL;
        dialed_for->tried = 1;
    }
    if (seed) {
        seed->dial = NULL;
        seed->tried = 1;
        seed->backoff = 0;
    }
    int replaced = 0;
    if (m->link && m->link != l) {
        /* Two links to one node: both ends keep the one its smaller-named node dialed,
         * and drain the other before closing it (nothing in flight is lost). */
        struct link *old = m->link;
        if (!strcmp(initiator_of(p, l), initiator_of(p, old))) {
            /* Both dialed by one node: its dialer keeps the older and retires the newer;
             * this end, if it did not dial them, follows the dialer's Retire. */
            if (link_initiator(l)) {
                retire(p, m, l, p->cfg->node_name);
            } else if (m->n_ret < RETIRING_MAX) {
                link_set_user(l, m);
                m->ret[m->n_ret++] = (struct retiring){.l = l, .deadline = now_ms() + RETIRE_MS, .extra = 1};
            } else {
                link_close(l, "a link to this node exists already");
            }
            return;
        }
        int keep_new = strcmp(initiator_of(p, l), initiator_of(p, old)) < 0;
        if (!keep_new) {
            retire(p, m, l, initiator_of(p, l));
            return;
        }
        retire(p, m, old, initiator_of(p, old));
        replaced = m->state == M_UP && m->boot_id == j->boot_id;
    }
    m->link = l;
    link_set_user(l, m);
    m->last_heard = now_ms();
    m->backoff = 0;
    m->tried = 1;
    m->probe_id = 0;
    if (j->peer_address[0]) copy_str(m->addr, sizeof m->addr, j->peer_address);
    size_t jl = distsup__v1__join__get_packed_size(j);
    uint8_t *jb = malloc(jl ? jl : 1);
    if (jb) {
        distsup__v1__join__pack(j, jb);
        free(m->join);
        m->join = jb;
        m->join_len = jl;
    }
    int news = m->state != M_UP || m->boot_id != j->boot_id;
    int restarted = m->state == M_UP && m->boot_id != j->boot_id;
    m->state = M_UP;
    m->boot_id = j->boot_id;
    learn(p, l, j->members, j->n_members);
    if (news) {
        log_info("peer", "node %s is up (%s%s)", m->name, m->addr, restarted ? ", restarted" : "");
        p->cb.up(p->cb.arg, j);
        gossip(p, l);
    } else if (replaced) {
        /* the old link is drained, not lost: the core has nothing to redo */
        release_held(p, m);
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
    while (m->n_ret) {
        struct link *l = m->ret[0].l;
        forget_retiring(m, &m->ret[0]);
        link_close(l, clean ? "it left" : "it is down");
    }
    free_held(m);
    m->rtt_us = 0;
    m->hb_rx_seq = 0;
    metrics_set_peer_rtt(p->metrics, m->name, -1);
    p->cb.down(p->cb.arg, m->name, clean);
}

/* A heartbeat: remembered for the echo of ours, and the round trip of one of ours it
 * echoes (an old release sends no echo: no figure). */
static void on_heartbeat(struct peer *p, struct member *m, const Distsup__V1__Heartbeat *hb)
{
    uint64_t now = now_us();
    m->hb_rx_seq = hb->seq;
    m->hb_rx_us = now;
    if (!hb->echo) return;
    size_t k = (size_t)(hb->echo % HB_SENT);
    if (m->hb_sent_seq[k] != hb->echo) return; /* too old */
    uint64_t took = now - m->hb_sent_us[k];
    if (took < hb->held_us) return; /* its clock and ours disagree: no figure */
    int64_t rtt = (int64_t)(took - hb->held_us);
    m->rtt_us = m->rtt_us ? (7 * m->rtt_us + rtt) / 8 : (rtt ? rtt : 1);
    metrics_set_peer_rtt(p->metrics, m->name, (double)m->rtt_us / 1e6);
}

static void on_peer_msg(struct peer *p, struct link *l, Distsup__V1__PeerMsg *pm)
{
    if (pm->msg_case == DISTSUP__V1__PEER_MSG__MSG_JOIN) {
        on_join(p, l, pm->join);
        return;
    }
    struct member *m = link_user(l);
    if (!m) {
        link_close(l, "a message before Join");
        return;
    }
    switch (pm->msg_case) {
    case DISTSUP__V1__PEER_MSG__MSG_HEARTBEAT: on_heartbeat(p, m, pm->heartbeat); break;
    case DISTSUP__V1__PEER_MSG__MSG_PING_REQ: {
        struct member *t = find_member(p, pm->ping_req->target);
        Distsup__V1__PingAck a = DISTSUP__V1__PING_ACK__INIT;
        a.id = pm->ping_req->id;
        a.target = pm->ping_req->target;
        a.alive = t && t->state == M_UP && t->link && now_ms() - t->last_heard <= p->cfg->down_after_ms;
        /* lost: its link here closed too (it may be down here already, for that) */
        a.lost = !a.alive && t && t->state != M_LEFT && !t->link && t->link_lost && t->redial_failed;
        Distsup__V1__PeerMsg r = DISTSUP__V1__PEER_MSG__INIT;
        r.msg_case = DISTSUP__V1__PEER_MSG__MSG_PING_ACK;
        r.ping_ack = &a;
        send_ctl(l, &r);
        break;
    }
    case DISTSUP__V1__PEER_MSG__MSG_PING_ACK: {
        struct member *t = find_member(p, pm->ping_ack->target);
        if (t && t->probe_id == pm->ping_ack->id && pm->ping_ack->alive) {
            t->probe_alive = 1;
            log_info("peer", "node %s is silent to this node but %s hears it; not down", t->name, m->name);
        } else if (t && t->probe_id == pm->ping_ack->id && pm->ping_ack->lost && t->link_lost && t->redial_failed &&
                   !t->link && t->state == M_UP && !t->probe_alive && ++t->probe_denied >= t->probe_asked) {
            /* its link closed here, and every node asked lost it too: it is gone */
            char why[128];
            snprintf(why, sizeof why, "its link closed, and the %u other nodes asked lost it too", t->probe_asked);
            member_down(p, t, 0, why);
        }
        break;
    }
    case DISTSUP__V1__PEER_MSG__MSG_MEMBERS:
        if (learn(p, l, pm->members->members, pm->members->n_members) != 0) link_close(l, NULL);
        break;
    case DISTSUP__V1__PEER_MSG__MSG_LEAVE: member_down(p, m, 1, "left"); break;
    case DISTSUP__V1__PEER_MSG__MSG_RETIRE: on_retire(p, m, l, pm->retire->ack); break;
    case DISTSUP__V1__PEER_MSG__MSG_APP:
        if (p->cb.message(p->cb.arg, m->name, pm->app.data, pm->app.len) != 0) link_close(l, BEHIND);
        break;
    default: log_warn("peer", "node %s sent a message of unknown kind %d; ignored", m->name, (int)pm->msg_case); break;
    }
}

/* ---------- what the links tell ---------- */

static void on_opened(void *arg, struct link *l) { send_join(arg, l); }

static void on_heard(void *arg, struct link *l)
{
    (void)arg;
    struct member *m = link_user(l);
    if (m) {
        m->last_heard = now_ms();
        if (l == m->link) m->link_lost = m->redial_failed = 0;
    }
}

/* A whole PeerMsg.  An app message (by far the largest) is handed on where it lies;
 * anything else is unpacked. */
static void on_message(void *arg, struct link *l, const uint8_t *d, size_t n)
{
    struct peer *p = arg;
    struct member *m = link_user(l);
    if (m && l == m->link && holding(m)) {
        if (hold(m, d, n) != 0) {
            log_error("peer", "link with %s: cannot hold %zu bytes while a replaced link drains; dropping it", m->name,
                      n);
            link_close(l, NULL);
        }
        return;
    }
    if (m && n >= 2 && d[0] == 0x3a) {
        uint64_t v = 0;
        for (size_t i = 1; i < n && i <= 10; i++) {
            v |= (uint64_t)(d[i] & 0x7f) << (7 * (i - 1));
            if (!(d[i] & 0x80)) {
                if (v == n - (i + 1)) {
                    if (p->cb.message(p->cb.arg, m->name, d + i + 1, (size_t)v) != 0) link_close(l, BEHIND);
                    return;
                }
                break;
            }
        }
    }
    Distsup__V1__PeerMsg *pm = distsup__v1__peer_msg__unpack(NULL, n, d);
    if (!pm) {
        log_error("peer", "link with %s: an undecodable message; dropping the link", link_who(l));
        link_close(l, NULL);
        return;
    }
    on_peer_msg(p, l, pm);
    distsup__v1__peer_msg__free_unpacked(pm, NULL);
}

static void on_closed(void *arg, struct link *l)
{
    struct peer *p = arg;
    struct member *m = link_user(l);
    if (m && m->link == l) {
        m->link = NULL;
        if (m->state == M_UP) { /* see struct member: the next failed dial starts a check */
            m->link_lost = 1;
            m->redial_failed = 0;
            m->next_dial = 0; /* dial it again now */
        }
    }
    struct retiring *r = m ? find_retiring(m, l) : NULL;
    if (r) {
        int broke = !r->got_retire || (r->mine && !r->got_ack);
        forget_retiring(m, r);
        if (broke) retiring_broke(p, m);
        release_held(p, m);
    }
    struct seed *s = seed_dialed_by(p, l);
    if (s) {
        s->dial = NULL;
        s->tried = 1;
    }
    struct member *d = member_dialed_by(p, l);
    if (d) {
        d->dial = NULL;
        d->tried = 1;
        if (d->link_lost && !d->link) d->redial_failed = 1; /* it is not there (see struct member) */
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
    return m && m->link && link_is_open(m->link);
}

static void tick(struct peer *p, uint64_t now)
{
    const struct config *c = p->cfg;
    /* heartbeats, every heartbeat_ms (the ticker runs twice as often) */
    int beat = now - p->last_beat >= c->heartbeat_ms;
    if (beat) p->last_beat = now;
    Distsup__V1__Heartbeat hb = DISTSUP__V1__HEARTBEAT__INIT;
    Distsup__V1__PeerMsg msg = DISTSUP__V1__PEER_MSG__INIT;
    msg.msg_case = DISTSUP__V1__PEER_MSG__MSG_HEARTBEAT;
    msg.heartbeat = &hb;
    for (size_t i = 0; beat && i < p->n_members; i++) {
        struct member *m = p->members[i];
        if (!m->link || !link_is_open(m->link)) continue;
        uint64_t us = now_us();
        hb.seq = ++p->hb_seq;
        /* its last heartbeat, and how long we held it (none when that is too long) */
        int fresh = m->hb_rx_seq && us - m->hb_rx_us < UINT32_MAX;
        hb.echo = fresh ? m->hb_rx_seq : 0;
        hb.held_us = fresh ? (uint32_t)(us - m->hb_rx_us) : 0;
        size_t k = (size_t)(hb.seq % HB_SENT);
        m->hb_sent_seq[k] = hb.seq;
        m->hb_sent_us[k] = us;
        send_ctl(m->link, &msg);
    }
    linkset_tick(p->ls, now);
    for (size_t i = 0; i < p->n_members; i++) { /* replaced links that do not drain */
        struct member *m = p->members[i];
        for (size_t k = 0; k < m->n_ret;) {
            if (now < m->ret[k].deadline) {
                k++;
                continue;
            }
            struct link *l = m->ret[k].l;
            forget_retiring(m, &m->ret[k]);
            log_warn("peer", "a replaced link with node %s did not drain within %dms; closing it", m->name, RETIRE_MS);
            link_close(l, NULL);
            retiring_broke(p, m);
            release_held(p, m);
        }
    }
    /* This node was paused (SIGSTOP, a VM freeze, a long stall) if its own ticker,
     * which runs every heartbeat_ms / 2, missed more than down_after_ms: the silence
     * it would measure now is its own.  Every node gets a fresh down_after_ms to be
     * heard again (their packets wait in the sockets, or they redial) before any
     * check begins; a node that really died meanwhile is found down a little later. */
    if (p->last_tick && now - p->last_tick > c->down_after_ms) {
        log_warn("peer", "this node did not run for %llums (paused?); giving every node %ums to be heard again",
                 (unsigned long long)(now - p->last_tick), c->down_after_ms);
        for (size_t i = 0; i < p->n_members; i++)
            if (p->members[i]->state == M_UP) {
                p->members[i]->last_heard = now;
                p->members[i]->probe_id = 0;
            }
    }
    p->last_tick = now;
    /* silence -> indirect check -> down */
    for (size_t i = 0; i < p->n_members; i++) {
        struct member *m = p->members[i];
        if (m->state != M_UP) continue;
        int lost = m->link_lost && m->redial_failed && !m->link; /* see struct member */
        int recent = now - m->last_heard <= c->down_after_ms;
        if (!lost && recent) {
            m->probe_id = 0; /* it spoke for itself: a check still open is over */
            continue;
        }
        if (now < m->quiet_until) continue;
        if (!m->probe_id) {
            m->probe_id = ++p->probe_seq;
            m->probe_alive = 0;
            m->probe_asked = m->probe_denied = 0;
            uint64_t wait = c->down_after_ms / 2;
            if (wait < 2u * c->heartbeat_ms || lost) wait = 2u * c->heartbeat_ms; /* lost: asked again soon */
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
                if (o == m || o->state != M_UP || !o->link || !link_is_open(o->link)) continue;
                if (send_ctl(o->link, &q) == 0) asked++;
            }
            m->probe_asked = (unsigned)asked;
            if (lost && !asked && recent) {
                /* nobody to ask: its silence decides, as for any other node (a blip of
                 * this node's own network must not take every peer down at once) */
                m->probe_id = 0;
                m->link_lost = 0;
                continue;
            }
            if (!asked) m->probe_deadline = now; /* nobody to ask */
            if (lost)
                log_info("peer", "node %s: its link closed; asked %zu other nodes whether they hear it", m->name,
                         asked);
            else
                log_info("peer", "node %s silent for %llums; asked %zu other nodes", m->name,
                         (unsigned long long)(now - m->last_heard), asked);
        } else if (m->probe_alive) {
            m->probe_id = 0;
            if (lost && recent) {
                /* another node still hears it, maybe only because its own link has not
                 * closed yet: ask again in a moment, while the silence rule runs on */
                m->quiet_until = now + c->heartbeat_ms;
            } else {
                m->link_lost = 0; /* silence decides from here */
                m->quiet_until = now + c->down_after_ms;
            }
        }
        if (lost && recent && m->probe_id && !m->probe_alive && now >= m->probe_deadline) {
            /* not every node asked answered that it lost it too: ask again in a moment */
            m->probe_id = 0;
            m->quiet_until = now + c->heartbeat_ms;
            continue;
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
        if (m->state == M_LEFT || m->link || m->dial || now < m->next_dial || !m->addr[0]) continue;
        m->backoff = next_backoff(m->backoff);
        m->next_dial = now + m->backoff;
        /* the larger-named end redials later, so that after a heal the link both keep
         * (the one the smaller-named node dialed) is usually the only one */
        if (strcmp(c->node_name, m->name) > 0 && !m->link_lost) m->next_dial += 4ull * c->heartbeat_ms;
        if (!(m->dial = link_dial(p->ls, m->addr))) {
            m->tried = 1;
        }
    }
    for (size_t i = 0; i < p->n_seeds; i++) {
        struct seed *s = &p->seeds[i];
        if (seed_satisfied(p, s) || s->dial || now < s->next_dial) continue;
        s->backoff = next_backoff(s->backoff);
        s->next_dial = now + s->backoff;
        if (!(s->dial = link_dial(p->ls, s->addr))) {
            s->tried = 1;
        }
    }
    /* settled: every seed and member tried once, or sync_timeout_ms */
    if (!p->settled) {
        int all = 1;
        for (size_t i = 0; i < p->n_seeds && all; i++) all = p->seeds[i].tried || seed_satisfied(p, &p->seeds[i]);
        for (size_t i = 0; i < p->n_members && all; i++) all = p->members[i]->tried || p->members[i]->state == M_UP;
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

struct peer *peer_start(const struct config *cfg, const struct identity *id, uint64_t boot_id, const char *api_address,
                        const struct peer_callbacks *cb, struct metrics *metrics, int *port, char *err, size_t errlen)
{
    struct peer *p = calloc(1, sizeof *p);
    if (!p) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    p->cfg = cfg;
    p->id = id;
    p->cb = *cb;
    p->metrics = metrics;
    p->boot_id = boot_id;
    p->started = now_ms();
    copy_str(p->api_address, sizeof p->api_address, api_address);
    pthread_mutex_init(&p->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_cond_init(&p->cond, &ca);
    pthread_condattr_destroy(&ca);
    if (parse_seeds(p, cfg->seeds, err, errlen) != 0) goto fail;

    struct linkset_options lo = {
        .listen = cfg->peer_listen, .id = id, .mu = &p->mu, .cond = &p->cond, .metrics = metrics};
    struct link_hooks hooks = {
        .arg = p, .opened = on_opened, .heard = on_heard, .message = on_message, .closed = on_closed};
    if (!(p->ls = linkset_start(&lo, &hooks, port, err, errlen))) goto fail;
    /* What peers dial: peer_advertise, or peer_listen with its real port. */
    if (cfg->peer_advertise[0]) {
        copy_str(p->advertise, sizeof p->advertise, cfg->peer_advertise);
    } else {
        const char *colon = strrchr(cfg->peer_listen, ':');
        int hl = colon ? (int)(colon - cfg->peer_listen) : 0;
        snprintf(p->advertise, sizeof p->advertise, "%.*s:%d", hl, cfg->peer_listen, *port);
        if (!strncmp(cfg->peer_listen, "0.0.0.0:", 8) || !strncmp(cfg->peer_listen, "[::]:", 5))
            log_warn("peer",
                     "peer_listen %s is a wildcard: set peer_advertise to the address other nodes "
                     "can reach",
                     cfg->peer_listen);
    }
    /* A seed that is this node's own address is this node: not dialed.  (Any other
     * seed that turns out to answer with this node's own key is refused at the
     * handshake and dialed again later, never taken for this node.) */
    for (size_t i = 0; i < p->n_seeds; i++)
        if (!strcmp(p->seeds[i].addr, p->advertise) || !strcmp(p->seeds[i].addr, cfg->peer_listen))
            p->seeds[i].self = 1;
    if (pthread_create(&p->tick_thread, NULL, tick_main, p) != 0) {
        snprintf(err, errlen, "cannot start the peer ticker thread");
        peer_stop(p);
        peer_free(p);
        return NULL;
    }
    p->tick_started = 1;
    log_info("peer", "node %s serving peer links on %s (advertised as %s), %zu seed(s)", cfg->node_name,
             cfg->peer_listen, p->advertise, p->n_seeds);
    return p;
fail:
    free(p->seeds);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->mu);
    free(p);
    return NULL;
}

/* PeerMsg{app = data}, laid out for the bulk lane without the lock (the one copy of
 * data on the way out): field 7, length-delimited, written as a prefix. */
static struct link_out *app_out(const uint8_t *data, size_t len)
{
    uint8_t hdr[16];
    size_t h = 0;
    hdr[h++] = 0x3a;
    for (size_t v = len;; v >>= 7) {
        hdr[h++] = (uint8_t)((v & 0x7f) | (v >= 0x80 ? 0x80 : 0));
        if (v < 0x80) break;
    }
    struct link_out *o = link_out_new(hdr, h, data, len);
    if (!o)
        log_error("peer", "cannot send a message of %zu bytes (out of memory, or over %u bytes)", len,
                  (unsigned)LINK_MAX_MESSAGE);
    return o;
}

int peer_send(struct peer *p, const char *node, const uint8_t *data, size_t len)
{
    struct link_out *o = app_out(data, len);
    if (!o) return -1;
    pthread_mutex_lock(&p->mu);
    struct member *m = find_member(p, node);
    int rc = -1;
    if (m && m->state == M_UP && m->link) {
        rc = link_queue(m->link, LANE_BULK, o);
        o = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    link_out_free(o);
    return rc;
}

size_t peer_broadcast(struct peer *p, const uint8_t *data, size_t len)
{
    struct link_out *o = app_out(data, len);
    if (!o) return 0;
    size_t n = 0;
    pthread_mutex_lock(&p->mu);
    struct member *last = NULL; /* gets o itself; every other one a copy */
    for (size_t i = 0; i < p->n_members; i++) {
        struct member *m = p->members[i];
        if (m->state != M_UP || !m->link) continue;
        if (last) n += link_queue(last->link, LANE_BULK, link_out_clone(o)) == 0;
        last = m;
    }
    if (last) {
        n += link_queue(last->link, LANE_BULK, o) == 0;
        o = NULL;
    }
    pthread_mutex_unlock(&p->mu);
    link_out_free(o);
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
    /* On the bulk lane: after everything this node said before it. */
    for (size_t i = 0; i < p->n_members; i++)
        if (p->members[i]->link && link_is_open(p->members[i]->link))
            link_send_msg(p->members[i]->link, LANE_BULK, &m.base);
    uint64_t end = now_ms() + timeout_ms;
    for (;;) {
        uint64_t now = now_ms();
        if (!linkset_busy(p->ls) || now >= end) break;
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
    if (p->tick_started) pthread_join(p->tick_thread, NULL);
    p->tick_started = 0;
    linkset_stop(p->ls);
}

void peer_free(struct peer *p)
{
    if (!p) return;
    linkset_free(p->ls);
    for (size_t i = 0; i < p->n_members; i++) {
        free_held(p->members[i]);
        free(p->members[i]->join);
        free(p->members[i]);
    }
    free(p->members);
    free(p->seeds);
    pthread_cond_destroy(&p->cond);
    pthread_mutex_destroy(&p->mu);
    free(p);
}

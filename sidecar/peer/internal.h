/* Shared state of the peer module while it is split into link.c and membership.c
 * (a step of the split; the next commits replace it with link.h and membership.h). */
#ifndef DISTSUP_PEER_INTERNAL_H
#define DISTSUP_PEER_INTERNAL_H

#include <grpc/grpc.h>
#include <pthread.h>
#include <stdint.h>

#include "sidecar/handshake.h"
#include "sidecar/peer.h"

#define METHOD "/distsup.v1.Peer/Link"
#define NAME_MAX_ 256
#define HANDSHAKE_TIMEOUT_MS 5000
#define MAX_HANDSHAKING 64          /* links in handshake at once; more are refused */
#define SENDQ_MAX (256u << 20)      /* bytes queued to one peer before it is dropped */
#define MAX_MESSAGE (64 << 20)
#define DIAL_BACKOFF_MIN_MS 100
#define DIAL_BACKOFF_MAX_MS 2000

enum lstate { L_HANDSHAKE, L_OPEN, L_CLOSED };
enum mstate { M_DOWN, M_UP, M_LEFT };

struct peer;
struct link;

struct ptag {
    void (*fn)(struct link *l, int ok);
    struct link *l;
};

struct outmsg {
    struct outmsg *next;
    size_t len;
    uint8_t data[];
};

struct member {
    char name[NAME_MAX_];
    char addr[NAME_MAX_];           /* peer address it advertises */
    int state;                      /* enum mstate */
    uint64_t boot_id;
    uint64_t last_heard;            /* monotonic ms of its last packet */
    struct link *link;              /* the open link, or NULL */
    int dialing;
    int tried;                      /* a dial finished (either way) at least once */
    uint64_t next_dial, backoff;
    uint64_t probe_id, probe_deadline, quiet_until;
    int probe_alive;
};

struct seed {
    char addr[NAME_MAX_];
    char name[NAME_MAX_];           /* learned from its Join */
    int dialing, tried, self;
    uint64_t next_dial, backoff;
};

struct link {
    struct peer *p;
    struct link *next;              /* p->links */
    int initiator;
    int state;                      /* enum lstate */
    int hs_step;
    struct hs hs;
    struct seal seal;
    grpc_call *call;
    grpc_channel *chan;             /* the initiator's own channel */
    char name[NAME_MAX_];           /* the node, once its Join arrived */
    uint8_t peer_pk[HS_KEY_LEN];    /* its static key, once the handshake checked it */
    char addr[NAME_MAX_];           /* dialed address, or the remote socket */
    struct member *m;               /* when it is m's open link */
    struct seed *seed;              /* when dialed for a seed */
    struct member *dial_for;        /* when dialed for a member */
    uint64_t opened;
    int refs;
    grpc_byte_buffer *rbuf, *sbuf;
    struct outmsg *qhead, *qtail;
    size_t qbytes;
    int sending;
    struct ptag t_recv, t_send, t_close, t_start;
    grpc_metadata_array md_a, md_b;
    grpc_call_details details;
    gpr_timespec deadline;
    grpc_status_code status;
    grpc_slice status_details;
    int cancelled;
};

struct peer {
    const struct config *cfg;
    const struct identity *id;
    struct peer_callbacks cb;
    uint64_t boot_id;
    char api_address[NAME_MAX_];
    char advertise[NAME_MAX_];
    pthread_mutex_t mu;
    pthread_cond_t cond;
    grpc_server *server;
    grpc_completion_queue *cq;
    void *method;
    pthread_t cq_thread, tick_thread;
    int threads_started;
    struct link *links;
    struct member **members;
    size_t n_members;
    struct seed *seeds;
    size_t n_seeds;
    uint64_t hb_seq, probe_seq, started, last_beat;
    int stopping, leaving, settled;
    int shutdown_done;
    struct ptag t_shutdown;
};

/* membership.c */
uint64_t now_ms(void);
void copy_str(char *dst, size_t cap, const char *src);
const char *who(const struct link *l);
void send_join(struct peer *p, struct link *l);
void on_peer_msg(struct peer *p, struct link *l, Distsup__V1__PeerMsg *pm);
/* link.c */
void link_close(struct link *l, const char *why);
int send_msg(struct link *l, const Distsup__V1__PeerMsg *m);
void request_accept(struct peer *p);
struct link *dial(struct peer *p, const char *addr);
void *cq_main(void *arg);

#endif

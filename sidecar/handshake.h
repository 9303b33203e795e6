/* handshake: mutual authentication of two nodes and the sealing of what they say.
 *
 * Pure libsodium, no I/O.  Each node has a static X25519 key pair; the handshake is
 * three messages over the peer link:
 *
 *   msg1  I -> R   "DSP" v | s_i | e_i                (HS_MSG1_LEN bytes)
 *   msg2  R -> I   s_r | e_r | tag_r                  (HS_MSG2_LEN)
 *   msg3  I -> R   tag_i                              (HS_MSG3_LEN)
 *
 * s = static public key, e = a fresh ephemeral public key.  Both sides compute
 * T = BLAKE2b-512("distsup peer v1" | msg1 | s_r | e_r) and three X25519 products
 * dh1 = (e_i, e_r), dh2 = (s_i, e_r), dh3 = (e_i, s_r); the master key is
 * BLAKE2b-256 keyed by the cluster pre-shared key (if any) over T | dh1 | dh2 | dh3,
 * and four subkeys are derived from it (crypto_kdf, context "dsuppeer"): two
 * confirmation keys and one traffic key per direction.  tag_r = HMAC(T) proves R
 * holds s_r's secret (dh3); tag_i = HMAC(T | tag_r) proves I holds s_i's (dh2).  The
 * ephemerals make every session's keys fresh, so nothing from an old session is
 * accepted in a new one.  A wrong pre-shared key fails like a wrong static key.
 *
 * After the handshake every message is sealed with ChaCha20-Poly1305 (IETF) under
 * its direction's key, with the nonce a counter that both sides keep: the counter is
 * not sent, so a modified, replayed, reordered or dropped message fails to open.
 * The caller's answer to any failure is to drop the link.
 *
 * Not thread-safe per object; objects are independent.  sodium_init() must have run. */
#ifndef DISTSUP_HANDSHAKE_H
#define DISTSUP_HANDSHAKE_H

#include <stddef.h>
#include <stdint.h>

/* The link protocol's version, the v of msg1's magic "DSP" v (an ASCII digit).  2:
 * every sealed packet ends with a framing trailer (sidecar/peer/link.c).  Nodes of
 * two versions refuse each other at msg1 (HS_BAD_VERSION) and say so in the log. */
#define HS_LINK_VERSION 2

#define HS_KEY_LEN 32
#define HS_MSG1_LEN 68
#define HS_MSG2_LEN 96
#define HS_MSG3_LEN 32
#define SEAL_OVERHEAD 16

enum hs_result {
    HS_OK = 0,
    HS_BAD_FORMAT = -1,  /* wrong length or magic, or a degenerate public key */
    HS_BAD_PROOF = -2,   /* the other side does not hold its key, or a different
                            cluster pre-shared key */
    HS_BAD_VERSION = -3, /* msg1 of another link protocol version ("DSP" v) */
};

struct keypair {
    uint8_t pk[HS_KEY_LEN];
    uint8_t sk[HS_KEY_LEN];
};

/* One direction's keys and counters of an established session. */
struct seal {
    uint8_t tx_key[HS_KEY_LEN];
    uint8_t rx_key[HS_KEY_LEN];
    uint64_t tx_n, rx_n;
};

struct hs {
    int initiator;
    const struct keypair *self;
    uint8_t psk[HS_KEY_LEN];
    int has_psk;
    uint8_t e_pk[HS_KEY_LEN], e_sk[HS_KEY_LEN];
    uint8_t peer_s[HS_KEY_LEN], peer_e[HS_KEY_LEN];
    uint8_t msg1[HS_MSG1_LEN];
    uint8_t t[64]; /* transcript hash */
    uint8_t conf_r[HS_KEY_LEN], conf_i[HS_KEY_LEN];
    uint8_t k_ir[HS_KEY_LEN], k_ri[HS_KEY_LEN];
    uint8_t tag_r[HS_KEY_LEN];
};

/* Fills kp with a new key pair. */
void keypair_generate(struct keypair *kp);

/* Initiator, step 1.  psk: 32 bytes or NULL.  self must outlive hs. */
void hs_initiator_begin(struct hs *hs, const struct keypair *self, const uint8_t *psk, uint8_t msg1[HS_MSG1_LEN]);

/* Responder, step 1: reads msg1.  peer_static gets the initiator's static key, for the
 * caller to check against its trust list before answering. */
enum hs_result hs_responder_read1(struct hs *hs, const struct keypair *self, const uint8_t *psk, const uint8_t *msg1,
                                  size_t len, uint8_t peer_static[HS_KEY_LEN]);

/* Responder, step 2: writes msg2. */
enum hs_result hs_responder_write2(struct hs *hs, uint8_t msg2[HS_MSG2_LEN]);

/* Initiator, step 2: reads msg2 and checks the responder's proof.  peer_static gets
 * the responder's static key (check trust before sending msg3). */
enum hs_result hs_initiator_read2(struct hs *hs, const uint8_t *msg2, size_t len, uint8_t peer_static[HS_KEY_LEN]);

/* Initiator, step 3: writes msg3 and the session's seal. */
void hs_initiator_write3(struct hs *hs, uint8_t msg3[HS_MSG3_LEN], struct seal *out);

/* Responder, step 3: checks the initiator's proof; fills the session's seal. */
enum hs_result hs_responder_read3(struct hs *hs, const uint8_t *msg3, size_t len, struct seal *out);

/* Erases every secret in hs. */
void hs_wipe(struct hs *hs);
void seal_wipe(struct seal *s);

/* Seals n bytes into out (n + SEAL_OVERHEAD bytes) under the next send counter.
 * out may be in (sealing in place: the tag goes right after the n bytes). */
void seal_encrypt(struct seal *s, const uint8_t *in, size_t n, uint8_t *out);

/* Opens a sealed message of n bytes into out (n - SEAL_OVERHEAD bytes) under the next
 * receive counter; out may be in.  0, or -1 if it is short, modified, replayed or out
 * of order (the counter does not advance then; out's content is undefined). */
int seal_decrypt(struct seal *s, const uint8_t *in, size_t n, uint8_t *out);

/* Lower-case hex of a key (2 * HS_KEY_LEN + 1 bytes with the NUL). */
void key_hex(const uint8_t key[HS_KEY_LEN], char out[2 * HS_KEY_LEN + 1]);

#endif

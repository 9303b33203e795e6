#include "sidecar/handshake.h"

#include <sodium.h>
#include <string.h>

static const char MAGIC[4] = {'D', 'S', 'P', '0' + HS_LINK_VERSION};
static const char PROLOGUE[] = "distsup peer v1";
static const char KDF_CTX[crypto_kdf_CONTEXTBYTES] = {'d', 's', 'u', 'p', 'p', 'e', 'e', 'r'};

enum { SUB_CONF_R = 1, SUB_CONF_I = 2, SUB_I2R = 3, SUB_R2I = 4 };

void keypair_generate(struct keypair *kp) { crypto_box_keypair(kp->pk, kp->sk); }

void key_hex(const uint8_t key[HS_KEY_LEN], char out[2 * HS_KEY_LEN + 1])
{
    sodium_bin2hex(out, 2 * HS_KEY_LEN + 1, key, HS_KEY_LEN);
}

static void set_psk(struct hs *hs, const uint8_t *psk)
{
    hs->has_psk = psk != NULL;
    if (psk) memcpy(hs->psk, psk, HS_KEY_LEN);
}

/* T, then the master key from the three products, then the four subkeys.  -1 if a
 * product is degenerate (a low-order public key). */
static int derive(struct hs *hs, const uint8_t dh1_sk[32], const uint8_t dh1_pk[32], const uint8_t dh2_sk[32],
                  const uint8_t dh2_pk[32], const uint8_t dh3_sk[32], const uint8_t dh3_pk[32], const uint8_t s_r[32],
                  const uint8_t e_r[32])
{
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, sizeof hs->t);
    crypto_generichash_update(&st, (const uint8_t *)PROLOGUE, sizeof PROLOGUE - 1);
    crypto_generichash_update(&st, hs->msg1, sizeof hs->msg1);
    crypto_generichash_update(&st, s_r, 32);
    crypto_generichash_update(&st, e_r, 32);
    crypto_generichash_final(&st, hs->t, sizeof hs->t);

    uint8_t dh[3][32], master[crypto_kdf_KEYBYTES];
    int rc = 0;
    if (crypto_scalarmult(dh[0], dh1_sk, dh1_pk) != 0 || crypto_scalarmult(dh[1], dh2_sk, dh2_pk) != 0 ||
        crypto_scalarmult(dh[2], dh3_sk, dh3_pk) != 0) {
        rc = -1;
        goto out;
    }
    crypto_generichash_init(&st, hs->has_psk ? hs->psk : NULL, hs->has_psk ? HS_KEY_LEN : 0, sizeof master);
    crypto_generichash_update(&st, hs->t, sizeof hs->t);
    crypto_generichash_update(&st, dh[0], 32);
    crypto_generichash_update(&st, dh[1], 32);
    crypto_generichash_update(&st, dh[2], 32);
    crypto_generichash_final(&st, master, sizeof master);
    crypto_kdf_derive_from_key(hs->conf_r, HS_KEY_LEN, SUB_CONF_R, KDF_CTX, master);
    crypto_kdf_derive_from_key(hs->conf_i, HS_KEY_LEN, SUB_CONF_I, KDF_CTX, master);
    crypto_kdf_derive_from_key(hs->k_ir, HS_KEY_LEN, SUB_I2R, KDF_CTX, master);
    crypto_kdf_derive_from_key(hs->k_ri, HS_KEY_LEN, SUB_R2I, KDF_CTX, master);
out:
    sodium_memzero(dh, sizeof dh);
    sodium_memzero(master, sizeof master);
    sodium_memzero(&st, sizeof st);
    return rc;
}

/* tag_i = HMAC(conf_i, T | tag_r) */
static void tag_i(const struct hs *hs, uint8_t out[32])
{
    uint8_t buf[sizeof hs->t + HS_KEY_LEN];
    memcpy(buf, hs->t, sizeof hs->t);
    memcpy(buf + sizeof hs->t, hs->tag_r, HS_KEY_LEN);
    crypto_auth(out, buf, sizeof buf, hs->conf_i);
}

static void make_seal(const struct hs *hs, struct seal *out)
{
    memcpy(out->tx_key, hs->initiator ? hs->k_ir : hs->k_ri, HS_KEY_LEN);
    memcpy(out->rx_key, hs->initiator ? hs->k_ri : hs->k_ir, HS_KEY_LEN);
    out->tx_n = out->rx_n = 0;
}

void hs_initiator_begin(struct hs *hs, const struct keypair *self, const uint8_t *psk, uint8_t msg1[HS_MSG1_LEN])
{
    memset(hs, 0, sizeof *hs);
    hs->initiator = 1;
    hs->self = self;
    set_psk(hs, psk);
    crypto_box_keypair(hs->e_pk, hs->e_sk);
    memcpy(hs->msg1, MAGIC, 4);
    memcpy(hs->msg1 + 4, self->pk, 32);
    memcpy(hs->msg1 + 36, hs->e_pk, 32);
    memcpy(msg1, hs->msg1, HS_MSG1_LEN);
}

enum hs_result hs_responder_read1(struct hs *hs, const struct keypair *self, const uint8_t *psk, const uint8_t *msg1,
                                  size_t len, uint8_t peer_static[HS_KEY_LEN])
{
    memset(hs, 0, sizeof *hs);
    hs->self = self;
    set_psk(hs, psk);
    if (len != HS_MSG1_LEN || memcmp(msg1, MAGIC, 3) != 0) return HS_BAD_FORMAT;
    if (msg1[3] != MAGIC[3]) return HS_BAD_VERSION;
    memcpy(hs->msg1, msg1, HS_MSG1_LEN);
    memcpy(hs->peer_s, msg1 + 4, 32);
    memcpy(hs->peer_e, msg1 + 36, 32);
    memcpy(peer_static, hs->peer_s, 32);
    return HS_OK;
}

enum hs_result hs_responder_write2(struct hs *hs, uint8_t msg2[HS_MSG2_LEN])
{
    crypto_box_keypair(hs->e_pk, hs->e_sk);
    /* dh1 = (e_r, e_i), dh2 = (e_r, s_i), dh3 = (s_r, e_i) */
    if (derive(hs, hs->e_sk, hs->peer_e, hs->e_sk, hs->peer_s, hs->self->sk, hs->peer_e, hs->self->pk, hs->e_pk) != 0)
        return HS_BAD_FORMAT;
    crypto_auth(hs->tag_r, hs->t, sizeof hs->t, hs->conf_r);
    memcpy(msg2, hs->self->pk, 32);
    memcpy(msg2 + 32, hs->e_pk, 32);
    memcpy(msg2 + 64, hs->tag_r, 32);
    return HS_OK;
}

enum hs_result hs_initiator_read2(struct hs *hs, const uint8_t *msg2, size_t len, uint8_t peer_static[HS_KEY_LEN])
{
    if (len != HS_MSG2_LEN) return HS_BAD_FORMAT;
    memcpy(hs->peer_s, msg2, 32);
    memcpy(hs->peer_e, msg2 + 32, 32);
    memcpy(peer_static, hs->peer_s, 32);
    /* dh1 = (e_i, e_r), dh2 = (s_i, e_r), dh3 = (e_i, s_r) */
    if (derive(hs, hs->e_sk, hs->peer_e, hs->self->sk, hs->peer_e, hs->e_sk, hs->peer_s, hs->peer_s, hs->peer_e) != 0)
        return HS_BAD_FORMAT;
    if (crypto_auth_verify(msg2 + 64, hs->t, sizeof hs->t, hs->conf_r) != 0) return HS_BAD_PROOF;
    memcpy(hs->tag_r, msg2 + 64, 32);
    return HS_OK;
}

void hs_initiator_write3(struct hs *hs, uint8_t msg3[HS_MSG3_LEN], struct seal *out)
{
    tag_i(hs, msg3);
    make_seal(hs, out);
}

enum hs_result hs_responder_read3(struct hs *hs, const uint8_t *msg3, size_t len, struct seal *out)
{
    if (len != HS_MSG3_LEN) return HS_BAD_FORMAT;
    uint8_t want[32];
    tag_i(hs, want);
    int ok = sodium_memcmp(want, msg3, 32) == 0;
    sodium_memzero(want, sizeof want);
    if (!ok) return HS_BAD_PROOF;
    make_seal(hs, out);
    return HS_OK;
}

void hs_wipe(struct hs *hs) { sodium_memzero(hs, sizeof *hs); }

void seal_wipe(struct seal *s) { sodium_memzero(s, sizeof *s); }

static void nonce_of(uint64_t n, uint8_t nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES])
{
    memset(nonce, 0, crypto_aead_chacha20poly1305_IETF_NPUBBYTES);
    for (int i = 0; i < 8; i++) nonce[4 + i] = (uint8_t)(n >> (8 * i));
}

void seal_encrypt(struct seal *s, const uint8_t *in, size_t n, uint8_t *out)
{
    uint8_t nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];
    nonce_of(s->tx_n++, nonce);
    crypto_aead_chacha20poly1305_ietf_encrypt(out, NULL, in, n, NULL, 0, NULL, nonce, s->tx_key);
}

int seal_decrypt(struct seal *s, const uint8_t *in, size_t n, uint8_t *out)
{
    if (n < SEAL_OVERHEAD) return -1;
    uint8_t nonce[crypto_aead_chacha20poly1305_IETF_NPUBBYTES];
    nonce_of(s->rx_n, nonce);
    if (crypto_aead_chacha20poly1305_ietf_decrypt(out, NULL, NULL, in, n, NULL, 0, nonce, s->rx_key) != 0) return -1;
    s->rx_n++;
    return 0;
}

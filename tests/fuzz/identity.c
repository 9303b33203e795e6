/* Fuzz target "identity": the key file, trust file and cluster key file parsers
 * (sidecar/identity.c), through real files as identity_load reads them.
 *
 * identity_load reads the key file, then the trust file, then the cluster key file,
 * and stops at the first refusal; so the input's first byte chooses which of the
 * three the rest of the input becomes, and the other two hold valid content made at
 * start-up (a fresh key pair, a trust line for it).  The files live in a private
 * directory of mkdtemp, mode 0600, owned by the fuzzer's user, as identity_load
 * demands (it refuses symbolic links, so /proc/self/fd paths cannot be used).
 * What must hold: a refusal comes with a message; an accepted trust list has unique
 * keys, each name given to one key only, and the lookups agree with it. */
#include <fcntl.h>
#include <sodium.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "sidecar/identity.h"
#include "tests/fuzz/fuzz.h"

static char dir[64], key_path[96], trust_path[96], psk_path[96];
static char key_text[256], trust_text[128];

static void put(const char *path, const void *p, size_t n)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    FUZZ_CHECK(fd >= 0);
    size_t off = 0;
    while (off < n) {
        ssize_t w = write(fd, (const char *)p + off, n - off);
        FUZZ_CHECK(w > 0);
        off += (size_t)w;
    }
    FUZZ_CHECK(close(fd) == 0);
}

static void cleanup(void)
{
    unlink(key_path);
    unlink(trust_path);
    unlink(psk_path);
    rmdir(dir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    if (sodium_init() < 0) abort();
    snprintf(dir, sizeof dir, "/tmp/distsup-fuzz-identity.XXXXXX");
    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        abort();
    }
    snprintf(key_path, sizeof key_path, "%s/node.key", dir);
    snprintf(trust_path, sizeof trust_path, "%s/trusted", dir);
    snprintf(psk_path, sizeof psk_path, "%s/cluster.key", dir);
    if (atexit(cleanup) != 0) abort();
    umask(077);
    struct keypair kp;
    keypair_generate(&kp);
    char pk[2 * HS_KEY_LEN + 1], sk[2 * HS_KEY_LEN + 1];
    key_hex(kp.pk, pk);
    key_hex(kp.sk, sk);
    snprintf(key_text, sizeof key_text, "# distsup node key (X25519). Keep it secret.\npublic %s\nsecret %s\n", pk, sk);
    snprintf(trust_text, sizeof trust_text, "%s node1@fuzz\n", pk);
    return 0;
}

static void check_trust(const struct identity *id)
{
    FUZZ_CHECK(id->n_trusted <= IDENTITY_MAX_TRUSTED);
    for (size_t i = 0; i < id->n_trusted; i++) {
        const struct trusted_key *k = &id->trusted[i];
        FUZZ_CHECK(memchr(k->name, 0, sizeof k->name) != NULL);
        FUZZ_CHECK(identity_trusts(id, k->pk));
        const char *bound = identity_bound_name(id, k->pk);
        FUZZ_CHECK(bound == k->name); /* each key once: the lookup finds this entry */
        if (k->name[0]) FUZZ_CHECK(!identity_name_taken(id, k->name, k->pk));
        for (size_t j = 0; j < i; j++) {
            FUZZ_CHECK(memcmp(id->trusted[j].pk, k->pk, HS_KEY_LEN) != 0);
            FUZZ_CHECK(!k->name[0] || strcmp(id->trusted[j].name, k->name) != 0);
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    unsigned which = data[0] % 3;
    data++, size--;
    put(key_path, which == 0 ? (const void *)data : key_text, which == 0 ? size : strlen(key_text));
    put(trust_path, which == 1 ? (const void *)data : trust_text, which == 1 ? size : strlen(trust_text));
    if (which == 2) put(psk_path, data, size);

    struct identity id;
    char err[600];
    memset(err, 0, sizeof err);
    if (identity_load(&id, key_path, trust_path, which == 2 ? psk_path : NULL, err, sizeof err) != 0) {
        FUZZ_CHECK_ERR(err);
        return 0;
    }
    check_trust(&id);
    /* the public key belongs to the secret key */
    uint8_t pk[HS_KEY_LEN];
    FUZZ_CHECK(crypto_scalarmult_base(pk, id.kp.sk) == 0);
    FUZZ_CHECK(memcmp(pk, id.kp.pk, HS_KEY_LEN) == 0);
    FUZZ_CHECK(id.has_psk == (which == 2));
    identity_free(&id);
    return 0;
}

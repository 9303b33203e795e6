#include "sidecar/identity.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define LINE_MAX_ 1024

static int parse_hex_key(const char *s, size_t n, uint8_t out[HS_KEY_LEN])
{
    size_t got = 0;
    if (n != 2 * HS_KEY_LEN) return -1;
    if (sodium_hex2bin(out, HS_KEY_LEN, s, n, NULL, &got, NULL) != 0 || got != HS_KEY_LEN) return -1;
    return 0;
}

/* Trims s in place; returns the start. */
static char *trim(char *s)
{
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n && (s[n - 1] == '\n' || s[n - 1] == '\r' || s[n - 1] == ' ' || s[n - 1] == '\t')) s[--n] = 0;
    return s;
}

int identity_keygen(const char *path, int force, char pub_hex[2 * HS_KEY_LEN + 1], char *err, size_t errlen)
{
    struct keypair kp;
    keypair_generate(&kp);
    char pk[2 * HS_KEY_LEN + 1], sk[2 * HS_KEY_LEN + 1];
    key_hex(kp.pk, pk);
    key_hex(kp.sk, sk);
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL), 0600);
    int rc = -1;
    if (fd < 0) {
        snprintf(err, errlen, "cannot create key file %s: %s%s", path, strerror(errno),
                 errno == EEXIST ? " (use --force to replace it)" : "");
        goto out;
    }
    if (fchmod(fd, 0600) != 0) {
        snprintf(err, errlen, "cannot make key file %s private: %s", path, strerror(errno));
        close(fd);
        goto out;
    }
    char text[256];
    int n = snprintf(text, sizeof text, "# distsup node key (X25519). Keep it secret.\npublic %s\nsecret %s\n", pk, sk);
    ssize_t w = write(fd, text, (size_t)n);
    int close_rc = close(fd);
    sodium_memzero(text, sizeof text);
    if (w != n || close_rc != 0) {
        snprintf(err, errlen, "cannot write key file %s: %s", path, strerror(errno));
        goto out;
    }
    memcpy(pub_hex, pk, sizeof pk);
    rc = 0;
out:
    sodium_memzero(&kp, sizeof kp);
    sodium_memzero(sk, sizeof sk);
    return rc;
}

/* Opens one of the identity files for reading: not through a symbolic link, a regular
 * file owned by this process's effective user and writable by nobody else (secret:
 * readable by nobody else either).  NULL with the reason in err. */
static FILE *open_private(const char *path, const char *what, int secret, char *err, size_t errlen)
{
    int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        if (errno == ELOOP) snprintf(err, errlen, "%s %s is a symbolic link: name the file itself", what, path);
        else if (secret && errno == ENOENT)
            snprintf(err, errlen, "%s %s: %s (create one with `distsupd keygen %s`)", what, path, strerror(errno),
                     path);
        else snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return NULL;
    }
    struct stat st;
    const char *bad = NULL;
    char why[160] = "";
    if (fstat(fd, &st) != 0) {
        snprintf(why, sizeof why, "%s", strerror(errno));
        bad = why;
    } else if (!S_ISREG(st.st_mode)) {
        bad = "is not a regular file";
    } else if (st.st_uid != geteuid()) {
        snprintf(why, sizeof why, "is owned by user %u, not by the user the daemon runs as (%u): chown it",
                 (unsigned)st.st_uid, (unsigned)geteuid());
        bad = why;
    } else if (st.st_mode & 022) {
        snprintf(why, sizeof why, "is writable by others (mode %04o): chmod go-w it", (unsigned)(st.st_mode & 07777));
        bad = why;
    } else if (secret && (st.st_mode & 077)) {
        snprintf(why, sizeof why, "is readable by others (mode %04o): chmod 600 it", (unsigned)(st.st_mode & 07777));
        bad = why;
    }
    FILE *f = bad ? NULL : fdopen(fd, "r");
    if (!f) {
        if (!bad) snprintf(why, sizeof why, "%s", strerror(errno)), bad = why;
        snprintf(err, errlen, "%s %s %s", what, path, bad);
        close(fd);
    }
    return f;
}

static int load_key_file(struct identity *id, const char *path, char *err, size_t errlen)
{
    FILE *f = open_private(path, "key file", 1, err, errlen);
    if (!f) return -1;
    char line[LINE_MAX_];
    int have_pk = 0, have_sk = 0, lineno = 0, rc = -1;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        uint8_t *dst = NULL;
        if (!strncmp(s, "public ", 7)) dst = id->kp.pk, have_pk = 1;
        else if (!strncmp(s, "secret ", 7)) dst = id->kp.sk, have_sk = 1;
        if (!dst || parse_hex_key(trim(s + 7), strlen(trim(s + 7)), dst) != 0) {
            snprintf(err, errlen, "%s:%d: expected 'public HEX' or 'secret HEX' (64 hex digits)", path, lineno);
            goto out;
        }
    }
    if (!have_pk || !have_sk) {
        snprintf(err, errlen, "key file %s: needs both a 'public' and a 'secret' line", path);
        goto out;
    }
    uint8_t check[HS_KEY_LEN];
    crypto_scalarmult_base(check, id->kp.sk);
    if (sodium_memcmp(check, id->kp.pk, HS_KEY_LEN) != 0) {
        snprintf(err, errlen, "key file %s: the public key does not belong to the secret key", path);
        goto out;
    }
    rc = 0;
out:
    sodium_memzero(line, sizeof line);
    fclose(f);
    return rc;
}

static int load_trust_file(struct identity *id, const char *path, char *err, size_t errlen)
{
    FILE *f = open_private(path, "trust file", 0, err, errlen);
    if (!f) return -1;
    char line[LINE_MAX_];
    int lineno = 0, rc = -1;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        char *s = trim(line);
        if (!*s || *s == '#') continue;
        size_t n = strcspn(s, " \t#");
        struct trusted_key k = {{0}, ""};
        if (parse_hex_key(s, n, k.pk) != 0) {
            snprintf(err, errlen, "%s:%d: expected a public key (64 hex digits), optionally followed by a node name",
                     path, lineno);
            goto out;
        }
        char *name = s + n + strspn(s + n, " \t");
        size_t nl = strcspn(name, " \t#");
        char after = name[nl + strspn(name + nl, " \t")]; /* what follows the name */
        if (nl >= sizeof k.name || (after && after != '#')) {
            snprintf(err, errlen, "%s:%d: expected a public key and at most one node name (shorter than %d)", path,
                     lineno, IDENTITY_NAME_MAX);
            goto out;
        }
        memcpy(k.name, name, nl);
        k.name[nl] = 0;
        const char *bound = identity_bound_name(id, k.pk);
        if (bound) {
            if (strcmp(bound, k.name)) {
                snprintf(err, errlen, "%s:%d: this key is listed before with another node name ('%s')", path, lineno,
                         bound);
                goto out;
            }
            continue;
        }
        if (k.name[0] && identity_name_taken(id, k.name, k.pk)) {
            snprintf(err, errlen, "%s:%d: node name '%s' is given to another key before", path, lineno, k.name);
            goto out;
        }
        if (id->n_trusted == IDENTITY_MAX_TRUSTED) {
            snprintf(err, errlen, "%s:%d: more than %d trusted keys", path, lineno, IDENTITY_MAX_TRUSTED);
            goto out;
        }
        void *grown = realloc(id->trusted, (id->n_trusted + 1) * sizeof *id->trusted);
        if (!grown) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
        id->trusted = grown;
        id->trusted[id->n_trusted++] = k;
    }
    if (ferror(f)) {
        snprintf(err, errlen, "trust file %s: read error", path);
        goto out;
    }
    rc = 0;
out:
    fclose(f);
    return rc;
}

static int load_psk_file(struct identity *id, const char *path, char *err, size_t errlen)
{
    FILE *f = open_private(path, "cluster key file", 0, err, errlen);
    if (!f) return -1;
    char buf[4096];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    int read_err = ferror(f);
    fclose(f);
    buf[n] = 0;
    char *s = trim(buf);
    int rc = -1;
    if (read_err) snprintf(err, errlen, "cluster key file %s: read error", path);
    else if (strlen(s) < 16) snprintf(err, errlen, "cluster key file %s: the key must be at least 16 bytes", path);
    else {
        static const char ctx[] = "distsup cluster key v1";
        crypto_generichash_state st;
        crypto_generichash_init(&st, NULL, 0, HS_KEY_LEN);
        crypto_generichash_update(&st, (const uint8_t *)ctx, sizeof ctx - 1);
        crypto_generichash_update(&st, (const uint8_t *)s, strlen(s));
        crypto_generichash_final(&st, id->psk, HS_KEY_LEN);
        id->has_psk = 1;
        rc = 0;
    }
    sodium_memzero(buf, sizeof buf);
    return rc;
}

int identity_load(struct identity *id, const char *key_file, const char *trust_file, const char *psk_file, char *err,
                  size_t errlen)
{
    memset(id, 0, sizeof *id);
    if (load_key_file(id, key_file, err, errlen) != 0 || load_trust_file(id, trust_file, err, errlen) != 0 ||
        (psk_file && psk_file[0] && load_psk_file(id, psk_file, err, errlen) != 0)) {
        identity_free(id);
        return -1;
    }
    return 0;
}

void identity_free(struct identity *id)
{
    free(id->trusted);
    sodium_memzero(id, sizeof *id);
}

const char *identity_bound_name(const struct identity *id, const uint8_t pk[HS_KEY_LEN])
{
    for (size_t i = 0; i < id->n_trusted; i++)
        if (sodium_memcmp(id->trusted[i].pk, pk, HS_KEY_LEN) == 0) return id->trusted[i].name;
    return NULL;
}

int identity_trusts(const struct identity *id, const uint8_t pk[HS_KEY_LEN])
{
    return identity_bound_name(id, pk) != NULL;
}

int identity_name_taken(const struct identity *id, const char *name, const uint8_t pk[HS_KEY_LEN])
{
    for (size_t i = 0; i < id->n_trusted; i++)
        if (!strcmp(id->trusted[i].name, name) && sodium_memcmp(id->trusted[i].pk, pk, HS_KEY_LEN) != 0) return 1;
    return 0;
}

int identity_name_bound(const struct identity *id, const char *name)
{
    for (size_t i = 0; i < id->n_trusted; i++)
        if (!strcmp(id->trusted[i].name, name)) return 1;
    return 0;
}

#include "sidecar/apiauth.h"

#include <errno.h>
#include <fcntl.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static void hash_token(const uint8_t *t, size_t n, uint8_t out[API_AUTH_HASH_LEN])
{
    /* the key separates these hashes from any other use of BLAKE2b */
    static const uint8_t key[] = "distsup api bearer token v1";
    crypto_generichash(out, API_AUTH_HASH_LEN, t, n, key, sizeof key - 1);
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int api_auth_load(struct api_auth *a, const char *path, char *err, size_t errlen)
{
    memset(a, 0, sizeof *a);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        snprintf(err, errlen, "API token file %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        snprintf(err, errlen, "API token file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (!S_ISREG(st.st_mode)) {
        snprintf(err, errlen, "API token file %s is not a regular file", path);
        close(fd);
        return -1;
    }
    if (st.st_mode & 077) {
        snprintf(err, errlen,
                 "API token file %s is accessible to its group or others (mode %04o): chmod 600 it (and make a new "
                 "token: this one may have been read)",
                 path, (unsigned)(st.st_mode & 07777));
        close(fd);
        return -1;
    }
    char buf[API_AUTH_TOKEN_MAX + 2];
    size_t len = 0;
    int rc = -1;
    for (;;) {
        ssize_t n = read(fd, buf + len, sizeof buf - len);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) {
            snprintf(err, errlen, "API token file %s: %s", path, strerror(errno));
            goto out;
        }
        if (n == 0) break;
        len += (size_t)n;
        if (len == sizeof buf) {
            snprintf(err, errlen, "API token file %s is longer than %d bytes", path, API_AUTH_TOKEN_MAX);
            goto out;
        }
    }
    size_t b = 0, e = len;
    while (b < e && is_space(buf[b])) b++;
    while (e > b && is_space(buf[e - 1])) e--;
    if (b == e) {
        snprintf(err, errlen,
                 "API token file %s is empty: put a random token in it (e.g. `head -c 32 /dev/urandom | "
                 "base64 > %s`)",
                 path, path);
        goto out;
    }
    for (size_t i = b; i < e; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if (ch < 0x21 || ch > 0x7e) {
            snprintf(err, errlen,
                     "API token file %s: the token has a space, control or non-ASCII byte at offset %zu (a token "
                     "travels in an HTTP/2 header: use printable ASCII, e.g. base64)",
                     path, i);
            goto out;
        }
    }
    hash_token((const uint8_t *)buf + b, e - b, a->hash);
    a->enabled = 1;
    rc = 0;
out:
    sodium_memzero(buf, sizeof buf);
    close(fd);
    return rc;
}

enum api_auth_result api_auth_check(const struct api_auth *a, const uint8_t *value, size_t len)
{
    static const char scheme[] = "bearer ";
    const size_t sl = sizeof scheme - 1;
    if (len <= sl || strncasecmp((const char *)value, scheme, sl) != 0) return API_AUTH_NOT_BEARER;
    uint8_t h[API_AUTH_HASH_LEN];
    hash_token(value + sl, len - sl, h);
    int same = sodium_memcmp(h, a->hash, sizeof h) == 0;
    sodium_memzero(h, sizeof h);
    return same ? API_AUTH_OK : API_AUTH_WRONG;
}

const char *api_auth_message(enum api_auth_result r)
{
    switch (r) {
    case API_AUTH_OK: return "";
    case API_AUTH_MISSING:
        return "missing credentials: this API needs the metadata 'authorization: Bearer <token>' "
               "(the token in the daemon's --api-token-file)";
    case API_AUTH_NOT_BEARER:
        return "the 'authorization' metadata must be 'Bearer <token>' (the token in the daemon's --api-token-file)";
    case API_AUTH_WRONG: return "invalid bearer token";
    case API_AUTH_DUPLICATE: return "more than one 'authorization' metadata entry: send exactly one";
    }
    return "unauthenticated";
}

int api_read_file(const char *what, const char *path, size_t max, char **out, size_t *len, char *err, size_t errlen)
{
    *out = NULL;
    *len = 0;
    FILE *f = fopen(path, "re");
    if (!f) {
        snprintf(err, errlen, "%s %s: %s", what, path, strerror(errno));
        return -1;
    }
    char *buf = malloc(max + 1);
    if (!buf) {
        fclose(f);
        snprintf(err, errlen, "%s %s: out of memory", what, path);
        return -1;
    }
    size_t n = fread(buf, 1, max + 1, f);
    int bad = ferror(f);
    fclose(f);
    if (bad || n > max || n == 0) {
        snprintf(err, errlen, "%s %s: %s", what, path,
                 bad          ? "read error"
                     : n == 0 ? "the file is empty"
                              : "the file is too large");
        sodium_memzero(buf, max + 1);
        free(buf);
        return -1;
    }
    buf[n] = 0;
    *out = buf;
    *len = n;
    return 0;
}

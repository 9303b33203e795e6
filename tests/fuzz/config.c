/* Fuzz target "config": the daemon's settings parsers (sidecar/config.c).
 *
 * The input is, at once:
 *   - an INI config file, written to a memfd and read by config_load_file through
 *     /proc/self/fd/N (libinih, then our per-key checks);
 *   - a command line: the input split at NUL bytes into argv[1..], given to
 *     config_from_args (flags, then the checks of settings that need each other).
 *     The value after a --config is replaced by the memfd's path, so that the
 *     fuzzer never names a file of the machine;
 *   - a listen address for config_listen_is_loopback.
 * What must hold: a refusal comes with a message; what is accepted is within the
 * documented bounds. */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "sidecar/config.h"
#include "tests/fuzz/fuzz.h"

#define MAX_ARGS 64

static int fd = -1;
static char path[64];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    fd = memfd_create("distsup-fuzz-config", MFD_CLOEXEC);
    if (fd < 0) {
        perror("memfd_create");
        abort();
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    /* --help and --version print to stdout */
    if (!freopen("/dev/null", "w", stdout)) {
        perror("freopen /dev/null");
        abort();
    }
    /* the token file may come from the environment: not here */
    unsetenv("DISTSUP_API_TOKEN_FILE");
    return 0;
}

static void write_file(const uint8_t *data, size_t size)
{
    FUZZ_CHECK(ftruncate(fd, 0) == 0);
    size_t off = 0;
    while (off < size) {
        ssize_t w = pwrite(fd, data + off, size - off, (off_t)off);
        FUZZ_CHECK(w > 0);
        off += (size_t)w;
    }
}

static void check_bounds(const struct config *c)
{
    FUZZ_CHECK(c->threads >= 1 && c->threads <= 64);
    FUZZ_CHECK(c->max_payload >= 1024 && c->max_payload <= (4u << 20));
    FUZZ_CHECK(c->api_socket_mode <= 0777);
    FUZZ_CHECK(c->n_sups >= 1 && c->n_sups <= CONFIG_MAX_SUPERVISORS);
    FUZZ_CHECK(!strcmp(c->sups[0].name, "default"));
    FUZZ_CHECK(memchr(c->listen, 0, sizeof c->listen) && memchr(c->seeds, 0, sizeof c->seeds));
    for (size_t i = 0; i < c->n_sups; i++) {
        const struct sup_config *s = &c->sups[i];
        FUZZ_CHECK(s->name[0] && memchr(s->name, 0, sizeof s->name));
        FUZZ_CHECK(config_find_sup(c, s->name) == s); /* names are unique */
        FUZZ_CHECK(s->max_restarts <= 100 && s->max_seconds >= 1 && s->mailbox >= 1 && s->max_moves >= 1);
        FUZZ_CHECK(s->mailbox_bytes >= 4096 && s->watch_queue >= 1);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static struct config c; /* large: not on the stack */
    char err[1024];
    write_file(data, size);

    /* the file */
    config_defaults(&c);
    memset(err, 0, sizeof err);
    if (config_load_file(&c, path, err, sizeof err) != 0) FUZZ_CHECK_ERR(err);
    check_bounds(&c);

    /* the command line */
    char *text = malloc(size + 1);
    FUZZ_CHECK(text != NULL);
    memcpy(text, data, size);
    text[size] = 0;
    char *argv[MAX_ARGS + 2];
    int argc = 0;
    argv[argc++] = "distsupd";
    for (char *p = text; p < text + size && argc <= MAX_ARGS; p += strlen(p) + 1) {
        argv[argc] = p;
        if (argc > 1 && !strcmp(argv[argc - 1], "--config")) argv[argc] = path;
        argc++;
    }
    argv[argc] = NULL;
    config_defaults(&c);
    memset(err, 0, sizeof err);
    int rc = config_from_args(&c, argc, argv, err, sizeof err);
    FUZZ_CHECK(rc >= -1 && rc <= 1);
    if (rc < 0) FUZZ_CHECK_ERR(err);
    check_bounds(&c);
    if (rc == 0) {
        /* accepted: the checks config_from_args promises */
        FUZZ_CHECK(!c.tls_cert[0] == !c.tls_key[0]);
        FUZZ_CHECK(config_listen_is_loopback(c.listen) || c.api_token_file[0] || c.tls_client_ca[0] || c.insecure_api);
        if (config_cluster(&c)) FUZZ_CHECK(c.key_file[0] && c.trust_file[0] && c.heartbeat_ms * 2 <= c.down_after_ms);
        else FUZZ_CHECK(!c.seeds[0] && !c.quorum);
    }
    free(text);

    /* a listen address */
    char listen[300];
    size_t n = size < sizeof listen - 1 ? size : sizeof listen - 1;
    memcpy(listen, data, n);
    listen[n] = 0;
    int lb = config_listen_is_loopback(listen);
    FUZZ_CHECK(lb == 0 || lb == 1);
    return 0;
}

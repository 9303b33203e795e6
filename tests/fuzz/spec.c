/* Fuzz target "spec": a StartChildRequest as the API receives it, unpacked and its
 * spec validated (sidecar/spec.c) with the default max_payload of 4 MiB; and the
 * same bytes as a bare ChildSpec, as the store and a peer's ChildInfo carry it.
 *
 * What must hold: a spec spec_validate accepts is one the core can start without
 * further checks (a process child: argv[0] set; a hosted child: a kind that is a
 * name, and no argv, env or cwd; bounded counts and text, known enums, names without
 * spaces), and that the store and the peers read back after packing it; a refusal
 * comes with a message. */
#include <string.h>

#include "sidecar/spec.h"
#include "tests/fuzz/fuzz.h"

#define MAX_PAYLOAD (4u << 20)

static void check_spec(const Distsup__V1__ChildSpec *s)
{
    char err[400];
    memset(err, 0, sizeof err);
    if (spec_validate(s, MAX_PAYLOAD, err, sizeof err) != 0) {
        FUZZ_CHECK_ERR(err);
        return;
    }
    /* accepted: what the core relies on */
    if (s->kind[0]) { /* a hosted child (docs/hosting.md) */
        FUZZ_CHECK(s->n_argv == 0 && s->n_env == 0 && !s->cwd[0]);
        FUZZ_CHECK(s->protocol == DISTSUP__V1__PROTOCOL__FRAMES);
        FUZZ_CHECK(spec_name_check("kind", s->kind, err, sizeof err) == 0);
    } else {
        FUZZ_CHECK(s->n_argv >= 1 && s->n_argv <= SPEC_ARGV_MAX && s->argv[0][0] != 0);
    }
    FUZZ_CHECK(s->n_env <= SPEC_ENV_MAX);
    size_t text = strlen(s->cwd) + strlen(s->key) + strlen(s->kind);
    for (size_t i = 0; i < s->n_argv; i++) text += strlen(s->argv[i]);
    for (size_t i = 0; i < s->n_env; i++) {
        FUZZ_CHECK(s->env[i]->key[0] && !strchr(s->env[i]->key, '='));
        FUZZ_CHECK(strncmp(s->env[i]->key, "DISTSUP_", 8) != 0);
        text += strlen(s->env[i]->key) + strlen(s->env[i]->value);
    }
    for (size_t i = 0; i < s->n_labels; i++) {
        FUZZ_CHECK(s->labels[i]->key[0]);
        text += strlen(s->labels[i]->key) + strlen(s->labels[i]->value);
    }
    FUZZ_CHECK(text <= SPEC_TEXT_MAX);
    FUZZ_CHECK(!s->name[0] || spec_name_check("name", s->name, err, sizeof err) == 0);
    FUZZ_CHECK(!s->node[0] || spec_name_check("node", s->node, err, sizeof err) == 0);
    FUZZ_CHECK(s->init.len <= MAX_PAYLOAD);
    FUZZ_CHECK(s->shutdown_ms <= SPEC_SHUTDOWN_MAX_MS);
    uint32_t grace = spec_shutdown_ms(s);
    FUZZ_CHECK(s->kill_immediately ? grace == 0 : grace > 0 && grace <= SPEC_SHUTDOWN_MAX_MS);
    /* the store keeps it packed and reads it back at start-up; peers get it packed in
     * a ChildInfo: it must read back, and be valid again */
    size_t n = distsup__v1__child_spec__get_packed_size(s);
    uint8_t *buf = malloc(n ? n : 1);
    FUZZ_CHECK(buf != NULL);
    FUZZ_CHECK(distsup__v1__child_spec__pack(s, buf) == n);
    Distsup__V1__ChildSpec *again = distsup__v1__child_spec__unpack(NULL, n, buf);
    free(buf);
    FUZZ_CHECK(again != NULL);
    FUZZ_CHECK(spec_validate(again, MAX_PAYLOAD, err, sizeof err) == 0);
    distsup__v1__child_spec__free_unpacked(again, NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char err[400];
    Distsup__V1__StartChildRequest *req = distsup__v1__start_child_request__unpack(NULL, size, data);
    if (req) {
        memset(err, 0, sizeof err);
        if (spec_name_check("supervisor name", req->supervisor, err, sizeof err) != 0) FUZZ_CHECK_ERR(err);
        if (req->spec) check_spec(req->spec);
        distsup__v1__start_child_request__free_unpacked(req, NULL);
    }
    Distsup__V1__ChildSpec *spec = distsup__v1__child_spec__unpack(NULL, size, data);
    if (spec) {
        check_spec(spec);
        distsup__v1__child_spec__free_unpacked(spec, NULL);
    }
    return 0;
}

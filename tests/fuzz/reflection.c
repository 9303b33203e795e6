/* Fuzz target "reflection": the grpc.reflection answerer (sidecar/reflection.c) over
 * the descriptor set embedded in the daemon (proto/BUILD :descriptor_set), with the
 * services sidecar/rpc.c lists.  The input is one packed ServerReflectionRequest, as
 * any API client may send it.
 *
 * What must hold: reflection_answer fails only for bytes that are not a request; its
 * answer is a well-formed ServerReflectionResponse that echoes the request and holds
 * exactly one kind of answer.  (One exception, protobuf-c's and harmless: it accepts
 * a field number 0 written in a long varint, 0x80 0x00, keeps it as an unknown field
 * and packs it back as 0x00, which it then refuses; the answer echoing such a request
 * is refused too: fuzz.h, fuzz_has_field0.) */
#include <string.h>

#include "grpc/reflection/v1/reflection.pb-c.h"
#include "sidecar/reflection.h"
#include "tests/fuzz/fuzz.h"

extern const unsigned char distsup_descriptor_set[];
extern const size_t distsup_descriptor_set_len;

static struct reflection *refl;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char *const services[] = {
        "distsup.v1.Supervisor",
        "grpc.health.v1.Health",
        "grpc.reflection.v1.ServerReflection",
        "grpc.reflection.v1alpha.ServerReflection",
        NULL,
    };
    char err[200];
    refl = reflection_new(distsup_descriptor_set, distsup_descriptor_set_len, services, err, sizeof err);
    if (!refl) {
        fprintf(stderr, "reflection_new: %s\n", err);
        abort();
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *out = NULL;
    size_t out_len = 0;
    Grpc__Reflection__V1__ServerReflectionRequest *q =
        grpc__reflection__v1__server_reflection_request__unpack(NULL, size, data);
    int rc = reflection_answer(refl, data, size, &out, &out_len);
    FUZZ_CHECK((rc == 0) == (q != NULL));
    if (rc != 0) return 0;
    Grpc__Reflection__V1__ServerReflectionResponse *resp =
        grpc__reflection__v1__server_reflection_response__unpack(NULL, out_len, out);
    if (!resp) {
        FUZZ_CHECK(fuzz_has_field0(&q->base));
        grpc__reflection__v1__server_reflection_request__free_unpacked(q, NULL);
        free(out);
        return 0;
    }
    FUZZ_CHECK(!strcmp(resp->valid_host, q->host));
    FUZZ_CHECK(resp->original_request != NULL &&
               resp->original_request->message_request_case == q->message_request_case);
    switch (resp->message_response_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE:
        FUZZ_CHECK(q->message_request_case ==
                   GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES);
        FUZZ_CHECK(resp->list_services_response->n_service == 4);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE:
        FUZZ_CHECK(resp->file_descriptor_response->n_file_descriptor_proto >= 1);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE: break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE:
        FUZZ_CHECK(resp->error_response->error_code == 5 && resp->error_response->error_message[0]);
        break;
    default: FUZZ_CHECK(!"no answer in the response");
    }
    grpc__reflection__v1__server_reflection_response__free_unpacked(resp, NULL);
    grpc__reflection__v1__server_reflection_request__free_unpacked(q, NULL);
    free(out);
    return 0;
}

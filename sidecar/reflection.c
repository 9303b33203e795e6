#include "sidecar/reflection.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "google/protobuf/descriptor.pb-c.h"
#include "grpc/reflection/v1/reflection.pb-c.h"

struct file {
    char *name;
    uint8_t *bytes;
    size_t len;
    char **deps;
    size_t n_deps;
};

struct symbol {
    char *name;
    size_t file;
};

struct reflection {
    struct file *files;
    size_t n_files;
    struct symbol *syms;
    size_t n_syms, cap_syms;
    char **services;
    size_t n_services;
};

static int add_sym(struct reflection *r, const char *scope, const char *name, size_t file)
{
    if (r->n_syms == r->cap_syms) {
        size_t cap = r->cap_syms ? r->cap_syms * 2 : 256;
        struct symbol *s = realloc(r->syms, cap * sizeof *s);
        if (!s) return -1;
        r->syms = s;
        r->cap_syms = cap;
    }
    size_t n = strlen(scope) + strlen(name) + 2;
    char *full = malloc(n);
    if (!full) return -1;
    if (scope[0]) snprintf(full, n, "%s.%s", scope, name);
    else snprintf(full, n, "%s", name);
    r->syms[r->n_syms].name = full;
    r->syms[r->n_syms].file = file;
    r->n_syms++;
    return 0;
}

static int add_enum(struct reflection *r, const char *scope, const Google__Protobuf__EnumDescriptorProto *e,
                    size_t file)
{
    if (add_sym(r, scope, e->name, file)) return -1;
    for (size_t i = 0; i < e->n_value; i++) /* enum values live in the enclosing scope */
        if (add_sym(r, scope, e->value[i]->name, file)) return -1;
    return 0;
}

static int add_message(struct reflection *r, const char *scope, const Google__Protobuf__DescriptorProto *m, size_t file)
{
    if (add_sym(r, scope, m->name, file)) return -1;
    char inner[1024];
    snprintf(inner, sizeof inner, "%s%s%s", scope, scope[0] ? "." : "", m->name);
    for (size_t i = 0; i < m->n_field; i++)
        if (add_sym(r, inner, m->field[i]->name, file)) return -1;
    for (size_t i = 0; i < m->n_nested_type; i++)
        if (add_message(r, inner, m->nested_type[i], file)) return -1;
    for (size_t i = 0; i < m->n_enum_type; i++)
        if (add_enum(r, inner, m->enum_type[i], file)) return -1;
    return 0;
}

static int index_file(struct reflection *r, const Google__Protobuf__FileDescriptorProto *f, size_t idx)
{
    const char *pkg = f->package ? f->package : "";
    for (size_t i = 0; i < f->n_message_type; i++)
        if (add_message(r, pkg, f->message_type[i], idx)) return -1;
    for (size_t i = 0; i < f->n_enum_type; i++)
        if (add_enum(r, pkg, f->enum_type[i], idx)) return -1;
    for (size_t i = 0; i < f->n_service; i++) {
        const Google__Protobuf__ServiceDescriptorProto *s = f->service[i];
        if (add_sym(r, pkg, s->name, idx)) return -1;
        char inner[1024];
        snprintf(inner, sizeof inner, "%s%s%s", pkg, pkg[0] ? "." : "", s->name);
        for (size_t j = 0; j < s->n_method; j++)
            if (add_sym(r, inner, s->method[j]->name, idx)) return -1;
    }
    return 0;
}

struct reflection *reflection_new(const uint8_t *set, size_t len, const char *const *services, char *err, size_t errlen)
{
    Google__Protobuf__FileDescriptorSet *fs = google__protobuf__file_descriptor_set__unpack(NULL, len, set);
    if (!fs) {
        snprintf(err, errlen, "the embedded descriptor set does not parse");
        return NULL;
    }
    struct reflection *r = calloc(1, sizeof *r);
    if (!r || !(r->files = calloc(fs->n_file ? fs->n_file : 1, sizeof *r->files))) goto oom;
    for (size_t i = 0; i < fs->n_file; i++) {
        const Google__Protobuf__FileDescriptorProto *f = fs->file[i];
        struct file *out = &r->files[r->n_files++];
        out->len = google__protobuf__file_descriptor_proto__get_packed_size(f);
        out->bytes = malloc(out->len ? out->len : 1);
        out->name = strdup(f->name ? f->name : "");
        out->deps = calloc(f->n_dependency ? f->n_dependency : 1, sizeof *out->deps);
        if (!out->bytes || !out->name || !out->deps) goto oom;
        google__protobuf__file_descriptor_proto__pack(f, out->bytes);
        for (size_t j = 0; j < f->n_dependency; j++) {
            if (!(out->deps[j] = strdup(f->dependency[j]))) goto oom;
            out->n_deps++;
        }
        if (index_file(r, f, i)) goto oom;
    }
    for (size_t i = 0; services[i]; i++) r->n_services++;
    if (!(r->services = calloc(r->n_services + 1, sizeof *r->services))) goto oom;
    for (size_t i = 0; i < r->n_services; i++)
        if (!(r->services[i] = strdup(services[i]))) goto oom;
    google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
    return r;
oom:
    google__protobuf__file_descriptor_set__free_unpacked(fs, NULL);
    reflection_free(r);
    snprintf(err, errlen, "out of memory");
    return NULL;
}

void reflection_free(struct reflection *r)
{
    if (!r) return;
    for (size_t i = 0; i < r->n_files; i++) {
        free(r->files[i].name);
        free(r->files[i].bytes);
        for (size_t j = 0; j < r->files[i].n_deps; j++) free(r->files[i].deps[j]);
        free(r->files[i].deps);
    }
    free(r->files);
    for (size_t i = 0; i < r->n_syms; i++) free(r->syms[i].name);
    free(r->syms);
    for (size_t i = 0; r->services && i < r->n_services; i++) free(r->services[i]);
    free(r->services);
    free(r);
}

static long find_file(const struct reflection *r, const char *name)
{
    for (size_t i = 0; i < r->n_files; i++)
        if (!strcmp(r->files[i].name, name)) return (long)i;
    return -1;
}

static long find_symbol(const struct reflection *r, const char *name)
{
    if (name[0] == '.') name++;
    for (size_t i = 0; i < r->n_syms; i++)
        if (!strcmp(r->syms[i].name, name)) return (long)r->syms[i].file;
    return -1;
}

/* Marks file idx and everything it imports. */
static void mark(const struct reflection *r, size_t idx, char *seen)
{
    if (seen[idx]) return;
    seen[idx] = 1;
    for (size_t j = 0; j < r->files[idx].n_deps; j++) {
        long d = find_file(r, r->files[idx].deps[j]);
        if (d >= 0) mark(r, (size_t)d, seen);
    }
}

int reflection_answer(const struct reflection *r, const uint8_t *req, size_t len, uint8_t **out, size_t *out_len)
{
    Grpc__Reflection__V1__ServerReflectionRequest *q =
        grpc__reflection__v1__server_reflection_request__unpack(NULL, len, req);
    if (!q) return -1;
    Grpc__Reflection__V1__ServerReflectionResponse resp = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__INIT;
    resp.valid_host = q->host;
    resp.original_request = q;
    Grpc__Reflection__V1__ErrorResponse er = GRPC__REFLECTION__V1__ERROR_RESPONSE__INIT;
    Grpc__Reflection__V1__FileDescriptorResponse fr = GRPC__REFLECTION__V1__FILE_DESCRIPTOR_RESPONSE__INIT;
    Grpc__Reflection__V1__ListServiceResponse lr = GRPC__REFLECTION__V1__LIST_SERVICE_RESPONSE__INIT;
    Grpc__Reflection__V1__ExtensionNumberResponse xr = GRPC__REFLECTION__V1__EXTENSION_NUMBER_RESPONSE__INIT;
    Grpc__Reflection__V1__ServiceResponse *svc = NULL, **svcp = NULL;
    ProtobufCBinaryData *blobs = NULL;
    char *seen = NULL;
    char msg[512];
    long file = -1;
    int rc = -1;

    switch (q->message_request_case) {
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_LIST_SERVICES:
        svc = calloc(r->n_services ? r->n_services : 1, sizeof *svc);
        svcp = calloc(r->n_services ? r->n_services : 1, sizeof *svcp);
        if (!svc || !svcp) goto done;
        for (size_t i = 0; i < r->n_services; i++) {
            grpc__reflection__v1__service_response__init(&svc[i]);
            svc[i].name = r->services[i];
            svcp[i] = &svc[i];
        }
        lr.n_service = r->n_services;
        lr.service = svcp;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_LIST_SERVICES_RESPONSE;
        resp.list_services_response = &lr;
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_BY_FILENAME:
        file = find_file(r, q->file_by_filename);
        if (file < 0) snprintf(msg, sizeof msg, "file '%s' not found", q->file_by_filename);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_SYMBOL:
        file = find_symbol(r, q->file_containing_symbol);
        if (file < 0) snprintf(msg, sizeof msg, "symbol '%s' not found", q->file_containing_symbol);
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_ALL_EXTENSION_NUMBERS_OF_TYPE:
        if (find_symbol(r, q->all_extension_numbers_of_type) >= 0) {
            xr.base_type_name = q->all_extension_numbers_of_type;
            resp.message_response_case =
                GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ALL_EXTENSION_NUMBERS_RESPONSE;
            resp.all_extension_numbers_response = &xr;
        } else {
            snprintf(msg, sizeof msg, "type '%s' not found", q->all_extension_numbers_of_type);
        }
        break;
    case GRPC__REFLECTION__V1__SERVER_REFLECTION_REQUEST__MESSAGE_REQUEST_FILE_CONTAINING_EXTENSION:
        snprintf(msg, sizeof msg, "no extensions are defined");
        break;
    default: snprintf(msg, sizeof msg, "empty or unknown reflection request"); break;
    }
    if (file >= 0) {
        seen = calloc(r->n_files, 1);
        blobs = calloc(r->n_files, sizeof *blobs);
        if (!seen || !blobs) goto done;
        mark(r, (size_t)file, seen);
        size_t n = 0;
        blobs[n].data = r->files[file].bytes; /* the asked-for file first */
        blobs[n++].len = r->files[file].len;
        for (size_t i = 0; i < r->n_files; i++) {
            if (!seen[i] || (long)i == file) continue;
            blobs[n].data = r->files[i].bytes;
            blobs[n++].len = r->files[i].len;
        }
        fr.n_file_descriptor_proto = n;
        fr.file_descriptor_proto = blobs;
        resp.message_response_case =
            GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_FILE_DESCRIPTOR_RESPONSE;
        resp.file_descriptor_response = &fr;
    } else if (resp.message_response_case ==
               GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE__NOT_SET) {
        er.error_code = 5; /* NOT_FOUND */
        er.error_message = msg;
        resp.message_response_case = GRPC__REFLECTION__V1__SERVER_REFLECTION_RESPONSE__MESSAGE_RESPONSE_ERROR_RESPONSE;
        resp.error_response = &er;
    }
    *out_len = grpc__reflection__v1__server_reflection_response__get_packed_size(&resp);
    *out = malloc(*out_len ? *out_len : 1);
    if (*out) {
        grpc__reflection__v1__server_reflection_response__pack(&resp, *out);
        rc = 0;
    }
done:
    free(svc);
    free(svcp);
    free(blobs);
    free(seen);
    grpc__reflection__v1__server_reflection_request__free_unpacked(q, NULL);
    return rc;
}

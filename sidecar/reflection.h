/* reflection: answers grpc.reflection.v1 / v1alpha ServerReflection requests from
 * the descriptor set generated at build time (proto/BUILD :descriptor_set).
 *
 * The v1 and v1alpha messages are the same on the wire, so one answerer serves
 * both services.  Read-only after reflection_new: safe from any thread. */
#ifndef DISTSUP_REFLECTION_H
#define DISTSUP_REFLECTION_H

#include <stddef.h>
#include <stdint.h>

struct reflection;

/* services: the fully-qualified names to list, NULL-terminated (copied). */
struct reflection *reflection_new(const uint8_t *descriptor_set, size_t len, const char *const *services, char *err,
                                  size_t errlen);
void reflection_free(struct reflection *r);

/* Answers one packed ServerReflectionRequest with a packed ServerReflectionResponse
 * (malloc'd into *out).  0, or -1 if the request is not a valid message. */
int reflection_answer(const struct reflection *r, const uint8_t *req, size_t len, uint8_t **out, size_t *out_len);

#endif

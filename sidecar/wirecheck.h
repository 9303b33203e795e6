/* wirecheck: the strings of a request as they came on the wire.  protobuf-c hands a
 * string field to C as a NUL-terminated copy, so "nul\0tail" would arrive as "nul"
 * and bytes that are not UTF-8 would be kept as they are; both are refused here,
 * before the message is unpacked.
 *
 * Pure: no I/O, no state.  Unknown fields are skipped; a message too malformed to
 * walk is left for protobuf-c's unpack to refuse. */
#ifndef DISTSUP_WIRECHECK_H
#define DISTSUP_WIRECHECK_H

#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

/* 0 when every string field of the message (in nested messages and map entries too)
 * is valid UTF-8 without a NUL byte; otherwise -1 with the field's path and the
 * reason in err (e.g. "spec.name has a NUL byte at byte 3"). */
int wirecheck_strings(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len, char *err, size_t errlen);

#endif

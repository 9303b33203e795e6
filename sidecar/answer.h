/* answer: how the supervisor core answers a request.  Every request carries one
 * answer_fn, called exactly once: code 0 (OK) with the reply message, any other
 * grpc_status_code with a message and reply NULL.  reply and message are valid only
 * during the call: serialize, don't keep. */
#ifndef DISTSUP_ANSWER_H
#define DISTSUP_ANSWER_H

#include <protobuf-c/protobuf-c.h>

typedef void (*answer_fn)(void *arg, int code, const char *message, const ProtobufCMessage *reply);

/* Internal, never a client's answer: the child is moving, or has just moved, or its
 * node is down and it is being re-homed; the request is to be asked again
 * (sidecar/requests.c holds it until its deadline).  Travels between nodes in
 * ForwardReply.code. */
#define ANSWER_MOVED 100

/* Answers with an error; the message is formatted (at most 1 KiB). */
void answer_fail(answer_fn done, void *arg, int code, const char *fmt, ...) __attribute__((format(printf, 4, 5)));

#endif

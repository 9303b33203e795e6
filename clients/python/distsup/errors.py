"""Exceptions raised by the distsup client: one class per gRPC status code.

Every error is a DistsupError with .code (a grpc.StatusCode) and .details (the
daemon's message).  The common ones also derive from the matching builtin, so
`except LookupError` catches NotFound and `except TimeoutError` DeadlineExceeded."""

import grpc

__all__ = [
    "DistsupError", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded",
    "NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted",
    "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented", "Internal",
    "Unavailable", "DataLoss", "Unauthenticated", "from_rpc_error", "error_for",
]


class DistsupError(Exception):
    """An RPC to distsupd failed.  code: grpc.StatusCode; details: the message."""

    code = grpc.StatusCode.UNKNOWN

    def __init__(self, details="", code=None):
        super().__init__(details)
        if code is not None:
            self.code = code
        self.details = details

    def __str__(self):
        return "%s: %s" % (self.code.name, self.details) if self.details else self.code.name

    def __reduce__(self):
        return (type(self), (self.details, self.code))


class Cancelled(DistsupError):
    code = grpc.StatusCode.CANCELLED


class Unknown(DistsupError):
    code = grpc.StatusCode.UNKNOWN


class InvalidArgument(DistsupError, ValueError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class DeadlineExceeded(DistsupError, TimeoutError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class NotFound(DistsupError, LookupError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(DistsupError):
    code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(DistsupError, PermissionError):
    code = grpc.StatusCode.PERMISSION_DENIED


class ResourceExhausted(DistsupError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class FailedPrecondition(DistsupError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Aborted(DistsupError):
    code = grpc.StatusCode.ABORTED


class OutOfRange(DistsupError):
    code = grpc.StatusCode.OUT_OF_RANGE


class Unimplemented(DistsupError, NotImplementedError):
    code = grpc.StatusCode.UNIMPLEMENTED


class Internal(DistsupError):
    code = grpc.StatusCode.INTERNAL


class Unavailable(DistsupError, ConnectionError):
    code = grpc.StatusCode.UNAVAILABLE


class DataLoss(DistsupError):
    code = grpc.StatusCode.DATA_LOSS


class Unauthenticated(DistsupError):
    code = grpc.StatusCode.UNAUTHENTICATED


_BY_CODE = {cls.code: cls for cls in (
    Cancelled, Unknown, InvalidArgument, DeadlineExceeded, NotFound, AlreadyExists,
    PermissionDenied, ResourceExhausted, FailedPrecondition, Aborted, OutOfRange,
    Unimplemented, Internal, Unavailable, DataLoss, Unauthenticated)}


def error_for(code, details=""):
    """The exception for a grpc.StatusCode (or its number) with a message."""
    if isinstance(code, int):
        code = next((c for c in grpc.StatusCode if c.value[0] == code), grpc.StatusCode.UNKNOWN)
    cls = _BY_CODE.get(code, DistsupError)
    return cls(details, code)


def from_rpc_error(err):
    """Maps a grpc.RpcError (a failed call) to its DistsupError subclass."""
    try:
        code, details = err.code(), err.details()
    except Exception:  # not a call object: keep what it says
        code, details = grpc.StatusCode.UNKNOWN, str(err)
    return error_for(code, details or "")

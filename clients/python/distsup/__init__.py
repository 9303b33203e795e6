"""distsup: Python client of distsupd, the distributed supervisor sidecar.

    from distsup import Supervisor
    sup = Supervisor("127.0.0.1:50051")
    sup.start_child("c1", ["/path/to/worker"])
    sup.call("c1", b"hello")

distsup.worker helps write the workers themselves (see its docstring)."""

from .client import (DEFAULT_ADDRESS, DEFAULT_TIMEOUT, EVENT_KINDS, Child, ChildSpec,
                     Counts, Event, Mine, Node, Supervisor, Terminated, Watch)
from .errors import (Aborted, AlreadyExists, Cancelled, DataLoss, DeadlineExceeded,
                     DistsupError, FailedPrecondition, Internal, InvalidArgument, NotFound,
                     OutOfRange, PermissionDenied, ResourceExhausted, Unauthenticated,
                     Unavailable, Unimplemented, Unknown)

__version__ = "0.1.0"

__all__ = [
    "Supervisor", "ChildSpec", "Child", "Terminated", "Counts", "Node", "Mine", "Event",
    "Watch", "DEFAULT_ADDRESS", "DEFAULT_TIMEOUT", "EVENT_KINDS",
    "DistsupError", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded",
    "NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted",
    "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented", "Internal",
    "Unavailable", "DataLoss", "Unauthenticated",
]

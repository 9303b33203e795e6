"""distsup: Python client of distsupd, the distributed supervisor sidecar.

    from distsup import Supervisor
    sup = Supervisor("127.0.0.1:50051")
    sup.start_child("c1", ["/path/to/worker"])
    sup.call("c1", b"hello")

distsup.worker helps write the workers themselves (see its docstring); distsup.host
runs hosted children inside your app (distsup.Host, and distsup.host.Child, also
exported here as HostedChild; see its docstring and docs/hosting.md)."""

from .client import (DEFAULT_ADDRESS, DEFAULT_TIMEOUT, EVENT_KINDS, Child, ChildSpec,
                     Counts, Event, Mine, Node, Supervisor, Terminated, Watch)
from .errors import (Aborted, AlreadyExists, Cancelled, DataLoss, DeadlineExceeded,
                     DistsupError, FailedPrecondition, Internal, InvalidArgument, NotFound,
                     OutOfRange, PermissionDenied, ResourceExhausted, Unauthenticated,
                     Unavailable, Unimplemented, Unknown)
from .host import Child as HostedChild
from .host import Host

__version__ = "0.1.0"

__all__ = [
    "Supervisor", "ChildSpec", "Child", "Terminated", "Counts", "Node", "Mine", "Event",
    "Watch", "DEFAULT_ADDRESS", "DEFAULT_TIMEOUT", "EVENT_KINDS", "Host", "HostedChild",
    "DistsupError", "Cancelled", "Unknown", "InvalidArgument", "DeadlineExceeded",
    "NotFound", "AlreadyExists", "PermissionDenied", "ResourceExhausted",
    "FailedPrecondition", "Aborted", "OutOfRange", "Unimplemented", "Internal",
    "Unavailable", "DataLoss", "Unauthenticated",
]

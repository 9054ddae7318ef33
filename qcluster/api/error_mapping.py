"""The one table from ``QclusterError`` classes to HTTP and gRPC status codes.

Every subclass of ``QclusterError`` has its own row (a unit test walks
``__subclasses__`` to check it), so adding an error class without deciding
how it looks on the wire fails the tests. ``LimitExceeded`` is a 400 rather
than a 429: crossing a documented bound is the caller's mistake and retrying
the same request cannot succeed; ``Overloaded`` is the retryable 429.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

from qcluster.errors import (
    AlreadyExists,
    BrokenPeer,
    DataCorruption,
    DeadlineExceeded,
    Forbidden,
    InvalidRequest,
    LimitExceeded,
    NoQuorum,
    NotFound,
    NotLeader,
    Overloaded,
    PreconditionFailed,
    QclusterError,
    ShardUnavailable,
    StorageFull,
    TooFewInSync,
    Unauthorized,
    Unavailable,
)

__all__ = ["ERROR_TABLE", "WireStatus", "http_headers_for", "wire_status_for"]


@dataclass(frozen=True, slots=True)
class WireStatus:
    http_status: int
    grpc_code: str  # the name of a grpc.StatusCode member


ERROR_TABLE: Final[dict[type[QclusterError], WireStatus]] = {
    QclusterError: WireStatus(500, "INTERNAL"),
    InvalidRequest: WireStatus(400, "INVALID_ARGUMENT"),
    LimitExceeded: WireStatus(400, "INVALID_ARGUMENT"),
    NotFound: WireStatus(404, "NOT_FOUND"),
    AlreadyExists: WireStatus(409, "ALREADY_EXISTS"),
    PreconditionFailed: WireStatus(409, "FAILED_PRECONDITION"),
    Unauthorized: WireStatus(401, "UNAUTHENTICATED"),
    Forbidden: WireStatus(403, "PERMISSION_DENIED"),
    Unavailable: WireStatus(503, "UNAVAILABLE"),
    NotLeader: WireStatus(503, "UNAVAILABLE"),
    NoQuorum: WireStatus(503, "UNAVAILABLE"),
    ShardUnavailable: WireStatus(503, "UNAVAILABLE"),
    TooFewInSync: WireStatus(503, "UNAVAILABLE"),
    # 507 Insufficient Storage (RFC 4918): retryable once space is freed.
    StorageFull: WireStatus(507, "RESOURCE_EXHAUSTED"),
    BrokenPeer: WireStatus(503, "UNAVAILABLE"),
    DeadlineExceeded: WireStatus(504, "DEADLINE_EXCEEDED"),
    Overloaded: WireStatus(429, "RESOURCE_EXHAUSTED"),
    DataCorruption: WireStatus(500, "DATA_LOSS"),
}

# What an exception that is not a QclusterError (a bug) looks like on the wire.
UNEXPECTED: Final = WireStatus(500, "INTERNAL")


def wire_status_for(error: BaseException) -> WireStatus:
    """The status of ``error``: its own row, else its nearest mapped ancestor's."""
    if not isinstance(error, QclusterError):
        return UNEXPECTED
    for cls in type(error).__mro__:
        status = ERROR_TABLE.get(cls)  # type: ignore[call-overload]
        if status is not None:
            return status
    raise AssertionError("QclusterError itself is in ERROR_TABLE")


def http_headers_for(error: BaseException) -> dict[str, str]:
    """Extra HTTP headers: Retry-After (whole seconds, rounded up) for Overloaded."""
    if isinstance(error, Overloaded):
        return {"Retry-After": str(max(1, math.ceil(error.retry_after_s)))}
    return {}

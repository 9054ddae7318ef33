"""The one error tree of qcluster.

Every error that crosses a layer boundary is a ``QclusterError``. Only
``qcluster.api.error_mapping`` knows how each class maps to HTTP and gRPC.

::

    QclusterError
    ├── InvalidRequest            the request is malformed or inconsistent
    ├── NotFound                  a named collection / point / alias does not exist
    ├── AlreadyExists             creating something that exists
    ├── LimitExceeded             a documented bound (qcluster.limits) was crossed
    ├── PreconditionFailed        a compare-and-set saw a different state, or the node's
    │                             mode forbids the call (cluster operations without cluster mode)
    ├── Unauthorized              no or bad credentials
    ├── Forbidden                 credentials lack the role
    ├── Unavailable (retryable)   the service cannot answer now
    │   ├── NotLeader             (carries leader_hint)
    │   ├── NoQuorum
    │   ├── ShardUnavailable
    │   └── StorageFull           the disk under a shard is full; nothing was written
    ├── DeadlineExceeded (retryable)
    ├── Overloaded (retryable)    (carries retry_after_s)
    ├── BrokenPeer (retryable)    a peer failed; detail in __cause__
    └── DataCorruption            stored bytes failed a checksum; the shard is out of service

Bugs are ``AssertionError``. Where one could leave stored state unknown (the
optimizer thread, applying a logged operation) it is fatal: the process exits
or the shard refuses writes until a restart replays its WAL. A bug confined
to one read or one rejected request is answered with a 500 and logged.
"""

from __future__ import annotations

__all__ = [
    "AlreadyExists",
    "BrokenPeer",
    "DataCorruption",
    "DeadlineExceeded",
    "Forbidden",
    "InvalidRequest",
    "LimitExceeded",
    "NoQuorum",
    "NotFound",
    "NotLeader",
    "Overloaded",
    "PreconditionFailed",
    "QclusterError",
    "ShardUnavailable",
    "StorageFull",
    "TooFewInSync",
    "Unauthorized",
    "Unavailable",
]


class QclusterError(Exception):
    """Root of every error qcluster raises on purpose."""

    code: str = "internal"
    retryable: bool = False

    def __init__(self, message: str) -> None:
        assert message, "every error carries a message"
        super().__init__(message)
        self.message = message


class InvalidRequest(QclusterError):
    code = "invalid_request"


class NotFound(QclusterError):
    code = "not_found"


class AlreadyExists(QclusterError):
    code = "already_exists"


class LimitExceeded(QclusterError):
    code = "limit_exceeded"


class PreconditionFailed(QclusterError):
    code = "precondition_failed"


class Unauthorized(QclusterError):
    code = "unauthorized"


class Forbidden(QclusterError):
    code = "forbidden"


class Unavailable(QclusterError):
    code = "unavailable"
    retryable = True


class NotLeader(Unavailable):
    code = "not_leader"

    def __init__(self, message: str, *, leader_hint: str | None) -> None:
        super().__init__(message)
        self.leader_hint = leader_hint


class NoQuorum(Unavailable):
    code = "no_quorum"


class ShardUnavailable(Unavailable):
    code = "shard_unavailable"


class TooFewInSync(ShardUnavailable):
    """A shard has fewer in-sync replicas than its write_consistency_factor:
    it refuses writes until recovery brings a replica back, which takes the
    missing node's return, so a router does not retry the write meanwhile."""

    code = "too_few_in_sync"


class StorageFull(Unavailable):
    """A write found no space on the device (ENOSPC / EDQUOT). It left nothing
    behind, so the same write succeeds once space is freed."""

    code = "storage_full"


class DeadlineExceeded(QclusterError):
    code = "deadline_exceeded"
    retryable = True


class Overloaded(QclusterError):
    code = "overloaded"
    retryable = True

    def __init__(self, message: str, *, retry_after_s: float) -> None:
        assert retry_after_s >= 0
        super().__init__(message)
        self.retry_after_s = retry_after_s


class BrokenPeer(QclusterError):
    code = "broken_peer"
    retryable = True


class DataCorruption(QclusterError):
    code = "data_corruption"

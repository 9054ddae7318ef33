"""What a primary and its replicas say to each other, independent of the wire."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Outcome", "Peers", "ReplicaAck", "ReplicaOp", "ShardKey", "ShardView", "Membership"]


@dataclass(frozen=True, slots=True, order=True)
class ShardKey:
    collection: str
    shard_id: int


@dataclass(frozen=True, slots=True)
class ReplicaOp:
    shard: ShardKey
    primary_term: int
    record: bytes  # the primary's WAL record: encode_operation(operation, seq_no=..., term=...)
    previous_term: int  # the term of the primary's record just before it (Raft's prevLogTerm)


class Outcome(enum.Enum):
    APPLIED = "applied"
    DUPLICATE = "duplicate"
    GAP = "gap"
    DIVERGED = "diverged"
    STALE_TERM = "stale_term"
    NOT_FOUND = "not_found"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class ReplicaAck:
    outcome: Outcome
    last_seq: int
    known_term: int
    message: str = ""
    last_term: int = 0  # the term of the replica's record at last_seq

    @property
    def holds_it(self) -> bool:
        return self.outcome in (Outcome.APPLIED, Outcome.DUPLICATE)


@dataclass(frozen=True, slots=True)
class ShardView:
    """What the cluster state says about one shard, as this node last saw it."""

    primary: int
    primary_term: int
    in_sync: frozenset[int]
    # The fewest in-sync replicas a write may be acknowledged on.
    write_consistency_factor: int = 1


class Membership(Protocol):
    """The cluster state, as replication needs it (implemented over Raft)."""

    def view(self, shard: ShardKey) -> ShardView | None: ...

    async def fence(self, shard: ShardKey, node_id: int, *, primary_term: int) -> bool:
        """Remove ``node_id`` from the shard's in-sync set through Raft; True
        once it is out (or already was), False if the cluster refused (the
        term is stale, or it is the primary). Raises when the outcome is
        unknown (no quorum). The set may end below write_consistency_factor:
        the write is then not acknowledged."""
        ...


class Peers(Protocol):
    """Calls to other nodes (implemented over internal gRPC)."""

    async def replicate(self, node_id: int, op: ReplicaOp) -> ReplicaAck:
        """Raises ``qcluster.errors.Unavailable`` (or a subclass) when the node cannot be reached in time."""
        ...

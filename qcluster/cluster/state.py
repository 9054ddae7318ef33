"""ClusterState: the metadata Raft replicates (nodes, collections, shards, replicas).

Every value here is immutable: frozen, slotted dataclasses, tuples, and dicts
that are never mutated after construction (typed ``Mapping`` so that mypy
refuses a mutation). ``transitions.apply`` builds a new state for every
accepted command, so a reader holding a state never sees it change and the
consensus layer can swap states atomically.

Replication follows PacificA (see ``docs/architecture.md``): every shard has a
primary, a primary term and an in-sync set. A write is acknowledged only when
every in-sync replica holds it, so any in-sync replica can become primary
without losing an acknowledged write.

The life of a replica and the command that moves it along each edge
(edges in parentheses are ``SetReplicaState``)::

    AddReplica,                                      CreateCollection,
    StartShardMove                                   CreateShardKey
          │                                                │
          ▼                                                ▼
    INITIALIZING ──(transfer starts)──► PARTIAL ──AddToInSync──► ACTIVE
          │                              │   ▲                     │
          │                       (fails)│   │(recovery starts)    │ RemoveFromInSync
          │                              ▼   │                     │
          └────────────(fails)────────► DEAD ◄─────────────────────┘

- INITIALIZING: placed on a node that has not yet created its (empty) local
  copy; the primary sends it nothing.
- PARTIAL: receiving a transfer from the primary; the primary also forwards
  every new write to it, but does not wait for it, and it serves no reads.
- ACTIVE: holds every acknowledged write. **The in-sync set is exactly the
  ACTIVE replicas**; it is derived, not stored, so the two can never disagree.
  An ACTIVE replica on a dead node stays in sync until a primary fences it:
  it still holds every write acknowledged so far.
- DEAD: missed a write or failed; must recover (DEAD -> PARTIAL) before it
  counts again.

A new shard's replicas are all ACTIVE at once: an empty shard is trivially in
sync, and a node that failed to create it fails its first write and is fenced
like any other. ACTIVE is entered only through ``AddToInSync`` and left only
through ``RemoveFromInSync`` (or by dropping the replica), because those are
the edges that change the in-sync set and carry its guards: the primary always
stays in sync. ``DropReplica``, ``FinishShardMove`` and ``AbortShardMove``
remove a replica in any state, and never below ``write_consistency_factor``
in sync (an operator's action must not stop writes).

Consequences the layers above rely on:

- Fencing a failed replica (``RemoveFromInSync``) may leave fewer than
  ``write_consistency_factor`` in sync: the shard then refuses writes (the
  primary checks before it logs anything, and a write that fenced its way
  below the factor is not acknowledged) until recovery brings a replica back
  with ``AddToInSync``. Every write acknowledged before the fence is on every
  replica that stays in sync.
- ``PromotePrimary`` takes only an ACTIVE replica on a live node. It leaves the
  old primary in the in-sync set (it holds every acknowledged write too); the
  new primary fences it if it cannot reach it.
- ``MarkNodeDead`` only records liveness. Replicas change state only by their
  own commands, so every change to a shard is compare-and-set on its term.

A primary term is the state version of the command that installed that
primary. Terms therefore only grow, and a term is never reused — not even by
a collection deleted and created again under the same name — so a message
from a deposed primary of an old incarnation never carries a current term.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from qcluster.errors import AlreadyExists, InvalidRequest, NotFound, PreconditionFailed, QclusterError

__all__ = [
    "DEDUP_CAPACITY",
    "ClusterState",
    "CollectionState",
    "Liveness",
    "NodeId",
    "NodeInfo",
    "Replica",
    "ReplicaState",
    "Result",
    "ResultCode",
    "ShardId",
    "ShardKey",
    "ShardMove",
    "ShardState",
    "ShardingMethod",
]

NodeId: TypeAlias = int  # Qdrant's peer id: an unsigned 64-bit integer, the node's identity
ShardId: TypeAlias = int
ShardKey: TypeAlias = str | int  # a tenant key of a collection with custom sharding

# Request ids remembered for deduplication. A command retried after this many
# newer commands were applied is applied again, so a client must not retry
# longer than that many commits: thousands of commits take seconds, and the
# consensus layer's retries last less.
DEDUP_CAPACITY = 4096


class Liveness(enum.StrEnum):
    ALIVE = "alive"
    DEAD = "dead"


class ReplicaState(enum.StrEnum):
    """See the module docstring for the transition diagram."""

    INITIALIZING = "initializing"
    PARTIAL = "partial"
    ACTIVE = "active"
    DEAD = "dead"


class ShardingMethod(enum.StrEnum):
    # Points go to shards by hash slot.
    AUTO = "auto"
    # Points go to the shards of their shard key, and by hash slot among those.
    CUSTOM = "custom"


class ResultCode(enum.StrEnum):
    OK = "ok"
    INVALID = "invalid"  # malformed whatever the state (a bad factor, a bad placement)
    NOT_FOUND = "not_found"  # names a node / collection / shard / replica that does not exist
    ALREADY_EXISTS = "already_exists"
    STALE = "stale"  # a compare-and-set expectation does not hold
    ILLEGAL_TRANSITION = "illegal_transition"  # not an edge of the replica diagram
    UNSAFE = "unsafe"  # would break a replication guarantee
    CONFLICT = "conflict"  # another operation (a shard move) is in progress
    UNCHANGED = "unchanged"  # asks for what already holds; nothing to apply


@dataclass(frozen=True, slots=True)
class Result:
    """The outcome of one command.

    ``version`` is the state version after the command: a client that waits
    until its node's state reaches it reads its own change.
    """

    code: ResultCode
    message: str
    version: int

    @property
    def is_accepted(self) -> bool:
        return self.code is ResultCode.OK

    def to_error(self) -> QclusterError:
        """The error to raise to a client for a rejected command."""
        match self.code:
            case ResultCode.OK:
                raise AssertionError("an accepted command is not an error")
            case ResultCode.INVALID:
                return InvalidRequest(self.message)
            case ResultCode.NOT_FOUND:
                return NotFound(self.message)
            case ResultCode.ALREADY_EXISTS:
                return AlreadyExists(self.message)
            case (
                ResultCode.STALE
                | ResultCode.ILLEGAL_TRANSITION
                | ResultCode.UNSAFE
                | ResultCode.CONFLICT
                | ResultCode.UNCHANGED
            ):
                return PreconditionFailed(self.message)


@dataclass(frozen=True, slots=True)
class NodeInfo:
    node_id: NodeId
    p2p_address: str
    http_address: str
    grpc_address: str
    liveness: Liveness
    # When the liveness last changed: the proposer's wall clock (the state
    # machine has no clock of its own) and the state version.
    liveness_since_ms: int
    liveness_since_version: int


@dataclass(frozen=True, slots=True)
class Replica:
    node_id: NodeId
    state: ReplicaState


@dataclass(frozen=True, slots=True)
class ShardMove:
    """A replica of ``source`` is being replaced by one on ``target``."""

    source: NodeId
    target: NodeId


@dataclass(frozen=True, slots=True)
class ShardState:
    shard_id: ShardId
    shard_key: ShardKey | None
    # The hash slots (qcluster.sharding) whose points this shard holds. Every
    # shard has the even assignment ``range(i, SLOT_COUNT, shard_number)`` for
    # now: a range is compact (a tuple of 4096 ints would cost ~150 KB per
    # collection). Resharding, which moves slots, will need a general set.
    slots: range
    replicas: tuple[Replica, ...]  # sorted by node id, at most one per node
    primary: NodeId
    primary_term: int
    move: ShardMove | None = None

    @property
    def in_sync(self) -> frozenset[NodeId]:
        return frozenset(replica.node_id for replica in self.replicas if replica.state is ReplicaState.ACTIVE)

    def replica(self, node_id: NodeId) -> Replica | None:
        for replica in self.replicas:
            if replica.node_id == node_id:
                return replica
        return None


@dataclass(frozen=True, slots=True)
class CollectionState:
    name: str
    # The collection's configuration, encoded by the storage layer; opaque here.
    config: bytes
    # Shards per shard key (custom sharding) or in all (auto sharding).
    shard_number: int
    replication_factor: int
    # The in-sync set never shrinks below this (Kafka's min.insync.replicas).
    write_consistency_factor: int
    sharding_method: ShardingMethod
    shard_keys: tuple[ShardKey, ...]
    shards: Mapping[ShardId, ShardState]
    # Shard ids are never reused, so a node never mistakes a deleted shard key's
    # leftover local shard for a new one.
    next_shard_id: int


@dataclass(frozen=True, slots=True)
class ClusterState:
    # Incremented by every accepted command, and only by those.
    version: int = 0
    nodes: Mapping[NodeId, NodeInfo] = field(default_factory=dict)
    collections: Mapping[str, CollectionState] = field(default_factory=dict)
    # Alias -> collection name. An alias is never a collection's name, and
    # deleting a collection deletes its aliases.
    aliases: Mapping[str, str] = field(default_factory=dict)
    # Request id -> result, oldest first, at most DEDUP_CAPACITY entries.
    recent_results: Mapping[str, Result] = field(default_factory=dict)

    def shard(self, collection: str, shard_id: ShardId) -> ShardState | None:
        state = self.collections.get(collection)
        return None if state is None else state.shards.get(shard_id)

    def replica_counts(self) -> dict[NodeId, int]:
        """Replicas (in any state) per node, over every collection; 0 for a node without any."""
        counts = dict.fromkeys(self.nodes, 0)
        for collection in self.collections.values():
            for shard in collection.shards.values():
                for replica in shard.replicas:
                    counts[replica.node_id] += 1
        return counts

"""The commands on one shard's replicas: their states, the in-sync set, the
primary and shard moves. Called by ``transitions.apply``; the diagram and the
guards are described in ``state.py``.

Check order in every command: the shard exists, its primary term matches
``expected_primary_term``, the replica exists, its state matches
``expected_state``, then what the command itself requires.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TypeAlias, assert_never

from qcluster.cluster.commands import (
    AbortShardMove,
    AddReplica,
    AddToInSync,
    DropReplica,
    FinishShardMove,
    PromotePrimary,
    RemoveFromInSync,
    SetReplicaState,
    StartShardMove,
)
from qcluster.cluster.state import (
    ClusterState,
    CollectionState,
    Liveness,
    NodeId,
    Replica,
    ReplicaState,
    ResultCode,
    ShardMove,
    ShardState,
)

__all__ = ["LIFECYCLE_EDGES", "Rejection", "ShardCommand", "apply_shard_command"]

ShardCommand: TypeAlias = (
    SetReplicaState
    | AddToInSync
    | RemoveFromInSync
    | PromotePrimary
    | AddReplica
    | DropReplica
    | StartShardMove
    | FinishShardMove
    | AbortShardMove
)

# SetReplicaState's edges: those that leave the in-sync set (the ACTIVE replicas) alone.
LIFECYCLE_EDGES: frozenset[tuple[ReplicaState, ReplicaState]] = frozenset(
    {
        (ReplicaState.INITIALIZING, ReplicaState.PARTIAL),
        (ReplicaState.INITIALIZING, ReplicaState.DEAD),
        (ReplicaState.PARTIAL, ReplicaState.DEAD),
        (ReplicaState.DEAD, ReplicaState.PARTIAL),
    }
)


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why a command was not applied; ``apply`` turns it into a Result."""

    code: ResultCode
    message: str

    def __post_init__(self) -> None:
        assert self.code is not ResultCode.OK
        assert self.message


def apply_shard_command(state: ClusterState, command: ShardCommand, *, version: int) -> ClusterState | Rejection:
    """``version`` is the version the state gets if the command is accepted."""
    collection = state.collections.get(command.collection)
    if collection is None:
        return Rejection(ResultCode.NOT_FOUND, f"collection {command.collection!r} does not exist")
    shard = collection.shards.get(command.shard_id)
    if shard is None:
        return Rejection(ResultCode.NOT_FOUND, f"shard {command.shard_id} of {command.collection!r} does not exist")
    if command.expected_primary_term is not None and command.expected_primary_term != shard.primary_term:
        return Rejection(
            ResultCode.STALE,
            f"shard {shard.shard_id}: primary term is {shard.primary_term}, not {command.expected_primary_term}",
        )
    outcome = _apply_to_shard(state, collection, shard, command, version=version)
    if isinstance(outcome, Rejection):
        return outcome
    assert outcome.primary_term >= shard.primary_term, "a primary term never goes back"
    assert outcome.primary in outcome.in_sync, "the primary is always in sync"
    shards = {**collection.shards, shard.shard_id: outcome}
    return replace(state, collections={**state.collections, collection.name: replace(collection, shards=shards)})


def _apply_to_shard(
    state: ClusterState, collection: CollectionState, shard: ShardState, command: ShardCommand, *, version: int
) -> ShardState | Rejection:
    match command:
        case SetReplicaState():
            return _set_replica_state(shard, command)
        case AddToInSync():
            return _add_to_in_sync(shard, command)
        case RemoveFromInSync():
            return _remove_from_in_sync(collection, shard, command)
        case PromotePrimary():
            return _promote_primary(state, shard, command, version=version)
        case AddReplica():
            return _add_replica(state, shard, node_id=command.node_id)
        case DropReplica():
            return _drop_replica(collection, shard, command)
        case StartShardMove():
            return _start_move(state, shard, command)
        case FinishShardMove():
            return _finish_move(collection, shard, command, version=version)
        case AbortShardMove():
            return _abort_move(collection, shard, command)
        case _:
            assert_never(command)


def _find_replica(shard: ShardState, node_id: NodeId, expected_state: ReplicaState | None) -> Replica | Rejection:
    replica = shard.replica(node_id)
    if replica is None:
        return Rejection(ResultCode.NOT_FOUND, f"shard {shard.shard_id} has no replica on node {node_id}")
    if expected_state is not None and replica.state is not expected_state:
        return Rejection(
            ResultCode.STALE,
            f"shard {shard.shard_id} on node {node_id} is {replica.state.value}, not {expected_state.value}",
        )
    return replica


def _with_state(shard: ShardState, node_id: NodeId, state: ReplicaState) -> ShardState:
    replicas = tuple(Replica(r.node_id, state) if r.node_id == node_id else r for r in shard.replicas)
    return replace(shard, replicas=replicas)


def _with_added(shard: ShardState, node_id: NodeId) -> ShardState:
    assert shard.replica(node_id) is None, "one replica per node"
    replicas = sorted((*shard.replicas, Replica(node_id, ReplicaState.INITIALIZING)), key=lambda r: r.node_id)
    return replace(shard, replicas=tuple(replicas))


def _without(shard: ShardState, node_id: NodeId) -> ShardState:
    assert node_id != shard.primary, "the primary is never dropped"
    return replace(shard, replicas=tuple(r for r in shard.replicas if r.node_id != node_id))


def _check_leaves_in_sync(collection: CollectionState, shard: ShardState, replica: Replica) -> Rejection | None:
    """The guards on taking a replica out of the in-sync set (or out of the shard)."""
    if replica.node_id == shard.primary:
        return Rejection(
            ResultCode.UNSAFE,
            f"node {replica.node_id} is the primary of shard {shard.shard_id}: promote another replica first",
        )
    remaining = len(shard.in_sync - {replica.node_id})
    if replica.state is ReplicaState.ACTIVE and remaining < collection.write_consistency_factor:
        return Rejection(
            ResultCode.UNSAFE,
            f"shard {shard.shard_id} would keep {remaining} in-sync replicas, "
            f"below write_consistency_factor {collection.write_consistency_factor}",
        )
    return None


def _set_replica_state(shard: ShardState, command: SetReplicaState) -> ShardState | Rejection:
    replica = _find_replica(shard, command.node_id, command.expected_state)
    if isinstance(replica, Rejection):
        return replica
    if replica.state is command.state:
        return Rejection(
            ResultCode.UNCHANGED, f"shard {shard.shard_id} on node {command.node_id} is already {command.state.value}"
        )
    if (replica.state, command.state) not in LIFECYCLE_EDGES:
        hint = ""
        if ReplicaState.ACTIVE in {replica.state, command.state}:
            hint = " (the in-sync set changes through AddToInSync and RemoveFromInSync)"
        return Rejection(
            ResultCode.ILLEGAL_TRANSITION,
            f"a replica cannot go from {replica.state.value} to {command.state.value}{hint}",
        )
    return _with_state(shard, command.node_id, command.state)


def _add_to_in_sync(shard: ShardState, command: AddToInSync) -> ShardState | Rejection:
    replica = _find_replica(shard, command.node_id, None)
    if isinstance(replica, Rejection):
        return replica
    if replica.state is ReplicaState.ACTIVE:
        return Rejection(ResultCode.UNCHANGED, f"shard {shard.shard_id} on node {command.node_id} is already in sync")
    if replica.state is not ReplicaState.PARTIAL:
        return Rejection(
            ResultCode.ILLEGAL_TRANSITION,
            f"only a partial replica can join the in-sync set, not a {replica.state.value} one",
        )
    return _with_state(shard, command.node_id, ReplicaState.ACTIVE)


def _remove_from_in_sync(
    collection: CollectionState, shard: ShardState, command: RemoveFromInSync
) -> ShardState | Rejection:
    replica = _find_replica(shard, command.node_id, None)
    if isinstance(replica, Rejection):
        return replica
    if replica.state is not ReplicaState.ACTIVE:
        return Rejection(ResultCode.UNCHANGED, f"shard {shard.shard_id} on node {command.node_id} is not in sync")
    if replica.node_id == shard.primary:
        return Rejection(
            ResultCode.UNSAFE,
            f"node {replica.node_id} is the primary of shard {shard.shard_id}: promote another replica first",
        )
    # Fencing may leave fewer than write_consistency_factor in sync: the
    # shard then refuses writes until recovery brings a replica back (Kafka's
    # min.insync.replicas). Refusing the fence instead would keep a replica
    # that missed writes in the set, and a shard whose in-sync replicas
    # differ can never heal.
    return _with_state(shard, command.node_id, ReplicaState.DEAD)


def _promote_primary(
    state: ClusterState, shard: ShardState, command: PromotePrimary, *, version: int
) -> ShardState | Rejection:
    replica = _find_replica(shard, command.node_id, None)
    if isinstance(replica, Rejection):
        return replica
    if command.node_id == shard.primary:
        return Rejection(
            ResultCode.UNCHANGED, f"node {command.node_id} is already the primary of shard {shard.shard_id}"
        )
    if replica.state is not ReplicaState.ACTIVE:
        return Rejection(
            ResultCode.UNSAFE,
            f"shard {shard.shard_id} on node {command.node_id} is not in sync: it may lack acknowledged writes",
        )
    if state.nodes[command.node_id].liveness is Liveness.DEAD:
        return Rejection(ResultCode.UNSAFE, f"node {command.node_id} is dead")
    return replace(shard, primary=command.node_id, primary_term=version)


def _add_replica(state: ClusterState, shard: ShardState, *, node_id: NodeId) -> ShardState | Rejection:
    node = state.nodes.get(node_id)
    if node is None:
        return Rejection(ResultCode.NOT_FOUND, f"node {node_id} is not a member")
    if node.liveness is Liveness.DEAD:
        return Rejection(ResultCode.UNSAFE, f"node {node_id} is dead")
    if shard.replica(node_id) is not None:
        return Rejection(ResultCode.ALREADY_EXISTS, f"node {node_id} already holds a replica of shard {shard.shard_id}")
    return _with_added(shard, node_id)


def _drop_replica(collection: CollectionState, shard: ShardState, command: DropReplica) -> ShardState | Rejection:
    replica = _find_replica(shard, command.node_id, command.expected_state)
    if isinstance(replica, Rejection):
        return replica
    if shard.move is not None and command.node_id in {shard.move.source, shard.move.target}:
        return Rejection(
            ResultCode.CONFLICT,
            f"shard {shard.shard_id} on node {command.node_id} is part of a move: finish or abort it",
        )
    unsafe = _check_leaves_in_sync(collection, shard, replica)
    if unsafe is not None:
        return unsafe
    return _without(shard, command.node_id)


def _start_move(state: ClusterState, shard: ShardState, command: StartShardMove) -> ShardState | Rejection:
    if shard.move is not None:
        return Rejection(
            ResultCode.CONFLICT,
            f"shard {shard.shard_id} is already moving from node {shard.move.source} to {shard.move.target}",
        )
    if command.source == command.target:
        return Rejection(ResultCode.INVALID, "a move needs two different nodes")
    source = _find_replica(shard, command.source, None)
    if isinstance(source, Rejection):
        return source
    added = _add_replica(state, shard, node_id=command.target)
    if isinstance(added, Rejection):
        return added
    return replace(added, move=ShardMove(source=command.source, target=command.target))


def _find_move(shard: ShardState, command: FinishShardMove | AbortShardMove) -> ShardMove | Rejection:
    if shard.move is None:
        return Rejection(ResultCode.NOT_FOUND, f"shard {shard.shard_id} is not moving")
    if (shard.move.source, shard.move.target) != (command.source, command.target):
        return Rejection(
            ResultCode.STALE,
            f"shard {shard.shard_id} is moving from node {shard.move.source} to {shard.move.target}, "
            f"not from {command.source} to {command.target}",
        )
    return shard.move


def _finish_move(
    collection: CollectionState, shard: ShardState, command: FinishShardMove, *, version: int
) -> ShardState | Rejection:
    move = _find_move(shard, command)
    if isinstance(move, Rejection):
        return move
    target = shard.replica(move.target)
    source = shard.replica(move.source)
    assert target is not None and source is not None, "the replicas of a move cannot be dropped"
    if target.state is not ReplicaState.ACTIVE:
        return Rejection(ResultCode.UNSAFE, f"shard {shard.shard_id} on node {move.target} is not in sync yet")
    if move.source == shard.primary:
        # Hand the primary over first: the target is in sync, so it holds every acknowledged write.
        shard = replace(shard, primary=move.target, primary_term=version)
    unsafe = _check_leaves_in_sync(collection, shard, source)
    if unsafe is not None:
        return unsafe
    return replace(_without(shard, move.source), move=None)


def _abort_move(collection: CollectionState, shard: ShardState, command: AbortShardMove) -> ShardState | Rejection:
    move = _find_move(shard, command)
    if isinstance(move, Rejection):
        return move
    target = shard.replica(move.target)
    assert target is not None, "the replicas of a move cannot be dropped"
    unsafe = _check_leaves_in_sync(collection, shard, target)
    if unsafe is not None:
        return unsafe
    return replace(_without(shard, move.target), move=None)

"""apply(state, command) -> (new state, result): the cluster's state machine.

Every node applies the same committed commands in the same order, so apply is
deterministic: it reads nothing but its arguments (times come inside the
commands). It never raises for any command, well-formed or not — a replicated
method that raises wedges pysyncobj — and a rejected command leaves the state
as it was apart from the deduplication memory, with the reason in the result.

Order of checks: a request id seen before returns its first result; then
``expected_version``; then the command's own checks (existence, then its
compare-and-set expectations, then legality and safety). The replica
commands live in ``_replica_transitions.py``; the replica diagram and the
in-sync guards are described in ``state.py``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import assert_never

from qcluster.cluster import _replica_transitions as replicas
from qcluster.cluster._replica_transitions import Rejection
from qcluster.cluster.commands import (
    AbortShardMove,
    AddNode,
    AddReplica,
    AddToInSync,
    Command,
    CreateCollection,
    CreateShardKey,
    DeleteCollection,
    DeleteShardKey,
    DropReplica,
    FinishShardMove,
    MarkNodeAlive,
    MarkNodeDead,
    Placement,
    PromotePrimary,
    RemoveFromInSync,
    RemoveNode,
    SetAliases,
    SetReplicaState,
    StartShardMove,
    UpdateCollectionConfig,
    decode,
)
from qcluster.cluster.state import (
    DEDUP_CAPACITY,
    ClusterState,
    CollectionState,
    Liveness,
    NodeId,
    NodeInfo,
    Replica,
    ReplicaState,
    Result,
    ResultCode,
    ShardId,
    ShardingMethod,
    ShardKey,
    ShardState,
)
from qcluster.errors import InvalidRequest
from qcluster.sharding import SLOT_COUNT

__all__ = ["apply", "apply_encoded"]


def apply(state: ClusterState, command: Command) -> tuple[ClusterState, Result]:
    """Apply one command; an accepted one increments the version by exactly one."""
    if not command.request_id:
        return state, Result(ResultCode.INVALID, "a command needs a request id", state.version)
    first = state.recent_results.get(command.request_id)
    if first is not None:
        return state, first
    version = state.version + 1
    outcome: ClusterState | Rejection
    if command.expected_version is not None and command.expected_version != state.version:
        outcome = Rejection(
            ResultCode.STALE, f"the cluster state is at version {state.version}, not {command.expected_version}"
        )
    else:
        outcome = _dispatch(state, command, version=version)
    if isinstance(outcome, Rejection):
        result = Result(outcome.code, outcome.message, state.version)
        applied = state
    else:
        result = Result(ResultCode.OK, "applied", version)
        applied = replace(outcome, version=version)
    assert applied.version in {state.version, state.version + 1}
    return _remember(applied, request_id=command.request_id, result=result), result


def apply_encoded(state: ClusterState, data: bytes) -> tuple[ClusterState, Result]:
    """Decode and apply: what the consensus layer's replicated ``apply(bytes)``
    runs. Bytes that are not a command are rejected, never executed."""
    try:
        command = decode(data)
    except InvalidRequest as exc:
        return state, Result(ResultCode.INVALID, exc.message, state.version)
    return apply(state, command)


def _remember(state: ClusterState, *, request_id: str, result: Result) -> ClusterState:
    results = dict(state.recent_results)
    results[request_id] = result
    if len(results) > DEDUP_CAPACITY:
        del results[next(iter(results))]  # the oldest: dicts keep insertion order
    assert len(results) <= DEDUP_CAPACITY
    return replace(state, recent_results=results)


def _dispatch(state: ClusterState, command: Command, *, version: int) -> ClusterState | Rejection:
    match command:
        case AddNode():
            return _add_node(state, command, version=version)
        case RemoveNode():
            return _remove_node(state, command)
        case MarkNodeDead() | MarkNodeAlive():
            return _mark_node(state, command, version=version)
        case CreateCollection():
            return _create_collection(state, command, version=version)
        case DeleteCollection():
            return _delete_collection(state, command)
        case UpdateCollectionConfig():
            return _update_collection_config(state, command)
        case SetAliases():
            return _set_aliases(state, command)
        case CreateShardKey():
            return _create_shard_key(state, command, version=version)
        case DeleteShardKey():
            return _delete_shard_key(state, command)
        case (
            SetReplicaState()
            | AddToInSync()
            | RemoveFromInSync()
            | PromotePrimary()
            | AddReplica()
            | DropReplica()
            | StartShardMove()
            | FinishShardMove()
            | AbortShardMove()
        ):
            return replicas.apply_shard_command(state, command, version=version)
        case _:
            assert_never(command)


# --- nodes ---


def _add_node(state: ClusterState, command: AddNode, *, version: int) -> ClusterState | Rejection:
    if command.node_id in state.nodes:
        return Rejection(ResultCode.ALREADY_EXISTS, f"node {command.node_id} is already a member")
    if not (command.p2p_address and command.http_address and command.grpc_address):
        return Rejection(ResultCode.INVALID, f"node {command.node_id}: every address is required")
    for node in state.nodes.values():
        if node.p2p_address == command.p2p_address:
            return Rejection(
                ResultCode.ALREADY_EXISTS, f"p2p address {command.p2p_address} belongs to node {node.node_id}"
            )
    node = NodeInfo(
        node_id=command.node_id,
        p2p_address=command.p2p_address,
        http_address=command.http_address,
        grpc_address=command.grpc_address,
        liveness=Liveness.ALIVE,
        liveness_since_ms=command.at_ms,
        liveness_since_version=version,
    )
    return replace(state, nodes={**state.nodes, node.node_id: node})


def _remove_node(state: ClusterState, command: RemoveNode) -> ClusterState | Rejection:
    if command.node_id not in state.nodes:
        return Rejection(ResultCode.NOT_FOUND, f"node {command.node_id} is not a member")
    held = state.replica_counts()[command.node_id]
    if held:
        return Rejection(ResultCode.UNSAFE, f"node {command.node_id} holds {held} replicas: move or drop them first")
    nodes = {node_id: node for node_id, node in state.nodes.items() if node_id != command.node_id}
    return replace(state, nodes=nodes)


def _mark_node(
    state: ClusterState, command: MarkNodeDead | MarkNodeAlive, *, version: int
) -> ClusterState | Rejection:
    node = state.nodes.get(command.node_id)
    if node is None:
        return Rejection(ResultCode.NOT_FOUND, f"node {command.node_id} is not a member")
    liveness = Liveness.DEAD if isinstance(command, MarkNodeDead) else Liveness.ALIVE
    if node.liveness is liveness:
        return Rejection(ResultCode.UNCHANGED, f"node {command.node_id} is already {liveness.value}")
    marked = replace(node, liveness=liveness, liveness_since_ms=command.at_ms, liveness_since_version=version)
    return replace(state, nodes={**state.nodes, node.node_id: marked})


# --- collections and shard keys ---


def _create_collection(state: ClusterState, command: CreateCollection, *, version: int) -> ClusterState | Rejection:
    if not command.name:
        return Rejection(ResultCode.INVALID, "a collection needs a name")
    if command.name in state.collections:
        return Rejection(ResultCode.ALREADY_EXISTS, f"collection {command.name!r} already exists")
    if command.name in state.aliases:
        return Rejection(ResultCode.ALREADY_EXISTS, f"{command.name!r} is an alias of {state.aliases[command.name]!r}")
    invalid = _check_factors(command)
    if invalid is not None:
        return invalid
    keys: tuple[ShardKey | None, ...] = command.shard_keys
    if command.sharding_method is ShardingMethod.AUTO:
        keys = (None,)
    shards: dict[ShardId, ShardState] = {}
    placements = _split_placement(command.placement, parts=len(keys))
    if placements is None:
        return Rejection(
            ResultCode.INVALID,
            f"the placement has {len(command.placement)} shards, not {command.shard_number} × {len(keys)} keys",
        )
    for key, placement in zip(keys, placements, strict=True):
        created = _new_shards(
            state,
            placement,
            key=key,
            first_shard_id=len(shards),
            shard_number=command.shard_number,
            replication_factor=command.replication_factor,
            version=version,
        )
        if isinstance(created, Rejection):
            return created
        shards.update(created)
    collection = CollectionState(
        name=command.name,
        config=command.config,
        shard_number=command.shard_number,
        replication_factor=command.replication_factor,
        write_consistency_factor=command.write_consistency_factor,
        sharding_method=command.sharding_method,
        shard_keys=command.shard_keys,
        shards=shards,
        next_shard_id=len(shards),
    )
    return replace(state, collections={**state.collections, command.name: collection})


def _check_factors(command: CreateCollection) -> Rejection | None:
    if not 1 <= command.shard_number <= SLOT_COUNT:
        return Rejection(ResultCode.INVALID, f"shard_number must be between 1 and {SLOT_COUNT}")
    invalid = _check_replication(command.replication_factor, command.write_consistency_factor)
    if invalid is not None:
        return invalid
    if command.sharding_method is ShardingMethod.AUTO and command.shard_keys:
        return Rejection(ResultCode.INVALID, "shard keys need sharding_method custom")
    if len(set(command.shard_keys)) != len(command.shard_keys):
        return Rejection(ResultCode.INVALID, "shard keys must be distinct")
    return None


def _check_replication(replication_factor: int, write_consistency_factor: int) -> Rejection | None:
    if replication_factor < 1:
        return Rejection(ResultCode.INVALID, "replication_factor must be at least 1")
    if not 1 <= write_consistency_factor <= replication_factor:
        return Rejection(ResultCode.INVALID, "write_consistency_factor must be between 1 and replication_factor")
    return None


def _split_placement(placement: Placement, *, parts: int) -> list[Placement] | None:
    """The placement cut into ``parts`` equal runs (one per shard key), or None if it cannot be."""
    if parts == 0:
        return [] if not placement else None
    if not placement or len(placement) % parts:
        return None
    size = len(placement) // parts
    return [placement[index * size : (index + 1) * size] for index in range(parts)]


def _new_shards(
    state: ClusterState,
    placement: Placement,
    *,
    key: ShardKey | None,
    first_shard_id: ShardId,
    shard_number: int,
    replication_factor: int,
    version: int,
) -> dict[ShardId, ShardState] | Rejection:
    """The shards of one shard key (or of the whole collection), all replicas ACTIVE:
    an empty shard is trivially in sync. Shard ``i`` of the key owns the hash
    slots ``s`` with ``s % shard_number == i``, as ``sharding.shard_of`` assumes."""
    if len(placement) != shard_number:
        return Rejection(ResultCode.INVALID, f"the placement has {len(placement)} shards, not {shard_number}")
    shards: dict[ShardId, ShardState] = {}
    for index, nodes in enumerate(placement):
        invalid = _check_replica_nodes(state, nodes, replication_factor=replication_factor)
        if invalid is not None:
            return invalid
        shard_id = first_shard_id + index
        shards[shard_id] = ShardState(
            shard_id=shard_id,
            shard_key=key,
            slots=range(index, SLOT_COUNT, shard_number),
            replicas=tuple(Replica(node_id, ReplicaState.ACTIVE) for node_id in sorted(nodes)),
            primary=nodes[0],
            primary_term=version,
        )
    return shards


def _check_replica_nodes(
    state: ClusterState, nodes: tuple[NodeId, ...], *, replication_factor: int
) -> Rejection | None:
    if len(nodes) != replication_factor:
        return Rejection(ResultCode.INVALID, f"a shard is placed on {len(nodes)} nodes, not {replication_factor}")
    if len(set(nodes)) != len(nodes):
        return Rejection(ResultCode.INVALID, f"replicas of one shard share a node: {list(nodes)}")
    for node_id in nodes:
        node = state.nodes.get(node_id)
        if node is None:
            return Rejection(ResultCode.NOT_FOUND, f"node {node_id} is not a member")
        if node.liveness is Liveness.DEAD:
            return Rejection(ResultCode.UNSAFE, f"node {node_id} is dead")
    return None


def _delete_collection(state: ClusterState, command: DeleteCollection) -> ClusterState | Rejection:
    if command.name not in state.collections:
        return Rejection(ResultCode.NOT_FOUND, f"collection {command.name!r} does not exist")
    collections = {name: collection for name, collection in state.collections.items() if name != command.name}
    aliases = {alias: target for alias, target in state.aliases.items() if target != command.name}
    return replace(state, collections=collections, aliases=aliases)


def _update_collection_config(state: ClusterState, command: UpdateCollectionConfig) -> ClusterState | Rejection:
    collection = state.collections.get(command.name)
    if collection is None:
        return Rejection(ResultCode.NOT_FOUND, f"collection {command.name!r} does not exist")
    invalid = _check_replication(command.replication_factor, command.write_consistency_factor)
    if invalid is not None:
        return invalid
    updated = replace(collection, config=command.config, replication_factor=command.replication_factor,
                      write_consistency_factor=command.write_consistency_factor)
    return replace(state, collections={**state.collections, command.name: updated})


def _set_aliases(state: ClusterState, command: SetAliases) -> ClusterState | Rejection:
    aliases = dict(command.aliases)
    if len(aliases) != len(command.aliases):
        return Rejection(ResultCode.INVALID, "an alias appears twice")
    for alias, target in aliases.items():
        if not alias:
            return Rejection(ResultCode.INVALID, "an alias needs a name")
        if alias in state.collections:
            return Rejection(ResultCode.ALREADY_EXISTS, f"alias {alias!r} is the name of a collection")
        if target not in state.collections:
            return Rejection(ResultCode.NOT_FOUND, f"collection {target!r} does not exist")
    if aliases == dict(state.aliases):
        return Rejection(ResultCode.UNCHANGED, "the aliases are already these")
    return replace(state, aliases=dict(sorted(aliases.items())))


def _create_shard_key(state: ClusterState, command: CreateShardKey, *, version: int) -> ClusterState | Rejection:
    collection = state.collections.get(command.collection)
    if collection is None:
        return Rejection(ResultCode.NOT_FOUND, f"collection {command.collection!r} does not exist")
    if collection.sharding_method is not ShardingMethod.CUSTOM:
        return Rejection(ResultCode.INVALID, f"collection {command.collection!r} does not use custom sharding")
    if command.shard_key in collection.shard_keys:
        return Rejection(ResultCode.ALREADY_EXISTS, f"shard key {command.shard_key!r} already exists")
    created = _new_shards(
        state,
        command.placement,
        key=command.shard_key,
        first_shard_id=collection.next_shard_id,
        shard_number=collection.shard_number,
        replication_factor=collection.replication_factor,
        version=version,
    )
    if isinstance(created, Rejection):
        return created
    grown = replace(
        collection,
        shard_keys=(*collection.shard_keys, command.shard_key),
        shards={**collection.shards, **created},
        next_shard_id=collection.next_shard_id + len(created),
    )
    return replace(state, collections={**state.collections, collection.name: grown})


def _delete_shard_key(state: ClusterState, command: DeleteShardKey) -> ClusterState | Rejection:
    collection = state.collections.get(command.collection)
    if collection is None:
        return Rejection(ResultCode.NOT_FOUND, f"collection {command.collection!r} does not exist")
    if command.shard_key not in collection.shard_keys:
        return Rejection(ResultCode.NOT_FOUND, f"shard key {command.shard_key!r} does not exist")
    shards = {shard_id: shard for shard_id, shard in collection.shards.items() if shard.shard_key != command.shard_key}
    shrunk = replace(
        collection, shard_keys=tuple(key for key in collection.shard_keys if key != command.shard_key), shards=shards
    )
    return replace(state, collections={**state.collections, collection.name: shrunk})

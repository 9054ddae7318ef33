"""Where replicas go: new shards, rebalance plans and re-replication plans.

Pure functions of a ClusterState, run by the controller (the Raft leader)
before it proposes. Their output travels inside the commands
(``CreateCollection.placement``, ``StartShardMove``, ``AddReplica``), so
applying a command never depends on this module's version or on a node's view
of the load; a plan that went stale is rejected by ``transitions.apply``, or
fenced with ``expected_version``.

Load is the number of replicas a node holds, in any state, over all
collections. Only ALIVE nodes receive replicas. Rules everywhere:

- replicas of one shard are on distinct nodes;
- the least-loaded node is chosen first, so the spread (max - min load over
  live nodes) never grows beyond 1 when it started at most 1.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from qcluster.cluster.commands import Placement
from qcluster.cluster.state import ClusterState, Liveness, NodeId, ReplicaState, ShardId
from qcluster.errors import InvalidRequest

__all__ = ["PlannedMove", "PlannedReplica", "place_shards", "plan_rebalance", "plan_re_replication"]

ShardRef = tuple[str, ShardId]  # (collection, shard id)


@dataclass(frozen=True, slots=True)
class PlannedMove:
    collection: str
    shard_id: ShardId
    source: NodeId
    target: NodeId


@dataclass(frozen=True, slots=True)
class PlannedReplica:
    collection: str
    shard_id: ShardId
    target: NodeId


def _alive(state: ClusterState) -> list[NodeId]:
    return sorted(node.node_id for node in state.nodes.values() if node.liveness is Liveness.ALIVE)


def place_shards(state: ClusterState, *, shard_count: int, replication_factor: int, seed: int) -> Placement:
    """Replicas for ``shard_count`` new shards, the primary first in each.

    Each shard goes to the ``replication_factor`` least-loaded live nodes, and
    its primary is the one of those holding the fewest primaries, so write
    load spreads too. Ties are broken by an order derived from ``seed``
    (e.g. a hash of the collection name), so collections do not all start on
    the same node; the result is a function of (state, arguments) only.
    """
    alive = _alive(state)
    if shard_count < 0:
        raise InvalidRequest(f"shard count must not be negative, got {shard_count}")
    if replication_factor < 1:
        raise InvalidRequest(f"replication_factor must be at least 1, got {replication_factor}")
    if replication_factor > len(alive):
        raise InvalidRequest(
            f"replication_factor {replication_factor} needs as many live nodes; {len(alive)} are alive"
        )
    counts = state.replica_counts()
    replica_load = {node_id: counts[node_id] for node_id in alive}
    primary_load = dict.fromkeys(alive, 0)
    for collection in state.collections.values():
        for shard in collection.shards.values():
            if shard.primary in primary_load:
                primary_load[shard.primary] += 1
    tie_break = {node_id: zlib.crc32(f"{seed}:{node_id}".encode()) for node_id in alive}
    placement: list[tuple[NodeId, ...]] = []
    for _ in range(shard_count):
        chosen = sorted(alive, key=lambda node_id: (replica_load[node_id], tie_break[node_id], node_id))
        chosen = chosen[:replication_factor]
        primary = min(chosen, key=lambda node_id: (primary_load[node_id], tie_break[node_id], node_id))
        placement.append((primary, *(node_id for node_id in chosen if node_id != primary)))
        primary_load[primary] += 1
        for node_id in chosen:
            replica_load[node_id] += 1
    assert all(len(set(nodes)) == replication_factor for nodes in placement)
    return tuple(placement)


def plan_rebalance(state: ClusterState, *, move_count_max: int) -> tuple[PlannedMove, ...]:
    """Moves, to run one after the other, that bring the live nodes' loads
    within 1 of each other (a new node fills up to the average).

    Each step moves a replica from the most to the least loaded live node,
    preferring one that is not a primary (moving a primary hands it over, a
    new term). Such a replica always exists: the source holds more shards than
    the target, so at least one it holds is not on the target. Shards with a
    move in progress are left alone; the plan may then stop early. Replicas on
    dead nodes are not moved: that is re-replication's job.
    """
    assert move_count_max >= 0
    alive = _alive(state)
    holdings: dict[NodeId, set[ShardRef]] = {node_id: set() for node_id in alive}
    holders: dict[ShardRef, set[NodeId]] = {}
    primaries: dict[ShardRef, NodeId] = {}
    moving: set[ShardRef] = set()
    for collection in state.collections.values():
        for shard in collection.shards.values():
            ref = (collection.name, shard.shard_id)
            holders[ref] = {replica.node_id for replica in shard.replicas}
            primaries[ref] = shard.primary
            if shard.move is not None:
                moving.add(ref)
            for node_id in holders[ref] & holdings.keys():
                holdings[node_id].add(ref)
    moves: list[PlannedMove] = []
    while alive and len(moves) < move_count_max:
        source = max(alive, key=lambda node_id: (len(holdings[node_id]), -node_id))
        target = min(alive, key=lambda node_id: (len(holdings[node_id]), node_id))
        if len(holdings[source]) - len(holdings[target]) <= 1:
            break
        candidates = [ref for ref in holdings[source] if target not in holders[ref] and ref not in moving]
        if not candidates:
            break
        ref = min(candidates, key=lambda ref: (primaries[ref] == source, ref))
        moves.append(PlannedMove(collection=ref[0], shard_id=ref[1], source=source, target=target))
        holdings[source].remove(ref)
        holdings[target].add(ref)
        holders[ref] = (holders[ref] - {source}) | {target}
        if primaries[ref] == source:
            primaries[ref] = target
    return tuple(moves)


def plan_re_replication(state: ClusterState, *, now_ms: int, grace_period_ms: int) -> tuple[PlannedReplica, ...]:
    """New replicas so that every shard again has ``replication_factor``
    replicas on nodes that are not lost (dead for at least the grace period).

    A node dead for less than the grace period still counts: it may come back
    and recover faster than a copy is made. A shard without an in-sync replica
    on a live node is skipped: there is nothing to copy from until a node
    holding one returns. With too few live nodes, a shard gets as many
    replicas as there are nodes to hold them. Replicas on lost nodes are left
    for the controller to drop once the new ones are in sync.
    """
    lost = {
        node.node_id
        for node in state.nodes.values()
        if node.liveness is Liveness.DEAD and now_ms - node.liveness_since_ms >= grace_period_ms
    }
    alive = _alive(state)
    counts = state.replica_counts()
    load = {node_id: counts[node_id] for node_id in alive}
    planned: list[PlannedReplica] = []
    for name in sorted(state.collections):
        collection = state.collections[name]
        for shard_id in sorted(collection.shards):
            shard = collection.shards[shard_id]
            holders = {replica.node_id for replica in shard.replicas}
            missing = collection.replication_factor - len(holders - lost)
            has_source = any(
                replica.state is ReplicaState.ACTIVE and replica.node_id in load for replica in shard.replicas
            )
            if missing <= 0 or not has_source:
                continue
            targets = sorted((node_id for node_id in alive if node_id not in holders), key=lambda n: (load[n], n))
            for node_id in targets[:missing]:
                planned.append(PlannedReplica(collection=name, shard_id=shard_id, target=node_id))
                load[node_id] += 1
    return tuple(planned)

"""Replica placement, rebalance plans and re-replication plans, checked by
applying them through the real commands."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qcluster.cluster.commands import (
    AddNode,
    AddReplica,
    AddToInSync,
    Command,
    CreateCollection,
    FinishShardMove,
    MarkNodeDead,
    SetReplicaState,
    StartShardMove,
)
from qcluster.cluster.placement import PlannedMove, place_shards, plan_rebalance, plan_re_replication
from qcluster.cluster.state import ClusterState, Liveness, ReplicaState, ShardingMethod
from qcluster.cluster.transitions import apply
from qcluster.errors import InvalidRequest

_request_ids = itertools.count()
# (shard_number, replication_factor) of each collection; the factor is capped at the node count.
collection_shapes = st.lists(st.tuples(st.integers(1, 8), st.integers(1, 3)), min_size=1, max_size=4)


def run(state: ClusterState, command: Command) -> ClusterState:
    after, result = apply(state, command)
    assert result.is_accepted, result
    return after


def cluster(node_count: int) -> ClusterState:
    state = ClusterState()
    for node_id in range(1, node_count + 1):
        state = join(state, node_id)
    return state


def join(state: ClusterState, node_id: int) -> ClusterState:
    address = f"10.0.0.{node_id}"
    command = AddNode(
        request_id=f"r{next(_request_ids)}",
        node_id=node_id,
        p2p_address=f"{address}:6335",
        http_address=f"{address}:6333",
        grpc_address=f"{address}:6334",
        at_ms=0,
    )
    return run(state, command)


def with_collections(state: ClusterState, shapes: list[tuple[int, int]], *, seed: int = 0) -> ClusterState:
    alive = sum(1 for node in state.nodes.values() if node.liveness is Liveness.ALIVE)
    for index, (shard_number, replication_factor) in enumerate(shapes):
        replication_factor = min(replication_factor, alive)
        placement = place_shards(
            state, shard_count=shard_number, replication_factor=replication_factor, seed=seed + index
        )
        command = CreateCollection(
            request_id=f"r{next(_request_ids)}",
            name=f"collection-{index}",
            config=b"{}",
            shard_number=shard_number,
            replication_factor=replication_factor,
            write_consistency_factor=1,
            sharding_method=ShardingMethod.AUTO,
            shard_keys=(),
            placement=placement,
        )
        state = run(state, command)
        assert_spread_at_most_one(state)
    return state


def loads(state: ClusterState) -> dict[int, int]:
    counts = state.replica_counts()
    return {node_id: counts[node_id] for node_id, node in state.nodes.items() if node.liveness is Liveness.ALIVE}


def assert_spread_at_most_one(state: ClusterState) -> None:
    load = loads(state)
    assert max(load.values()) - min(load.values()) <= 1, load


def complete(state: ClusterState, collection: str, shard_id: int, node_id: int) -> ClusterState:
    """What the recovery driver does once a new replica is filled: PARTIAL, then in sync."""
    target = {"collection": collection, "shard_id": shard_id, "node_id": node_id}
    state = run(state, SetReplicaState(request_id=f"r{next(_request_ids)}", **target, state=ReplicaState.PARTIAL))
    return run(state, AddToInSync(request_id=f"r{next(_request_ids)}", **target))


def execute(state: ClusterState, move: PlannedMove) -> ClusterState:
    target = {"collection": move.collection, "shard_id": move.shard_id, "source": move.source, "target": move.target}
    state = run(state, StartShardMove(request_id=f"r{next(_request_ids)}", **target))
    state = complete(state, move.collection, move.shard_id, move.target)
    return run(state, FinishShardMove(request_id=f"r{next(_request_ids)}", **target))


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 7), collection_shapes, st.integers(0, 2**32))
def test_placement_spreads_replicas_on_distinct_nodes(
    node_count: int, shapes: list[tuple[int, int]], seed: int
) -> None:
    state = with_collections(cluster(node_count), shapes, seed=seed)
    for collection in state.collections.values():
        for shard in collection.shards.values():
            assert len(shard.replicas) == collection.replication_factor  # on distinct nodes: apply checks it
    again = place_shards(state, shard_count=5, replication_factor=1, seed=seed)
    assert again == place_shards(state, shard_count=5, replication_factor=1, seed=seed), "deterministic"


def test_primaries_spread_too() -> None:
    state = with_collections(cluster(3), [(6, 3)])
    primaries = [shard.primary for shard in state.collections["collection-0"].shards.values()]
    assert sorted(primaries) == [1, 1, 2, 2, 3, 3]


def test_placement_needs_enough_live_nodes() -> None:
    state = run(cluster(3), MarkNodeDead(request_id="dead", node_id=3, at_ms=0))
    with pytest.raises(InvalidRequest, match="replication_factor 3 needs as many live nodes; 2 are alive"):
        place_shards(state, shard_count=1, replication_factor=3, seed=0)
    assert all(3 not in nodes for nodes in place_shards(state, shard_count=4, replication_factor=2, seed=0))
    with pytest.raises(InvalidRequest, match="at least 1"):
        place_shards(state, shard_count=1, replication_factor=0, seed=0)


@settings(max_examples=60, deadline=None)
@given(collection_shapes, st.integers(0, 2**32))
def test_rebalance_fills_a_fourth_node(shapes: list[tuple[int, int]], seed: int) -> None:
    state = join(with_collections(cluster(3), shapes, seed=seed), 4)
    total = sum(loads(state).values())
    plan = plan_rebalance(state, move_count_max=1_000)
    assert plan == plan_rebalance(state, move_count_max=1_000), "deterministic"
    for move in plan:
        state = execute(state, move)  # rejected if it put two replicas of a shard on one node
    assert_spread_at_most_one(state)
    assert loads(state)[4] >= total // 4
    assert sum(loads(state).values()) == total
    assert plan_rebalance(state, move_count_max=1_000) == ()


def test_rebalance_is_bounded_and_prefers_replicas_that_are_not_primaries() -> None:
    state = join(with_collections(cluster(3), [(6, 2)]), 4)
    plan = plan_rebalance(state, move_count_max=1)
    assert len(plan) == 1
    shard = state.shard(plan[0].collection, plan[0].shard_id)
    assert shard is not None and shard.primary != plan[0].source
    assert len(plan_rebalance(state, move_count_max=10)) == 3


def test_rebalance_leaves_moving_shards_alone() -> None:
    state = join(with_collections(cluster(2), [(1, 1)]), 3)
    shard = state.shard("collection-0", 0)
    assert shard is not None
    move = StartShardMove(request_id="move", collection="collection-0", shard_id=0, source=shard.primary, target=3)
    state = join(run(state, move), 4)
    assert plan_rebalance(state, move_count_max=10) == ()


@settings(max_examples=60, deadline=None)
@given(st.integers(3, 6), collection_shapes, st.data())
def test_re_replication_restores_the_replication_factor(
    node_count: int, shapes: list[tuple[int, int]], data: st.DataObject
) -> None:
    state = with_collections(cluster(node_count), [(number, min(factor, node_count - 1)) for number, factor in shapes])
    lost = data.draw(st.sampled_from(sorted(state.nodes)))
    state = run(state, MarkNodeDead(request_id=f"r{next(_request_ids)}", node_id=lost, at_ms=1_000))
    assert plan_re_replication(state, now_ms=1_500, grace_period_ms=1_000) == (), "still within the grace period"
    plan = plan_re_replication(state, now_ms=2_000, grace_period_ms=1_000)
    for planned in plan:
        target = {"collection": planned.collection, "shard_id": planned.shard_id, "node_id": planned.target}
        state = run(state, AddReplica(request_id=f"r{next(_request_ids)}", **target))
        state = complete(state, planned.collection, planned.shard_id, planned.target)
    for collection in state.collections.values():
        for shard in collection.shards.values():
            live = [replica.node_id for replica in shard.replicas if replica.node_id != lost]
            if live:  # a shard whose only replica was on the lost node has nothing to copy from
                assert len(live) >= collection.replication_factor
    assert plan_re_replication(state, now_ms=2_000, grace_period_ms=1_000) == ()


def test_re_replication_skips_a_shard_without_a_live_in_sync_replica() -> None:
    state = with_collections(cluster(2), [(2, 1)])
    shard = state.shard("collection-0", 0)
    assert shard is not None
    state = run(state, MarkNodeDead(request_id="dead", node_id=shard.primary, at_ms=0))
    plan = plan_re_replication(state, now_ms=10, grace_period_ms=0)
    assert plan == ()

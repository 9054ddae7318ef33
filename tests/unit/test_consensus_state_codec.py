"""The whole-ClusterState codec that the Raft full dump holds: exact round
trips (order included), a canonical encoding, and damage that only ever
raises DataCorruption."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qcluster.cluster.commands import (
    AddNode,
    AddReplica,
    Command,
    CreateCollection,
    CreateShardKey,
    MarkNodeDead,
    RemoveFromInSync,
    SetReplicaState,
    StartShardMove,
)
from qcluster.cluster.placement import place_shards
from qcluster.cluster.state import (
    ClusterState,
    CollectionState,
    Liveness,
    NodeInfo,
    Replica,
    ReplicaState,
    Result,
    ResultCode,
    ShardingMethod,
    ShardMove,
    ShardState,
)
from qcluster.cluster.transitions import apply
from qcluster.consensus.state_codec import STATE_FORMAT_VERSION, decode_state, encode_state
from qcluster.errors import DataCorruption
from qcluster.types import UINT64_MAX

K = TypeVar("K")
V = TypeVar("V")

uints = st.integers(0, UINT64_MAX)
texts = st.text(max_size=12)


def keyed(values: st.SearchStrategy[V], key: Any) -> st.SearchStrategy[dict[Any, V]]:
    """Dicts of distinct values under their own keys, in a random insertion order."""
    return st.lists(values, max_size=4, unique_by=key).map(lambda items: {key(item): item for item in items})


nodes = st.builds(
    NodeInfo,
    node_id=uints,
    p2p_address=texts,
    http_address=texts,
    grpc_address=texts,
    liveness=st.sampled_from(Liveness),
    liveness_since_ms=uints,
    liveness_since_version=uints,
)
shards = st.builds(
    ShardState,
    shard_id=uints,
    shard_key=st.none() | texts | uints,
    slots=st.builds(range, st.integers(0, 5_000), st.integers(0, 5_000), st.integers(1, 64)),
    replicas=st.lists(st.builds(Replica, uints, st.sampled_from(ReplicaState)), max_size=3).map(tuple),
    primary=uints,
    primary_term=uints,
    move=st.none() | st.builds(ShardMove, source=uints, target=uints),
)
collections = st.builds(
    CollectionState,
    name=texts,
    config=st.binary(max_size=16),
    shard_number=uints,
    replication_factor=uints,
    write_consistency_factor=uints,
    sharding_method=st.sampled_from(ShardingMethod),
    shard_keys=st.lists(texts | uints, max_size=3).map(tuple),
    shards=keyed(shards, lambda shard: shard.shard_id),
    next_shard_id=uints,
)
results = st.builds(Result, st.sampled_from(ResultCode), texts, uints)
states = st.builds(
    ClusterState,
    version=uints,
    nodes=keyed(nodes, lambda node: node.node_id),
    collections=keyed(collections, lambda collection: collection.name),
    aliases=st.dictionaries(texts, texts, max_size=4),
    recent_results=st.dictionaries(texts, results, max_size=6),
)


def assert_same(decoded: ClusterState, state: ClusterState) -> None:
    """Equal, and every mapping in the same order (dict equality ignores order)."""
    assert decoded == state

    def orders(value: ClusterState) -> list[list[Any]]:
        mappings: list[Mapping[Any, Any]] = [value.nodes, value.collections, value.aliases, value.recent_results]
        mappings += [collection.shards for collection in value.collections.values()]
        return [list(mapping) for mapping in mappings]

    assert orders(decoded) == orders(state)


@given(states)
@settings(max_examples=200, deadline=None)
def test_any_state_round_trips_exactly_and_canonically(state: ClusterState) -> None:
    encoded = encode_state(state)
    assert encoded[0] == STATE_FORMAT_VERSION
    decoded = decode_state(encoded)
    assert_same(decoded, state)
    assert encode_state(decoded) == encoded


def test_format_1_without_aliases_is_still_read() -> None:
    import msgpack

    state = decode_state(bytes([1]) + msgpack.packb([7, [], [], []]))
    assert state.version == 7 and dict(state.aliases) == {}


_request_numbers = iter(range(10**9))


def _rid() -> str:
    return f"codec-{next(_request_numbers)}"


def built_state() -> ClusterState:
    """A state reached through transitions: auto and custom collections, a
    dead node, fenced and initializing replicas, a shard move, and results."""
    state = ClusterState()

    def run(command: Command) -> None:
        nonlocal state
        state, _ = apply(state, command)

    for node_id in (5, 1, 4, 2, 3):  # insertion order differs from id order
        run(AddNode(request_id=_rid(), node_id=node_id, p2p_address=f"10.0.0.{node_id}:6335",
                    http_address=f"h{node_id}:6333", grpc_address=f"g{node_id}:6334", at_ms=node_id))
    auto = place_shards(state, shard_count=3, replication_factor=3, seed=7)
    run(CreateCollection(request_id=_rid(), name="auto", config=b"\x00cfg", shard_number=3, replication_factor=3,
                         write_consistency_factor=1, sharding_method=ShardingMethod.AUTO, shard_keys=(),
                         placement=auto))
    custom = place_shards(state, shard_count=4, replication_factor=2, seed=8)
    run(CreateCollection(request_id=_rid(), name="tenants", config=b"", shard_number=2, replication_factor=2,
                         write_consistency_factor=1, sharding_method=ShardingMethod.CUSTOM, shard_keys=("a", 7),
                         placement=custom))
    run(CreateShardKey(request_id=_rid(), collection="tenants", shard_key="b",
                       placement=place_shards(state, shard_count=2, replication_factor=2, seed=9)))
    shard = state.collections["auto"].shards[0]
    fenced = next(replica.node_id for replica in shard.replicas if replica.node_id != shard.primary)
    run(RemoveFromInSync(request_id=_rid(), collection="auto", shard_id=0, node_id=fenced))
    run(SetReplicaState(request_id=_rid(), collection="auto", shard_id=0, node_id=fenced, state=ReplicaState.PARTIAL))
    holders = {replica.node_id for replica in state.collections["auto"].shards[1].replicas}
    outsider = next(node for node in state.nodes if node not in holders)
    run(AddReplica(request_id=_rid(), collection="auto", shard_id=1, node_id=outsider))
    run(MarkNodeDead(request_id=_rid(), node_id=outsider, at_ms=99))
    shard = state.collections["tenants"].shards[0]
    target = next(node for node in state.nodes if all(r.node_id != node for r in shard.replicas))
    run(StartShardMove(request_id=_rid(), collection="tenants", shard_id=0, source=shard.primary, target=target))
    run(AddNode(request_id="rejected", node_id=5, p2p_address="x:1", http_address="x:2", grpc_address="x:3", at_ms=0))
    return state


def test_a_state_built_by_transitions_round_trips() -> None:
    state = built_state()
    assert state.collections["tenants"].shards[0].move is not None, "the scenario reached a shard move"
    assert state.recent_results["rejected"].code is ResultCode.ALREADY_EXISTS
    assert {replica.state for shard in state.collections["auto"].shards.values() for replica in shard.replicas} >= {
        ReplicaState.PARTIAL, ReplicaState.INITIALIZING, ReplicaState.ACTIVE
    }
    decoded = decode_state(encode_state(state))
    assert_same(decoded, state)
    # The decoded state goes on exactly like the original: dedup eviction and
    # iteration order depend on the restored order.
    command = AddNode(request_id=_rid(), node_id=6, p2p_address="10.0.0.6:1", http_address="h", grpc_address="g",
                      at_ms=1)
    assert apply(decoded, command) == apply(state, command)


def test_an_empty_state_round_trips() -> None:
    assert_same(decode_state(encode_state(ClusterState())), ClusterState())


@given(st.binary(max_size=64))
@settings(max_examples=300, deadline=None)
def test_garbage_raises_only_data_corruption(data: bytes) -> None:
    try:
        decode_state(data)
    except DataCorruption:
        pass


@given(st.data())
@settings(max_examples=200, deadline=None)
def test_damaged_encodings_raise_only_data_corruption(data: st.DataObject) -> None:
    encoded = bytearray(encode_state(data.draw(states)))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(encoded)))
    for damaged in (bytes(encoded), bytes(encoded[:cut])):
        try:
            decode_state(damaged)
        except DataCorruption:
            pass


@pytest.mark.parametrize(
    "body",
    [
        [0, [], []],  # a field missing
        [-1, [], [], []],  # a negative version
        [True, [], [], []],  # a boolean for a number
        [0, [[1, "a", "b", "c", "zombie", 0, 0]], [], []],  # an unknown liveness
        [0, [[1, "a", "b", "c", "alive", 0, 0], [1, "d", "e", "f", "alive", 0, 0]], [], []],  # a node twice
        [0, [], [], [["r", "ok", "applied", 1], ["r", "ok", "applied", 2]]],  # a request id twice
        [0, [], [["c", b"", 1, 1, 1, "auto", [], [[0, None, [0, 10, 0], [], 1, 1, None]], 1]], []],  # step 0
        {"version": 0},
    ],
)
def test_malformed_states_are_data_corruption(body: object) -> None:
    with pytest.raises(DataCorruption):
        decode_state(bytes([STATE_FORMAT_VERSION]) + msgpack.packb(body, use_bin_type=True))


def test_an_unknown_format_version_is_refused() -> None:
    encoded = encode_state(ClusterState(version=3))
    with pytest.raises(DataCorruption, match="unknown format version"):
        decode_state(bytes([STATE_FORMAT_VERSION + 1]) + encoded[1:])
    with pytest.raises(DataCorruption, match="empty"):
        decode_state(b"")

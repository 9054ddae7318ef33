"""The cluster state machine: scenarios for every command, and a hypothesis
state machine that applies random command sequences, checks the invariants
after every step and compares replica and node commands with a dumb model."""

from __future__ import annotations

import itertools
from dataclasses import replace
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

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
    encode,
)
from qcluster.cluster.placement import place_shards
from qcluster.cluster.state import (
    DEDUP_CAPACITY,
    ClusterState,
    Liveness,
    ReplicaState,
    Result,
    ResultCode,
    ShardingMethod,
    ShardKey,
    ShardState,
)
from qcluster.cluster.transitions import apply, apply_encoded
from qcluster.errors import AlreadyExists, InvalidRequest, NotFound, PreconditionFailed
from qcluster.sharding import SLOT_COUNT, shard_of, slot_of
from qcluster.types import PointId

ACTIVE, DEAD = ReplicaState.ACTIVE, ReplicaState.DEAD
PARTIAL, INITIALIZING = ReplicaState.PARTIAL, ReplicaState.INITIALIZING
_request_ids = itertools.count()
ShardCommandT = TypeVar("ShardCommandT", bound=Command)


def rid() -> str:
    return f"request-{next(_request_ids)}"


def accepted(state: ClusterState, command: Command) -> ClusterState:
    after, result = apply(state, command)
    assert result.is_accepted, result
    assert after.version == state.version + 1 == result.version
    return after


def rejected(state: ClusterState, command: Command, code: ResultCode) -> ClusterState:
    after, result = apply(state, command)
    assert result.code is code, result
    assert replace(after, recent_results=state.recent_results) == state, "a rejection changes nothing else"
    return after


def on(kind: type[ShardCommandT], **fields: Any) -> ShardCommandT:
    """A command on shard 0 of collection "c"."""
    return kind(request_id=rid(), collection="c", shard_id=0, **fields)


def add_node(node_id: int) -> AddNode:
    return AddNode(
        request_id=rid(),
        node_id=node_id,
        p2p_address=f"10.0.0.{node_id}:6335",
        http_address=f"10.0.0.{node_id}:6333",
        grpc_address=f"10.0.0.{node_id}:6334",
        at_ms=1_000,
    )


def create(
    name: str = "c",
    *,
    placement: Placement,
    replication_factor: int,
    write_consistency_factor: int = 1,
    shard_number: int | None = None,
    sharding_method: ShardingMethod = ShardingMethod.AUTO,
    shard_keys: tuple[ShardKey, ...] = (),
) -> CreateCollection:
    return CreateCollection(
        request_id=rid(),
        name=name,
        config=b"opaque",
        shard_number=len(placement) if shard_number is None else shard_number,
        replication_factor=replication_factor,
        write_consistency_factor=write_consistency_factor,
        sharding_method=sharding_method,
        shard_keys=shard_keys,
        placement=placement,
    )


def cluster(node_count: int) -> ClusterState:
    state = ClusterState()
    for node_id in range(1, node_count + 1):
        state = accepted(state, add_node(node_id))
    return state


@pytest.fixture
def three() -> ClusterState:
    """Three nodes and one shard on all of them, primary on node 1, write_consistency_factor 2."""
    return accepted(cluster(3), create(placement=((1, 2, 3),), replication_factor=3, write_consistency_factor=2))


def term(state: ClusterState) -> int:
    shard = state.shard("c", 0)
    assert shard is not None
    return shard.primary_term


def replica_state(state: ClusterState, node_id: int, *, shard_id: int = 0) -> ReplicaState | None:
    shard = state.shard("c", shard_id)
    assert shard is not None
    replica = shard.replica(node_id)
    return None if replica is None else replica.state


# --- collections ---


def test_a_new_shard_is_active_and_in_sync_with_its_first_node_as_primary(three: ClusterState) -> None:
    shard = three.shard("c", 0)
    assert shard is not None
    assert shard.primary == 1
    assert shard.in_sync == {1, 2, 3}
    assert shard.primary_term == three.version, "a primary term is the version that installed the primary"
    assert three.collections["c"].config == b"opaque"


def test_shards_partition_the_hash_slots_as_shard_of_assumes() -> None:
    state = cluster(3)
    placement = place_shards(state, shard_count=6, replication_factor=2, seed=0)
    state = accepted(state, create(placement=placement, replication_factor=2))
    shards = state.collections["c"].shards
    assert sorted(slot for shard in shards.values() for slot in shard.slots) == list(range(SLOT_COUNT))
    point_ids: list[PointId] = [0, 1, 17, 2**63, "5c56c793-69f3-4fbf-87e6-c4bf54c28c26"]
    for point_id in point_ids:
        assert slot_of(point_id) in shards[shard_of(point_id, shard_number=6)].slots


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"replication_factor": 0, "placement": ((),)}, ResultCode.INVALID),
        ({"write_consistency_factor": 3}, ResultCode.INVALID),
        ({"shard_number": 0, "placement": ()}, ResultCode.INVALID),
        ({"shard_number": SLOT_COUNT + 1}, ResultCode.INVALID),
        ({"placement": ((1, 1),)}, ResultCode.INVALID),
        ({"placement": ((1, 2), (2, 3))}, ResultCode.INVALID),
        ({"placement": ((1,),)}, ResultCode.INVALID),
        ({"placement": ((1, 9),)}, ResultCode.NOT_FOUND),
        ({"placement": ((1, 3),)}, ResultCode.UNSAFE),  # node 3 is dead
        ({"shard_keys": ("tenant",)}, ResultCode.INVALID),  # keys need custom sharding
        ({"name": ""}, ResultCode.INVALID),
        ({"name": "existing"}, ResultCode.ALREADY_EXISTS),
    ],
)
def test_create_collection_rejections(changes: dict[str, Any], code: ResultCode) -> None:
    state = accepted(cluster(3), MarkNodeDead(request_id=rid(), node_id=3, at_ms=5))
    state = accepted(state, create("existing", placement=((1,),), replication_factor=1))
    command = replace(create(placement=((1, 2),), replication_factor=2, shard_number=1), **changes)
    rejected(state, command, code)


def test_delete_collection() -> None:
    state = accepted(cluster(1), create(placement=((1,),), replication_factor=1))
    state = accepted(state, DeleteCollection(request_id=rid(), name="c"))
    assert "c" not in state.collections
    rejected(state, DeleteCollection(request_id=rid(), name="c"), ResultCode.NOT_FOUND)


def test_aliases_are_set_whole_and_follow_their_collection() -> None:
    state = accepted(cluster(1), create(placement=((1,),), replication_factor=1))
    state = accepted(state, create("d", placement=((1,),), replication_factor=1))
    state = accepted(state, SetAliases(request_id=rid(), aliases=(("a", "c"), ("b", "d"))))
    assert dict(state.aliases) == {"a": "c", "b": "d"}
    rejected(state, SetAliases(request_id=rid(), aliases=(("c", "d"),)), ResultCode.ALREADY_EXISTS)
    rejected(state, SetAliases(request_id=rid(), aliases=(("x", "nope"),)), ResultCode.NOT_FOUND)
    rejected(state, SetAliases(request_id=rid(), aliases=(("x", "c"), ("x", "d"))), ResultCode.INVALID)
    rejected(state, SetAliases(request_id=rid(), aliases=(("a", "c"), ("b", "d"))), ResultCode.UNCHANGED)
    rejected(state, create("a", placement=((1,),), replication_factor=1), ResultCode.ALREADY_EXISTS)
    state = accepted(state, DeleteCollection(request_id=rid(), name="c"))
    assert dict(state.aliases) == {"b": "d"}, "deleting a collection deletes its aliases"


def test_update_collection_config() -> None:
    state = accepted(cluster(2), create(placement=((1, 2),), replication_factor=2))
    update = UpdateCollectionConfig(request_id=rid(), name="c", config=b"new", replication_factor=2,
                                    write_consistency_factor=2)
    state = accepted(state, update)
    collection = state.collections["c"]
    assert (collection.config, collection.write_consistency_factor) == (b"new", 2)
    rejected(state, replace(update, request_id=rid(), write_consistency_factor=3), ResultCode.INVALID)
    rejected(state, replace(update, request_id=rid(), name="nope"), ResultCode.NOT_FOUND)
    rejected(state, replace(update, request_id=rid(), expected_version=state.version - 1), ResultCode.STALE)


def new_key(key: ShardKey, placement: Placement) -> CreateShardKey:
    return CreateShardKey(request_id=rid(), collection="c", shard_key=key, placement=placement)


def test_shard_keys_get_fresh_shard_ids() -> None:
    state = cluster(2)
    custom = create(
        placement=((1,), (2,), (2,), (1,)),
        replication_factor=1,
        shard_number=2,
        sharding_method=ShardingMethod.CUSTOM,
        shard_keys=("tenant-a", 7),
    )
    state = accepted(state, custom)
    shards = state.collections["c"].shards
    keys = {shard_id: shard.shard_key for shard_id, shard in shards.items()}
    assert keys == {0: "tenant-a", 1: "tenant-a", 2: 7, 3: 7}
    assert shards[3].slots == range(1, SLOT_COUNT, 2)
    state = accepted(state, DeleteShardKey(request_id=rid(), collection="c", shard_key="tenant-a"))
    state = accepted(state, new_key("tenant-a", ((2,), (1,))))
    shards = state.collections["c"].shards
    assert sorted(shards) == [2, 3, 4, 5], "ids of a deleted key are never reused"
    assert state.collections["c"].shard_keys == (7, "tenant-a")
    rejected(state, new_key(7, ((1,), (2,))), ResultCode.ALREADY_EXISTS)
    rejected(state, new_key(8, ((1,),)), ResultCode.INVALID)  # two shards per key
    rejected(state, DeleteShardKey(request_id=rid(), collection="c", shard_key=8), ResultCode.NOT_FOUND)
    state = accepted(state, create("auto", placement=((1,),), replication_factor=1))
    rejected(state, replace(new_key(1, ((1,),)), collection="auto"), ResultCode.INVALID)


# --- nodes ---


def test_node_membership_and_liveness() -> None:
    state = cluster(2)
    rejected(state, add_node(1), ResultCode.ALREADY_EXISTS)
    rejected(state, replace(add_node(3), p2p_address="10.0.0.1:6335"), ResultCode.ALREADY_EXISTS)
    rejected(state, replace(add_node(3), grpc_address=""), ResultCode.INVALID)
    state = accepted(state, MarkNodeDead(request_id=rid(), node_id=2, at_ms=42))
    node = state.nodes[2]
    assert (node.liveness, node.liveness_since_ms, node.liveness_since_version) == (Liveness.DEAD, 42, state.version)
    rejected(state, MarkNodeDead(request_id=rid(), node_id=2, at_ms=43), ResultCode.UNCHANGED)
    rejected(state, MarkNodeAlive(request_id=rid(), node_id=9, at_ms=43), ResultCode.NOT_FOUND)
    state = accepted(state, MarkNodeAlive(request_id=rid(), node_id=2, at_ms=44))
    state = accepted(state, create(placement=((1,),), replication_factor=1))
    rejected(state, RemoveNode(request_id=rid(), node_id=1), ResultCode.UNSAFE)  # it holds a replica
    state = accepted(state, RemoveNode(request_id=rid(), node_id=2))
    assert sorted(state.nodes) == [1]
    rejected(state, RemoveNode(request_id=rid(), node_id=2), ResultCode.NOT_FOUND)


# --- the in-sync set and the primary ---


def test_remove_from_in_sync_fences_a_replica_even_below_write_consistency_factor(three: ClusterState) -> None:
    """A failed replica always leaves the in-sync set (the shard then refuses
    writes until recovery brings one back); the primary never does."""
    state = accepted(three, on(RemoveFromInSync, node_id=2, expected_primary_term=term(three)))
    assert replica_state(state, 2) is DEAD
    shard = state.shard("c", 0)
    assert shard is not None and shard.in_sync == {1, 3}
    below = accepted(state, on(RemoveFromInSync, node_id=3))  # write_consistency_factor is 2
    shard = below.shard("c", 0)
    assert shard is not None and shard.in_sync == {1}
    rejected(below, on(RemoveFromInSync, node_id=1), ResultCode.UNSAFE)
    rejected(state, on(RemoveFromInSync, node_id=1), ResultCode.UNSAFE)
    rejected(state, on(RemoveFromInSync, node_id=2), ResultCode.UNCHANGED)
    rejected(state, on(RemoveFromInSync, node_id=9), ResultCode.NOT_FOUND)
    rejected(state, RemoveFromInSync(request_id=rid(), collection="c", shard_id=1, node_id=2), ResultCode.NOT_FOUND)
    rejected(state, RemoveFromInSync(request_id=rid(), collection="x", shard_id=0, node_id=2), ResultCode.NOT_FOUND)


def test_promotion_needs_an_in_sync_replica_on_a_live_node(three: ClusterState) -> None:
    old_term = term(three)
    state = accepted(three, on(RemoveFromInSync, node_id=2))
    rejected(state, on(PromotePrimary, node_id=2), ResultCode.UNSAFE)
    state = accepted(state, MarkNodeDead(request_id=rid(), node_id=3, at_ms=0))
    rejected(state, on(PromotePrimary, node_id=3), ResultCode.UNSAFE)
    rejected(state, on(PromotePrimary, node_id=1), ResultCode.UNCHANGED)
    state = accepted(state, MarkNodeAlive(request_id=rid(), node_id=3, at_ms=0))
    state = accepted(state, on(PromotePrimary, node_id=3, expected_primary_term=old_term))
    shard = state.shard("c", 0)
    assert shard is not None
    assert (shard.primary, shard.primary_term) == (3, state.version)
    assert shard.primary_term > old_term
    # A deposed primary (it still believes in the old term) can no longer fence anyone.
    rejected(state, on(RemoveFromInSync, node_id=1, expected_primary_term=old_term), ResultCode.STALE)


def test_a_fenced_replica_recovers_through_partial(three: ClusterState) -> None:
    state = accepted(three, on(RemoveFromInSync, node_id=2))
    rejected(state, on(AddToInSync, node_id=2), ResultCode.ILLEGAL_TRANSITION)
    set_partial = on(SetReplicaState, node_id=2, state=PARTIAL, expected_state=PARTIAL)
    rejected(state, set_partial, ResultCode.STALE)
    state = accepted(state, replace(set_partial, request_id=rid(), expected_state=DEAD))
    rejected(state, on(SetReplicaState, node_id=2, state=ACTIVE), ResultCode.ILLEGAL_TRANSITION)
    rejected(state, on(SetReplicaState, node_id=2, state=PARTIAL), ResultCode.UNCHANGED)
    state = accepted(state, on(AddToInSync, node_id=2))
    assert replica_state(state, 2) is ACTIVE
    rejected(state, on(AddToInSync, node_id=2), ResultCode.UNCHANGED)
    _, result = apply(state, on(SetReplicaState, node_id=3, state=DEAD))
    assert result.code is ResultCode.ILLEGAL_TRANSITION
    assert "RemoveFromInSync" in result.message


# --- replicas and moves ---


def test_add_and_drop_replicas() -> None:
    state = accepted(cluster(4), create(placement=((1, 2),), replication_factor=2, write_consistency_factor=2))
    state = accepted(state, MarkNodeDead(request_id=rid(), node_id=4, at_ms=0))
    rejected(state, on(AddReplica, node_id=4), ResultCode.UNSAFE)
    rejected(state, on(AddReplica, node_id=9), ResultCode.NOT_FOUND)
    rejected(state, on(AddReplica, node_id=2), ResultCode.ALREADY_EXISTS)
    state = accepted(state, on(AddReplica, node_id=3))
    assert replica_state(state, 3) is INITIALIZING
    rejected(state, on(DropReplica, node_id=1), ResultCode.UNSAFE)  # the primary
    rejected(state, on(DropReplica, node_id=2), ResultCode.UNSAFE)  # below 2 in sync
    rejected(state, on(DropReplica, node_id=3, expected_state=ACTIVE), ResultCode.STALE)
    state = accepted(state, on(DropReplica, node_id=3, expected_state=INITIALIZING))
    assert replica_state(state, 3) is None


def test_a_move_of_the_primary_hands_it_over() -> None:
    state = accepted(cluster(3), create(placement=((1, 2),), replication_factor=2, write_consistency_factor=2))
    move = on(StartShardMove, source=1, target=3)
    state = accepted(state, move)
    shard = state.shard("c", 0)
    assert shard is not None and shard.move is not None
    assert (shard.move.source, shard.move.target, replica_state(state, 3)) == (1, 3, INITIALIZING)
    rejected(state, replace(move, request_id=rid(), source=2), ResultCode.CONFLICT)
    rejected(state, on(DropReplica, node_id=3), ResultCode.CONFLICT)
    finish = on(FinishShardMove, source=1, target=3)
    rejected(state, finish, ResultCode.UNSAFE)  # the target is not in sync yet
    state = accepted(state, on(SetReplicaState, node_id=3, state=PARTIAL))
    state = accepted(state, on(AddToInSync, node_id=3))
    rejected(state, replace(finish, request_id=rid(), source=2), ResultCode.STALE)
    state = accepted(state, replace(finish, request_id=rid()))
    shard = state.shard("c", 0)
    assert shard is not None
    assert [replica.node_id for replica in shard.replicas] == [2, 3]
    assert (shard.primary, shard.primary_term, shard.move) == (3, state.version, None)
    rejected(state, replace(finish, request_id=rid()), ResultCode.NOT_FOUND)


def test_an_aborted_move_drops_the_target() -> None:
    state = accepted(cluster(3), create(placement=((1, 2),), replication_factor=2))
    rejected(state, on(StartShardMove, source=2, target=2), ResultCode.INVALID)
    rejected(state, on(StartShardMove, source=3, target=1), ResultCode.NOT_FOUND)
    rejected(state, on(StartShardMove, source=2, target=1), ResultCode.ALREADY_EXISTS)
    state = accepted(state, on(StartShardMove, source=2, target=3))
    state = accepted(state, on(AbortShardMove, source=2, target=3))
    shard = state.shard("c", 0)
    assert shard is not None
    assert ([replica.node_id for replica in shard.replicas], shard.move) == ([1, 2], None)


# --- compare-and-set, deduplication, encoded input ---


def test_expected_version_is_compare_and_set() -> None:
    state = cluster(1)
    rejected(state, replace(add_node(2), expected_version=state.version - 1), ResultCode.STALE)
    accepted(state, replace(add_node(2), expected_version=state.version))


def test_a_retried_command_gets_its_first_result_and_applies_once(three: ClusterState) -> None:
    fence = on(RemoveFromInSync, node_id=3)
    state, first = apply(three, fence)
    assert first.is_accepted
    again, second = apply(state, fence)
    assert (again, second) == (state, first)
    # A rejection is remembered too: the retry gets it even after the state would allow the command.
    promote = on(PromotePrimary, node_id=3)
    state, refused = apply(state, promote)
    assert refused.code is ResultCode.UNSAFE
    state = accepted(state, on(SetReplicaState, node_id=3, state=PARTIAL))
    state = accepted(state, on(AddToInSync, node_id=3))
    assert apply(state, promote) == (state, refused)


def test_the_dedup_memory_is_bounded() -> None:
    state = cluster(1)
    first = MarkNodeDead(request_id=rid(), node_id=1, at_ms=0)
    state = accepted(state, first)
    for index in range(DEDUP_CAPACITY):
        command: Command = (MarkNodeAlive if index % 2 == 0 else MarkNodeDead)(request_id=rid(), node_id=1, at_ms=index)
        state = accepted(state, command)
    assert len(state.recent_results) == DEDUP_CAPACITY
    assert first.request_id not in state.recent_results
    _, result = apply(state, first)
    assert result.code is ResultCode.UNCHANGED, "a forgotten request id is evaluated again"


def test_a_command_without_request_id_is_invalid_and_not_remembered() -> None:
    state = cluster(1)
    after, result = apply(state, replace(add_node(2), request_id=""))
    assert (after, result.code) == (state, ResultCode.INVALID)


def test_apply_encoded_rejects_garbage_without_touching_the_state() -> None:
    state = cluster(1)
    for garbage in [b"", b"\x01\xc1", b"\x80\x04junk", b"\x01" + b"\x81\xa4kind\xa4nope"]:
        after, result = apply_encoded(state, garbage)
        assert after is state
        assert result.code is ResultCode.INVALID
        assert result.version == state.version
    after, result = apply_encoded(state, encode(add_node(2)))
    assert result.is_accepted and 2 in after.nodes


@pytest.mark.parametrize(
    ("code", "error"),
    [
        (ResultCode.INVALID, InvalidRequest),
        (ResultCode.NOT_FOUND, NotFound),
        (ResultCode.ALREADY_EXISTS, AlreadyExists),
        (ResultCode.STALE, PreconditionFailed),
        (ResultCode.ILLEGAL_TRANSITION, PreconditionFailed),
        (ResultCode.UNSAFE, PreconditionFailed),
        (ResultCode.CONFLICT, PreconditionFailed),
        (ResultCode.UNCHANGED, PreconditionFailed),
    ],
)
def test_rejections_map_to_errors(code: ResultCode, error: type[Exception]) -> None:
    mapped = Result(code, "why", 3).to_error()
    assert type(mapped) is error
    assert str(mapped) == "why"


def test_an_accepted_result_is_not_an_error() -> None:
    with pytest.raises(AssertionError):
        Result(ResultCode.OK, "applied", 1).to_error()


# --- random command sequences: invariants and a dumb model ---

NODE_IDS = (1, 2, 3, 4, 5)
SHARD_COMMANDS = [
    SetReplicaState,
    AddToInSync,
    RemoveFromInSync,
    PromotePrimary,
    AddReplica,
    DropReplica,
    StartShardMove,
    FinishShardMove,
    AbortShardMove,
]
NAMES = ("a", "b")
# The replica diagram, written out again as the oracle: (command, from, to).
MODEL_EDGES = {
    ("set", INITIALIZING, PARTIAL),
    ("set", INITIALIZING, DEAD),
    ("set", PARTIAL, DEAD),
    ("set", DEAD, PARTIAL),
    ("add_to_in_sync", PARTIAL, ACTIVE),
    ("remove_from_in_sync", ACTIVE, DEAD),
}
Flat = tuple[dict[int, Liveness], dict[tuple[str, int, int], ReplicaState], dict[tuple[str, int], tuple[int, int]]]


def flatten(state: ClusterState) -> Flat:
    """Node liveness, replica states and (primary, term) per shard, as plain dicts."""
    nodes = {node_id: node.liveness for node_id, node in state.nodes.items()}
    replicas = {}
    primaries = {}
    for collection in state.collections.values():
        for shard in collection.shards.values():
            primaries[collection.name, shard.shard_id] = (shard.primary, shard.primary_term)
            for replica in shard.replicas:
                replicas[collection.name, shard.shard_id, replica.node_id] = replica.state
    return nodes, replicas, primaries


def model(state: ClusterState, command: Command) -> Flat | None | str:
    """What the flattened state becomes (None: rejected), for node and replica
    commands; ``"unmodelled"`` for the others."""
    nodes, replicas, primaries = flatten(state)
    if command.expected_version not in (None, state.version):
        return None
    match command:
        case AddNode() if command.node_id not in nodes:
            nodes[command.node_id] = Liveness.ALIVE
        case RemoveNode() if command.node_id in nodes and all(key[2] != command.node_id for key in replicas):
            del nodes[command.node_id]
        case MarkNodeDead() | MarkNodeAlive() if command.node_id in nodes:
            liveness = Liveness.DEAD if isinstance(command, MarkNodeDead) else Liveness.ALIVE
            if nodes[command.node_id] is liveness:
                return None
            nodes[command.node_id] = liveness
        case AddNode() | RemoveNode() | MarkNodeDead() | MarkNodeAlive():
            return None
        case SetReplicaState() | AddToInSync() | RemoveFromInSync() | PromotePrimary() | AddReplica() | DropReplica():
            shard = (command.collection, command.shard_id)
            if shard not in primaries or command.expected_primary_term not in (None, primaries[shard][1]):
                return None
            if not _model_replica_command(state, command, nodes, replicas, primaries):
                return None
        case _:
            return "unmodelled"
    return nodes, replicas, primaries


def _model_replica_command(
    state: ClusterState,
    command: SetReplicaState | AddToInSync | RemoveFromInSync | PromotePrimary | AddReplica | DropReplica,
    nodes: dict[int, Liveness],
    replicas: dict[tuple[str, int, int], ReplicaState],
    primaries: dict[tuple[str, int], tuple[int, int]],
) -> bool:
    """Applies the command to the flat dicts; False when the model rejects it."""
    shard = (command.collection, command.shard_id)
    key = (*shard, command.node_id)
    current = replicas.get(key)
    primary = primaries[shard][0]
    in_sync = sum(1 for other, value in replicas.items() if other[:2] == shard and value is ACTIVE)
    wcf = state.collections[command.collection].write_consistency_factor
    keeps_wcf = current is not ACTIVE or in_sync - 1 >= wcf
    if isinstance(command, AddReplica):
        if current is not None or nodes.get(command.node_id) is not Liveness.ALIVE:
            return False
        replicas[key] = INITIALIZING
        return True
    if current is None:
        return False
    match command:
        case SetReplicaState():
            if command.expected_state not in (None, current) or ("set", current, command.state) not in MODEL_EDGES:
                return False
            replicas[key] = command.state
        case AddToInSync() | RemoveFromInSync():
            name = "add_to_in_sync" if isinstance(command, AddToInSync) else "remove_from_in_sync"
            target = ACTIVE if isinstance(command, AddToInSync) else DEAD
            # A fence may go below write_consistency_factor (the shard then refuses writes).
            if (name, current, target) not in MODEL_EDGES or command.node_id == primary:
                return False
            replicas[key] = target
        case PromotePrimary():
            if current is not ACTIVE or command.node_id == primary or nodes[command.node_id] is not Liveness.ALIVE:
                return False
            primaries[shard] = (command.node_id, state.version + 1)
        case DropReplica():
            move = state.collections[command.collection].shards[command.shard_id].move
            in_move = move is not None and command.node_id in (move.source, move.target)
            if command.expected_state not in (None, current) or in_move or command.node_id == primary or not keeps_wcf:
                return False
            del replicas[key]
    return True


def check_invariants(state: ClusterState) -> None:
    assert len(state.recent_results) <= DEDUP_CAPACITY
    for node_id, node in state.nodes.items():
        assert node.node_id == node_id
        assert node.liveness_since_version <= state.version
    for name, collection in state.collections.items():
        assert collection.name == name
        assert 1 <= collection.write_consistency_factor <= collection.replication_factor
        keys = collection.shard_keys if collection.sharding_method is ShardingMethod.CUSTOM else (None,)
        for key in keys:
            shards = [shard for shard in collection.shards.values() if shard.shard_key == key]
            slots = sorted(slot for shard in shards for slot in shard.slots)
            assert slots == list(range(SLOT_COUNT)), "the shards of a key own every slot exactly once"
        for shard_id, shard in collection.shards.items():
            assert shard.shard_id == shard_id < collection.next_shard_id
            nodes = [replica.node_id for replica in shard.replicas]
            assert nodes == sorted(set(nodes)), "replicas of a shard are on distinct nodes"
            assert set(nodes) <= state.nodes.keys(), "every replica is on a member node"
            assert shard.in_sync == {replica.node_id for replica in shard.replicas if replica.state is ACTIVE}
            assert shard.primary in shard.in_sync, "primary ∈ in-sync ⊆ active"
            assert shard.primary_term <= state.version
            if shard.move is not None:
                assert shard.move.source != shard.move.target
                assert {shard.move.source, shard.move.target} <= set(nodes)


@st.composite
def commands_for(draw: st.DrawFn, state: ClusterState) -> Command:
    """A command for ``state``: half of them the natural next step of some
    replica (so sequences get somewhere), the rest aimed mostly at what exists
    and sometimes at what does not."""
    common: dict[str, Any] = {
        "request_id": rid(),
        "expected_version": draw(st.sampled_from([None] * 8 + [state.version, max(0, state.version - 1)])),
    }
    kind = draw(st.sampled_from(["node", "collection"] + ["shard"] * 4 + ["next_step"] * 4))
    if kind == "node":
        return draw(_node_commands(state, common))
    names = sorted(set(NAMES) | state.collections.keys())
    if kind == "collection":
        return draw(_collection_commands(state, common, names))
    shards = _shard_refs(state)
    if kind == "next_step" and shards:
        # Prefer shards that are somewhere along the diagram, so that lifecycles complete.
        busy = [(name, shard) for name, shard in shards if shard.move or shard.in_sync != _holders(shard)]
        name, shard = draw(st.sampled_from(busy if busy and draw(st.integers(0, 3)) else shards))
        return draw(_next_steps(state, common, name, shard.shard_id))
    name = draw(st.sampled_from(names))
    collection = state.collections.get(name)
    shard_id = draw(st.sampled_from(sorted({0, 1} | (set(collection.shards) if collection else set()))))
    return draw(_shard_commands(state, common, name, shard_id))


def _shard_refs(state: ClusterState) -> list[tuple[str, ShardState]]:
    return [(name, shard) for name, collection in state.collections.items() for shard in collection.shards.values()]


def _holders(shard: ShardState) -> set[int]:
    return {replica.node_id for replica in shard.replicas}


@st.composite
def _node_commands(draw: st.DrawFn, state: ClusterState, common: dict[str, Any]) -> Command:
    node_id = draw(st.sampled_from(sorted(set(NODE_IDS) | state.nodes.keys())))
    node_command = draw(st.sampled_from([AddNode, RemoveNode, MarkNodeDead, MarkNodeAlive, MarkNodeAlive]))
    if node_command is AddNode:
        return replace(add_node(node_id), **common)
    if node_command is RemoveNode:
        return RemoveNode(**common, node_id=node_id)
    return node_command(**common, node_id=node_id, at_ms=draw(st.integers(0, 100)))


@st.composite
def _shard_commands(draw: st.DrawFn, state: ClusterState, common: dict[str, Any], name: str, shard_id: int) -> Command:
    shard = state.shard(name, shard_id)
    holders = [replica.node_id for replica in shard.replicas] if shard else []
    node_ids = sorted(set(NODE_IDS) | state.nodes.keys())
    terms = [None, None, None] + ([shard.primary_term, shard.primary_term - 1] if shard else [])
    target = {**common, "collection": name, "shard_id": shard_id, "expected_primary_term": draw(st.sampled_from(terms))}
    node_id = draw(st.sampled_from(holders * 3 + node_ids))
    states = st.sampled_from(ReplicaState)
    command = draw(st.sampled_from(SHARD_COMMANDS))
    if command is SetReplicaState:
        return SetReplicaState(**target, node_id=node_id, state=draw(states), expected_state=draw(st.none() | states))
    if command is DropReplica:
        return DropReplica(**target, node_id=node_id, expected_state=draw(st.none() | states))
    if command in (AddToInSync, RemoveFromInSync, PromotePrimary, AddReplica):
        return command(**target, node_id=node_id)
    if command in (FinishShardMove, AbortShardMove) and shard is not None and shard.move is not None:
        return command(**target, source=shard.move.source, target=shard.move.target)
    return command(**target, source=node_id, target=draw(st.sampled_from(node_ids)))


@st.composite
def _next_steps(draw: st.DrawFn, state: ClusterState, common: dict[str, Any], name: str, shard_id: int) -> Command:
    """What a controller or primary would do next with one replica of the shard."""
    shard = state.shard(name, shard_id)
    assert shard is not None
    target = {**common, "collection": name, "shard_id": shard_id, "expected_primary_term": shard.primary_term}
    replica = draw(st.sampled_from(shard.replicas))
    if shard.move is not None and draw(st.booleans()):
        moving = shard.replica(shard.move.target)
        assert moving is not None
        if moving.state is ACTIVE or draw(st.integers(0, 4)) == 0:
            move_command = draw(st.sampled_from([FinishShardMove, FinishShardMove, AbortShardMove]))
            return move_command(**target, source=shard.move.source, target=shard.move.target)
        replica = moving
    node_id = replica.node_id
    if replica.state is not ACTIVE:
        if replica.state is PARTIAL:
            return draw(st.sampled_from([AddToInSync, DropReplica]))(**target, node_id=node_id)
        return SetReplicaState(**target, node_id=node_id, state=PARTIAL, expected_state=replica.state)
    others = sorted(state.nodes.keys() - {r.node_id for r in shard.replicas}) or [node_id]
    return draw(
        st.sampled_from(
            [
                RemoveFromInSync(**target, node_id=node_id),
                PromotePrimary(**target, node_id=node_id),
                AddReplica(**target, node_id=others[0]),
                StartShardMove(**target, source=node_id, target=others[-1]),
            ]
        )
    )


@st.composite
def _collection_commands(draw: st.DrawFn, state: ClusterState, common: dict[str, Any], names: list[str]) -> Command:
    name = draw(st.sampled_from(names))
    collection = state.collections.get(name)
    if collection is not None and draw(st.integers(0, 3)) == 0:
        return DeleteCollection(**common, name=name)
    alive = sum(1 for node in state.nodes.values() if node.liveness is Liveness.ALIVE)
    replication_factor = draw(st.integers(1, 3))
    shard_number = draw(st.integers(1, 3))
    custom = draw(st.booleans())
    keys: tuple[ShardKey, ...] = ()
    if custom:
        keys = tuple(draw(st.lists(st.sampled_from(["x", "y", 7]), unique=True, max_size=2)))
    if collection is not None and collection.sharding_method is ShardingMethod.CUSTOM and draw(st.booleans()):
        key: ShardKey = draw(st.sampled_from(["x", "y", 7]))
        if key in collection.shard_keys and draw(st.booleans()):
            return DeleteShardKey(**common, collection=name, shard_key=key)
        count, replication_factor = collection.shard_number, collection.replication_factor
        placement = _placement(draw, state, count=count, replication_factor=replication_factor, alive=alive)
        return CreateShardKey(**common, collection=name, shard_key=key, placement=placement)
    count = shard_number * (len(keys) if custom else 1)
    return CreateCollection(
        **common,
        name=name,
        config=b"{}",
        shard_number=shard_number,
        replication_factor=replication_factor,
        write_consistency_factor=draw(st.integers(1, replication_factor + 1)),
        sharding_method=ShardingMethod.CUSTOM if custom else ShardingMethod.AUTO,
        shard_keys=keys,
        placement=_placement(draw, state, count=count, replication_factor=replication_factor, alive=alive),
    )


def _placement(draw: st.DrawFn, state: ClusterState, *, count: int, replication_factor: int, alive: int) -> Placement:
    """Usually what the controller would propose; sometimes arbitrary."""
    if replication_factor <= alive and draw(st.integers(0, 4)) > 0:
        seed = draw(st.integers(0, 9))
        return place_shards(state, shard_count=count, replication_factor=replication_factor, seed=seed)
    nodes = st.lists(st.sampled_from(NODE_IDS), min_size=1, max_size=3).map(tuple)
    return tuple(draw(st.lists(nodes, min_size=count, max_size=count)))


class ClusterMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.state = ClusterState()
        self.sent: list[tuple[Command, Result]] = []
        self.terms: dict[tuple[str, int], int] = {}

    @initialize(node_count=st.integers(2, 5), replication_factor=st.integers(1, 3), shard_number=st.integers(1, 3))
    def start_with_a_collection(self, node_count: int, replication_factor: int, shard_number: int) -> None:
        """Most interesting commands need nodes and shards: start with some."""
        self.state = cluster(node_count)
        replication_factor = min(replication_factor, node_count)
        placement = place_shards(self.state, shard_count=shard_number, replication_factor=replication_factor, seed=0)
        wcf = max(1, replication_factor - 1)
        command = create("a", placement=placement, replication_factor=replication_factor, write_consistency_factor=wcf)
        self.state, result = apply(self.state, command)
        assert result.is_accepted
        self.sent.append((command, result))

    @rule(data=st.data())
    def apply_a_command(self, data: st.DataObject) -> None:
        command = data.draw(commands_for(self.state))
        before = self.state
        after, result = apply(before, command)
        assert apply_encoded(before, encode(command)) == (after, result), "the encoded path is the same"
        assert after.recent_results[command.request_id] == result
        if result.is_accepted:
            assert after.version == result.version == before.version + 1
        else:
            assert result.version == before.version
            assert replace(after, recent_results=before.recent_results) == before
        expected = model(before, command)
        if expected != "unmodelled":
            assert (expected is not None) == result.is_accepted, (command, result)
            assert expected is None or expected == flatten(after), command
        event(f"{type(command).__name__}: {result.code.value}")  # see --hypothesis-show-statistics
        self.state = after
        self.sent.append((command, result))

    @rule(data=st.data())
    def retry_a_command(self, data: st.DataObject) -> None:
        command, first = data.draw(st.sampled_from(self.sent))
        assert apply(self.state, command) == (self.state, first)

    @invariant()
    def invariants_hold(self) -> None:
        check_invariants(self.state)

    @invariant()
    def primary_terms_never_decrease(self) -> None:
        for name, collection in self.state.collections.items():
            for shard_id, shard in collection.shards.items():
                assert shard.primary_term >= self.terms.get((name, shard_id), 0)
                self.terms[name, shard_id] = shard.primary_term


TestClusterMachine = ClusterMachine.TestCase
TestClusterMachine.settings = settings(
    max_examples=60, stateful_step_count=40, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

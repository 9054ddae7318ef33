"""The wire encoding of cluster commands: exact round trips for every command
type, a pinned format, and garbage that only ever raises InvalidRequest."""

from __future__ import annotations

import pickle
from typing import Any, get_args

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qcluster.cluster.commands import (
    ADDRESS_LENGTH_MAX,
    FORMAT_VERSION,
    REQUEST_ID_LENGTH_MAX,
    SHARD_KEY_LENGTH_MAX,
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
    PromotePrimary,
    RemoveFromInSync,
    RemoveNode,
    SetAliases,
    SetReplicaState,
    StartShardMove,
    UpdateCollectionConfig,
    decode,
    encode,
)
from qcluster.cluster.state import ReplicaState, ShardingMethod
from qcluster.errors import InvalidRequest
from qcluster.types import UINT64_MAX

uints = st.integers(0, UINT64_MAX)
optional_uints = st.none() | uints
names = st.text(max_size=20)
addresses = st.text(max_size=ADDRESS_LENGTH_MAX)
shard_keys = st.text(max_size=SHARD_KEY_LENGTH_MAX) | uints
placements = st.lists(st.lists(uints, max_size=4).map(tuple), max_size=4).map(tuple)
replica_states = st.sampled_from(ReplicaState)

COMMON: dict[str, Any] = {
    "request_id": st.text(min_size=1, max_size=REQUEST_ID_LENGTH_MAX),
    "expected_version": optional_uints,
}
SHARD = {**COMMON, "collection": names, "shard_id": uints, "expected_primary_term": optional_uints}
REPLICA = {**SHARD, "node_id": uints}
MOVE = {**SHARD, "source": uints, "target": uints}

STRATEGIES: dict[type, st.SearchStrategy[Any]] = {
    AddNode: st.builds(
        AddNode,
        **COMMON,
        node_id=uints,
        p2p_address=addresses,
        http_address=addresses,
        grpc_address=addresses,
        at_ms=uints,
    ),
    RemoveNode: st.builds(RemoveNode, **COMMON, node_id=uints),
    MarkNodeDead: st.builds(MarkNodeDead, **COMMON, node_id=uints, at_ms=uints),
    MarkNodeAlive: st.builds(MarkNodeAlive, **COMMON, node_id=uints, at_ms=uints),
    CreateCollection: st.builds(
        CreateCollection,
        **COMMON,
        name=names,
        config=st.binary(max_size=64),
        shard_number=uints,
        replication_factor=uints,
        write_consistency_factor=uints,
        sharding_method=st.sampled_from(ShardingMethod),
        shard_keys=st.lists(shard_keys, max_size=4).map(tuple),
        placement=placements,
    ),
    DeleteCollection: st.builds(DeleteCollection, **COMMON, name=names),
    UpdateCollectionConfig: st.builds(UpdateCollectionConfig, **COMMON, name=names, config=st.binary(max_size=64),
                                      replication_factor=uints, write_consistency_factor=uints),
    SetAliases: st.builds(SetAliases, **COMMON, aliases=st.lists(st.tuples(names, names), max_size=4).map(tuple)),
    CreateShardKey: st.builds(CreateShardKey, **COMMON, collection=names, shard_key=shard_keys, placement=placements),
    DeleteShardKey: st.builds(DeleteShardKey, **COMMON, collection=names, shard_key=shard_keys),
    SetReplicaState: st.builds(
        SetReplicaState, **REPLICA, state=replica_states, expected_state=st.none() | replica_states
    ),
    AddToInSync: st.builds(AddToInSync, **REPLICA),
    RemoveFromInSync: st.builds(RemoveFromInSync, **REPLICA),
    PromotePrimary: st.builds(PromotePrimary, **REPLICA),
    AddReplica: st.builds(AddReplica, **REPLICA),
    DropReplica: st.builds(DropReplica, **REPLICA, expected_state=st.none() | replica_states),
    StartShardMove: st.builds(StartShardMove, **MOVE),
    FinishShardMove: st.builds(FinishShardMove, **MOVE),
    AbortShardMove: st.builds(AbortShardMove, **MOVE),
}
any_command = st.one_of(*STRATEGIES.values())


def _decodes_or_rejects(data: bytes) -> None:
    """The documented contract: a command back, or InvalidRequest — nothing else."""
    try:
        command = decode(data)
    except InvalidRequest as exc:
        assert exc.message.startswith("cluster command")
    else:
        assert isinstance(command, get_args(Command))
        assert decode(encode(command)) == command


def test_every_command_type_has_a_strategy() -> None:
    assert set(STRATEGIES) == set(get_args(Command))


@settings(max_examples=200)
@given(any_command)
def test_round_trip(command: Command) -> None:
    data = encode(command)
    assert data[0] == FORMAT_VERSION
    assert decode(data) == command


def test_format_is_pinned() -> None:
    # The bytes are what the Raft journal keeps: a change here breaks replay of existing journals.
    command = PromotePrimary(request_id="r1", collection="c", shard_id=2, node_id=7, expected_primary_term=5)
    assert encode(command).hex() == (
        "01"  # format version
        "87a46b696e64af70726f6d6f74655f7072696d617279aa726571756573745f6964a27231b065787065637465645f76"
        "657273696f6ec0aa636f6c6c656374696f6ea163a873686172645f696402b565787065637465645f7072696d617279"
        "5f7465726d05a76e6f64655f696407"
    )
    assert msgpack.unpackb(encode(command)[1:]) == {
        "kind": "promote_primary",
        "request_id": "r1",
        "expected_version": None,
        "collection": "c",
        "shard_id": 2,
        "expected_primary_term": 5,
        "node_id": 7,
    }


@settings(max_examples=200)
@given(st.binary(max_size=64))
def test_random_bytes_are_rejected_cleanly(data: bytes) -> None:
    _decodes_or_rejects(data)
    _decodes_or_rejects(bytes([FORMAT_VERSION]) + data)


# Any msgpack value (integers within msgpack's range).
scalars = st.none() | st.booleans() | st.integers(-(2**63), UINT64_MAX) | st.floats() | st.text(max_size=8)
values = st.recursive(
    scalars | st.binary(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=8,
)


@settings(max_examples=200)
@given(any_command, st.data())
def test_a_field_of_the_wrong_shape_is_rejected_cleanly(command: Command, data: st.DataObject) -> None:
    body = msgpack.unpackb(encode(command)[1:])
    field = data.draw(st.sampled_from(sorted(body)))
    body[field] = data.draw(values)
    _decodes_or_rejects(bytes([FORMAT_VERSION]) + msgpack.packb(body))


@settings(max_examples=200)
@given(any_command, st.data())
def test_damaged_encodings_are_rejected_cleanly(command: Command, data: st.DataObject) -> None:
    encoded = bytearray(encode(command))
    position = data.draw(st.integers(0, len(encoded) - 1))
    encoded[position] = data.draw(st.integers(0, 255))
    _decodes_or_rejects(bytes(encoded))
    _decodes_or_rejects(bytes(encoded[: data.draw(st.integers(0, len(encoded)))]))


def _body(**changes: object) -> bytes:
    body = msgpack.unpackb(encode(RemoveNode(request_id="r", node_id=3))[1:])
    body.update(changes)
    return bytes([FORMAT_VERSION]) + msgpack.packb(body)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty"),
        (bytes([FORMAT_VERSION + 1]) + _body()[1:], "unknown format version"),
        (bytes([FORMAT_VERSION]) + b"\xc1", "not valid msgpack"),
        (bytes([FORMAT_VERSION]) + msgpack.packb([1, 2]), "expected a map"),
        (_body(kind="format_disk"), "unknown kind 'format_disk'"),
        (_body(extra=1), "unexpected fields extra"),
        (_body(node_id=True), "remove_node.node_id: expected an unsigned integer, got bool"),
        (_body(node_id=-1), "out of the unsigned 64-bit range"),
        (_body(request_id="x" * (REQUEST_ID_LENGTH_MAX + 1)), "longer than 128 characters"),
    ],
)
def test_rejections_say_what_is_wrong(data: bytes, message: str) -> None:
    with pytest.raises(InvalidRequest, match=message):
        decode(data)


def test_a_missing_field_is_rejected() -> None:
    body = msgpack.unpackb(_body()[1:])
    del body["node_id"]
    with pytest.raises(InvalidRequest, match="missing or unexpected fields node_id"):
        decode(bytes([FORMAT_VERSION]) + msgpack.packb(body))


def test_pickle_is_never_accepted() -> None:
    with pytest.raises(InvalidRequest, match="unknown format version 128"):
        decode(pickle.dumps(RemoveNode(request_id="r", node_id=3)))


def test_unknown_enum_values_are_rejected() -> None:
    command = SetReplicaState(request_id="r", collection="c", shard_id=0, node_id=1, state=ReplicaState.DEAD)
    body = msgpack.unpackb(encode(command)[1:])
    body["state"] = "zombie"
    with pytest.raises(InvalidRequest, match="set_replica_state.state: expected one of initializing"):
        decode(bytes([FORMAT_VERSION]) + msgpack.packb(body))

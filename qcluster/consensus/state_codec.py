"""The whole ClusterState as bytes: what the Raft full dump (log compaction,
and the snapshot a lagging follower receives) holds instead of a pickle.

pysyncobj would pickle the attributes of its SyncObj for a full dump; we
replace its serializer (``_full_dump.py``) so that nothing of ours is ever
pickled: the dump carries this explicit, versioned msgpack encoding, and a
decoder that checks every value's type, so a damaged dump is reported as
``DataCorruption`` instead of becoming a half-built state.

Layout: one format version byte, then a msgpack array::

    [version, nodes, collections, recent_results, aliases]
    alias       = [alias, collection]
    node        = [node_id, p2p_address, http_address, grpc_address, liveness,
                   liveness_since_ms, liveness_since_version]
    collection  = [name, config, shard_number, replication_factor,
                   write_consistency_factor, sharding_method, shard_keys,
                   shards, next_shard_id]
    shard       = [shard_id, shard_key | nil, [slots.start, slots.stop, slots.step],
                   replicas, primary, primary_term, [move.source, move.target] | nil]
    replica     = [node_id, state]
    result      = [request_id, code, message, version]

Every mapping is an array in the mapping's iteration order, and the decoder
rebuilds the dicts in that order. The order is part of the state: the
deduplication memory evicts its oldest entry first, and code that iterates
``nodes`` must see the same order on a node that restored a dump as on one
that applied every command. Positional arrays are compact (the dump holds up
to ``DEDUP_CAPACITY`` results); a changed layout needs a new
``STATE_FORMAT_VERSION``, and a node refuses a version it does not know.
Format 1 (no aliases) is still read.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from typing import Any, Final, TypeVar

import msgpack

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
    ShardKey,
    ShardMove,
    ShardState,
)
from qcluster.errors import DataCorruption
from qcluster.types import UINT64_MAX

__all__ = ["STATE_FORMAT_VERSION", "decode_state", "encode_state"]

STATE_FORMAT_VERSION: Final = 2
_READABLE_VERSIONS: Final = (1, 2)

_EnumT = TypeVar("_EnumT", bound=enum.StrEnum)
_ItemT = TypeVar("_ItemT")


def encode_state(state: ClusterState) -> bytes:
    """The format version byte, then the msgpack array described above."""
    body = [
        state.version,
        [_encode_node(node) for node in state.nodes.values()],
        [_encode_collection(collection) for collection in state.collections.values()],
        [[request_id, *_encode_result(result)] for request_id, result in state.recent_results.items()],
        [[alias, target] for alias, target in state.aliases.items()],
    ]
    encoded = bytes([STATE_FORMAT_VERSION]) + msgpack.packb(body, use_bin_type=True)
    assert encoded[0] == STATE_FORMAT_VERSION
    return encoded


def decode_state(data: bytes) -> ClusterState:
    """Inverse of ``encode_state``. Raises ``DataCorruption``, and only that,
    for anything that is not exactly an encoded state."""
    if not data:
        raise DataCorruption("cluster state: empty")
    if data[0] not in _READABLE_VERSIONS:
        raise DataCorruption(
            f"cluster state: unknown format version {data[0]} (this node reads {_READABLE_VERSIONS})"
        )
    try:
        raw = msgpack.unpackb(data[1:], raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise DataCorruption(f"cluster state: not valid msgpack ({exc})") from exc
    if data[0] == 1:
        version, raw_nodes, raw_collections, raw_results = _array(raw, 4, "state")
        raw_aliases: object = []
    else:
        version, raw_nodes, raw_collections, raw_results, raw_aliases = _array(raw, 5, "state")
    nodes = _ordered(raw_nodes, "state.nodes", _decode_node, key=lambda node: node.node_id)
    collections = _ordered(raw_collections, "state.collections", _decode_collection, key=lambda c: c.name)
    results: dict[str, Result] = {}
    for index, raw_result in enumerate(_list(raw_results, "state.recent_results")):
        path = f"state.recent_results[{index}]"
        request_id, code, message, result_version = _array(raw_result, 4, path)
        request_id = _text(request_id, f"{path}.request_id")
        if request_id in results:
            raise DataCorruption(f"cluster state {path}: request id {request_id!r} appears twice")
        results[request_id] = Result(
            code=_enum(ResultCode, code, f"{path}.code"),
            message=_text(message, f"{path}.message"),
            version=_uint(result_version, f"{path}.version"),
        )
    aliases: dict[str, str] = {}
    for index, raw_alias in enumerate(_list(raw_aliases, "state.aliases")):
        path = f"state.aliases[{index}]"
        alias, target = _array(raw_alias, 2, path)
        aliases[_text(alias, f"{path}[0]")] = _text(target, f"{path}[1]")
    state = ClusterState(
        version=_uint(version, "state.version"), nodes=nodes, collections=collections, aliases=aliases,
        recent_results=results
    )
    assert len(state.nodes) == len(_list(raw_nodes, "state.nodes"))
    return state


# --- encoding ---


def _encode_node(node: NodeInfo) -> list[Any]:
    return [
        node.node_id,
        node.p2p_address,
        node.http_address,
        node.grpc_address,
        node.liveness.value,
        node.liveness_since_ms,
        node.liveness_since_version,
    ]


def _encode_collection(collection: CollectionState) -> list[Any]:
    return [
        collection.name,
        collection.config,
        collection.shard_number,
        collection.replication_factor,
        collection.write_consistency_factor,
        collection.sharding_method.value,
        list(collection.shard_keys),
        [_encode_shard(shard) for shard in collection.shards.values()],
        collection.next_shard_id,
    ]


def _encode_shard(shard: ShardState) -> list[Any]:
    return [
        shard.shard_id,
        shard.shard_key,
        [shard.slots.start, shard.slots.stop, shard.slots.step],
        [[replica.node_id, replica.state.value] for replica in shard.replicas],
        shard.primary,
        shard.primary_term,
        None if shard.move is None else [shard.move.source, shard.move.target],
    ]


def _encode_result(result: Result) -> list[Any]:
    return [result.code.value, result.message, result.version]


# --- decoding: each helper checks one value and names its path on failure ---


def _decode_node(raw: object, path: str) -> NodeInfo:
    node_id, p2p, http, grpc, liveness, since_ms, since_version = _array(raw, 7, path)
    return NodeInfo(
        node_id=_uint(node_id, f"{path}.node_id"),
        p2p_address=_text(p2p, f"{path}.p2p_address"),
        http_address=_text(http, f"{path}.http_address"),
        grpc_address=_text(grpc, f"{path}.grpc_address"),
        liveness=_enum(Liveness, liveness, f"{path}.liveness"),
        liveness_since_ms=_uint(since_ms, f"{path}.liveness_since_ms"),
        liveness_since_version=_uint(since_version, f"{path}.liveness_since_version"),
    )


def _decode_collection(raw: object, path: str) -> CollectionState:
    name, config, shard_number, replication, write_consistency, method, keys, shards, next_id = _array(raw, 9, path)
    return CollectionState(
        name=_text(name, f"{path}.name"),
        config=_bytes(config, f"{path}.config"),
        shard_number=_uint(shard_number, f"{path}.shard_number"),
        replication_factor=_uint(replication, f"{path}.replication_factor"),
        write_consistency_factor=_uint(write_consistency, f"{path}.write_consistency_factor"),
        sharding_method=_enum(ShardingMethod, method, f"{path}.sharding_method"),
        shard_keys=tuple(_shard_key(key, f"{path}.shard_keys[{i}]") for i, key in enumerate(_list(keys, path))),
        shards=_ordered(shards, f"{path}.shards", _decode_shard, key=lambda shard: shard.shard_id),
        next_shard_id=_uint(next_id, f"{path}.next_shard_id"),
    )


def _decode_shard(raw: object, path: str) -> ShardState:
    shard_id, key, slots, replicas, primary, term, move = _array(raw, 7, path)
    start, stop, step = (_uint(value, f"{path}.slots") for value in _array(slots, 3, f"{path}.slots"))
    if step == 0:
        raise DataCorruption(f"cluster state {path}.slots: a range step of 0")
    decoded_replicas = []
    for index, raw_replica in enumerate(_list(replicas, f"{path}.replicas")):
        node_id, state = _array(raw_replica, 2, f"{path}.replicas[{index}]")
        decoded_replicas.append(
            Replica(_uint(node_id, f"{path}.replicas[{index}].node_id"), _enum(ReplicaState, state, f"{path}.replicas"))
        )
    decoded_move = None
    if move is not None:
        source, target = _array(move, 2, f"{path}.move")
        decoded_move = ShardMove(source=_uint(source, f"{path}.move"), target=_uint(target, f"{path}.move"))
    return ShardState(
        shard_id=_uint(shard_id, f"{path}.shard_id"),
        shard_key=None if key is None else _shard_key(key, f"{path}.shard_key"),
        slots=range(start, stop, step),
        replicas=tuple(decoded_replicas),
        primary=_uint(primary, f"{path}.primary"),
        primary_term=_uint(term, f"{path}.primary_term"),
        move=decoded_move,
    )


def _ordered(
    raw: object, path: str, decode: Callable[[object, str], _ItemT], *, key: Callable[[_ItemT], Any]
) -> Mapping[Any, _ItemT]:
    """An array of values -> a dict keyed by ``key(value)``, in array order, keys distinct."""
    decoded: dict[Any, _ItemT] = {}
    for index, item in enumerate(_list(raw, path)):
        value = decode(item, f"{path}[{index}]")
        if key(value) in decoded:
            raise DataCorruption(f"cluster state {path}[{index}]: key {key(value)!r} appears twice")
        decoded[key(value)] = value
    return decoded


def _list(raw: object, path: str) -> list[Any]:
    if not isinstance(raw, list):
        raise DataCorruption(f"cluster state {path}: expected an array, got {type(raw).__name__}")
    return raw


def _array(raw: object, length: int, path: str) -> list[Any]:
    items = _list(raw, path)
    if len(items) != length:
        raise DataCorruption(f"cluster state {path}: expected {length} fields, got {len(items)}")
    return items


def _uint(raw: object, path: str) -> int:
    # bool is an int in Python; a boolean where a number belongs is damage.
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise DataCorruption(f"cluster state {path}: expected an unsigned integer, got {type(raw).__name__}")
    if not 0 <= raw <= UINT64_MAX:
        raise DataCorruption(f"cluster state {path}: {raw} is out of the unsigned 64-bit range")
    return raw


def _text(raw: object, path: str) -> str:
    if not isinstance(raw, str):
        raise DataCorruption(f"cluster state {path}: expected a string, got {type(raw).__name__}")
    return raw


def _bytes(raw: object, path: str) -> bytes:
    if not isinstance(raw, bytes):
        raise DataCorruption(f"cluster state {path}: expected bytes, got {type(raw).__name__}")
    return raw


def _shard_key(raw: object, path: str) -> ShardKey:
    return raw if isinstance(raw, str) else _uint(raw, path)


def _enum(enum_type: type[_EnumT], raw: object, path: str) -> _EnumT:
    if not isinstance(raw, str) or raw not in enum_type.__members__.values():
        raise DataCorruption(f"cluster state {path}: {raw!r} is not a {enum_type.__name__}")
    return enum_type(raw)

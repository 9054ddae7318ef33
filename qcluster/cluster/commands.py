"""The commands that change a ClusterState, and their wire encoding.

Raft replicates these as bytes through one replicated ``apply(bytes)``
(pysyncobj derives method ids from method names, so one method and a versioned
payload is the only layout that survives adding a command). The encoding is
explicit: one format version byte, then a msgpack map whose ``kind`` and field
names are listed in ``_SCHEMAS`` below; never pickle, so bytes from the log or
a peer can only ever become one of these dataclasses. ``decode`` checks every
field's type and raises ``InvalidRequest`` (and nothing else) on anything
else. Values are checked against the state by ``transitions.apply``.

Every command carries a ``request_id``: a retried command (a proposal whose
outcome was unknown) is applied once and answered with its first result. The
optional ``expected_*`` fields are compare-and-set conditions; a command whose
expectation no longer holds is rejected as stale. A renamed field or kind is a
format change and needs a new ``FORMAT_VERSION``.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeAlias, TypeVar

import msgpack

from qcluster.cluster.state import NodeId, ReplicaState, ShardId, ShardingMethod, ShardKey
from qcluster.errors import InvalidRequest
from qcluster.limits import COLLECTION_NAME_LENGTH_MAX
from qcluster.types import UINT64_MAX

__all__ = [
    "FORMAT_VERSION",
    "AbortShardMove",
    "AddNode",
    "AddReplica",
    "AddToInSync",
    "Command",
    "CreateCollection",
    "CreateShardKey",
    "DeleteCollection",
    "DeleteShardKey",
    "DropReplica",
    "FinishShardMove",
    "MarkNodeAlive",
    "MarkNodeDead",
    "Placement",
    "PromotePrimary",
    "RemoveFromInSync",
    "RemoveNode",
    "SetAliases",
    "SetReplicaState",
    "StartShardMove",
    "UpdateCollectionConfig",
    "decode",
    "encode",
]

FORMAT_VERSION: Final = 1
REQUEST_ID_LENGTH_MAX: Final = 128
ADDRESS_LENGTH_MAX: Final = 255
SHARD_KEY_LENGTH_MAX: Final = 255

# Per shard, in shard id order: the nodes of its replicas, the primary first.
Placement: TypeAlias = tuple[tuple[NodeId, ...], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Command:
    request_id: str
    # Apply only if the state is still at this version, e.g. a plan computed on it.
    expected_version: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _ShardCommand(_Command):
    collection: str
    shard_id: ShardId
    # Apply only if this is still the shard's primary term: fences a deposed primary.
    expected_primary_term: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class _ReplicaCommand(_ShardCommand):
    node_id: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class AddNode(_Command):
    node_id: NodeId
    p2p_address: str
    http_address: str
    grpc_address: str
    at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveNode(_Command):
    """Only a node that holds no replica can go."""

    node_id: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkNodeDead(_Command):
    node_id: NodeId
    at_ms: int  # the proposer's wall clock: the state machine has none


@dataclass(frozen=True, slots=True, kw_only=True)
class MarkNodeAlive(_Command):
    node_id: NodeId
    at_ms: int


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateCollection(_Command):
    """Placement is computed by ``placement.place_shards`` before proposing, so
    every node applies the same replicas whatever its own view of the load."""

    name: str
    config: bytes  # encoded by the storage layer
    shard_number: int
    replication_factor: int
    write_consistency_factor: int
    sharding_method: ShardingMethod
    # Custom sharding: shard_number shards per key, placed key after key.
    shard_keys: tuple[ShardKey, ...]
    placement: Placement


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteCollection(_Command):
    name: str


@dataclass(frozen=True, slots=True, kw_only=True)
class UpdateCollectionConfig(_Command):
    """A collection's new config (computed from a PATCH by the proposer,
    compare-and-set with ``expected_version``)."""

    name: str
    config: bytes
    replication_factor: int
    write_consistency_factor: int


@dataclass(frozen=True, slots=True, kw_only=True)
class SetAliases(_Command):
    """Every alias of the cluster, (alias, collection) sorted: the result of
    a list of alias actions that the proposer applied to the state at
    ``expected_version`` (so the actions apply all together or not at all)."""

    aliases: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class CreateShardKey(_Command):
    collection: str
    shard_key: ShardKey
    placement: Placement  # shard_number shards


@dataclass(frozen=True, slots=True, kw_only=True)
class DeleteShardKey(_Command):
    collection: str
    shard_key: ShardKey


@dataclass(frozen=True, slots=True, kw_only=True)
class SetReplicaState(_ReplicaCommand):
    """Moves a replica along an edge of the diagram that leaves the in-sync set alone."""

    state: ReplicaState
    expected_state: ReplicaState | None = None  # Qdrant's from_state


@dataclass(frozen=True, slots=True, kw_only=True)
class AddToInSync(_ReplicaCommand):
    """PARTIAL -> ACTIVE: the primary saw the replica catch up under its write barrier."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RemoveFromInSync(_ReplicaCommand):
    """ACTIVE -> DEAD: the primary asks this before acknowledging a write the replica failed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PromotePrimary(_ReplicaCommand):
    """An in-sync replica becomes primary under a new term."""


@dataclass(frozen=True, slots=True, kw_only=True)
class AddReplica(_ReplicaCommand):
    """A new INITIALIZING replica, to be filled from the primary."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DropReplica(_ReplicaCommand):
    expected_state: ReplicaState | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class StartShardMove(_ShardCommand):
    """Adds an INITIALIZING replica on ``target`` that will replace ``source``'s."""

    source: NodeId
    target: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class FinishShardMove(_ShardCommand):
    """Drops ``source``'s replica once ``target``'s is in sync; hands the
    primary over (new term) when ``source`` was the primary."""

    source: NodeId
    target: NodeId


@dataclass(frozen=True, slots=True, kw_only=True)
class AbortShardMove(_ShardCommand):
    """Drops ``target``'s replica and forgets the move."""

    source: NodeId
    target: NodeId


Command: TypeAlias = (
    AddNode
    | RemoveNode
    | MarkNodeDead
    | MarkNodeAlive
    | CreateCollection
    | DeleteCollection
    | UpdateCollectionConfig
    | SetAliases
    | CreateShardKey
    | DeleteShardKey
    | SetReplicaState
    | AddToInSync
    | RemoveFromInSync
    | PromotePrimary
    | AddReplica
    | DropReplica
    | StartShardMove
    | FinishShardMove
    | AbortShardMove
)

# --- field codecs: (encode, decode); decode gets the raw msgpack value and a path for errors ---

_Enum = TypeVar("_Enum", bound=enum.StrEnum)


@dataclass(frozen=True, slots=True)
class _Field:
    encode: Callable[[Any], Any]
    decode: Callable[[object, str], Any]


def _decode_uint(raw: object, path: str) -> int:
    # bool is an int in Python; a boolean where a number belongs is malformed.
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise InvalidRequest(f"cluster command {path}: expected an unsigned integer, got {type(raw).__name__}")
    if not 0 <= raw <= UINT64_MAX:
        raise InvalidRequest(f"cluster command {path}: {raw} is out of the unsigned 64-bit range")
    return raw


def _text_decoder(length_max: int) -> Callable[[object, str], str]:
    def decode_text(raw: object, path: str) -> str:
        if not isinstance(raw, str):
            raise InvalidRequest(f"cluster command {path}: expected a string, got {type(raw).__name__}")
        if len(raw) > length_max:
            raise InvalidRequest(f"cluster command {path}: longer than {length_max} characters")
        return raw

    return decode_text


def _decode_bytes(raw: object, path: str) -> bytes:
    if not isinstance(raw, bytes):
        raise InvalidRequest(f"cluster command {path}: expected bytes, got {type(raw).__name__}")
    return raw


def _decode_list(raw: object, path: str) -> list[object]:
    if not isinstance(raw, list):
        raise InvalidRequest(f"cluster command {path}: expected an array, got {type(raw).__name__}")
    return raw


def _decode_shard_key(raw: object, path: str) -> ShardKey:
    if isinstance(raw, str):
        return _text_decoder(SHARD_KEY_LENGTH_MAX)(raw, path)
    return _decode_uint(raw, path)


def _decode_shard_keys(raw: object, path: str) -> tuple[ShardKey, ...]:
    return tuple(_decode_shard_key(item, f"{path}[{index}]") for index, item in enumerate(_decode_list(raw, path)))


def _decode_placement(raw: object, path: str) -> Placement:
    shards = _decode_list(raw, path)
    placement: list[tuple[NodeId, ...]] = []
    for shard, raw_nodes in enumerate(shards):
        nodes = _decode_list(raw_nodes, f"{path}[{shard}]")
        placement.append(tuple(_decode_uint(node, f"{path}[{shard}][{index}]") for index, node in enumerate(nodes)))
    return tuple(placement)


def _decode_aliases(raw: object, path: str) -> tuple[tuple[str, str], ...]:
    decode_name = _text_decoder(COLLECTION_NAME_LENGTH_MAX)
    pairs: list[tuple[str, str]] = []
    for index, item in enumerate(_decode_list(raw, path)):
        pair = _decode_list(item, f"{path}[{index}]")
        if len(pair) != 2:
            raise InvalidRequest(f"cluster command {path}[{index}]: expected [alias, collection]")
        pairs.append((decode_name(pair[0], f"{path}[{index}][0]"), decode_name(pair[1], f"{path}[{index}][1]")))
    return tuple(pairs)


def _optional(field: _Field) -> _Field:
    return _Field(
        encode=lambda value: None if value is None else field.encode(value),
        decode=lambda raw, path: None if raw is None else field.decode(raw, path),
    )


def _same(value: Any) -> Any:
    return value


def _enum_field(enum_type: type[_Enum]) -> _Field:
    choices = tuple(member.value for member in enum_type)

    def decode_enum(raw: object, path: str) -> _Enum:
        if not isinstance(raw, str) or raw not in choices:
            raise InvalidRequest(f"cluster command {path}: expected one of {', '.join(choices)}, got {raw!r}")
        return enum_type(raw)

    return _Field(encode=lambda value: value.value, decode=decode_enum)


_UINT = _Field(encode=_same, decode=_decode_uint)
_NAME = _Field(encode=_same, decode=_text_decoder(COLLECTION_NAME_LENGTH_MAX))
_ADDRESS = _Field(encode=_same, decode=_text_decoder(ADDRESS_LENGTH_MAX))
_BYTES = _Field(encode=_same, decode=_decode_bytes)
_SHARD_KEY = _Field(encode=_same, decode=_decode_shard_key)
_SHARD_KEYS = _Field(encode=list, decode=_decode_shard_keys)
_PLACEMENT = _Field(encode=lambda placement: [list(nodes) for nodes in placement], decode=_decode_placement)
_REPLICA_STATE = _enum_field(ReplicaState)

_COMMON = {
    "request_id": _Field(encode=_same, decode=_text_decoder(REQUEST_ID_LENGTH_MAX)),
    "expected_version": _optional(_UINT),
}
_SHARD = {**_COMMON, "collection": _NAME, "shard_id": _UINT, "expected_primary_term": _optional(_UINT)}
_REPLICA = {**_SHARD, "node_id": _UINT}
_MOVE = {**_SHARD, "source": _UINT, "target": _UINT}

# Command class -> (wire kind, wire fields). The kinds and field names are the format.
_SCHEMAS: dict[type[Command], tuple[str, dict[str, _Field]]] = {
    AddNode: (
        "add_node",
        {
            **_COMMON,
            "node_id": _UINT,
            "p2p_address": _ADDRESS,
            "http_address": _ADDRESS,
            "grpc_address": _ADDRESS,
            "at_ms": _UINT,
        },
    ),
    RemoveNode: ("remove_node", {**_COMMON, "node_id": _UINT}),
    MarkNodeDead: ("mark_node_dead", {**_COMMON, "node_id": _UINT, "at_ms": _UINT}),
    MarkNodeAlive: ("mark_node_alive", {**_COMMON, "node_id": _UINT, "at_ms": _UINT}),
    CreateCollection: (
        "create_collection",
        {
            **_COMMON,
            "name": _NAME,
            "config": _BYTES,
            "shard_number": _UINT,
            "replication_factor": _UINT,
            "write_consistency_factor": _UINT,
            "sharding_method": _enum_field(ShardingMethod),
            "shard_keys": _SHARD_KEYS,
            "placement": _PLACEMENT,
        },
    ),
    DeleteCollection: ("delete_collection", {**_COMMON, "name": _NAME}),
    UpdateCollectionConfig: (
        "update_collection_config",
        {**_COMMON, "name": _NAME, "config": _BYTES, "replication_factor": _UINT, "write_consistency_factor": _UINT},
    ),
    SetAliases: (
        "set_aliases",
        {**_COMMON, "aliases": _Field(encode=lambda pairs: [list(pair) for pair in pairs], decode=_decode_aliases)},
    ),
    CreateShardKey: (
        "create_shard_key",
        {**_COMMON, "collection": _NAME, "shard_key": _SHARD_KEY, "placement": _PLACEMENT},
    ),
    DeleteShardKey: ("delete_shard_key", {**_COMMON, "collection": _NAME, "shard_key": _SHARD_KEY}),
    SetReplicaState: (
        "set_replica_state",
        {**_REPLICA, "state": _REPLICA_STATE, "expected_state": _optional(_REPLICA_STATE)},
    ),
    AddToInSync: ("add_to_in_sync", _REPLICA),
    RemoveFromInSync: ("remove_from_in_sync", _REPLICA),
    PromotePrimary: ("promote_primary", _REPLICA),
    AddReplica: ("add_replica", _REPLICA),
    DropReplica: ("drop_replica", {**_REPLICA, "expected_state": _optional(_REPLICA_STATE)}),
    StartShardMove: ("start_shard_move", _MOVE),
    FinishShardMove: ("finish_shard_move", _MOVE),
    AbortShardMove: ("abort_shard_move", _MOVE),
}
_CLASSES: dict[str, type[Command]] = {kind: cls for cls, (kind, _) in _SCHEMAS.items()}
assert len(_CLASSES) == len(_SCHEMAS), "every command has its own kind"


def encode(command: Command) -> bytes:
    """The format version byte, then the msgpack map of the command."""
    kind, fields = _SCHEMAS[type(command)]
    body: dict[str, Any] = {"kind": kind}
    for name, field in fields.items():
        body[name] = field.encode(getattr(command, name))
    return bytes([FORMAT_VERSION]) + msgpack.packb(body, use_bin_type=True)


def decode(data: bytes) -> Command:
    """Inverse of ``encode``. Raises ``InvalidRequest``, and only that, for
    anything that is not exactly an encoded command."""
    if not data:
        raise InvalidRequest("cluster command: empty")
    if data[0] != FORMAT_VERSION:
        raise InvalidRequest(f"cluster command: unknown format version {data[0]} (this node reads {FORMAT_VERSION})")
    try:
        raw = msgpack.unpackb(data[1:], raw=False)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise InvalidRequest(f"cluster command: not valid msgpack ({exc})") from exc
    if not isinstance(raw, dict):
        raise InvalidRequest(f"cluster command: expected a map, got {type(raw).__name__}")
    kind = raw.get("kind")
    cls = _CLASSES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidRequest(f"cluster command: unknown kind {kind!r}")
    fields = _SCHEMAS[cls][1]
    if raw.keys() != fields.keys() | {"kind"}:
        unexpected = sorted(map(str, raw.keys() ^ (fields.keys() | {"kind"})))
        raise InvalidRequest(f"cluster command {kind}: missing or unexpected fields {', '.join(unexpected)}")
    return cls(**{name: field.decode(raw[name], f"{kind}.{name}") for name, field in fields.items()})

"""Point and index operations: what a shard applies, what its WAL stores, and
(later) what a primary sends to its replicas.

Each operation is a frozen dataclass with an explicit, versioned msgpack
encoding (``encode_operation`` / ``decode_operation``): never pickle. Filters
are carried as their validated JSON (see ``engine.filters.parse_filter``) so
a record replays identically on every replica and after every restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeAlias

import msgpack
import numpy as np

from qcluster.errors import DataCorruption
from qcluster.types import PayloadFieldSchema, PointId

__all__ = [
    "ClearPayload",
    "CreateFieldIndex",
    "DeleteFieldIndex",
    "DeletePayload",
    "DeletePoints",
    "DeleteVectors",
    "LoggedOperation",
    "Operation",
    "OverwritePayload",
    "PointSelector",
    "PointsBatch",
    "SetPayload",
    "UpdateVectors",
    "UpsertPoints",
    "decode_operation",
    "decode_record",
    "encode_operation",
]

ENCODING_VERSION = 1


@dataclass(frozen=True, slots=True)
class PointSelector:
    """Either explicit ids or a filter, never both."""

    ids: tuple[PointId, ...] | None = None
    filter: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        assert (self.ids is None) != (self.filter is None), "exactly one of ids / filter"


@dataclass(frozen=True, slots=True)
class PointsBatch:
    """Points with their vectors and payloads, column-wise.

    ``vectors[name]`` is a C-contiguous float32 matrix with one row per id.
    ``present[name]`` is a bool mask of the rows that carry that vector, or
    None when every row does. ``payloads[i]`` is None for "no payload".
    """

    ids: tuple[PointId, ...]
    vectors: dict[str, np.ndarray]
    present: dict[str, np.ndarray | None]
    payloads: tuple[dict[str, Any] | None, ...]

    def __post_init__(self) -> None:
        count = len(self.ids)
        assert len(self.payloads) == count
        assert set(self.vectors) == set(self.present)
        for name, matrix in self.vectors.items():
            assert matrix.dtype == np.float32, name
            assert matrix.ndim == 2 and matrix.shape[0] == count, name
            mask = self.present[name]
            assert mask is None or (mask.dtype == np.bool_ and mask.shape == (count,)), name


@dataclass(frozen=True, slots=True)
class UpsertPoints:
    points: PointsBatch


@dataclass(frozen=True, slots=True)
class DeletePoints:
    selector: PointSelector


@dataclass(frozen=True, slots=True)
class SetPayload:
    selector: PointSelector
    payload: dict[str, Any]
    # Set the payload under this (dotted) key instead of at the top level.
    key: str | None = None


@dataclass(frozen=True, slots=True)
class OverwritePayload:
    selector: PointSelector
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class DeletePayload:
    selector: PointSelector
    keys: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ClearPayload:
    selector: PointSelector


@dataclass(frozen=True, slots=True)
class UpdateVectors:
    """Replace the named vectors of existing points; other vectors are kept."""

    points: PointsBatch


@dataclass(frozen=True, slots=True)
class DeleteVectors:
    selector: PointSelector
    names: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class CreateFieldIndex:
    field_name: str
    schema: PayloadFieldSchema


@dataclass(frozen=True, slots=True)
class DeleteFieldIndex:
    field_name: str


Operation: TypeAlias = (
    UpsertPoints
    | DeletePoints
    | SetPayload
    | OverwritePayload
    | DeletePayload
    | ClearPayload
    | UpdateVectors
    | DeleteVectors
    | CreateFieldIndex
    | DeleteFieldIndex
)


def _encode_ids(ids: tuple[PointId, ...]) -> list[PointId]:
    return list(ids)


def _encode_selector(selector: PointSelector) -> dict[str, Any]:
    if selector.ids is not None:
        return {"ids": _encode_ids(selector.ids)}
    return {"filter": selector.filter}


def _decode_selector(raw: dict[str, Any]) -> PointSelector:
    if "ids" in raw:
        return PointSelector(ids=tuple(raw["ids"]))
    return PointSelector(filter=raw["filter"])


def _encode_batch(batch: PointsBatch) -> dict[str, Any]:
    vectors = {}
    for name, matrix in batch.vectors.items():
        mask = batch.present[name]
        vectors[name] = {
            "dim": int(matrix.shape[1]),
            "data": np.ascontiguousarray(matrix, dtype="<f4").tobytes(),
            "present": None if mask is None else np.packbits(mask).tobytes(),
        }
    return {"ids": _encode_ids(batch.ids), "vectors": vectors, "payloads": list(batch.payloads)}


def _decode_batch(raw: dict[str, Any]) -> PointsBatch:
    ids = tuple(raw["ids"])
    count = len(ids)
    vectors: dict[str, np.ndarray] = {}
    present: dict[str, np.ndarray | None] = {}
    for name, column in raw["vectors"].items():
        matrix = np.frombuffer(column["data"], dtype="<f4").reshape(count, column["dim"])
        vectors[name] = matrix.astype(np.float32, copy=True)
        packed = column["present"]
        present[name] = (
            None
            if packed is None
            else np.unpackbits(np.frombuffer(packed, dtype=np.uint8), count=count).astype(bool)
        )
    return PointsBatch(ids=ids, vectors=vectors, present=present, payloads=tuple(raw["payloads"]))


def operation_to_dict(operation: Operation) -> dict[str, Any]:
    """The msgpack-ready form of an operation, tagged with its kind."""
    match operation:
        case UpsertPoints(points=points):
            return {"kind": "upsert", "points": _encode_batch(points)}
        case UpdateVectors(points=points):
            return {"kind": "update_vectors", "points": _encode_batch(points)}
        case DeletePoints(selector=selector):
            return {"kind": "delete", "selector": _encode_selector(selector)}
        case SetPayload(selector=selector, payload=payload, key=key):
            return {"kind": "set_payload", "selector": _encode_selector(selector), "payload": payload, "key": key}
        case OverwritePayload(selector=selector, payload=payload):
            return {"kind": "overwrite_payload", "selector": _encode_selector(selector), "payload": payload}
        case DeletePayload(selector=selector, keys=keys):
            return {"kind": "delete_payload", "selector": _encode_selector(selector), "keys": list(keys)}
        case ClearPayload(selector=selector):
            return {"kind": "clear_payload", "selector": _encode_selector(selector)}
        case DeleteVectors(selector=selector, names=names):
            return {"kind": "delete_vectors", "selector": _encode_selector(selector), "names": list(names)}
        case CreateFieldIndex(field_name=field_name, schema=schema):
            return {"kind": "create_index", "field_name": field_name, "schema": schema.encode()}
        case DeleteFieldIndex(field_name=field_name):
            return {"kind": "delete_index", "field_name": field_name}


def operation_from_dict(raw: dict[str, Any]) -> Operation:
    kind = raw["kind"]
    match kind:
        case "upsert":
            return UpsertPoints(points=_decode_batch(raw["points"]))
        case "update_vectors":
            return UpdateVectors(points=_decode_batch(raw["points"]))
        case "delete":
            return DeletePoints(selector=_decode_selector(raw["selector"]))
        case "set_payload":
            return SetPayload(selector=_decode_selector(raw["selector"]), payload=raw["payload"], key=raw["key"])
        case "overwrite_payload":
            return OverwritePayload(selector=_decode_selector(raw["selector"]), payload=raw["payload"])
        case "delete_payload":
            return DeletePayload(selector=_decode_selector(raw["selector"]), keys=tuple(raw["keys"]))
        case "clear_payload":
            return ClearPayload(selector=_decode_selector(raw["selector"]))
        case "delete_vectors":
            return DeleteVectors(selector=_decode_selector(raw["selector"]), names=tuple(raw["names"]))
        case "create_index":
            return CreateFieldIndex(field_name=raw["field_name"], schema=PayloadFieldSchema.decode(raw["schema"]))
        case "delete_index":
            return DeleteFieldIndex(field_name=raw["field_name"])
    raise DataCorruption(f"unknown operation kind {kind!r} in a stored record")


def encode_operation(operation: Operation, *, seq_no: int, term: int = 0) -> bytes:
    """Bytes for one WAL record: format version, sequence number, the primary
    term that assigned it (0 on a single node), operation."""
    assert seq_no > 0 and term >= 0
    return msgpack.packb(
        {"v": ENCODING_VERSION, "seq": seq_no, "t": term, "op": operation_to_dict(operation)},
        use_bin_type=True,
    )


@dataclass(frozen=True, slots=True)
class LoggedOperation:
    """One decoded WAL record."""

    seq_no: int
    term: int
    operation: Operation


def decode_record(data: bytes) -> LoggedOperation:
    """Inverse of ``encode_operation``. Records written before terms existed read as term 0."""
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData) as exc:
        raise DataCorruption("a stored operation record is not valid msgpack") from exc
    if not isinstance(raw, dict) or raw.get("v") != ENCODING_VERSION:
        version = raw.get("v") if isinstance(raw, dict) else None
        raise DataCorruption(f"stored operation has unknown encoding version {version!r}")
    return LoggedOperation(seq_no=int(raw["seq"]), term=int(raw.get("t", 0)), operation=operation_from_dict(raw["op"]))


def decode_operation(data: bytes) -> tuple[int, Operation]:
    """(seq_no, operation) of a record; see ``decode_record``."""
    record = decode_record(data)
    return record.seq_no, record.operation

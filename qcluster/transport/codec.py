"""Engine query requests and results on the internal wire: explicit msgpack
(never pickle), vectors as raw little-endian float32.

``decode_*`` raise ``DataCorruption`` for bytes they cannot read; a request
is re-validated by nothing else, so only cluster members (who hold the
secret) may send one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import msgpack
import numpy as np

from qcluster.errors import DataCorruption, InvalidRequest, QclusterError
from qcluster.operations import Operation, operation_from_dict, operation_to_dict
from qcluster.types import (
    Direction,
    OrderBy,
    PayloadSelector,
    PointId,
    QueryRequest,
    Record,
    ScoredPoint,
    SearchParams,
)

__all__ = [
    "ScrollCall",
    "decode_answer",
    "decode_requests",
    "decode_results",
    "decode_retrieve",
    "decode_scroll",
    "decode_value",
    "decode_write",
    "encode_answer",
    "encode_failure",
    "encode_requests",
    "encode_results",
    "encode_retrieve",
    "encode_scroll",
    "encode_value",
    "encode_write",
    "page_from_wire",
    "page_to_wire",
    "records_from_wire",
    "records_to_wire",
]

T = TypeVar("T")

_VERSION: Final = 1


def _vector_bytes(vector: np.ndarray) -> bytes:
    return np.ascontiguousarray(vector, dtype="<f4").tobytes()


def _vector(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype="<f4").copy()


def _request_to_wire(request: QueryRequest) -> dict[str, Any]:
    selector = request.with_payload
    return {
        "vector": _vector_bytes(request.vector), "using": request.using, "filter": request.filter,
        "limit": request.limit, "offset": request.offset, "score_threshold": request.score_threshold,
        "with_payload": [selector.enabled, selector.include, selector.exclude],
        "with_vector": request.with_vector if isinstance(request.with_vector, bool) else list(request.with_vector),
        "params": [request.params.hnsw_ef, request.params.exact, request.params.indexed_only],
    }


def _request_from_wire(raw: dict[str, Any]) -> QueryRequest:
    enabled, include, exclude = raw["with_payload"]
    hnsw_ef, exact, indexed_only = raw["params"]
    with_vector = raw["with_vector"]
    return QueryRequest(
        vector=_vector(raw["vector"]), using=raw["using"], filter=raw["filter"], limit=raw["limit"],
        offset=raw["offset"], score_threshold=raw["score_threshold"],
        with_payload=PayloadSelector(enabled=enabled, include=None if include is None else tuple(include),
                                     exclude=None if exclude is None else tuple(exclude)),
        with_vector=with_vector if isinstance(with_vector, bool) else tuple(with_vector),
        params=SearchParams(hnsw_ef=hnsw_ef, exact=exact, indexed_only=indexed_only),
    )


def _point_to_wire(point: ScoredPoint) -> list[Any]:
    vectors = None if point.vectors is None else {name: _vector_bytes(vector) for name, vector in point.vectors.items()}
    return [point.id, point.score, point.version, point.payload, vectors]


def _point_from_wire(raw: list[Any]) -> ScoredPoint:
    point_id, score, version, payload, vectors = raw
    return ScoredPoint(id=point_id, score=score, version=version, payload=payload,
                       vectors=None if vectors is None else {name: _vector(data) for name, data in vectors.items()})


def _pack(body: Any) -> bytes:
    return msgpack.packb({"v": _VERSION, "body": body}, use_bin_type=True)


def _unpack(data: bytes, what: str) -> Any:
    try:
        raw = msgpack.unpackb(data, raw=False, strict_map_key=False)
    except (ValueError, msgpack.ExtraData) as exc:
        raise DataCorruption(f"internal {what} is not valid msgpack") from exc
    if not isinstance(raw, dict) or raw.get("v") != _VERSION:
        raise DataCorruption(f"internal {what} has an unknown format")
    return raw["body"]


def encode_requests(requests: list[QueryRequest]) -> bytes:
    return _pack([_request_to_wire(request) for request in requests])


def decode_requests(data: bytes) -> list[QueryRequest]:
    try:
        return [_request_from_wire(raw) for raw in _unpack(data, "search request")]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataCorruption(f"internal search request is malformed: {exc}") from exc


def encode_results(results: list[list[ScoredPoint]]) -> bytes:
    return _pack([[_point_to_wire(point) for point in points] for points in results])


def decode_results(data: bytes) -> list[list[ScoredPoint]]:
    try:
        return [[_point_from_wire(raw) for raw in points] for points in _unpack(data, "search result")]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataCorruption(f"internal search result is malformed: {exc}") from exc


# --- point reads and forwarded writes (the Shards service's other calls) ---


def _selector_to_wire(selector: PayloadSelector) -> list[Any]:
    return [selector.enabled, selector.include, selector.exclude]


def _selector_from_wire(raw: list[Any]) -> PayloadSelector:
    enabled, include, exclude = raw
    return PayloadSelector(enabled=enabled, include=None if include is None else tuple(include),
                           exclude=None if exclude is None else tuple(exclude))


def _with_vector_to_wire(with_vector: bool | tuple[str, ...]) -> bool | list[str]:
    return with_vector if isinstance(with_vector, bool) else list(with_vector)


def _with_vector_from_wire(raw: bool | list[str]) -> bool | tuple[str, ...]:
    return raw if isinstance(raw, bool) else tuple(raw)


def _record_to_wire(record: Record) -> list[Any]:
    vectors = None if record.vectors is None else {
        name: _vector_bytes(vector) for name, vector in record.vectors.items()}
    return [record.id, record.payload, vectors, record.order_value, record.version]


def _record_from_wire(raw: list[Any]) -> Record:
    point_id, payload, vectors, order_value, version = raw
    return Record(id=point_id, payload=payload, order_value=order_value, version=version,
                  vectors=None if vectors is None else {name: _vector(data) for name, data in vectors.items()})


def _decoding(what: str, decode: Callable[[Any], T], data: bytes) -> T:
    try:
        return decode(_unpack(data, what))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataCorruption(f"internal {what} is malformed: {exc}") from exc


def encode_retrieve(ids: list[PointId], *, with_payload: PayloadSelector, with_vector: bool | tuple[str, ...]) -> bytes:
    return _pack([list(ids), _selector_to_wire(with_payload), _with_vector_to_wire(with_vector)])


def decode_retrieve(data: bytes) -> tuple[list[PointId], PayloadSelector, bool | tuple[str, ...]]:
    return _decoding("retrieve request", lambda raw: (list(raw[0]), _selector_from_wire(raw[1]),
                                                      _with_vector_from_wire(raw[2])), data)


def records_to_wire(records: list[Record]) -> list[Any]:
    return [_record_to_wire(record) for record in records]


def records_from_wire(raw: Any) -> list[Record]:
    try:
        return [_record_from_wire(item) for item in raw]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataCorruption(f"internal records are malformed: {exc}") from exc


@dataclass(frozen=True, slots=True)
class ScrollCall:
    filter: dict[str, Any] | None
    limit: int
    offset: PointId | None
    order_by: OrderBy | None
    with_payload: PayloadSelector
    with_vector: bool | tuple[str, ...]


def encode_scroll(call: ScrollCall) -> bytes:
    order_by = None if call.order_by is None else [call.order_by.key, call.order_by.direction.value,
                                                   call.order_by.start_from]
    return _pack([call.filter, call.limit, call.offset, order_by, _selector_to_wire(call.with_payload),
                  _with_vector_to_wire(call.with_vector)])


def decode_scroll(data: bytes) -> ScrollCall:
    def decode(raw: list[Any]) -> ScrollCall:
        filter_, limit, offset, order_by, with_payload, with_vector = raw
        return ScrollCall(
            filter=filter_, limit=limit, offset=offset,
            order_by=None if order_by is None else OrderBy(key=order_by[0], direction=Direction(order_by[1]),
                                                           start_from=order_by[2]),
            with_payload=_selector_from_wire(with_payload), with_vector=_with_vector_from_wire(with_vector))

    return _decoding("scroll request", decode, data)


def page_to_wire(records: list[Record], next_offset: PointId | None) -> list[Any]:
    return [records_to_wire(records), next_offset]


def page_from_wire(raw: Any) -> tuple[list[Record], PointId | None]:
    try:
        records, next_offset = raw
    except (TypeError, ValueError) as exc:
        raise DataCorruption(f"internal scroll page is malformed: {exc}") from exc
    return records_from_wire(records), next_offset


def encode_value(value: Any) -> bytes:
    """A plain msgpack value: a filter, a count, a seq_no."""
    return _pack(value)


def decode_value(data: bytes, what: str) -> Any:
    return _decoding(what, lambda raw: raw, data)


def encode_write(operation: Operation) -> bytes:
    return _pack(operation_to_dict(operation))


def decode_write(data: bytes) -> Operation:
    try:
        return operation_from_dict(_unpack(data, "write"))
    except (KeyError, TypeError, ValueError, InvalidRequest) as exc:
        raise DataCorruption(f"internal write is malformed: {exc}") from exc


# --- answers of the Shards calls: a value, or a qcluster error kept by class ---


def _error_classes() -> dict[str, type[QclusterError]]:
    found: dict[str, type[QclusterError]] = {}
    pending: list[type[QclusterError]] = [QclusterError]
    while pending:
        cls = pending.pop()
        found.setdefault(cls.code, cls)
        pending.extend(cls.__subclasses__())
    return found


def encode_answer(value: Any) -> bytes:
    return _pack({"ok": value})


def encode_failure(error: QclusterError) -> bytes:
    return _pack({"error": error.code, "message": error.message})


def decode_answer(data: bytes, what: str) -> Any:
    """The value of an answer; a failure is raised as the error class the
    remote node raised (one whose constructor needs more than a message
    becomes its nearest plain base class)."""
    raw = _unpack(data, what)
    if not isinstance(raw, dict):
        raise DataCorruption(f"internal {what} has an unknown format")
    if "ok" in raw:
        return raw["ok"]
    cls = _ERROR_CLASSES.get(str(raw.get("error")), QclusterError)
    while cls.__init__ is not QclusterError.__init__ and cls is not QclusterError:
        cls = cls.__mro__[1]
    raise cls(str(raw.get("message")))


_ERROR_CLASSES: Final = _error_classes()

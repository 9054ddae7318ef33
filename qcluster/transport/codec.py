"""Engine query requests and results on the internal wire: explicit msgpack
(never pickle), vectors as raw little-endian float32.

``decode_*`` raise ``DataCorruption`` for bytes they cannot read; a request
is re-validated by nothing else, so only cluster members (who hold the
secret) may send one.
"""

from __future__ import annotations

from typing import Any, Final

import msgpack
import numpy as np

from qcluster.errors import DataCorruption
from qcluster.types import PayloadSelector, QueryRequest, ScoredPoint, SearchParams

__all__ = ["decode_requests", "decode_results", "encode_requests", "encode_results"]

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

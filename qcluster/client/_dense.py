"""The SDK's protocol-independent parts: building dense requests from numpy,
decoding replies to numpy, mapping gRPC errors onto qcluster's error tree,
and the retry policy. Shared by ``Client`` and ``AsyncClient``."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import grpc
import numpy as np
import orjson
from qdrant_client import models

from qcluster import limits
from qcluster.errors import InvalidRequest
from qcluster.proto.v1 import dense_pb2

__all__ = [
    "QueryResult",
    "UploadResult",
    "Vectors",
    "backoff_s",
    "query_requests",
    "query_result",
    "shard_operation",
    "upload_plan",
]

# An unnamed vector (one matrix) or named vectors (name -> matrix), one row per point.
Vectors = np.ndarray | Mapping[str, np.ndarray]

_RETRYABLE: Final = frozenset((grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED,
                               grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.ABORTED))
_BACKOFF_FIRST_S: Final = 0.1
_BACKOFF_MAX_S: Final = 5.0
# gRPC message bound on the client side; the server enforces its own (service.max_request_size_mb).
MESSAGE_BYTES_MAX: Final = limits.REQUEST_BODY_BYTES_MAX


def channel_options() -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", MESSAGE_BYTES_MAX),
            ("grpc.max_receive_message_length", MESSAGE_BYTES_MAX)]


def is_message_too_large(error: grpc.RpcError) -> bool:
    """grpcio's own RESOURCE_EXHAUSTED for a message over a size bound: retrying cannot help."""
    return "larger than max" in (error.details() or "")  # type: ignore[attr-defined]


def is_retryable(error: grpc.RpcError) -> bool:
    return error.code() in _RETRYABLE and not is_message_too_large(error)  # type: ignore[attr-defined]


def backoff_s(attempt: int) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based): 0.1, 0.2, 0.4 ... capped at 5."""
    assert attempt >= 1
    return float(min(_BACKOFF_MAX_S, _BACKOFF_FIRST_S * 2 ** (attempt - 1)))


def _matrix(rows: np.ndarray) -> dense_pb2.Matrix:
    data = np.ascontiguousarray(rows, dtype="<f4")
    return dense_pb2.Matrix(rows=data.shape[0], dim=data.shape[1], data=data.tobytes())


def _columns(vectors: Vectors) -> dict[str, np.ndarray]:
    named = {"": vectors} if isinstance(vectors, np.ndarray) else dict(vectors)
    if not named:
        raise InvalidRequest("vectors: at least one vector column is needed")
    for name, matrix in named.items():
        if not isinstance(matrix, np.ndarray) or matrix.ndim != 2:
            raise InvalidRequest(f"vectors{'.' + name if name else ''}: expected a 2-d numpy array")
    return named


@dataclass(frozen=True, slots=True)
class UploadPlan:
    """What ``upload`` sends: ``rows`` points in batches ``[start, end)``."""

    collection: str
    columns: dict[str, np.ndarray]
    ids: Sequence[Any] | None
    payloads: Sequence[Any] | None
    rows: int
    batch_size: int
    wait: bool

    def batches(self, start: int) -> list[tuple[int, int]]:
        return [(begin, min(begin + self.batch_size, self.rows)) for begin in range(start, self.rows, self.batch_size)]

    def request(self, begin: int, end: int) -> dense_pb2.DenseUpsertRequest:
        request = dense_pb2.DenseUpsertRequest(collection_name=self.collection, wait=self.wait)
        for name, matrix in self.columns.items():
            request.vectors[name].CopyFrom(_matrix(matrix[begin:end]))
        ids = range(begin, end) if self.ids is None else self.ids[begin:end]
        batch_ids = [point_id.item() if isinstance(point_id, np.generic) else point_id for point_id in ids]
        if all(isinstance(point_id, int) for point_id in batch_ids):
            request.ids.extend(batch_ids)
        else:
            request.uuids.extend(str(uuid.UUID(str(point_id))) for point_id in batch_ids)
        if self.payloads is not None:
            request.payloads_json = orjson.dumps(list(self.payloads[begin:end]), option=orjson.OPT_SERIALIZE_NUMPY)
        return request


def upload_plan(collection: str, vectors: Vectors, *, ids: Sequence[Any] | np.ndarray | None,
                payloads: Sequence[Any] | None, batch_size: int, wait: bool) -> UploadPlan:
    columns = _columns(vectors)
    counts = {matrix.shape[0] for matrix in columns.values()}
    if len(counts) != 1:
        raise InvalidRequest(f"vectors: columns have different row counts {sorted(counts)}")
    rows = counts.pop()
    if ids is not None and len(ids) != rows:
        raise InvalidRequest(f"ids: {len(ids)} ids for {rows} vectors")
    if payloads is not None and len(payloads) != rows:
        raise InvalidRequest(f"payloads: {len(payloads)} payloads for {rows} vectors")
    if not 0 < batch_size <= limits.POINTS_PER_REQUEST_MAX:
        raise InvalidRequest(f"batch_size: must be between 1 and {limits.POINTS_PER_REQUEST_MAX}")
    return UploadPlan(collection=collection, columns=columns, ids=ids, payloads=payloads, rows=rows,
                      batch_size=batch_size, wait=wait)


@dataclass(frozen=True, slots=True)
class UploadResult:
    points: int  # points written by this call (from ``start`` to the end)
    batches: int
    retries: int  # sends repeated after a retryable error (a batch may count more than once)
    seconds: float

    @property
    def points_per_s(self) -> float:
        return self.points / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True, slots=True)
class QueryResult:
    """Nearest neighbours as numpy arrays, one row per query.

    ``ids`` is int64 (or an object array of UUID strings when the collection
    uses UUIDs) and ``scores`` float32, both ``(queries, limit)``; a query
    with fewer than ``limit`` results is padded with id -1 (or None) and
    score NaN; ``counts`` says how many are real. ``payloads`` (when asked
    for) is one list per query. For a single query vector (1-d input) the
    arrays are 1-d and ``payloads`` is that query's list.
    """

    ids: np.ndarray
    scores: np.ndarray
    counts: np.ndarray
    payloads: list[Any] | None = None


def query_requests(collection: str, vectors: np.ndarray, *, limit: int, offset: int, using: str | None,
                   filter: Any, with_payload: bool, hnsw_ef: int | None, exact: bool,
                   score_threshold: float | None, batch_size: int) -> list[dense_pb2.DenseQueryRequest]:
    matrix = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
    if matrix.ndim != 2:
        raise InvalidRequest("vectors: expected one vector (1-d) or a matrix of query vectors (2-d)")
    if not 0 < batch_size <= limits.QUERY_BATCH_MAX:
        raise InvalidRequest(f"batch_size: must be between 1 and {limits.QUERY_BATCH_MAX}")
    if not 0 < limit <= limits.TOP_K_MAX:
        raise InvalidRequest(f"limit: must be between 1 and {limits.TOP_K_MAX}")
    filter_json = b""
    if filter is not None:
        raw_filter = filter.model_dump(mode="json", exclude_none=True) if hasattr(filter, "model_dump") else filter
        filter_json = orjson.dumps(raw_filter)
    requests = []
    for begin in range(0, max(matrix.shape[0], 1), batch_size):
        request = dense_pb2.DenseQueryRequest(
            collection_name=collection, using=using or "", queries=_matrix(matrix[begin:begin + batch_size]),
            limit=limit, offset=offset, filter_json=filter_json, exact=exact, with_payload=with_payload)
        if hnsw_ef is not None:
            request.hnsw_ef = hnsw_ef
        if score_threshold is not None:
            request.score_threshold = score_threshold
        requests.append(request)
    return requests


def query_result(replies: list[dense_pb2.DenseQueryReply], *, limit: int, single: bool) -> QueryResult:
    counts = np.concatenate([np.frombuffer(reply.counts, dtype="<u4") for reply in replies]).astype(np.int64)
    queries = counts.shape[0]
    uses_uuids = any(reply.uuids for reply in replies)
    flat_ids: np.ndarray
    if uses_uuids:
        flat_ids = np.array([point_id for reply in replies for point_id in (
            reply.uuids if reply.uuids else np.frombuffer(reply.ids, dtype="<u8").astype(str))], dtype=object)
        ids = np.full((queries, limit), None, dtype=object)
    else:
        flat_ids = np.concatenate([np.frombuffer(reply.ids, dtype="<u8") for reply in replies]).astype(np.int64)
        ids = np.full((queries, limit), -1, dtype=np.int64)
    flat_scores = np.concatenate([np.frombuffer(reply.scores, dtype="<f4") for reply in replies])
    scores = np.full((queries, limit), np.nan, dtype=np.float32)
    # Row r's results are flat[starts[r]:starts[r] + counts[r]], placed in columns 0..counts[r]-1.
    rows = np.repeat(np.arange(queries), counts)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]]) if queries else np.zeros(0, np.int64)
    columns = np.arange(flat_scores.shape[0]) - np.repeat(starts, counts)
    ids[rows, columns] = flat_ids
    scores[rows, columns] = flat_scores
    payloads = None
    if any(reply.payloads_json for reply in replies):
        flat_payloads = [payload for reply in replies for payload in orjson.loads(reply.payloads_json or b"[]")]
        payloads = [flat_payloads[start:start + count] for start, count in zip(starts.tolist(), counts.tolist())]
    if single:
        return QueryResult(ids=ids[0], scores=scores[0], counts=counts,
                           payloads=payloads[0] if payloads is not None else None)
    return QueryResult(ids=ids, scores=scores, counts=counts, payloads=payloads)


def shard_operation(kind: str, *, shard_id: int, peer_id: int | None = None, from_peer_id: int | None = None,
                    to_peer_id: int | None = None) -> Any:
    """One of Qdrant's cluster operations for ``POST /collections/{c}/cluster``."""
    if kind == "drop_replica":
        assert peer_id is not None
        return models.DropReplicaOperation(drop_replica=models.Replica(shard_id=shard_id, peer_id=peer_id))
    assert from_peer_id is not None and to_peer_id is not None
    if kind == "move_shard":
        return models.MoveShardOperation(move_shard=models.MoveShard(
            shard_id=shard_id, from_peer_id=from_peer_id, to_peer_id=to_peer_id))
    assert kind == "replicate_shard", kind
    return models.ReplicateShardOperation(replicate_shard=models.ReplicateShard(
        shard_id=shard_id, from_peer_id=from_peer_id, to_peer_id=to_peer_id))

"""qcluster's dense extension service (``qcluster.proto.v1.DensePoints``):
vectors as raw float32 matrices, for the numpy-native SDK.

The conversion from bytes is a ``np.frombuffer`` view; validation (ids,
dimensions, finiteness, payloads, limits) is the same code as for JSON, in
``qcluster.api.schema``.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import orjson
from google.protobuf.message import Message

from qcluster.api import actions
from qcluster.api.batcher import Batcher
from qcluster.api.grpc.dispatch import Dispatcher
from qcluster.api.schema.parse import check_collection_name
from qcluster.api.schema.vectors import check_dense_matrix
from qcluster.api.state import NodeState
from qcluster.engine.filter_cache import filter_from_json
from qcluster.errors import InvalidRequest, QclusterError
from qcluster.proto.v1 import dense_pb2, dense_pb2_grpc
from qcluster.types import ScoredColumns

if TYPE_CHECKING:
    from qcluster.storage.toc import TableOfContents

__all__ = ["add_dense_service", "matrix_from_proto"]

def matrix_from_proto(message: dense_pb2.Matrix, *, path: str) -> np.ndarray:
    """A read-only ``(rows, dim)`` float32 view of the message's bytes."""
    if message.dim == 0:
        raise InvalidRequest(f"{path}.dim: must be at least 1")
    expected = message.rows * message.dim * 4
    if len(message.data) != expected:
        raise InvalidRequest(f"{path}.data: {len(message.data)} bytes, expected rows × dim × 4 = {expected}")
    return np.frombuffer(message.data, dtype="<f4").reshape(message.rows, message.dim)


def _json(raw: bytes, *, path: str) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{path}: not valid JSON: {exc}") from exc


def _upsert(toc: TableOfContents, request: dense_pb2.DenseUpsertRequest) -> dense_pb2.DenseUpsertReply:
    name = check_collection_name(request.collection_name)
    if request.ids and request.uuids:
        raise InvalidRequest("ids, uuids: give integer ids or UUIDs, not both")
    raw_ids: list[Any] = list(request.ids) if request.ids else list(request.uuids)
    vectors = {vector_name: matrix_from_proto(matrix, path=f"vectors.{vector_name}" if vector_name else "vectors")
               for vector_name, matrix in request.vectors.items()}
    raw_payloads = None
    if request.payloads_json:
        raw_payloads = _json(request.payloads_json, path="payloads_json")
        if not isinstance(raw_payloads, list):
            raise InvalidRequest("payloads_json: expected a JSON array with one object (or null) per id")
    result = actions.dense_upsert(toc, name=name, raw_ids=raw_ids, vectors=vectors, raw_payloads=raw_payloads,
                                  wait=request.wait)
    return dense_pb2.DenseUpsertReply(operation_id=result["operation_id"], status=result["status"])


def _query_params(request: dense_pb2.DenseQueryRequest, *, filter_json: bytes | None = None) -> dict[str, Any]:
    """Everything of a query request but its vectors, in Qdrant's JSON shape.
    ``filter_json``: the request's, when the caller has read it already."""
    params: dict[str, Any] = {"exact": request.exact}
    if request.HasField("hnsw_ef"):
        params["hnsw_ef"] = request.hnsw_ef
    raw: dict[str, Any] = {"limit": request.limit or 10, "offset": request.offset, "params": params,
                           "with_payload": request.with_payload}
    if request.using:
        raw["using"] = request.using
    if filter_json is None:
        filter_json = request.filter_json
    if filter_json:  # a repeated filter is not decoded again
        raw["filter"] = filter_from_json(filter_json, path="filter_json")
    if request.HasField("score_threshold"):
        raw["score_threshold"] = request.score_threshold
    return raw


def _reply(results: ScoredColumns, begin: int, end: int, *, rows: slice) -> dense_pb2.DenseQueryReply:
    """The reply for query rows ``rows`` whose results are ``[begin, end)`` of the flat results."""
    reply = dense_pb2.DenseQueryReply(counts=results.counts[rows].astype("<u4").tobytes(),
                                      scores=results.scores[begin:end].astype("<f4").tobytes())
    ids = results.integer_ids(begin, end)
    if ids is not None:
        reply.ids = ids.astype("<u8", copy=False).tobytes()
    else:
        reply.uuids.extend(str(point_id) for point_id in results.ids[begin:end])
    if results.payloads is not None:
        reply.payloads_json = orjson.dumps(results.payloads[begin:end])
    return reply


def _query(toc: TableOfContents, request: dense_pb2.DenseQueryRequest) -> dense_pb2.DenseQueryReply:
    name = check_collection_name(request.collection_name)
    queries = matrix_from_proto(request.queries, path="queries")
    results = actions.dense_query(toc, name=name, queries=queries, raw=_query_params(request))
    return _reply(results, 0, len(results.ids), rows=slice(None))


def _group_key(request: dense_pb2.DenseQueryRequest) -> tuple[bytes, bytes]:
    """Requests with equal keys differ only in their query vector. The key
    holds the filter's bytes apart, as one object: grouping hashes them
    (0.3 ms for 800 KB) and the filter cache reuses that hash."""
    shape = dense_pb2.DenseQueryRequest()
    shape.CopyFrom(request)
    shape.queries.data = b""
    shape.filter_json = b""
    return shape.SerializeToString(deterministic=True), request.filter_json


def _query_rows(state: NodeState, items: list[dense_pb2.DenseQueryRequest]) -> list[Message | BaseException]:
    """Single-row queries from concurrent requests (see ``Batcher``): the ones
    with the same collection and parameters are searched as one matrix; each
    request keeps its own errors."""
    toc = state.ready_toc()
    outcomes: list[Message | BaseException | None] = [None] * len(items)
    groups: dict[tuple[bytes, bytes], list[int]] = {}
    for position, request in enumerate(items):
        groups.setdefault(_group_key(request), []).append(position)
    for (_shape, filter_json), positions in groups.items():
        first = items[positions[0]]
        try:
            name = check_collection_name(first.collection_name)
            dim = toc.collection(name).config.vector_params(first.using, path="using").size
        except QclusterError as error:
            for position in positions:
                outcomes[position] = error
            continue
        rows: list[np.ndarray] = []
        valid: list[int] = []
        for position in positions:  # a bad vector fails its own request only
            try:
                matrix = matrix_from_proto(items[position].queries, path="queries")
                rows.append(check_dense_matrix(matrix, dim=dim, rows=1, path="queries"))
                valid.append(position)
            except QclusterError as error:
                outcomes[position] = error
        if not valid:
            continue
        try:
            results = actions.dense_query(toc, name=name, queries=np.concatenate(rows),
                                          raw=_query_params(first, filter_json=filter_json))
        except QclusterError as error:
            for position in valid:
                outcomes[position] = error
            continue
        ends = np.cumsum(results.counts).tolist()
        for row, position in enumerate(valid):
            begin = ends[row - 1] if row else 0
            outcomes[position] = _reply(results, begin, ends[row], rows=slice(row, row + 1))
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


def add_dense_service(server: grpc.aio.Server, dispatcher: Dispatcher) -> None:
    rows_batcher: Batcher[dense_pb2.DenseQueryRequest, Message] = Batcher(
        executor=dispatcher.state.executor, run_batch=functools.partial(_query_rows, dispatcher.state))

    async def query(request: dense_pb2.DenseQueryRequest) -> Message:
        if request.queries.rows != 1:
            return await dispatcher.run_sync(_query, request)
        dispatcher.state.ready_toc()
        return await rows_batcher.submit(request)

    class DensePoints(dense_pb2_grpc.DensePointsServicer):
        async def Upsert(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802 - gRPC name
            return await dispatcher.serve("Upsert", context, lambda: dispatcher.run_sync(_upsert, request))

        async def Query(self, request: Any, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802 - gRPC name
            return await dispatcher.serve("Query", context, lambda: query(request))

    dense_pb2_grpc.add_DensePointsServicer_to_server(DensePoints(), server)

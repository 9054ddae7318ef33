"""Search endpoints: the universal ``/points/query`` (and its batch) and the
legacy ``/points/search`` (and its batch)."""

from __future__ import annotations

import dataclasses
import functools
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web

from qcluster.api.rest._parse import check_collection_name, loads_object
from qcluster.api.rest._parse_query import ParsedQuery, parse_query, parse_query_batch, parse_search, parse_search_batch
from qcluster.api.rest._render import render_record, render_scored_point
from qcluster.api.rest._batcher import Batcher
from qcluster.api.rest._request import NodeState, read_body, run_storage, state_of, timeout_param
from qcluster.api.rest._route import Route
from qcluster.errors import InvalidRequest, NotFound, QclusterError
from qcluster.types import PayloadSelector, QueryRequest, ScoredPoint

if TYPE_CHECKING:
    from qcluster.storage.collection import Collection
    from qcluster.storage.toc import TableOfContents

__all__ = ["ROUTES"]

_READ_QUERY = ("consistency", "timeout")


def _resolve_lookup(collection: Collection, parsed: ParsedQuery) -> QueryRequest:
    """Replace the placeholder vector with the stored vector of ``lookup_id``,
    asking for one more result so the point itself can be dropped."""
    request = parsed.request
    assert parsed.lookup_id is not None
    records = collection.retrieve([parsed.lookup_id], with_payload=PayloadSelector(enabled=False),
                                  with_vector=(request.using,))
    if not records:
        raise NotFound(f"query: no point with id {parsed.lookup_id} found")
    vector = (records[0].vectors or {}).get(request.using)
    if vector is None:
        raise InvalidRequest(f"query: point {parsed.lookup_id} has no vector {request.using!r}")
    return dataclasses.replace(request, vector=vector, limit=request.offset + request.limit + 1, offset=0)


def _trim_lookup(parsed: ParsedQuery, points: list[ScoredPoint]) -> list[ScoredPoint]:
    request = parsed.request
    kept = [point for point in points if point.id != parsed.lookup_id]
    return kept[request.offset:request.offset + request.limit]


def _scroll_as_query(collection: Collection, request: QueryRequest) -> list[Any]:
    """No ``query``: points in id order, as Qdrant answers, with score 0."""
    records, _next = collection.scroll(filter=request.filter, limit=request.offset + request.limit, offset=None,
                                       order_by=None, with_payload=request.with_payload,
                                       with_vector=request.with_vector)
    is_named = collection.config.is_named_vectors
    rendered = []
    for record in records[request.offset:]:
        point = render_record(record, is_named=is_named)
        point.update(version=0, score=0.0)
        rendered.append(point)
    return rendered


def _run_queries(collection: Collection, queries: list[ParsedQuery]) -> list[list[Any]]:
    """Answer every query; vector queries go to storage as one batch."""
    is_named = collection.config.is_named_vectors
    answers: list[list[Any] | None] = [None] * len(queries)
    batch_requests: list[QueryRequest] = []
    batch_positions: list[int] = []
    for position, parsed in enumerate(queries):
        if parsed.is_scroll:
            answers[position] = _scroll_as_query(collection, parsed.request)
            continue
        request = _resolve_lookup(collection, parsed) if parsed.lookup_id is not None else parsed.request
        batch_requests.append(request)
        batch_positions.append(position)
    results = collection.query_batch(batch_requests) if batch_requests else []
    assert len(results) == len(batch_requests)
    for position, points in zip(batch_positions, results, strict=True):
        parsed = queries[position]
        if parsed.lookup_id is not None:
            points = _trim_lookup(parsed, points)
        answers[position] = [render_scored_point(point, is_named=is_named) for point in points]
    assert all(answer is not None for answer in answers)
    return [answer for answer in answers if answer is not None]


def _query_many_sync(state: NodeState, items: list[tuple[str, bytes]]) -> list[dict[str, Any] | BaseException]:
    """Answer single queries from several requests together (see ``_batcher``).

    Each request keeps its own errors: a bad body or an unknown collection
    fails that request only; a storage failure fails the requests of that
    collection.
    """
    outcomes: list[dict[str, Any] | BaseException | None] = [None] * len(items)
    by_collection: dict[str, list[int]] = {}
    for position, (name, _body) in enumerate(items):
        by_collection.setdefault(name, []).append(position)
    for name, positions in by_collection.items():
        try:
            collection = state.ready_toc().collection(name)
        except QclusterError as error:
            for position in positions:
                outcomes[position] = error
            continue
        parsed: list[ParsedQuery] = []
        parsed_positions: list[int] = []
        for position in positions:
            try:
                parsed.append(parse_query(loads_object(items[position][1]), config=collection.config))
                parsed_positions.append(position)
            except QclusterError as error:
                outcomes[position] = error
        try:
            answers = _run_queries(collection, parsed) if parsed else []
        except QclusterError as error:
            answers = [error] * len(parsed)  # type: ignore[list-item]
        for position, answer in zip(parsed_positions, answers, strict=True):
            outcomes[position] = answer if isinstance(answer, BaseException) else {"points": answer}
    assert all(outcome is not None for outcome in outcomes)
    return outcomes  # type: ignore[return-value]


_BATCHER_KEY: Final = web.AppKey("qcluster_query_batcher", Batcher)
# Up to this many single queries share one executor job and one FAISS call.
_QUERY_BATCH_MAX: Final = 64
# Batches in flight at once: one per core keeps both busy without queueing in the pool.
_QUERY_BATCHES_PARALLEL: Final = 2


def install(app: web.Application, state: NodeState) -> None:
    """Give the application its query batcher (see ``_batcher``)."""
    app[_BATCHER_KEY] = Batcher(
        executor=state.executor,
        run_batch=functools.partial(_query_many_sync, state),
        batch_max=_QUERY_BATCH_MAX,
        parallel_max=_QUERY_BATCHES_PARALLEL,
    )


async def query_points(request: web.Request) -> Any:
    name = check_collection_name(request.match_info["collection_name"])
    timeout_param(request)
    state_of(request).ready_toc()
    body = await read_body(request)
    return await request.app[_BATCHER_KEY].submit((name, body))


def _query_batch_sync(toc: TableOfContents, *, name: str, body: bytes) -> list[dict[str, Any]]:
    collection = toc.collection(name)
    parsed = parse_query_batch(loads_object(body), config=collection.config)
    return [{"points": points} for points in _run_queries(collection, parsed)]


def _search_sync(toc: TableOfContents, *, name: str, body: bytes) -> list[Any]:
    collection = toc.collection(name)
    request = parse_search(loads_object(body), config=collection.config)
    is_named = collection.config.is_named_vectors
    return [render_scored_point(point, is_named=is_named) for point in collection.query(request)]


def _search_batch_sync(toc: TableOfContents, *, name: str, body: bytes) -> list[list[Any]]:
    collection = toc.collection(name)
    requests = parse_search_batch(loads_object(body), config=collection.config)
    is_named = collection.config.is_named_vectors
    results = collection.query_batch(requests) if requests else []
    return [[render_scored_point(point, is_named=is_named) for point in points] for points in results]


def _read_handler(function: Any) -> Any:
    async def handle(request: web.Request) -> Any:
        name = check_collection_name(request.match_info["collection_name"])
        timeout_param(request)
        return await run_storage(request, function, name=name, body=await read_body(request))

    return handle


query_batch_points = _read_handler(_query_batch_sync)
search_points = _read_handler(_search_sync)
search_batch_points = _read_handler(_search_batch_sync)

_P = "/collections/{collection_name}/points"

ROUTES = (
    Route("POST", f"{_P}/query", query_points, "query_points", "Nearest points to a vector or to a point",
          request_schema="QueryRequest", result_schema="QueryResponse", query_params=_READ_QUERY),
    Route("POST", f"{_P}/query/batch", query_batch_points, "query_batch_points", "Several queries at once",
          request_schema="QueryRequestBatch", result_schema="QueryResponseList", query_params=_READ_QUERY),
    Route("POST", f"{_P}/search", search_points, "search_points", "Legacy vector search",
          request_schema="SearchRequest", result_schema="ScoredPointList", query_params=_READ_QUERY),
    Route("POST", f"{_P}/search/batch", search_batch_points, "search_batch_points", "Legacy batch search",
          request_schema="SearchRequestBatch", result_schema="ScoredPointListList", query_params=_READ_QUERY),
)

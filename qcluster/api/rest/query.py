"""Search endpoints: the universal ``/points/query`` (and its batch) and the
legacy ``/points/search`` (and its batch)."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

from aiohttp import web

from qcluster.api.rest._parse import check_collection_name, loads_object
from qcluster.api.rest._parse_query import ParsedQuery, parse_query, parse_query_batch, parse_search, parse_search_batch
from qcluster.api.rest._render import render_record, render_scored_point
from qcluster.api.rest._request import read_body, run_storage, timeout_param
from qcluster.api.rest._route import Route
from qcluster.errors import InvalidRequest, NotFound
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


def _query_sync(toc: TableOfContents, *, name: str, body: bytes) -> dict[str, Any]:
    collection = toc.collection(name)
    parsed = parse_query(loads_object(body), config=collection.config)
    return {"points": _run_queries(collection, [parsed])[0]}


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


query_points = _read_handler(_query_sync)
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

"""Point endpoints: writes (upsert, delete, payload, vectors, batch) and
point reads (retrieve, get one, scroll, count).

Every write parses and validates the whole body against the collection's
configuration before storage is called, so a rejected request writes
nothing. ``/points/batch`` parses and validates the shape of all its
operations first, then applies them in order; like Qdrant's, it is not
atomic: a check that needs the stored state (a point that must exist) can
fail part-way, and the operations before it stay applied.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from aiohttp import web

from qcluster.api.rest._parse import check_collection_name, loads_object, point_id
from qcluster.api.rest._parse_points import (
    parse_batch_operations,
    parse_clear_payload,
    parse_delete_payload,
    parse_delete_points,
    parse_delete_vectors,
    parse_overwrite_payload,
    parse_set_payload,
    parse_update_vectors,
    parse_upsert,
)
from qcluster.api.rest._parse_query import parse_count, parse_retrieve, parse_scroll
from qcluster.api.rest._render import render_record, render_update_result
from qcluster.api.rest._request import read_body, run_storage, timeout_param, write_params
from qcluster.api.rest._route import Route
from qcluster.errors import NotFound
from qcluster.operations import Operation
from qcluster.types import CollectionConfig, PayloadSelector

if TYPE_CHECKING:
    from qcluster.storage.toc import TableOfContents

__all__ = ["ROUTES"]

_WRITE_QUERY = ("wait", "ordering", "timeout")
_READ_QUERY = ("consistency", "timeout")

# Parses a write body into one operation, given the collection's config.
_OperationParser = Callable[[dict[str, Any], CollectionConfig], Operation]


def _write_sync(toc: TableOfContents, *, name: str, body: bytes, wait: bool, parser: _OperationParser) -> Any:
    collection = toc.collection(name)
    operation = parser(loads_object(body), collection.config)
    return render_update_result(collection.update(operation, wait=wait))


def _write_handler(parser: _OperationParser) -> Callable[[web.Request], Any]:
    async def handle(request: web.Request) -> Any:
        name = check_collection_name(request.match_info["collection_name"])
        params = write_params(request)
        body = await read_body(request)
        return await run_storage(request, _write_sync, name=name, body=body, wait=params.wait, parser=parser)

    return handle


upsert_points = _write_handler(lambda raw, config: parse_upsert(raw, config=config))
delete_points = _write_handler(lambda raw, _config: parse_delete_points(raw))
set_payload = _write_handler(lambda raw, _config: parse_set_payload(raw))
overwrite_payload = _write_handler(lambda raw, _config: parse_overwrite_payload(raw))
delete_payload = _write_handler(lambda raw, _config: parse_delete_payload(raw))
clear_payload = _write_handler(lambda raw, _config: parse_clear_payload(raw))
update_vectors = _write_handler(lambda raw, config: parse_update_vectors(raw, config=config))
delete_vectors = _write_handler(lambda raw, config: parse_delete_vectors(raw, config=config))


def _batch_sync(toc: TableOfContents, *, name: str, body: bytes, wait: bool) -> list[Any]:
    collection = toc.collection(name)
    operations = parse_batch_operations(loads_object(body), config=collection.config)
    results = []
    for index, operation in enumerate(operations):
        # Only the last operation needs to wait: the shard applies in order.
        is_last = index == len(operations) - 1
        results.append(render_update_result(collection.update(operation, wait=wait and is_last)))
    return results


async def batch_update(request: web.Request) -> Any:
    name = check_collection_name(request.match_info["collection_name"])
    params = write_params(request)
    body = await read_body(request)
    return await run_storage(request, _batch_sync, name=name, body=body, wait=params.wait)


def _retrieve_sync(toc: TableOfContents, *, name: str, body: bytes) -> list[Any]:
    collection = toc.collection(name)
    spec = parse_retrieve(loads_object(body))
    records = collection.retrieve(list(spec.ids), with_payload=spec.with_payload, with_vector=spec.with_vector)
    is_named = collection.config.is_named_vectors
    return [render_record(record, is_named=is_named) for record in records]


async def retrieve_points(request: web.Request) -> Any:
    name = check_collection_name(request.match_info["collection_name"])
    timeout_param(request)
    return await run_storage(request, _retrieve_sync, name=name, body=await read_body(request))


def _get_point_sync(toc: TableOfContents, *, name: str, raw_id: str) -> Any:
    collection = toc.collection(name)
    # A path segment is a string: digits are an integer id, anything else must be a UUID.
    target = point_id(int(raw_id) if raw_id.isdigit() else raw_id, path="id")
    records = collection.retrieve([target], with_payload=PayloadSelector(enabled=True), with_vector=True)
    if not records:
        raise NotFound(f"No point with id {target} found")
    return render_record(records[0], is_named=collection.config.is_named_vectors)


async def get_point(request: web.Request) -> Any:
    name = check_collection_name(request.match_info["collection_name"])
    timeout_param(request)
    return await run_storage(request, _get_point_sync, name=name, raw_id=request.match_info["id"])


def _scroll_sync(toc: TableOfContents, *, name: str, body: bytes) -> dict[str, Any]:
    collection = toc.collection(name)
    spec = parse_scroll(loads_object(body))
    records, next_offset = collection.scroll(
        filter=spec.filter, limit=spec.limit, offset=spec.offset, order_by=spec.order_by,
        with_payload=spec.with_payload, with_vector=spec.with_vector,
    )
    is_named = collection.config.is_named_vectors
    return {"points": [render_record(record, is_named=is_named) for record in records],
            "next_page_offset": next_offset}


async def scroll_points(request: web.Request) -> Any:
    name = check_collection_name(request.match_info["collection_name"])
    timeout_param(request)
    return await run_storage(request, _scroll_sync, name=name, body=await read_body(request))


def _count_sync(toc: TableOfContents, *, name: str, body: bytes) -> dict[str, int]:
    collection = toc.collection(name)
    spec = parse_count(loads_object(body))
    return {"count": collection.count(filter=spec.filter, exact=spec.exact)}


async def count_points(request: web.Request) -> Any:
    name = check_collection_name(request.match_info["collection_name"])
    timeout_param(request)
    return await run_storage(request, _count_sync, name=name, body=await read_body(request))


_P = "/collections/{collection_name}/points"

ROUTES = (
    Route("PUT", _P, upsert_points, "upsert_points", "Insert or update points",
          request_schema="PointInsertOperations", result_schema="UpdateResult", query_params=_WRITE_QUERY),
    Route("POST", _P, retrieve_points, "get_points", "Retrieve points by ids",
          request_schema="PointRequest", result_schema="RecordList", query_params=_READ_QUERY),
    Route("POST", f"{_P}/delete", delete_points, "delete_points", "Delete points by ids or filter",
          request_schema="PointsSelector", result_schema="UpdateResult", query_params=_WRITE_QUERY),
    Route("POST", f"{_P}/payload", set_payload, "set_payload", "Set payload keys",
          request_schema="SetPayload", result_schema="UpdateResult", query_params=_WRITE_QUERY),
    Route("PUT", f"{_P}/payload", overwrite_payload, "overwrite_payload", "Replace the whole payload",
          request_schema="SetPayload", result_schema="UpdateResult", query_params=_WRITE_QUERY),
    Route("POST", f"{_P}/payload/delete", delete_payload, "delete_payload", "Delete payload keys",
          request_schema="DeletePayload", result_schema="UpdateResult", query_params=_WRITE_QUERY),
    Route("POST", f"{_P}/payload/clear", clear_payload, "clear_payload", "Remove the whole payload",
          request_schema="PointsSelector", result_schema="UpdateResult", query_params=_WRITE_QUERY),
    Route("PUT", f"{_P}/vectors", update_vectors, "update_vectors", "Replace named vectors of points",
          request_schema="UpdateVectors", result_schema="UpdateResult", query_params=_WRITE_QUERY),
    Route("POST", f"{_P}/vectors/delete", delete_vectors, "delete_vectors", "Delete named vectors of points",
          request_schema="DeleteVectors", result_schema="UpdateResult", query_params=_WRITE_QUERY),
    Route("POST", f"{_P}/batch", batch_update, "batch_update", "Apply a list of point operations in order",
          request_schema="UpdateOperations", result_schema="UpdateResultList", query_params=_WRITE_QUERY),
    Route("POST", f"{_P}/scroll", scroll_points, "scroll_points", "Page through points",
          request_schema="ScrollRequest", result_schema="ScrollResult", query_params=_READ_QUERY),
    Route("POST", f"{_P}/count", count_points, "count_points", "Count points matching a filter",
          request_schema="CountRequest", result_schema="CountResult", query_params=_READ_QUERY),
    Route("GET", f"{_P}/{{id}}", get_point, "get_point", "Retrieve one point (404 if missing)",
          result_schema="Record", query_params=_READ_QUERY),
)

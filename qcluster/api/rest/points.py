"""Point endpoints: writes (upsert, delete, payload, vectors, batch) and
point reads (retrieve, get one, scroll, count). What each does is in
``qcluster.api.actions``; this module maps HTTP onto it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from qcluster.api import actions
from qcluster.api.rest._request import collection_read_handler, consistency_param, run_storage, run_with_body, timeout_param, write_params
from qcluster.api.rest._route import Route
from qcluster.api.schema.parse import check_collection_name

__all__ = ["ROUTES"]

_WRITE_QUERY = ("wait", "ordering", "timeout")
_READ_QUERY = ("consistency", "timeout")


def _write_handler(kind: str) -> Callable[[web.Request], Any]:
    assert kind in actions.OPERATION_PARSERS, kind

    async def handle(request: web.Request) -> Any:
        name = check_collection_name(request.match_info["collection_name"])
        params = write_params(request)
        return await run_with_body(request, actions.write, name=name, wait=params.wait, kind=kind)

    return handle


upsert_points = _write_handler("upsert")
delete_points = _write_handler("delete")
set_payload = _write_handler("set_payload")
overwrite_payload = _write_handler("overwrite_payload")
delete_payload = _write_handler("delete_payload")
clear_payload = _write_handler("clear_payload")
update_vectors = _write_handler("update_vectors")
delete_vectors = _write_handler("delete_vectors")


async def batch_update(request: web.Request) -> Any:
    name = check_collection_name(request.match_info["collection_name"])
    params = write_params(request)
    return await run_with_body(request, actions.batch_update, name=name, wait=params.wait)


retrieve_points = collection_read_handler(actions.retrieve)
scroll_points = collection_read_handler(actions.scroll)
count_points = collection_read_handler(actions.count)


async def get_point(request: web.Request) -> Any:
    name = check_collection_name(request.match_info["collection_name"])
    timeout_param(request)
    return await run_storage(request, actions.get_point, name=name, raw_id=request.match_info["id"],
                             consistency=consistency_param(request))


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

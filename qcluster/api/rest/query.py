"""Search endpoints: the universal ``/points/query`` (and its batch) and the
legacy ``/points/search`` (and its batch). What each does is in
``qcluster.api.actions``."""

from __future__ import annotations

import functools
import time
from typing import Any, Final

from aiohttp import web

from qcluster.api import actions
from qcluster.api.batcher import Batcher
from qcluster.api.rest._request import (
    START_KEY,
    NodeState,
    collection_read_handler,
    consistency_param,
    enveloped,
    read_body,
    state_of,
    timeout_param,
)
from qcluster.api.rest._route import Route
from qcluster.api.schema.parse import check_collection_name

__all__ = ["ROUTES"]

_READ_QUERY = ("consistency", "timeout")

_BATCHER_KEY: Final = web.AppKey("qcluster_query_batcher", Batcher)


def _query_many(state: NodeState, items: list[tuple[actions.QueryItem, float]]) -> list[web.Response | BaseException]:
    """Answers of single queries, as whole responses: the JSON is rendered
    here, in the storage thread, not on the event loop."""
    outcomes = actions.query_many(state.ready_toc(), [item for item, _started in items])
    now = time.perf_counter()
    return [outcome if isinstance(outcome, BaseException) else enveloped(outcome, time_s=now - started)
            for outcome, (_item, started) in zip(outcomes, items, strict=True)]


def install(app: web.Application, state: NodeState) -> None:
    """Give the application its query batcher (see ``qcluster.api.batcher``)."""
    app[_BATCHER_KEY] = Batcher(executor=state.executor, run_batch=functools.partial(_query_many, state))


async def query_points(request: web.Request) -> web.Response:
    name = check_collection_name(request.match_info["collection_name"])
    timeout_param(request)
    consistency = consistency_param(request)
    state_of(request).ready_toc()
    body = await read_body(request)
    return await request.app[_BATCHER_KEY].submit(((name, body, consistency), request[START_KEY]))


query_batch_points = collection_read_handler(actions.query_batch)
search_points = collection_read_handler(actions.search)
search_batch_points = collection_read_handler(actions.search_batch)

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

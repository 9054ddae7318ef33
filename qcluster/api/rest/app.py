"""The aiohttp application: one route table, the envelope, errors, auth.

Every route in ``ROUTES`` is registered with the router and described in the
OpenAPI document from the same record. Responses use Qdrant's envelope
``{"result", "status": "ok", "time"}``; errors use ``{"status": {"error"},
"time"}`` with the HTTP status from ``qcluster.api.error_mapping``. An
unexpected exception is logged with its traceback and answered with a 500;
the node keeps serving. ``asyncio.CancelledError`` is never caught.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Final

import orjson
from aiohttp import web

from qcluster.api.auth import authenticate
from qcluster.api.error_mapping import http_headers_for, wire_status_for
from qcluster.api.rest import cluster, collections, points, query, service
from qcluster.api.rest._request import START_KEY, STATE_KEY, NodeState, elapsed_s, enveloped
from qcluster.api.rest._route import Handler, Route
from qcluster.api.rest.openapi import build_document
from qcluster.errors import QclusterError

__all__ = ["ALL_ROUTES", "build_app", "json_response"]

_log = logging.getLogger("qcluster.api.rest")
# Probes answer without credentials so orchestrators can check a secured node.
_PUBLIC_PATHS: Final = frozenset(("/", "/healthz", "/livez", "/readyz"))


async def _openapi(request: web.Request) -> web.Response:
    return web.Response(body=request.app[_OPENAPI_KEY], content_type="application/json")


_OPENAPI_KEY: Final = web.AppKey("qcluster_openapi", bytes)
_OPENAPI_ROUTE: Final = Route("GET", "/openapi.json", _openapi, "openapi", "This OpenAPI document",
                              is_enveloped=False)

ALL_ROUTES: Final[tuple[Route, ...]] = (
    *service.ROUTES, _OPENAPI_ROUTE, *collections.ROUTES, *points.ROUTES, *query.ROUTES, *cluster.ROUTES,
)
# aiohttp tries the routes under one static prefix ("/collections") in the
# order they were added, one regex each, until one matches: the hot ones go
# first (measured: ~30 routes tried before /points/query was ~10 % of a single
# query's time on the event loop).
_MATCH_ORDER: Final[tuple[Route, ...]] = (
    *query.ROUTES, *points.ROUTES, *collections.ROUTES, *cluster.ROUTES, *service.ROUTES, _OPENAPI_ROUTE,
)
assert sorted(map(id, _MATCH_ORDER)) == sorted(map(id, ALL_ROUTES))


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(
        body=orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY),
        status=status,
        headers=headers,
        content_type="application/json",
    )


def _error_response(request: web.Request, *, status: int, message: str,
                    headers: dict[str, str] | None = None) -> web.Response:
    return json_response({"status": {"error": message}, "time": elapsed_s(request)}, status=status, headers=headers)


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authentication (probes answer without credentials), Qdrant's envelope
    and the error envelope, in one middleware: each layer costs a coroutine
    per request. A handler's result is enveloped; a response it returns (a
    probe, the OpenAPI document, an answer rendered off the loop) is sent as
    it is."""
    request[START_KEY] = time.perf_counter()
    try:
        if request.path not in _PUBLIC_PATHS:
            authenticate(request.app[STATE_KEY].api_key, api_key=request.headers.get("api-key"),
                         authorization=request.headers.get("Authorization"))
        result = await handler(request)
        if isinstance(result, web.StreamResponse):
            return result
        return enveloped(result, time_s=elapsed_s(request))
    except QclusterError as error:
        status = wire_status_for(error)
        level = logging.WARNING if status.http_status >= 500 else logging.DEBUG
        _log.log(level, "request failed", extra={"method": request.method, "path": request.path,
                                                   "status": status.http_status, "error": error.message})
        return _error_response(request, status=status.http_status, message=error.message,
                               headers=http_headers_for(error))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = exc.text if exc.text and not exc.text.startswith(f"{exc.status}:") else exc.reason
        return _error_response(request, status=exc.status, message=message, headers=None)
    except Exception as exc:  # noqa: BLE001 - a bug in one request must not take the node down
        _log.exception("unexpected error", extra={"method": request.method, "path": request.path})
        return _error_response(request, status=500,
                               message=f"Service internal error: {type(exc).__name__}: {exc}")


def build_app(state: NodeState) -> web.Application:
    """The application for one node; ``state.toc`` may be set later (readiness)."""
    app = web.Application(
        client_max_size=state.body_bytes_max,
        middlewares=[_middleware],
    )
    app[STATE_KEY] = state
    app[_OPENAPI_KEY] = orjson.dumps(build_document(ALL_ROUTES))
    query.install(app, state)
    for route in _MATCH_ORDER:
        app.router.add_route(route.method, route.path, route.handler, name=route.operation_id)
    return app

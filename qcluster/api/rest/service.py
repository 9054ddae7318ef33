"""Service endpoints: version, health probes."""

from __future__ import annotations

from typing import Any

from aiohttp import web

import qcluster
from qcluster.api.rest._request import state_of
from qcluster.api.rest._route import Route

__all__ = ["ROUTES"]


async def root(request: web.Request) -> web.Response:
    """Not enveloped, as in Qdrant: qdrant-client reads ``version`` at the top level."""
    body: dict[str, Any] = {"title": "qcluster", "version": qcluster.QDRANT_API_VERSION,
                            "commit": state_of(request).commit}
    return web.json_response(body)


async def healthz(_request: web.Request) -> web.Response:
    return web.Response(text="healthz check passed")


async def livez(_request: web.Request) -> web.Response:
    return web.Response(text="healthz check passed")


async def readyz(request: web.Request) -> web.Response:
    state = state_of(request)
    toc = state.toc
    if toc is not None and state.unready_reason is None and toc.is_ready():
        return web.Response(text="all shards are ready")
    return web.Response(status=503, text="storage is not ready")


ROUTES = (
    Route("GET", "/", root, "root", "Version of the API and commit of the build",
          result_schema="VersionInfo", is_enveloped=False),
    Route("GET", "/healthz", healthz, "healthz", "The process answers (text/plain)", is_enveloped=False),
    Route("GET", "/livez", livez, "livez", "The process answers (text/plain)", is_enveloped=False),
    Route("GET", "/readyz", readyz, "readyz", "200 once storage is loaded, else 503 (text/plain)",
          is_enveloped=False),
)

"""Qdrant-compatible REST API on aiohttp.

``app.build_app`` assembles the application from one table of routes
(``ROUTES`` of ``service``, ``collections``, ``points`` and ``query``); the
OpenAPI document at ``/openapi.json`` is generated from that same table, so
it cannot drift from the router.

Status codes follow Qdrant: 200 with ``{"result", "status": "ok", "time"}``;
errors are ``{"status": {"error": message}, "time"}`` with the status chosen
by ``qcluster.api.error_mapping``. A body that is not valid JSON, or whose top
level is not an object, is a 400 "Format error in JSON body" as in Qdrant
(qdrant-client treats every non-2xx status the same way).
"""

from qcluster.api.rest.app import build_app
from qcluster.api.state import NodeState

__all__ = ["NodeState", "build_app"]

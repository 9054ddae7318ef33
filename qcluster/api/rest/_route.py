"""The route record shared by the router and the OpenAPI generator."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiohttp import web

__all__ = ["Handler", "Route"]

# A handler returns the ``result`` of the envelope, or a ready response
# (health probes and the OpenAPI document are not enveloped).
Handler: TypeAlias = Callable[[web.Request], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    operation_id: str
    summary: str
    # Names of schemas in openapi.SCHEMAS; None means "no request body".
    request_schema: str | None = None
    result_schema: str = "Any"
    # Query parameters the route reads (documented, and validated in the handler).
    query_params: tuple[str, ...] = ()
    # False for text/plain probes and raw documents.
    is_enveloped: bool = True

    def __post_init__(self) -> None:
        assert self.method in ("GET", "POST", "PUT", "PATCH", "DELETE"), self.method
        assert self.path.startswith("/"), self.path

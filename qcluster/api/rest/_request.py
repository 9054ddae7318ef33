"""Per-node state the handlers share, and the request plumbing they use.

Threading: handlers run on the event loop. Every call into storage (and the
JSON parsing of big bodies that goes with it) runs in the node's bounded
``ThreadPoolExecutor`` through ``run_storage``, so a long search or an fsync
never stalls the loop.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Final, TypeVar

import orjson
from aiohttp import web

from qcluster.api.schema.parse import check_collection_name, loads_object, read_consistency
from qcluster.api.state import NodeState
from qcluster.errors import InvalidRequest, LimitExceeded
from qcluster.types import ReadConsistency, WriteOrdering

if TYPE_CHECKING:
    from qcluster.storage.toc import TableOfContents

__all__ = ["NodeState", "START_KEY", "STATE_KEY", "elapsed_s", "enveloped", "enveloped_bytes", "collection_read_handler", "consistency_param", "WriteParams", "read_body", "run_storage", "run_with_body", "write_params"]

T = TypeVar("T")


STATE_KEY: Final = web.AppKey("qcluster_state", NodeState)
# When the request reached the handler chain (``time.perf_counter``), for the
# envelope's ``time``. aiohttp >= 3.12 wants typed request keys; older versions take a string.
START_KEY: Final[Any] = (
    web.RequestKey("qcluster_started_s", float) if hasattr(web, "RequestKey") else "qcluster_started_s"
)


def elapsed_s(request: web.Request) -> float:
    started = request.get(START_KEY)
    return 0.0 if started is None else time.perf_counter() - started


def enveloped(result: Any, *, time_s: float) -> web.Response:
    """Qdrant's success envelope around ``result``."""
    return web.Response(body=enveloped_bytes(result, time_s=time_s), content_type="application/json")


def enveloped_bytes(result: Any, *, time_s: float) -> bytes:
    """The body of ``enveloped``; callable off the event loop."""
    return orjson.dumps({"result": result, "status": "ok", "time": time_s}, option=orjson.OPT_SERIALIZE_NUMPY)


def state_of(request: web.Request) -> NodeState:
    return request.app[STATE_KEY]


async def run_storage(request: web.Request, function: Callable[..., T], /, **kwargs: Any) -> T:
    """Run ``function(toc, **kwargs)`` in the storage executor.

    Cancel safety: if the request is cancelled (client gone), the call keeps
    running in its thread to completion; only the wait is abandoned. Storage
    calls are atomic, so nothing is left half-done.
    """
    state = state_of(request)
    toc = state.ready_toc()
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(state.executor, functools.partial(function, toc, **kwargs))


def _call_with_body(toc: TableOfContents, *, action: Callable[..., T], body: bytes, **kwargs: Any) -> T:
    return action(toc, raw=loads_object(body), **kwargs)


async def run_with_body(request: web.Request, action: Callable[..., T], /, **kwargs: Any) -> T:
    """Read the body and run ``action(toc, raw=<parsed body>, **kwargs)`` in
    the storage executor; the JSON is parsed there too, off the event loop."""
    body = await read_body(request)
    return await run_storage(request, _call_with_body, action=action, body=body, **kwargs)


async def read_body(request: web.Request) -> bytes:
    """The whole body, bounded by the node's request size limit."""
    state = state_of(request)
    declared = request.content_length
    if declared is not None and declared > state.body_bytes_max:
        raise LimitExceeded(
            f"request body: {declared} bytes exceeds the limit of {state.body_bytes_max} bytes"
        )
    try:
        return await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise LimitExceeded(f"request body: exceeds the limit of {state.body_bytes_max} bytes") from exc


def _bool_param(query: Mapping[str, str], name: str, *, default: bool) -> bool:
    raw = query.get(name)
    if raw is None:
        return default
    match raw.strip().lower():
        case "true" | "1" | "":
            return True
        case "false" | "0":
            return False
    raise InvalidRequest(f"query parameter {name}: expected true or false, got {raw!r}")


class WriteParams:
    __slots__ = ("ordering", "wait")

    def __init__(self, *, wait: bool, ordering: WriteOrdering) -> None:
        self.wait = wait
        self.ordering = ordering


def write_params(request: web.Request) -> WriteParams:
    """``?wait=`` (default false, as in Qdrant), ``?ordering=`` and ``?timeout=``."""
    query = request.query
    wait = _bool_param(query, "wait", default=False)
    raw_ordering = query.get("ordering", WriteOrdering.WEAK.value)
    try:
        ordering = WriteOrdering(raw_ordering.strip().lower())
    except ValueError as exc:
        raise InvalidRequest(
            f"query parameter ordering: expected weak, medium or strong, got {raw_ordering!r}"
        ) from exc
    timeout_param(request)
    return WriteParams(wait=wait, ordering=ordering)


def timeout_param(request: web.Request) -> int | None:
    """``?timeout=`` seconds. Accepted for compatibility and validated; a single
    node answers every call it accepts, so it is not used as a deadline yet."""
    raw = request.query.get("timeout")
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError as exc:
        raise InvalidRequest(f"query parameter timeout: expected an integer, got {raw!r}") from exc
    if value < 1:
        raise InvalidRequest("query parameter timeout: must be at least 1 second")
    return value


def consistency_param(request: web.Request) -> ReadConsistency | None:
    """``?consistency=``: Qdrant's read consistency (a replica count,
    ``majority``, ``quorum`` or ``all``; qcluster's ``primary``)."""
    return read_consistency(request.query.get("consistency"), path="query parameter consistency")


def collection_read_handler(action: Callable[..., Any]) -> Callable[[web.Request], Awaitable[Any]]:
    """A handler for ``POST /collections/{collection_name}/...`` reads:
    ``action(toc, name=..., raw=<body>, consistency=...)`` in the storage executor."""

    async def handle(request: web.Request) -> Any:
        name = check_collection_name(request.match_info["collection_name"])
        timeout_param(request)
        return await run_with_body(request, action, name=name, consistency=consistency_param(request))

    return handle


def bool_query_param(request: web.Request, name: str, *, default: bool) -> bool:
    return _bool_param(request.query, name, default=default)

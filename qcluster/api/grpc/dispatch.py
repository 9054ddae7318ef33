"""What every gRPC method does around its work: authenticate, run, stamp
``time``, map errors through the one table."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Final

import grpc
from google.protobuf.message import Message

from qcluster.api.auth import authenticate
from qcluster.api.error_mapping import wire_status_for
from qcluster.api.state import NodeState
from qcluster.errors import QclusterError

__all__ = ["Dispatcher"]

_log = logging.getLogger("qcluster.api.grpc")
# Called without credentials, like the REST probes.
_PUBLIC_METHODS: Final = frozenset(("HealthCheck",))


class Dispatcher:
    """Runs one RPC: authenticate, do the work, stamp ``time``, map errors."""

    def __init__(self, state: NodeState) -> None:
        self.state = state

    async def serve(self, method: str, context: grpc.aio.ServicerContext,
                    work: Callable[[], Awaitable[Message]]) -> Message:
        started = time.perf_counter()
        try:
            if method not in _PUBLIC_METHODS:
                metadata = dict(context.invocation_metadata() or ())
                authenticate(self.state.api_key, api_key=metadata.get("api-key"),
                             authorization=metadata.get("authorization"))
            reply = await work()
        except QclusterError as error:
            code = getattr(grpc.StatusCode, wire_status_for(error).grpc_code)
            message = error.message
            _log.log(logging.WARNING if code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.DATA_LOSS)
                     else logging.DEBUG, "rpc failed", extra={"method": method, "error": message})
        except Exception as exc:  # noqa: BLE001 - a bug in one call must not take the node down
            _log.exception("unexpected error", extra={"method": method})
            code, message = grpc.StatusCode.INTERNAL, f"Service internal error: {type(exc).__name__}: {exc}"
        else:
            if "time" in reply.DESCRIPTOR.fields_by_name:
                reply.time = time.perf_counter() - started  # type: ignore[attr-defined]
            return reply
        await context.abort(code, message)
        raise AssertionError("context.abort raises")

    async def run_sync(self, rpc: Callable[..., Message], request: Message) -> Message:
        toc = self.state.ready_toc()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.state.executor, rpc, toc, request)

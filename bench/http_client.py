"""Load client for qcluster's REST API, run as its own process
(``python -m bench.http_client URL[,URL...] COLLECTION``) so that its event
loop and JSON work never share a GIL with the harness. With several URLs
(the nodes of a cluster) the connections are spread over them in turn, as a
load balancer in front of the nodes would.

The job protocol and the timed loop are in bench/client_loop.py (shared with
bench/grpc_client.py).

A load generator, not an SDK: on a 2-core machine every cycle the client
spends is taken from the server it measures, so it is built like wrk —
``concurrency`` keep-alive HTTP/1.1 connections, one request in flight on
each, on a uvloop event loop, responses parsed by httptools (llhttp, the
parser of uvicorn and of Node.js). Each request (head and orjson body) is
encoded before the clock starts; each answer's status is checked and its JSON
decoded with orjson inside the timed loop (that is part of a client's cost).
``batch`` > 1 sends ``/points/query/batch`` with that many searches per request.
Measured on the pypi workload with 8 clients: this client costs about a third
of what aiohttp's ``ClientSession`` did per request (see bench/README.md).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any
from urllib.parse import urlsplit

import httptools
import numpy as np
import orjson
import uvloop

from bench.client_loop import Results, serve_jobs, timed_run

CALL_TIMEOUT_S = 120.0


def _bodies(queries: np.ndarray, job: dict[str, Any]) -> list[bytes]:
    def one(vector: np.ndarray) -> dict[str, Any]:
        request: dict[str, Any] = {"query": vector.tolist(), "limit": job["limit"], "params": {"hnsw_ef": job["ef"]}}
        if job.get("filter") is not None:
            request["filter"] = job["filter"]
        return request

    batch = int(job["batch"])
    if batch == 1:
        return [orjson.dumps(one(vector)) for vector in queries]
    return [orjson.dumps({"searches": [one(vector) for vector in queries[start:start + batch]]})
            for start in range(0, len(queries), batch)]


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._parser = httptools.HttpResponseParser(self)
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._body: list[bytes] = []

    async def post(self, request: bytes) -> tuple[int, bytes]:
        """Send a complete request (head and body); the status and body of its response."""
        if self._transport is None or self._transport.is_closing():
            raise ConnectionError("connection closed")
        assert self._waiter is None, "one request in flight per connection"
        self._waiter = waiter = self._loop.create_future()
        self._timer = self._loop.call_later(CALL_TIMEOUT_S, self._fail, TimeoutError(f"no answer in {CALL_TIMEOUT_S} s"))
        self._transport.write(request)
        try:
            return await waiter
        finally:
            self._waiter = None
            self._timer.cancel()

    def close(self) -> None:
        if self._transport is not None:
            self._transport.close()

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's transports are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(ConnectionError(f"bad HTTP response: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError(f"connection lost: {exc}"))

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._body = []

    def on_body(self, body: bytes) -> None:
        self._body.append(body)

    def on_message_complete(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result((self._parser.get_status_code(), b"".join(self._body)))

    def _fail(self, error: Exception) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_exception(error)


async def _main(base_urls: list[str], collection: str) -> None:
    targets = []
    for base_url in base_urls:
        split = urlsplit(base_url)
        assert split.scheme == "http" and split.hostname and split.port, f"expected http://HOST:PORT, got {base_url}"
        targets.append((split.hostname, split.port, split.netloc))
    prefix = f"/collections/{collection}"
    loop = asyncio.get_running_loop()
    idle: list[_Connection] = []   # open connections not carrying a request
    opened = 0                     # connections made so far: the next goes to targets[opened % len]

    async def run_job(job: dict[str, Any], queries: np.ndarray) -> dict[str, Any]:
        nonlocal opened
        batch = int(job["batch"])
        path = f"{prefix}/points/query" if batch == 1 else f"{prefix}/points/query/batch"
        # Host is informational here (every node answers every path); the first node's is sent.
        head = (f"POST {path} HTTP/1.1\r\nHost: {targets[0][2]}\r\nContent-Type: application/json\r\n"
                "Content-Length: {length}\r\n\r\n")
        requests = [head.format(length=len(body)).encode() + body for body in _bodies(queries, job)]
        while len(idle) < int(job["concurrency"]):  # every connection open before the clock starts
            host, port, _netloc = targets[opened % len(targets)]
            _transport, connection = await loop.create_connection(_Connection, host, port)
            opened += 1
            idle.append(connection)

        async def post(request: bytes) -> Any:
            connection = idle.pop()  # never empty: at most `concurrency` calls run at once
            try:
                status, raw = await connection.post(request)
            except BaseException:
                connection.close()  # a broken or timed-out connection is not reused
                raise
            idle.append(connection)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {raw[:300]!r}")
            return orjson.loads(raw)["result"]

        results: Results[Any] = Results(rows=len(queries), limit=int(job["limit"]), batch=batch)

        def record(index: int, result: Any) -> None:
            answers = [result["points"]] if batch == 1 else [item["points"] for item in result]
            results.record(index, [[point["id"] for point in points] for points in answers])

        return await timed_run(requests, post, record, job=job, results=results)

    try:
        await serve_jobs(run_job)
    finally:
        for connection in idle:
            connection.close()


if __name__ == "__main__":
    uvloop.run(_main(sys.argv[1].split(","), sys.argv[2]))

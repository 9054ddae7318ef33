"""Load client for qcluster's dense gRPC extension (``qcluster.proto.v1.DensePoints``),
run as its own process (``python -m bench.grpc_client HOST:PORT COLLECTION``)
so that its event loop never shares a GIL with the harness.

Same job protocol as bench/http_client.py: one JSON job per stdin line::

    {"queries": "q.npy", "count": 1000, "ef": 64, "filter": {...} | null,
     "batch": 1 | 64, "concurrency": 1 | 8, "max_seconds": 60, "limit": 10, "out": "r.npz"}

answered by one JSON line (``{"ok": true, "wall_s", "completed", "requests"}``
or ``{"ok": false, "error"}``); ids (-1 padded) and per-request latencies go
to the ``out`` npz.

grpc.aio, one channel (one HTTP/2 connection) shared by ``concurrency``
asyncio tasks, each with at most one ``Query`` in flight: N tasks = N
concurrent streams multiplexed on that connection. Each request carries a
raw float32 matrix: one row per request, or ``batch`` rows per request. The
``DenseQueryRequest`` messages are built before the clock starts (protobuf
serialisation of the prepared message happens in the call, as it must);
replies are decoded with ``np.frombuffer`` inside the timed loop. The filter
(Qdrant filter JSON) goes as ``filter_json`` bytes (orjson).
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import grpc
import numpy as np
import orjson

from qcluster.proto.v1 import dense_pb2, dense_pb2_grpc

WARMUP_REQUESTS = 3
CALL_TIMEOUT_S = 120.0


def _requests(collection: str, queries: np.ndarray, job: dict[str, Any]) -> list[dense_pb2.DenseQueryRequest]:
    matrix = np.ascontiguousarray(queries, dtype="<f4")
    filter_json = orjson.dumps(job["filter"]) if job.get("filter") is not None else b""
    batch = int(job["batch"])
    requests = []
    for start in range(0, len(matrix), batch):
        rows = matrix[start:start + batch]
        requests.append(dense_pb2.DenseQueryRequest(
            collection_name=collection,
            queries=dense_pb2.Matrix(rows=rows.shape[0], dim=rows.shape[1], data=rows.tobytes()),
            limit=int(job["limit"]), hnsw_ef=int(job["ef"]), filter_json=filter_json))
    return requests


async def _run(stub: dense_pb2_grpc.DensePointsStub, collection: str, job: dict[str, Any],
               cache: dict[str, np.ndarray]) -> dict[str, Any]:
    path = job["queries"]
    if path not in cache:
        cache[path] = np.load(path)
    queries = cache[path][: int(job["count"])]
    batch = int(job["batch"])
    requests = _requests(collection, queries, job)
    limit = int(job["limit"])
    ids = np.full((len(queries), limit), -1, dtype=np.int64)
    answered = np.zeros(len(queries), dtype=bool)
    latencies: list[float] = []
    errors: list[str] = []

    async def call(request: dense_pb2.DenseQueryRequest) -> dense_pb2.DenseQueryReply:
        try:
            reply: dense_pb2.DenseQueryReply = await stub.Query(request, timeout=CALL_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise RuntimeError(f"gRPC {exc.code().name}: {(exc.details() or '')[:300]}") from None
        return reply

    for request in requests[:WARMUP_REQUESTS]:
        await call(request)
    cursor = iter(range(len(requests)))
    deadline = time.perf_counter() + float(job["max_seconds"])

    async def client() -> None:
        for index in cursor:
            if time.perf_counter() > deadline or errors:
                return
            before = time.perf_counter()
            try:
                reply = await call(requests[index])
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            latencies.append(1000 * (time.perf_counter() - before))
            counts = np.frombuffer(reply.counts, dtype="<u4")
            if reply.uuids:
                errors.append("reply carries UUIDs; the benchmark uses integer ids")
                return
            found = np.frombuffer(reply.ids, dtype="<u8").astype(np.int64)
            first, rows = index * batch, len(counts)
            if (counts == limit).all():
                ids[first:first + rows] = found.reshape(rows, limit)
            else:  # some row has fewer results (a selective filter)
                start = 0
                for offset, count in enumerate(counts.tolist()):
                    taken = min(count, limit)
                    ids[first + offset, :taken] = found[start:start + taken]
                    start += count
            answered[first:first + rows] = True

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(int(job["concurrency"]))))
    wall = time.perf_counter() - started
    np.savez(job["out"], ids=ids, answered=answered, latencies_ms=np.asarray(latencies, dtype=np.float64))
    return {"ok": not errors, "error": errors[0] if errors else None, "wall_s": wall,
            "completed": int(answered.sum()), "requests": len(latencies)}


async def _main(target: str, collection: str) -> None:
    cache: dict[str, np.ndarray] = {}
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(target) as channel:
        stub = dense_pb2_grpc.DensePointsStub(channel)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line.strip():
                return
            job = orjson.loads(line)
            try:
                answer = await _run(stub, collection, job, cache)
            except Exception as exc:
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(orjson.dumps(answer).decode() + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2]))

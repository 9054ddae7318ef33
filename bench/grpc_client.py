"""Load client for qcluster's dense gRPC extension (``qcluster.proto.v1.DensePoints``),
run as its own process (``python -m bench.grpc_client HOST:PORT COLLECTION``)
so that its event loop never shares a GIL with the harness.

The job protocol and the timed loop are in bench/client_loop.py (shared
with bench/http_client.py).

grpc.aio, one channel (one HTTP/2 connection) shared by ``concurrency``
asyncio tasks, each with at most one ``Query`` in flight: N tasks = N
concurrent streams multiplexed on that connection. With concurrency 1 (one
client, and batched) calls go through a blocking stub instead, as the SDK's
``Client`` makes them: with one call in flight an event loop only adds cost
(measured: 64-row batches ~10 100 QPS blocking vs ~8 000-8 900 with grpc.aio). Each request carries a
raw float32 matrix: one row per request, or ``batch`` rows per request. The
``DenseQueryRequest`` messages are built before the clock starts (protobuf
serialisation of the prepared message happens in the call, as it must);
replies are decoded with ``np.frombuffer`` inside the timed loop. The filter
(Qdrant filter JSON) goes as ``filter_json`` bytes (orjson).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import grpc
import numpy as np
import orjson

from bench.client_loop import Results, serve_jobs, timed_run
from qcluster.proto.v1 import dense_pb2, dense_pb2_grpc

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


async def _main(target: str, collection: str) -> None:
    async with grpc.aio.insecure_channel(target) as channel:
        stub = dense_pb2_grpc.DensePointsStub(channel)
        # One request in flight needs no event loop: the blocking stub (what
        # the SDK's Client uses) costs the client less per call than grpc.aio.
        blocking_channel = grpc.insecure_channel(target, options=[("grpc.max_receive_message_length", 64 << 20)])
        blocking_stub = dense_pb2_grpc.DensePointsStub(blocking_channel)
        concurrency = 1

        async def call(request: dense_pb2.DenseQueryRequest) -> dense_pb2.DenseQueryReply:
            try:
                if concurrency == 1:
                    return blocking_stub.Query(request, timeout=CALL_TIMEOUT_S)  # type: ignore[no-any-return]
                reply: dense_pb2.DenseQueryReply = await stub.Query(request, timeout=CALL_TIMEOUT_S)
            except grpc.RpcError as exc:
                raise RuntimeError(f"gRPC {exc.code().name}: {(exc.details() or '')[:300]}") from None
            return reply

        async def run_job(job: dict[str, Any], queries: np.ndarray) -> dict[str, Any]:
            nonlocal concurrency
            concurrency = int(job["concurrency"])
            results: Results[dense_pb2.DenseQueryReply] = Results(
                rows=len(queries), limit=int(job["limit"]), batch=int(job["batch"]))

            def record(index: int, reply: dense_pb2.DenseQueryReply) -> None:
                if reply.uuids:
                    raise ValueError("reply carries UUIDs; the benchmark uses integer ids")
                results.record_flat(index, np.frombuffer(reply.ids, dtype="<u8").astype(np.int64),
                                    np.frombuffer(reply.counts, dtype="<u4"))

            return await timed_run(_requests(collection, queries, job), call, record, job=job, results=results)

        await serve_jobs(run_job)
        blocking_channel.close()


if __name__ == "__main__":
    asyncio.run(_main(sys.argv[1], sys.argv[2]))

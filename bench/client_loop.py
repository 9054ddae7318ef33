"""What the separate-process load clients (``bench/http_client.py``,
``bench/grpc_client.py``) share: the stdin/stdout job loop and the timed run.

A job is one JSON line on stdin::

    {"queries": "q.npy", "count": 1000, "ef": 64, "filter": {...} | null,
     "batch": 1 | 64, "concurrency": 1 | 8, "max_seconds": 60, "limit": 10, "out": "r.npz"}

answered by one JSON line (``{"ok": true, "wall_s", "completed",
"requests"}`` or ``{"ok": false, "error"}``); ids (-1 padded) and
per-request latencies go to the ``out`` npz. ``concurrency`` asyncio tasks
pull the next prepared request from a shared cursor; the run stops when the
requests run out, at ``max_seconds``, or at the first error. A few untimed
warm-up requests go first, ``concurrency`` at a time (so every connection is
open before the clock starts).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, TypeVar

import numpy as np
import orjson

__all__ = ["Results", "serve_jobs", "timed_run"]

R = TypeVar("R")
A = TypeVar("A")
WARMUP_REQUESTS = 3


class Results(Generic[A]):
    """Ids per query row (-1 padded) and which rows were answered."""

    def __init__(self, *, rows: int, limit: int, batch: int) -> None:
        self.ids = np.full((rows, limit), -1, dtype=np.int64)
        self.answered = np.zeros(rows, dtype=bool)
        self.limit = limit
        self.batch = batch

    def record_flat(self, request_index: int, ids: np.ndarray, counts: np.ndarray) -> None:
        """The answer to request ``request_index`` as flat ids and hits per row
        (as the dense gRPC reply carries them): one numpy copy when every row
        has ``limit`` hits."""
        first = request_index * self.batch
        rows = counts.shape[0]
        if rows and bool((counts == self.limit).all()):
            self.ids[first:first + rows] = ids.reshape(rows, self.limit)
            self.answered[first:first + rows] = True
            return
        ends = np.cumsum(counts).tolist()
        self.record(request_index, [ids[end - count:end] for end, count in zip(ends, counts.tolist())])

    def record(self, request_index: int, per_row_ids: Sequence[Sequence[int]]) -> None:
        first = request_index * self.batch
        for offset, found in enumerate(per_row_ids):
            taken = list(found)[: self.limit]
            self.ids[first + offset, : len(taken)] = taken
            self.answered[first + offset] = True


async def timed_run(requests: Sequence[R], call: Callable[[R], Awaitable[A]],
                    record: Callable[[int, A], None], *, job: dict[str, Any], results: Results[A]) -> dict[str, Any]:
    # Warm-up, untimed: as many requests at once as the run has clients, so
    # that every connection (one per concurrent HTTP client) is open before
    # the clock starts, like the in-process systems' threads.
    concurrency = int(job["concurrency"])
    for start in range(0, max(WARMUP_REQUESTS, concurrency), concurrency):
        await asyncio.gather(*(call(request) for request in requests[start:start + concurrency]))
    latencies: list[float] = []
    errors: list[str] = []
    cursor = iter(range(len(requests)))
    deadline = time.perf_counter() + float(job["max_seconds"])

    async def client() -> None:
        for index in cursor:
            if time.perf_counter() > deadline or errors:
                return
            before = time.perf_counter()
            try:
                answer = await call(requests[index])
            except Exception as exc:  # reported in the job's answer
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            latencies.append(1000 * (time.perf_counter() - before))
            try:
                record(index, answer)
            except Exception as exc:  # a reply the client cannot read
                errors.append(f"{type(exc).__name__}: {exc}")
                return

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(int(job["concurrency"]))))
    wall = time.perf_counter() - started
    np.savez(job["out"], ids=results.ids, answered=results.answered,
             latencies_ms=np.asarray(latencies, dtype=np.float64))
    return {"ok": not errors, "error": errors[0] if errors else None, "wall_s": wall,
            "completed": int(results.answered.sum()), "requests": len(latencies)}


async def serve_jobs(run_job: Callable[[dict[str, Any], np.ndarray], Awaitable[dict[str, Any]]]) -> None:
    """Read jobs from stdin until an empty line or EOF; answer each on stdout."""
    cache: dict[str, np.ndarray] = {}
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line.strip():
            return
        job = orjson.loads(line)
        try:
            path = job["queries"]
            if path not in cache:
                cache[path] = np.load(path)
            answer = await run_job(job, cache[path][: int(job["count"])])
        except Exception as exc:  # reported, the client keeps serving jobs
            answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(orjson.dumps(answer).decode() + "\n")
        sys.stdout.flush()

"""In-process load generation: one client, N client threads, or batches.

Every run is bounded twice: by the number of queries given and by
``max_seconds`` (checked before each request). A few untimed warm-up requests
precede each run. Per-request latency is wall time around the call.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from bench.metrics import latency_summary

SearchOne = Callable[[np.ndarray], Sequence[int]]
SearchMany = Callable[[np.ndarray], list[Sequence[int]]]
WARMUP = 5


@dataclasses.dataclass
class LoadResult:
    ids: list[Sequence[int] | None]   # per query, None when not answered (time bound)
    latencies_ms: list[float]         # per request (a batch is one request)
    wall_s: float
    completed: int                    # queries answered
    error: str | None = None

    @property
    def qps(self) -> float | None:
        return self.completed / self.wall_s if self.wall_s > 0 and self.completed else None

    def summary(self) -> dict[str, Any]:
        return {"qps": self.qps, "completed": self.completed, "wall_s": self.wall_s,
                "requests": len(self.latencies_ms), "error": self.error, **latency_summary(self.latencies_ms)}


def run_single(search: SearchOne, queries: np.ndarray, max_seconds: float) -> LoadResult:
    for query in queries[:WARMUP]:
        search(query)
    ids: list[Sequence[int] | None] = [None] * len(queries)
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + max_seconds
    for position, query in enumerate(queries):
        before = time.perf_counter()
        if before > deadline:
            break
        ids[position] = search(query)
        latencies.append(1000 * (time.perf_counter() - before))
    wall = time.perf_counter() - started
    return LoadResult(ids, latencies, wall, len(latencies))


def run_concurrent(search: SearchOne, queries: np.ndarray, concurrency: int, max_seconds: float) -> LoadResult:
    """``concurrency`` threads pull the next query from a shared cursor."""
    for query in queries[:WARMUP]:
        search(query)
    ids: list[Sequence[int] | None] = [None] * len(queries)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    cursor = iter(range(len(queries)))
    lock = threading.Lock()
    deadline = time.perf_counter() + max_seconds

    def client(slot: int) -> None:
        while True:
            with lock:
                position = next(cursor, None)
            if position is None or time.perf_counter() > deadline:
                return
            before = time.perf_counter()
            try:
                ids[position] = search(queries[position])
            except Exception as exc:  # report, stop this client
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            latencies[slot].append(1000 * (time.perf_counter() - before))

    threads = [threading.Thread(target=client, args=(slot,), daemon=True) for slot in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=max_seconds + 120)
    wall = time.perf_counter() - started
    flat = [value for per_client in latencies for value in per_client]
    return LoadResult(ids, flat, wall, sum(1 for item in ids if item is not None), errors[0] if errors else None)


def run_batched(search_many: SearchMany, queries: np.ndarray, batch_size: int, max_seconds: float) -> LoadResult:
    search_many(queries[:batch_size])
    ids: list[Sequence[int] | None] = [None] * len(queries)
    latencies: list[float] = []
    started = time.perf_counter()
    deadline = started + max_seconds
    for start in range(0, len(queries), batch_size):
        before = time.perf_counter()
        if before > deadline:
            break
        answers = search_many(queries[start:start + batch_size])
        latencies.append(1000 * (time.perf_counter() - before))
        ids[start:start + len(answers)] = answers
    wall = time.perf_counter() - started
    return LoadResult(ids, latencies, wall, sum(1 for item in ids if item is not None))

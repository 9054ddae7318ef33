"""Load client for qcluster's REST API, run as its own process
(``python -m bench.http_client URL COLLECTION``) so that its event loop and
JSON work never share a GIL with the harness.

It reads jobs from stdin, one JSON object per line::

    {"queries": "q.npy", "count": 1000, "ef": 64, "filter": {...} | null,
     "batch": 1 | 64, "concurrency": 1 | 8, "max_seconds": 60, "limit": 10, "out": "r.npz"}

and answers each with one JSON line (``{"ok": true, "wall_s", "completed",
"requests"}`` or ``{"ok": false, "error"}``); ids (-1 padded) and per-request
latencies go to the ``out`` npz. ``concurrency`` asyncio tasks share one
``aiohttp.ClientSession`` whose connector holds at most ``concurrency``
keep-alive connections, so N tasks = N concurrent connections. Bodies are
serialised with orjson before the clock starts; answers are decoded inside the
timed loop (that is part of a client's cost). ``batch`` > 1 sends
``/points/query/batch`` with that many searches per request.
"""

from __future__ import annotations

import asyncio
import sys
import time
from typing import Any

import aiohttp
import numpy as np
import orjson

WARMUP_REQUESTS = 3


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


async def _run(session: aiohttp.ClientSession, base_url: str, job: dict[str, Any],
               cache: dict[str, np.ndarray]) -> dict[str, Any]:
    path = job["queries"]
    if path not in cache:
        cache[path] = np.load(path)
    queries = cache[path][: int(job["count"])]
    batch = int(job["batch"])
    url = f"{base_url}/points/query" if batch == 1 else f"{base_url}/points/query/batch"
    bodies = _bodies(queries, job)
    limit = int(job["limit"])
    ids = np.full((len(queries), limit), -1, dtype=np.int64)
    answered = np.zeros(len(queries), dtype=bool)
    latencies: list[float] = []
    errors: list[str] = []
    headers = {"content-type": "application/json"}

    async def post(body: bytes) -> Any:
        async with session.post(url, data=body, headers=headers) as response:
            raw = await response.read()
            if response.status != 200:
                raise RuntimeError(f"HTTP {response.status}: {raw[:300]!r}")
            return orjson.loads(raw)["result"]

    for body in bodies[:WARMUP_REQUESTS]:
        await post(body)
    cursor = iter(range(len(bodies)))
    deadline = time.perf_counter() + float(job["max_seconds"])

    async def client() -> None:
        for index in cursor:
            if time.perf_counter() > deadline or errors:
                return
            before = time.perf_counter()
            try:
                result = await post(bodies[index])
            except Exception as exc:
                errors.append(f"{type(exc).__name__}: {exc}")
                return
            latencies.append(1000 * (time.perf_counter() - before))
            answers = [result["points"]] if batch == 1 else [item["points"] for item in result]
            for offset, points in enumerate(answers):
                row = index * batch + offset
                found = [point["id"] for point in points][:limit]
                ids[row, : len(found)] = found
                answered[row] = True

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(int(job["concurrency"]))))
    wall = time.perf_counter() - started
    np.savez(job["out"], ids=ids, answered=answered, latencies_ms=np.asarray(latencies, dtype=np.float64))
    return {"ok": not errors, "error": errors[0] if errors else None, "wall_s": wall,
            "completed": int(answered.sum()), "requests": len(latencies)}


async def _main(base_url: str) -> None:
    cache: dict[str, np.ndarray] = {}
    loop = asyncio.get_running_loop()
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            if not line.strip():
                return
            job = orjson.loads(line)
            try:
                answer = await _run(session, base_url, job, cache)
            except Exception as exc:
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(orjson.dumps(answer).decode() + "\n")
            sys.stdout.flush()


if __name__ == "__main__":
    asyncio.run(_main(f"{sys.argv[1]}/collections/{sys.argv[2]}"))

"""Load client for qcluster's REST API, run as its own process
(``python -m bench.http_client URL COLLECTION``) so that its event loop and
JSON work never share a GIL with the harness.

The job protocol and the timed loop are in bench/client_loop.py (shared with
bench/grpc_client.py). ``concurrency`` asyncio tasks share one
``aiohttp.ClientSession`` whose connector holds at most ``concurrency``
keep-alive connections, so N tasks = N concurrent connections. Bodies are
serialised with orjson before the clock starts; answers are decoded inside the
timed loop (that is part of a client's cost). ``batch`` > 1 sends
``/points/query/batch`` with that many searches per request.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import aiohttp
import numpy as np
import orjson

from bench.client_loop import Results, serve_jobs, timed_run


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


async def _main(base_url: str) -> None:
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        headers = {"content-type": "application/json"}

        async def run_job(job: dict[str, Any], queries: np.ndarray) -> dict[str, Any]:
            batch = int(job["batch"])
            url = f"{base_url}/points/query" if batch == 1 else f"{base_url}/points/query/batch"

            async def post(body: bytes) -> Any:
                async with session.post(url, data=body, headers=headers) as response:
                    raw = await response.read()
                    if response.status != 200:
                        raise RuntimeError(f"HTTP {response.status}: {raw[:300]!r}")
                    return orjson.loads(raw)["result"]

            results: Results[Any] = Results(rows=len(queries), limit=int(job["limit"]), batch=batch)

            def record(index: int, result: Any) -> None:
                answers = [result["points"]] if batch == 1 else [item["points"] for item in result]
                results.record(index, [[point["id"] for point in points] for points in answers])

            return await timed_run(_bodies(queries, job), post, record, job=job, results=results)

        await serve_jobs(run_job)


if __name__ == "__main__":
    asyncio.run(_main(f"{sys.argv[1]}/collections/{sys.argv[2]}"))

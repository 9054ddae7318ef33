"""The floor under qcluster's network figures on this machine: how fast can
*any* Python HTTP server answer single queries here, before doing what a
database does?

Two minimal aiohttp servers (no validation, no envelope, no storage layer),
each measured with the harness's own load client (``bench/http_client.py``,
a separate process) and, when ``wrk`` is installed, with wrk (C, a tenth
of the client CPU):

- ``echo``: parses the JSON body and returns a canned 10-hit answer. The
  transport floor: aiohttp + the client, nothing else.
- ``faiss``: parses the body, normalises the vector, searches an
  ``IndexHNSWFlat`` (M 16, efConstruction 100, ef 64: the harness's
  parameters) over pypi-minilm-100k in a 2-thread pool, renders 10 hits.

For the ratio the harness's targets use, it also times raw FAISS in this
process, one query at a time (the same index parameters, one OpenMP
thread), in the same run. It also times ``orjson.loads`` of the filtered request bodies of the
harness's ``name`` filters (1 000 / 10 000 / 50 000 names in a ``match any``
list, sent with every query): the most such requests one core could even
parse, before any work.

Run: ``.venv-bench/bin/python -m bench.floor`` (about a minute); writes
``bench/results/floor-<date>.md``. Compare with the qcluster rows of the
same day's ``pypi-<date>.md``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import datetime
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from bench.datasets import PYPI_DIR, REPO_ROOT
from qcluster.testing.ports import free_port

RESULTS = REPO_ROOT / "bench" / "results"
PATH = "/collections/floor/points/query"
WRK_SECONDS = 8
STARTUP_TIMEOUT_S = 120.0


def _serve(port: int, mode: str) -> None:
    import faiss  # noqa: PLC0415 - only the server process needs it
    from aiohttp import web  # noqa: PLC0415

    canned = orjson.dumps({"result": {"points": [{"id": hit, "version": 0, "score": 0.5} for hit in range(10)]},
                           "status": "ok", "time": 0.0})
    index = None
    pool = concurrent.futures.ThreadPoolExecutor(2)
    if mode == "faiss":
        index = _pypi_index()  # searches run in the pool, one query each (one OpenMP thread)

    def search(query: np.ndarray, ef: int) -> bytes:
        params = faiss.SearchParametersHNSW()
        params.efSearch = ef
        scores, labels = index.search(query, 10, params=params)
        return orjson.dumps({"result": {"points": [
            {"id": int(label), "version": 0, "score": float(score)}
            for score, label in zip(scores[0], labels[0], strict=True) if label >= 0]}, "status": "ok", "time": 0.0})

    async def handle(request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        if index is None:
            return web.Response(body=canned, content_type="application/json")
        query = np.asarray(body["query"], dtype=np.float32).reshape(1, -1)
        query /= np.linalg.norm(query)
        answer = await asyncio.get_running_loop().run_in_executor(pool, search, query, int(body["params"]["hnsw_ef"]))
        return web.Response(body=answer, content_type="application/json")

    async def ready(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(PATH, handle)
    app.router.add_get("/ready", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def _wait_ready(port: int, server: subprocess.Popen[bytes]) -> None:
    import urllib.request  # noqa: PLC0415

    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"floor server exited with {server.returncode}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("floor server not ready in time")


def _python_client(port: int, queries_path: Path, work: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    # 1 client: the 1 000 queries once; 8 clients: five times, as the harness's throughput runs.
    jobs = [{"queries": str(queries_path), "count": count, "ef": 64, "filter": None, "batch": 1,
             "concurrency": concurrency, "max_seconds": 30, "limit": 10, "out": str(work / f"r{concurrency}.npz")}
            for concurrency, count in ((1, 1000), (8, 5000))]
    completed = subprocess.run(
        [sys.executable, "-m", "bench.http_client", f"http://127.0.0.1:{port}", "floor"],
        input="".join(json.dumps(job) + "\n" for job in jobs), capture_output=True, text=True, cwd=REPO_ROOT,
        env=env, timeout=300, check=True)
    answers = [json.loads(line) for line in completed.stdout.splitlines() if line.strip()]
    figures = {}
    for job, answer in zip(jobs, answers, strict=True):
        if not answer.get("ok"):
            raise RuntimeError(answer.get("error"))
        figures[f"qps_{job['concurrency']}"] = answer["completed"] / answer["wall_s"]
    return figures


def _wrk(port: int, queries: np.ndarray, work: Path) -> float | None:
    if shutil.which("wrk") is None:
        return None
    bodies = work / "bodies.txt"
    bodies.write_bytes(b"\n".join(orjson.dumps({"query": row.tolist(), "limit": 10, "params": {"hnsw_ef": 64}})
                                  for row in queries) + b"\n")
    script = work / "post.lua"
    script.write_text(f"""wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
bodies = {{}}
for line in io.lines("{bodies}") do bodies[#bodies + 1] = line end
counter = 0
request = function()
  counter = counter + 1
  return wrk.format(nil, nil, nil, bodies[(counter % #bodies) + 1])
end
""")
    completed = subprocess.run(["wrk", "-t1", "-c8", f"-d{WRK_SECONDS}s", "-s", str(script),
                                f"http://127.0.0.1:{port}{PATH}"], capture_output=True, text=True,
                               timeout=WRK_SECONDS + 60, check=True)
    for line in completed.stdout.splitlines():
        if line.startswith("Requests/sec:"):
            return float(line.split(":")[1])
    raise RuntimeError(f"wrk printed no rate: {completed.stdout[-300:]}")


def measure(mode: str, queries: np.ndarray, queries_path: Path, work: Path) -> dict[str, Any]:
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "bench.floor", "serve", str(port), mode], cwd=REPO_ROOT,
                              env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    try:
        _wait_ready(port, server)
        figures: dict[str, Any] = _python_client(port, queries_path, work)
        figures["qps_8_wrk"] = _wrk(port, queries, work)
        return figures
    finally:
        server.terminate()
        server.wait(timeout=30)


def _pypi_index() -> Any:
    """pypi-minilm-100k, normalised, in an ``IndexHNSWFlat`` with the harness's
    parameters (M 16, efConstruction 100), built on 2 OpenMP threads; OpenMP
    is left at one thread for the searches that follow."""
    import faiss  # noqa: PLC0415 - only the processes that search load it

    faiss.omp_set_num_threads(2)
    base = np.load(PYPI_DIR / "base.f16.npy").astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    index = faiss.IndexHNSWFlat(base.shape[1], 16, faiss.METRIC_INNER_PRODUCT)
    index.hnsw.efConstruction = 100
    index.add(base)
    faiss.omp_set_num_threads(1)
    return index


def _raw_faiss_qps(queries: np.ndarray) -> float:
    """Raw FAISS in this process, one query at a time: the harness's ``faiss`` system's ``QPS 1``."""
    import faiss  # noqa: PLC0415

    index = _pypi_index()
    params = faiss.SearchParametersHNSW()
    params.efSearch = 64
    normalised = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    started = time.perf_counter()
    for row in normalised:
        index.search(row.reshape(1, -1), 10, params=params)
    return len(normalised) / (time.perf_counter() - started)


def _parse_costs(queries: np.ndarray) -> list[tuple[int, int, float]]:
    """(names, body bytes, best orjson.loads seconds) for filtered query bodies."""
    import gzip  # noqa: PLC0415

    with gzip.open(PYPI_DIR / "base.jsonl.gz", "rt") as handle:
        names = [orjson.loads(line)["name"] for line in handle]
    chosen = np.random.default_rng(0).permutation(len(names))
    costs = []
    for count in (1_000, 10_000, 50_000):
        body = orjson.dumps({"query": queries[0].tolist(), "limit": 10, "params": {"hnsw_ef": 64},
                             "filter": {"must": [{"key": "name", "match": {"any": [names[i] for i in chosen[:count]]}}]}})
        best = float("inf")
        for _ in range(20):
            started = time.perf_counter()
            orjson.loads(body)
            best = min(best, time.perf_counter() - started)
        costs.append((count, len(body), best))
    return costs


def main() -> int:
    queries = np.load(PYPI_DIR / "queries.f16.npy").astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="qcluster-floor-") as folder:
        work = Path(folder)
        queries_path = work / "queries.npy"
        np.save(queries_path, np.concatenate([queries] * 5))
        rows = {mode: measure(mode, queries, queries_path, work) for mode in ("echo", "faiss")}
    raw_qps = _raw_faiss_qps(queries)
    date = datetime.date.today().isoformat()
    def cell(value: float | None) -> str:
        return "—" if value is None else f"{value:,.0f}"
    lines = [
        f"# Floor: minimal aiohttp servers on this machine ({date})", "",
        "Written by `python -m bench.floor` (see its docstring). QPS of single queries (1 000 pypi queries, "
        "ef 64); the load client is the harness's `bench/http_client.py` unless the column says wrk.", "",
        "| server | QPS 1 client | QPS 8 clients | QPS 8 connections (wrk) |", "|---|---:|---:|---:|",
    ]
    for mode, figures in rows.items():
        lines.append(f"| {mode} | {cell(figures['qps_1'])} | {cell(figures['qps_8'])} | {cell(figures['qps_8_wrk'])} |")
    lines += ["", f"Raw FAISS in process, one query at a time, same index and ef: {raw_qps:,.0f} QPS. The faiss "
              f"server with 8 clients reaches {100 * rows['faiss']['qps_8'] / raw_qps:.0f} % of it"
              + ("" if rows["faiss"]["qps_8_wrk"] is None else
                 f" with the Python client, {100 * rows['faiss']['qps_8_wrk'] / raw_qps:.0f} % with wrk") + "."]
    lines += ["", "JSON parsing alone of a filtered query body (`orjson.loads`, best of 20):", "",
              "| names in the `any` list | body KB | parse ms | most such requests per second on one core |",
              "|---:|---:|---:|---:|"]
    for count, size, seconds in _parse_costs(queries):
        lines.append(f"| {count:,} | {size / 1024:,.0f} | {1000 * seconds:.2f} | {1 / seconds:,.0f} |")
    out = RESULTS / f"floor-{date}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["serve"]:
        _serve(int(sys.argv[2]), sys.argv[3])
    else:
        sys.exit(main())

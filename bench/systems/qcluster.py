"""qcluster as a real server: ``python -m qcluster serve`` on free loopback
ports and a fresh data dir, fed over REST, searched by the separate-process
aiohttp client of bench/http_client.py.

Ingest follows docs/configuration.md "Bulk ingestion": create with
``indexing_threshold: 0`` (payload indexes on ``year`` and ``name`` first),
upload ``{"batch": {...}}`` bodies of 1 000 points with payloads and
``?wait=true`` (orjson; the next body is serialised on a helper thread while
the current request is in flight), then PATCH ``indexing_threshold: 1`` and
poll ``GET /collections/{c}`` until every point is indexed and status green.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import orjson

from bench import load
from bench.datasets import REPO_ROOT
from bench.systems.base import System, proc_status_kb
from bench.workload import FilterSpec

COLLECTION = "bench"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
DEFAULT_FULL_SCAN_KB = 10_000
POLL_S = 0.1


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Qcluster(System):
    name = "qcluster"
    in_process = False
    # The separate-process load client (``python -m MODULE *self.load_client_args()``).
    load_client: str = "bench.http_client"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.data_dir = self.workdir / "qcluster-data"
        self.http_port = free_port()
        self.grpc_port = free_port()
        while self.grpc_port == self.http_port:
            self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["QCLUSTER__LOG__FORMAT"] = "text"
        env["QCLUSTER__LOG__LEVEL"] = "WARNING"
        self.log_path = self.workdir / "qcluster.log"
        self._log: IO[bytes] = self.log_path.open("ab")
        self.server: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "qcluster", "serve", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
             "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port)],
            cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.http = httpx.Client(base_url=self.url, timeout=600.0)
        self.client: subprocess.Popen[str] | None = None
        self._peak_kb: int | None = None
        self._wait_ready()

    # -- server lifecycle ------------------------------------------------------------
    def _wait_ready(self) -> None:
        assert self.server is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.server.poll() is not None:
                raise RuntimeError(f"qcluster exited with {self.server.returncode}: {self._log_tail()}")
            try:
                if self.http.get("/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"qcluster not ready within {READY_TIMEOUT_S} s: {self._log_tail()}")

    def _log_tail(self) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def versions(self) -> dict[str, str]:
        from qcluster import __version__
        return {"qcluster": __version__, "server": self.http.get("/").json().get("version", "?")}

    def memory_kb(self) -> dict[str, Any] | None:
        if self.server is not None:
            self._peak_kb = proc_status_kb(self.server.pid, "VmHWM")
        return {"peak_rss_kb": self._peak_kb, "source": "server VmHWM (/proc/<pid>/status)"}

    def data_path(self) -> Path:
        return self.data_dir

    def close(self) -> None:
        if self.client is not None:
            try:
                assert self.client.stdin is not None
                self.client.stdin.close()
                self.client.wait(timeout=10)
            except Exception:
                self.client.kill()
                self.client.wait(timeout=10)
            self.client = None
        if self.server is not None:
            self.memory_kb()
            self.server.send_signal(signal.SIGTERM)
            try:
                code = self.server.wait(timeout=STOP_TIMEOUT_S)
                if code != 0:
                    self.notes.append(f"server exited with {code} after SIGTERM")
            except subprocess.TimeoutExpired:
                self.notes.append(f"server ignored SIGTERM for {STOP_TIMEOUT_S} s; killed")
                self.server.kill()
                self.server.wait(timeout=STOP_TIMEOUT_S)
            self.server = None
        self.http.close()
        self._log.close()

    # -- REST ------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        content = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        response = self.http.request(method, path, content=content, headers={"content-type": "application/json"})
        if response.status_code != 200:
            raise RuntimeError(f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}")
        return orjson.loads(response.content)["result"]

    def _body(self, start: int, stop: int) -> bytes:
        return orjson.dumps({"batch": {
            "ids": list(range(start, stop)),
            "vectors": self.dataset.base[start:stop].tolist(),
            "payloads": self.dataset.payloads[start:stop]}})

    def _upload(self) -> dict[str, Any]:
        """Every point with its payload, each batch acknowledged (applied) before this returns;
        returns details for the ingest figures."""
        batches = self.batches()
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            upcoming = pool.submit(self._body, *batches[0])
            for position in range(len(batches)):
                body = upcoming.result()
                if position + 1 < len(batches):
                    upcoming = pool.submit(self._body, *batches[position + 1])
                self._call("PUT", f"/collections/{COLLECTION}/points?wait=true", raw=body)
        return {}

    def ingest(self) -> dict[str, Any]:
        data_kb = self.dataset.n * self.dataset.dim * 4 // 1024
        full_scan_kb = DEFAULT_FULL_SCAN_KB
        if data_kb < 2 * DEFAULT_FULL_SCAN_KB:
            # A segment gets a graph only above full_scan_threshold: lower it on small data.
            full_scan_kb = max(1, data_kb // 4)
            self.notes.append(f"small data: hnsw_config.full_scan_threshold lowered to {full_scan_kb} KB "
                              f"(default {DEFAULT_FULL_SCAN_KB}) so the segment gets an HNSW graph")
        distance = "Cosine" if self.dataset.metric == "cosine" else "Euclid"
        c = f"/collections/{COLLECTION}"
        self._call("PUT", c, {
            "vectors": {"size": self.dataset.dim, "distance": distance},
            "hnsw_config": {"m": 16, "ef_construct": 100, "full_scan_threshold": full_scan_kb},
            "optimizers_config": {"indexing_threshold": 0}})
        self._call("PUT", f"{c}/index?wait=true", {"field_name": "year", "field_schema": "integer"})
        self._call("PUT", f"{c}/index?wait=true", {"field_name": "name", "field_schema": "keyword"})
        started = time.perf_counter()
        upload_details = self._upload()
        uploaded = time.perf_counter()
        self._call("PATCH", c, {"optimizers_config": {"indexing_threshold": 1}})
        deadline = uploaded + self.config.index_timeout_s
        polls = 0
        info: dict[str, Any] = {}
        while True:
            info = self._call("GET", c)
            polls += 1
            if (info["status"] == "green" and info["points_count"] == self.dataset.n
                    and info["indexed_vectors_count"] == info["points_count"]):
                break
            if info["status"] == "red":
                raise RuntimeError(f"collection went red while indexing: {json.dumps(info)[:500]}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"not indexed within {self.config.index_timeout_s} s: "
                                   f"{info['indexed_vectors_count']}/{info['points_count']} {info['status']}")
            time.sleep(POLL_S)
        indexed = time.perf_counter()
        return {"upload_s": uploaded - started, "indexed_s": indexed - started, "index_s": indexed - uploaded,
                "segments_count": info.get("segments_count"), "full_scan_threshold_kb": full_scan_kb,
                "status_polls": polls, **upload_details}

    # -- search through the client process ---------------------------------------------
    def load_client_args(self) -> list[str]:
        return [self.url, COLLECTION]

    def _client(self) -> subprocess.Popen[str]:
        if self.client is None:
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
            self.client = subprocess.Popen(
                [sys.executable, "-m", self.load_client, *self.load_client_args()], cwd=REPO_ROOT, env=env,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        return self.client

    def run_load(self, *, mode: str, queries: np.ndarray, queries_path: Path, ef: int,
                 spec: FilterSpec | None, max_seconds: float) -> load.LoadResult:
        client = self._client()
        out = self.workdir / "client-result.npz"
        job = {"queries": str(queries_path), "count": len(queries), "ef": ef,
               "filter": spec.qdrant_filter() if spec is not None else None,
               "batch": self.config.batch_size if mode == "batched" else 1,
               "concurrency": self.config.concurrency if mode == "concurrent" else 1,
               "max_seconds": max_seconds, "limit": 10, "out": str(out)}
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write(json.dumps(job) + "\n")
        client.stdin.flush()
        line = client.stdout.readline()
        if not line:
            raise RuntimeError(f"load client exited with {client.poll()}")
        answer = json.loads(line)
        if "wall_s" not in answer:
            raise RuntimeError(answer.get("error", "load client failed"))
        saved = np.load(out)
        ids: list[Sequence[int] | None] = [row if ok else None for row, ok in
                                            zip(saved["ids"], saved["answered"], strict=True)]
        return load.LoadResult(ids, list(saved["latencies_ms"]), float(answer["wall_s"]),
                               int(answer["completed"]), answer.get("error"))

    def search(self, query: np.ndarray, ef: int, flt: Any) -> Sequence[int]:
        raise NotImplementedError(f"{self.name} is searched through {self.load_client}")


SYSTEM = Qcluster

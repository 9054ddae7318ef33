"""qcluster as a real server: ``python -m qcluster serve`` on free loopback
ports and a fresh data dir, fed over REST, searched by the separate-process
load client of bench/http_client.py.

Ingest follows docs/configuration.md "Bulk ingestion": create with the
default ``indexing_threshold`` (payload indexes on ``year`` and ``name`` first),
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
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import httpx
import numpy as np
import orjson

from qcluster.testing.ports import free_port

from bench import load
from bench.datasets import REPO_ROOT
from bench.systems.base import System, proc_status_kb, tree_bytes
from bench.workload import FilterSpec

COLLECTION = "bench"
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
DEFAULT_FULL_SCAN_KB = 10_000
POLL_S = 0.1


class _Server:
    """One ``python -m qcluster serve`` subprocess with its log file."""

    def __init__(self, *, data_dir: Path, log_path: Path, args: list[str]) -> None:
        self.data_dir = data_dir
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env["QCLUSTER__LOG__FORMAT"] = "text"
        env["QCLUSTER__LOG__LEVEL"] = "WARNING"
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("ab")
        self.process: subprocess.Popen[bytes] | None = subprocess.Popen(
            [sys.executable, "-m", "qcluster", "serve", "--data-dir", str(data_dir), "--host", "127.0.0.1",
             "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), *args],
            cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.peak_kb: int | None = None

    def wait_ready(self, http: httpx.Client) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"qcluster exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if http.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"qcluster not ready within {READY_TIMEOUT_S} s: {self.log_tail()}")

    def log_tail(self) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])

    def update_peak(self) -> int | None:
        if self.process is not None:
            self.peak_kb = proc_status_kb(self.process.pid, "VmHWM") or self.peak_kb
        return self.peak_kb

    def stop(self, notes: list[str]) -> None:
        if self.process is not None:
            self.update_peak()
            self.process.send_signal(signal.SIGTERM)
            try:
                code = self.process.wait(timeout=STOP_TIMEOUT_S)
                if code != 0:
                    notes.append(f"server {self.url} exited with {code} after SIGTERM")
            except subprocess.TimeoutExpired:
                notes.append(f"server {self.url} ignored SIGTERM for {STOP_TIMEOUT_S} s; killed")
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT_S)
            self.process = None
        self._log.close()


class Qcluster(System):
    name = "qcluster"
    in_process = False
    # The separate-process load client (``python -m MODULE *self.load_client_args()``).
    load_client: str = "bench.http_client"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.http = httpx.Client(timeout=600.0)
        self.client: subprocess.Popen[str] | None = None
        self.servers: list[_Server] = []
        try:
            self.servers = self._start_servers()
            for server in self.servers:
                server.wait_ready(self.http)
            self._wait_formed()
        except BaseException:
            self.close()
            raise
        self.url = self.servers[0].url
        self.grpc_port = self.servers[0].grpc_port

    # -- server lifecycle ------------------------------------------------------------
    def _start_servers(self) -> list[_Server]:
        return [_Server(data_dir=self.workdir / "qcluster-data", log_path=self.workdir / "qcluster.log", args=[])]

    def _wait_formed(self) -> None:
        """Cluster systems wait here until every node is a member."""

    def versions(self) -> dict[str, str]:
        from qcluster import __version__
        return {"qcluster": __version__, "server": self.http.get(f"{self.url}/").json().get("version", "?")}

    def memory_kb(self) -> dict[str, Any] | None:
        peaks = [server.update_peak() for server in self.servers]
        if len(peaks) == 1:
            return {"peak_rss_kb": peaks[0], "source": "server VmHWM (/proc/<pid>/status)"}
        return {"peak_rss_kb": None if None in peaks else sum(peaks),  # type: ignore[arg-type]
                "per_node_kb": peaks, "source": "sum of the nodes' VmHWM (/proc/<pid>/status)"}

    def data_path(self) -> Path:
        return self.servers[0].data_dir

    def disk_bytes(self) -> int:
        return sum(tree_bytes(server.data_dir) for server in self.servers)

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
        for server in self.servers:
            server.stop(self.notes)
        self.http.close()

    # -- REST ------------------------------------------------------------------------
    def _call(self, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        return self._call_at(self.url, method, path, body, raw)

    def _call_at(self, url: str, method: str, path: str, body: Any = None, raw: bytes | None = None) -> Any:
        content = raw if raw is not None else (orjson.dumps(body) if body is not None else None)
        response = self.http.request(method, f"{url}{path}", content=content,
                                     headers={"content-type": "application/json"})
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
            **self.collection_params()})
        self._call("PUT", f"{c}/index?wait=true", {"field_name": "year", "field_schema": "integer"})
        self._call("PUT", f"{c}/index?wait=true", {"field_name": "name", "field_schema": "keyword"})
        started = time.perf_counter()
        upload_details = self._upload()
        uploaded = time.perf_counter()
        self._call("PATCH", c, {"optimizers_config": {"indexing_threshold": 1}})
        deadline = uploaded + self.config.index_timeout_s
        polls = 0
        while True:
            polls += 1
            progress = self._index_progress()
            if progress is None:
                break
            if time.perf_counter() > deadline:
                raise RuntimeError(f"not indexed within {self.config.index_timeout_s} s: {progress}")
            time.sleep(POLL_S)
        indexed = time.perf_counter()
        return {"upload_s": uploaded - started, "indexed_s": indexed - started, "index_s": indexed - uploaded,
                "segments_count": self._call("GET", c).get("segments_count"),
                "full_scan_threshold_kb": full_scan_kb, "status_polls": polls, **upload_details}

    def collection_params(self) -> dict[str, Any]:
        """Extra fields of the collection's creation body."""
        return {}

    def _index_progress(self) -> str | None:
        """None once every point is indexed and the collection is green, else what is missing."""
        info = self._call("GET", f"/collections/{COLLECTION}")
        if info["status"] == "red":
            raise RuntimeError(f"collection went red while indexing: {json.dumps(info)[:500]}")
        if (info["status"] == "green" and info["points_count"] == self.dataset.n
                and info["indexed_vectors_count"] == info["points_count"]):
            return None
        return f"{info['indexed_vectors_count']}/{info['points_count']} {info['status']}"

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

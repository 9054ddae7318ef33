"""The chaos workload against a real three-node cluster, without faults.

All of it lives in one network namespace this test creates (``qc<id>-c``,
only ``lo``, no route anywhere): the three ``qcluster serve`` nodes on
127.0.0.1 with their own ports, and the workload's ``setup``, ``run`` and
``final``. The checker must then pass. Needs root and ``ip``; skips
otherwise. The nodes are ended by pid and the namespace removed in a
``finally``, whatever happened.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final

import pytest

from chaos.checker import check
from chaos.report import write_report

_SKIP_REASON: Final = "needs root" if os.geteuid() != 0 else "needs ip" if not shutil.which("ip") else None
pytestmark = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
NODE_COUNT: Final = 3
COMMAND_TIMEOUT_S: Final = 15.0
STOP_TIMEOUT_S: Final = 10.0
RUN_DURATION_S: Final = 20.0


def _ports(node_id: int) -> tuple[int, int, int]:
    """(http, grpc, p2p) of node ``node_id``: 7<i>03, 7<i>04, 7<i>05."""
    return 7003 + 100 * node_id, 7004 + 100 * node_id, 7005 + 100 * node_id


def _ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=COMMAND_TIMEOUT_S)


@pytest.fixture
def namespace() -> Iterator[str]:
    name = f"qc{secrets.token_hex(3)}-c"
    _ip("netns", "add", name)
    try:
        _ip("-n", name, "link", "set", "lo", "up")
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=COMMAND_TIMEOUT_S)


def _start_nodes(namespace: str, base: Path, logs: list[IO[bytes]]) -> list[subprocess.Popen[bytes]]:
    """The nodes, each exec'd by ``ip netns exec`` (so the pid is the server's)."""
    peers = ",".join(f"127.0.0.1:{_ports(node_id)[2]}" for node_id in range(1, NODE_COUNT + 1))
    env = {**os.environ, "QCLUSTER__CLUSTER__SECRET": secrets.token_hex(24), "PYTHONPATH": str(REPO_ROOT)}
    processes = []
    for node_id in range(1, NODE_COUNT + 1):
        http, grpc_port, p2p = _ports(node_id)
        logs.append((base / f"n{node_id}.log").open("ab"))
        processes.append(subprocess.Popen(
            ["ip", "netns", "exec", namespace, sys.executable, "-m", "qcluster", "serve",
             "--data-dir", str(base / f"n{node_id}" / "data"), "--host", "127.0.0.1", "--http-port", str(http),
             "--grpc-port", str(grpc_port), "--node-id", str(node_id), "--p2p-port", str(p2p), "--peers", peers],
            cwd=REPO_ROOT, env=env, stdout=logs[-1], stderr=subprocess.STDOUT))
    return processes


def _stop(processes: list[subprocess.Popen[bytes]], logs: list[IO[bytes]]) -> None:
    """SIGTERM each node we started, SIGKILL what is left after STOP_TIMEOUT_S."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_TIMEOUT_S)
    for log in logs:
        log.close()


def _workload(namespace: str, *argv: str, timeout_s: float) -> str:
    done = subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-m", "chaos.workload", *argv],
                          cwd=REPO_ROOT, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)}, capture_output=True,
                          text=True, timeout=timeout_s)
    assert done.returncode == 0, f"workload {argv[0]} exited {done.returncode}:\n{done.stderr[-3000:]}"
    return done.stdout


def test_workload_setup_run_final_and_check_pass(namespace: str, tmp_path: Path) -> None:
    config = {"run_id": namespace[2:8], "seed": 3, "collection": "chaos", "started_at": time.time(), "faults": [],
              "nodes": [{"id": node_id, "url": f"http://127.0.0.1:{_ports(node_id)[0]}",
                         "grpc_port": _ports(node_id)[1]} for node_id in range(1, NODE_COUNT + 1)]}
    (tmp_path / "config.json").write_text(json.dumps(config))
    logs: list[IO[bytes]] = []
    processes = _start_nodes(namespace, tmp_path, logs)
    try:
        config_argument = ("--config", str(tmp_path / "config.json"))
        _workload(namespace, "setup", *config_argument, timeout_s=130)
        _workload(namespace, "run", *config_argument, "--duration", str(RUN_DURATION_S), "--rate", "30",
                  "--history", str(tmp_path / "history.jsonl"), timeout_s=RUN_DURATION_S + 30)
        _workload(namespace, "final", *config_argument, "--out", str(tmp_path / "final.json"),
                  "--converge-timeout", "20", timeout_s=90)
    finally:
        _stop(processes, logs)
    result = check(tmp_path)
    assert result.passed, json.dumps(result.to_dict(), default=str)[:4000]
    assert sum(counts["ok"] for counts in result.totals.values()) > 0.9 * RUN_DURATION_S * 30
    assert {"grpc", "rest"} <= {json.loads(line).get("api") for line in
                                (tmp_path / "history.jsonl").read_text().splitlines()}
    markdown, _, image = write_report(tmp_path, result, tmp_path / "out")
    assert "PASSED" in markdown.read_text()
    assert image.stat().st_size > 0


def test_workload_refuses_the_host_namespace(tmp_path: Path) -> None:
    (tmp_path / "config.json").write_text(json.dumps({"nodes": [{"id": 1, "url": "http://127.0.0.1:1",
                                                                 "grpc_port": 2}]}))
    done = subprocess.run([sys.executable, "-m", "chaos.workload", "setup", "--config", str(tmp_path / "config.json")],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode != 0
    assert "namespace" in done.stderr

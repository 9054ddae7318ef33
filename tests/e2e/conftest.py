"""Real ``qcluster serve`` processes on loopback for end-to-end tests.

``node`` starts one node on a fresh data directory and stops it with SIGTERM
at teardown, asserting a clean exit within 10 s. ``Node.restart()`` brings it
back on the same directory (graceful by default, or after ``kill -9``).
Server logs go to a file in the data directory's parent (never a pipe that
nobody reads), and are printed when a start fails.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import IO, Final

import httpx
import pytest

from qcluster.testing.ports import free_port

REPO_ROOT: Final = pathlib.Path(__file__).resolve().parents[2]
READY_TIMEOUT_S: Final = 60.0
STOP_TIMEOUT_S: Final = 10.0


class Node:
    """One ``python -m qcluster serve`` subprocess and its data directory."""

    def __init__(self, *, data_dir: pathlib.Path, log_path: pathlib.Path,
                 extra_env: dict[str, str] | None = None, extra_args: list[str] | None = None) -> None:
        self.data_dir = data_dir
        self.extra_env = dict(extra_env or {})
        self.extra_args = list(extra_args or [])
        self.log_path = log_path
        self.http_port = free_port()
        self.grpc_port = free_port()
        self.url = f"http://127.0.0.1:{self.http_port}"
        self.process: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None

    def start(self) -> None:
        """Launch and wait until ready (a cluster node: registered, which
        needs a quorum of its peers running — start a new cluster's nodes
        together with ``start_all``)."""
        self.launch()
        self.wait_ready()

    def launch(self) -> None:
        """Start the process without waiting for it (``wait_ready`` waits)."""
        assert self.process is None, "already running"
        command = [
            sys.executable, "-m", "qcluster", "serve",
            "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
            "--http-port", str(self.http_port), "--grpc-port", str(self.grpc_port), *self.extra_args,
        ]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
        env.update(self.extra_env)
        self._log_file = self.log_path.open("ab")
        self.process = subprocess.Popen(command, cwd=REPO_ROOT, env=env, stdout=self._log_file,
                                        stderr=subprocess.STDOUT)

    def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"node exited with {self.process.returncode} while starting:\n{self.log_tail()}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.kill()
        raise AssertionError(f"node not ready within {READY_TIMEOUT_S} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        if not self.log_path.exists():
            return "<no log>"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> int:
        """SIGTERM; the node must exit 0 within STOP_TIMEOUT_S (else kill -9 and fail)."""
        assert self.process is not None
        process = self.process
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            code = process.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"node ignored SIGTERM for {STOP_TIMEOUT_S} s:\n{self.log_tail()}") from None
        self._closed()
        assert code == 0, f"node exited with {code} after SIGTERM:\n{self.log_tail()}"
        assert time.monotonic() - started < STOP_TIMEOUT_S
        return code

    def kill(self) -> None:
        """kill -9 of this node's process only."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=STOP_TIMEOUT_S)
        self._closed()

    def _closed(self) -> None:
        self.process = None
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def restart(self, *, hard: bool = False) -> None:
        """Stop (SIGTERM, or kill -9 when ``hard``) and start again on the same data dir."""
        if hard:
            self.kill()
        else:
            self.stop()
        self.start()

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None



def sigint_default() -> None:
    """A ``preexec_fn`` for a child that a test stops with SIGINT: a shell
    starts background jobs with SIGINT ignored, the child would inherit that
    (Python then installs no KeyboardInterrupt handler) and the test's
    Ctrl-C would do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def running_node(base: pathlib.Path, *, extra_env: dict[str, str] | None = None) -> Iterator[Node]:
    """A started node on ``base/data``, stopped (SIGTERM, asserted clean) or killed at exit."""
    server = Node(data_dir=base / "data", log_path=base / "node.log", extra_env=extra_env)
    server.start()
    try:
        yield server
    finally:
        if server.is_running:
            server.stop()
        else:
            server.kill()


@pytest.fixture
def node(tmp_path: pathlib.Path) -> Iterator[Node]:
    with running_node(tmp_path) as server:
        yield server


@pytest.fixture(scope="module")
def shared_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    """One node for a whole module (tests use distinct collection names)."""
    with running_node(tmp_path_factory.mktemp("shared")) as server:
        yield server


def cluster_nodes(tmp_path: pathlib.Path, count: int, *, secret: str,
                  extra_env: dict[str, str] | None = None) -> list[Node]:
    """``count`` cluster-mode nodes (ids 1..count) that list each other as
    peers; not started. Each keeps its ports and data dir across restarts."""
    p2p_ports = [free_port() for _ in range(count)]
    peers = ",".join(f"127.0.0.1:{port}" for port in p2p_ports)
    return [Node(data_dir=tmp_path / f"node{index + 1}", log_path=tmp_path / f"node{index + 1}.log",
                 extra_args=["--node-id", str(index + 1), "--p2p-port", str(p2p_ports[index]), "--peers", peers,
                             f"--cluster-secret={secret}"],
                 extra_env=dict(extra_env or {}))
            for index in range(count)]


def start_all(nodes: list[Node]) -> None:
    """Launch every node, then wait until each is ready: a cluster node is
    ready once registered, which takes a quorum of them running."""
    for node in nodes:
        node.launch()
    for node in nodes:
        node.wait_ready()


def stop_all(nodes: list[Node]) -> None:
    """SIGTERM the running nodes (kill -9 the rest)."""
    for node in nodes:
        if node.is_running:
            node.stop()
        else:
            node.kill()

"""The ``qcluster serve`` processes of a chaos run, one per node namespace.

Node ``i`` keeps its data on its own tmpfs at ``RUN_DIR/n<i>/data`` (so a
nemesis can fill it) and logs to ``RUN_DIR/n<i>.log``. The cluster only ever
signals the PIDs it started: ``ip netns exec`` execs, so ``Popen.pid`` is the
server's own pid, and SIGKILL / SIGSTOP / SIGCONT go straight to it.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Final

from chaos.netns import Environment, command, node_address, unmount

__all__ = ["ChaosCluster", "HTTP_PORT", "GRPC_PORT", "P2P_PORT", "REPO_ROOT"]

log = logging.getLogger(__name__)

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
HTTP_PORT: Final = 6333
GRPC_PORT: Final = 6334
P2P_PORT: Final = 6335
STOP_TIMEOUT_S: Final = 15.0
KILL_TIMEOUT_S: Final = 10.0
FILLER_NAME: Final = "chaos-disk-filler"
_FILL_CHUNK_BYTES: Final = 1 << 20


class ChaosCluster:
    """Start, kill, pause and resume the nodes of one run; fill their disks.

    ``faketime_library``, when given, is preloaded into every node with its
    own timestamp file ``RUN_DIR/n<i>.faketime`` (``set_clock_offset``).
    """

    def __init__(self, env: Environment, run_dir: Path, node_count: int, secret: str, tmpfs_mb: int, *,
                 faketime_library: Path | None = None) -> None:
        assert node_count == env.node_count, (node_count, env.node_count)
        assert len(secret) == 48, "the cluster secret is 48 hex characters"
        assert tmpfs_mb >= 16, tmpfs_mb
        self.env = env
        self.run_dir = run_dir
        self.node_ids = list(range(1, node_count + 1))
        self.secret = secret
        self.tmpfs_mb = tmpfs_mb
        self.faketime_library = faketime_library
        self._processes: dict[int, subprocess.Popen[bytes]] = {}
        self._logs: dict[int, IO[bytes]] = {}

    def data_dir(self, node_id: int) -> Path:
        return self.run_dir / f"n{node_id}" / "data"

    def log_path(self, node_id: int) -> Path:
        return self.run_dir / f"n{node_id}.log"

    def clock_file(self, node_id: int) -> Path:
        return self.run_dir / f"n{node_id}.faketime"

    def mount(self) -> None:
        """Mount every node's tmpfs data dir (kept if already mounted)."""
        for node_id in self.node_ids:
            data_dir = self.data_dir(node_id)
            data_dir.mkdir(parents=True, exist_ok=True)
            if not data_dir.is_mount():
                command(["mount", "-t", "tmpfs", "-o", f"size={self.tmpfs_mb}m,mode=0700", "tmpfs", str(data_dir)])
            assert data_dir.is_mount(), data_dir

    def unmount(self) -> None:
        """Unmount the data dirs; logs what it could not unmount, never raises."""
        for node_id in self.node_ids:
            data_dir = self.data_dir(node_id)
            if data_dir.is_mount():
                unmount(data_dir)

    def _argv(self, node_id: int) -> list[str]:
        peers = ",".join(f"{node_address(peer)}:{P2P_PORT}" for peer in self.node_ids)
        return [sys.executable, "-m", "qcluster", "serve", "--data-dir", str(self.data_dir(node_id)),
                "--host", node_address(node_id), "--http-port", str(HTTP_PORT), "--grpc-port", str(GRPC_PORT),
                "--node-id", str(node_id), "--p2p-port", str(P2P_PORT), "--peers", peers]

    def _environ(self, node_id: int) -> dict[str, str]:
        """The node's environment: the secret stays off the command line."""
        environ = dict(os.environ)
        environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), environ.get("PYTHONPATH")]))
        environ["QCLUSTER__CLUSTER__SECRET"] = self.secret
        if self.faketime_library is not None:
            clock_file = self.clock_file(node_id)
            if not clock_file.exists():
                clock_file.write_text("+0\n")
            environ.update(faketime_environ(self.faketime_library, clock_file))
        return environ

    def start(self, node_id: int) -> None:
        """Start node ``node_id`` in its namespace (it must not be running)."""
        assert node_id in self.node_ids, node_id
        assert not self.is_running(node_id), f"node {node_id} is already running"
        self._close_log(node_id)
        log_file = self.log_path(node_id).open("ab")
        self._logs[node_id] = log_file
        self._processes[node_id] = self.env.run_in(
            self.env.node_namespace(node_id), self._argv(node_id), cwd=REPO_ROOT, env=self._environ(node_id),
            stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)
        log.info("node %d started, pid %d", node_id, self._processes[node_id].pid)

    def is_running(self, node_id: int) -> bool:
        """True while the process this cluster started for the node has not exited."""
        process = self._processes.get(node_id)
        return process is not None and process.poll() is None

    def kill(self, node_id: int) -> None:
        """SIGKILL the node and wait for it (no-op if it is not running)."""
        process = self._processes.get(node_id)
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGKILL)
            process.wait(timeout=KILL_TIMEOUT_S)
        assert not self.is_running(node_id)

    def restart(self, node_id: int) -> None:
        """kill -9 (if running) and start again on the same data dir."""
        self.kill(node_id)
        self.start(node_id)

    def pause(self, node_id: int) -> None:
        """SIGSTOP the running node."""
        self._signal(node_id, signal.SIGSTOP)

    def resume(self, node_id: int) -> None:
        """SIGCONT the node (harmless if it is not stopped)."""
        self._signal(node_id, signal.SIGCONT)

    def _signal(self, node_id: int, signum: signal.Signals) -> None:
        process = self._processes.get(node_id)
        if process is not None and process.poll() is None:
            process.send_signal(signum)

    def stop_all(self) -> None:
        """SIGCONT then SIGTERM every running node; SIGKILL those still alive
        after STOP_TIMEOUT_S. Never raises."""
        running = [node_id for node_id in self.node_ids if self.is_running(node_id)]
        for node_id in running:
            self._signal(node_id, signal.SIGCONT)
            self._signal(node_id, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for node_id in running:
            process = self._processes[node_id]
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("node %d ignored SIGTERM for %.0f s; killing it", node_id, STOP_TIMEOUT_S)
                try:
                    self.kill(node_id)
                except subprocess.TimeoutExpired:
                    log.error("node %d (pid %d) survived SIGKILL", node_id, process.pid)
        for node_id in self.node_ids:
            self._close_log(node_id)

    def _close_log(self, node_id: int) -> None:
        log_file = self._logs.pop(node_id, None)
        if log_file is not None:
            log_file.close()

    def fill_disk(self, node_id: int) -> int:
        """Write a filler file into the node's data dir until ENOSPC; it stays
        until ``free_disk``. Returns the bytes written (bounded by the tmpfs size)."""
        path = self.data_dir(node_id) / FILLER_NAME
        assert self.data_dir(node_id).is_mount(), "filling a disk that is not the node's tmpfs"
        limit_bytes = (self.tmpfs_mb + 1) << 20
        chunk = b"\0" * _FILL_CHUNK_BYTES
        written = 0
        with path.open("ab", buffering=0) as handle:
            while written < limit_bytes and chunk:
                try:
                    written += handle.write(chunk)
                except OSError:
                    # ENOSPC: finish the last few kilobytes with smaller writes.
                    chunk = chunk[: len(chunk) // 16] if len(chunk) > 512 else b""
        assert written <= limit_bytes + _FILL_CHUNK_BYTES
        return written

    def free_disk(self, node_id: int) -> None:
        """Remove the filler file (no-op if absent)."""
        (self.data_dir(node_id) / FILLER_NAME).unlink(missing_ok=True)

    def set_clock_offset(self, node_id: int, offset_s: int) -> None:
        """Shift node ``node_id``'s wall clock by ``offset_s`` (needs faketime)."""
        assert self.faketime_library is not None, "nodes were started without faketime"
        write_clock_offset(self.clock_file(node_id), offset_s)


def faketime_environ(library: Path, clock_file: Path) -> dict[str, str]:
    """Variables that make libfaketime read the offset from ``clock_file`` on
    every call, faking the wall clock only."""
    return {"LD_PRELOAD": str(library), "FAKETIME_TIMESTAMP_FILE": str(clock_file), "FAKETIME_NO_CACHE": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1"}


def write_clock_offset(clock_file: Path, offset_s: int) -> None:
    """Atomically replace the offset (whole seconds, ``+12`` / ``-3``) libfaketime reads."""
    staging = clock_file.with_suffix(".tmp")
    staging.write_text(f"{offset_s:+d}\n")
    staging.replace(clock_file)


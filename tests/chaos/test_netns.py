"""The chaos environment on a real kernel: namespaces, routes, partitions, cleanup.

Needs root and iproute2/iptables; every test skips with the reason otherwise.
Each test removes what it built in a ``finally``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Final

import pytest

from chaos import netns
from chaos.cluster import ChaosCluster
from chaos.nemesis import PartitionOne

_SKIP_REASON: Final = ("needs root" if os.geteuid() != 0 else
                       "needs ip and iptables" if not (shutil.which("ip") and shutil.which("iptables")) else None)
pytestmark = pytest.mark.skipif(_SKIP_REASON is not None, reason=_SKIP_REASON or "")

REPO_ROOT: Final = Path(__file__).resolve().parents[2]
PORT: Final = 7100
CONNECT_TIMEOUT_S: Final = 2.0
# A one-shot echo server: accepts one connection (or gives up after 15 s) and echoes what it reads.
SERVER: Final = """
import socket, sys
server = socket.create_server((sys.argv[1], int(sys.argv[2])))
server.settimeout(15)
print("listening", flush=True)
connection, _ = server.accept()
connection.sendall(connection.recv(64))
"""
CLIENT: Final = """
import socket, sys
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3])) as connection:
        connection.settimeout(float(sys.argv[3]))
        connection.sendall(b"ping")
        print(connection.recv(64).decode())
except OSError as exc:
    print(type(exc).__name__)
"""


def _namespaces() -> set[str]:
    return set(netns.list_namespaces())


@pytest.fixture
def environment() -> Iterator[netns.Environment]:
    env = netns.Environment(secrets.token_hex(3), 2)
    try:
        env.create()
        yield env
    finally:
        env.destroy()


def _exchange(env: netns.Environment, server_node: int, client_node: int) -> str:
    """Echo server in ``server_node``'s namespace, one client connection from ``client_node``'s."""
    server = env.run_in(env.node_namespace(server_node), [sys.executable, "-c", SERVER,
                                                          netns.node_address(server_node), str(PORT)],
                        stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        assert server.stdout.readline().strip() == "listening"
        client = env.run_in(env.node_namespace(client_node),
                            [sys.executable, "-c", CLIENT, netns.node_address(server_node), str(PORT),
                             str(CONNECT_TIMEOUT_S)], stdout=subprocess.PIPE, text=True)
        out, _ = client.communicate(timeout=10)
        return out.strip()
    finally:
        server.kill()
        server.wait(timeout=10)


def test_create_and_destroy_leave_nothing_behind() -> None:
    env = netns.Environment(secrets.token_hex(3), 3)
    try:
        env.create()
        env.create()  # idempotent
        assert set(env.namespaces) <= _namespaces()
    finally:
        env.destroy()
    env.destroy()  # idempotent, never raises
    assert not set(env.namespaces) & _namespaces()
    assert not [mount for mount in netns.harness_mounts() if env.run_id in str(mount)]


def test_no_harness_namespace_has_a_default_route(environment: netns.Environment) -> None:
    harness = [name for name in _namespaces() if name.startswith("qc")]
    assert set(environment.namespaces) <= set(harness)
    for namespace in harness:
        assert netns.command(["ip", "-n", namespace, "route", "show", "default"]).stdout.strip() == ""


def test_partition_blocks_tcp_between_nodes_and_heal_restores_it(environment: netns.Environment,
                                                                   tmp_path: Path) -> None:
    cluster = ChaosCluster(environment, tmp_path, 2, secrets.token_hex(24), 16)
    partition = PartitionOne(environment, cluster)
    assert _exchange(environment, 1, 2) == "ping"
    try:
        partition.apply([1])
        started = time.monotonic()
        assert _exchange(environment, 1, 2) in {"TimeoutError", "timeout"}
        assert time.monotonic() - started >= CONNECT_TIMEOUT_S * 0.9
    finally:
        partition.heal()
    partition.heal()  # idempotent
    assert _exchange(environment, 1, 2) == "ping"


def test_require_netns_refuses_in_the_host_namespace() -> None:
    with pytest.raises(SystemExit, match="namespace"):
        netns.require_netns()
    done = subprocess.run([sys.executable, "-m", "chaos.query", "ready", "http://198.18.0.11:6333"],
                          cwd=REPO_ROOT, capture_output=True, text=True, timeout=30)
    assert done.returncode != 0
    assert "namespace" in done.stderr


def test_require_netns_accepts_a_harness_namespace(environment: netns.Environment) -> None:
    client = environment.run_in(environment.client_namespace,
                                [sys.executable, "-c", "from chaos import netns; netns.require_netns(); print('ok')"],
                                cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True)
    out, _ = client.communicate(timeout=30)
    assert client.returncode == 0
    assert out.strip() == "ok"


def test_cleanup_all_removes_a_leaked_environment(tmp_path: Path) -> None:
    env = netns.Environment(secrets.token_hex(3), 1)
    cluster = ChaosCluster(env, netns.run_dir_of(env.run_id), 1, secrets.token_hex(24), 16)
    sleeper: subprocess.Popen[bytes] | None = None
    try:
        env.create()
        cluster.mount()
        sleeper = env.run_in(env.node_namespace(1), ["sleep", "60"])
        # Only this run's leftovers: another run may be going on on this machine.
        removed = netns.cleanup_all(run_id=env.run_id)
        assert f"namespace {env.node_namespace(1)}" in removed
        assert sleeper.wait(timeout=10) == -9
        assert not set(env.namespaces) & _namespaces()
        assert not cluster.data_dir(1).exists()
        assert not [mount for mount in netns.harness_mounts() if env.run_id in str(mount)]
    finally:
        if sleeper is not None and sleeper.poll() is None:
            sleeper.kill()
        cluster.unmount()
        env.destroy()
        shutil.rmtree(netns.run_dir_of(env.run_id), ignore_errors=True)

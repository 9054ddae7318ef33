"""Cluster mode, topology: three ``qcluster serve --node-id`` processes on
loopback form a Raft group by themselves whatever order they start in, elect
a leader, fail over after kill -9 of the leader, and take a restarted node
back as itself; a fourth node joins the running group with ``--join`` only,
rejoins as itself after kill -9, and a join with a wrong secret fails.
Distributed collections: ``test_cluster_replication.py``."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from qdrant_client import QdrantClient

from tests.e2e.conftest import REPO_ROOT, Node, cluster_nodes, free_port, sigint_default, start_all, stop_all

pytestmark = pytest.mark.e2e

SECRET = "formation-test-secret"
AGREE_WITHIN_S = 60.0
# dev-cluster waits up to 60 s for its nodes, and gives each 15 s to stop.
DEV_CLUSTER_START_S = 120.0
DEV_CLUSTER_STOP_S = 90.0
REBALANCE_WITHIN_S = 30.0
COLLECTION = "joined"
POINTS = 40


def _status(node: Node) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"{node.url}/cluster", timeout=2.0)
    except httpx.HTTPError:
        return None
    return response.json()["result"] if response.status_code == 200 else None


def _agreed_leader(nodes: list[Node], *, members: int, not_leader: int | None = None) -> int:
    """Poll until every node reports the same leader (other than ``not_leader``)
    and ``members`` registered peers."""
    deadline = time.monotonic() + AGREE_WITHIN_S
    seen: list[Any] = []
    while time.monotonic() < deadline:
        seen = [_status(node) for node in nodes]
        leaders = {status["raft_info"]["leader"] for status in seen if status is not None}
        if (all(status is not None and len(status["peers"]) == members for status in seen)
                and len(leaders) == 1 and None not in leaders and not_leader not in leaders):
            return int(leaders.pop())
        time.sleep(0.1)
    raise AssertionError(f"no agreement within {AGREE_WITHIN_S} s: {seen}")


def _wait_liveness(nodes: list[Node], node_id: int, liveness: str) -> None:
    deadline = time.monotonic() + AGREE_WITHIN_S
    seen: list[Any] = []
    while time.monotonic() < deadline:
        seen = [_status(node) for node in nodes]
        if all(status is not None and status["qcluster"]["nodes"][str(node_id)]["liveness"] == liveness
               for status in seen):
            return
        time.sleep(0.1)
    raise AssertionError(f"node {node_id} not {liveness} everywhere within {AGREE_WITHIN_S} s: {seen}")


@pytest.fixture
def three_nodes(tmp_path: pathlib.Path) -> Iterator[list[Node]]:
    nodes = cluster_nodes(tmp_path, 3, secret=SECRET, extra_env={"QCLUSTER__CLUSTER__DEAD_AFTER_S": "1"})
    try:
        yield nodes
    finally:
        stop_all(nodes)


def test_three_nodes_form_fail_over_and_rejoin(three_nodes: list[Node]) -> None:
    by_id = {index + 1: node for index, node in enumerate(three_nodes)}
    # Out of order and apart: 3, then 1, then 2.
    for node_id in (3, 1, 2):
        by_id[node_id].launch()
        time.sleep(0.5)
    for node in three_nodes:
        node.wait_ready()
    started = time.monotonic()
    leader = _agreed_leader(three_nodes, members=3)
    assert time.monotonic() - started < AGREE_WITHIN_S
    status = _status(by_id[1])
    assert status is not None and status["status"] == "enabled" and status["peer_id"] == 1
    assert sorted(status["peers"]) == ["1", "2", "3"]
    # qdrant-client reads the same shape.
    client = QdrantClient(url=by_id[2].url, check_compatibility=False)
    assert client.cluster_status().status == "enabled"
    client.close()

    by_id[leader].kill()  # kill -9 of the leader
    survivors = [node for node_id, node in by_id.items() if node_id != leader]
    killed_at = time.monotonic()
    new_leader = _agreed_leader(survivors, members=3, not_leader=leader)
    assert time.monotonic() - killed_at < AGREE_WITHIN_S
    # The new leader marks the killed node dead (dead_after_s = 1) on every node.
    _wait_liveness(survivors, leader, "dead")

    by_id[leader].start()  # same id, same data dir: rejoins as itself
    assert _agreed_leader(three_nodes, members=3) == new_leader
    _wait_liveness(three_nodes, leader, "alive")
    shown = subprocess.run([sys.executable, "-m", "qcluster", "cluster", "status", "--url", by_id[1].url,
                            "--grpc-port", str(by_id[1].grpc_port)],
                           cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert f"raft leader {new_leader}" in shown.stdout and shown.stdout.count("alive") == 3
    rejoined = _status(by_id[leader])
    assert rejoined is not None and rejoined["raft_info"]["role"] == "Follower"


def _p2p_address(node: Node) -> str:
    return f"127.0.0.1:{node.extra_args[node.extra_args.index('--p2p-port') + 1]}"


def _members_everywhere(nodes: list[Node], addresses: list[str]) -> None:
    """Poll until every node's Raft members are exactly ``addresses``."""
    deadline = time.monotonic() + AGREE_WITHIN_S
    seen: list[Any] = []
    while time.monotonic() < deadline:
        seen = [_status(node) for node in nodes]
        if all(status is not None and sorted(status["qcluster"]["members"]) == sorted(addresses) for status in seen):
            return
        time.sleep(0.1)
    raise AssertionError(f"members are not {sorted(addresses)} everywhere within {AGREE_WITHIN_S} s: {seen}")


def _create_collection(node: Node) -> None:
    url = f"{node.url}/collections/{COLLECTION}"
    created = httpx.put(url, json={"vectors": {"size": 4, "distance": "Cosine"}, "shard_number": 4,
                                   "replication_factor": 1}, timeout=30)
    assert created.status_code == 200, created.text
    points = [{"id": index, "vector": [float(index % 5 + 1), 1.0, float(index % 3), 0.5]} for index in range(POINTS)]
    written = httpx.put(f"{url}/points", params={"wait": "true"}, json={"points": points}, timeout=30)
    assert written.status_code == 200, written.text


def _rebalance_onto(joiner: Node) -> None:
    """``rebalance`` moves replicas onto the joined node; every point stays readable."""
    url = f"{joiner.url}/collections/{COLLECTION}"
    moved = httpx.post(f"{url}/cluster", json={"rebalance": {}}, timeout=30)
    assert moved.status_code == 200, moved.text
    deadline = time.monotonic() + REBALANCE_WITHIN_S
    info: Any = None
    while time.monotonic() < deadline:
        info = httpx.get(f"{url}/cluster", timeout=10).json()["result"]
        holders = [shard["replicas"] for shard in info["qcluster"]["shards"]]
        if (any("4" in replicas for replicas in holders) and info["local_shards"]
                and all(set(replicas.values()) == {"active"} and len(replicas) == 1 for replicas in holders)):
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"no replica moved onto the joined node within {REBALANCE_WITHIN_S} s: {info}")
    counted = httpx.post(f"{url}/points/count", json={"exact": True}, timeout=30)
    assert counted.status_code == 200 and counted.json()["result"]["count"] == POINTS, counted.text


def test_a_fourth_node_joins_with_join_only_and_rejoins_as_itself(
    tmp_path: pathlib.Path, three_nodes: list[Node]
) -> None:
    start_all(three_nodes)
    _agreed_leader(three_nodes, members=3)
    _create_collection(three_nodes[0])  # before the join: its replicas are on the three
    term_before = max(status["raft_info"]["term"] for status in map(_status, three_nodes) if status is not None)
    joiner = Node(data_dir=tmp_path / "node4", log_path=tmp_path / "node4.log",
                  extra_args=["--node-id", "4", "--p2p-port", str(free_port()), "--join",
                              _p2p_address(three_nodes[0]), "--cluster-secret", SECRET],
                  extra_env={"QCLUSTER__CLUSTER__DEAD_AFTER_S": "1"})
    everyone = [*three_nodes, joiner]
    try:
        started = time.monotonic()
        joiner.start()  # ready once it is a member
        leader = _agreed_leader(everyone, members=4)
        joined_s = time.monotonic() - started
        addresses = [_p2p_address(node) for node in everyone]
        _members_everywhere(everyone, addresses)
        status = _status(joiner)
        assert status is not None and sorted(status["peers"]) == ["1", "2", "3", "4"]
        assert sorted(status["qcluster"]["members"]) == sorted(addresses)
        term_after = status["raft_info"]["term"]
        print(f"joined in {joined_s:.2f} s; leader {leader}, term {term_before} -> {term_after}")
        assert "added to the cluster" in joiner.log_path.read_text()
        _rebalance_onto(joiner)

        joiner.kill()  # kill -9, then the same id, address and data dir: rejoins as itself
        _wait_liveness(three_nodes, 4, "dead")
        joiner.start()
        _agreed_leader(everyone, members=4)
        _members_everywhere(everyone, addresses)  # no second entry for the same node
        _wait_liveness(everyone, 4, "alive")
        assert "already a member of the cluster" in joiner.log_path.read_text()

        # A wrong secret: the node cannot join, says why and exits non-zero; nothing changes.
        stranger_log = tmp_path / "node5.log"
        command = [sys.executable, "-m", "qcluster", "serve", "--data-dir", str(tmp_path / "node5"),
                   "--host", "127.0.0.1", "--http-port", str(free_port()), "--grpc-port", str(free_port()),
                   "--node-id", "5", "--p2p-port", str(free_port()), "--join", _p2p_address(three_nodes[1]),
                   "--cluster-secret", "not-the-cluster-secret"]
        started = time.monotonic()
        with stranger_log.open("wb") as log:
            result = subprocess.run(command, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT, timeout=60,
                                    check=False)
        refused_s = time.monotonic() - started
        output = stranger_log.read_text()
        assert result.returncode == 1, output
        assert "cannot join the cluster" in output and "--cluster-secret" in output, output
        assert refused_s < 30, refused_s
        print(f"wrong secret refused in {refused_s:.1f} s")
        _agreed_leader(everyone, members=4)
        _members_everywhere(everyone, addresses)
    finally:
        stop_all([joiner])


@pytest.mark.parametrize(("arguments", "message"), [
    (["--node-id", "1", "--p2p-port", "7999"], "cluster.secret"),
    (["--peers", "127.0.0.1:7001"], "cluster.node_id"),
    (["--node-id", "1", "--cluster-secret", "long-enough-secret", "--host", "0.0.0.0"], "cluster.p2p_host"),
    (["--join", "127.0.0.1:7001"], "cluster.join"),
    (["--node-id", "5", "--cluster-secret", "long-enough-secret", "--join", "127.0.0.1"], "cluster.join"),
])
def test_cluster_mode_configuration_errors(tmp_path: pathlib.Path, arguments: list[str], message: str) -> None:
    command = [sys.executable, "-m", "qcluster", "serve", "--data-dir", str(tmp_path / "data"),
               "--http-port", str(free_port()), "--grpc-port", str(free_port()), *arguments]
    if "--host" not in arguments:
        command += ["--host", "127.0.0.1"]
    result = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr


def _banner_lines(process: subprocess.Popen[str], count: int, *, timeout_s: float) -> list[str]:
    """The first ``count`` lines ``process`` prints, read with a deadline
    (a thread does the blocking reads; it ends with the pipe)."""
    lines: list[str] = []
    assert process.stdout is not None
    stdout = process.stdout
    reader = threading.Thread(target=lambda: lines.extend(stdout.readline() for _ in range(count)), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return lines


def test_dev_cluster_starts_and_stops_three_nodes(tmp_path: pathlib.Path) -> None:
    # Ports base .. base + 22, below the ephemeral range (32768+) that the other
    # tests' outgoing connections take their local ports from.
    base = 20_000 + free_port() % 12_000
    # A session of its own: if dev-cluster fails to stop its nodes, the test
    # ends the whole group (dev-cluster and the nodes it started).
    process = subprocess.Popen([sys.executable, "-m", "qcluster", "dev-cluster", "--nodes", "3", "--base-port",
                                str(base), "--data-dir", str(tmp_path / "dev")],
                               cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, preexec_fn=sigint_default)
    urls: list[str] = []
    try:
        lines = _banner_lines(process, 5, timeout_s=DEV_CLUSTER_START_S)  # the banner is 5 lines
        urls = [line.strip() for line in lines if line.strip().startswith("http://")]
        assert urls == [f"http://127.0.0.1:{base + 10 * index}" for index in range(3)], lines
        deadline = time.monotonic() + AGREE_WITHIN_S
        leaders: set[Any] = set()
        while time.monotonic() < deadline:
            try:  # a node still starting or joining answers late, or 503: poll again
                statuses = [httpx.get(f"{url}/cluster", timeout=5.0).json()["result"] for url in urls]
            except (httpx.HTTPError, KeyError, ValueError):
                time.sleep(0.1)
                continue
            leaders = {status["raft_info"]["leader"] for status in statuses}
            if len(leaders) == 1 and None not in leaders and all(len(s["peers"]) == 3 for s in statuses):
                break
            time.sleep(0.1)
        assert len(leaders) == 1 and None not in leaders
    finally:
        process.send_signal(signal.SIGINT)
        try:
            code = process.wait(timeout=DEV_CLUSTER_STOP_S)
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # whatever of the group is left
            process.communicate(timeout=DEV_CLUSTER_STOP_S)
    assert code == 0
    for url in urls:
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"{url}/readyz", timeout=1.0)


def test_a_restarted_node_answers_503_until_it_has_caught_up_with_the_cluster(three_nodes: list[Node]) -> None:
    """A node back from a restart does not answer from a view of the cluster
    that may predate what was created while it was down: until it has applied
    its own registration (which needs a quorum) it answers 503, never 404."""
    start_all(three_nodes)
    _agreed_leader(three_nodes, members=3)
    first, *others = three_nodes
    for node in others:
        node.stop()
    first.stop()
    first.launch()  # alone: no quorum, so it cannot register
    deadline = time.monotonic() + AGREE_WITHIN_S
    while _status(first) is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _status(first) is not None, "GET /cluster answers while joining"
    created = httpx.put(f"{first.url}/collections/{COLLECTION}", json={"vectors": {"size": 4, "distance": "Dot"}},
                        timeout=10)
    missing = httpx.get(f"{first.url}/collections/{COLLECTION}", timeout=10)
    ready = httpx.get(f"{first.url}/readyz", timeout=10)
    for answer in (created, missing, ready):
        assert answer.status_code == 503, answer.text
    assert "joining the cluster" in missing.json()["status"]["error"]
    for node in others:
        node.launch()
    for node in three_nodes:
        node.wait_ready()
    _create_collection(first)
    assert httpx.get(f"{first.url}/collections/{COLLECTION}", timeout=10).status_code == 200

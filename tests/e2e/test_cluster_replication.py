"""Distributed collections on three real nodes: sharding, replication,
failover, recovery and self-healing, through the unmodified qdrant-client.

Every kill is ``kill -9`` of one node process. Acknowledged means the REST
call returned 200; every acknowledged id is checked on every node at the end.
"""

from __future__ import annotations

import os
import pathlib
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from qcluster.sharding import shard_of
from tests.e2e.conftest import Node, cluster_nodes, start_all, stop_all

pytestmark = pytest.mark.e2e

SECRET = "replication-test-secret"
DATASET = pathlib.Path(__file__).resolve().parents[3] / "shared" / "datasets" / "pypi-minilm-100k"
COLLECTION = "docs"
POINTS = 20_000
SETTLE_S = 60.0
FAST_FAILURE_ENV = {"QCLUSTER__CLUSTER__DEAD_AFTER_S": "1.5", "QCLUSTER__CLUSTER__INTERNAL_DEADLINE_S": "1.5"}


def _vectors(count: int) -> np.ndarray:
    return np.load(DATASET / "base.f16.npy", mmap_mode="r")[:count].astype(np.float32)


def _client(node: Node) -> QdrantClient:
    return QdrantClient(url=node.url, timeout=60, check_compatibility=False)


def _cluster_info(node: Node, *, digest: bool = False) -> dict[str, Any] | None:
    try:
        response = httpx.get(f"{node.url}/collections/{COLLECTION}/cluster",
                             params={"digest": "true"} if digest else None, timeout=30)
    except httpx.HTTPError:
        return None
    return response.json()["result"] if response.status_code == 200 else None


def _wait_all_active(nodes: list[Node], *, replicas: int) -> dict[str, Any]:
    """Until every shard has ``replicas`` replicas, all Active, as seen by every node."""
    deadline = time.monotonic() + SETTLE_S
    seen: Any = None
    while time.monotonic() < deadline:
        seen = [_cluster_info(node) for node in nodes]
        if all(info is not None for info in seen):
            shards = [info["qcluster"]["shards"] for info in seen]
            if all(shards[0] == other for other in shards) and all(
                    len(shard["replicas"]) == replicas and set(shard["replicas"].values()) == {"active"}
                    for shard in shards[0]):
                return seen[0]
        time.sleep(0.25)
    raise AssertionError(f"replicas not all active within {SETTLE_S} s: {seen}")


def _replica_digests(nodes: list[Node]) -> dict[int, set[tuple[int, str]]]:
    """Shard id -> the distinct (points, content digest) of its replicas on every node."""
    found: dict[int, set[tuple[int, str]]] = {}
    for node in nodes:
        info = _cluster_info(node, digest=True)
        assert info is not None
        for local in info["local_shards"]:
            found.setdefault(local["shard_id"], set()).add((local["points_count"],
                                                            local["qcluster"]["content_digest"]))
    return found


def _upload(client: QdrantClient, vectors: np.ndarray, start: int = 0) -> None:
    for offset in range(0, len(vectors), 1000):
        rows = vectors[offset:offset + 1000]
        ids = list(range(start + offset, start + offset + len(rows)))
        client.upsert(COLLECTION, wait=True, points=models.Batch(
            ids=ids, vectors=rows.tolist(), payloads=[{"n": point_id, "even": point_id % 2 == 0} for point_id in ids]))


def _start(nodes: list[Node]) -> None:
    """Start every node and wait until each sees all of them registered and alive."""
    start_all(nodes)
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        try:
            views = [httpx.get(f"{node.url}/cluster", timeout=5).json()["result"]["qcluster"]["nodes"]
                     for node in nodes]
        except (httpx.HTTPError, KeyError):
            views = []
        if views and all(len(view) == len(nodes) and all(item["liveness"] == "alive" for item in view.values())
                         for view in views):
            return
        time.sleep(0.1)
    raise AssertionError("the cluster did not form")


@pytest.fixture
def three_nodes(tmp_path: pathlib.Path) -> Iterator[list[Node]]:
    nodes = cluster_nodes(tmp_path, 3, secret=SECRET, extra_env=FAST_FAILURE_ENV)
    try:
        _start(nodes)
        yield nodes
    finally:
        stop_all(nodes)


def _create(client: QdrantClient, dim: int, *, replication_factor: int = 2) -> None:
    client.create_collection(COLLECTION, vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
                             shard_number=6, replication_factor=replication_factor)


def test_every_node_answers_like_a_single_node(three_nodes: list[Node], tmp_path: pathlib.Path) -> None:
    vectors = _vectors(POINTS)
    queries = np.load(DATASET / "queries.f16.npy")[:20].astype(np.float32)
    cluster = _client(three_nodes[0])
    _create(cluster, vectors.shape[1])
    _upload(cluster, vectors)
    info = _wait_all_active(three_nodes, replicas=2)
    # Replicas of a shard on distinct nodes, spread evenly: 12 replicas, 4 per node, 2 primaries each.
    holders = [sorted(int(node) for node in shard["replicas"]) for shard in info["qcluster"]["shards"]]
    assert all(len(set(nodes)) == 2 for nodes in holders)
    per_node = [sum(node_id in nodes for nodes in holders) for node_id in (1, 2, 3)]
    assert per_node == [4, 4, 4], per_node
    primaries = sorted(shard["primary"] for shard in info["qcluster"]["shards"])
    assert primaries == [1, 1, 2, 2, 3, 3], primaries

    single = Node(data_dir=tmp_path / "single", log_path=tmp_path / "single.log")
    single.start()
    try:
        reference = _client(single)
        # The same six shards on one node: each shard's segments are then the
        # same as in the cluster, so exact scores are equal to the last bit
        # (a different segment size can change a float32 sum in its last bit).
        _create(reference, vectors.shape[1], replication_factor=1)
        _upload(reference, vectors)
        exact = models.SearchParams(exact=True)
        expected = [[(point.id, point.score) for point in reference.query_points(
            COLLECTION, query=query.tolist(), limit=10, offset=5, search_params=exact).points] for query in queries]
        filtered = models.Filter(must=[models.FieldCondition(key="even", match=models.MatchValue(value=True))])
        expected_filtered = [(point.id, point.score) for point in reference.query_points(
            COLLECTION, query=queries[0].tolist(), limit=10, query_filter=filtered, search_params=exact).points]
        expected_page = reference.scroll(COLLECTION, limit=100, offset=1234, with_payload=True)
        for node in three_nodes:
            client = _client(node)
            got = [[(point.id, point.score) for point in client.query_points(
                COLLECTION, query=query.tolist(), limit=10, offset=5, search_params=exact).points] for query in queries]
            assert got == expected, node.url
            assert [(point.id, point.score) for point in client.query_points(
                COLLECTION, query=queries[0].tolist(), limit=10, query_filter=filtered,
                search_params=exact).points] == expected_filtered
            assert client.count(COLLECTION).count == POINTS
            assert client.count(COLLECTION, count_filter=filtered).count == POINTS // 2
            page = client.scroll(COLLECTION, limit=100, offset=1234, with_payload=True)
            assert [(record.id, record.payload) for record in page[0]] == [
                (record.id, record.payload) for record in expected_page[0]]
            assert page[1] == expected_page[1]
            assert [record.id for record in client.retrieve(COLLECTION, ids=[19_999, 3, 12_345, 77])] == [
                19_999, 3, 12_345, 77]
            assert client.get_collection(COLLECTION).points_count == POINTS
            client.close()
    finally:
        single.stop()
    # Every replica of a shard holds exactly the same points.
    digests = _replica_digests(three_nodes)
    assert sorted(digests) == list(range(6))
    assert all(len(found) == 1 for found in digests.values()), digests
    assert sum(next(iter(found))[0] for found in digests.values()) == POINTS


class _TransferWatcher:
    """Polls every node's ``shard_transfers`` (bounded by ``stop``) and keeps what it saw."""

    def __init__(self, nodes: list[Node]) -> None:
        self._nodes = nodes
        self._stop = threading.Event()
        self.seen: list[dict[str, Any]] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for node in self._nodes:
                info = _cluster_info(node)
                if info is not None:
                    self.seen += info["shard_transfers"]

    def __enter__(self) -> _TransferWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)


class _Workload:
    """A writer and a reader against every live node in turn, until stopped.

    The writer upserts 10 new ids per request; a failed request is retried
    (same ids) on the next node. ``acknowledged`` gets ids only after a 200.
    """

    def __init__(self, nodes: list[Node], vectors: np.ndarray, start_id: int) -> None:
        self._nodes = nodes
        self._vectors = vectors
        self._next_id = start_id
        self.acknowledged: list[int] = []
        self.write_times: list[float] = []
        self.read_failures = 0
        self.reads = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, daemon=True),
                         threading.Thread(target=self._read, daemon=True)]
        self.down: set[int] = set()  # indexes of nodes the test has killed

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=120)
        assert not any(thread.is_alive() for thread in self._threads)

    def _live(self, turn: int) -> Node:
        candidates = [node for index, node in enumerate(self._nodes) if index not in self.down]
        return candidates[turn % len(candidates)]

    def _write(self) -> None:
        turn = 0
        while not self._stop.is_set():
            ids = list(range(self._next_id, self._next_id + 10))
            rows = self._vectors[[point_id % len(self._vectors) for point_id in ids]]
            body = {"points": [{"id": point_id, "vector": row.tolist(), "payload": {"n": point_id}}
                               for point_id, row in zip(ids, rows, strict=True)]}
            while not self._stop.is_set():
                turn += 1
                try:
                    response = httpx.put(f"{self._live(turn).url}/collections/{COLLECTION}/points",
                                         params={"wait": "true"}, json=body, timeout=30)
                except httpx.HTTPError:
                    time.sleep(0.05)
                    continue
                if response.status_code == 200:
                    self.acknowledged.extend(ids)
                    self.write_times.append(time.monotonic())
                    break
                time.sleep(0.05)
            self._next_id += 10

    def _read(self) -> None:
        turn = 0
        query = self._vectors[0].tolist()
        while not self._stop.is_set():
            turn += 1
            self.reads += 1
            try:
                response = httpx.post(f"{self._live(turn).url}/collections/{COLLECTION}/points/query",
                                      json={"query": query, "limit": 5}, timeout=30)
                ok = response.status_code == 200 and len(response.json()["result"]["points"]) == 5
            except httpx.HTTPError:
                ok = False
            if not ok:
                # A retry on another node is allowed; count the first failure.
                self.read_failures += 1
                turn += 1
            time.sleep(0.01)


def _state(node: Node) -> dict[str, Any]:
    info = _cluster_info(node)
    assert info is not None
    return info["qcluster"]


def _leader(node: Node) -> int:
    return int(httpx.get(f"{node.url}/cluster", timeout=10).json()["result"]["raft_info"]["leader"])


# A stalled node the cluster still counts alive, and internal calls that
# wait a minute: only a hedge or giving up on a replica lets a read through.
STALLED_ENV = {"QCLUSTER__CLUSTER__DEAD_AFTER_S": "3600", "QCLUSTER__CLUSTER__INTERNAL_DEADLINE_S": "60"}
READ_TIMEOUT_S = 20.0


def test_reads_hedge_past_a_stalled_replica_and_give_up_on_a_dropped_one(tmp_path: pathlib.Path) -> None:
    """Node 3 is SIGSTOPped and never marked dead. A default read through
    node 1 whose first replica is on node 3 asks a second replica after a
    second (ten reads of every shard: without the hedge, one of them would
    wait out the minute); a read at ``consistency=all`` waiting on node 3's
    replica gives it up once the replica is dropped from the shard, and is
    answered by the replica left."""
    nodes = cluster_nodes(tmp_path, 3, secret=SECRET, extra_env=STALLED_ENV)
    reader, victim = nodes[0], nodes[2]
    ids = list(range(600))
    try:
        _start(nodes)
        client = _client(reader)
        client.create_collection(COLLECTION, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                                 shard_number=6, replication_factor=2)
        client.upsert(COLLECTION, wait=True, points=models.Batch(ids=ids, vectors=[[1.0, 0.0, 0.0, 0.0]] * len(ids)))
        client.close()
        shards = _wait_all_active(nodes, replicas=2)["qcluster"]["shards"]
        dropped = next(shard for shard in shards if "3" in shard["replicas"] and shard["primary"] != 3)
        wanted = [point_id for point_id in ids if shard_of(point_id, shard_number=6) == dropped["shard_id"]]
        assert victim.process is not None
        os.kill(victim.process.pid, signal.SIGSTOP)
        try:
            with httpx.Client(timeout=READ_TIMEOUT_S) as http:
                for _ in range(10):
                    response = http.post(f"{reader.url}/collections/{COLLECTION}/points", json={"ids": ids})
                    assert response.status_code == 200, response.text
                    assert sorted(record["id"] for record in response.json()["result"]) == ids

                answer: dict[str, httpx.Response] = {}

                def read_all() -> None:
                    with httpx.Client(timeout=READ_TIMEOUT_S) as own:
                        answer["response"] = own.post(f"{reader.url}/collections/{COLLECTION}/points",
                                                      params={"consistency": "all"}, json={"ids": wanted})

                thread = threading.Thread(target=read_all, daemon=True)
                thread.start()
                # Most likely waiting on node 3 by now; if it were not, it would
                # read after the drop, and pass without giving anything up.
                time.sleep(1.0)
                drop = http.post(f"{reader.url}/collections/{COLLECTION}/cluster",
                                 json={"drop_replica": {"shard_id": dropped["shard_id"], "peer_id": 3}})
                assert drop.status_code == 200, drop.text
                thread.join(READ_TIMEOUT_S + 10)
                assert not thread.is_alive() and "response" in answer, "the read at all did not end"
                response = answer["response"]
                assert response.status_code == 200, response.text
                assert sorted(record["id"] for record in response.json()["result"]) == wanted
        finally:
            os.kill(victim.process.pid, signal.SIGCONT)
    finally:
        stop_all(nodes)


WRITE_TIMEOUT_S = 15.0  # under the node's cluster.write_timeout_s (20 s), which a retried write would wait out


def test_too_few_in_sync_replicas_refuse_writes_at_once(three_nodes: list[Node]) -> None:
    """``write_consistency_factor`` 2 with 2 replicas: once node 3's replicas
    are fenced (it was killed), a write to one of its shards is refused with
    503 at once — not retried by the router until its 20 s write deadline —
    and the other shards, and every read, go on."""
    client = _client(three_nodes[0])
    client.create_collection(COLLECTION, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                             shard_number=6, replication_factor=2, write_consistency_factor=2)
    client.upsert(COLLECTION, wait=True, points=models.Batch(ids=list(range(60)), vectors=[[1.0, 0.0, 0.0, 0.0]] * 60))
    client.close()
    shards = _wait_all_active(three_nodes, replicas=2)["qcluster"]["shards"]
    three_nodes[2].kill()
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        info = _cluster_info(three_nodes[0])
        if info is not None and all(shard["replicas"].get("3") in (None, "dead")
                                    for shard in info["qcluster"]["shards"]):
            break
        time.sleep(0.25)
    else:
        raise AssertionError(f"node 3's replicas were not fenced within {SETTLE_S} s")
    hit = {shard["shard_id"] for shard in shards if "3" in shard["replicas"]}
    spared = {shard["shard_id"] for shard in shards} - hit
    assert hit and spared, shards
    hit_id = next(point_id for point_id in range(1000, 2000) if shard_of(point_id, shard_number=6) in hit)
    spared_id = next(point_id for point_id in range(1000, 2000) if shard_of(point_id, shard_number=6) in spared)
    with httpx.Client(timeout=WRITE_TIMEOUT_S) as http:
        def put(point_id: int) -> httpx.Response:
            return http.put(f"{three_nodes[0].url}/collections/{COLLECTION}/points", params={"wait": "true"},
                            json={"points": [{"id": point_id, "vector": [1.0, 0.0, 0.0, 0.0]}]})

        refused = put(hit_id)
        assert refused.status_code == 503, refused.text
        assert "fewer than its write_consistency_factor 2" in refused.text, refused.text
        assert put(spared_id).status_code == 200
        response = http.post(f"{three_nodes[1].url}/collections/{COLLECTION}/points/count", json={"exact": True})
        assert response.status_code == 200 and response.json()["result"]["count"] == 61, response.text


RESUME_TIMEOUT_S = 60.0
WRITES_AFTER_KILL = 20


def test_kill_nine_loses_no_acknowledged_write(three_nodes: list[Node]) -> None:
    vectors = _vectors(2_000)
    client = _client(three_nodes[0])
    _create(client, vectors.shape[1])
    _upload(client, vectors)
    client.close()
    _wait_all_active(three_nodes, replicas=2)
    workload = _Workload(three_nodes, vectors, start_id=1_000_000)
    workload.start()
    gaps: dict[str, float] = {}
    try:
        for scenario in ("raft leader", "holds primaries", "holds only replicas"):
            time.sleep(2.0)
            any_live = next(node for index, node in enumerate(three_nodes) if index not in workload.down)
            shards = _state(any_live)["shards"]
            leader = _leader(any_live)
            primaries = {shard["primary"] for shard in shards}
            if scenario == "raft leader":
                victim = leader
            elif scenario == "holds primaries":
                victim = next(node_id for node_id in (1, 2, 3) if node_id in primaries and node_id != leader)
            else:
                without = [node_id for node_id in (1, 2, 3) if node_id not in primaries]
                victim = without[0] if without else next(node_id for node_id in (1, 2, 3) if node_id != leader)
            index = victim - 1
            acknowledged_before = len(workload.acknowledged)
            workload.down.add(index)
            three_nodes[index].kill()
            killed_at = time.monotonic()
            # Writes resume: a condition with a generous deadline. How soon is
            # measured (printed here; the chaos harness reports it per fault).
            deadline = killed_at + RESUME_TIMEOUT_S
            while len([moment for moment in workload.write_times if moment > killed_at]) < WRITES_AFTER_KILL \
                    and time.monotonic() < deadline:
                time.sleep(0.1)
            after = [moment for moment in workload.write_times if moment > killed_at]
            assert len(after) >= WRITES_AFTER_KILL, \
                f"{scenario}: {len(after)} writes acknowledged within {RESUME_TIMEOUT_S} s of kill -9"
            # The longest pause in acknowledged writes from the kill on.
            moments = [killed_at, *after]
            gaps[scenario] = max(later - earlier for earlier, later in zip(moments, moments[1:], strict=False))
            assert len(workload.acknowledged) > acknowledged_before
            three_nodes[index].start()
            workload.down.discard(index)
            _wait_all_active(three_nodes, replicas=2)
    finally:
        workload.stop()
    acknowledged = sorted(set(workload.acknowledged))
    assert len(acknowledged) > 100
    for node in three_nodes:
        node_client = _client(node)
        for offset in range(0, len(acknowledged), 1000):
            wanted = acknowledged[offset:offset + 1000]
            found = {record.id for record in node_client.retrieve(COLLECTION, ids=wanted, with_payload=False)}
            missing = sorted(set(wanted) - found)
            assert not missing, f"{node.url} lost acknowledged ids {missing[:10]} ({len(missing)})"
        node_client.close()
    _wait_all_active(three_nodes, replicas=2)
    digests = _replica_digests(three_nodes)
    assert all(len(found) == 1 for found in digests.values()), digests
    print(f"write pauses after kill -9: {gaps}; reads {workload.reads}, first-try failures "
          f"{workload.read_failures}; acknowledged {len(acknowledged)}")


def test_lost_node_replicas_are_re_created(tmp_path: pathlib.Path) -> None:
    nodes = cluster_nodes(tmp_path, 3, secret=SECRET,
                          extra_env={**FAST_FAILURE_ENV, "QCLUSTER__CLUSTER__REPLICA_GRACE_S": "3"})
    try:
        _start(nodes)
        vectors = _vectors(3_000)
        client = _client(nodes[0])
        _create(client, vectors.shape[1])
        _upload(client, vectors)
        _wait_all_active(nodes, replicas=2)
        nodes[2].kill()
        survivors = nodes[:2]
        deadline = time.monotonic() + SETTLE_S
        shards: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            shards = _state(nodes[0])["shards"]
            if all(sorted(shard["replicas"]) == ["1", "2"] and set(shard["replicas"].values()) == {"active"}
                   for shard in shards):
                break
            time.sleep(0.25)
        else:
            raise AssertionError(f"replicas of the lost node were not re-created: {shards}")
        digests = _replica_digests(survivors)
        assert all(len(found) == 1 for found in digests.values()), digests
        assert client.count(COLLECTION).count == len(vectors)
        # The lost node comes back: it holds no replica any more, and its stale copies go.
        nodes[2].start()
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            info = _cluster_info(nodes[2])
            if info is not None and not info["local_shards"]:
                break
            time.sleep(0.25)
        else:
            raise AssertionError(f"the returning node kept replicas: {_cluster_info(nodes[2])}")
        assert _client(nodes[2]).count(COLLECTION).count == len(vectors)
        client.close()
    finally:
        stop_all(nodes)


def test_fourth_node_rebalance_under_write_load(tmp_path: pathlib.Path) -> None:
    """Four peers configured, three started: the collection lands on three.
    The fourth starts; ``rebalance`` moves replicas onto it while a client
    writes; nothing acknowledged is lost and every node ends with 3 replicas."""
    nodes = cluster_nodes(tmp_path, 4, secret=SECRET, extra_env=FAST_FAILURE_ENV)
    try:
        _start(nodes[:3])
        vectors = _vectors(3_000)
        client = _client(nodes[0])
        _create(client, vectors.shape[1])
        _upload(client, vectors)
        _wait_all_active(nodes[:3], replicas=2)
        nodes[3].start()
        deadline = time.monotonic() + SETTLE_S
        while time.monotonic() < deadline:
            view = httpx.get(f"{nodes[0].url}/cluster", timeout=5).json()["result"]["qcluster"]["nodes"]
            if view.get("4", {}).get("liveness") == "alive":
                break
            time.sleep(0.1)
        workload = _Workload(nodes, vectors, start_id=2_000_000)
        workload.start()
        try:
            time.sleep(1.0)
            with _TransferWatcher(nodes) as watcher:
                for _ in range(4):  # one move per shard per call
                    response = httpx.post(f"{nodes[1].url}/collections/{COLLECTION}/cluster",
                                          json={"rebalance": {}}, timeout=60)
                    assert response.status_code == 200, response.text
                    _wait_all_active(nodes, replicas=2)
            time.sleep(1.0)
        finally:
            workload.stop()
        # Moves showed in shard_transfers (Qdrant's shape), with progress on the primary's node.
        moves = [seen for seen in watcher.seen if seen["to"] == 4 and seen["sync"] is False]
        assert moves, watcher.seen
        progressed = [seen for seen in moves if "qcluster" in seen]
        assert progressed, moves
        assert all(seen["method"] in ("wal_delta", "snapshot") and " sent" in seen["comment"]
                   and seen["qcluster"]["stage"] in ("starting", "snapshot", "wal_delta", "final_delta", "in_sync")
                   for seen in progressed), progressed
        info = _wait_all_active(nodes, replicas=2)
        holders = [int(node) for shard in info["qcluster"]["shards"] for node in shard["replicas"]]
        assert sorted(holders.count(node_id) for node_id in (1, 2, 3, 4)) == [3, 3, 3, 3], info
        acknowledged = sorted(set(workload.acknowledged))
        assert len(acknowledged) > 50
        for node in nodes:
            node_client = _client(node)
            found = {record.id for record in node_client.retrieve(COLLECTION, ids=acknowledged, with_payload=False)}
            assert found == set(acknowledged), f"{node.url} lost {len(set(acknowledged) - found)} acknowledged ids"
            assert node_client.count(COLLECTION).count == len(vectors) + len(acknowledged)
            node_client.close()
        digests = _replica_digests(nodes)
        assert all(len(found) == 1 for found in digests.values()), digests
        client.close()
    finally:
        stop_all(nodes)


def test_cluster_operations_validate_and_move(three_nodes: list[Node]) -> None:
    client = _client(three_nodes[0])
    _create(client, 8)
    client.upsert(COLLECTION, points=[models.PointStruct(id=index, vector=[float(index % 7 + 1)] * 8)
                                      for index in range(100)])
    info = _wait_all_active(three_nodes, replicas=2)
    url = f"{three_nodes[2].url}/collections/{COLLECTION}/cluster"
    bad = httpx.post(url, json={"move_shard": {"shard_id": 99, "from_peer_id": 1, "to_peer_id": 2}}, timeout=30)
    assert bad.status_code == 404 and "shard 99" in bad.json()["status"]["error"]
    bad = httpx.post(url, json={"move_shard": {"shard_id": 0, "from_peer_id": "x", "to_peer_id": 2}}, timeout=30)
    assert bad.status_code == 400 and "from_peer_id" in bad.json()["status"]["error"]
    shard = info["qcluster"]["shards"][0]
    holders = sorted(int(node) for node in shard["replicas"])
    outsider = next(node_id for node_id in (1, 2, 3) if node_id not in holders)
    # Replicate to the third node, then drop the primary's replica: the shard keeps working.
    assert httpx.post(url, json={"replicate_shard": {"shard_id": 0, "from_peer_id": holders[0],
                                                     "to_peer_id": outsider}}, timeout=30).status_code == 200
    deadline = time.monotonic() + SETTLE_S
    while time.monotonic() < deadline:
        shard = _state(three_nodes[0])["shards"][0]
        if len(shard["replicas"]) == 3 and set(shard["replicas"].values()) == {"active"}:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(f"replicate_shard did not complete: {shard}")
    secondary = next(node_id for node_id in holders if node_id != shard["primary"])
    assert httpx.post(url, json={"drop_replica": {"shard_id": 0, "peer_id": secondary}},
                      timeout=30).status_code == 200
    shard = _state(three_nodes[2])["shards"][0]  # the node that proposed it has applied it
    assert str(secondary) not in shard["replicas"]
    assert client.count(COLLECTION).count == 100
    client.close()

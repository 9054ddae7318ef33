"""Cluster mode through the public API, with real processes on loopback:
aliases and collection PATCH through Raft, and read ``consistency``.

Replicas that agree answer alike under every consistency. To see what
``consistency`` does when they do not, the test makes one replica drift the
way a bug or a bit flip would: it sends that replica alone a replication
record (an extra point) over the internal gRPC API with the cluster secret,
as a rogue primary would. Its content digest then differs from its peers',
and only reads that ask that replica alone see the extra point.
"""

from __future__ import annotations

import asyncio
import pathlib
import time
from collections.abc import Iterator
from typing import Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models

from qcluster.operations import PointsBatch, UpsertPoints, encode_operation
from qcluster.replication.messages import ReplicaOp, ShardKey
from qcluster.transport.replication import GrpcPeers
from qcluster.types import DEFAULT_VECTOR
from tests.e2e.conftest import Node, cluster_nodes, stop_all
from tests.e2e.test_cluster_replication import FAST_FAILURE_ENV, SECRET, _cluster_info, _start, _wait_all_active

COLLECTION = "docs"  # the helpers above read this collection
POINTS = 300
ROGUE_ID = 1_000_000
DIM = 32


@pytest.fixture
def three_nodes(tmp_path: pathlib.Path) -> Iterator[list[Node]]:
    nodes = cluster_nodes(tmp_path, 3, secret=SECRET, extra_env=FAST_FAILURE_ENV)
    try:
        _start(nodes)
        yield nodes
    finally:
        stop_all(nodes)


def _unit(rows: np.ndarray) -> np.ndarray:
    return (rows / np.linalg.norm(rows, axis=-1, keepdims=True)).astype(np.float32)


def _setup(nodes: list[Node]) -> tuple[np.ndarray, dict[str, Any]]:
    """One shard with a replica on each of the three nodes, ``POINTS`` points."""
    rng = np.random.default_rng(7)
    vectors = _unit(rng.standard_normal((POINTS, DIM)))
    client = QdrantClient(url=nodes[0].url, timeout=60, check_compatibility=False)
    client.create_collection(COLLECTION, vectors_config=models.VectorParams(size=DIM, distance=models.Distance.COSINE),
                             shard_number=1, replication_factor=3)
    client.upsert(COLLECTION, wait=True, points=models.Batch(ids=list(range(POINTS)), vectors=vectors.tolist(),
                                                             payloads=[{"n": i} for i in range(POINTS)]))
    return vectors, _wait_all_active(nodes, replicas=3)


def _drift(nodes: list[Node], node_id: int, vector: np.ndarray) -> None:
    """Give node ``node_id``'s replica one point its peers do not have."""
    info = _cluster_info(nodes[node_id - 1])
    assert info is not None
    local = info["local_shards"][0]["qcluster"]
    term = info["qcluster"]["shards"][0]["primary_term"]
    operation = UpsertPoints(points=PointsBatch(ids=(ROGUE_ID,), vectors={DEFAULT_VECTOR: vector[None, :]},
                                                present={DEFAULT_VECTOR: None}, payloads=({"rogue": True},)))
    record = encode_operation(operation, seq_no=local["last_seq"] + 1, term=term)

    async def send() -> None:
        peers = GrpcPeers(addresses=lambda wanted: f"127.0.0.1:{nodes[wanted - 1].grpc_port}", secret=SECRET,
                          deadline_s=10)
        try:
            ack = await peers.replicate(node_id, ReplicaOp(shard=ShardKey(COLLECTION, 0), primary_term=term,
                                                           record=record, previous_term=local["last_term"]))
        finally:
            await peers.close()
        assert ack.holds_it, ack

    asyncio.run(send())


def _query(node: Node, vector: np.ndarray, consistency: Any = None, *, limit: int = 5) -> list[int]:
    params = {} if consistency is None else {"consistency": str(consistency)}
    response = httpx.post(f"{node.url}/collections/{COLLECTION}/points/query", params=params, timeout=30,
                          json={"query": vector.tolist(), "limit": limit})
    assert response.status_code == 200, response.text
    return [point["id"] for point in response.json()["result"]["points"]]


def _count(node: Node, consistency: Any = None) -> int:
    params = {} if consistency is None else {"consistency": str(consistency)}
    response = httpx.post(f"{node.url}/collections/{COLLECTION}/points/count", params=params, timeout=30,
                          json={"exact": True})
    assert response.status_code == 200, response.text
    return int(response.json()["result"]["count"])


def test_consistency_keeps_only_points_the_replicas_agree_on(three_nodes: list[Node]) -> None:
    nodes = three_nodes
    vectors, info = _setup(nodes)
    primary = info["qcluster"]["shards"][0]["primary"]
    drifted = next(node_id for node_id in (1, 2, 3) if node_id != primary)
    reader = nodes[drifted - 1]  # reads start at the local replica: the drifted one
    probe = _unit(np.random.default_rng(8).standard_normal(DIM))  # the extra point will be exactly this

    # Replicas agree: every consistency gives the default answer, through REST and gRPC.
    expected = _query(nodes[0], probe)
    for consistency in (1, 2, 3, "majority", "quorum", "all", "primary"):
        assert _query(reader, probe, consistency) == expected, consistency
    grpc_client = QdrantClient(url=reader.url, grpc_port=reader.grpc_port, prefer_grpc=True, timeout=30,
                               check_compatibility=False)
    for consistency in (2, models.ReadConsistencyType.ALL, models.ReadConsistencyType.QUORUM):
        found = grpc_client.query_points(COLLECTION, query=probe.tolist(), limit=5, consistency=consistency)
        assert [point.id for point in found.points] == expected

    _drift(nodes, drifted, probe)
    digests = {(local["points_count"], local["qcluster"]["content_digest"])
               for node in nodes for local in (_cluster_info(node, digest=True) or {})["local_shards"]}
    assert len(digests) == 2, "the drifted replica's digest differs from its peers'"

    # Asking the drifted replica alone shows the extra point first (it is the probe itself) ...
    assert _query(reader, probe, 1)[0] == ROGUE_ID
    assert _count(reader) == POINTS + 1
    # ... asking several keeps only what they agree on.
    for consistency in (2, 3, "majority", "quorum", "all", "primary"):
        assert _query(reader, probe, consistency) == expected, consistency
        assert _count(reader, consistency) == POINTS, consistency
    client = QdrantClient(url=reader.url, timeout=30, check_compatibility=False)
    assert [record.id for record in client.retrieve(COLLECTION, [ROGUE_ID, 0])] == [ROGUE_ID, 0]
    assert [record.id for record in client.retrieve(COLLECTION, [ROGUE_ID, 0],
                                                    consistency=models.ReadConsistencyType.ALL)] == [0]
    page, _next = client.scroll(COLLECTION, limit=POINTS + 10, consistency=models.ReadConsistencyType.MAJORITY)
    assert [record.id for record in page] == list(range(POINTS))
    # Paging by id under "all" visits every agreed point once and never the extra one.
    seen: list[int] = []
    offset = None
    for _ in range(POINTS):  # bounded
        page, offset = client.scroll(COLLECTION, limit=64, offset=offset, consistency=models.ReadConsistencyType.ALL)
        seen += [int(record.id) for record in page]
        if offset is None:
            break
    assert seen == list(range(POINTS))

    # Bad values are refused, naming the parameter; more replicas than in sync is unavailable.
    for bad in ("most", "0", "-1", "1.5"):
        response = httpx.post(f"{reader.url}/collections/{COLLECTION}/points/query", params={"consistency": bad},
                              json={"query": probe.tolist(), "limit": 1}, timeout=30)
        assert response.status_code == 400 and "consistency" in response.json()["status"]["error"], response.text
    response = httpx.post(f"{reader.url}/collections/{COLLECTION}/points/count", params={"consistency": "4"},
                          json={}, timeout=30)
    assert response.status_code == 503 and "4 in-sync replicas" in response.json()["status"]["error"]


def test_a_replica_on_a_killed_node_is_fenced_and_all_reads_go_on(three_nodes: list[Node]) -> None:
    """Once its node is marked dead, the controller takes a replica on a
    killed node out of the in-sync set (no write needed): reads at ``all``
    ask the two replicas left. A read that arrives before that waits out the
    failover (bounded) rather than failing."""
    nodes = three_nodes
    vectors, info = _setup(nodes)
    primary = info["qcluster"]["shards"][0]["primary"]
    victim = next(node_id for node_id in (1, 2, 3) if node_id != primary)
    reader = next(node for index, node in enumerate(nodes) if index + 1 not in (victim,))
    expected = _query(reader, vectors[1])
    nodes[victim - 1].kill()
    assert _query(reader, vectors[1], "quorum") == expected
    assert _query(reader, vectors[1]) == expected
    assert _query(reader, vectors[1], "all") == expected

    def fenced() -> bool:
        shard = (_cluster_info(reader) or {"qcluster": {"shards": [{"in_sync": [victim]}]}})["qcluster"]["shards"][0]
        return victim not in shard["in_sync"]

    _poll(fenced, what="the killed node's replica left the in-sync set")
    client = QdrantClient(url=reader.url, timeout=60, check_compatibility=False)
    client.upsert(COLLECTION, wait=True, points=models.Batch(ids=[POINTS], vectors=[vectors[2].tolist()]))
    assert _count(reader, "all") == POINTS + 1
    assert _query(reader, vectors[1], "all") == expected


def _poll(check: Any, *, what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"{what} within {timeout_s} s (last: {last!r})")


def test_aliases_and_collection_patches_are_cluster_wide(three_nodes: list[Node]) -> None:
    clients = [QdrantClient(url=node.url, timeout=60, check_compatibility=False) for node in three_nodes]
    clients[0].create_collection(COLLECTION, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                                 shard_number=3, replication_factor=2)
    clients[0].upsert(COLLECTION, wait=True, points=[models.PointStruct(id=i, vector=[float(i), 1.0, 0.0, 0.0])
                                                     for i in range(30)])

    # An alias made on one node answers on every node, as soon as the call returns there.
    assert clients[1].update_collection_aliases(change_aliases_operations=[
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=COLLECTION, alias_name="live"))])
    for client in clients:
        _poll(lambda client=client: [alias.alias_name for alias in client.get_aliases().aliases] == ["live"],
              what="the alias on every node")
        assert client.count("live").count == 30
        assert client.query_points("live", query=[1.0, 0.0, 0.0, 0.0], limit=1).points[0].id == 29
    # Rename, and the rules: an alias cannot take a collection's name, a collection cannot take an alias's.
    assert clients[2].update_collection_aliases(change_aliases_operations=[
        models.RenameAliasOperation(rename_alias=models.RenameAlias(old_alias_name="live", new_alias_name="prod"))])
    _poll(lambda: [alias.alias_name for alias in clients[0].get_collection_aliases(COLLECTION).aliases] == ["prod"],
          what="the renamed alias")
    response = httpx.post(f"{three_nodes[0].url}/collections/aliases", timeout=30, json={"actions": [
        {"create_alias": {"collection_name": COLLECTION, "alias_name": COLLECTION}}]})
    assert response.status_code == 409, response.text
    response = httpx.put(f"{three_nodes[1].url}/collections/prod", timeout=30,
                         json={"vectors": {"size": 4, "distance": "Dot"}})
    assert response.status_code == 409, response.text
    response = httpx.post(f"{three_nodes[1].url}/collections/aliases", timeout=30, json={"actions": [
        {"delete_alias": {"alias_name": "nope"}}]})
    assert response.status_code == 404 and "nope" in response.json()["status"]["error"]

    # PATCH on one node: every node's collection takes the new config.
    assert clients[2].update_collection(COLLECTION, optimizers_config=models.OptimizersConfigDiff(
        indexing_threshold=1234), hnsw_config=models.HnswConfigDiff(ef_construct=77))
    for client in clients:
        _poll(lambda client=client: (client.get_collection(COLLECTION).config.optimizer_config.indexing_threshold
                                     == 1234), what="the patched config on every node")
        assert client.get_collection(COLLECTION).config.hnsw_config.ef_construct == 77
    response = httpx.patch(f"{three_nodes[0].url}/collections/{COLLECTION}", timeout=30,
                           json={"params": {"write_consistency_factor": 3}})
    assert response.status_code == 400 and "write_consistency_factor" in response.json()["status"]["error"]
    assert clients[0].update_collection(COLLECTION, collection_params=models.CollectionParamsDiff(
        write_consistency_factor=2))
    info = _cluster_info(three_nodes[1])
    assert info is not None
    _poll(lambda: (_cluster_info(three_nodes[1]) or {}).get("qcluster", {}).get("write_consistency_factor") == 2,
          what="write_consistency_factor 2 in the cluster state")
    clients[1].upsert(COLLECTION, wait=True, points=[models.PointStruct(id=100, vector=[1.0, 1.0, 1.0, 1.0])])
    assert clients[2].count(COLLECTION).count == 31

    # Deleting the collection deletes its aliases everywhere.
    assert clients[0].delete_collection(COLLECTION)
    for client in clients:
        _poll(lambda client=client: client.get_aliases().aliases == [], what="aliases gone with the collection")


def test_custom_sharding_routes_by_shard_key(three_nodes: list[Node]) -> None:
    clients = [QdrantClient(url=node.url, timeout=60, check_compatibility=False) for node in three_nodes]
    name = "tenants"
    clients[0].create_collection(name, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                                 shard_number=2, replication_factor=2, sharding_method=models.ShardingMethod.CUSTOM)
    for index, key in enumerate(("a", "b", 7)):
        assert clients[index].create_shard_key(name, key)
    response = httpx.put(f"{three_nodes[0].url}/collections/{name}/shards", json={"shard_key": "a"}, timeout=30)
    assert response.status_code == 409, response.text
    info = httpx.get(f"{three_nodes[1].url}/collections/{name}/cluster", timeout=30).json()["result"]
    keys = sorted(str(shard["shard_key"]) for shard in info["local_shards"] + info["remote_shards"])
    assert keys == sorted(["a"] * 4 + ["b"] * 4 + ["7"] * 4), "2 shards × 2 replicas per key"

    def points(ids: range) -> list[models.PointStruct]:
        return [models.PointStruct(id=i, vector=[float(i % 5), 1.0, 0.0, 0.0], payload={"i": i}) for i in ids]

    response = httpx.put(f"{three_nodes[0].url}/collections/{name}/points?wait=true", timeout=30,
                         json={"points": [{"id": 1, "vector": [1, 1, 1, 1]}]})
    assert response.status_code == 400 and "shard_key" in response.json()["status"]["error"], response.text
    clients[0].upsert(name, points(range(0, 50)), shard_key_selector="a", wait=True)
    clients[1].upsert(name, points(range(100, 130)), shard_key_selector="b", wait=True)
    clients[2].upsert(name, points(range(200, 210)), shard_key_selector=7, wait=True)

    for client in clients:
        assert client.count(name, shard_key_selector="a").count == 50
        assert client.count(name, shard_key_selector=["b", 7]).count == 40
        assert client.count(name).count == 90
        found = client.query_points(name, query=[1.0, 0.0, 0.0, 0.0], limit=100, shard_key_selector="b").points
        assert sorted(point.id for point in found) == list(range(100, 130))
        assert [record.id for record in client.retrieve(name, [0, 100, 200], shard_key_selector="b")] == [100]
        assert sorted(record.id for record in client.retrieve(name, [0, 100, 200])) == [0, 100, 200]
        page, _next = client.scroll(name, limit=100, shard_key_selector=7)
        assert [record.id for record in page] == list(range(200, 210))
    grpc_client = QdrantClient(url=three_nodes[2].url, grpc_port=three_nodes[2].grpc_port, prefer_grpc=True,
                               timeout=30, check_compatibility=False)
    assert grpc_client.count(name, shard_key_selector="a").count == 50
    assert len(grpc_client.query_points(name, query=[1.0, 0, 0, 0], limit=5, shard_key_selector=7).points) == 5
    response = httpx.post(f"{three_nodes[0].url}/collections/{name}/points/count", timeout=30,
                          json={"shard_key": "nope"})
    assert response.status_code == 404 and "nope" in response.json()["status"]["error"], response.text

    # Dropping a key drops its points and its replicas on every node.
    assert clients[1].delete_shard_key(name, "a")
    for client in clients:
        assert client.count(name).count == 40
    info = httpx.get(f"{three_nodes[0].url}/collections/{name}/cluster", timeout=30).json()["result"]
    assert "a" not in {shard["shard_key"] for shard in info["local_shards"] + info["remote_shards"]}
    # A collection with automatic sharding takes no shard key.
    clients[0].create_collection("auto", vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT))
    response = httpx.put(f"{three_nodes[0].url}/collections/auto/points", timeout=30,
                         json={"points": [{"id": 1, "vector": [1, 1, 1, 1]}], "shard_key": "a"})
    assert response.status_code == 400 and "custom sharding" in response.json()["status"]["error"], response.text


def test_a_single_node_refuses_custom_sharding_clearly(node: Node) -> None:
    body = {"vectors": {"size": 4, "distance": "Dot"}, "sharding_method": "custom"}
    response = httpx.put(f"{node.url}/collections/c", json=body, timeout=30)
    assert response.status_code == 400 and "sharding_method" in response.json()["status"]["error"], response.text
    response = httpx.put(f"{node.url}/collections/c", json={**body, "sharding_method": "random"}, timeout=30)
    assert response.status_code == 400 and "sharding_method" in response.json()["status"]["error"]
    assert httpx.put(f"{node.url}/collections/c", json={"vectors": body["vectors"]}, timeout=30).status_code == 200
    response = httpx.put(f"{node.url}/collections/c/shards", json={"shard_key": "a"}, timeout=30)
    assert response.status_code == 400 and "shard_key" in response.json()["status"]["error"], response.text
    response = httpx.put(f"{node.url}/collections/c/shards", json={"shard_key": ""}, timeout=30)
    assert response.status_code == 400 and "shard_key" in response.json()["status"]["error"]
    response = httpx.post(f"{node.url}/collections/c/points/query", json={"query": [1, 0, 0, 0], "shard_key": "a"},
                          timeout=30)
    assert response.status_code == 400 and "shard_key" in response.json()["status"]["error"]
    response = httpx.post(f"{node.url}/collections/c/points/query?consistency=all", json={"query": [1, 0, 0, 0]},
                          timeout=30)
    assert response.status_code == 200, "one copy of each shard: every consistency reads the same"

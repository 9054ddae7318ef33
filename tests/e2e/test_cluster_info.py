"""The single-node forms of Qdrant's cluster endpoints, through the unmodified
qdrant-client over REST and gRPC against a real ``qcluster serve``: cluster
status is disabled, a collection's cluster info lists its local shards with
their real point counts, and shard operations fail with a precondition error.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client import grpc as pb
from qdrant_client.http.exceptions import UnexpectedResponse

from qcluster.sharding import shard_of
from tests.e2e.conftest import Node

pytestmark = pytest.mark.e2e

NAME = "cluster_info"
SHARDS = 3
POINTS = 300
MISSING = "cluster_info_missing"
MOVE = models.MoveShardOperation(move_shard=models.MoveShard(shard_id=0, from_peer_id=0, to_peer_id=1))


def _client(node: Node, *, grpc_: bool) -> QdrantClient:
    return QdrantClient(url=node.url, grpc_port=node.grpc_port, prefer_grpc=grpc_, timeout=30,
                        check_compatibility=False, https=False)


@pytest.fixture(scope="module")
def clients(shared_node: Node) -> Iterator[dict[str, QdrantClient]]:
    rest, over_grpc = _client(shared_node, grpc_=False), _client(shared_node, grpc_=True)
    rest.create_collection(NAME, vectors_config=models.VectorParams(size=4, distance=models.Distance.DOT),
                           shard_number=SHARDS)
    vectors = np.random.default_rng(3).normal(size=(POINTS, 4)).astype(np.float32)
    rest.upsert(NAME, points=models.Batch(ids=list(range(POINTS)), vectors=vectors.tolist()), wait=True)
    yield {"rest": rest, "grpc": over_grpc}
    rest.delete_collection(NAME)
    rest.close()
    over_grpc.close()


@pytest.fixture(scope="module")
def http(shared_node: Node) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_node.url, timeout=30) as client:
        yield client


def _expected_counts() -> dict[int, int]:
    """Points per shard from the routing function itself."""
    counted = Counter(shard_of(point_id, shard_number=SHARDS) for point_id in range(POINTS))
    return {shard_id: counted[shard_id] for shard_id in range(SHARDS)}


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_cluster_status_is_disabled(clients: dict[str, QdrantClient], protocol: str) -> None:
    # qdrant-client asks over REST either way: gRPC has no cluster-status RPC.
    status = clients[protocol].cluster_status()
    assert isinstance(status, models.ClusterStatusOneOf)
    assert status.status == "disabled"


def test_cluster_status_envelope(http: httpx.Client) -> None:
    response = http.get("/cluster")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok" and body["result"] == {"status": "disabled"}


@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_collection_cluster_info_counts_points_per_shard(clients: dict[str, QdrantClient], protocol: str) -> None:
    info = clients[protocol].collection_cluster_info(NAME)
    assert info.peer_id == 0
    assert info.shard_count == SHARDS
    assert [shard.shard_id for shard in info.local_shards] == list(range(SHARDS))
    assert all(shard.state == models.ReplicaState.ACTIVE for shard in info.local_shards)
    assert all(shard.shard_key is None for shard in info.local_shards)
    counts = {shard.shard_id: shard.points_count for shard in info.local_shards}
    assert sum(counts.values()) == POINTS
    assert counts == _expected_counts()
    assert all(count > 0 for count in counts.values())
    assert info.remote_shards == [] and info.shard_transfers == []


def test_collection_cluster_info_same_over_rest_and_grpc(clients: dict[str, QdrantClient]) -> None:
    over_rest = clients["rest"].collection_cluster_info(NAME).model_dump()
    over_grpc = clients["grpc"].collection_cluster_info(NAME).model_dump()
    # proto3 cannot tell an empty repeated field from an absent one.
    assert over_grpc.pop("resharding_operations") == []
    assert over_rest.pop("resharding_operations") is None
    assert over_rest == over_grpc


def test_collection_cluster_info_follows_deletes(clients: dict[str, QdrantClient]) -> None:
    other = f"{NAME}_deletes"
    rest = clients["rest"]
    rest.create_collection(other, vectors_config=models.VectorParams(size=2, distance=models.Distance.DOT),
                           shard_number=2)
    try:
        rest.upsert(other, points=[models.PointStruct(id=i, vector=[1.0, float(i)]) for i in range(20)], wait=True)
        rest.delete(other, points_selector=models.PointIdsList(points=list(range(10))), wait=True)
        expected = Counter(shard_of(point_id, shard_number=2) for point_id in range(10, 20))
        for client in clients.values():
            info = client.collection_cluster_info(other)
            assert {shard.shard_id: shard.points_count for shard in info.local_shards} == {
                shard_id: expected[shard_id] for shard_id in range(2)}
    finally:
        rest.delete_collection(other)


def test_move_shard_fails_over_rest(clients: dict[str, QdrantClient]) -> None:
    with pytest.raises(UnexpectedResponse) as failed:
        clients["rest"].cluster_collection_update(NAME, cluster_operation=MOVE)
    assert failed.value.status_code == 409
    message = failed.value.structured()["status"]["error"]
    assert "cluster mode is not enabled" in message and "move_shard" in message


def test_move_shard_fails_over_grpc(clients: dict[str, QdrantClient]) -> None:
    with pytest.raises(grpc.RpcError) as failed:
        clients["grpc"].cluster_collection_update(NAME, cluster_operation=MOVE)
    assert failed.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "cluster mode is not enabled" in failed.value.details()
    assert "move_shard" in failed.value.details()


@pytest.mark.parametrize("operation", [
    models.ReplicateShardOperation(replicate_shard=models.ReplicateShard(shard_id=1, from_peer_id=0, to_peer_id=2)),
    models.AbortTransferOperation(abort_transfer=models.AbortShardTransfer(shard_id=1, from_peer_id=0,
                                                                           to_peer_id=2)),
    models.DropReplicaOperation(drop_replica=models.Replica(shard_id=2, peer_id=0)),
], ids=["replicate_shard", "abort_transfer", "drop_replica"])
@pytest.mark.parametrize("protocol", ["rest", "grpc"])
def test_other_operations_fail_naming_themselves(clients: dict[str, QdrantClient], protocol: str,
                                                 operation: Any) -> None:
    key = next(iter(type(operation).model_fields))
    with pytest.raises((UnexpectedResponse, grpc.RpcError)) as failed:
        clients[protocol].cluster_collection_update(NAME, cluster_operation=operation)
    error = failed.value
    if isinstance(error, grpc.RpcError):
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        message = error.details()
    else:
        assert error.status_code == 409
        message = error.structured()["status"]["error"]
    assert "cluster mode is not enabled" in message and key in message


def test_unknown_collection_over_rest(clients: dict[str, QdrantClient]) -> None:
    rest = clients["rest"]
    with pytest.raises(UnexpectedResponse) as info:
        rest.collection_cluster_info(MISSING)
    assert info.value.status_code == 404
    assert info.value.structured()["status"]["error"] == f"Collection `{MISSING}` doesn't exist!"
    with pytest.raises(UnexpectedResponse) as update:
        rest.cluster_collection_update(MISSING, cluster_operation=MOVE)
    assert update.value.status_code == 404


def test_unknown_collection_over_grpc(clients: dict[str, QdrantClient]) -> None:
    over_grpc = clients["grpc"]
    with pytest.raises(grpc.RpcError) as info:
        over_grpc.collection_cluster_info(MISSING)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    assert info.value.details() == f"Collection `{MISSING}` doesn't exist!"
    with pytest.raises(grpc.RpcError) as update:
        over_grpc.cluster_collection_update(MISSING, cluster_operation=MOVE)
    assert update.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.usefixtures("clients")
@pytest.mark.parametrize(("body", "needles"), [
    ({"split_shard": {"shard_id": 0}}, ("split_shard", "unknown cluster operation")),
    ({}, ("exactly one", "none")),
    ({"move_shard": {"shard_id": 0, "from_peer_id": 0, "to_peer_id": 1}, "drop_replica": {"shard_id": 0,
                                                                                          "peer_id": 0}},
     ("exactly one", "move_shard, drop_replica")),
    ({"move_shard": 3}, ("move_shard", "expected an object")),
    ([{"move_shard": {}}], ("Format error in JSON body",)),
])
def test_bad_cluster_operations_are_400(http: httpx.Client, body: Any, needles: tuple[str, ...]) -> None:
    response = http.post(f"/collections/{NAME}/cluster", json=body)
    assert response.status_code == 400, response.text
    message = response.json()["status"]["error"]
    assert all(needle in message for needle in needles), message


def test_grpc_request_without_operation_is_invalid(shared_node: Node, clients: dict[str, QdrantClient]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{shared_node.grpc_port}") as channel:
        stub = pb.CollectionsStub(channel)
        with pytest.raises(grpc.RpcError) as failed:
            stub.UpdateCollectionClusterSetup(pb.UpdateCollectionClusterSetupRequest(collection_name=NAME),
                                              timeout=10)
        assert failed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "exactly one" in failed.value.details()
        # The raw reply carries the handling time, like every Qdrant reply.
        reply = stub.CollectionClusterInfo(pb.CollectionClusterInfoRequest(collection_name=NAME), timeout=10)
        assert reply.time > 0 and reply.shard_count == SHARDS


def test_openapi_documents_the_cluster_routes(http: httpx.Client) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    assert set(paths["/cluster"]) == {"get"}
    assert set(paths["/collections/{collection_name}/cluster"]) == {"get", "post"}

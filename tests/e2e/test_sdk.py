"""The Python SDK (``qcluster.client``) against a real node."""

from __future__ import annotations

import asyncio
import gzip
import json
import pathlib
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from qdrant_client import models

from qcluster.client import AsyncClient, Client
from qcluster.errors import InvalidRequest, NotFound, PreconditionFailed
from tests.e2e.conftest import Node

pytestmark = pytest.mark.e2e

DATASET = pathlib.Path(__file__).resolve().parents[3] / "shared" / "datasets" / "pypi-minilm-100k"


@pytest.fixture(scope="module")
def client(shared_node: Node) -> Iterator[Client]:
    with Client(shared_node.url, grpc_port=shared_node.grpc_port) as sdk:
        yield sdk


def _create(client: Client, name: str, dim: int, distance: models.Distance = models.Distance.COSINE) -> None:
    assert client.qdrant.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=distance))


def test_upload_100k_with_payloads(client: Client) -> None:
    vectors = np.load(DATASET / "base.f16.npy").astype(np.float32)
    with gzip.open(DATASET / "base.jsonl.gz", "rt") as lines:
        payloads = [json.loads(line) for line in lines]
    assert vectors.shape == (100_000, 384) and len(payloads) == 100_000
    # Bulk-load settings (docs/configuration.md): no index build while loading. The
    # test is about the upload; a 100k x 384 HNSW build would also outlast the
    # fixture's 10 s SIGTERM budget on a loaded 2-core machine.
    assert client.qdrant.create_collection("sdk_pypi", vectors_config=models.VectorParams(
        size=384, distance=models.Distance.COSINE), optimizers_config=models.OptimizersConfigDiff(indexing_threshold=0))
    checkpoints: list[int] = []
    result = client.upload("sdk_pypi", vectors, payloads=payloads, batch_size=1_000, parallel=2,
                           on_checkpoint=checkpoints.append)
    assert result.points == 100_000 and result.batches == 100 and result.retries == 0
    assert checkpoints == sorted(checkpoints) and checkpoints[-1] == 100_000
    assert client.count("sdk_pypi") == 100_000
    # Default ids are the row numbers; payloads and vectors arrived intact.
    rows = [0, 4_242, 99_999]
    records = client.qdrant.retrieve("sdk_pypi", ids=rows, with_vectors=True)
    assert [record.id for record in records] == rows
    for record in records:
        assert record.payload == payloads[record.id]
        expected = vectors[record.id] / np.linalg.norm(vectors[record.id])  # Cosine stores normalized vectors
        np.testing.assert_allclose(record.vector, expected, rtol=1e-5, atol=1e-6)
    # Exact search through the SDK finds the dataset's ground truth.
    queries = np.load(DATASET / "queries.f16.npy").astype(np.float32)[:50]
    truth = np.load(DATASET / "gt_ip_top100.npy")[:50, :10]
    hits = client.query("sdk_pypi", queries, limit=10, exact=True)
    assert hits.ids.shape == (50, 10) and hits.scores.dtype == np.float32
    recall = np.mean([len(set(hits.ids[row].tolist()) & set(truth[row].tolist())) / 10 for row in range(50)])
    assert recall >= 0.99, recall
    assert np.all(np.diff(hits.scores, axis=1) <= 1e-6), "scores descend within each row"


def test_query_shapes_padding_payloads_and_filters(client: Client) -> None:
    _create(client, "sdk_small", 3, models.Distance.DOT)
    vectors = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    client.upload("sdk_small", vectors, ids=[10, 20, 30], payloads=[{"k": "a"}, {"k": "b"}, None])
    one = client.query("sdk_small", np.array([1, 0.5, 0], dtype=np.float32), limit=5, with_payload=True)
    assert one.ids.tolist() == [10, 20, 30, -1, -1]
    assert one.scores[:3].tolist() == [1.0, 0.5, 0.0] and np.isnan(one.scores[3:]).all()
    assert one.payloads == [{"k": "a"}, {"k": "b"}, {}]  # no payload reads as {}, as in Qdrant
    both = client.query("sdk_small", np.eye(3, dtype=np.float32)[:2], limit=1, filter={
        "must": [{"key": "k", "match": {"value": "b"}}]})
    assert both.ids.tolist() == [[20], [20]] and both.counts.tolist() == [1, 1]
    typed = client.query("sdk_small", np.eye(3, dtype=np.float32), limit=2, filter=models.Filter(
        must_not=[models.FieldCondition(key="k", match=models.MatchValue(value="a"))]), batch_size=2)
    assert typed.ids.shape == (3, 2) and 10 not in typed.ids


def test_uuid_ids_and_named_vectors(client: Client) -> None:
    assert client.qdrant.create_collection("sdk_named", vectors_config={
        "a": models.VectorParams(size=2, distance=models.Distance.EUCLID),
        "b": models.VectorParams(size=4, distance=models.Distance.DOT)})
    ids = [str(uuid.UUID(int=i + 1)) for i in range(4)]
    rng = np.random.default_rng(3)
    client.upload("sdk_named", {"a": rng.normal(size=(4, 2)), "b": rng.normal(size=(4, 4))}, ids=ids, batch_size=3)
    assert client.count("sdk_named") == 4
    hits = client.query("sdk_named", np.zeros((2, 2), dtype=np.float32), using="a", limit=4)
    assert hits.ids.dtype == object and sorted(hits.ids[0].tolist()) == sorted(ids)


def test_errors_are_qcluster_errors_with_a_resume_hint(client: Client) -> None:
    _create(client, "sdk_errors", 4)
    with pytest.raises(InvalidRequest, match=r"vectors: expected 4 dimensions, got 3"):
        client.upload("sdk_errors", np.ones((5, 3), dtype=np.float32))
    with pytest.raises(NotFound, match="sdk_missing"):
        client.query("sdk_missing", np.ones(4, dtype=np.float32))
    bad = np.ones((30, 4), dtype=np.float32)
    bad[25, 1] = np.nan  # third batch of 10 fails validation
    with pytest.raises(InvalidRequest, match=r"vectors\[5\]: contains a non-finite value") as failure:
        client.upload("sdk_errors", bad, batch_size=10, parallel=1)
    assert any("resume with start=20" in note for note in failure.value.__notes__)
    assert client.count("sdk_errors") == 20, "the batches before the bad one are written, the bad one is not"
    result = client.upload("sdk_errors", np.ones((30, 4), dtype=np.float32), batch_size=10, start=20)
    assert result.points == 10 and client.count("sdk_errors") == 30


def test_async_client(shared_node: Node) -> None:
    async def scenario() -> None:
        async with AsyncClient(shared_node.url, grpc_port=shared_node.grpc_port) as sdk:
            await sdk.qdrant.create_collection("sdk_async", vectors_config=models.VectorParams(
                size=8, distance=models.Distance.EUCLID))
            vectors = np.random.default_rng(5).normal(size=(2_500, 8)).astype(np.float32)
            result = await sdk.upload("sdk_async", vectors, payloads=[{"i": i} for i in range(2_500)],
                                      batch_size=300, parallel=3)
            assert result.points == 2_500 and result.batches == 9
            assert await sdk.count("sdk_async") == 2_500
            hits = await sdk.query("sdk_async", vectors[:40], limit=3, exact=True, batch_size=16)
            assert hits.ids[:, 0].tolist() == list(range(40)), "each vector's nearest point is itself"

    asyncio.run(scenario())


def test_cluster_administration(client: Client) -> None:
    assert client.qdrant.create_collection("sdk_sharded", shard_number=2, vectors_config=models.VectorParams(
        size=2, distance=models.Distance.DOT))
    client.upload("sdk_sharded", np.ones((50, 2), dtype=np.float32))
    assert client.cluster_status() == {"status": "disabled"}
    placement = client.shard_placement("sdk_sharded")
    assert sorted(shard.shard_id for shard in placement.local_shards) == [0, 1]
    assert sum(shard.points_count for shard in placement.local_shards) == 50
    with pytest.raises(PreconditionFailed, match="cluster mode is not enabled"):
        client.move_shard("sdk_sharded", 0, from_peer_id=0, to_peer_id=1)
    with pytest.raises(NotFound):
        client.shard_placement("sdk_absent")


def test_concurrent_single_queries_keep_their_own_parameters(shared_node: Node) -> None:
    """Single-row queries arriving together are searched together, grouped by
    parameters; each must get exactly the answer it gets alone."""
    async def scenario() -> None:
        async with AsyncClient(shared_node.url, grpc_port=shared_node.grpc_port) as sdk:
            await sdk.qdrant.create_collection("sdk_mixed", vectors_config=models.VectorParams(
                size=6, distance=models.Distance.EUCLID))
            vectors = np.random.default_rng(8).normal(size=(400, 6)).astype(np.float32)
            await sdk.upload("sdk_mixed", vectors, payloads=[{"odd": i % 2 == 1} for i in range(400)])
            odd = {"must": [{"key": "odd", "match": {"value": True}}]}
            even = {"must": [{"key": "odd", "match": {"value": False}}]}
            calls = [dict(limit=1 + i % 4, filter=(odd, even, None)[i % 3], exact=True) for i in range(60)]
            together = await asyncio.gather(*(sdk.query("sdk_mixed", vectors[i], **kwargs)
                                              for i, kwargs in enumerate(calls)))
            alone = [await sdk.query("sdk_mixed", vectors[i], **kwargs) for i, kwargs in enumerate(calls)]
            wrong_dim = sdk.query("sdk_mixed", np.ones(3, dtype=np.float32))
            good = sdk.query("sdk_mixed", vectors[5], limit=2, exact=True)
            # Same parameters as `good`, so searched in the same group: only it fails.
            not_finite = sdk.query("sdk_mixed", np.full(6, np.nan, dtype=np.float32), limit=2, exact=True)
            outcomes = await asyncio.gather(wrong_dim, good, not_finite, return_exceptions=True)
        for i, (mixed, single) in enumerate(zip(together, alone, strict=True)):
            assert mixed.ids.tolist() == single.ids.tolist(), i
            assert len(mixed.ids) == calls[i]["limit"]
            if calls[i]["filter"] is not None:  # the filters of a batch are not mixed up
                wanted = 1 if calls[i]["filter"] is odd else 0
                assert all(point_id % 2 == wanted for point_id in mixed.ids.tolist()), i
        assert isinstance(outcomes[0], InvalidRequest)
        assert outcomes[1].ids.tolist()[0] == 5
        assert isinstance(outcomes[2], InvalidRequest) and "non-finite" in outcomes[2].message

    asyncio.run(scenario())


def test_upload_retries_through_a_node_restart(node: Node) -> None:
    """kill -9 of the node during an upload: the batches in flight fail with
    UNAVAILABLE and are sent again (with backoff) once the node is back; the
    upload completes and nothing is missing."""
    import threading

    rows = 40_000
    vectors = np.random.default_rng(21).normal(size=(rows, 32)).astype(np.float32)
    with Client(node.url, grpc_port=node.grpc_port, timeout=10) as sdk:
        _create(sdk, "sdk_restart", 32, models.Distance.DOT)
        progress: list[int] = []
        outcome: dict[str, Any] = {}

        def upload() -> None:
            try:
                outcome["result"] = sdk.upload("sdk_restart", vectors, batch_size=100, parallel=2, max_retries=12,
                                               on_checkpoint=progress.append)
            except Exception as error:  # reported below
                outcome["error"] = error

        worker = threading.Thread(target=upload)
        worker.start()
        deadline = time.monotonic() + 60
        while (not progress or progress[-1] < rows // 4) and time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.005)
        assert worker.is_alive() and progress, "the upload must still be running when the node dies"
        node.restart(hard=True)
        worker.join(timeout=120)
        assert not worker.is_alive()
        assert "error" not in outcome, outcome.get("error")
        assert outcome["result"].retries > 0, "some batches had to be sent again"
        assert sdk.count("sdk_restart") == rows

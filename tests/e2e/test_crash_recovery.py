"""kill -9 at arbitrary moments during a stream of acknowledged upserts loses none of them.

A writer thread upserts batches (wait=true) and records what the server
acknowledged; the test kills the process with SIGKILL at a random moment,
restarts it on the same data directory, and checks every acknowledged point
(id, payload and vector) through the REST API. The collection's indexing
threshold is tiny so the optimizer is sealing segments, writing checkpoints
and truncating the WAL while the kills land.
"""

from __future__ import annotations

import random
import threading
import time

import httpx
import numpy as np
import pytest

from tests.e2e.conftest import Node

pytestmark = pytest.mark.e2e

DIM = 16
KILLS = 4
STREAM_S_MAX = 2.5


def _writer(url: str, start_id: int, acknowledged: dict[int, list[float]], stop: threading.Event, seed: int) -> None:
    """Upsert batches until stopped or the server dies; record acknowledged ids."""
    rng = np.random.default_rng(seed)
    next_id = start_id
    with httpx.Client(base_url=url, timeout=10.0) as client:
        for _ in range(10_000):  # bounded; the kill or the stop event ends it first
            if stop.is_set():
                return
            size = int(rng.integers(1, 60))
            vectors = rng.normal(size=(size, DIM)).astype(np.float32)
            ids = list(range(next_id, next_id + size))
            body = {
                "points": [
                    {"id": point_id, "vector": vector.tolist(), "payload": {"n": point_id}}
                    for point_id, vector in zip(ids, vectors, strict=True)
                ]
            }
            try:
                response = client.put("/collections/crash/points", params={"wait": "true"}, json=body)
            except httpx.HTTPError:
                return  # the server died mid-request: this batch was not acknowledged
            if response.status_code != 200:
                return
            for point_id, vector in zip(ids, vectors, strict=True):
                acknowledged[point_id] = vector.tolist()
            next_id += size


def _check_all(url: str, acknowledged: dict[int, list[float]]) -> None:
    ids = sorted(acknowledged)
    with httpx.Client(base_url=url, timeout=30.0) as client:
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            response = client.post(
                "/collections/crash/points", json={"ids": chunk, "with_payload": True, "with_vector": True}
            )
            assert response.status_code == 200, response.text
            found = {point["id"]: point for point in response.json()["result"]}
            missing = [point_id for point_id in chunk if point_id not in found]
            assert not missing, f"acknowledged points lost after kill -9: {missing[:10]} ({len(missing)} in all)"
            for point_id in chunk:
                assert found[point_id]["payload"] == {"n": point_id}
                np.testing.assert_allclose(found[point_id]["vector"], acknowledged[point_id], rtol=1e-6)


def test_kill_9_mid_stream_loses_no_acknowledged_write(node: Node) -> None:
    seed = random.randrange(1 << 30)
    print(f"seed={seed}")
    rng = random.Random(seed)
    created = httpx.put(
        f"{node.url}/collections/crash",
        json={
            "vectors": {"size": DIM, "distance": "Dot"},
            "optimizers_config": {"indexing_threshold": 20},
            "hnsw_config": {"full_scan_threshold": 10},
        },
        timeout=10.0,
    )
    assert created.status_code == 200, created.text
    acknowledged: dict[int, list[float]] = {}
    for kill in range(KILLS):
        stop = threading.Event()
        writer = threading.Thread(
            target=_writer, args=(node.url, kill * 1_000_000, acknowledged, stop, seed + kill), daemon=True
        )
        writer.start()
        time.sleep(rng.uniform(0.3, STREAM_S_MAX))
        node.kill()
        stop.set()
        writer.join(15)
        assert not writer.is_alive()
        node.start()
        _check_all(node.url, acknowledged)
    assert len(acknowledged) > 100, "the stream acknowledged enough writes to make the test meaningful"
    count = httpx.post(f"{node.url}/collections/crash/points/count", json={"exact": True}, timeout=10.0)
    assert count.json()["result"]["count"] >= len(acknowledged)

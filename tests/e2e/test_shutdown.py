"""SIGTERM while an HNSW build is running: the node exits 0 within the
fixture's 10 s bound (it does not wait for the build to reach its next
cancellation point), and loses nothing."""

from __future__ import annotations

import time

import numpy as np
import pytest
from qdrant_client import models

from qcluster.client import Client
from tests.e2e.conftest import Node

pytestmark = pytest.mark.e2e

ROWS = 60_000
WAIT_BUILD_S = 60.0


def test_sigterm_during_an_index_build(node: Node) -> None:
    vectors = np.random.default_rng(4).normal(size=(ROWS, 384)).astype(np.float32)
    with Client(node.url, grpc_port=node.grpc_port) as client:
        # Expensive graph parameters make one build chunk take many seconds.
        assert client.qdrant.create_collection(
            "building", vectors_config=models.VectorParams(size=384, distance=models.Distance.DOT),
            hnsw_config=models.HnswConfigDiff(m=48, ef_construct=800),
            optimizers_config=models.OptimizersConfigDiff(indexing_threshold=1_000))
        client.upload("building", vectors, batch_size=2_000)
        deadline = time.monotonic() + WAIT_BUILD_S
        while client.qdrant.get_collection("building").status != models.CollectionStatus.YELLOW:
            assert time.monotonic() < deadline, "the index build did not start"
            time.sleep(0.05)
    time.sleep(0.5)  # well inside the first 32 768-row chunk
    node.stop()  # asserts exit code 0 within 10 s
    node.start()
    with Client(node.url, grpc_port=node.grpc_port) as client:
        assert client.count("building") == ROWS

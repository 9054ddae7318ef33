"""The ids-and-scores fast path of ``engine.reads`` answers exactly like the
general path (the one that also returns payloads), thresholds included."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import numpy as np
import pytest

from qcluster.engine.shard import LocalShard
from qcluster.operations import UpsertPoints
from qcluster.types import PayloadSelector, QueryRequest, SearchParams
from tests.unit.test_shard import _batch, _config


@pytest.mark.parametrize("exact", [True, False])
def test_fast_path_equals_general_path(tmp_path: Path, exact: bool) -> None:
    rng = random.Random(17)
    shard = LocalShard.open(tmp_path, _config(indexing_threshold=10_000_000))
    batch, _count = _batch(list(range(200)), rng)
    shard.apply(UpsertPoints(points=batch))
    vectors = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
    for row, vector in enumerate(vectors):
        threshold = None if row % 3 == 0 else float(np.random.default_rng(row).uniform(-1.0, 1.0))
        fast = QueryRequest(vector=vector, using="a", limit=1 + row % 12, score_threshold=threshold,
                            params=SearchParams(exact=exact))
        general = dataclasses.replace(fast, with_payload=PayloadSelector(enabled=True))
        quick, full = shard.search_batch([fast, general])
        assert [(point.id, point.score, point.version) for point in quick] == [
            (point.id, point.score, point.version) for point in full]
        assert all(point.payload is None for point in quick)
        if threshold is not None:
            assert all(point.score >= threshold for point in quick)
    shard.close()

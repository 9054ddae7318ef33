"""The engine primitives replication builds on: a replica that holds the
primary's operations up to seq N catches up from ``operations_after(N)``
(the WAL delta) and then has the same ``content_digest``; when the log was
truncated the delta is refused (None) so the caller falls back to a snapshot."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest

from qcluster.engine import optimizer
from qcluster.engine.shard import LocalShard
from qcluster.operations import PointsBatch, PointSelector, SetPayload, UpdateVectors, UpsertPoints
from tests.unit.test_shard import Model, _apply_random, _batch, _config


def _run_optimizer(shard: LocalShard) -> None:
    for _ in range(20):  # bounded: each task makes progress
        task = optimizer.plan_task(shard)
        if task is None:
            return
        optimizer.run_task(shard, task)


def _copy_ops(source: LocalShard, target: LocalShard, *, after: int, limit: int = 7) -> int:
    """Apply the source's delta to the target in pages of ``limit``; returns ops copied."""
    copied = 0
    for _ in range(10_000):  # bounded paging
        delta = source.operations_after(target.last_seq, limit=limit)
        assert delta is not None, "the delta is still in the log"
        if not delta:
            return copied
        for seq_no, operation in delta:
            assert seq_no == target.last_seq + 1
            target.apply(operation, seq_no=seq_no)
            copied += 1
    raise AssertionError("paging did not end")


@pytest.mark.parametrize("seed", [5, 6, 7])
def test_replica_catches_up_from_the_wal_delta(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    config = _config(indexing_threshold=10_000_000)  # no checkpoints: the whole log stays
    primary = LocalShard.open(tmp_path / "primary", config)
    replica = LocalShard.open(tmp_path / "replica", config)
    model: Model = {}
    for _ in range(40):
        _apply_random(primary, model, rng)
    _copy_ops(primary, replica, after=0)
    assert replica.last_seq == primary.last_seq
    assert replica.content_digest() == primary.content_digest()
    # The replica falls behind again, restarts, and catches up from where it is.
    for _ in range(30):
        _apply_random(primary, model, rng)
    replica.close()
    replica = LocalShard.open(tmp_path / "replica", config)
    assert replica.content_digest() != primary.content_digest()
    copied = _copy_ops(primary, replica, after=replica.last_seq)
    assert copied == 30
    assert replica.content_digest() == primary.content_digest()
    assert replica.content_digest().points == len(model)
    assert primary.operations_after(primary.last_seq, limit=5) == []


def test_truncated_log_refuses_the_delta(tmp_path: Path) -> None:
    rng = random.Random(9)
    primary = LocalShard.open(tmp_path / "primary", _config(indexing_threshold=1))
    model: Model = {}
    for _ in range(30):
        _apply_random(primary, model, rng)
    _run_optimizer(primary)  # seal, index, checkpoint: the log before the checkpoint is dropped
    assert primary.checkpoint_seq > 1
    assert primary.operations_after(0, limit=10) is None
    tail = primary.operations_after(primary.checkpoint_seq, limit=1_000)
    assert tail is not None and all(seq > primary.checkpoint_seq for seq, _op in tail)


def test_digest_sees_every_difference_and_ignores_layout(tmp_path: Path) -> None:
    rng = random.Random(3)
    config = _config(indexing_threshold=1)
    left = LocalShard.open(tmp_path / "left", config)
    right = LocalShard.open(tmp_path / "right", config)
    batch, _count = _batch(list(range(50)), rng)
    for shard in (left, right):
        shard.apply(UpsertPoints(points=batch))
    _run_optimizer(left)  # sealed + indexed on one side only
    assert left.content_digest() == right.content_digest()
    assert left.content_digest().points == 50
    right.apply(SetPayload(selector=PointSelector(ids=(7,)), payload={"n": 99}))
    assert left.content_digest() != right.content_digest(), "a payload value differs"
    left.apply(SetPayload(selector=PointSelector(ids=(7,)), payload={"n": 99}))
    assert left.content_digest() == right.content_digest()
    nudged = PointsBatch(ids=(3,), vectors={"a": batch.vectors["a"][3:4] + np.float32(1e-3)},
                         present={"a": None}, payloads=(batch.payloads[3],))
    right.apply(UpdateVectors(points=nudged))
    assert left.content_digest() != right.content_digest(), "a vector differs"

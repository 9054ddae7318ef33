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
from qcluster.engine.shard import LocalShard, ReplicaApply
from qcluster.errors import ShardUnavailable
from qcluster.operations import (
    PointsBatch,
    PointSelector,
    SetPayload,
    UpdateVectors,
    UpsertPoints,
    encode_operation,
)
from tests.unit.test_shard import Model, _apply_random, _batch, _config


def _run_optimizer(shard: LocalShard) -> None:
    for _ in range(20):  # bounded: each task makes progress
        task = optimizer.plan_task(shard)
        if task is None:
            return
        optimizer.run_task(shard, task)


def _copy_ops(source: LocalShard, target: LocalShard, *, after: int, limit: int = 7) -> int:
    """Apply the source's delta to the target in pages of ``limit``, as a
    replica does (``apply_replicated`` with each record's previous term);
    returns records copied."""
    copied = 0
    for _ in range(10_000):  # bounded paging
        delta = source.operations_after(target.last_seq, limit=limit)
        assert delta is not None, "the delta is still in the log"
        previous_term, records = delta
        if not records:
            return copied
        for item in records:
            assert item.seq_no == target.last_seq + 1
            outcome, _seq, _term = target.apply_replicated(
                encode_operation(item.operation, seq_no=item.seq_no, term=item.term), previous_term=previous_term)
            assert outcome is ReplicaApply.APPLIED
            previous_term = item.term
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
    assert primary.operations_after(primary.last_seq, limit=5) == (0, [])


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
    assert tail is not None and all(item.seq_no > primary.checkpoint_seq for item in tail[1])


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


def _record(shard: LocalShard, operation: object, *, term: int) -> tuple[bytes, int]:
    """Apply on ``shard`` as primary of ``term``; returns (record, previous term)."""
    _seq, record, previous = shard.apply_logged(operation, term=term)  # type: ignore[arg-type]
    return record, previous


def test_terms_detect_a_history_from_a_deposed_primary(tmp_path: Path) -> None:
    rng = random.Random(12)
    config = _config(indexing_threshold=10_000_000)
    old_primary = LocalShard.open(tmp_path / "old", config)
    new_primary = LocalShard.open(tmp_path / "new", config)
    replica = LocalShard.open(tmp_path / "replica", config)
    for step in range(5):  # seq 1..5 (points 0..24) in term 1 reach everyone
        record, previous = _record(old_primary, UpsertPoints(points=_batch(list(range(5 * step, 5 * step + 5)),
                                                                           rng)[0]), term=1)
        for shard in (new_primary, replica):
            assert shard.apply_replicated(record, previous_term=previous)[0] is ReplicaApply.APPLIED
    # The old primary logs seq 6 and reaches only the replica, then is replaced.
    record, previous = _record(old_primary, SetPayload(selector=PointSelector(ids=(1, 2, 3)), payload={"x": 1}),
                               term=1)
    replica.apply_replicated(record, previous_term=previous)
    # The new primary (term 2) assigns its own seq 6: the replica holds another one.
    record, previous = _record(new_primary, SetPayload(selector=PointSelector(ids=(4,)), payload={"y": 2}), term=2)
    assert replica.apply_replicated(record, previous_term=previous)[0] is ReplicaApply.DIVERGED
    # A retry of the replica's own last record is a duplicate, not a divergence.
    own = replica.operations_after(5, limit=1)
    assert own is not None
    retry = encode_operation(own[1][0].operation, seq_no=6, term=1)
    assert replica.apply_replicated(retry, previous_term=1)[0] is ReplicaApply.DUPLICATE
    # A replica that missed seq 6 entirely but whose seq 5 came from another
    # term diverges too (the previous term does not match).
    assert new_primary.last_term == 2 and new_primary.term_at(5) == 1


def test_terms_survive_restart_and_checkpoint(tmp_path: Path) -> None:
    rng = random.Random(13)
    shard = LocalShard.open(tmp_path, _config(indexing_threshold=1))
    for term in (1, 1, 3, 3, 3):  # 100 points each: past the 1 KB indexing threshold
        shard.apply_logged(UpsertPoints(points=_batch(rng.sample(range(500), 100), rng)[0]), term=term)
    assert (shard.last_seq, shard.last_term, shard.term_at(2), shard.term_at(3)) == (5, 3, 1, 3)
    shard.close()
    shard = LocalShard.open(tmp_path, _config(indexing_threshold=1))  # replayed from the WAL
    assert (shard.last_term, shard.term_at(2)) == (3, 1)
    _run_optimizer(shard)  # checkpoint at seq 5: the WAL before it is dropped
    assert shard.checkpoint_seq == 5
    shard.close()
    shard = LocalShard.open(tmp_path, _config(indexing_threshold=1))  # term from the checkpoint manifest
    assert (shard.last_seq, shard.last_term) == (5, 3)
    wal_next = shard.wal.next_index
    with pytest.raises(ShardUnavailable, match="no longer its primary"):
        shard.apply_logged(UpsertPoints(points=_batch([1], rng)[0]), term=2)  # a deposed primary's term
    assert (shard.last_seq, shard.wal.next_index) == (5, wal_next), "nothing was logged"
    shard.close()

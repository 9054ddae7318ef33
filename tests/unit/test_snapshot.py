"""A shard snapshot restores as the same shard: same points (content digest),
same last seq and term; the restored copy catches up from the live shard's
WAL delta; a damaged snapshot is refused and leaves nothing behind."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from qcluster.engine.shard import LocalShard, ReplicaApply
from qcluster.engine.snapshot import create_snapshot, restore_snapshot
from qcluster.errors import DataCorruption
from qcluster.operations import encode_operation
from tests.unit.test_shard import Model, _apply_random, _config
from tests.unit.test_shard_catch_up import _run_optimizer


def _shard_with_history(directory: Path, rng: random.Random) -> LocalShard:
    shard = LocalShard.open(directory, _config(indexing_threshold=1))
    model: Model = {}
    for step in range(60):
        _apply_random(shard, model, rng)
        if step in (20, 40):
            _run_optimizer(shard)  # sealed, indexed segments and a checkpoint
    return shard


@pytest.mark.parametrize("seed", [1, 2])
def test_snapshot_restores_the_same_shard_which_then_catches_up(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    live = _shard_with_history(tmp_path / "live", rng)
    assert live.sealed, "the snapshot must include sealed segments"
    info = create_snapshot(live, tmp_path / "snapshot")
    assert info.seq_no == live.last_seq
    restore_snapshot(tmp_path / "snapshot", tmp_path / "restored")
    restored = LocalShard.open(tmp_path / "restored", _config(indexing_threshold=1))
    assert restored.content_digest() == live.content_digest()
    assert (restored.last_seq, restored.last_term) == (live.last_seq, live.last_term)
    # The live shard moves on; the restored copy catches up from its WAL delta.
    model: Model = {}
    for _ in range(15):
        _apply_random(live, model, rng)
    delta = live.operations_after(restored.last_seq, limit=1_000)
    assert delta is not None
    previous_term, records = delta
    for item in records:
        outcome, _seq, _term = restored.apply_replicated(
            encode_operation(item.operation, seq_no=item.seq_no, term=item.term), previous_term=previous_term)
        assert outcome is ReplicaApply.APPLIED
        previous_term = item.term
    assert restored.content_digest() == live.content_digest()
    live.close()
    restored.close()


def test_a_damaged_snapshot_is_refused(tmp_path: Path) -> None:
    live = _shard_with_history(tmp_path / "live", random.Random(3))
    create_snapshot(live, tmp_path / "snapshot")
    live.close()
    victim = next(path for path in sorted((tmp_path / "snapshot" / "segments").rglob("*")) if path.is_file())
    victim.unlink()
    victim.write_bytes(b"not the segment")  # a new file: the live shard's hard link is untouched
    with pytest.raises(DataCorruption, match="missing or damaged"):
        restore_snapshot(tmp_path / "snapshot", tmp_path / "restored")
    assert not (tmp_path / "restored").exists()
    assert not list(tmp_path.glob(".restoring-*"))
    # The live shard still opens intact.
    reopened = LocalShard.open(tmp_path / "live", _config(indexing_threshold=1))
    assert reopened.content_digest().points > 0
    reopened.close()

"""Background optimization of shards: seal, index, vacuum, merge, checkpoint.

Every task builds a new sealed segment from rows *live at the checkpoint seq
S* of its sources, off the request path, writes it to disk, then swaps it in
under the shard's locks, carrying over the tombstones that arrived during the
build, and writes a new checkpoint. Persisted state therefore always equals
the shard's state at S, and the WAL above S replays on top of it.

- every task freezes the appendable segment (writes go to a fresh one) at
  S = last seq and folds its rows into the segment it builds; the checkpoint
  moves to S and the WAL before S is dropped. "seal" is that alone.
- index: a sealed segment without HNSW that has grown past the threshold
  (e.g. after ``indexing_threshold`` was raised from 0) is rebuilt with one.
- extend: where a seal is due and an indexed segment has room (under
  ``max_segment_size``), the appendable rows are *added to a copy of its
  graph* instead of becoming a segment of their own. FAISS inserts into an
  HNSW graph one row at a time anyway, so the graph is the one a build over
  all rows in that order gives, and no row is inserted twice: ingestion with
  indexing on keeps one growing graph, built as the data arrives, instead of
  small segments that merges rebuild from scratch. The old rows keep their
  offsets, dead ones included (tombstoned; a vacuum drops them later).
- vacuum: a sealed segment whose deleted share passes ``deleted_threshold``
  is rebuilt without its dead rows, so disk and memory are really freed.
- merge: when there are more sealed segments than the target, the two
  smallest are merged (fewer HNSW graphs to search per query).
- checkpoint: with an empty appendable segment, tombstones are persisted and
  the WAL truncated.

One task at a time per shard (``optimizer_mutex``).
"""

from __future__ import annotations

import enum
import logging
import os
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, final

import numpy as np

from qcluster.engine import vector_index
from qcluster.engine.checkpoint import Checkpoint, write_checkpoint
from qcluster.engine.segment import NOT_DELETED, Segment
from qcluster.engine.segment_files import map_on_disk_vectors, write_segment
from qcluster.engine.shard import SEGMENTS_DIR, LocalShard
from qcluster.types import PayloadFieldSchema

__all__ = ["Optimizer", "Task", "TaskKind", "plan_task", "run_task"]

logger = logging.getLogger(__name__)

_KILOBYTE: Final = 1024
# Sealed segments kept before merging when default_segment_number is 0 (auto).
_AUTO_SEGMENT_TARGET: Final = 4
# Segment size cap for merges when max_segment_size is unset (kilobytes of vectors).
_DEFAULT_MAX_SEGMENT_KB: Final = 400_000
# Exit code when an invariant breaks in the optimizer thread (EX_SOFTWARE).
_EXIT_BUG: Final = 70
# Pause after a failed task before the shard is tried again.
_ERROR_BACKOFF_S: Final = 5.0
# WAL bytes since the checkpoint that force a seal even below indexing_threshold.
_WAL_FLUSH_FACTOR: Final = 4


class TaskKind(enum.StrEnum):
    SEAL = "seal"
    INDEX = "index"
    EXTEND = "extend"
    VACUUM = "vacuum"
    MERGE = "merge"
    CHECKPOINT = "checkpoint"


@dataclass(frozen=True, slots=True)
class Task:
    kind: TaskKind
    segment_ids: tuple[int, ...] = ()


def _should_index(shard: LocalShard, name: str, rows: int) -> bool:
    """Whether vector ``name`` of a segment with ``rows`` live rows gets an HNSW graph.

    Never when indexing is disabled (``indexing_threshold`` 0) or ``m`` is 0
    (Qdrant's "no graph"); else when the rows pass the vector's full-scan
    threshold, below which the planner scans exactly anyway.
    """
    hnsw = shard.config.hnsw_for(name)
    if shard.config.optimizers_config.indexing_threshold <= 0 or hnsw.m == 0:
        return False
    return rows * shard.config.vectors[name].size * 4 >= hnsw.full_scan_threshold * _KILOBYTE


def plan_task(shard: LocalShard) -> Task | None:
    """The most useful task for this shard now, or None. Pure read of shard state."""
    optimizers = shard.config.optimizers_config
    with shard.state_lock.read():
        # Index before seal: an index task folds the appendable segment into the
        # segment it builds, so a bulk load indexed at the end becomes ONE graph.
        index_task = _plan_index(shard)
        if index_task is not None:
            return index_task
        appendable_kb = shard.appendable.vector_bytes() / _KILOBYTE
        wal_limit = _WAL_FLUSH_FACTOR * shard.config.wal_config.wal_capacity_mb * 1024 * 1024
        if shard.appendable.count and (
            (0 < optimizers.indexing_threshold <= appendable_kb) or shard.wal.size_bytes() > wal_limit
        ):
            return _plan_extend(shard) or Task(TaskKind.SEAL)
        for segment in shard.sealed:
            dead = segment.count - segment.live_count()
            is_large = segment.count >= optimizers.vacuum_min_vector_number
            if is_large and dead > optimizers.deleted_threshold * segment.count:
                return Task(TaskKind.VACUUM, (segment.segment_id,))
        merge = _plan_merge(shard)
        if merge is not None:
            return merge
        if shard.appendable.count == 0 and shard.last_seq > shard.checkpoint_seq:
            return Task(TaskKind.CHECKPOINT)
    return None


def _plan_index(shard: LocalShard) -> Task | None:
    """Index a plain segment that has grown past the threshold — together with
    every other plain segment that fits under ``max_segment_size``, so a bulk
    load sealed into several plain segments gets one graph, built once."""
    plain = [segment for segment in shard.sealed if not segment.hnsw]
    due = [
        segment
        for segment in plain
        if any(_should_index(shard, name, segment.live_count()) for name in shard.config.vectors)
    ]
    if not due:
        return None
    budget_kb = shard.config.optimizers_config.max_segment_size or _DEFAULT_MAX_SEGMENT_KB
    chosen = [due[0]]
    used_kb = due[0].live_vector_bytes() / _KILOBYTE
    for segment in plain:
        size_kb = segment.live_vector_bytes() / _KILOBYTE
        if segment is not due[0] and used_kb + size_kb <= budget_kb:
            chosen.append(segment)
            used_kb += size_kb
    return Task(TaskKind.INDEX, tuple(segment.segment_id for segment in chosen))


def _plan_extend(shard: LocalShard) -> Task | None:
    """The largest indexed segment the appendable rows can be added to: every
    vector has a graph, none is on disk (the graph is copied in RAM), few of
    its rows are dead (else a vacuum rebuilds it), and both together stay
    under ``max_segment_size``."""
    optimizers = shard.config.optimizers_config
    if optimizers.indexing_threshold <= 0:
        return None
    if any(params.on_disk or shard.config.hnsw_for(name).m == 0 for name, params in shard.config.vectors.items()):
        return None
    budget_kb = optimizers.max_segment_size or _DEFAULT_MAX_SEGMENT_KB
    appendable_kb = shard.appendable.vector_bytes() / _KILOBYTE
    fitting = [
        segment
        for segment in shard.sealed
        if set(segment.hnsw) == set(shard.config.vectors)
        and segment.count - segment.live_count() <= optimizers.deleted_threshold * segment.count
        and segment.vector_bytes() / _KILOBYTE + appendable_kb <= budget_kb
    ]
    if not fitting:
        return None
    base = max(fitting, key=lambda segment: segment.count)
    return Task(TaskKind.EXTEND, (base.segment_id,))


def _plan_merge(shard: LocalShard) -> Task | None:
    optimizers = shard.config.optimizers_config
    target = optimizers.default_segment_number or _AUTO_SEGMENT_TARGET
    if len(shard.sealed) <= target:
        return None
    max_kb = optimizers.max_segment_size or _DEFAULT_MAX_SEGMENT_KB
    smallest = sorted(shard.sealed, key=lambda segment: segment.vector_bytes())[:2]
    if sum(segment.vector_bytes() for segment in smallest) / _KILOBYTE > max_kb:
        return None
    return Task(TaskKind.MERGE, tuple(segment.segment_id for segment in smallest))


def run_task(shard: LocalShard, task: Task) -> None:
    """Run one task. Rebuild tasks also seal the appendable segment, so the
    checkpoint moves to the current seq and every delete so far is freed."""
    with shard.optimizer_mutex:
        match task.kind:
            case TaskKind.SEAL | TaskKind.INDEX | TaskKind.VACUUM | TaskKind.MERGE:
                _rebuild(shard, task.segment_ids, extend=False)
            case TaskKind.EXTEND:
                _rebuild(shard, task.segment_ids, extend=True)
            case TaskKind.CHECKPOINT:
                _checkpoint_only(shard)


def _rebuild(shard: LocalShard, segment_ids: tuple[int, ...], *, extend: bool) -> None:
    """``extend``: ``segment_ids`` is one indexed segment whose graph the
    appendable rows are added to (see the module docstring)."""
    with shard.write_mutex, shard.state_lock.write():
        sources = [segment for segment in shard.sealed if segment.segment_id in segment_ids]
        if len(sources) != len(segment_ids):
            return  # the plan went stale
        if extend and not shard.appendable.count:
            return  # nothing to add
        # The appendable segment joins the rebuilt one (rather than becoming a
        # segment of its own), so a merge always lowers the segment count.
        frozen = shard.appendable
        if frozen.count:
            frozen.is_appendable = False
            shard.sealed.append(frozen)
            shard.appendable = shard.new_appendable()
            sources.append(frozen)
        groups = [sources] if sources else []
        seq_no = shard.last_seq
        wal_index = shard.wal.next_index
        schemas = dict(shard.field_schemas)
    if groups:
        _replace(shard, groups, seq_no=seq_no, wal_index=wal_index, schemas=schemas, extend=extend)


def _build(
    shard: LocalShard,
    sources: list[Segment],
    *,
    seq_no: int,
    segment_id: int,
    schemas: dict[str, PayloadFieldSchema],
    extend: bool,
) -> tuple[Segment | None, list[np.ndarray]]:
    """A sealed segment of the sources' rows live at ``seq_no``, plus each source's exported offsets.

    ``extend``: ``sources[0]`` is an indexed segment; every one of its rows is
    kept at its offset (those dead at ``seq_no`` as tombstones) and the other
    sources' rows are added to a copy of its graphs.
    """
    with shard.state_lock.read():
        parts = [source.export_rows(source.rows_live_at(seq_no)) for source in sources[extend:]]
        if extend:
            base = sources[0]
            kept = base.export_rows(range(base.count))
            kept["deleted_seq"] = np.where(kept["deleted_seq"] <= seq_no, kept["deleted_seq"], NOT_DELETED)
            parts.insert(0, kept)
    exported = [part["source_offsets"] for part in parts]
    if sum(len(part["ids"]) for part in parts) == 0:
        return None, exported
    segment = Segment(segment_id=segment_id, config=shard.config, field_schemas={}, is_appendable=False)
    rows = sum(len(part["ids"]) for part in parts)
    vectors = {}
    for name, params in shard.config.vectors.items():
        matrices = [part["vectors"][name][0] for part in parts]
        present = np.concatenate([part["vectors"][name][1] for part in parts])
        if extend:
            index = vector_index.extend_hnsw(sources[0].hnsw[name], parts=matrices[1:],
                                             should_stop=shard.is_closing.is_set)
            segment.hnsw[name] = index
            vectors[name] = (vector_index.stored_vectors(index), present)
        elif _should_index(shard, name, rows):
            hnsw = shard.config.hnsw_for(name)
            index = vector_index.build_hnsw(
                distance=params.distance,
                parts=matrices,
                m=hnsw.m,
                ef_construct=hnsw.ef_construct,
                should_stop=shard.is_closing.is_set,
            )
            segment.hnsw[name] = index
            # The index holds the vectors: they are kept once, there.
            vectors[name] = (vector_index.stored_vectors(index), present)
        else:
            # A copy, never a view: a view would keep a source's memory alive.
            vectors[name] = (np.concatenate(matrices), present)
    segment.assign_columns(
        ids=[point_id for part in parts for point_id in part["ids"]],
        payloads=[payload for part in parts for payload in part["payloads"]],
        versions=np.concatenate([part["versions"] for part in parts]),
        deleted_seq=np.concatenate([part["deleted_seq"] for part in parts]),
        vectors=vectors,
    )
    for key, schema in schemas.items():
        segment.ensure_field_index(key, schema)
    return segment, exported


def _replace(
    shard: LocalShard,
    groups: list[list[Segment]],
    *,
    seq_no: int,
    wal_index: int,
    schemas: dict[str, PayloadFieldSchema],
    extend: bool,
) -> None:
    """Build one segment per group of sources, swap them in, checkpoint at ``seq_no``."""
    started = time.monotonic()
    built: list[tuple[list[Segment], Segment | None, list[np.ndarray]]] = []
    for sources in groups:
        with shard.state_lock.write():
            segment_id = shard.next_segment_id
            shard.next_segment_id += 1
        segment, exported = _build(shard, sources, seq_no=seq_no, segment_id=segment_id, schemas=schemas,
                                   extend=extend)
        if segment is not None:
            directory = shard.directory / SEGMENTS_DIR / str(segment_id)
            write_segment(segment, directory)
            map_on_disk_vectors(segment, directory)
        built.append((sources, segment, exported))
    with shard.write_mutex, shard.state_lock.write():
        for sources, segment, exported in built:
            position = shard.sealed.index(sources[0])
            remaining = [item for item in shard.sealed if item not in sources]
            if segment is not None:
                _carry_tombstones(segment, sources, exported)
                _sync_field_indexes(segment, shard.field_schemas)
                remaining.insert(position, segment)
            shard.sealed = remaining
        _write_checkpoint(shard, seq_no=seq_no, wal_index=wal_index, schemas=schemas)
        if shard.wal.next_index == wal_index:
            shard.wal.rotate()  # nothing was logged during the build: the old file can go
        shard.wal.truncate_before(wal_index)
    for sources, segment, _exported in built:
        for source in sources:
            shutil.rmtree(shard.directory / SEGMENTS_DIR / str(source.segment_id), ignore_errors=True)
        logger.info(
            "shard %s: segment %s (%d rows) replaces %s",
            shard.directory,
            None if segment is None else segment.segment_id,
            0 if segment is None else segment.count,
            [source.segment_id for source in sources],
        )
    logger.info("shard %s: optimization done in %.2fs, checkpoint seq %d", shard.directory, time.monotonic() - started, seq_no)


def _carry_tombstones(built: Segment, sources: list[Segment], exported: list[np.ndarray]) -> None:
    """Apply to ``built`` the deletes its sources received during the build."""
    start = 0
    for source, offsets in zip(sources, exported, strict=True):
        now = source.deleted_seq[offsets]
        then = built.deleted_seq[start : start + offsets.shape[0]]
        for row in np.flatnonzero(now != then):
            assert then[row] == NOT_DELETED, "a tombstone never changes once set"
            built.tombstone(start + int(row), int(now[row]))
        start += offsets.shape[0]
    assert start == built.count


def _sync_field_indexes(built: Segment, current: dict[str, PayloadFieldSchema]) -> None:
    for key in list(built.field_indexes):
        if key not in current:
            built.drop_field_index(key)
    for key, schema in current.items():
        index = built.field_indexes.get(key)
        if index is None or index.schema != schema:
            built.ensure_field_index(key, schema)


def _write_checkpoint(
    shard: LocalShard, *, seq_no: int, wal_index: int, schemas: dict[str, PayloadFieldSchema]
) -> None:
    """Persist sealed segments and their tombstones as of ``seq_no``. Caller holds the locks."""
    tombstones = {}
    for segment in shard.sealed:
        column = segment.deleted_seq[: segment.count]
        tombstones[segment.segment_id] = np.where(column <= seq_no, column, NOT_DELETED)
    write_checkpoint(
        shard.directory,
        Checkpoint(
            seq_no=seq_no,
            wal_index=wal_index,
            segment_ids=tuple(segment.segment_id for segment in shard.sealed),
            next_segment_id=shard.next_segment_id,
            field_schemas=schemas,
            tombstones=tombstones,
            term=shard.term_at(seq_no),
        ),
    )
    shard.forget_terms_before(seq_no)
    shard.checkpoint_seq = seq_no
    shard.checkpoint_wal_index = wal_index
    shard.checkpoint_schemas = dict(schemas)


def _checkpoint_only(shard: LocalShard) -> None:
    with shard.write_mutex, shard.state_lock.write():
        if shard.appendable.count != 0 or shard.last_seq == shard.checkpoint_seq:
            return
        wal_index = shard.wal.next_index
        _write_checkpoint(shard, seq_no=shard.last_seq, wal_index=wal_index, schemas=dict(shard.field_schemas))
        shard.wal.rotate()
        shard.wal.truncate_before(wal_index)


@final
class Optimizer:
    """One background thread that keeps every shard optimized, one task at a time.

    The loop runs until ``stop``; it sleeps ``poll_interval_s`` when no shard
    needs work, or until ``wake`` is called after a write.
    """

    def __init__(self, shards: Callable[[], list[LocalShard]], *, poll_interval_s: float) -> None:
        assert poll_interval_s > 0
        self._shards = shards
        self._poll_interval_s = poll_interval_s
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="qcluster-optimizer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop(self, *, timeout_s: float) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        while not self._stopped.is_set():  # runs until stop(): a service loop
            did_work = False
            for shard in self._shards():
                if self._stopped.is_set():
                    return
                did_work |= self._step(shard)
            if not did_work:
                self._wake.wait(self._poll_interval_s)
                self._wake.clear()

    def _step(self, shard: LocalShard) -> bool:
        if shard.is_closed:
            return False
        task = plan_task(shard)
        if task is None:
            return False
        try:
            run_task(shard, task)
        except vector_index.BuildCancelled:
            logger.info("optimization %s of shard %s cancelled", task.kind, shard.directory)
            return False
        except AssertionError:
            # A broken invariant: stop the process; a restart recovers from disk.
            logger.critical("optimizer invariant broken; exiting", exc_info=True)
            os._exit(_EXIT_BUG)
        except Exception:  # noqa: BLE001 - disk full, FAISS errors: report, back off, retry
            logger.exception("optimization %s of shard %s failed; will retry", task.kind, shard.directory)
            shard.optimizer_error = True
            self._stopped.wait(_ERROR_BACKOFF_S)
            return False
        shard.optimizer_error = False
        return True

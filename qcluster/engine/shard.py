"""LocalShard: one shard on one disk — WAL, segments, recovery, apply, search.

Write path (``apply``): under the write mutex, validate the operation against
the configuration and the current state, append it to the WAL with its
seq_no, fsync, then apply it to the segments under the state lock. Nothing is
written for an operation that fails validation, and the caller is answered
only after the fsync.

Read path: under the state lock's read side, so a reader sees either all or
none of an operation. FAISS releases the GIL, so readers run in parallel.

Recovery (``open``): load the checkpoint's sealed segments and tombstones,
then replay the WAL records above the checkpoint seq into a new appendable
segment. Sealed segments are never replayed.

Threading: every public method is thread-safe. Lock order: write mutex, then
state lock. The optimizer (``qcluster.engine.optimizer``) takes the same locks.
"""

from __future__ import annotations

import bisect
import enum
import logging
import math
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, final

import numpy as np

from qcluster.engine import checkpoint as checkpoint_io
from qcluster.engine import payload_ops, reads
from qcluster.engine._rwlock import RwLock
from qcluster.engine.consistency import ContentDigest, content_digest
from qcluster.engine.filter_cache import parsed_filter
from qcluster.engine.filters import validate_key
from qcluster.engine.payload_index import evaluate_filter
from qcluster.engine.segment import Segment
from qcluster.engine.segment_files import read_segment
from qcluster.engine.validation import prepare_points
from qcluster.engine.wal import Wal
from qcluster.errors import DataCorruption, NotFound, ShardUnavailable
from qcluster.operations import (
    ClearPayload,
    CreateFieldIndex,
    DeleteFieldIndex,
    DeletePayload,
    DeletePoints,
    DeleteVectors,
    LoggedOperation,
    Operation,
    OverwritePayload,
    PointsBatch,
    PointSelector,
    SetPayload,
    UpdateVectors,
    UpsertPoints,
    decode_record,
    encode_operation,
)
from qcluster.types import (
    CollectionConfig,
    OrderBy,
    PayloadFieldSchema,
    PayloadSelector,
    PointId,
    QueryRequest,
    Record,
    ScoredColumns,
    ScoredPoint,
)

__all__ = ["LocalShard", "ShardStats"]

logger = logging.getLogger(__name__)

SEGMENTS_DIR: Final = "segments"
WAL_DIR: Final = "wal"


Row = tuple[PointId, dict[str, Any] | None, dict[str, np.ndarray]]


@final
class ReplicaApply(enum.Enum):
    """What ``LocalShard.apply_replicated`` did with a primary's record."""

    APPLIED = "applied"
    DUPLICATE = "duplicate"
    GAP = "gap"
    DIVERGED = "diverged"


class LocalShard:
    """A shard's durable state and the operations on it."""

    def __init__(self, directory: Path, config: CollectionConfig) -> None:
        """Open (or create) the shard at ``directory`` and recover it; see ``open``."""
        self.directory = directory
        self.config = config
        self.write_mutex = threading.Lock()
        self.state_lock = RwLock()
        # Held by the optimizer for a whole task: one task at a time per shard.
        self.optimizer_mutex = threading.Lock()
        self.optimizer_error = False
        self.is_closed = False
        self.is_failed = False
        # Set first thing by close(): a running index build stops at its next chunk.
        self.is_closing = threading.Event()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / SEGMENTS_DIR).mkdir(exist_ok=True)
        stored = checkpoint_io.read_checkpoint(directory)
        self.field_schemas: dict[str, PayloadFieldSchema] = dict(stored.field_schemas) if stored else {}
        # Field schemas as of checkpoint_seq (the live ones may be newer).
        self.checkpoint_schemas = dict(self.field_schemas)
        self.checkpoint_seq = stored.seq_no if stored else 0
        # (first seq_no, primary term) of every term seen since the checkpoint,
        # oldest first; the term only changes when a new primary takes over.
        self._term_starts: list[tuple[int, int]] = [(self.checkpoint_seq, stored.term if stored else 0)]
        self.checkpoint_wal_index = stored.wal_index if stored else 1
        self.next_segment_id = stored.next_segment_id if stored else 1
        # Oldest first; every one is sealed (not appendable).
        self.sealed: list[Segment] = self._load_segments(stored)
        self.appendable = self.new_appendable()
        self.wal = Wal(directory / WAL_DIR, file_size_max_bytes=config.wal_config.wal_capacity_mb * 1024 * 1024)
        self.last_seq = self.checkpoint_seq
        self._replay()

    @classmethod
    def open(cls, directory: Path, config: CollectionConfig) -> LocalShard:
        return cls(directory, config)

    # ---------------------------------------------------------------- recovery

    def new_appendable(self) -> Segment:
        segment = Segment(
            segment_id=self.next_segment_id, config=self.config, field_schemas=self.field_schemas, is_appendable=True
        )
        self.next_segment_id += 1
        return segment

    def _load_segments(self, stored: checkpoint_io.Checkpoint | None) -> list[Segment]:
        root = self.directory / SEGMENTS_DIR
        wanted = set(stored.segment_ids) if stored else set()
        for path in root.iterdir():
            if not path.name.isdigit() or int(path.name) not in wanted:
                logger.info("removing unreferenced segment directory %s", path)
                shutil.rmtree(path)
        segments = []
        for segment_id in stored.segment_ids if stored else ():
            segments.append(read_segment(root / str(segment_id), config=self.config,
                                         field_schemas=self.field_schemas,
                                         deleted_seq=stored.tombstones[segment_id].copy()))
        return segments

    def _replay(self) -> None:
        replayed = 0
        for data in self.wal.read_all():
            record = decode_record(data)
            if record.seq_no <= self.last_seq:
                continue
            if record.seq_no != self.last_seq + 1:
                raise DataCorruption(f"WAL jumps from seq {self.last_seq} to {record.seq_no}")
            self._apply_locked(record.operation, record.seq_no)
            self._note_term(record.seq_no, record.term)
            self.last_seq = record.seq_no
            replayed += 1
        logger.info(
            "shard %s recovered: checkpoint seq %d, %d WAL records replayed, %d sealed segments",
            self.directory, self.checkpoint_seq, replayed, len(self.sealed),
        )

    # ------------------------------------------------------------------ terms

    @property
    def last_term(self) -> int:
        """The primary term of the record at ``last_seq``."""
        return self._term_starts[-1][1]

    def term_at(self, seq_no: int) -> int:
        """The primary term of the record at ``seq_no`` (checkpoint_seq <= seq_no <= last_seq)."""
        assert self.checkpoint_seq <= seq_no <= self.last_seq, (self.checkpoint_seq, seq_no, self.last_seq)
        position = bisect.bisect_right(self._term_starts, (seq_no, math.inf)) - 1
        return self._term_starts[position][1]

    def forget_terms_before(self, seq_no: int) -> None:
        """Drop term history older than ``seq_no`` (a new checkpoint)."""
        position = bisect.bisect_right(self._term_starts, (seq_no, math.inf)) - 1
        self._term_starts = [(seq_no, self._term_starts[position][1]), *self._term_starts[position + 1:]]

    def _note_term(self, seq_no: int, term: int) -> None:
        if term == self.last_term:
            return
        if term < self.last_term:
            raise DataCorruption(f"shard {self.directory}: seq {seq_no} has primary term {term}, "
                                 f"older than the term {self.last_term} before it")
        self._term_starts.append((seq_no, term))

    def close(self) -> None:
        """Stop accepting work and close the WAL. A running optimization is cancelled."""
        self.is_closing.set()
        with self.optimizer_mutex, self.write_mutex, self.state_lock.write():
            self.is_closed = True
            self.wal.close()

    # ------------------------------------------------------------------ writes

    def apply(self, operation: Operation, *, seq_no: int | None = None) -> int:
        """Validate, log durably, then apply. Returns the operation's seq_no.

        ``seq_no`` is given by a primary to its replicas; a shard that leads
        its own sequence passes None. Raises InvalidRequest / NotFound before
        writing anything.
        """
        with self.write_mutex:
            return self._apply_under_mutex(operation, seq_no, self.last_term)[0]

    def apply_logged(self, operation: Operation, *, term: int) -> tuple[int, bytes, int]:
        """``apply`` on a primary of ``term``: returns (seq_no, WAL record, term of
        the record before it). The record (the operation as validated, with its
        seq_no and term) is what the replicas apply."""
        with self.write_mutex:
            previous_term = self.last_term
            seq_no, record = self._apply_under_mutex(operation, None, term)
            return seq_no, record, previous_term

    def apply_replicated(self, data: bytes, *, previous_term: int) -> tuple[ReplicaApply, int, int]:
        """Apply a primary's WAL record on this replica, exactly in sequence.

        ``previous_term`` is the term of the primary's record just before it
        (Raft's prevLogTerm). Returns (outcome, last_seq, last_term):

        - APPLIED: it was the next record and the history before it matches;
        - DUPLICATE: it is this replica's last record already (a retry);
        - GAP: records before it are missing: send those first;
        - DIVERGED: this replica's history differs from the primary's at or
          before it (records from a deposed primary that the new one never had):
          it must be rebuilt from a snapshot.

        By induction every accepted record extends a history identical to the
        primary's. Raises like ``apply`` when the operation does not validate here.
        """
        record = decode_record(data)
        with self.write_mutex:
            if record.seq_no == self.last_seq and record.term == self.last_term and record.seq_no > 0:
                return ReplicaApply.DUPLICATE, self.last_seq, self.last_term
            if record.seq_no > self.last_seq + 1:
                return ReplicaApply.GAP, self.last_seq, self.last_term
            if record.seq_no <= self.last_seq or previous_term != self.last_term:
                return ReplicaApply.DIVERGED, self.last_seq, self.last_term
            self._apply_under_mutex(record.operation, record.seq_no, record.term, is_prepared=True)
            return ReplicaApply.APPLIED, self.last_seq, self.last_term

    def _apply_under_mutex(self, operation: Operation, seq_no: int | None, term: int, *,
                           is_prepared: bool = False) -> tuple[int, bytes]:
        """``is_prepared``: ``operation`` is a primary's logged record, its
        vectors already stored as they must be (normalised): they are not
        transformed again, which could change their last bits and make this
        replica differ from the primary. Its checks against state still run."""
        assert self.write_mutex.locked()
        if self.is_closed or self.is_failed:
            state = "failed (see the log)" if self.is_failed else "closed"
            raise ShardUnavailable(f"shard {self.directory} is {state}")
        if term < self.last_term:
            # A deposed primary whose view of the cluster lags: the shard
            # already holds records of its successor's term. Nothing is logged.
            raise ShardUnavailable(f"shard {self.directory}: primary term {term} is older than the term "
                                   f"{self.last_term} this shard already holds: this node is no longer its "
                                   f"primary; nothing was written, retry")
        with self.state_lock.read():
            operation = self._check_prepared(operation) if is_prepared else self._prepare(operation)
        assigned = self.last_seq + 1 if seq_no is None else seq_no
        assert assigned > self.last_seq, "seq numbers must increase"
        record = encode_operation(operation, seq_no=assigned, term=term)
        self.wal.append(record)
        self.wal.sync()
        with self.state_lock.write():
            try:
                self._apply_locked(operation, assigned)
            except BaseException:
                # Validation lets through only operations that apply cleanly,
                # so this is a bug; the record is durable but the state is not
                # known to hold it. Refuse further writes rather than reuse the
                # seq or diverge; a restart replays the record.
                self.is_failed = True
                raise
            self._note_term(assigned, term)
            self.last_seq = assigned
        return assigned, record

    def _prepare(self, operation: Operation) -> Operation:
        """Validation against config and state; returns the operation as logged."""
        match operation:
            case UpsertPoints(points=points):
                return UpsertPoints(points=prepare_points(points, config=self.config, is_upsert=True))
            case UpdateVectors(points=points):
                self._require_points(points.ids)
                return UpdateVectors(points=prepare_points(points, config=self.config, is_upsert=False))
            case SetPayload(selector=selector, key=key) if key is not None:
                validate_key(key, path="key")
                if selector.ids is not None:
                    self._require_points(selector.ids)
                return operation
            case DeletePayload(selector=selector, keys=keys):
                for position, key in enumerate(keys):
                    validate_key(key, path=f"keys[{position}]")
                if selector.ids is not None:
                    self._require_points(selector.ids)
                return operation
            case SetPayload(selector=selector) | OverwritePayload(selector=selector) | ClearPayload(
                selector=selector
            ):
                if selector.ids is not None:
                    self._require_points(selector.ids)
                return operation
            case DeleteVectors(selector=selector, names=names):
                for name in names:
                    self.config.vector_params(name, path="vector")
                if selector.ids is not None:
                    self._require_points(selector.ids)
                return operation
            case CreateFieldIndex(field_name=field_name):
                validate_key(field_name, path="field_name")
                return operation
            case DeletePoints() | DeleteFieldIndex():
                return operation

    def _check_prepared(self, operation: Operation) -> Operation:
        match operation:
            case UpsertPoints():
                return operation
            case UpdateVectors(points=points):
                self._require_points(points.ids)
                return operation
            case _:
                return self._prepare(operation)

    def _require_points(self, ids: tuple[PointId, ...]) -> None:
        for point_id in ids:
            if self.locate(point_id) is None:
                raise NotFound(f"No point with id {point_id} found")

    def _apply_locked(self, operation: Operation, seq_no: int) -> None:
        match operation:
            case UpsertPoints(points=points):
                self._upsert(points, seq_no)
            case DeletePoints(selector=selector):
                for segment, offset in self.select(selector):
                    segment.tombstone(offset, seq_no)
            case SetPayload(selector=selector, payload=payload, key=key):
                self._rewrite(
                    selector, seq_no, payload=lambda old: payload_ops.set_payload(old, payload, key=key)
                )
            case OverwritePayload(selector=selector, payload=payload):
                self._rewrite(selector, seq_no, payload=lambda old: dict(payload))
            case DeletePayload(selector=selector, keys=keys):
                self._rewrite(selector, seq_no, payload=lambda old: payload_ops.delete_keys(old, keys))
            case ClearPayload(selector=selector):
                self._rewrite(selector, seq_no, payload=lambda old: {})
            case UpdateVectors(points=points):
                self._update_vectors(points, seq_no)
            case DeleteVectors(selector=selector, names=names):
                self._rewrite(
                    selector, seq_no, vectors=lambda old: {k: v for k, v in old.items() if k not in names}
                )
            case CreateFieldIndex(field_name=field_name, schema=schema):
                self.field_schemas[field_name] = schema
                for segment in self.segments():
                    segment.ensure_field_index(field_name, schema)
            case DeleteFieldIndex(field_name=field_name):
                self.field_schemas.pop(field_name, None)
                for segment in self.segments():
                    segment.drop_field_index(field_name)

    def _upsert(self, points: PointsBatch, seq_no: int) -> None:
        for point_id in points.ids:
            found = self.locate(point_id)
            if found is not None:
                found[0].tombstone(found[1], seq_no)
        count = len(points.ids)
        vectors = {}
        for name, matrix in points.vectors.items():
            mask = points.present[name]
            vectors[name] = (matrix, np.ones((count,), dtype=bool) if mask is None else mask)
        self.appendable.append_rows(
            ids=list(points.ids),
            vectors=vectors,
            payloads=list(points.payloads),
            versions=np.full((count,), seq_no, dtype=np.int64),
        )

    def _update_vectors(self, points: PointsBatch, seq_no: int) -> None:
        rows: list[Row] = []
        for row, point_id in enumerate(points.ids):
            found = self.locate(point_id)
            assert found is not None, "validated before logging"
            segment, offset = found
            vectors = segment.row_vectors(offset)
            for name, matrix in points.vectors.items():
                mask = points.present[name]
                if mask is None or mask[row]:
                    vectors[name] = matrix[row]
            rows.append((point_id, segment.payloads[offset], vectors))
            segment.tombstone(offset, seq_no)
        self._append(rows, seq_no)

    def _rewrite(self, selector: PointSelector, seq_no: int, *, payload: Any = None, vectors: Any = None) -> None:
        """Copy-on-write of the selected points with a new payload and/or vectors."""
        rows: list[Row] = []
        for segment, offset in self.select(selector):
            old_vectors = segment.row_vectors(offset)
            new_payload = segment.payloads[offset] if payload is None else payload(segment.payloads[offset])
            new_vectors = old_vectors if vectors is None else vectors(old_vectors)
            rows.append((segment.ids[offset], new_payload, new_vectors))
            segment.tombstone(offset, seq_no)
        self._append(rows, seq_no)

    def _append(self, rows: list[Row], seq_no: int) -> None:
        if not rows:
            return
        count = len(rows)
        vectors = {}
        for name, params in self.config.vectors.items():
            matrix = np.zeros((count, params.size), dtype=np.float32)
            present = np.zeros((count,), dtype=bool)
            for row, (_point_id, _payload, row_vectors) in enumerate(rows):
                value = row_vectors.get(name)
                if value is not None:
                    matrix[row] = value
                    present[row] = True
            vectors[name] = (matrix, present)
        self.appendable.append_rows(
            ids=[point_id for point_id, _payload, _vectors in rows],
            vectors=vectors,
            payloads=[payload for _point_id, payload, _vectors in rows],
            versions=np.full((count,), seq_no, dtype=np.int64),
        )

    # ---------------------------------------------------------------- lookups

    def segments(self) -> list[Segment]:
        """Every segment, oldest first, the appendable one last."""
        return [*self.sealed, self.appendable]

    def locate(self, point_id: PointId) -> tuple[Segment, int] | None:
        """The segment and offset of a point's live row."""
        for segment in reversed(self.segments()):
            offset = segment.offsets.get(point_id)
            if offset is not None:
                return segment, offset
        return None

    def select(self, selector: PointSelector) -> list[tuple[Segment, int]]:
        """Live rows chosen by ids (missing ids skipped) or by filter."""
        if selector.ids is not None:
            found = (self.locate(point_id) for point_id in dict.fromkeys(selector.ids))
            return [item for item in found if item is not None]
        parsed = parsed_filter(selector.filter)
        assert parsed is not None
        chosen = []
        for segment in self.segments():
            mask = segment.live_mask() & evaluate_filter(parsed, segment)
            chosen.extend((segment, int(offset)) for offset in np.flatnonzero(mask))
        return chosen

    # ------------------------------------------------------------------- reads

    def search_batch(self, requests: list[QueryRequest]) -> list[list[ScoredPoint]]:
        with self.state_lock.read():
            return reads.search_batch(self, requests)

    def search_columns(self, request: QueryRequest, queries: np.ndarray) -> ScoredColumns:
        """``reads.search_columns``: plain answers to many rows, no object per hit."""
        with self.state_lock.read():
            return reads.search_columns(self, request, queries)

    def retrieve(
        self, ids: list[PointId], *, with_payload: PayloadSelector, with_vector: bool | tuple[str, ...]
    ) -> list[Record]:
        with self.state_lock.read():
            return reads.retrieve(self, ids, with_payload=with_payload, with_vector=with_vector)

    def scroll(
        self,
        *,
        filter: dict[str, Any] | None,
        limit: int,
        offset: PointId | None,
        order_by: OrderBy | None,
        with_payload: PayloadSelector,
        with_vector: bool | tuple[str, ...],
    ) -> tuple[list[Record], PointId | None]:
        with self.state_lock.read():
            return reads.scroll(
                self,
                filter=filter,
                limit=limit,
                offset=offset,
                order_by=order_by,
                with_payload=with_payload,
                with_vector=with_vector,
            )

    def count(self, *, filter: dict[str, Any] | None) -> int:
        with self.state_lock.read():
            return reads.count(self, filter=filter)

    def content_digest(self) -> ContentDigest:
        """Count and order-independent digest of the live points (see ``engine.consistency``)."""
        with self.state_lock.read():
            return content_digest(self.segments())

    def operations_after(self, seq_no: int, *, limit: int) -> tuple[int, list[LoggedOperation]] | None:
        """What a replica that holds everything up to ``seq_no`` lacks: the term
        of the record at ``seq_no`` and up to ``limit`` logged records after it,
        in order.

        None when the WAL no longer holds ``seq_no + 1`` (it was checkpointed
        and truncated) or ``seq_no`` is older than the checkpoint: that replica
        needs a snapshot instead. Holds the write mutex while reading (the
        optimizer truncates the log only under it too), so nothing is
        half-read or missed.
        """
        assert limit > 0
        with self.write_mutex:
            if seq_no < self.checkpoint_seq or seq_no > self.last_seq:
                return None
            previous_term = self.term_at(seq_no)
            if seq_no == self.last_seq:
                return previous_term, []
            found: list[LoggedOperation] = []
            for data in self.wal.read_all():
                record = decode_record(data)
                if record.seq_no <= seq_no:
                    continue
                if not found and record.seq_no != seq_no + 1:
                    return None  # the next record is gone from the log
                found.append(record)
                if len(found) == limit:
                    break
            return (previous_term, found) if found else None

    def stats(self) -> ShardStats:
        with self.state_lock.read():
            segments = self.segments()
            fields = {}
            for key, schema in self.field_schemas.items():
                covered = 0
                violations = 0
                for segment in segments:
                    index = segment.field_indexes[key]
                    live = segment.live_mask()
                    covered += int(np.count_nonzero(index.has_value_mask(segment.count) & live))
                    violations += int(np.count_nonzero(index.wrong_type_mask(segment.count) & live))
                fields[key] = (schema, covered, violations)
            return ShardStats(
                points_count=sum(segment.live_count() for segment in segments),
                indexed_vectors_count=sum(segment.indexed_count() for segment in segments),
                segments_count=len(self.sealed) + (1 if self.appendable.count else 0),
                fields=fields,
                last_seq=self.last_seq,
            )


@dataclass(frozen=True, slots=True)
class ShardStats:
    points_count: int
    indexed_vectors_count: int
    segments_count: int
    # key -> (schema, live points covered, live points with a wrong-typed value)
    fields: dict[str, tuple[PayloadFieldSchema, int, int]]
    last_seq: int

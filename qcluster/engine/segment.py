"""Segments: the units a shard stores points in.

A segment holds rows at offsets 0..count-1: a point id, its version (the
seq_no of the operation that wrote it), its payload, one row per named vector
(with a presence bit) and a tombstone. Rows are only ever appended; an
updated point gets a new row (in the appendable segment) and its old row is
tombstoned. So vectors, payloads and payload indexes never change in place,
and a sealed segment is immutable apart from its tombstones.

Tombstones record the seq_no of the deleting operation (``NOT_DELETED`` for a
live row). A checkpoint at seq S persists ``deleted_seq <= S`` only, so the
persisted state equals the state at S exactly and the WAL above S replays on
top of it deterministically.

Threading: a segment is guarded by its shard's lock; it has none of its own.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Iterable
from typing import Any, Final, final

import numpy as np

from qcluster.engine import scan_cache
from qcluster.engine.filters import Filter
from qcluster.engine.payload_index import FieldIndex, evaluate_filter
from qcluster.types import CollectionConfig, PayloadFieldSchema, PayloadSchemaType, PointId

__all__ = ["NOT_DELETED", "Segment", "VectorColumn"]

logger = logging.getLogger(__name__)

NOT_DELETED: Final = np.iinfo(np.int64).max
_INITIAL_CAPACITY: Final = 256
# Filter masks kept per segment (a 100 000-row segment: ~100 KB each).
_FILTER_CACHE_ENTRIES: Final = 32
# Tells segments apart in process-wide caches (an id() could be reused).
_UIDS: Final = itertools.count(1)


def _grown(array: np.ndarray, capacity: int) -> np.ndarray:
    """A copy of ``array`` with room for ``capacity`` leading rows."""
    shape = (capacity, *array.shape[1:])
    grown = np.zeros(shape, dtype=array.dtype)
    grown[: array.shape[0]] = array
    return grown


@final
class VectorColumn:
    """The rows of one named vector in one segment."""

    def __init__(self, *, dim: int, matrix: np.ndarray, present: np.ndarray) -> None:
        assert matrix.ndim == 2 and matrix.shape[1] == dim
        assert present.shape[0] == matrix.shape[0]
        self.dim = dim
        self.matrix = matrix  # capacity rows; only the first ``count`` are meaningful
        self.present = present

    @classmethod
    def empty(cls, dim: int) -> VectorColumn:
        return cls(
            dim=dim,
            matrix=np.zeros((_INITIAL_CAPACITY, dim), dtype=np.float32),
            present=np.zeros((_INITIAL_CAPACITY,), dtype=bool),
        )

    def reserve(self, capacity: int) -> None:
        if capacity > self.matrix.shape[0]:
            self.matrix = _grown(self.matrix, capacity)
            self.present = _grown(self.present, capacity)


def _integer_ids(ids: list[PointId]) -> np.ndarray | None:
    """``ids`` as uint64, or None when one of them is a UUID."""
    if not all(type(point_id) is int for point_id in ids):
        return None
    return np.array(ids, dtype=np.uint64) if ids else np.zeros(0, dtype=np.uint64)


@final
class Segment:
    """Rows of points; appendable (RAM, searched exactly) or sealed (files, maybe HNSW)."""

    def __init__(
        self,
        *,
        segment_id: int,
        config: CollectionConfig,
        field_schemas: dict[str, PayloadFieldSchema],
        is_appendable: bool,
    ) -> None:
        self.segment_id = segment_id
        self.uid = next(_UIDS)
        self.config = config
        self.is_appendable = is_appendable
        self.count = 0
        self.ids: list[PointId] = []
        # The ids as uint64 when every id is an integer; sealed segments only
        # (their ids never change), so a search answer gathers ids with numpy.
        self.id_array: np.ndarray | None = None
        # Live rows only: id -> offset.
        self.offsets: dict[PointId, int] = {}
        self.payloads: list[dict[str, Any] | None] = []
        self.versions = np.zeros((_INITIAL_CAPACITY,), dtype=np.int64)
        self.deleted_seq = np.full((_INITIAL_CAPACITY,), NOT_DELETED, dtype=np.int64)
        self.live = np.zeros((_INITIAL_CAPACITY,), dtype=bool)
        self.vectors = {name: VectorColumn.empty(params.size) for name, params in config.vectors.items()}
        self.field_indexes: dict[str, FieldIndex] = {
            key: FieldIndex(key, schema) for key, schema in field_schemas.items()
        }
        # name -> FAISS index over all rows (labels are offsets); sealed only.
        self.hnsw: dict[str, Any] = {}
        # Bumped by every change of rows or tombstones; keys the searchable-mask cache.
        self._mutations = 0
        self._searchable_cache: dict[str, tuple[int, np.ndarray, int]] = {}
        # (vector name, filter) -> (mutations, mask, count); readers share it.
        self._filter_cache: dict[tuple[str, Filter], tuple[int, np.ndarray, int]] = {}
        self._filter_cache_lock = threading.Lock()

    # ----------------------------------------------------------------- writing

    def _reserve(self, capacity: int) -> None:
        if capacity <= self.versions.shape[0]:
            return
        new_capacity = max(capacity, 2 * self.versions.shape[0])
        self.versions = _grown(self.versions, new_capacity)
        grown_deleted = np.full((new_capacity,), NOT_DELETED, dtype=np.int64)
        grown_deleted[: self.count] = self.deleted_seq[: self.count]
        self.deleted_seq = grown_deleted
        self.live = _grown(self.live, new_capacity)
        for column in self.vectors.values():
            column.reserve(new_capacity)

    def append_rows(
        self,
        *,
        ids: list[PointId],
        vectors: dict[str, tuple[np.ndarray, np.ndarray]],
        payloads: list[dict[str, Any] | None],
        versions: np.ndarray,
        deleted_seq: np.ndarray | None = None,
    ) -> None:
        """Append rows. ``vectors[name]`` is (matrix, present mask) for these rows.

        No appended id may be live in this segment already: the shard
        tombstones the old row first.
        """
        added = len(ids)
        assert len(payloads) == added and versions.shape == (added,)
        assert set(vectors) <= set(self.vectors)
        start = self.count
        self._reserve(start + added)
        end = start + added
        for name, column in self.vectors.items():
            if name in vectors:
                matrix, present = vectors[name]
                assert matrix.shape == (added, column.dim)
                column.matrix[start:end] = matrix
                column.present[start:end] = present
            else:
                column.present[start:end] = False
        self.versions[start:end] = versions
        if deleted_seq is None:
            self.deleted_seq[start:end] = NOT_DELETED
        else:
            self.deleted_seq[start:end] = deleted_seq
        self.live[start:end] = self.deleted_seq[start:end] == NOT_DELETED
        for offset, point_id in enumerate(ids, start):
            if self.live[offset]:
                assert point_id not in self.offsets, f"point {point_id} is already live in this segment"
                self.offsets[point_id] = offset
        self.ids.extend(ids)
        self.payloads.extend(payloads)
        for index in self.field_indexes.values():
            violations_before = index.wrong_type_rows
            index.add_many(start, payloads)
            violations = index.wrong_type_rows - violations_before
            if violations:
                # Schema drift is reported, not hidden: the rows stay stored and
                # searchable, but the index does not cover them.
                logger.warning(
                    "payload schema violation: %d of %d new points have a value at %r that is not %s",
                    violations, added, index.key, index.schema.type.value,
                )
        self.count = end
        self._mutations += 1
        assert len(self.ids) == self.count and len(self.payloads) == self.count

    def assign_columns(
        self,
        *,
        ids: list[PointId],
        payloads: list[dict[str, Any] | None],
        versions: np.ndarray,
        vectors: dict[str, tuple[np.ndarray, np.ndarray]],
        deleted_seq: np.ndarray | None = None,
    ) -> None:
        """Take complete columns as they are (no copy), for a sealed segment.

        Used when loading from disk (the matrices may be memory-mapped) and when
        the optimizer builds a segment. Field indexes are built afterwards with
        ``ensure_field_index``.
        """
        assert self.count == 0 and not self.is_appendable
        count = len(ids)
        assert len(payloads) == count and versions.shape == (count,)
        self.ids = ids
        self.id_array = _integer_ids(ids)
        self.payloads = payloads
        self.versions = versions
        if deleted_seq is None:
            deleted_seq = np.full((count,), NOT_DELETED, dtype=np.int64)
        assert deleted_seq.shape == (count,)
        self.deleted_seq = deleted_seq
        self.live = deleted_seq == NOT_DELETED
        for name, column in self.vectors.items():
            if name in vectors:
                column.matrix, column.present = vectors[name]
            else:
                column.matrix = np.zeros((count, column.dim), dtype=np.float32)
                column.present = np.zeros((count,), dtype=bool)
            assert column.matrix.shape == (count, column.dim)
        self.offsets = {point_id: offset for offset, point_id in enumerate(ids) if self.live[offset]}
        assert len(self.offsets) == int(self.live.sum()), "a point is live twice in one segment"
        self.count = count
        self._mutations += 1

    def tombstone(self, offset: int, seq_no: int) -> None:
        assert 0 <= offset < self.count
        assert self.live[offset], "tombstoning a dead row"
        self.deleted_seq[offset] = seq_no
        self.live[offset] = False
        self._mutations += 1
        removed = self.offsets.pop(self.ids[offset])
        assert removed == offset

    # ----------------------------------------------------------------- reading

    def live_mask(self) -> np.ndarray:
        return self.live[: self.count]

    def live_count(self) -> int:
        return len(self.offsets)

    def vector(self, offset: int, name: str) -> np.ndarray | None:
        column = self.vectors[name]
        if not column.present[offset]:
            return None
        return column.matrix[offset]

    def row_vectors(self, offset: int) -> dict[str, np.ndarray]:
        """Every present vector of one row, by name (copies)."""
        result = {}
        for name, column in self.vectors.items():
            if column.present[offset]:
                result[name] = column.matrix[offset].copy()
        return result

    def searchable(self, name: str) -> tuple[np.ndarray, int]:
        """Live rows that carry vector ``name``, and how many there are.

        Cached until the next write to this segment: a sealed segment answers
        every query from the cache; the appendable one recomputes after writes.
        The caller must not modify the returned mask.
        """
        cached = self._searchable_cache.get(name)
        if cached is not None and cached[0] == self._mutations:
            return cached[1], cached[2]
        mask = self.live[: self.count] & self.vectors[name].present[: self.count]
        count = int(np.count_nonzero(mask))
        self._searchable_cache[name] = (self._mutations, mask, count)
        return mask, count

    def searchable_filtered(self, name: str, filter: Filter) -> tuple[np.ndarray, int, bool]:
        """``searchable(name)`` restricted by ``filter``, its count, and whether
        it came from the cache (the filter was seen before at this version).

        Cached per filter until the next write to this segment: a filter that
        repeats across queries (a tenant, a date range) is evaluated once per
        segment version, not once per query. The caller must not modify the mask.
        """
        key = (name, filter)
        with self._filter_cache_lock:
            cached = self._filter_cache.get(key)
        if cached is not None and cached[0] == self._mutations:
            return cached[1], cached[2], True
        mutations = self._mutations
        base, _count = self.searchable(name)
        mask = base & evaluate_filter(filter, self)
        count = int(np.count_nonzero(mask))
        with self._filter_cache_lock:
            if len(self._filter_cache) >= _FILTER_CACHE_ENTRIES:
                self._filter_cache.pop(next(iter(self._filter_cache)))
            self._filter_cache[key] = (mutations, mask, count)
        return mask, count, False

    def scan_candidates(self, name: str, filter: Filter | None, allowed: np.ndarray, *,
                        keep: bool) -> tuple[np.ndarray, np.ndarray]:
        """(offsets, vectors side by side) of the rows ``allowed`` marks (a
        filter's ``searchable_filtered`` mask, or ``searchable``'s without
        one). The vectors are a view when the offsets are 0..n-1; else they
        come from the scan cache, or are gathered and, when ``keep``, kept
        there for the filter's next queries."""
        matrix = self.vectors[name].matrix
        mutations = self._mutations
        if filter is not None:
            cached = scan_cache.cached_rows(self.uid, name, filter, mutations)
            if cached is not None:
                return cached
        offsets = np.flatnonzero(allowed)
        if offsets.shape[0] == 0 or int(offsets[-1]) == offsets.shape[0] - 1:
            return offsets, matrix[: offsets.shape[0]]
        rows = matrix[offsets]
        if keep and filter is not None:
            scan_cache.keep_rows(self.uid, name, filter, mutations, offsets, rows)
        return offsets, rows

    def vector_bytes(self) -> int:
        return sum(self.count * column.dim * 4 for column in self.vectors.values())

    def live_vector_bytes(self) -> int:
        return sum(self.live_count() * column.dim * 4 for column in self.vectors.values())

    def indexed_count(self) -> int:
        """Live rows reachable through an HNSW index (counted once per point)."""
        if not self.hnsw:
            return 0
        return self.live_count()

    # ------------------------------------------------ SegmentView for filtering

    def payload(self, offset: int) -> dict[str, Any] | None:
        return self.payloads[offset]

    def point_id(self, offset: int) -> PointId:
        return self.ids[offset]

    def offset_of(self, point_id: PointId) -> int | None:
        return self.offsets.get(point_id)

    def field_index(self, key: str) -> FieldIndex | None:
        return self.field_indexes.get(key)

    def text_index_keys(self) -> frozenset[str]:
        return frozenset(
            key for key, index in self.field_indexes.items() if index.schema.type == PayloadSchemaType.TEXT
        )

    # ----------------------------------------------------------- field indexes

    def ensure_field_index(self, key: str, schema: PayloadFieldSchema) -> None:
        """(Re)build the index on ``key`` from every row's payload."""
        index = FieldIndex(key, schema)
        index.add_many(0, self.payloads)
        self.field_indexes[key] = index
        self._mutations += 1  # a text index changes what a text match means

    def drop_field_index(self, key: str) -> None:
        self.field_indexes.pop(key, None)
        self._mutations += 1

    # ------------------------------------------------------------ row export

    def rows_live_at(self, seq_no: int) -> np.ndarray:
        """Offsets of rows that were live at ``seq_no`` (they may have died since)."""
        return np.flatnonzero(self.deleted_seq[: self.count] > seq_no)

    def export_rows(self, offsets: Iterable[int]) -> dict[str, Any]:
        """Columns of the given rows, for building another segment from them."""
        chosen = np.fromiter(offsets, dtype=np.int64)
        # Every row (the common case when sealing): views instead of copies.
        # The source is frozen or sealed, so its rows no longer change; the
        # caller copies what it keeps beyond the build.
        is_all = chosen.shape[0] == self.count and (self.count == 0 or int(chosen[-1]) == self.count - 1)
        rows: slice | np.ndarray = slice(0, self.count) if is_all else chosen
        return {
            "ids": self.ids[: self.count] if is_all else [self.ids[offset] for offset in chosen],
            "payloads": self.payloads[: self.count] if is_all else [self.payloads[offset] for offset in chosen],
            "versions": self.versions[rows].copy(),
            "deleted_seq": self.deleted_seq[rows].copy(),
            "vectors": {
                name: (column.matrix[rows], column.present[rows].copy()) for name, column in self.vectors.items()
            },
            "source_offsets": chosen,
        }

"""A collection on one node: its config and its local shards.

Points route to shards through hash slots (``qcluster.sharding``). Writes are
validated against the config once, for all shards, before any shard writes,
so a bad request writes nothing anywhere. Reads fan out to every shard and
merge: top-k by score, scroll pages by id.
"""

from __future__ import annotations

import dataclasses
import datetime
import shutil
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, final

import numpy as np

from qcluster.engine.merge import merge_scored
from qcluster.engine.optimizer import plan_task
from qcluster.engine.shard import LocalShard
from qcluster.engine.validation import prepare_points
from qcluster.engine.wal import fsync_directory
from qcluster.errors import InvalidRequest, NotFound
from qcluster.operations import (
    ClearPayload,
    CreateFieldIndex,
    DeleteFieldIndex,
    DeletePayload,
    DeletePoints,
    DeleteVectors,
    Operation,
    OverwritePayload,
    PointsBatch,
    PointSelector,
    SetPayload,
    UpdateVectors,
    UpsertPoints,
)
from qcluster.sharding import shard_of
from qcluster.storage.interface import CollectionInfo, CollectionStatus, FieldIndexInfo, UpdateResult, UpdateStatus
from qcluster.types import (
    CollectionConfig,
    OrderBy,
    PayloadSelector,
    PointId,
    QueryRequest,
    ReadConsistency,
    Record,
    ScoredColumns,
    ScoredPoint,
    point_id_sort_key,
)

__all__ = ["Collection", "ids_that_must_exist", "merge_scroll_pages", "prepare_operation", "split_operation"]

WithVector = bool | tuple[str, ...]


def _split_batch(points: PointsBatch, shard_number: int) -> dict[int, PointsBatch]:
    """The batch's rows grouped by shard (column-wise, with numpy fancy indexing)."""
    if shard_number == 1:
        return {0: points}
    rows_by_shard: dict[int, list[int]] = defaultdict(list)
    for row, point_id in enumerate(points.ids):
        rows_by_shard[shard_of(point_id, shard_number=shard_number)].append(row)
    parts = {}
    for shard_id, rows in rows_by_shard.items():
        index = np.asarray(rows, dtype=np.int64)
        parts[shard_id] = PointsBatch(
            ids=tuple(points.ids[row] for row in rows),
            vectors={name: matrix[index] for name, matrix in points.vectors.items()},
            present={name: None if mask is None else mask[index] for name, mask in points.present.items()},
            payloads=tuple(points.payloads[row] for row in rows),
        )
    return parts


def _split_selector(selector: PointSelector, shard_number: int) -> dict[int, PointSelector]:
    if selector.ids is None or shard_number == 1:
        return {shard_id: selector for shard_id in range(shard_number)}
    ids_by_shard: dict[int, list[PointId]] = defaultdict(list)
    for point_id in selector.ids:
        ids_by_shard[shard_of(point_id, shard_number=shard_number)].append(point_id)
    return {shard_id: PointSelector(ids=tuple(ids)) for shard_id, ids in ids_by_shard.items()}


@final
class Collection:
    """Thread-safe; every method may block on disk I/O or FAISS (call it off the event loop)."""

    def __init__(self, *, name: str, directory: Path, config: CollectionConfig, created_at: datetime.datetime,
                 distributed: bool = False) -> None:
        """A single-node collection holds every shard. A ``distributed`` one
        (cluster mode) holds the shards whose replicas the cluster state
        places on this node: those whose directories exist, added and
        removed by the node's reconciler (``add_shard`` / ``remove_shard``)."""
        self.name = name
        self.directory = directory
        self.config = config
        self.created_at = created_at
        self.distributed = distributed
        shards_dir = directory / "shards"
        if distributed:
            found = shards_dir.glob("*") if shards_dir.exists() else ()
            shard_ids = sorted(int(path.name) for path in found if path.is_dir() and path.name.isdigit())
        else:
            shard_ids = list(range(config.shard_number))
        # Shard id -> shard. Replaced as a whole (copy on write), so a reader
        # iterating it never sees it change.
        self.shards: dict[int, LocalShard] = {
            shard_id: LocalShard.open(shards_dir / str(shard_id), config) for shard_id in shard_ids
        }
        self._update_lock = threading.Lock()

    def close(self) -> None:
        for shard in self.shards.values():
            shard.close()

    def set_config(self, config: CollectionConfig) -> None:
        """Adopt a patched config (the caller persisted it)."""
        self.config = config
        for shard in self.shards.values():
            shard.config = config

    # ------------------------------------------------- local shards (cluster mode)

    def shard_dir(self, shard_id: int) -> Path:
        return self.directory / "shards" / str(shard_id)

    def local_shard(self, shard_id: int) -> LocalShard | None:
        return self.shards.get(shard_id)

    def add_shard(self, shard_id: int) -> LocalShard:
        """Open (creating it empty if needed) the local replica of ``shard_id``."""
        with self._update_lock:
            shard = self.shards.get(shard_id)
            if shard is None:
                shard = LocalShard.open(self.shard_dir(shard_id), self.config)
                self.shards = {**self.shards, shard_id: shard}
            return shard

    def remove_shard(self, shard_id: int) -> bool:
        """Close and delete the local replica of ``shard_id``; False if there was none."""
        with self._update_lock:
            shard = self.shards.get(shard_id)
            if shard is None:
                return False
            self.shards = {key: value for key, value in self.shards.items() if key != shard_id}
            shard.close()
            _remove_directory(shard.directory)
            return True

    def replace_shard(self, shard_id: int, install: Callable[[Path], object]) -> LocalShard:
        """Swap the local replica of ``shard_id`` for the one ``install(shard_dir)``
        creates (a snapshot restore into a directory that must not exist).
        Readers that hold the old shard finish on it (or fail: it is closed)."""
        with self._update_lock:
            old = self.shards.get(shard_id)
            if old is not None:
                self.shards = {key: value for key, value in self.shards.items() if key != shard_id}
                old.close()
            shard_dir = self.shard_dir(shard_id)
            if shard_dir.exists():
                _remove_directory(shard_dir)
            install(shard_dir)
            shard = LocalShard.open(shard_dir, self.config)
            self.shards = {**self.shards, shard_id: shard}
            return shard

    # ------------------------------------------------------------------ writes

    def update(self, operation: Operation, *, wait: bool,
               shard_keys: tuple[int | str, ...] | None = None) -> UpdateResult:
        """Validate for every shard, then apply to each. Durable when it returns."""
        self._no_shard_keys(shard_keys)
        operation = self._prepare(operation)
        seq_no = 0
        with self._update_lock:
            for shard_id, part in self._split(operation).items():
                seq_no = max(seq_no, self.shards[shard_id].apply(part))
        return UpdateResult(
            operation_id=seq_no, status=UpdateStatus.COMPLETED if wait else UpdateStatus.ACKNOWLEDGED
        )

    def _prepare(self, operation: Operation) -> Operation:
        if self.config.shard_number == 1:
            return operation  # the shard validates everything itself before logging
        return prepare_operation(operation, config=self.config, retrieve=self.retrieve)

    def _split(self, operation: Operation) -> dict[int, Operation]:
        return split_operation(operation, shard_number=self.config.shard_number)

    # ------------------------------------------------------------------- reads

    def info(self) -> CollectionInfo:
        stats = [shard.stats() for shard in self.shards.values()]
        fields: dict[str, FieldIndexInfo] = {}
        for shard_stats in stats:
            for key, (schema, covered, violations) in shard_stats.fields.items():
                previous = fields.get(key)
                fields[key] = FieldIndexInfo(
                    schema=schema,
                    points=covered + (previous.points if previous else 0),
                    type_violations=violations + (previous.type_violations if previous else 0),
                )
        warnings = tuple(
            f"field {key!r}: {info.type_violations} points have a value that is not {info.schema.type.value}"
            for key, info in fields.items()
            if info.type_violations
        )
        return CollectionInfo(
            status=self._status(),
            points_count=sum(item.points_count for item in stats),
            indexed_vectors_count=sum(item.indexed_vectors_count for item in stats),
            segments_count=sum(item.segments_count for item in stats),
            payload_schema=fields,
            warnings=warnings,
        )

    def _status(self) -> CollectionStatus:
        if any(shard.optimizer_error for shard in self.shards.values()):
            return CollectionStatus.RED
        if any(shard.optimizer_mutex.locked() for shard in self.shards.values()):
            return CollectionStatus.YELLOW
        if any(plan_task(shard) is not None for shard in self.shards.values()):
            return CollectionStatus.GREY
        return CollectionStatus.GREEN

    def reading(self, consistency: ReadConsistency | None, *,
                shard_keys: tuple[int | str, ...] | None = None) -> Collection:
        """Reads under a read ``consistency``: this node holds the only copy
        of each of its shards, so every value reads the same. A single node
        has no custom sharding: no ``shard_keys``."""
        self._no_shard_keys(shard_keys)
        return self

    def create_shard_key(self, key: int | str) -> None:
        self._no_shard_keys((key,))

    def delete_shard_key(self, key: int | str) -> None:
        self._no_shard_keys((key,))

    def _no_shard_keys(self, shard_keys: tuple[int | str, ...] | None) -> None:
        if shard_keys is not None:
            raise InvalidRequest(f"shard_key: collection `{self.name}` does not use custom sharding "
                                 "(custom sharding needs cluster mode)")

    def query(self, request: QueryRequest) -> list[ScoredPoint]:
        return self.query_batch([request])[0]

    def query_batch(self, requests: list[QueryRequest]) -> list[list[ScoredPoint]]:
        for request in requests:
            self.config.vector_params(request.using, path="using")
        per_shard = [shard.search_batch(requests) for shard in self.shards.values()]
        return [
            merge_scored([answers[position] for answers in per_shard],
                         higher_is_better=self.config.vectors[request.using].distance.higher_is_better,
                         offset=request.offset, limit=request.limit)
            for position, request in enumerate(requests)
        ]

    def query_matrix(self, request: QueryRequest, queries: np.ndarray) -> ScoredColumns:
        """``request`` for every row of ``queries`` (its own vector is ignored),
        as columns. A plain answer (no payload, vectors or offset) from one
        shard comes from the engine's column path, without an object per hit."""
        self.config.vector_params(request.using, path="using")
        if (len(self.shards) == 1 and request.offset == 0 and not request.with_payload.enabled
                and not request.with_vector):
            (shard,) = self.shards.values()
            return shard.search_columns(request, queries)
        return ScoredColumns.by_points(self.query_batch, request, queries)

    def retrieve(self, ids: list[PointId], *, with_payload: PayloadSelector, with_vector: WithVector) -> list[Record]:
        shards = list(self.shards.values())
        if len(shards) == 1:
            return shards[0].retrieve(ids, with_payload=with_payload, with_vector=with_vector)
        found: dict[PointId, Record] = {}
        for shard in shards:
            for record in shard.retrieve(ids, with_payload=with_payload, with_vector=with_vector):
                found[record.id] = record
        return [found[point_id] for point_id in dict.fromkeys(ids) if point_id in found]

    def scroll(
        self,
        *,
        filter: dict[str, Any] | None,
        limit: int,
        offset: PointId | None,
        order_by: OrderBy | None,
        with_payload: PayloadSelector,
        with_vector: WithVector,
    ) -> tuple[list[Record], PointId | None]:
        pages = [
            shard.scroll(
                filter=filter, limit=limit, offset=offset, order_by=order_by,
                with_payload=with_payload, with_vector=with_vector,
            )
            for shard in self.shards.values()
        ]
        return merge_scroll_pages(pages, limit=limit, order_by=order_by)

    def count(self, *, filter: dict[str, Any] | None, exact: bool) -> int:
        return sum(shard.count(filter=filter) for shard in self.shards.values())

    def shard_point_counts(self) -> list[int]:
        """Live points of each local shard, by shard id (each shard read on its own)."""
        return [self.shards[shard_id].count(filter=None) for shard_id in sorted(self.shards)]


def _remove_directory(path: Path) -> None:
    """Rename out of the way, then delete: a crash leaves a dot-name that is ignored."""
    doomed = path.with_name(f".removing-{path.name}")
    shutil.rmtree(doomed, ignore_errors=True)
    path.rename(doomed)
    fsync_directory(path.parent)
    shutil.rmtree(doomed, ignore_errors=True)


def merge_scroll_pages(pages: list[tuple[list[Record], PointId | None]], *, limit: int,
                       order_by: OrderBy | None) -> tuple[list[Record], PointId | None]:
    """One scroll page from the pages of several shards (each asked for
    ``limit`` points from the same offset): by id, the ``limit`` smallest ids
    and the id after them; by ``order_by``, the first ``limit``."""
    if not pages:
        return [], None
    if len(pages) == 1:
        return pages[0]
    records = [record for page, _next in pages for record in page]
    if order_by is not None:
        descending = order_by.direction.value == "desc"
        records.sort(key=lambda record: (record.order_value, point_id_sort_key(record.id)), reverse=descending)
        return records[:limit], None
    candidates = records + [
        Record(id=next_id, payload=None, vectors=None) for _page, next_id in pages if next_id is not None
    ]
    candidates.sort(key=lambda record: point_id_sort_key(record.id))
    page = [record for record in candidates[:limit]]
    next_offset = candidates[limit].id if len(candidates) > limit else None
    return page, next_offset


RetrieveIds = Callable[..., list[Record]]


def prepare_operation(operation: Operation, *, config: CollectionConfig, retrieve: RetrieveIds) -> Operation:
    """The checks that must pass for every shard before any shard writes:
    vectors validated against the config, and the points an operation
    modifies must exist (``retrieve`` looks them up across shards)."""
    match operation:
        case UpsertPoints(points=points):
            operation = UpsertPoints(points=prepare_points(points, config=config, is_upsert=True))
        case UpdateVectors(points=points):
            operation = UpdateVectors(points=prepare_points(points, config=config, is_upsert=False))
        case _:
            pass
    ids = ids_that_must_exist(operation)
    if ids:
        nothing = PayloadSelector(enabled=False)
        found = {record.id for record in retrieve(list(ids), with_payload=nothing, with_vector=False)}
        missing = [point_id for point_id in ids if point_id not in found]
        if missing:
            raise NotFound(f"No point with id {missing[0]} found")
    return operation


def split_operation(operation: Operation, *, shard_number: int) -> dict[int, Operation]:
    """The parts of ``operation`` for each shard it touches, by shard id."""
    match operation:
        case UpsertPoints(points=points):
            return {shard: UpsertPoints(points=part) for shard, part in _split_batch(points, shard_number).items()}
        case UpdateVectors(points=points):
            return {shard: UpdateVectors(points=part) for shard, part in _split_batch(points, shard_number).items()}
        case DeletePoints(selector=selector) | SetPayload(selector=selector) | OverwritePayload(
            selector=selector
        ) | DeletePayload(selector=selector) | ClearPayload(selector=selector) | DeleteVectors(
            selector=selector
        ):
            return {
                shard: dataclasses.replace(operation, selector=part)
                for shard, part in _split_selector(selector, shard_number).items()
            }
        case CreateFieldIndex() | DeleteFieldIndex():
            return {shard: operation for shard in range(shard_number)}


def ids_that_must_exist(operation: Operation) -> tuple[PointId, ...]:
    match operation:
        case UpdateVectors(points=points):
            return points.ids
        case SetPayload(selector=selector) | OverwritePayload(selector=selector) | DeletePayload(
            selector=selector
        ) | ClearPayload(selector=selector) | DeleteVectors(selector=selector):
            return selector.ids or ()
        case _:
            return ()

"""Shared value types: point ids, collection configuration, queries and results.

Everything here is a frozen, slotted dataclass or an enum, so values can be
passed between layers and threads without copying or locking. Parsing from the
wire (JSON, protobuf) happens in ``qcluster.api``; the engine receives these
types already validated for shape, and validates them against the collection
(dimensions, names) itself.
"""

from __future__ import annotations

import enum
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any, TypeAlias

import numpy as np

from qcluster.errors import InvalidRequest

__all__ = [
    "DEFAULT_VECTOR",
    "CollectionConfig",
    "CollectionPatch",
    "Distance",
    "HnswConfig",
    "OptimizersConfig",
    "OrderBy",
    "PayloadFieldSchema",
    "PayloadSchemaType",
    "PayloadSelector",
    "PointId",
    "QueryRequest",
    "ReadConsistency",
    "ReadConsistencyKind",
    "Record",
    "ScoredPoint",
    "SearchParams",
    "UINT64_MAX",
    "VectorParams",
    "WalConfig",
    "WriteOrdering",
    "normalize_point_id",
    "point_id_sort_key",
]

# An unsigned 64-bit integer, or a UUID in canonical lowercase hyphenated form.
PointId: TypeAlias = int | str
UINT64_MAX = 2**64 - 1
# The name under which a collection's single unnamed vector is stored.
DEFAULT_VECTOR = ""


def normalize_point_id(raw: object, *, path: str) -> PointId:
    """Return the canonical form of a point id, or raise InvalidRequest naming ``path``."""
    if isinstance(raw, bool):
        raise InvalidRequest(f"{path}: point id must be an unsigned integer or a UUID, got a boolean")
    if isinstance(raw, int):
        if raw < 0 or raw > UINT64_MAX:
            raise InvalidRequest(f"{path}: point id {raw} is out of the unsigned 64-bit range")
        return raw
    if isinstance(raw, str):
        try:
            return str(uuid.UUID(raw))
        except ValueError as exc:
            raise InvalidRequest(
                f"{path}: point id {raw!r} is neither an unsigned integer nor a UUID"
            ) from exc
    raise InvalidRequest(
        f"{path}: point id must be an unsigned integer or a UUID, got {type(raw).__name__}"
    )


def point_id_sort_key(point_id: PointId) -> tuple[int, int]:
    """Order ids as Qdrant does: every integer id before every UUID."""
    if isinstance(point_id, int):
        return (0, point_id)
    return (1, uuid.UUID(point_id).int)


class Distance(enum.StrEnum):
    COSINE = "Cosine"
    DOT = "Dot"
    EUCLID = "Euclid"
    MANHATTAN = "Manhattan"

    @property
    def higher_is_better(self) -> bool:
        match self:
            case Distance.COSINE | Distance.DOT:
                return True
            case Distance.EUCLID | Distance.MANHATTAN:
                return False


@dataclass(frozen=True, slots=True)
class HnswConfig:
    m: int = 16
    ef_construct: int = 100
    # Below this many kilobytes of vectors a segment is searched exactly (Qdrant's unit).
    full_scan_threshold: int = 10_000
    max_indexing_threads: int = 0
    on_disk: bool = False
    payload_m: int | None = None


@dataclass(frozen=True, slots=True)
class OptimizersConfig:
    # Share of deleted points in a sealed segment that triggers its rebuild.
    deleted_threshold: float = 0.2
    vacuum_min_vector_number: int = 1000
    default_segment_number: int = 0
    max_segment_size: int | None = None
    memmap_threshold: int | None = None
    # Kilobytes of vectors in the appendable segment that trigger sealing and
    # index building (Qdrant's unit). 0 disables indexing.
    indexing_threshold: int = 20_000
    flush_interval_sec: int = 5
    max_optimization_threads: int | None = None


@dataclass(frozen=True, slots=True)
class WalConfig:
    wal_capacity_mb: int = 32
    wal_segments_ahead: int = 0
    # There is deliberately no fsync policy: every operation is fsynced before
    # it is acknowledged, the only policy that never loses an acknowledged write.


@dataclass(frozen=True, slots=True)
class VectorParams:
    size: int
    distance: Distance
    on_disk: bool = False
    hnsw_config: HnswConfig | None = None


@dataclass(frozen=True, slots=True)
class CollectionConfig:
    # Vector name -> params. A collection created with a single unnamed vector
    # has exactly one entry, under DEFAULT_VECTOR, and is_named_vectors False.
    vectors: dict[str, VectorParams]
    is_named_vectors: bool = False
    # Shards per shard key with custom sharding (points go to the shards of
    # the key a write names), else in all.
    shard_number: int = 1
    custom_sharding: bool = False
    replication_factor: int = 1
    write_consistency_factor: int = 1
    on_disk_payload: bool = True
    hnsw_config: HnswConfig = field(default_factory=HnswConfig)
    optimizers_config: OptimizersConfig = field(default_factory=OptimizersConfig)
    wal_config: WalConfig = field(default_factory=WalConfig)

    def vector_params(self, name: str, *, path: str) -> VectorParams:
        params = self.vectors.get(name)
        if params is None:
            shown = name if name else "<default unnamed vector>"
            raise InvalidRequest(f"{path}: vector name {shown!r} does not exist in this collection")
        return params

    def hnsw_for(self, name: str) -> HnswConfig:
        params = self.vectors[name]
        return params.hnsw_config if params.hnsw_config is not None else self.hnsw_config


@dataclass(frozen=True, slots=True)
class CollectionPatch:
    """A PATCH /collections/{c} body: every None field is left unchanged."""

    vectors: dict[str, dict[str, Any]] | None = None
    hnsw_config: dict[str, Any] | None = None
    optimizers_config: dict[str, Any] | None = None
    params: dict[str, Any] | None = None


class PayloadSchemaType(enum.StrEnum):
    KEYWORD = "keyword"
    INTEGER = "integer"
    FLOAT = "float"
    BOOL = "bool"
    DATETIME = "datetime"
    TEXT = "text"
    UUID = "uuid"


@dataclass(frozen=True, slots=True)
class PayloadFieldSchema:
    type: PayloadSchemaType
    is_tenant: bool = False
    is_principal: bool = False
    # Text index options (Qdrant's TextIndexParams).
    lowercase: bool = True
    min_token_len: int | None = None
    max_token_len: int | None = None
    # Integer index options: an integer index serves match and/or range.
    lookup: bool = True
    range: bool = True

    def encode(self) -> dict[str, Any]:
        """Every field, for storage (WAL, checkpoint); inverse of ``decode``."""
        return {
            "type": self.type.value,
            "is_tenant": self.is_tenant,
            "is_principal": self.is_principal,
            "lowercase": self.lowercase,
            "min_token_len": self.min_token_len,
            "max_token_len": self.max_token_len,
            "lookup": self.lookup,
            "range": self.range,
        }

    @classmethod
    def decode(cls, raw: dict[str, Any]) -> PayloadFieldSchema:
        fields = dict(raw)
        fields["type"] = PayloadSchemaType(fields["type"])
        return cls(**fields)

    def to_json(self) -> dict[str, Any]:
        """The ``params`` object shown in a collection's payload_schema."""
        params: dict[str, Any] = {"type": self.type.value}
        match self.type:
            case PayloadSchemaType.KEYWORD | PayloadSchemaType.UUID:
                params["is_tenant"] = self.is_tenant
            case PayloadSchemaType.INTEGER:
                params.update(lookup=self.lookup, range=self.range, is_principal=self.is_principal)
            case PayloadSchemaType.FLOAT | PayloadSchemaType.DATETIME:
                params["is_principal"] = self.is_principal
            case PayloadSchemaType.TEXT:
                params.update(
                    tokenizer="word",
                    lowercase=self.lowercase,
                    min_token_len=self.min_token_len,
                    max_token_len=self.max_token_len,
                )
            case PayloadSchemaType.BOOL:
                pass
        return params


@dataclass(frozen=True, slots=True)
class PayloadSelector:
    """Which payload keys to return: all, none, only ``include`` or all but ``exclude``."""

    enabled: bool = True
    include: tuple[str, ...] | None = None
    exclude: tuple[str, ...] | None = None


@dataclass(frozen=True, slots=True)
class SearchParams:
    hnsw_ef: int | None = None
    exact: bool = False
    indexed_only: bool = False


@dataclass(frozen=True, slots=True)
class QueryRequest:
    vector: np.ndarray  # float32, shape (dim,)
    using: str = DEFAULT_VECTOR
    filter: dict[str, Any] | None = None  # validated JSON, see engine.filters.parse_filter
    limit: int = 10
    offset: int = 0
    score_threshold: float | None = None
    with_payload: PayloadSelector = PayloadSelector(enabled=False)
    # False, True (all vectors) or the names of the vectors to return.
    with_vector: bool | tuple[str, ...] = False
    params: SearchParams = SearchParams()


class Direction(enum.StrEnum):
    ASC = "asc"
    DESC = "desc"


@dataclass(frozen=True, slots=True)
class OrderBy:
    key: str
    direction: Direction = Direction.ASC
    start_from: float | None = None


class ReadConsistencyKind(enum.StrEnum):
    FACTOR = "factor"      # ask `factor` replicas, keep points present on all of them
    MAJORITY = "majority"  # ask a majority of the in-sync replicas, keep points present on all of them
    QUORUM = "quorum"      # ask every in-sync replica, keep points present on a majority of them
    ALL = "all"            # ask every in-sync replica, keep points present on all of them
    PRIMARY = "primary"    # qcluster's: ask the shard's primary only (read your own writes)


@dataclass(frozen=True, slots=True)
class ReadConsistency:
    """Qdrant's read ``consistency``: how many replicas of each shard answer a
    read and how many must agree on a point. The default, ``factor 1``, asks
    one in-sync replica."""

    kind: ReadConsistencyKind = ReadConsistencyKind.FACTOR
    factor: int = 1

    @property
    def is_default(self) -> bool:
        return self.kind is ReadConsistencyKind.FACTOR and self.factor == 1

    def plan(self, in_sync: int) -> tuple[int, int, int]:
        """``(asked, answers needed, agreeing answers to keep a point)`` for a
        shard with ``in_sync`` in-sync replicas."""
        majority = in_sync // 2 + 1
        match self.kind:
            case ReadConsistencyKind.FACTOR:
                return self.factor, self.factor, self.factor
            case ReadConsistencyKind.MAJORITY:
                return majority, majority, majority
            case ReadConsistencyKind.QUORUM:
                return in_sync, majority, majority
            case ReadConsistencyKind.ALL:
                return in_sync, in_sync, in_sync
            case ReadConsistencyKind.PRIMARY:
                return 1, 1, 1


class WriteOrdering(enum.StrEnum):
    WEAK = "weak"
    MEDIUM = "medium"
    STRONG = "strong"


@dataclass(frozen=True, slots=True)
class Record:
    id: PointId
    payload: dict[str, Any] | None
    # name -> vector; the API shows the unnamed vector as a bare list.
    vectors: dict[str, np.ndarray] | None
    order_value: float | None = None
    # The seq_no of the operation that wrote it: replicas of one shard that
    # hold different copies of a point agree that the higher one is newer.
    version: int = 0


@dataclass(frozen=True, slots=True)
class ScoredPoint:
    id: PointId
    score: float
    version: int
    payload: dict[str, Any] | None = None
    vectors: dict[str, np.ndarray] | None = None


@dataclass(frozen=True, slots=True)
class ScoredColumns:
    """The answers to a batch of queries as columns, flat in query order: row
    ``r`` has ``counts[r]`` hits, best first. What dense APIs return, built
    without a ScoredPoint per hit where the engine can (plain answers)."""

    counts: np.ndarray  # uint32, hits per query row
    ids: list[PointId] | np.ndarray  # a uint64 array when the engine had every id as one
    scores: np.ndarray  # float32
    versions: np.ndarray  # int64
    payloads: list[dict[str, Any] | None] | None  # when asked for

    def id_list(self) -> list[PointId]:
        return self.ids.tolist() if isinstance(self.ids, np.ndarray) else self.ids  # type: ignore[no-any-return]

    def integer_ids(self, begin: int, end: int) -> np.ndarray | None:
        """Ids ``[begin, end)`` as uint64, or None when one of them is a UUID."""
        ids = self.ids[begin:end]
        if isinstance(ids, np.ndarray):
            return ids
        if not all(type(point_id) is int for point_id in ids):
            return None
        return np.array(ids, dtype=np.uint64)

    @classmethod
    def by_points(cls, query_batch: Callable[[list[QueryRequest]], list[list[ScoredPoint]]],
                  request: QueryRequest, queries: np.ndarray) -> ScoredColumns:
        """``request`` for every row of ``queries``, answered by ``query_batch``
        (a collection's, with ScoredPoints) and turned into columns."""
        answers = query_batch([replace(request, vector=row) for row in queries])
        return cls.from_points(answers, with_payload=request.with_payload.enabled)

    @classmethod
    def from_points(cls, answers: list[list[ScoredPoint]], *, with_payload: bool) -> ScoredColumns:
        flat = [point for points in answers for point in points]
        return cls(
            counts=np.fromiter((len(points) for points in answers), dtype=np.uint32, count=len(answers)),
            ids=[point.id for point in flat],
            scores=np.array([point.score for point in flat], dtype=np.float32),
            versions=np.array([point.version for point in flat], dtype=np.int64),
            payloads=[point.payload for point in flat] if with_payload else None,
        )

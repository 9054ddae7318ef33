"""Values returned by the storage layer to the API layer."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from qcluster.types import PayloadFieldSchema

__all__ = ["AliasAction", "CollectionInfo", "CollectionStatus", "FieldIndexInfo", "UpdateResult", "UpdateStatus"]


class CollectionStatus(enum.StrEnum):
    GREEN = "green"  # every segment indexed, nothing pending
    YELLOW = "yellow"  # optimizations (index builds, vacuum) are running
    GREY = "grey"  # optimizations pending, not running
    RED = "red"  # an error occurred; see the log


@dataclass(frozen=True, slots=True)
class FieldIndexInfo:
    schema: PayloadFieldSchema
    # Live points that carry at least one value of the indexed type.
    points: int
    # Live points whose value at the key has another type (not indexed, reported).
    type_violations: int


@dataclass(frozen=True, slots=True)
class CollectionInfo:
    status: CollectionStatus
    points_count: int
    indexed_vectors_count: int
    segments_count: int
    payload_schema: dict[str, FieldIndexInfo]
    # Human-readable notes, e.g. "field 'year': 3 points have a value that is not integer".
    warnings: tuple[str, ...] = ()


class UpdateStatus(enum.StrEnum):
    ACKNOWLEDGED = "acknowledged"  # durable in the WAL; applied
    COMPLETED = "completed"  # durable and applied (wait=true)


@dataclass(frozen=True, slots=True)
class UpdateResult:
    operation_id: int
    status: UpdateStatus


@dataclass(frozen=True, slots=True)
class AliasAction:
    """One of Qdrant's alias actions: create, delete or rename."""

    kind: str  # "create" | "delete" | "rename"
    alias_name: str | None = None  # create / delete
    collection_name: str | None = None  # create
    old_alias_name: str | None = None  # rename
    new_alias_name: str | None = None  # rename

"""The parsed filter: frozen, slotted, hashable dataclasses.

Hashable so a parsed filter can key a cache. Every container is a tuple or a
frozenset, and a match value carries its kind explicitly, because in Python
``True == 1`` and ``hash(True) == hash(1)``: without the kind, a filter
matching ``true`` would be equal to (and share a cache entry with) one
matching ``1``, which Qdrant treats as different conditions.

Ranges keep Qdrant's representation: numeric bounds as float64 (Qdrant compares
numbers as f64), datetime bounds as integer microseconds since the Unix epoch.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TypeAlias

from qcluster.types import PointId

__all__ = [
    "Condition",
    "DatetimeRange",
    "FieldCondition",
    "FieldMatch",
    "Filter",
    "HasId",
    "IsEmpty",
    "IsNull",
    "Match",
    "MatchAny",
    "MatchExcept",
    "MatchText",
    "MatchValue",
    "MinShould",
    "Nested",
    "NumberRange",
    "ValueKind",
    "ValuesCount",
]


class ValueKind(enum.StrEnum):
    """The JSON type a match value (or list of values) has."""

    KEYWORD = "keyword"  # a string
    INTEGER = "integer"  # an i64, never a bool
    BOOL = "bool"


@dataclass(frozen=True, slots=True)
class MatchValue:
    kind: ValueKind
    value: str | int | bool


@dataclass(frozen=True, slots=True)
class MatchAny:
    kind: ValueKind  # KEYWORD or INTEGER (Qdrant has no list of bools)
    values: frozenset[str] | frozenset[int]


@dataclass(frozen=True, slots=True)
class MatchExcept:
    kind: ValueKind  # KEYWORD or INTEGER
    values: frozenset[str] | frozenset[int]


@dataclass(frozen=True, slots=True)
class MatchText:
    text: str


Match: TypeAlias = MatchValue | MatchAny | MatchExcept | MatchText


@dataclass(frozen=True, slots=True)
class FieldMatch:
    key: str
    match: Match


@dataclass(frozen=True, slots=True)
class NumberRange:
    key: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None


@dataclass(frozen=True, slots=True)
class DatetimeRange:
    """Bounds in microseconds since 1970-01-01T00:00:00Z."""

    key: str
    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None


@dataclass(frozen=True, slots=True)
class ValuesCount:
    key: str
    gt: int | None = None
    gte: int | None = None
    lt: int | None = None
    lte: int | None = None


@dataclass(frozen=True, slots=True)
class IsEmpty:
    key: str


@dataclass(frozen=True, slots=True)
class IsNull:
    key: str


@dataclass(frozen=True, slots=True)
class HasId:
    ids: frozenset[PointId]


@dataclass(frozen=True, slots=True)
class Nested:
    """True when some object element of the array at ``key`` satisfies ``filter``.

    ``key`` names the array itself, without a trailing ``[]``.
    """

    key: str
    filter: Filter


@dataclass(frozen=True, slots=True)
class MinShould:
    conditions: tuple[Condition, ...]
    min_count: int


@dataclass(frozen=True, slots=True)
class Filter:
    """A boolean combination; None means "no such clause".

    An empty ``should`` is normalized to None: Qdrant treats it as no
    constraint, not as an unsatisfiable one.
    """

    must: tuple[Condition, ...] | None = None
    should: tuple[Condition, ...] | None = None
    must_not: tuple[Condition, ...] | None = None
    min_should: MinShould | None = None


# Conditions on one payload key that a field index may answer.
FieldCondition: TypeAlias = FieldMatch | NumberRange | DatetimeRange | ValuesCount
Condition: TypeAlias = FieldCondition | IsEmpty | IsNull | HasId | Nested | Filter

"""Qdrant's filter language: parse and validate, then evaluate on one payload.

``parse_filter`` turns filter JSON into a frozen AST (``Filter``);
``matches`` is the naive per-point evaluator, the reference semantics that
``payload_index.evaluate_filter`` must reproduce exactly with indexes.

Semantics follow Qdrant's server (``segment::payload_storage``):

* A key path reaches zero or more values; a reached array counts as its
  elements for match and range (one level deep). A condition holds if *any*
  value satisfies it; a missing key satisfies no match or range.
* ``match.value``: strings equal strings, integers equal integers, booleans
  equal booleans. ``True`` never matches ``1`` and ``1.0`` never matches ``1``.
* ``match.except``: holds if some non-null value is not in the list; a value
  of another type (a number against a list of strings, a nested array, an
  object, a bool) counts as "not in the list". A missing key, a null, or an
  empty array does not satisfy it.
* ``range``: numbers (int or float, never bool) compared as float64;
  datetime ranges compare strings that parse as RFC 3339 (naive means UTC).
* ``values_count``: per reached value, an array counts its length, null 0,
  anything else 1; a missing key counts 0.
* ``is_empty``: the key is missing, or every reached value is null or ``[]``.
  ``is_null``: some reached value is null itself (``[null]`` is not null).
* ``match.text``: on a key with a full-text index, every query token must be
  among the tokens of the point's strings at that key (an empty query matches
  nothing); without one, some string must contain the text as a substring.
* ``nested``: some object element of the array satisfies the whole inner
  filter, with keys relative to the element. ``has_id`` inside is never true.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qcluster.engine._filter_ast import (
    Condition,
    DatetimeRange,
    FieldCondition,
    FieldMatch,
    Filter,
    HasId,
    IsEmpty,
    IsNull,
    Match,
    MatchAny,
    MatchExcept,
    MatchText,
    MatchValue,
    MinShould,
    Nested,
    NumberRange,
    ValueKind,
    ValuesCount,
)
from qcluster.engine._filter_parse import parse_filter, validate_key
from qcluster.engine._json_path import get_raw_values, get_values, parse_key_path
from qcluster.engine._payload_values import (
    TextIndexParams,
    as_float,
    in_bounds,
    is_int64,
    parse_datetime_us,
    tokenize,
)
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
    "TextIndexParams",
    "TextIndexing",
    "ValueKind",
    "ValuesCount",
    "check_condition",
    "filter_keys",
    "get_raw_values",
    "get_values",
    "match_value_matches",
    "matches",
    "parse_filter",
    "parse_key_path",
    "tokenize",
    "validate_key",
]

_DEFAULT_TEXT_PARAMS = TextIndexParams()


@dataclass(frozen=True, slots=True)
class TextIndexing:
    """Which keys have a full-text index, and each one's tokenizer options.

    The text match semantics depend on it (tokens vs substring), so the naive
    evaluator needs it to agree with the indexes. A key in ``keys`` without an
    entry in ``params`` uses the default tokenizer.
    """

    keys: frozenset[str] = frozenset()
    params: Mapping[str, TextIndexParams] = field(default_factory=dict)

    def params_for(self, key: str) -> TextIndexParams | None:
        if key not in self.keys:
            return None
        return self.params.get(key, _DEFAULT_TEXT_PARAMS)

    def inside(self, array_key: str) -> TextIndexing:
        """The indexing seen from the elements of ``array_key`` (for nested filters).

        An index on ``arr[].title`` applies to ``title`` inside ``nested`` on ``arr``.
        """
        prefix = f"{array_key}[]."
        keys = frozenset(key[len(prefix) :] for key in self.keys if key.startswith(prefix))
        params = {key[len(prefix) :]: value for key, value in self.params.items() if key.startswith(prefix)}
        return TextIndexing(keys=keys, params=params)


_NO_TEXT_INDEXES = TextIndexing()


def matches(
    filter: Filter,
    payload: dict[str, Any] | None,
    point_id: PointId | None,
    *,
    text_index_keys: frozenset[str] = frozenset(),
    text_index_params: Mapping[str, TextIndexParams] | None = None,
) -> bool:
    """Whether one point satisfies ``filter``: the reference semantics.

    ``text_index_keys`` are the keys with a full-text index (token semantics
    for ``match.text``); ``text_index_params`` their tokenizer options when
    not the defaults. ``point_id`` None means "no id" (has_id is false).
    """
    assert isinstance(filter, Filter)
    indexing = _NO_TEXT_INDEXES
    if text_index_keys:
        indexing = TextIndexing(keys=text_index_keys, params=dict(text_index_params or {}))
    return _filter_matches(filter, payload, point_id, indexing)


def _filter_matches(filter: Filter, payload: dict[str, Any] | None, point_id: PointId | None, indexing: TextIndexing) -> bool:
    if filter.must is not None:
        if not all(check_condition(c, payload, point_id, indexing) for c in filter.must):
            return False
    if filter.must_not is not None:
        if any(check_condition(c, payload, point_id, indexing) for c in filter.must_not):
            return False
    if filter.should is not None:
        assert filter.should, "an empty should is normalized to None"
        if not any(check_condition(c, payload, point_id, indexing) for c in filter.should):
            return False
    if filter.min_should is not None:
        min_should = filter.min_should
        satisfied = 0
        for condition in min_should.conditions:
            satisfied += check_condition(condition, payload, point_id, indexing)
            if satisfied >= min_should.min_count:
                break
        if satisfied < min_should.min_count:
            return False
    return True


def check_condition(
    condition: Condition, payload: dict[str, Any] | None, point_id: PointId | None, indexing: TextIndexing
) -> bool:
    """Whether one point satisfies one condition (a nested Filter included)."""
    match condition:
        case FieldMatch(key=key, match=match_):
            return _match_matches(match_, key, payload, indexing)
        case NumberRange(key=key, gt=gt, gte=gte, lt=lt, lte=lte):
            for value in get_values(payload, key):
                number = as_float(value)
                if number is not None and in_bounds(number, gt=gt, gte=gte, lt=lt, lte=lte):
                    return True
            return False
        case DatetimeRange(key=key, gt=gt, gte=gte, lt=lt, lte=lte):
            for value in get_values(payload, key):
                moment = parse_datetime_us(value) if isinstance(value, str) else None
                if moment is not None and in_bounds(moment, gt=gt, gte=gte, lt=lt, lte=lte):
                    return True
            return False
        case ValuesCount(key=key, gt=gt, gte=gte, lt=lt, lte=lte):
            counts = [_value_count(value) for value in get_raw_values(payload, key)] or [0]
            return any(in_bounds(count, gt=gt, gte=gte, lt=lt, lte=lte) for count in counts)
        case IsEmpty(key=key):
            return all(value is None or value == [] for value in get_raw_values(payload, key))
        case IsNull(key=key):
            return any(value is None for value in get_raw_values(payload, key))
        case HasId(ids=ids):
            return point_id is not None and point_id in ids
        case Nested(key=key, filter=inner):
            inner_indexing = indexing.inside(key) if indexing.keys else indexing
            # Only arrays are looked into ("arr" means "arr[]"), and only their objects.
            for value in get_raw_values(payload, key):
                if not isinstance(value, list):
                    continue
                for element in value:
                    if isinstance(element, dict) and _filter_matches(inner, element, None, inner_indexing):
                        return True
            return False
        case Filter():
            return _filter_matches(condition, payload, point_id, indexing)
    raise AssertionError(f"unknown condition {condition!r}")


def _value_count(value: Any) -> int:
    if value is None:
        return 0
    if isinstance(value, list):
        return len(value)
    return 1


def _match_matches(match_: Match, key: str, payload: dict[str, Any] | None, indexing: TextIndexing) -> bool:
    values = get_values(payload, key)
    match match_:
        case MatchValue():
            return any(match_value_matches(match_, value) for value in values)
        case MatchAny(kind=kind, values=allowed):
            return any(_is_of_kind(value, kind) and value in allowed for value in values)
        case MatchExcept(kind=kind, values=excluded):
            return any(value is not None and not (_is_of_kind(value, kind) and value in excluded) for value in values)
        case MatchText(text=text):
            params = indexing.params_for(key)
            if params is None:
                return any(isinstance(value, str) and text in value for value in values)
            return text_tokens_match(params.tokens(text), values, params)
    raise AssertionError(f"unknown match {match_!r}")


def match_value_matches(match_: MatchValue, value: Any) -> bool:
    """Exact match of one payload value, types kept apart (``True`` is not ``1``)."""
    return _is_of_kind(value, match_.kind) and value == match_.value


def _is_of_kind(value: Any, kind: ValueKind) -> bool:
    match kind:
        case ValueKind.KEYWORD:
            return isinstance(value, str)
        case ValueKind.INTEGER:
            return is_int64(value)
        case ValueKind.BOOL:
            return isinstance(value, bool)


def text_tokens_match(query_tokens: list[str], values: list[Any], params: TextIndexParams) -> bool:
    """Full-text semantics: every query token occurs among the point's tokens.

    The point's tokens are those of all its strings at the key together, as a
    full-text index stores one document per point. An empty query matches
    nothing (it would otherwise match every point, indexed or not).
    """
    if not query_tokens:
        return False
    document: set[str] = set()
    for value in values:
        if isinstance(value, str):
            document.update(params.tokens(value))
    return all(token in document for token in query_tokens)


def filter_keys(filter: Filter) -> set[str]:
    """Every payload key the filter reads, as written at the top level.

    Keys inside a nested condition on ``arr`` are reported as ``arr[].key``,
    the path under which an index on them would be created.
    """
    keys: set[str] = set()
    _collect_keys(filter, "", keys)
    return keys


def _collect_keys(filter: Filter, prefix: str, keys: set[str]) -> None:
    clauses = [filter.must or (), filter.should or (), filter.must_not or ()]
    if filter.min_should is not None:
        clauses.append(filter.min_should.conditions)
    for clause in clauses:
        for condition in clause:
            match condition:
                case FieldMatch(key=key) | NumberRange(key=key) | DatetimeRange(key=key) | ValuesCount(key=key):
                    keys.add(prefix + key)
                case IsEmpty(key=key) | IsNull(key=key):
                    keys.add(prefix + key)
                case Nested(key=key, filter=inner):
                    keys.add(prefix + key)
                    _collect_keys(inner, f"{prefix}{key}[].", keys)
                case Filter():
                    _collect_keys(condition, prefix, keys)
                case HasId():
                    pass

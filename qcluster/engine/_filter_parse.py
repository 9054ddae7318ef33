"""Parse and validate Qdrant filter JSON into the ``_filter_ast`` dataclasses.

Every error names the exact JSON path of the offending value, so a client can
find the problem in a large request. Fields whose value is null are treated as
absent (clients serialize unset optional fields as null). Unknown fields are
rejected rather than ignored: a misspelled ``must`` that silently matched
everything would be a worse failure than a 400.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from qcluster import limits
from qcluster.engine._filter_ast import (
    Condition,
    DatetimeRange,
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
from qcluster.engine._json_path import KeySyntaxError, parse_key_path
from qcluster.engine._payload_values import INT64_MAX, INT64_MIN, is_int64, json_type_name, parse_datetime_us
from qcluster.errors import InvalidRequest, LimitExceeded
from qcluster.types import PointId, normalize_point_id

__all__ = ["parse_filter", "validate_key"]

_FILTER_FIELDS: Final = ("must", "should", "must_not", "min_should")
_CONDITION_KINDS: Final = "key/has_id/is_empty/is_null/nested/filter (must/should/must_not/min_should)"
_GEO_FIELDS: Final = ("geo_radius", "geo_bounding_box", "geo_polygon")
_FIELD_CONDITION_KINDS: Final = ("match", "range", "values_count")
_MATCH_KINDS: Final = ("value", "any", "except", "text")
_BOUNDS: Final = ("gt", "gte", "lt", "lte")


@dataclass(slots=True)
class _Budget:
    """Counts conditions across the whole filter, all levels together."""

    conditions: int = 0

    def spend(self, path: str) -> None:
        self.conditions += 1
        if self.conditions > limits.FILTER_CONDITIONS_MAX:
            raise LimitExceeded(
                f"{path}: the filter has more than {limits.FILTER_CONDITIONS_MAX} conditions "
                "(FILTER_CONDITIONS_MAX)"
            )


def parse_filter(raw: object, *, path: str = "filter") -> Filter:
    """Validate Qdrant filter JSON and return its AST.

    Raises InvalidRequest (message starting with the JSON path of the problem)
    or LimitExceeded (too many conditions, too deep, too long a key).
    """
    parsed = _parse_filter(raw, path, depth=1, budget=_Budget())
    assert isinstance(parsed, Filter)
    return parsed


def validate_key(raw: object, *, path: str) -> str:
    """Return ``raw`` if it is a valid payload key path, else raise naming ``path``."""
    if not isinstance(raw, str):
        raise InvalidRequest(f"{path}: expected a string, got {json_type_name(raw)}")
    if len(raw) > limits.KEY_LENGTH_MAX:
        raise LimitExceeded(f"{path}: key is longer than {limits.KEY_LENGTH_MAX} characters (KEY_LENGTH_MAX)")
    try:
        parse_key_path(raw)
    except KeySyntaxError as exc:
        raise InvalidRequest(f"{path}: {exc}") from exc
    return raw


def _object(raw: object, path: str) -> dict[str, Any]:
    """``raw`` as a dict without its null-valued fields, or raise."""
    if not isinstance(raw, dict):
        raise InvalidRequest(f"{path}: expected an object, got {json_type_name(raw)}")
    for name in raw:
        if not isinstance(name, str):
            raise InvalidRequest(f"{path}: field names must be strings, got {json_type_name(name)}")
    return {name: value for name, value in raw.items() if value is not None}


def _reject_unknown(obj: dict[str, Any], allowed: tuple[str, ...], path: str) -> None:
    for name in obj:
        if name not in allowed:
            raise InvalidRequest(f"{path}.{name}: unknown field, expected one of {'/'.join(allowed)}")


def _parse_filter(raw: object, path: str, *, depth: int, budget: _Budget) -> Filter:
    if depth > limits.FILTER_DEPTH_MAX:
        raise LimitExceeded(f"{path}: the filter nests deeper than {limits.FILTER_DEPTH_MAX} levels (FILTER_DEPTH_MAX)")
    obj = _object(raw, path)
    _reject_unknown(obj, _FILTER_FIELDS, path)
    must = _parse_clause(obj.get("must"), f"{path}.must", depth=depth, budget=budget)
    should = _parse_clause(obj.get("should"), f"{path}.should", depth=depth, budget=budget)
    must_not = _parse_clause(obj.get("must_not"), f"{path}.must_not", depth=depth, budget=budget)
    min_should = None
    if "min_should" in obj:
        min_should = _parse_min_should(obj["min_should"], f"{path}.min_should", depth=depth, budget=budget)
    return Filter(must=must, should=should or None, must_not=must_not, min_should=min_should)


def _parse_clause(raw: object, path: str, *, depth: int, budget: _Budget) -> tuple[Condition, ...] | None:
    """A list of conditions, or a single condition object (Qdrant accepts both)."""
    if raw is None:
        return None
    if isinstance(raw, dict):
        return (_parse_condition(raw, path, depth=depth, budget=budget),)
    if not isinstance(raw, list):
        raise InvalidRequest(f"{path}: expected a condition or an array of conditions, got {json_type_name(raw)}")
    return tuple(
        _parse_condition(item, f"{path}[{index}]", depth=depth, budget=budget) for index, item in enumerate(raw)
    )


def _parse_min_should(raw: object, path: str, *, depth: int, budget: _Budget) -> MinShould:
    obj = _object(raw, path)
    _reject_unknown(obj, ("conditions", "min_count"), path)
    if "conditions" not in obj:
        raise InvalidRequest(f"{path}.conditions: missing required field")
    conditions = _parse_clause(obj["conditions"], f"{path}.conditions", depth=depth, budget=budget)
    assert conditions is not None
    min_count = obj.get("min_count")
    if min_count is None:
        raise InvalidRequest(f"{path}.min_count: missing required field")
    if isinstance(min_count, bool) or not isinstance(min_count, int):
        raise InvalidRequest(f"{path}.min_count: expected an integer, got {json_type_name(min_count)}")
    if min_count < 1:
        raise InvalidRequest(f"{path}.min_count: must be 1 or larger, got {min_count}")
    return MinShould(conditions=conditions, min_count=min_count)


def _parse_condition(raw: object, path: str, *, depth: int, budget: _Budget) -> Condition:
    obj = _object(raw, path)
    budget.spend(path)
    if "key" in obj:
        return _parse_field_condition(obj, path)
    parsers: dict[str, Callable[[dict[str, Any], str], Condition]] = {
        "has_id": _parse_has_id,
        "is_empty": lambda o, p: IsEmpty(key=_parse_key_object(o, "is_empty", p)),
        "is_null": lambda o, p: IsNull(key=_parse_key_object(o, "is_null", p)),
        "nested": lambda o, p: _parse_nested(o, p, depth=depth, budget=budget),
    }
    for name, parser in parsers.items():
        if name in obj:
            _reject_unknown(obj, (name,), path)
            return parser(obj, path)
    if "has_vector" in obj:
        raise InvalidRequest(f"{path}.has_vector: has_vector conditions are not supported")
    if not obj or any(name in obj for name in _FILTER_FIELDS):
        return _parse_filter(obj, path, depth=depth + 1, budget=budget)
    raise InvalidRequest(f"{path}: unknown condition, expected one of {_CONDITION_KINDS}, got fields {sorted(obj)}")


def _parse_key_object(obj: dict[str, Any], name: str, path: str) -> str:
    """The key of ``{"is_empty": {"key": k}}`` and friends."""
    inner = _object(obj[name], f"{path}.{name}")
    _reject_unknown(inner, ("key",), f"{path}.{name}")
    if "key" not in inner:
        raise InvalidRequest(f"{path}.{name}.key: missing required field")
    return validate_key(inner["key"], path=f"{path}.{name}.key")


def _parse_has_id(obj: dict[str, Any], path: str) -> HasId:
    raw = obj["has_id"]
    if not isinstance(raw, list):
        raise InvalidRequest(f"{path}.has_id: expected an array of point ids, got {json_type_name(raw)}")
    ids: set[PointId] = set()
    for index, item in enumerate(raw):
        ids.add(normalize_point_id(item, path=f"{path}.has_id[{index}]"))
    return HasId(ids=frozenset(ids))


def _parse_nested(obj: dict[str, Any], path: str, *, depth: int, budget: _Budget) -> Nested:
    inner = _object(obj["nested"], f"{path}.nested")
    _reject_unknown(inner, ("key", "filter"), f"{path}.nested")
    for required in ("key", "filter"):
        if required not in inner:
            raise InvalidRequest(f"{path}.nested.{required}: missing required field")
    key = validate_key(inner["key"], path=f"{path}.nested.key")
    # "arr" and "arr[]" both name the array whose elements are checked.
    if key.endswith("[]"):
        key = validate_key(key[: -len("[]")], path=f"{path}.nested.key")
    nested_filter = _parse_filter(inner["filter"], f"{path}.nested.filter", depth=depth + 1, budget=budget)
    return Nested(key=key, filter=nested_filter)


def _parse_field_condition(obj: dict[str, Any], path: str) -> FieldMatch | NumberRange | DatetimeRange | ValuesCount:
    key = validate_key(obj["key"], path=f"{path}.key")
    for geo in _GEO_FIELDS:
        if geo in obj:
            raise InvalidRequest(f"{path}.{geo}: geo conditions are not supported")
    _reject_unknown(obj, ("key", *_FIELD_CONDITION_KINDS), path)
    kinds = [name for name in _FIELD_CONDITION_KINDS if name in obj]
    if len(kinds) != 1:
        raise InvalidRequest(
            f"{path}: a field condition needs exactly one of {'/'.join(_FIELD_CONDITION_KINDS)}, got {len(kinds)}"
        )
    kind = kinds[0]
    if kind == "match":
        return FieldMatch(key=key, match=_parse_match(obj["match"], f"{path}.match"))
    if kind == "range":
        return _parse_range(key, obj["range"], f"{path}.range")
    assert kind == "values_count"
    return _parse_values_count(key, obj["values_count"], f"{path}.values_count")


def _parse_match(raw: object, path: str) -> Match:
    obj = _object(raw, path)
    if "text_any" in obj or "phrase" in obj:
        raise InvalidRequest(f"{path}: text_any and phrase matches are not supported")
    _reject_unknown(obj, _MATCH_KINDS, path)
    kinds = [name for name in _MATCH_KINDS if name in obj]
    if len(kinds) != 1:
        raise InvalidRequest(f"{path}: expected exactly one of {'/'.join(_MATCH_KINDS)}, got {len(kinds)}")
    kind = kinds[0]
    value = obj[kind]
    if kind == "value":
        return _parse_match_value(value, f"{path}.value")
    if kind == "text":
        if not isinstance(value, str):
            raise InvalidRequest(f"{path}.text: expected a string, got {json_type_name(value)}")
        return MatchText(text=value)
    value_kind, values = _parse_match_list(value, f"{path}.{kind}")
    if kind == "any":
        return MatchAny(kind=value_kind, values=values)
    assert kind == "except"
    return MatchExcept(kind=value_kind, values=values)


def _parse_match_value(value: object, path: str) -> MatchValue:
    if isinstance(value, bool):
        return MatchValue(kind=ValueKind.BOOL, value=value)
    if isinstance(value, str):
        return MatchValue(kind=ValueKind.KEYWORD, value=value)
    if isinstance(value, int):
        if not is_int64(value):
            raise InvalidRequest(f"{path}: integer {value} is outside the signed 64-bit range")
        return MatchValue(kind=ValueKind.INTEGER, value=value)
    shown = "a non-integer number" if isinstance(value, float) else json_type_name(value)
    raise InvalidRequest(f"{path}: expected a string, integer or boolean, got {shown}")


def _parse_match_list(raw: object, path: str) -> tuple[ValueKind, frozenset[str] | frozenset[int]]:
    """All strings or all integers; an empty list is a (matchless) keyword list."""
    if not isinstance(raw, list):
        raise InvalidRequest(f"{path}: expected an array of strings or of integers, got {json_type_name(raw)}")
    if not raw:
        return ValueKind.KEYWORD, frozenset()
    # Whole-list checks at C speed first: `any` lists of 10 000+ values are
    # sent with every query by some users (a tenant's allowed names).
    kinds = set(map(type, raw))
    if kinds == {str}:
        return ValueKind.KEYWORD, frozenset(raw)
    if kinds == {int} and INT64_MIN <= min(raw) and max(raw) <= INT64_MAX:
        return ValueKind.INTEGER, frozenset(raw)
    # Otherwise find the first offending element, for the message.
    first_is_string = isinstance(raw[0], str)
    expected = "a string" if first_is_string else "an integer"
    for index, item in enumerate(raw):
        is_string = isinstance(item, str)
        is_integer = is_int64(item)
        if not is_string and not is_integer:
            if isinstance(item, int) and not isinstance(item, bool):
                raise InvalidRequest(f"{path}[{index}]: integer {item} is outside the signed 64-bit range")
            raise InvalidRequest(f"{path}[{index}]: expected a string or an integer, got {json_type_name(item)}")
        if is_string != first_is_string:
            raise InvalidRequest(
                f"{path}[{index}]: expected {expected} like the first element, got {json_type_name(item)}"
            )
    if first_is_string:
        return ValueKind.KEYWORD, frozenset(raw)
    return ValueKind.INTEGER, frozenset(raw)


def _parse_range(key: str, raw: object, path: str) -> NumberRange | DatetimeRange:
    """Numeric bounds give a NumberRange, RFC 3339 strings a DatetimeRange."""
    obj = _object(raw, path)
    _reject_unknown(obj, _BOUNDS, path)
    is_numeric = any(not isinstance(obj[name], str) for name in obj) or not obj
    if is_numeric:
        numbers: dict[str, float] = {}
        for name, value in obj.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidRequest(f"{path}.{name}: expected a number, got {json_type_name(value)}")
            try:
                number = float(value)
            except OverflowError as exc:
                raise InvalidRequest(f"{path}.{name}: number {value} is too large") from exc
            if math.isnan(number):
                raise InvalidRequest(f"{path}.{name}: expected a number, got NaN")
            numbers[name] = number
        return NumberRange(key=key, **numbers)
    moments: dict[str, int] = {}
    for name, value in obj.items():
        assert isinstance(value, str)
        moment = parse_datetime_us(value)
        if moment is None:
            raise InvalidRequest(f"{path}.{name}: expected an RFC 3339 datetime, got {value!r}")
        moments[name] = moment
    return DatetimeRange(key=key, **moments)


def _parse_values_count(key: str, raw: object, path: str) -> ValuesCount:
    obj = _object(raw, path)
    _reject_unknown(obj, _BOUNDS, path)
    counts: dict[str, int] = {}
    for name, value in obj.items():
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidRequest(f"{path}.{name}: expected a non-negative integer, got {json_type_name(value)}")
        if value < 0:
            raise InvalidRequest(f"{path}.{name}: expected a non-negative integer, got {value}")
        counts[name] = value
    return ValuesCount(key=key, **counts)

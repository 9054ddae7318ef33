"""Payload key paths (Qdrant's JSON path subset) and reading values through them.

Grammar: ``name ( "." name | "[]" | "[" digits "]" )*`` where a name is either
bare (any characters but ``.``, ``[``, ``]``, ``"``) or double-quoted
(``a."b.c"`` reads the key ``b.c`` inside ``a``).

A parsed path is a tuple of items: ``str`` (an object key), ``int`` (an
array index) or ``None`` (every array element, ``[]``). Like Qdrant, a key
applied to an array does not look inside it: ``a.b`` on ``{"a": [{"b": 1}]}``
finds nothing, ``a[].b`` finds ``1``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Final, TypeAlias

from qcluster import limits

__all__ = ["KeySyntaxError", "PathItem", "get_raw_values", "get_values", "parse_key_path"]

PathItem: TypeAlias = str | int | None
_NAME_STOP: Final = frozenset('.[]"')


class KeySyntaxError(ValueError):
    """A key path that does not follow the grammar; the message says where."""


@lru_cache(maxsize=4096)
def parse_key_path(key: str) -> tuple[PathItem, ...]:
    """Parse ``key`` into path items, or raise KeySyntaxError.

    Cached: the same few keys are resolved against every payload of a segment.
    """
    if not key:
        raise KeySyntaxError("key must not be empty")
    if len(key) > limits.KEY_LENGTH_MAX:
        raise KeySyntaxError(f"key is longer than {limits.KEY_LENGTH_MAX} characters")
    items: list[PathItem] = []
    position = _parse_name(key, 0, items)
    while position < len(key):
        char = key[position]
        if char == ".":
            position = _parse_name(key, position + 1, items)
        elif char == "[":
            position = _parse_bracket(key, position, items)
        else:
            raise KeySyntaxError(f"unexpected {char!r} at position {position} of key {key!r}")
    assert items, "a key has at least one item"
    assert isinstance(items[0], str), "a key starts with a name"
    return tuple(items)


def _parse_name(key: str, start: int, items: list[PathItem]) -> int:
    """Append the name starting at ``start``; return the position after it."""
    if start < len(key) and key[start] == '"':
        end = key.find('"', start + 1)
        if end < 0:
            raise KeySyntaxError(f"unterminated quote at position {start} of key {key!r}")
        items.append(key[start + 1 : end])
        return end + 1
    end = start
    while end < len(key) and key[end] not in _NAME_STOP:
        end += 1
    if end == start:
        raise KeySyntaxError(f"expected a name at position {start} of key {key!r}")
    items.append(key[start:end])
    return end


def _parse_bracket(key: str, start: int, items: list[PathItem]) -> int:
    """Append ``[]`` (None) or ``[N]`` (N); return the position after ``]``."""
    assert key[start] == "["
    end = key.find("]", start)
    if end < 0:
        raise KeySyntaxError(f"unterminated '[' at position {start} of key {key!r}")
    inside = key[start + 1 : end]
    if inside == "":
        items.append(None)
    elif inside.isascii() and inside.isdigit():
        items.append(int(inside))
    else:
        raise KeySyntaxError(f"expected '[]' or '[<index>]' at position {start} of key {key!r}")
    return end + 1


def get_raw_values(payload: dict[str, Any] | None, key: str) -> list[Any]:
    """Every value ``key`` reaches in ``payload``, in document order, arrays kept whole.

    A present null is a value (``[None]``); a missing key gives ``[]``. This is
    what is_empty, is_null and values_count look at.
    """
    if not payload:
        return []
    items = parse_key_path(key)
    if len(items) == 1:
        # Fast path: a plain top-level key, by far the most common.
        name = items[0]
        assert isinstance(name, str)
        return [payload[name]] if name in payload else []
    found: list[Any] = []
    _walk(payload, items, 0, found)
    return found


def _walk(value: Any, items: tuple[PathItem, ...], depth: int, found: list[Any]) -> None:
    """Depth-first descent; recursion depth is bounded by the key length."""
    if depth == len(items):
        found.append(value)
        return
    item = items[depth]
    if isinstance(item, str):
        if isinstance(value, dict) and item in value:
            _walk(value[item], items, depth + 1, found)
    elif item is None:
        if isinstance(value, list):
            for element in value:
                _walk(element, items, depth + 1, found)
    elif isinstance(value, list) and item < len(value):
        _walk(value[item], items, depth + 1, found)


def get_values(payload: dict[str, Any] | None, key: str) -> list[Any]:
    """The values a match or range condition on ``key`` is checked against.

    Like :func:`get_raw_values`, but a reached array counts as its elements
    (one level only: an array inside it stays an array and matches nothing),
    which is how Qdrant applies a condition to an array value.
    """
    flattened: list[Any] = []
    for value in get_raw_values(payload, key):
        if isinstance(value, list):
            flattened.extend(value)
        else:
            flattened.append(value)
    return flattened

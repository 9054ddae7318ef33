"""Parsed filters, cached by their canonical JSON: the same filter repeats
across queries (a tenant's, a date range, a long ``any`` list).

The cache is bounded twice: at most ``_CACHE_ENTRIES`` filters and at most
``_CACHE_BYTES`` of canonical JSON in all, least recently used out first, so
that many distinct large filters (each up to the request size limit) cannot
grow it without bound. Thread-safe: storage threads share it.

A filter sent as JSON bytes (gRPC's ``filter_json``) is cached by those
bytes too, so a repeated one is not even decoded again: the same object is
handed out (callers do not modify filters), and its key is then found by
identity (below). 10 000 names in an ``any`` list take ~0.5 ms to decode.

A filter's key (its JSON with sorted keys) is computed several times per
request: when the request is validated, when queries are grouped into one
FAISS batch, when each segment is searched. For a long ``any`` list that is
~0.1 ms each time (10 000 names), so each thread remembers the last filter
object it keyed, by identity (a request's filter is not changed after it is
parsed).
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Final

import orjson

from qcluster.engine.filters import Filter, parse_filter
from qcluster.errors import InvalidRequest

__all__ = ["filter_from_json", "filter_key", "parsed_filter"]

_CACHE_ENTRIES: Final = 1024
_CACHE_BYTES: Final = 64 * 1024 * 1024

_last_keyed = threading.local()  # .entry = (filter object, its key)


class _BoundedCache:
    """bytes -> value, least recently used out first, bounded in entries and key bytes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: collections.OrderedDict[bytes, Any] = collections.OrderedDict()
        self._bytes = 0

    def get(self, key: bytes) -> Any:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: bytes, value: Any) -> None:
        if len(key) > _CACHE_BYTES:
            return
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = value
            self._bytes += len(key)
            while len(self._entries) > _CACHE_ENTRIES or self._bytes > _CACHE_BYTES:
                evicted, _value = self._entries.popitem(last=False)
                self._bytes -= len(evicted)


_parsed = _BoundedCache()  # canonical JSON -> Filter
_decoded = _BoundedCache()  # JSON bytes as received -> the decoded filter object


def filter_key(raw: dict[str, Any]) -> bytes:
    """The canonical JSON of a filter (sorted keys): equal for equal filters."""
    last = getattr(_last_keyed, "entry", None)
    if last is not None and last[0] is raw:
        return last[1]  # type: ignore[no-any-return]
    key = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    _last_keyed.entry = (raw, key)  # holds the object: its id cannot be reused meanwhile
    return key


def filter_from_json(raw: bytes, *, path: str) -> Any:
    """The filter object JSON bytes decode to (not yet validated: see
    ``parsed_filter``); equal bytes give the same object, not to be modified.
    Invalid JSON raises InvalidRequest naming ``path``."""
    decoded = _decoded.get(raw)
    if decoded is not None:
        return decoded
    try:
        decoded = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRequest(f"{path}: not valid JSON: {exc}") from exc
    if decoded is not None:
        _decoded.put(raw, decoded)
    return decoded


def parsed_filter(raw: dict[str, Any] | None, *, path: str = "filter") -> Filter | None:
    """The AST of a filter, or None for no filter; validates it on a cache miss.

    A bad filter raises InvalidRequest / LimitExceeded naming ``path``;
    failures are not cached.
    """
    if raw is None:
        return None
    canonical = filter_key(raw)
    parsed = _parsed.get(canonical)
    if parsed is None:
        parsed = parse_filter(raw, path=path)  # raises for a bad filter: nothing is cached
        _parsed.put(canonical, parsed)
    return parsed

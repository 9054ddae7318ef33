"""Parsed filters, cached by their canonical JSON: the same filter repeats
across queries (a tenant's, a date range, a long ``any`` list).

The cache is bounded twice: at most ``_CACHE_ENTRIES`` filters and at most
``_CACHE_BYTES`` of canonical JSON in all, least recently used out first, so
that many distinct large filters (each up to the request size limit) cannot
grow it without bound. Thread-safe: storage threads share it.

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

__all__ = ["filter_key", "parsed_filter"]

_CACHE_ENTRIES: Final = 1024
_CACHE_BYTES: Final = 64 * 1024 * 1024

_lock = threading.Lock()
_cache: collections.OrderedDict[bytes, Filter] = collections.OrderedDict()
_cached_bytes = 0
_last_keyed = threading.local()  # .entry = (filter object, its key)


def filter_key(raw: dict[str, Any]) -> bytes:
    """The canonical JSON of a filter (sorted keys): equal for equal filters."""
    last = getattr(_last_keyed, "entry", None)
    if last is not None and last[0] is raw:
        return last[1]  # type: ignore[no-any-return]
    key = orjson.dumps(raw, option=orjson.OPT_SORT_KEYS)
    _last_keyed.entry = (raw, key)  # holds the object: its id cannot be reused meanwhile
    return key


def _remember(canonical: bytes, parsed: Filter) -> None:
    global _cached_bytes  # noqa: PLW0603 - the module is the cache
    if len(canonical) > _CACHE_BYTES:
        return
    with _lock:
        if canonical in _cache:
            return
        _cache[canonical] = parsed
        _cached_bytes += len(canonical)
        while len(_cache) > _CACHE_ENTRIES or _cached_bytes > _CACHE_BYTES:
            evicted, _filter = _cache.popitem(last=False)
            _cached_bytes -= len(evicted)


def parsed_filter(raw: dict[str, Any] | None, *, path: str = "filter") -> Filter | None:
    """The AST of a filter, or None for no filter; validates it on a cache miss.

    A bad filter raises InvalidRequest / LimitExceeded naming ``path``;
    failures are not cached.
    """
    if raw is None:
        return None
    canonical = filter_key(raw)
    with _lock:
        parsed = _cache.get(canonical)
        if parsed is not None:
            _cache.move_to_end(canonical)
            return parsed
    parsed = parse_filter(raw, path=path)  # raises for a bad filter: nothing is cached
    _remember(canonical, parsed)
    return parsed

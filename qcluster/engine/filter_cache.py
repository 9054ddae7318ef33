"""Parsed filters, cached by their canonical JSON: the same filter repeats across queries."""

from __future__ import annotations

import functools
from typing import Any, Final

import orjson

from qcluster.engine.filters import Filter, parse_filter
from qcluster.errors import QclusterError

__all__ = ["parsed_filter"]

_CACHE_SIZE: Final = 1024


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse_cached(canonical: bytes) -> Filter:
    return parse_filter(orjson.loads(canonical))


def parsed_filter(raw: dict[str, Any] | None, *, path: str = "filter") -> Filter | None:
    """The AST of a filter, or None for no filter; validates it on a cache miss.

    A bad filter raises InvalidRequest / LimitExceeded naming ``path`` (it is
    parsed again with that path: failures are not cached, and are rare).
    """
    if raw is None:
        return None
    try:
        return _parse_cached(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS))
    except QclusterError:
        parse_filter(raw, path=path)
        raise

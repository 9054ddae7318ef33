"""Parsed filters, cached by their canonical JSON: the same filter repeats across queries."""

from __future__ import annotations

import functools
from typing import Any, Final

import orjson

from qcluster.engine.filters import Filter, parse_filter

__all__ = ["parsed_filter"]

_CACHE_SIZE: Final = 1024


@functools.lru_cache(maxsize=_CACHE_SIZE)
def _parse_cached(canonical: bytes) -> Filter:
    return parse_filter(orjson.loads(canonical))


def parsed_filter(raw: dict[str, Any] | None) -> Filter | None:
    """The AST of an already validated filter, or None for no filter."""
    if raw is None:
        return None
    return _parse_cached(orjson.dumps(raw, option=orjson.OPT_SORT_KEYS))

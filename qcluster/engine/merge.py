"""Pure top-k merge: segments into a shard answer, shards into a collection answer."""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Sequence
from typing import TypeVar

__all__ = ["merge_top_k"]

Item = TypeVar("Item")


def merge_top_k(
    parts: Iterable[Sequence[tuple[float, Hashable, Item]]], *, k: int
) -> list[tuple[float, Hashable, Item]]:
    """The k best (key, identity, item) triples over all parts, best (highest key) first.

    Each part must already be sorted best first. Ties are broken by the order
    of the parts, then by position within a part, so the result is
    deterministic. An identity seen twice keeps only its best entry (a point
    cannot be live in two segments, but shard replicas may overlap).
    """
    assert k >= 0
    result: list[tuple[float, Hashable, Item]] = []
    seen: set[Hashable] = set()
    merged = heapq.merge(
        *(
            ((-key, part_index, position, identity, item) for position, (key, identity, item) in enumerate(part))
            for part_index, part in enumerate(parts)
        )
    )
    for negative_key, _part, _position, identity, item in merged:
        if len(result) >= k:
            break
        if identity in seen:
            continue
        seen.add(identity)
        result.append((-negative_key, identity, item))
    assert len(result) <= k
    return result

"""Pure top-k merge: segments into a shard answer, shards into a collection answer."""

from __future__ import annotations

import heapq
from collections.abc import Hashable, Iterable, Sequence
from typing import TypeVar

from qcluster.types import ScoredPoint

__all__ = ["merge_scored", "merge_top_k"]

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


def merge_scored(answers: Sequence[Sequence[ScoredPoint]], *, higher_is_better: bool, offset: int,
                 limit: int) -> list[ScoredPoint]:
    """The page ``[offset, offset + limit)`` of the global ranking, from the
    answers of several shards (each its own top ``offset + limit``, best first).

    Offset and limit apply after the merge, so a page is the same whatever the
    number of shards. Used by a collection over its local shards, and by the
    router over the shards of a cluster.
    """
    assert offset >= 0 and limit >= 0
    if len(answers) == 1:
        return list(answers[0][offset:offset + limit])
    sign = 1.0 if higher_is_better else -1.0
    parts = [[(sign * point.score, point.id, point) for point in answer] for answer in answers]
    return [point for _key, _id, point in merge_top_k(parts, k=offset + limit)][offset:offset + limit]

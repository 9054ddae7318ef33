"""Read consistency: one shard's answer from the answers of several of its
replicas (Qdrant's ``consistency`` values; ``ReadConsistency.plan`` says how
many replicas are asked and how many must agree).

A point is kept when at least ``required`` answers hold it (by id), in its
newest copy: the one with the highest version (the seq_no of the write that
made it; one shard's replicas number their writes alike). So a write in
flight — applied on the primary, not yet on a replica — yields the newer
copy, never a missing point, and a read never goes back past a write every
in-sync replica holds. A point only some replicas hold (a write in flight
that adds it, or a replica that drifted) is kept only if ``required`` of them
do. Two copies with the same version but different content are a real
divergence: the point is left out, as one no replica set agrees on. Scores
are not compared: they derive from the vectors, and an approximate index may
find a point on one replica and miss it on another — which is disagreement
about presence, counted as such. Pure functions.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import TypeVar

import orjson

from qcluster.types import OrderBy, PointId, Record, ScoredPoint, point_id_sort_key

__all__ = ["resolve_count", "resolve_records", "resolve_scored", "resolve_scroll_page"]

Item = TypeVar("Item", Record, ScoredPoint)


def _fingerprint(item: Record | ScoredPoint) -> Hashable:
    payload = None if item.payload is None else orjson.dumps(item.payload, option=orjson.OPT_SORT_KEYS)
    vectors = None if item.vectors is None else tuple(
        (name, vector.tobytes()) for name, vector in sorted(item.vectors.items()))
    return (payload, vectors)


def _agreed(answers: Sequence[Sequence[Item]], required: int) -> list[Item]:
    """Points held by at least ``required`` answers, each once in its newest
    copy, in order of first appearance (see the module docstring)."""
    assert 1 <= required <= len(answers), (required, len(answers))
    votes: dict[PointId, int] = {}
    newest: dict[PointId, Item] = {}
    conflicting: set[PointId] = set()
    for answer in answers:
        for item in {item.id: item for item in answer}.values():
            votes[item.id] = votes.get(item.id, 0) + 1
            kept = newest.get(item.id)
            if kept is None or item.version > kept.version:
                newest[item.id] = item
                conflicting.discard(item.id)
            elif item.version == kept.version and _fingerprint(item) != _fingerprint(kept):
                conflicting.add(item.id)
    return [item for point_id, item in newest.items()
            if votes[point_id] >= required and point_id not in conflicting]


def resolve_scored(answers: Sequence[Sequence[ScoredPoint]], *, required: int,
                   higher_is_better: bool) -> list[ScoredPoint]:
    """One shard's ranked answer (best first) from its replicas' answers."""
    kept = _agreed(answers, required)
    kept.sort(key=lambda point: -point.score if higher_is_better else point.score)
    return kept


def resolve_records(answers: Sequence[Sequence[Record]], *, required: int) -> list[Record]:
    """Records (retrieve by id) held alike by at least ``required`` replicas."""
    return _agreed(answers, required)


def resolve_scroll_page(pages: Sequence[tuple[list[Record], PointId | None]], *, required: int,
                        order_by: OrderBy | None) -> tuple[list[Record], PointId | None]:
    """One shard's scroll page from its replicas' pages (each asked for the
    same ``limit`` from the same offset).

    By id, each replica's page covers every id from the offset up to its
    next-page offset; so below the smallest next-page offset every replica
    has been heard, and only there can points be kept. That smallest offset
    is the shard's next-page offset. By ``order_by`` (no next-page offset in
    Qdrant's API) the agreed records in that order.
    """
    kept = _agreed([page for page, _next in pages], required)
    if order_by is not None:
        descending = order_by.direction.value == "desc"
        kept.sort(key=lambda record: (record.order_value, point_id_sort_key(record.id)), reverse=descending)
        return kept, None
    nexts = [next_id for _page, next_id in pages if next_id is not None]
    next_offset = min(nexts, key=point_id_sort_key) if nexts else None
    if next_offset is not None:
        bound = point_id_sort_key(next_offset)
        kept = [record for record in kept if point_id_sort_key(record.id) < bound]
    kept.sort(key=lambda record: point_id_sort_key(record.id))
    return kept, next_offset


def resolve_count(counts: Sequence[int], *, required: int) -> int:
    """A count that at least ``required`` replicas reach: the ``required``-th
    largest. With ``required == len(counts)`` the smallest — an upper bound
    of the points present on all of them (counts alone cannot say which)."""
    assert 1 <= required <= len(counts)
    return sorted(counts, reverse=True)[required - 1]


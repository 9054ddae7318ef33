"""Read consistency: one shard's answer from the answers of several of its
replicas (Qdrant's ``consistency`` values; ``ReadConsistency.plan`` says how
many replicas are asked and how many must agree).

A point *agrees* across replicas when its id, payload and vectors are the
same (scores are not compared: they derive from the vectors, and an
approximate index may find a point on one replica and miss it on another —
which is disagreement about presence, counted as such). A point is kept when
at least ``required`` answers hold it in the same form. Pure functions.
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
    return (item.id, payload, vectors)


def _agreed(answers: Sequence[Sequence[Item]], required: int) -> list[Item]:
    """Items held (in the same form) by at least ``required`` answers, each
    once; the first answer's copy of each, in order of first appearance."""
    assert 1 <= required <= len(answers), (required, len(answers))
    votes: dict[Hashable, int] = {}
    first: dict[Hashable, Item] = {}
    for answer in answers:
        for fingerprint in {_fingerprint(item): None for item in answer}:
            votes[fingerprint] = votes.get(fingerprint, 0) + 1
        for item in answer:
            first.setdefault(_fingerprint(item), item)
    return [item for fingerprint, item in first.items() if votes[fingerprint] >= required]


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


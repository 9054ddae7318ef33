"""merge_top_k against the obvious oracle: sort everything, keep the first k."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qcluster.engine.merge import merge_top_k

_parts = st.lists(
    st.lists(st.tuples(st.integers(-50, 50), st.integers(0, 10_000)), max_size=20, unique_by=lambda item: item[1]),
    max_size=6,
)


@given(parts=_parts, k=st.integers(0, 40))
def test_merge_equals_sorted_prefix(parts: list[list[tuple[int, int]]], k: int) -> None:
    # Make identities globally unique so the oracle needs no de-duplication.
    shaped = [
        sorted(((float(key), (index, identity), identity) for key, identity in part), key=lambda t: -t[0])
        for index, part in enumerate(parts)
    ]
    merged = merge_top_k(shaped, k=k)
    everything = sorted((item for part in shaped for item in part), key=lambda t: -t[0])
    assert [key for key, _id, _item in merged] == [key for key, _id, _item in everything[:k]]
    assert len(merged) == min(k, len(everything))


def test_duplicate_identity_keeps_best() -> None:
    merged = merge_top_k([[(0.9, "a", 1), (0.5, "b", 2)], [(0.8, "a", 3), (0.7, "c", 4)]], k=3)
    assert [(identity, item) for _key, identity, item in merged] == [("a", 1), ("c", 4), ("b", 2)]


_scored_answers = st.lists(
    st.lists(st.tuples(st.integers(-30, 30), st.integers(0, 10_000)), max_size=15, unique_by=lambda item: item[1]),
    min_size=1, max_size=5,
)


@given(answers=_scored_answers, higher_is_better=st.booleans(), offset=st.integers(0, 10), limit=st.integers(0, 15))
def test_merge_scored_pages_the_global_ranking(answers: list[list[tuple[int, int]]], higher_is_better: bool,
                                               offset: int, limit: int) -> None:
    from qcluster.engine.merge import merge_scored
    from qcluster.types import ScoredPoint

    # Globally unique ids (shard index, id) so the oracle needs no de-duplication;
    # each shard answers its own top (offset + limit), best first.
    shards = []
    for index, answer in enumerate(answers):
        points = [ScoredPoint(id=f"{index}-{point_id}", score=float(score), version=0) for score, point_id in answer]
        points.sort(key=lambda point: -point.score if higher_is_better else point.score)
        shards.append(points[: offset + limit])
    page = merge_scored(shards, higher_is_better=higher_is_better, offset=offset, limit=limit)
    everything = sorted((point for shard in shards for point in shard),
                        key=lambda point: -point.score if higher_is_better else point.score)
    assert [point.score for point in page] == [point.score for point in everything[offset:offset + limit]]
    assert len({point.id for point in page}) == len(page)

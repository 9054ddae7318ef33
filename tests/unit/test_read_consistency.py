"""Read consistency: parsing, plans, and resolving replicas' answers
(hypothesis against a naive model of "present on at least `required`, in
its newest copy")."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qcluster.api.schema.parse import read_consistency
from qcluster.distributed.resolve import resolve_count, resolve_records, resolve_scored, resolve_scroll_page
from qcluster.errors import InvalidRequest
from qcluster.types import ReadConsistency, ReadConsistencyKind, Record, ScoredPoint


@pytest.mark.parametrize(("raw", "expected"), [
    (None, None),
    (2, ReadConsistency(ReadConsistencyKind.FACTOR, 2)),
    ("3", ReadConsistency(ReadConsistencyKind.FACTOR, 3)),
    ("all", ReadConsistency(ReadConsistencyKind.ALL)),
    ("Majority", ReadConsistency(ReadConsistencyKind.MAJORITY)),
    ("quorum", ReadConsistency(ReadConsistencyKind.QUORUM)),
    ("primary", ReadConsistency(ReadConsistencyKind.PRIMARY)),
])
def test_parse(raw: object, expected: ReadConsistency | None) -> None:
    assert read_consistency(raw) == expected


@pytest.mark.parametrize("raw", [0, -1, "0", "x", "1.5", 1.5, True, 101, [], "factor"])
def test_parse_refuses(raw: object) -> None:
    with pytest.raises(InvalidRequest, match="^consistency: "):
        read_consistency(raw)


@pytest.mark.parametrize(("consistency", "in_sync", "plan"), [
    (ReadConsistency(ReadConsistencyKind.FACTOR, 2), 3, (2, 2, 2)),
    (ReadConsistency(ReadConsistencyKind.MAJORITY), 3, (2, 2, 2)),
    (ReadConsistency(ReadConsistencyKind.MAJORITY), 4, (3, 3, 3)),
    (ReadConsistency(ReadConsistencyKind.QUORUM), 3, (3, 2, 2)),
    (ReadConsistency(ReadConsistencyKind.ALL), 2, (2, 2, 2)),
    (ReadConsistency(ReadConsistencyKind.PRIMARY), 3, (1, 1, 1)),
])
def test_plan(consistency: ReadConsistency, in_sync: int, plan: tuple[int, int, int]) -> None:
    assert consistency.plan(in_sync) == plan


def _record(point_id: int, variant: int) -> Record:
    return Record(id=point_id, payload={"v": variant}, vectors={"": np.array([float(point_id)], dtype=np.float32)},
                  version=variant)


# A replica's answer: ids 0..11, each in one of three versions (a replica may
# hold an older copy: the payload tells the version).
_answers = st.lists(st.dictionaries(st.integers(0, 11), st.integers(0, 2), max_size=12), min_size=1, max_size=4)


def _model(answers: list[dict[int, int]], required: int) -> set[tuple[int, int]]:
    """(id, newest version) of every id at least ``required`` answers hold."""
    votes: dict[int, int] = {}
    newest: dict[int, int] = {}
    for answer in answers:
        for point_id, version in answer.items():
            votes[point_id] = votes.get(point_id, 0) + 1
            newest[point_id] = max(version, newest.get(point_id, version))
    return {(point_id, newest[point_id]) for point_id, count in votes.items() if count >= required}


@settings(max_examples=200, deadline=None)
@given(answers=_answers, data=st.data())
def test_records_present_on_required_replicas(answers: list[dict[int, int]], data: st.DataObject) -> None:
    required = data.draw(st.integers(1, len(answers)))
    kept = resolve_records([[_record(i, v) for i, v in answer.items()] for answer in answers], required=required)
    got = [(record.id, (record.payload or {})["v"]) for record in kept]
    assert len(got) == len(set(got))
    assert set(got) == _model(answers, required)


@settings(max_examples=200, deadline=None)
@given(answers=_answers, data=st.data(), higher=st.booleans())
def test_scored_sorted_best_first(answers: list[dict[int, int]], data: st.DataObject, higher: bool) -> None:
    required = data.draw(st.integers(1, len(answers)))
    scored = [[ScoredPoint(id=i, score=float(i * 3 % 7), version=v, payload={"v": v}) for i, v in answer.items()]
              for answer in answers]
    kept = resolve_scored(scored, required=required, higher_is_better=higher)
    assert {(point.id, (point.payload or {})["v"]) for point in kept} == _model(answers, required)
    scores = [point.score for point in kept]
    assert scores == sorted(scores, reverse=higher)


def test_a_write_in_flight_reads_as_its_newer_copy_and_a_real_divergence_as_absent() -> None:
    older, newer = _record(1, 4), _record(1, 5)
    assert resolve_records([[older], [newer]], required=2) == [newer]
    assert resolve_records([[newer], [older]], required=2) == [newer]
    diverged = Record(id=1, payload={"v": "other"}, vectors=newer.vectors, version=5)
    assert resolve_records([[newer], [diverged]], required=2) == []
    assert resolve_records([[newer], [diverged], [_record(1, 6)]], required=3) == [_record(1, 6)]


@settings(max_examples=200, deadline=None)
@given(holdings=st.lists(st.sets(st.integers(0, 30)), min_size=1, max_size=4),
       limit=st.integers(1, 10), data=st.data())
def test_scroll_pages_visit_agreed_points_once(holdings: list[set[int]], limit: int, data: st.DataObject) -> None:
    """Paging through replicas' pages by id yields exactly the ids held by at least ``required`` of them."""
    required = data.draw(st.integers(1, len(holdings)))
    offset: int | None = None
    seen: list[int] = []
    for _ in range(100):
        pages = []
        for held in holdings:
            ids = sorted(point_id for point_id in held if offset is None or point_id >= offset)
            page = [Record(id=point_id, payload=None, vectors=None) for point_id in ids[:limit]]
            pages.append((page, ids[limit] if len(ids) > limit else None))
        records, offset = resolve_scroll_page(pages, required=required, order_by=None)
        seen += [int(record.id) for record in records]
        if offset is None:
            break
    votes = {point_id: sum(point_id in held for held in holdings) for held in holdings for point_id in held}
    assert seen == sorted(point_id for point_id, count in votes.items() if count >= required)


def test_count() -> None:
    assert resolve_count([301, 300, 300], required=3) == 300
    assert resolve_count([301, 300, 300], required=2) == 300
    assert resolve_count([301, 301, 300], required=2) == 301
    assert resolve_count([5], required=1) == 5

"""The filtered-scan cache: a repeated mid-selectivity filter is scored
exactly from a contiguous copy of its candidates, which a write to the
segment makes stale and the byte budget bounds."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from qcluster.engine import scan_cache, vector_index
from qcluster.engine.filters import parse_filter
from qcluster.engine.planner import Plan, choose_plan, search_segment
from qcluster.engine.segment import Segment
from qcluster.types import (
    CollectionConfig,
    Distance,
    HnswConfig,
    PayloadFieldSchema,
    PayloadSchemaType,
    SearchParams,
    VectorParams,
)

ROWS = 4000
DIM = 16
# No "small filter" exact path: only the scan cache can make a filtered query exact.
HNSW = HnswConfig(m=16, ef_construct=64, full_scan_threshold=0)
PARAMS = SearchParams(hnsw_ef=16)


@pytest.fixture(autouse=True)
def _fresh_cache() -> Iterator[None]:
    scan_cache.clear()
    yield
    scan_cache.set_budget_bytes(scan_cache.DEFAULT_BUDGET_BYTES)
    scan_cache.clear()


def _segment() -> tuple[Segment, np.ndarray]:
    rng = np.random.default_rng(3)
    matrix = rng.normal(size=(ROWS, DIM)).astype(np.float32)
    config = CollectionConfig(vectors={"": VectorParams(size=DIM, distance=Distance.DOT)})
    segment = Segment(segment_id=1, config=config, field_schemas={}, is_appendable=False)
    segment.assign_columns(ids=list(range(ROWS)), payloads=[{"k": n % 10} for n in range(ROWS)],
                           versions=np.arange(1, ROWS + 1, dtype=np.int64),
                           vectors={"": (matrix, np.ones(ROWS, dtype=bool))})
    segment.ensure_field_index("k", PayloadFieldSchema(type=PayloadSchemaType.INTEGER))
    segment.hnsw[""] = vector_index.build_hnsw(distance=Distance.DOT, parts=[matrix], m=16, ef_construct=64)
    segment.vectors[""].matrix = vector_index.stored_vectors(segment.hnsw[""])
    return segment, matrix


def _search(segment: Segment, queries: np.ndarray, k_value: int) -> list[list[int]]:
    flt = parse_filter({"must": [{"key": "k", "match": {"value": k_value}}]})
    top = search_segment(segment=segment, name="", distance=Distance.DOT, queries=queries, k=10, filter=flt,
                         params=PARAMS, hnsw=HNSW)
    return [offsets[:count].tolist() for offsets, count in zip(top.offsets, top.counts, strict=True)]


def _exact(matrix: np.ndarray, allowed: np.ndarray, queries: np.ndarray) -> list[list[int]]:
    candidates = np.flatnonzero(allowed)
    scores = queries @ matrix[candidates].T
    return [candidates[np.argsort(-row, kind="stable")[:10]].tolist() for row in scores]


def test_a_repeated_filter_is_scanned_exactly_from_its_cached_rows_until_the_segment_changes() -> None:
    segment, matrix = _segment()
    queries = np.random.default_rng(5).normal(size=(40, DIM)).astype(np.float32)
    allowed = np.arange(ROWS) % 10 == 3
    first = _search(segment, queries, 3)
    assert scan_cache._used == 0, "a filter seen once goes through HNSW, nothing is copied"  # noqa: SLF001
    assert all(allowed[offsets].all() for offsets in first)
    second = _search(segment, queries, 3)
    assert scan_cache._used == allowed.sum() * DIM * 4, "the second time its rows are kept"  # noqa: SLF001
    assert second == _exact(matrix, allowed, queries)
    assert _search(segment, queries, 3) == second

    # A tombstone makes the copy stale: the deleted row drops out of the answers.
    victim = second[0][0]
    segment.tombstone(victim, seq_no=ROWS + 1)
    allowed[victim] = False
    _search(segment, queries, 3)  # the mask is new at this version: HNSW again
    after = _search(segment, queries, 3)
    assert after == _exact(matrix, allowed, queries)
    assert victim not in after[0]


def test_the_budget_bounds_the_copies_and_zero_turns_the_scan_off() -> None:
    segment, _matrix = _segment()
    queries = np.random.default_rng(6).normal(size=(4, DIM)).astype(np.float32)
    one_filter = ROWS // 10 * DIM * 4
    scan_cache.set_budget_bytes(one_filter * 2)
    for k_value in (1, 2, 3):
        _search(segment, queries, k_value)
        _search(segment, queries, k_value)
        assert scan_cache._used <= one_filter * 2  # noqa: SLF001
    assert [key[2] for key in scan_cache._entries] == [  # noqa: SLF001
        parse_filter({"must": [{"key": "k", "match": {"value": value}}]}) for value in (2, 3)
    ], "least recently used out first"
    scan_cache.set_budget_bytes(0)
    assert scan_cache._used == 0  # noqa: SLF001
    _search(segment, queries, 4)
    _search(segment, queries, 4)
    assert not scan_cache._entries  # noqa: SLF001


def test_the_planner_scans_a_cached_filter_only_while_that_is_cheaper_than_filtered_hnsw() -> None:
    segment, _matrix = _segment()

    def plan(candidates: int, *, ready: bool, ef: int = 16) -> Plan:
        return choose_plan(segment=segment, name="", candidates=candidates, is_filtered=True,
                           params=SearchParams(hnsw_ef=ef), hnsw=HNSW, scan_ready=ready)

    # 10 %: ef 16 boosted to 100, so up to 2 * 100 * 16 = 3 200 rows are scanned.
    assert plan(400, ready=True) == Plan.EXACT
    assert plan(400, ready=False) == Plan.HNSW_FILTERED
    # 50 %: ef 16 boosted to 27: 864 rows at most, fewer than the 2 000 candidates.
    assert plan(2000, ready=True) == Plan.HNSW_FILTERED
    assert plan(2000, ready=True, ef=64) == Plan.EXACT  # 64 * 1.74 = 111 -> 3 552 rows

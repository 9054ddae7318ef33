"""Exact scoring equals plain numpy; HNSW finds the true neighbours; the planner's choices."""

from __future__ import annotations

import numpy as np
import pytest

from qcluster.engine import vector_index
from qcluster.engine.planner import Plan, choose_plan
from qcluster.engine.segment import Segment
from qcluster.types import CollectionConfig, Distance, HnswConfig, SearchParams, VectorParams


def _numpy_scores(distance: Distance, rows: np.ndarray, query: np.ndarray) -> np.ndarray:
    if distance in (Distance.COSINE, Distance.DOT):
        return rows @ query
    if distance == Distance.EUCLID:
        return np.linalg.norm(rows - query, axis=1)
    return np.abs(rows - query).sum(axis=1)


@pytest.mark.parametrize("distance", list(Distance))
def test_exact_top_k_equals_numpy(distance: Distance) -> None:
    rng = np.random.default_rng(4)
    matrix = rng.normal(size=(2000, 24)).astype(np.float32) * 3
    if distance == Distance.COSINE:
        matrix = vector_index.normalize_rows(matrix)
    queries = rng.normal(size=(5, 24)).astype(np.float32)
    if distance == Distance.COSINE:
        queries = vector_index.normalize_rows(queries)
    candidates = np.flatnonzero(rng.random(2000) < 0.5)
    results = vector_index.exact_top_k(distance=distance, rows=matrix[candidates], candidates=candidates, queries=queries,
                                       k=10)
    for query, (keys, offsets) in zip(queries, results, strict=True):
        scores = _numpy_scores(distance, matrix[candidates], query)
        order = np.argsort(-scores if distance.higher_is_better else scores)[:10]
        assert offsets.tolist() == candidates[order].tolist()
        np.testing.assert_allclose(vector_index.rank_keys_to_scores(distance, keys), scores[order], atol=1e-5)


@pytest.mark.parametrize("distance", list(Distance))
def test_hnsw_recall_and_selector(distance: Distance) -> None:
    rng = np.random.default_rng(9)
    matrix = rng.normal(size=(3000, 16)).astype(np.float32)
    if distance == Distance.COSINE:
        matrix = vector_index.normalize_rows(matrix)
    index = vector_index.build_hnsw(distance=distance, parts=[matrix[:1000], matrix[1000:]], m=16, ef_construct=100)
    queries = matrix[:20] + np.float32(0.01)
    allowed = rng.random(3000) < 0.3
    approximate = vector_index.hnsw_top_k(distance=distance, index=index, queries=queries, k=10, ef=200, allowed=allowed)
    exact = vector_index.exact_top_k(
        distance=distance, rows=matrix[allowed], candidates=np.flatnonzero(allowed), queries=queries, k=10
    )
    hits = 0
    for (_akeys, aoffsets), (_ekeys, eoffsets) in zip(approximate, exact, strict=True):
        assert allowed[aoffsets].all(), "the selector excludes rows"
        hits += len(set(aoffsets.tolist()) & set(eoffsets.tolist()))
    assert hits / 200 >= 0.9


def _segment(count: int, *, with_hnsw: bool) -> Segment:
    config = CollectionConfig(vectors={"": VectorParams(size=256, distance=Distance.DOT)})
    segment = Segment(segment_id=1, config=config, field_schemas={}, is_appendable=not with_hnsw)
    segment.count = count
    if with_hnsw:
        segment.hnsw[""] = object()
    return segment


def test_planner_choices() -> None:
    hnsw = HnswConfig(full_scan_threshold=100)  # 100 KB = 100 rows of 256 floats
    plain = _segment(1000, with_hnsw=False)
    indexed = _segment(1000, with_hnsw=True)
    default = SearchParams()

    def plan(segment: Segment, candidates: int, *, is_filtered: bool, params: SearchParams = default) -> Plan:
        return choose_plan(segment=segment, name="", candidates=candidates, is_filtered=is_filtered, params=params, hnsw=hnsw)

    assert plan(indexed, 0, is_filtered=True) == Plan.SKIP
    assert plan(plain, 1000, is_filtered=False) == Plan.EXACT
    assert plan(plain, 1000, is_filtered=False, params=SearchParams(indexed_only=True)) == Plan.SKIP
    assert plan(_segment(50, with_hnsw=False), 50, is_filtered=False, params=SearchParams(indexed_only=True)) == Plan.EXACT
    assert plan(indexed, 1000, is_filtered=False) == Plan.HNSW
    assert plan(indexed, 1000, is_filtered=False, params=SearchParams(exact=True)) == Plan.EXACT
    assert plan(indexed, 99, is_filtered=True) == Plan.EXACT
    assert plan(indexed, 500, is_filtered=True) == Plan.HNSW_FILTERED
    assert plan(indexed, 990, is_filtered=False) == Plan.HNSW_FILTERED, "tombstones need the selector"


def test_filtered_ef_boost_curve() -> None:
    from qcluster.engine.planner import filtered_ef_boost

    assert filtered_ef_boost(rows=100, candidates=100) == 1.0
    assert 1.5 <= filtered_ef_boost(rows=100, candidates=50) < 1.8  # ~50 %: ef x1.5 measured enough
    assert filtered_ef_boost(rows=1000, candidates=102) >= 6.0  # ~10 % by year: ef x6 measured for 0.956
    assert filtered_ef_boost(rows=1000, candidates=1) == 10.0  # capped; the exact path serves such filters

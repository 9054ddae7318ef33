"""Recall@10 on the real pypi-minilm-100k embeddings with default HNSW settings.

Unfiltered queries are checked against the dataset's exact ground truth;
filtered queries (integer range on ``year``, keyword on ``name``, text and
null checks) against an exact numpy computation over the filtered subset.
The collection uses the defaults a user gets, so the optimizer seals and
indexes the data the way it would in production.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qcluster.engine import optimizer
from qcluster.engine.shard import LocalShard
from qcluster.operations import CreateFieldIndex, PointsBatch, UpsertPoints
from qcluster.types import (
    CollectionConfig,
    Distance,
    PayloadFieldSchema,
    PayloadSchemaType,
    QueryRequest,
    SearchParams,
    VectorParams,
)

DATASET = Path(__file__).resolve().parents[3] / "shared" / "datasets" / "pypi-minilm-100k"
QUERIES = 300
RECALL_MIN = 0.95


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    base = np.load(DATASET / "base.f16.npy").astype(np.float32)
    queries = np.load(DATASET / "queries.f16.npy").astype(np.float32)[:QUERIES]
    with gzip.open(DATASET / "base.jsonl.gz", "rt") as handle:
        payloads = [json.loads(line) for line in handle]
    return {"base": base, "queries": queries, "gt": np.load(DATASET / "gt_ip_top100.npy")[:QUERIES], "payloads": payloads}


@pytest.fixture(scope="module")
def shard(data: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalShard]:
    config = CollectionConfig(vectors={"": VectorParams(size=384, distance=Distance.COSINE)})
    shard = LocalShard.open(tmp_path_factory.mktemp("recall"), config)
    for field, kind in (("year", PayloadSchemaType.INTEGER), ("name", PayloadSchemaType.KEYWORD)):
        shard.apply(CreateFieldIndex(field_name=field, schema=PayloadFieldSchema(type=kind)))
    base, payloads = data["base"], data["payloads"]
    for start in range(0, base.shape[0], 2000):
        end = start + 2000
        batch = PointsBatch(
            ids=tuple(range(start, end)), vectors={"": base[start:end]}, present={"": None}, payloads=tuple(payloads[start:end])
        )
        shard.apply(UpsertPoints(points=batch))
        # Run the optimizer as its thread would between writes.
        task = optimizer.plan_task(shard)
        if task is not None:
            optimizer.run_task(shard, task)
    for _ in range(20):
        task = optimizer.plan_task(shard)
        if task is None:
            break
        optimizer.run_task(shard, task)
    assert all(segment.hnsw for segment in shard.sealed), "every sealed segment is indexed"
    yield shard
    shard.close()


def _recall(found: list[list[int]], truth: list[list[int]]) -> float:
    scores = [len(set(f) & set(t)) / max(1, min(10, len(t))) for f, t in zip(found, truth, strict=True)]
    return float(np.mean(scores))


def test_unfiltered_recall(shard: LocalShard, data: dict[str, Any]) -> None:
    results = shard.search_batch([QueryRequest(vector=query, limit=10) for query in data["queries"]])
    recall = _recall([[point.id for point in result] for result in results], [row[:10].tolist() for row in data["gt"]])
    print(f"unfiltered recall@10 = {recall:.4f} over {len(shard.sealed)} sealed segments")
    assert recall >= RECALL_MIN


def _filtered_truth(data: dict[str, Any], mask: np.ndarray) -> list[list[int]]:
    ids = np.flatnonzero(mask)
    scores = data["queries"] @ data["base"][ids].T
    top = np.argsort(-scores, axis=1)[:, :10]
    return [ids[row].tolist() for row in top]


def _year_mask(data: dict[str, Any], low: int, high: int) -> np.ndarray:
    return np.array([low <= payload["year"] <= high for payload in data["payloads"]])


def _names_sample(data: dict[str, Any]) -> list[str]:
    """Names of a fixed 5% of the points (names are unique in this dataset)."""
    rng = np.random.default_rng(0)
    rows = rng.choice(len(data["payloads"]), size=len(data["payloads"]) // 20, replace=False)
    return sorted(data["payloads"][row]["name"] for row in rows)


def _name_mask(data: dict[str, Any]) -> np.ndarray:
    names = set(_names_sample(data))
    return np.array([payload["name"] in names for payload in data["payloads"]])


# Years skew recent: >= 2025 is ~51% of points, 2020-2021 ~11%, <= 2011 ~1%.
@pytest.mark.parametrize(
    ("label", "query_filter", "mask_of"),
    [
        ("year ~51%", lambda d: {"must": [{"key": "year", "range": {"gte": 2025}}]}, lambda d: _year_mask(d, 2025, 9999)),
        (
            "year ~11%",
            lambda d: {"must": [{"key": "year", "range": {"gte": 2020, "lte": 2021}}]},
            lambda d: _year_mask(d, 2020, 2021),
        ),
        ("year ~1%", lambda d: {"must": [{"key": "year", "range": {"lte": 2011}}]}, lambda d: _year_mask(d, 0, 2011)),
        (
            "rank is null (unindexed key)",
            lambda d: {"must": [{"is_null": {"key": "rank"}}]},
            lambda d: np.array([payload["rank"] is None for payload in d["payloads"]]),
        ),
        (
            "name keyword any ~5%",
            lambda d: {"must": [{"key": "name", "match": {"any": _names_sample(d)}}]},
            _name_mask,
        ),
    ],
)
def test_filtered_recall(shard: LocalShard, data: dict[str, Any], label: str, query_filter: Any, mask_of: Any) -> None:
    query_filter = query_filter(data)
    mask = mask_of(data)
    assert mask.any()
    truth = _filtered_truth(data, mask)
    results = shard.search_batch([QueryRequest(vector=query, filter=query_filter, limit=10) for query in data["queries"]])
    found = [[point.id for point in result] for result in results]
    for result in found:
        assert all(mask[point_id] for point_id in result), "every hit satisfies the filter"
    recall = _recall(found, truth)
    print(f"{label}: selectivity {mask.mean():.3%}, recall@10 = {recall:.4f}")
    assert recall >= RECALL_MIN


def test_exact_equals_numpy(shard: LocalShard, data: dict[str, Any]) -> None:
    queries = data["queries"][:20]
    results = shard.search_batch([QueryRequest(vector=q, limit=10, params=SearchParams(exact=True)) for q in queries])
    norms = np.linalg.norm(data["base"], axis=1, keepdims=True)
    normalized = data["base"] / norms
    for query, result in zip(queries, results, strict=True):
        scores = normalized @ (query / np.linalg.norm(query))
        order = np.argsort(-scores)[:10]
        assert [point.id for point in result] == order.tolist()
        np.testing.assert_allclose([point.score for point in result], scores[order], atol=1e-5)

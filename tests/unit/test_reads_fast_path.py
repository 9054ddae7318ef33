"""The ids-and-scores answers of ``engine.reads`` (ScoredPoints without
payload, and the column path of dense queries) equal the general path (the
one that also returns payloads), thresholds included, over several segments."""

from __future__ import annotations

import dataclasses
import random
import uuid
from pathlib import Path

import numpy as np
import pytest

from qcluster.engine import optimizer
from qcluster.engine.shard import LocalShard
from qcluster.operations import DeletePoints, PointSelector, UpsertPoints
from qcluster.types import PayloadSelector, QueryRequest, SearchParams
from tests.unit.test_shard import _batch, _config


@pytest.mark.parametrize("exact", [True, False])
def test_fast_path_equals_general_path(tmp_path: Path, exact: bool) -> None:
    rng = random.Random(17)
    shard = LocalShard.open(tmp_path, _config(indexing_threshold=10_000_000))
    batch, _count = _batch(list(range(200)), rng)
    shard.apply(UpsertPoints(points=batch))
    vectors = np.random.default_rng(2).normal(size=(30, 4)).astype(np.float32)
    for row, vector in enumerate(vectors):
        threshold = None if row % 3 == 0 else float(np.random.default_rng(row).uniform(-1.0, 1.0))
        fast = QueryRequest(vector=vector, using="a", limit=1 + row % 12, score_threshold=threshold,
                            params=SearchParams(exact=exact))
        general = dataclasses.replace(fast, with_payload=PayloadSelector(enabled=True))
        quick, full = shard.search_batch([fast, general])
        assert [(point.id, point.score, point.version) for point in quick] == [
            (point.id, point.score, point.version) for point in full]
        assert all(point.payload is None for point in quick)
        if threshold is not None:
            assert all(point.score >= threshold for point in quick)
    shard.close()


@pytest.mark.parametrize("exact", [True, False])
@pytest.mark.parametrize(("uuids", "tail"), [(False, True), (False, False), (True, True), (True, False)])
def test_columns_equal_points_over_several_segments(tmp_path: Path, exact: bool, uuids: bool, tail: bool) -> None:
    """Sealed segments gather ids as a uint64 array (``Segment.id_array``);
    a segment with a UUID, or hits in the appendable segment, take the list
    path: every combination answers as the ScoredPoint path does."""

    def id_of(number: int) -> int | str:
        return str(uuid.UUID(int=number)) if uuids and 150 <= number < 300 and number % 2 == 0 else number

    def upsert(numbers: range) -> None:
        batch, _count = _batch(list(numbers), rng)
        shard.apply(UpsertPoints(points=dataclasses.replace(batch, ids=tuple(id_of(number) for number in numbers))))

    rng = random.Random(5)
    shard = LocalShard.open(tmp_path, _config(indexing_threshold=1))
    for start in (0, 150):  # two sealed segments with graphs (unless exact) ...
        upsert(range(start, start + 150))
        optimizer.run_task(shard, optimizer.Task(optimizer.TaskKind.SEAL))
    while (task := optimizer.plan_task(shard)) is not None and task.kind == optimizer.TaskKind.INDEX:
        optimizer.run_task(shard, task)
    if tail:  # ... an appendable one, overwriting some ids
        upsert(range(280, 330))
    shard.apply(DeletePoints(selector=PointSelector(ids=tuple(id_of(number) for number in range(0, 300, 7)))))
    assert len(shard.segments()) >= 2
    sealed_arrays = [segment.id_array is not None for segment in shard.sealed]
    assert sealed_arrays == ([True, not uuids] if len(sealed_arrays) == 2 else [not uuids])
    queries = np.random.default_rng(8).normal(size=(25, 4)).astype(np.float32)
    for limit, threshold in ((1, None), (10, None), (40, None), (10, 0.2), (400, None)):
        request = QueryRequest(vector=queries[0], using="a", limit=limit, score_threshold=threshold,
                               params=SearchParams(exact=exact, hnsw_ef=400))
        columns = shard.search_columns(request, queries)
        points = shard.search_batch([dataclasses.replace(request, vector=row) for row in queries])
        assert columns.counts.tolist() == [len(answer) for answer in points]
        assert columns.id_list() == [point.id for answer in points for point in answer]
        assert all(type(point_id) in (int, str) for point_id in columns.id_list())
        assert isinstance(columns.ids, np.ndarray) == (not uuids and not tail)
        assert columns.scores.tolist() == [np.float32(point.score) for answer in points for point in answer]
        assert columns.versions.tolist() == [point.version for answer in points for point in answer]
        if exact:  # against a plain numpy ranking of the live points
            everything = [id_of(number) for number in range(330)]
            live = {point.id: point for point in shard.retrieve(everything, with_payload=PayloadSelector(),
                                                                 with_vector=True)}
            ids = list(live)
            matrix = np.stack([live[point_id].vectors["a"] for point_id in ids])
            for row, answer in enumerate(points):
                scores = matrix @ queries[row]
                order = np.argsort(-scores, kind="stable")
                expected = [ids[index] for index in order if threshold is None or scores[index] >= threshold][:limit]
                assert sorted((point.id for point in answer), key=str) == sorted(expected, key=str)
    shard.close()


def test_queries_answered_together_equal_each_answered_alone(tmp_path: Path) -> None:
    """The API's query batching (REST /points/query and gRPC Query under load):
    plain queries that share a search but not a score threshold, and queries
    that ask for payloads, keep their own answers."""
    from qcluster.api import actions  # noqa: PLC0415
    from qcluster.storage.toc import TableOfContents  # noqa: PLC0415

    toc = TableOfContents.open(tmp_path)
    try:
        actions.create_collection(toc, name="c", raw={"vectors": {"size": 4, "distance": "Dot"}})
        rng = np.random.default_rng(3)
        vectors = rng.normal(size=(300, 4)).astype(np.float32)
        actions.write(toc, name="c", wait=True, kind="upsert", raw={"batch": {
            "ids": list(range(300)), "vectors": vectors.tolist(), "payloads": [{"n": i} for i in range(300)]}})
        probe = rng.normal(size=4).astype(np.float32).tolist()
        bodies = [
            {"query": probe, "limit": 20},
            {"query": probe, "limit": 20, "score_threshold": 4.0},
            {"query": probe, "limit": 20, "score_threshold": 5.0},
            {"query": probe, "limit": 20, "with_payload": True},
            {"query": rng.normal(size=4).tolist(), "limit": 20, "score_threshold": 4.0},
            {"query": probe, "limit": 5, "offset": 3},
        ]
        alone = [actions.query_many(toc, [("c", body, None)])[0] for body in bodies]
        together = actions.query_many(toc, [("c", body, None) for body in bodies])
        # Equal but for the last bits of exact scores: a matrix product over
        # several query rows may round differently than over one.
        def without_scores(answers: list[dict]) -> list[list[dict]]:
            return [[{**point, "score": None} for point in answer["points"]] for answer in answers]

        assert without_scores(together) == without_scores(alone)
        for answer_together, answer_alone in zip(together, alone, strict=True):
            np.testing.assert_allclose([point["score"] for point in answer_together["points"]],
                                       [point["score"] for point in answer_alone["points"]], rtol=1e-5)
        assert len(alone[1]["points"]) > len(alone[2]["points"]), "the thresholds differ in effect"
        assert all(point["score"] >= 5.0 for point in alone[2]["points"])
        assert alone[3]["points"][0]["payload"] == {"n": alone[3]["points"][0]["id"]}
    finally:
        toc.close()

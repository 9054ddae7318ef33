"""LocalShard against a dict model: random operations, optimizer tasks and
restarts (clean, and abandoned mid-way as a crash would) must never change
what the shard holds."""

from __future__ import annotations

import dataclasses
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qcluster.engine import optimizer
from qcluster.engine.shard import LocalShard
from qcluster.errors import InvalidRequest, NotFound
from qcluster.operations import (
    ClearPayload,
    CreateFieldIndex,
    DeletePayload,
    DeletePoints,
    DeleteVectors,
    OverwritePayload,
    PointsBatch,
    PointSelector,
    SetPayload,
    UpdateVectors,
    UpsertPoints,
)
from qcluster.types import (
    CollectionConfig,
    Distance,
    HnswConfig,
    OptimizersConfig,
    PayloadFieldSchema,
    PayloadSchemaType,
    PayloadSelector,
    QueryRequest,
    SearchParams,
    VectorParams,
)

DIM = 4
ALL = PayloadSelector()


def _config(*, indexing_threshold: int = 1) -> CollectionConfig:
    return CollectionConfig(
        vectors={"a": VectorParams(size=DIM, distance=Distance.DOT), "b": VectorParams(size=2, distance=Distance.EUCLID)},
        is_named_vectors=True,
        hnsw_config=HnswConfig(full_scan_threshold=0),
        optimizers_config=OptimizersConfig(indexing_threshold=indexing_threshold, vacuum_min_vector_number=10, default_segment_number=2),
    )


def _one_vector_config(*, indexing_threshold: int) -> CollectionConfig:
    """One vector ``a`` (DOT), a graph for any segment size."""
    return CollectionConfig(
        vectors={"a": VectorParams(size=DIM, distance=Distance.DOT)},
        is_named_vectors=True,
        hnsw_config=HnswConfig(full_scan_threshold=0),
        optimizers_config=OptimizersConfig(indexing_threshold=indexing_threshold),
    )


def _batch(ids: list[int], rng: random.Random) -> PointsBatch:
    count = len(ids)
    a = np.array([[rng.uniform(-1, 1) for _ in range(DIM)] for _ in ids], dtype=np.float32)
    b = np.array([[rng.uniform(-1, 1) for _ in range(2)] for _ in ids], dtype=np.float32)
    present_b = np.array([rng.random() < 0.7 for _ in ids], dtype=bool)
    return PointsBatch(
        ids=tuple(ids),
        vectors={"a": a, "b": b},
        present={"a": None, "b": present_b},
        payloads=tuple({"n": point_id % 5, "tag": rng.choice(["x", "y"])} for point_id in ids),
    ), count


Model = dict[int, tuple[dict[str, Any], dict[str, list[float]]]]


def _apply_random(shard: LocalShard, model: Model, rng: random.Random) -> None:
    choice = rng.random()
    if choice < 0.45 or not model:
        ids = rng.sample(range(300), rng.randint(1, 25))
        batch, _count = _batch(ids, rng)
        shard.apply(UpsertPoints(points=batch))
        for row, point_id in enumerate(batch.ids):
            vectors = {"a": batch.vectors["a"][row].tolist()}
            if batch.present["b"][row]:
                vectors["b"] = batch.vectors["b"][row].tolist()
            model[point_id] = (dict(batch.payloads[row]), vectors)
    elif choice < 0.6:
        ids = rng.sample(sorted(model), min(len(model), rng.randint(1, 10)))
        shard.apply(DeletePoints(selector=PointSelector(ids=tuple(ids))))
        for point_id in ids:
            del model[point_id]
    elif choice < 0.7:
        value = rng.randint(0, 4)
        shard.apply(DeletePoints(selector=PointSelector(filter={"must": [{"key": "n", "match": {"value": value}}]})))
        for point_id in [pid for pid, (payload, _v) in model.items() if payload.get("n") == value]:
            del model[point_id]
    elif choice < 0.8:
        ids = rng.sample(sorted(model), min(len(model), 3))
        shard.apply(SetPayload(selector=PointSelector(ids=tuple(ids)), payload={"extra": rng.randint(0, 9)}))
        for point_id in ids:
            payload, vectors = model[point_id]
            model[point_id] = ({**payload, "extra": None}, vectors)
            model[point_id][0]["extra"] = shard.retrieve([point_id], with_payload=ALL, with_vector=False)[0].payload["extra"]
    elif choice < 0.87:
        ids = rng.sample(sorted(model), min(len(model), 3))
        shard.apply(DeletePayload(selector=PointSelector(ids=tuple(ids)), keys=("tag",)))
        for point_id in ids:
            model[point_id][0].pop("tag", None)
    elif choice < 0.93:
        ids = rng.sample(sorted(model), min(len(model), 2))
        batch, _count = _batch(ids, rng)
        only_a = PointsBatch(ids=batch.ids, vectors={"a": batch.vectors["a"]}, present={"a": None}, payloads=batch.payloads)
        shard.apply(UpdateVectors(points=only_a))
        for row, point_id in enumerate(ids):
            model[point_id][1]["a"] = batch.vectors["a"][row].tolist()
    else:
        ids = rng.sample(sorted(model), min(len(model), 2))
        shard.apply(DeleteVectors(selector=PointSelector(ids=tuple(ids)), names=("b",)))
        for point_id in ids:
            model[point_id][1].pop("b", None)


def _assert_matches(shard: LocalShard, model: Model) -> None:
    assert shard.count(filter=None) == len(model)
    records = shard.retrieve(sorted(model), with_payload=ALL, with_vector=True)
    assert [record.id for record in records] == sorted(model)
    for record in records:
        payload, vectors = model[record.id]
        assert record.payload == payload, record.id
        assert set(record.vectors) == set(vectors), record.id
        for name, value in vectors.items():
            np.testing.assert_allclose(record.vectors[name], value, rtol=1e-6)
    page, _next = shard.scroll(filter=None, limit=1000, offset=None, order_by=None, with_payload=ALL, with_vector=False)
    assert [record.id for record in page] == sorted(model)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_operations_optimizer_and_restarts(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    config = _config()
    shard = LocalShard.open(tmp_path, config)
    model: Model = {}
    for step in range(160):
        _apply_random(shard, model, rng)
        roll = rng.random()
        if roll < 0.15:
            task = optimizer.plan_task(shard)
            if task is not None:
                optimizer.run_task(shard, task)
        elif roll < 0.2:
            shard.close()
            shard = LocalShard.open(tmp_path, config)
        elif roll < 0.25:
            # A crash: the object is abandoned without close; only fsynced state counts.
            shard = LocalShard.open(tmp_path, config)
        if step % 20 == 0:
            _assert_matches(shard, model)
    _assert_matches(shard, model)
    shard.close()
    _assert_matches(LocalShard.open(tmp_path, config), model)


def test_crash_between_segment_write_and_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rng = random.Random(7)
    config = _config()
    shard = LocalShard.open(tmp_path, config)
    model: Model = {}
    for _ in range(30):
        _apply_random(shard, model, rng)

    def crash(*_args: object, **_kwargs: object) -> None:
        raise OSError("simulated crash before the manifest rename")

    monkeypatch.setattr(optimizer, "write_checkpoint", crash)
    with pytest.raises(OSError):
        optimizer.run_task(shard, optimizer.Task(optimizer.TaskKind.SEAL))
    monkeypatch.undo()
    reopened = LocalShard.open(tmp_path, config)
    _assert_matches(reopened, model)
    segment_dirs = {path.name for path in (tmp_path / "segments").iterdir()}
    assert segment_dirs == {str(segment.segment_id) for segment in reopened.sealed}, "orphan segment removed"


def test_writes_during_optimization_are_kept(tmp_path: Path) -> None:
    rng = random.Random(11)
    config = _config()
    shard = LocalShard.open(tmp_path, config)
    model: Model = {}
    for _ in range(40):
        _apply_random(shard, model, rng)
    stop = threading.Event()

    def optimize() -> None:
        for _ in range(200):
            if stop.is_set():
                return
            task = optimizer.plan_task(shard)
            if task is not None:
                optimizer.run_task(shard, task)

    thread = threading.Thread(target=optimize)
    thread.start()
    for _ in range(150):
        _apply_random(shard, model, rng)
    stop.set()
    thread.join(60)
    assert not thread.is_alive()
    _assert_matches(shard, model)
    shard.close()
    _assert_matches(LocalShard.open(tmp_path, config), model)


def test_vacuum_frees_dead_rows(tmp_path: Path) -> None:
    config = _config()
    shard = LocalShard.open(tmp_path, config)
    rng = random.Random(3)
    batch, _count = _batch(list(range(100)), rng)
    shard.apply(UpsertPoints(points=batch))
    optimizer.run_task(shard, optimizer.Task(optimizer.TaskKind.SEAL))
    assert [segment.count for segment in shard.sealed] == [100]
    shard.apply(DeletePoints(selector=PointSelector(ids=tuple(range(50)))))
    task = optimizer.plan_task(shard)
    assert task is not None and task.kind == optimizer.TaskKind.VACUUM
    optimizer.run_task(shard, task)
    assert [segment.count for segment in shard.sealed] == [50]
    assert shard.count(filter=None) == 50


def test_invalid_operations_write_nothing(tmp_path: Path) -> None:
    config = _config()
    shard = LocalShard.open(tmp_path, config)
    bad = PointsBatch(
        ids=(1, 2),
        vectors={"a": np.array([[1, 2, 3, 4], [np.nan, 0, 0, 0]], dtype=np.float32)},
        present={"a": None},
        payloads=({}, {}),
    )
    with pytest.raises(InvalidRequest, match=r"points\[1\]\.vector\.a"):
        shard.apply(UpsertPoints(points=bad))
    wrong_dim = PointsBatch(ids=(1,), vectors={"a": np.zeros((1, 3), np.float32)}, present={"a": None}, payloads=({},))
    with pytest.raises(InvalidRequest, match="dimension"):
        shard.apply(UpsertPoints(points=wrong_dim))
    with pytest.raises(NotFound):
        shard.apply(OverwritePayload(selector=PointSelector(ids=(42,)), payload={}))
    assert shard.last_seq == 0
    assert shard.count(filter=None) == 0


def test_filtered_search_uses_index_and_matches_exact(tmp_path: Path) -> None:
    config = _config()
    shard = LocalShard.open(tmp_path, config)
    rng = random.Random(5)
    batch, _count = _batch(list(range(400)), rng)
    shard.apply(UpsertPoints(points=batch))
    shard.apply(CreateFieldIndex(field_name="n", schema=PayloadFieldSchema(type=PayloadSchemaType.INTEGER)))
    optimizer.run_task(shard, optimizer.Task(optimizer.TaskKind.SEAL))
    shard.apply(ClearPayload(selector=PointSelector(ids=(1, 2, 3))))
    query_filter = {"must": [{"key": "n", "range": {"gte": 3}}]}
    query = batch.vectors["a"][10]
    approximate = shard.search_batch([QueryRequest(vector=query, using="a", filter=query_filter, limit=10)])[0]
    exact = shard.search_batch(
        [QueryRequest(vector=query, using="a", filter=query_filter, limit=10, params=SearchParams(exact=True))]
    )[0]
    keep = [point_id for point_id in range(400) if point_id % 5 >= 3 and point_id not in (1, 2, 3)]
    scores = batch.vectors["a"][keep] @ query
    expected = [keep[i] for i in np.argsort(-scores)[:10]]
    assert [point.id for point in exact] == expected
    assert len({point.id for point in approximate} & set(expected)) >= 9


@pytest.mark.parametrize(
    "operation",
    [
        SetPayload(selector=PointSelector(ids=(1,)), payload={"x": 1}, key="a..b"),
        DeletePayload(selector=PointSelector(ids=(1,)), keys=("ok", ".bad")),
        CreateFieldIndex(field_name="", schema=PayloadFieldSchema(type=PayloadSchemaType.KEYWORD)),
    ],
)
def test_bad_key_paths_are_rejected_before_logging(tmp_path: Path, operation: object) -> None:
    config = _config()
    shard = LocalShard.open(tmp_path, config)
    batch, _count = _batch([1], random.Random(1))
    shard.apply(UpsertPoints(points=batch))
    with pytest.raises(InvalidRequest):
        shard.apply(operation)  # type: ignore[arg-type]
    assert shard.last_seq == 1
    shard.apply(DeletePoints(selector=PointSelector(ids=(1,))))
    shard.close()
    reopened = LocalShard.open(tmp_path, config)
    assert reopened.last_seq == 2, "the rejected operation left no record to replay"


def test_close_cancels_a_running_index_build(tmp_path: Path) -> None:
    from qcluster.engine.vector_index import BuildCancelled

    config = _config()
    shard = LocalShard.open(tmp_path, config)
    batch, _count = _batch(list(range(200)), random.Random(2))
    shard.apply(UpsertPoints(points=batch))
    shard.is_closing.set()  # what close() does first, before it waits for the optimizer
    with pytest.raises(BuildCancelled):
        optimizer.run_task(shard, optimizer.Task(optimizer.TaskKind.SEAL))
    shard.close()
    reopened = LocalShard.open(tmp_path, config)
    assert reopened.count(filter=None) == 200, "the WAL still holds what the cancelled build did not persist"


def test_plain_segments_are_indexed_together(tmp_path: Path) -> None:
    """A bulk load with indexing off, sealed into several plain segments, becomes one graph."""
    deferred = _one_vector_config(indexing_threshold=0)
    shard = LocalShard.open(tmp_path, deferred)
    rng = np.random.default_rng(3)
    for start in range(0, 300, 100):
        ids = tuple(range(start, start + 100))
        batch = PointsBatch(
            ids=ids, vectors={"a": rng.normal(size=(100, DIM)).astype(np.float32)}, present={"a": None}, payloads=({},) * 100
        )
        shard.apply(UpsertPoints(points=batch))
        optimizer.run_task(shard, optimizer.Task(optimizer.TaskKind.SEAL))  # as the WAL bound would
    assert [bool(segment.hnsw) for segment in shard.sealed] == [False, False, False]
    shard.config = dataclasses.replace(deferred, optimizers_config=OptimizersConfig(indexing_threshold=1))
    task = optimizer.plan_task(shard)
    assert task is not None and task.kind == optimizer.TaskKind.INDEX and len(task.segment_ids) == 3
    optimizer.run_task(shard, task)
    assert [(segment.count, bool(segment.hnsw)) for segment in shard.sealed] == [(300, True)]
    assert optimizer.plan_task(shard) is None


def test_seals_extend_the_indexed_segment(tmp_path: Path) -> None:
    """With indexing on, appendable rows are added to the indexed segment's
    graph (one growing graph) instead of becoming segments of their own;
    updated and deleted points stay correct through the extension and a restart."""
    config = _one_vector_config(indexing_threshold=1)
    shard = LocalShard.open(tmp_path, config)
    rng = np.random.default_rng(5)
    model: dict[int, np.ndarray] = {}

    def upsert(ids: list[int]) -> None:
        vectors = rng.normal(size=(len(ids), DIM)).astype(np.float32)
        shard.apply(UpsertPoints(points=PointsBatch(ids=tuple(ids), vectors={"a": vectors}, present={"a": None},
                                                    payloads=({},) * len(ids))))
        model.update(zip(ids, vectors, strict=True))

    def optimize() -> list[optimizer.TaskKind]:
        kinds = []
        for _ in range(10):  # bounded
            task = optimizer.plan_task(shard)
            if task is None:
                return kinds
            kinds.append(task.kind)
            optimizer.run_task(shard, task)
        raise AssertionError("the optimizer did not settle")

    def assert_exact(current: LocalShard) -> None:
        ids = np.array(sorted(model))
        matrix = np.stack([model[point_id] for point_id in ids])
        for query in rng.normal(size=(20, DIM)).astype(np.float32):
            request = QueryRequest(vector=query, using="a", limit=10, params=SearchParams(hnsw_ef=512))
            (found,) = current.search_batch([request])
            expected = ids[np.argsort(-(matrix @ query), kind="stable")[:10]]
            assert [point.id for point in found] == expected.tolist()

    upsert(list(range(100)))
    assert optimize() == [optimizer.TaskKind.SEAL]
    (indexed,) = shard.sealed
    assert set(indexed.hnsw) == {"a"}
    upsert(list(range(100, 200)))
    upsert(list(range(10)))  # updates: their old rows die in the indexed segment
    shard.apply(DeletePoints(selector=PointSelector(ids=tuple(range(10, 15)))))
    for point_id in range(10, 15):
        del model[point_id]
    assert optimize() == [optimizer.TaskKind.EXTEND]
    (extended,) = shard.sealed
    assert extended.segment_id != indexed.segment_id
    assert extended.count == 100 + 110 and extended.hnsw["a"].ntotal == 210, "old rows kept, new rows added"
    assert extended.live_count() == len(model) == 195
    assert extended.ids[:100] == indexed.ids[:100], "the old rows keep their offsets"
    assert_exact(shard)
    shard.close()
    reopened = LocalShard.open(tmp_path, config)
    assert [(segment.count, segment.live_count()) for segment in reopened.sealed] == [(210, 195)]
    assert_exact(reopened)
    reopened.close()

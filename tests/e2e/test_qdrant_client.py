"""The unmodified qdrant-client (REST) against a real ``qcluster serve``.

Most tests share one node (distinct collection names); the restart test has
its own node and data directory.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from qdrant_client import QdrantClient, models

if TYPE_CHECKING:
    from tests.e2e.conftest import Node

pytestmark = pytest.mark.e2e

DIM = 8
RNG_SEED = 20240607


@contextmanager
def _connect(url: str, *, check_compatibility: bool = True) -> Iterator[QdrantClient]:
    # The version check runs in a background thread; tests that restart the
    # node right away turn it off so it cannot race with the restart.
    qdrant = QdrantClient(url=url, prefer_grpc=False, timeout=30, check_compatibility=check_compatibility)
    try:
        yield qdrant
    finally:
        qdrant.close()


@pytest.fixture(scope="module")
def client(shared_node: Node) -> Iterator[QdrantClient]:
    with _connect(shared_node.url) as qdrant:
        yield qdrant


def _vectors(count: int, *, dim: int = DIM, seed: int = RNG_SEED) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(count, dim)).astype(np.float32)


def _create(client: QdrantClient, name: str, distance: models.Distance = models.Distance.COSINE, *,
            dim: int = DIM) -> None:
    assert client.create_collection(name, vectors_config=models.VectorParams(size=dim, distance=distance))


def _fill(client: QdrantClient, name: str, count: int, *, seed: int = RNG_SEED) -> np.ndarray:
    vectors = _vectors(count, seed=seed)
    payloads = [{"group": f"g{i % 3}", "rank": i, "score": i / 10, "flag": i % 2 == 0, "text": f"word{i} common"}
                for i in range(count)]
    client.upsert(name, points=models.Batch(ids=list(range(count)), vectors=vectors.tolist(), payloads=payloads))
    return vectors


# --- service -------------------------------------------------------------------

def test_service_endpoints(client: QdrantClient, shared_node: Node) -> None:
    info = client.info()
    assert info.version == "1.20.0"
    assert info.commit is not None and len(info.commit) == 40
    for probe in ("/healthz", "/livez", "/readyz"):
        assert httpx.get(shared_node.url + probe).status_code == 200
    document = httpx.get(shared_node.url + "/openapi.json").json()
    assert document["openapi"].startswith("3.")
    for path, method in [("/collections/{collection_name}/points/query", "post"),
                         ("/collections/{collection_name}/points", "put"), ("/aliases", "get")]:
        assert method in document["paths"][path]


# --- collections ---------------------------------------------------------------

@pytest.mark.parametrize("distance", list(models.Distance))
def test_create_single_vector_collection_each_distance(client: QdrantClient, distance: models.Distance) -> None:
    name = f"single_{distance.value.lower()}"
    _create(client, name, distance)
    info = client.get_collection(name)
    assert info.config.params.vectors.size == DIM
    assert info.config.params.vectors.distance == distance
    assert info.points_count == 0
    assert client.collection_exists(name)
    assert name in {c.name for c in client.get_collections().collections}
    assert client.delete_collection(name)
    assert not client.collection_exists(name)


def test_named_vectors_collection_and_update(client: QdrantClient) -> None:
    client.create_collection(
        "named",
        vectors_config={"image": models.VectorParams(size=4, distance=models.Distance.DOT),
                        "text": models.VectorParams(size=DIM, distance=models.Distance.EUCLID,
                                                    hnsw_config=models.HnswConfigDiff(m=8))},
        hnsw_config=models.HnswConfigDiff(ef_construct=64),
        optimizers_config=models.OptimizersConfigDiff(indexing_threshold=10_000),
        on_disk_payload=False,
    )
    params = client.get_collection("named").config.params
    assert isinstance(params.vectors, dict)
    assert params.vectors["image"].size == 4
    assert params.vectors["text"].distance == models.Distance.EUCLID
    assert client.get_collection("named").config.hnsw_config.ef_construct == 64
    assert client.update_collection("named", optimizers_config=models.OptimizersConfigDiff(indexing_threshold=5000))
    assert client.get_collection("named").config.optimizer_config.indexing_threshold == 5000


def test_aliases(client: QdrantClient) -> None:
    _create(client, "aliased")
    client.upsert("aliased", points=[models.PointStruct(id=1, vector=[1.0] * DIM)])
    client.update_collection_aliases(change_aliases_operations=[
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name="aliased", alias_name="al1")),
    ])
    assert [(a.alias_name, a.collection_name) for a in client.get_collection_aliases("aliased").aliases] == [
        ("al1", "aliased")]
    assert client.count("al1").count == 1
    client.update_collection_aliases(change_aliases_operations=[
        models.RenameAliasOperation(rename_alias=models.RenameAlias(old_alias_name="al1", new_alias_name="al2")),
    ])
    assert ("al2", "aliased") in {(a.alias_name, a.collection_name) for a in client.get_aliases().aliases}
    client.update_collection_aliases(change_aliases_operations=[
        models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name="al2")),
    ])
    assert client.get_collection_aliases("aliased").aliases == []


# --- points ------------------------------------------------------------------

def test_upsert_forms_and_retrieve(client: QdrantClient, shared_node: Node) -> None:
    _create(client, "points")
    point_uuid = str(uuid.uuid4())
    vectors = _vectors(3)
    client.upsert("points", points=[
        models.PointStruct(id=1, vector=vectors[0].tolist(), payload={"a": 1}),
        models.PointStruct(id=point_uuid, vector=vectors[1].tolist(), payload={"a": "uuid"}),
    ])
    client.upsert("points", points=models.Batch(ids=[2], vectors=[vectors[2].tolist()], payloads=[{"a": 2}]))
    assert client.count("points").count == 3
    records = client.retrieve("points", ids=[1, point_uuid, 999], with_payload=True, with_vectors=True)
    by_id = {record.id: record for record in records}
    assert set(by_id) == {1, point_uuid}
    assert by_id[point_uuid].payload == {"a": "uuid"}
    stored = np.asarray(by_id[1].vector)
    np.testing.assert_allclose(stored, vectors[0] / np.linalg.norm(vectors[0]), atol=1e-6)  # Cosine normalizes
    no_payload = client.retrieve("points", ids=[2], with_payload=False)
    assert no_payload[0].payload is None and no_payload[0].vector is None
    one = httpx.get(f"{shared_node.url}/collections/points/points/2").json()["result"]
    assert one["id"] == 2 and one["payload"] == {"a": 2} and len(one["vector"]) == DIM
    missing = httpx.get(f"{shared_node.url}/collections/points/points/12345")
    assert missing.status_code == 404


def test_delete_by_ids_and_filter(client: QdrantClient) -> None:
    _create(client, "deletes")
    _fill(client, "deletes", 30)
    client.delete("deletes", points_selector=models.PointIdsList(points=[0, 1, 2]))
    assert client.count("deletes").count == 27
    group_filter = models.Filter(must=[models.FieldCondition(key="group", match=models.MatchValue(value="g1"))])
    expected = sum(1 for i in range(3, 30) if i % 3 == 1)
    assert client.count("deletes", count_filter=group_filter).count == expected
    client.delete("deletes", points_selector=models.FilterSelector(filter=group_filter))
    assert client.count("deletes", count_filter=group_filter).count == 0
    assert client.count("deletes").count == 27 - expected
    assert client.count("deletes", exact=False).count >= 0


def test_payload_operations(client: QdrantClient) -> None:
    _create(client, "payloads")
    _fill(client, "payloads", 5)
    client.set_payload("payloads", payload={"new": "x"}, points=[0, 1])
    assert client.retrieve("payloads", ids=[0])[0].payload["new"] == "x"
    client.set_payload("payloads", payload={"inner": 5}, points=[0], key="nested")
    assert client.retrieve("payloads", ids=[0])[0].payload["nested"] == {"inner": 5}
    client.overwrite_payload("payloads", payload={"only": True}, points=[1])
    assert client.retrieve("payloads", ids=[1])[0].payload == {"only": True}
    client.delete_payload("payloads", keys=["rank", "new"], points=[0])
    payload = client.retrieve("payloads", ids=[0])[0].payload
    assert "rank" not in payload and "new" not in payload and payload["group"] == "g0"
    client.clear_payload("payloads", points_selector=models.PointIdsList(points=[2]))
    assert not client.retrieve("payloads", ids=[2])[0].payload
    selector = models.FilterSelector(filter=models.Filter(must=[
        models.FieldCondition(key="group", match=models.MatchValue(value="g1"))]))
    client.set_payload("payloads", payload={"tagged": 1}, points=selector)
    tagged = models.Filter(must=[models.FieldCondition(key="tagged", match=models.MatchValue(value=1))])
    assert client.count("payloads", count_filter=tagged).count == 1  # point 4 (point 1 was overwritten)


def test_update_and_delete_vectors(client: QdrantClient) -> None:
    client.create_collection("vecs", vectors_config={
        "a": models.VectorParams(size=2, distance=models.Distance.DOT),
        "b": models.VectorParams(size=3, distance=models.Distance.EUCLID)})
    client.upsert("vecs", points=[models.PointStruct(id=1, vector={"a": [1.0, 0.0], "b": [1.0, 2.0, 3.0]}),
                                  models.PointStruct(id=2, vector={"a": [0.0, 1.0]})])
    record = client.retrieve("vecs", ids=[2], with_vectors=True)[0]
    assert set(record.vector) == {"a"}
    client.update_vectors("vecs", points=[models.PointVectors(id=1, vector={"a": [0.5, 0.5]})])
    record = client.retrieve("vecs", ids=[1], with_vectors=True)[0]
    assert record.vector["a"] == [0.5, 0.5] and record.vector["b"] == [1.0, 2.0, 3.0]
    client.delete_vectors("vecs", vectors=["b"], points=[1])
    record = client.retrieve("vecs", ids=[1], with_vectors=["a", "b"])[0]
    assert set(record.vector) == {"a"}


def test_batch_update(client: QdrantClient) -> None:
    _create(client, "batched")
    results = client.batch_update_points("batched", update_operations=[
        models.UpsertOperation(upsert=models.PointsList(points=[
            models.PointStruct(id=i, vector=[float(i + 1)] * DIM, payload={"i": i}) for i in range(5)])),
        models.DeleteOperation(delete=models.PointIdsList(points=[4])),
        models.SetPayloadOperation(set_payload=models.SetPayload(payload={"s": 1}, points=[0])),
        models.OverwritePayloadOperation(overwrite_payload=models.SetPayload(payload={"o": 1}, points=[1])),
        models.DeletePayloadOperation(delete_payload=models.DeletePayload(keys=["i"], points=[2])),
        models.ClearPayloadOperation(clear_payload=models.PointIdsList(points=[3])),
        models.UpdateVectorsOperation(update_vectors=models.UpdateVectors(points=[
            models.PointVectors(id=0, vector=[-1.0] * DIM)])),
        models.DeleteVectorsOperation(delete_vectors=models.DeleteVectors(points=[3], vector=[""])),
    ])
    assert len(results) == 8
    payloads = {record.id: record.payload for record in client.retrieve("batched", ids=[0, 1, 2, 3, 4])}
    assert payloads == {0: {"i": 0, "s": 1}, 1: {"o": 1}, 2: {}, 3: {}}
    assert client.retrieve("batched", ids=[0], with_vectors=True)[0].vector[0] < 0


def test_scroll_paging_and_order_by(client: QdrantClient) -> None:
    _create(client, "scrolled")
    _fill(client, "scrolled", 25)
    seen: list[Any] = []
    offset = None
    for _page in range(10):
        points, offset = client.scroll("scrolled", limit=10, offset=offset, with_payload=False)
        seen.extend(point.id for point in points)
        if offset is None:
            break
    assert seen == list(range(25))
    client.create_payload_index("scrolled", field_name="rank", field_schema=models.PayloadSchemaType.INTEGER)
    points, _next = client.scroll("scrolled", limit=5,
                                  order_by=models.OrderBy(key="rank", direction=models.Direction.DESC))
    assert [point.payload["rank"] for point in points] == [24, 23, 22, 21, 20]
    filtered, _next = client.scroll("scrolled", limit=100, scroll_filter=models.Filter(must=[
        models.FieldCondition(key="rank", range=models.Range(gte=20))]))
    assert sorted(point.id for point in filtered) == [20, 21, 22, 23, 24]


@pytest.mark.parametrize("schema", [
    models.PayloadSchemaType.KEYWORD, models.PayloadSchemaType.INTEGER, models.PayloadSchemaType.FLOAT,
    models.PayloadSchemaType.BOOL, models.PayloadSchemaType.TEXT,
    models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
    models.TextIndexParams(type=models.TextIndexType.TEXT, tokenizer=models.TokenizerType.WORD, lowercase=True),
], ids=lambda schema: f"{getattr(schema, 'type', schema).value}-{type(schema).__name__}")
def test_payload_index_types(client: QdrantClient, schema: Any) -> None:
    kind = getattr(schema, "type", schema).value
    field = {"keyword": "group", "integer": "rank", "float": "score", "bool": "flag", "text": "text"}[kind]
    name = f"indexed_{abs(hash(repr(schema))) % 10_000}"
    _create(client, name)
    _fill(client, name, 12)
    client.create_payload_index(name, field_name=field, field_schema=schema)
    info = client.get_collection(name)
    assert info.payload_schema[field].data_type.value == kind
    assert info.payload_schema[field].points == 12
    client.delete_payload_index(name, field_name=field)
    assert field not in client.get_collection(name).payload_schema
    client.delete_collection(name)


def test_datetime_and_uuid_indexes(client: QdrantClient) -> None:
    _create(client, "typed_indexes")
    client.upsert("typed_indexes", points=[
        models.PointStruct(id=i, vector=[1.0] * DIM, payload={"at": f"2024-01-0{i + 1}T00:00:00Z", "u": str(uuid.uuid4())})
        for i in range(3)])
    client.create_payload_index("typed_indexes", "at", models.PayloadSchemaType.DATETIME)
    client.create_payload_index("typed_indexes", "u", models.PayloadSchemaType.UUID)
    schema = client.get_collection("typed_indexes").payload_schema
    assert schema["at"].points == 3 and schema["u"].points == 3


# --- queries -----------------------------------------------------------------

def test_query_variants(client: QdrantClient, shared_node: Node) -> None:
    _create(client, "queried", models.Distance.DOT)
    vectors = _fill(client, "queried", 40)
    probe = vectors[7]
    exact = models.SearchParams(exact=True)
    bare = client.query_points("queried", query=probe.tolist(), limit=5, search_params=exact,
                               with_payload=False).points
    expected = np.argsort(-(vectors @ probe), kind="stable")[:5]
    assert [point.id for point in bare] == expected.tolist()
    assert bare[0].payload is None and bare[0].vector is None
    nearest = client.query_points("queried", query=models.NearestQuery(nearest=probe.tolist()), limit=5).points
    assert [point.id for point in nearest] == [point.id for point in bare]
    offset = client.query_points("queried", query=probe.tolist(), limit=3, offset=2, search_params=exact).points
    assert [point.id for point in offset] == expected[2:5].tolist()
    threshold = float(bare[2].score)
    above = client.query_points("queried", query=probe.tolist(), score_threshold=threshold, search_params=exact).points
    assert [point.id for point in above] == expected[:3].tolist()
    g0 = models.Filter(must=[models.FieldCondition(key="group", match=models.MatchValue(value="g0"))])
    filtered = client.query_points("queried", query=probe.tolist(), query_filter=g0, limit=100).points
    assert {point.id for point in filtered} == {i for i in range(40) if i % 3 == 0}
    included = client.query_points("queried", query=probe.tolist(), limit=1,
                                   with_payload=models.PayloadSelectorInclude(include=["rank"])).points[0]
    assert set(included.payload) == {"rank"}
    excluded = client.query_points("queried", query=probe.tolist(), limit=1,
                                   with_payload=models.PayloadSelectorExclude(exclude=["rank"])).points[0]
    assert "rank" not in excluded.payload and "group" in excluded.payload
    listed = client.query_points("queried", query=probe.tolist(), limit=1, with_payload=["group"],
                                 with_vectors=True).points[0]
    assert set(listed.payload) == {"group"} and len(listed.vector) == DIM
    by_id = client.query_points("queried", query=7, limit=3, search_params=exact).points
    assert 7 not in [point.id for point in by_id]
    assert [point.id for point in by_id] == [i for i in expected.tolist() if i != 7][:3]
    no_query = client.query_points("queried", limit=3, offset=1, with_payload=False).points
    assert [point.id for point in no_query] == [1, 2, 3]
    legacy = httpx.post(f"{shared_node.url}/collections/queried/points/search",
                        json={"vector": probe.tolist(), "limit": 5, "params": {"exact": True}}).json()["result"]
    assert [point["id"] for point in legacy] == expected.tolist()
    batch = httpx.post(f"{shared_node.url}/collections/queried/points/search/batch",
                       json={"searches": [{"vector": probe.tolist(), "limit": 2}] * 2}).json()["result"]
    assert len(batch) == 2 and len(batch[0]) == 2


def test_query_named_and_batch(client: QdrantClient) -> None:
    client.create_collection("qnamed", vectors_config={
        "a": models.VectorParams(size=DIM, distance=models.Distance.EUCLID),
        "b": models.VectorParams(size=DIM, distance=models.Distance.MANHATTAN)})
    a_vectors, b_vectors = _vectors(20, seed=1), _vectors(20, seed=2)
    client.upsert("qnamed", points=models.Batch(ids=list(range(20)),
                                               vectors={"a": a_vectors.tolist(), "b": b_vectors.tolist()}))
    probe = _vectors(1, seed=3)[0]
    a_hits = client.query_points("qnamed", query=probe.tolist(), using="a", limit=3, with_vectors=["a"]).points
    expected_a = np.argsort(np.linalg.norm(a_vectors - probe, axis=1), kind="stable")[:3]
    assert [point.id for point in a_hits] == expected_a.tolist()
    assert set(a_hits[0].vector) == {"a"}
    responses = client.query_batch_points("qnamed", requests=[
        models.QueryRequest(query=probe.tolist(), using="a", limit=2),
        models.QueryRequest(query=probe.tolist(), using="b", limit=4, with_payload=True),
    ])
    assert [len(response.points) for response in responses] == [2, 4]
    expected_b = np.argsort(np.abs(b_vectors - probe).sum(axis=1), kind="stable")[:4]
    assert [point.id for point in responses[1].points] == expected_b.tolist()


def _brute_force(vectors: np.ndarray, probe: np.ndarray, distance: models.Distance) -> tuple[np.ndarray, np.ndarray]:
    v64, p64 = vectors.astype(np.float64), probe.astype(np.float64)
    match distance:
        case models.Distance.COSINE:
            scores = (v64 / np.linalg.norm(v64, axis=1, keepdims=True)) @ (p64 / np.linalg.norm(p64))
            order = np.argsort(-scores, kind="stable")
        case models.Distance.DOT:
            scores = v64 @ p64
            order = np.argsort(-scores, kind="stable")
        case models.Distance.EUCLID:
            scores = np.linalg.norm(v64 - p64, axis=1)
            order = np.argsort(scores, kind="stable")
        case models.Distance.MANHATTAN:
            scores = np.abs(v64 - p64).sum(axis=1)
            order = np.argsort(scores, kind="stable")
    return order, scores


@pytest.mark.parametrize("distance", list(models.Distance))
def test_exact_search_matches_numpy(client: QdrantClient, distance: models.Distance) -> None:
    name = f"exact_{distance.value.lower()}"
    _create(client, name, distance)
    vectors = _fill(client, name, 300, seed=7)
    for probe in _vectors(3, seed=11):
        hits = client.query_points(name, query=probe.tolist(), limit=10,
                                   search_params=models.SearchParams(exact=True)).points
        order, scores = _brute_force(vectors, probe, distance)
        assert [hit.id for hit in hits] == order[:10].tolist()
        np.testing.assert_allclose([hit.score for hit in hits], scores[order[:10]], rtol=1e-5, atol=1e-5)
    client.delete_collection(name)


# --- restart -----------------------------------------------------------------

def _snapshot(client: QdrantClient) -> dict[str, Any]:
    records = client.retrieve("durable", ids=list(range(50)), with_vectors=True)
    return {
        "count": client.count("durable").count,
        "payloads": {r.id: r.payload for r in records},
        "vectors": {r.id: r.vector for r in records},
        "aliases": [(a.alias_name, a.collection_name) for a in client.get_aliases().aliases],
        "schema": {k: (v.data_type, v.points) for k, v in client.get_collection("durable").payload_schema.items()},
        "named": client.get_collection("durable_named").config.params.vectors["v"].size,
    }


def test_restart_keeps_everything(node: Node) -> None:
    with _connect(node.url, check_compatibility=False) as qdrant:
        _create(qdrant, "durable", models.Distance.EUCLID)
        _fill(qdrant, "durable", 50)
        qdrant.delete("durable", points_selector=models.PointIdsList(points=[3, 4]))
        qdrant.set_payload("durable", payload={"after": 1}, points=[5])
        qdrant.create_payload_index("durable", "group", models.PayloadSchemaType.KEYWORD)
        qdrant.create_collection("durable_named", vectors_config={"v": models.VectorParams(size=3, distance="Dot")})
        qdrant.update_collection_aliases(change_aliases_operations=[models.CreateAliasOperation(
            create_alias=models.CreateAlias(collection_name="durable", alias_name="keep"))])
        before = _snapshot(qdrant)
    assert before["count"] == 48
    node.restart()
    with _connect(node.url, check_compatibility=False) as qdrant:
        assert _snapshot(qdrant) == before
        qdrant.upsert("durable", points=[models.PointStruct(id=3, vector=[0.5] * DIM, payload={"back": True})])
    node.restart(hard=True)
    with _connect(node.url, check_compatibility=False) as qdrant:
        assert qdrant.count("durable").count == 49
        assert qdrant.retrieve("durable", ids=[3])[0].payload == {"back": True}

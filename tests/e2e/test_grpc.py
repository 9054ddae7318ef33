"""Qdrant's public gRPC API: the unmodified qdrant-client with
``prefer_grpc=True`` against a real ``qcluster serve``.

The parity test runs one scenario through every operation twice, over REST
and over gRPC, on the same node and collection name, and requires identical
transcripts: results, and the messages of the errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import grpc
import numpy as np
import pytest
from qdrant_client import QdrantClient, models
from qdrant_client import grpc as pb
from qdrant_client.http.exceptions import UnexpectedResponse

from tests.e2e.conftest import Node, running_node

if TYPE_CHECKING:
    import pathlib

pytestmark = pytest.mark.e2e

NAME = "parity"
ALIAS = "parity_alias"
POINTS = 60


def _client(node: Node, *, grpc_: bool, api_key: str | None = None) -> QdrantClient:
    return QdrantClient(url=node.url, grpc_port=node.grpc_port, prefer_grpc=grpc_, timeout=30,
                        check_compatibility=False, api_key=api_key, https=False)


@pytest.fixture(scope="module")
def clients(shared_node: Node) -> Iterator[tuple[QdrantClient, QdrantClient]]:
    rest, over_grpc = _client(shared_node, grpc_=False), _client(shared_node, grpc_=True)
    yield rest, over_grpc
    rest.close()
    over_grpc.close()


def _plain(value: Any) -> Any:
    """Comparable form: pydantic models dumped, volatile fields dropped, floats rounded."""
    if hasattr(value, "model_dump"):
        value = value.model_dump()
    if isinstance(value, dict):
        plain = {key: _plain(item) for key, item in value.items() if key != "created_at"}
        if plain.get("warnings") == []:
            # qdrant-client reads proto3's empty repeated field as None.
            plain["warnings"] = None
        return plain
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, float):
        return round(value, 5)
    if hasattr(value, "value"):  # enums
        return value.value
    return value


def _error_message(error: Exception) -> str:
    if isinstance(error, grpc.RpcError):
        return error.details()  # type: ignore[no-any-return]
    assert isinstance(error, UnexpectedResponse), error
    return error.structured()["status"]["error"]  # type: ignore[no-any-return]


def _scenario(client: QdrantClient) -> list[tuple[str, Any]]:
    """Every operation the gRPC API serves; returns (step, result) pairs."""
    rng = np.random.default_rng(7)
    image = rng.normal(size=(POINTS, 8)).astype(np.float32)
    text = rng.normal(size=(POINTS, 4)).astype(np.float32)
    payloads = [{"group": f"g{i % 4}", "rank": i, "price": i / 4, "tags": [f"t{i % 3}", "all"],
                 "nested": {"inner": i % 5}} for i in range(POINTS)]
    transcript: list[tuple[str, Any]] = []

    def step(label: str, call: Callable[[], Any]) -> None:
        try:
            transcript.append((label, _plain(call())))
        except (grpc.RpcError, UnexpectedResponse) as error:
            transcript.append((label, ("error", _error_message(error))))

    by_group = models.Filter(must=[models.FieldCondition(key="group", match=models.MatchValue(value="g1"))])
    ranks = models.Filter(must=[models.FieldCondition(key="rank", range=models.Range(gte=10, lt=40))],
                          must_not=[models.FieldCondition(key="tags", match=models.MatchAny(any=["t2"]))])
    step("create", lambda: client.create_collection(NAME, vectors_config={
        "image": models.VectorParams(size=8, distance=models.Distance.COSINE),
        "text": models.VectorParams(size=4, distance=models.Distance.DOT)}))
    step("create again", lambda: client.create_collection(NAME, vectors_config=models.VectorParams(
        size=8, distance=models.Distance.COSINE)))
    step("exists", lambda: client.collection_exists(NAME))
    step("exists missing", lambda: client.collection_exists("parity_missing"))
    step("list", lambda: [c.name for c in client.get_collections().collections if c.name.startswith("parity")])
    step("update", lambda: client.update_collection(NAME, optimizers_config=models.OptimizersConfigDiff(
        indexing_threshold=50_000)))
    step("index keyword", lambda: client.create_payload_index(NAME, "group", models.PayloadSchemaType.KEYWORD))
    step("index integer", lambda: client.create_payload_index(NAME, "rank", models.IntegerIndexParams(
        type=models.IntegerIndexType.INTEGER, lookup=True, range=True)))
    step("upsert structs", lambda: client.upsert(NAME, points=[
        models.PointStruct(id=i, vector={"image": image[i].tolist(), "text": text[i].tolist()}, payload=payloads[i])
        for i in range(POINTS // 2)]))
    step("upsert batch", lambda: client.upsert(NAME, points=models.Batch(
        ids=list(range(POINTS // 2, POINTS)),
        vectors={"image": image[POINTS // 2:].tolist(), "text": text[POINTS // 2:].tolist()},
        payloads=payloads[POINTS // 2:])))
    step("upsert wrong dim", lambda: client.upsert(NAME, points=[
        models.PointStruct(id=1000, vector={"image": [1.0, 2.0]}, payload={})]))
    step("upsert unknown vector", lambda: client.upsert(NAME, points=[
        models.PointStruct(id=1000, vector={"audio": [1.0]}, payload={})]))
    step("upsert missing collection", lambda: client.upsert("parity_missing", points=[
        models.PointStruct(id=1, vector={"image": image[0].tolist()})]))
    step("info", lambda: client.get_collection(NAME))
    step("retrieve", lambda: client.retrieve(NAME, ids=[3, 5, 999], with_vectors=["text"],
                                             with_payload=models.PayloadSelectorInclude(include=["rank", "tags"])))
    step("query", lambda: client.query_points(NAME, query=image[7].tolist(), using="image", limit=5,
                                              query_filter=ranks, with_payload=True, with_vectors=True))
    step("query exact offset threshold", lambda: client.query_points(
        NAME, query=text[2].tolist(), using="text", limit=4, offset=2, score_threshold=-1.5,
        search_params=models.SearchParams(exact=True), with_payload=models.PayloadSelectorExclude(exclude=["nested"])))
    step("query by id", lambda: client.query_points(NAME, query=11, using="image", limit=3, query_filter=by_group))
    step("query no vector", lambda: client.query_points(NAME, limit=3, with_payload=False))
    step("query nested filter", lambda: client.query_points(NAME, query=image[1].tolist(), using="image", limit=3,
        query_filter=models.Filter(should=[models.FieldCondition(key="nested.inner", match=models.MatchValue(value=2)),
                                           models.HasIdCondition(has_id=[1, 2])])))
    step("query wrong using", lambda: client.query_points(NAME, query=image[1].tolist(), using="audio", limit=3))
    step("query batch", lambda: client.query_batch_points(NAME, requests=[
        models.QueryRequest(query=image[i].tolist(), using="image", limit=3, filter=by_group if i % 2 else None,
                            with_payload=["rank"])
        for i in range(4)]))
    step("scroll page 1", lambda: client.scroll(NAME, limit=7, scroll_filter=by_group, with_vectors=False))
    step("scroll page 2", lambda: client.scroll(NAME, limit=7, offset=21, scroll_filter=by_group))
    step("scroll order_by", lambda: client.scroll(NAME, limit=5, order_by=models.OrderBy(
        key="rank", direction=models.Direction.DESC)))
    step("count", lambda: client.count(NAME))
    step("count filtered", lambda: client.count(NAME, count_filter=ranks, exact=True))
    step("set payload", lambda: client.set_payload(NAME, payload={"flag": True, "group": "g9"}, points=[1, 2, 3]))
    step("set payload by filter", lambda: client.set_payload(NAME, payload={"seen": 1}, points=ranks))
    step("set payload key", lambda: client.set_payload(NAME, payload={"inner": 42}, key="nested", points=[4]))
    step("overwrite payload", lambda: client.overwrite_payload(NAME, payload={"only": "this"}, points=[5]))
    step("delete payload", lambda: client.delete_payload(NAME, keys=["tags", "price"], points=[6, 7]))
    step("clear payload", lambda: client.clear_payload(NAME, points_selector=[8]))
    step("after payload ops", lambda: client.retrieve(NAME, ids=[1, 4, 5, 6, 8, 12]))
    step("update vectors", lambda: client.update_vectors(NAME, points=[
        models.PointVectors(id=9, vector={"text": [1.0, 0.0, 0.0, 0.0]})]))
    step("delete vectors", lambda: client.delete_vectors(NAME, vectors=["image"], points=[10]))
    step("after vector ops", lambda: client.retrieve(NAME, ids=[9, 10], with_vectors=True))
    step("delete ids", lambda: client.delete(NAME, points_selector=models.PointIdsList(points=[11, 12])))
    step("delete filter", lambda: client.delete(NAME, points_selector=models.FilterSelector(filter=models.Filter(
        must=[models.FieldCondition(key="rank", range=models.Range(gte=55))]))))
    step("batch update", lambda: client.batch_update_points(NAME, update_operations=[
        models.UpsertOperation(upsert=models.PointsList(points=[models.PointStruct(
            id=500, vector={"image": image[0].tolist(), "text": text[0].tolist()}, payload={"rank": 500})])),
        models.SetPayloadOperation(set_payload=models.SetPayload(payload={"batch": True}, points=[500, 20])),
        models.DeleteOperation(delete=models.PointIdsList(points=[21])),
    ]))
    step("after batch", lambda: (client.count(NAME), client.retrieve(NAME, ids=[20, 21, 500])))
    step("aliases create", lambda: client.update_collection_aliases(change_aliases_operations=[
        models.CreateAliasOperation(create_alias=models.CreateAlias(collection_name=NAME, alias_name=ALIAS))]))
    step("query via alias", lambda: client.query_points(ALIAS, query=image[3].tolist(), using="image", limit=2))
    step("collection aliases", lambda: client.get_collection_aliases(NAME))
    step("aliases rename", lambda: client.update_collection_aliases(change_aliases_operations=[
        models.RenameAliasOperation(rename_alias=models.RenameAlias(old_alias_name=ALIAS,
                                                                   new_alias_name=ALIAS + "2"))]))
    step("all aliases", lambda: [a for a in client.get_aliases().aliases if a.collection_name == NAME])
    step("aliases delete", lambda: client.update_collection_aliases(change_aliases_operations=[
        models.DeleteAliasOperation(delete_alias=models.DeleteAlias(alias_name=ALIAS + "2"))]))
    step("delete index", lambda: client.delete_payload_index(NAME, "group"))
    step("info after", lambda: client.get_collection(NAME))
    step("delete", lambda: client.delete_collection(NAME))
    step("info deleted", lambda: client.get_collection(NAME))
    return transcript


def test_rest_and_grpc_give_identical_results(clients: tuple[QdrantClient, QdrantClient]) -> None:
    rest, over_grpc = clients
    over_rest = _scenario(rest)
    with_grpc = _scenario(over_grpc)
    assert [label for label, _ in over_rest] == [label for label, _ in with_grpc]
    for (label, expected), (_, actual) in zip(over_rest, with_grpc, strict=True):
        assert actual == expected, f"step {label!r}: REST {expected!r} != gRPC {actual!r}"
    # The scenario exercised what it claims: results, not only errors.
    results = dict(over_rest)
    assert results["count"] == {"count": POINTS}
    assert len(results["query"]["points"]) == 5
    assert results["upsert wrong dim"][0] == "error"
    assert results["info deleted"][0] == "error"


def _raw_call(node: Node, method: str, request: Any, *, metadata: tuple[tuple[str, str], ...] = ()) -> Any:
    """A call with the generated stubs (not through qdrant-client)."""
    with grpc.insecure_channel(f"127.0.0.1:{node.grpc_port}") as channel:
        service, name = method.split("/")
        stub = {"Points": pb.PointsStub, "Collections": pb.CollectionsStub, "Qdrant": pb.QdrantStub,
                "Snapshots": pb.SnapshotsStub}[service](channel)
        return getattr(stub, name)(request, metadata=metadata, timeout=10)


def test_status_codes_and_messages(shared_node: Node) -> None:
    with pytest.raises(grpc.RpcError) as missing:
        _raw_call(shared_node, "Collections/Get", pb.GetCollectionInfoRequest(collection_name="grpc_missing"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    assert "grpc_missing" in missing.value.details()
    with pytest.raises(grpc.RpcError) as bad_name:
        _raw_call(shared_node, "Collections/Get", pb.GetCollectionInfoRequest(collection_name="a/b"))
    assert bad_name.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as empty_selector:
        _raw_call(shared_node, "Points/Delete", pb.DeletePoints(collection_name="grpc_missing",
                                                               points=pb.PointsSelector()))
    assert empty_selector.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(grpc.RpcError) as snapshot:
        _raw_call(shared_node, "Snapshots/List", pb.ListSnapshotsRequest(collection_name="x"))
    assert snapshot.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert "Snapshots/List" in snapshot.value.details()
    health = _raw_call(shared_node, "Qdrant/HealthCheck", pb.HealthCheckRequest())
    assert health.title == "qcluster" and len(health.commit) == 40
    # The node kept serving through all of it.
    assert _raw_call(shared_node, "Collections/List", pb.ListCollectionsRequest()).time > 0


@pytest.mark.filterwarnings("ignore:Api key is used with an insecure connection")
def test_api_key_over_grpc(tmp_path: pathlib.Path) -> None:
    key = "grpc-secret-key"
    with running_node(tmp_path, extra_env={"QCLUSTER__SERVICE__API_KEY": key}) as node:
        with pytest.raises(grpc.RpcError) as anonymous:
            _raw_call(node, "Collections/List", pb.ListCollectionsRequest())
        assert anonymous.value.code() == grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.RpcError) as wrong:
            _raw_call(node, "Collections/List", pb.ListCollectionsRequest(), metadata=(("api-key", "nope"),))
        assert wrong.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # The health check is public, like the REST probes.
        assert _raw_call(node, "Qdrant/HealthCheck", pb.HealthCheckRequest()).title == "qcluster"
        client = _client(node, grpc_=True, api_key=key)
        try:
            assert client.create_collection("secured", vectors_config=models.VectorParams(
                size=2, distance=models.Distance.DOT))
            client.upsert("secured", points=[models.PointStruct(id=1, vector=[1.0, 2.0])])
            assert client.count("secured").count == 1
        finally:
            client.close()


def test_busy_grpc_port_is_a_clean_startup_failure(tmp_path: pathlib.Path) -> None:
    import socket
    import subprocess
    import sys

    from tests.e2e.conftest import REPO_ROOT, free_port

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "qcluster", "serve", "--data-dir", str(tmp_path / "data"), "--host", "127.0.0.1",
             "--http-port", str(free_port()), "--grpc-port", str(busy)],
            cwd=REPO_ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1, result.stderr[-2000:]
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr

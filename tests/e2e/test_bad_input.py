"""Bad requests over raw HTTP: the right 4xx, a message naming the field,
nothing partially written, and the node keeps serving."""

from __future__ import annotations

import json
import pathlib
import socket
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from qcluster import limits

if TYPE_CHECKING:
    from tests.e2e.conftest import Node

pytestmark = pytest.mark.e2e

DIM = 4


@pytest.fixture(scope="module")
def http(shared_node: Node) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=shared_node.url, timeout=30) as client:
        response = client.put("/collections/bad", json={"vectors": {"size": DIM, "distance": "Cosine"}})
        assert response.status_code == 200, response.text
        points = [{"id": i, "vector": [1.0, 2.0, 3.0, float(i)], "payload": {"i": i}} for i in range(5)]
        response = client.put("/collections/bad/points", params={"wait": "true"}, json={"points": points})
        assert response.status_code == 200, response.text
        yield client


def _count(http: httpx.Client) -> int:
    response = http.post("/collections/bad/points/count", json={"exact": True})
    assert response.status_code == 200, response.text
    return int(response.json()["result"]["count"])


def _assert_error(response: httpx.Response, status: int, *needles: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    message = body["status"]["error"]
    assert isinstance(body["time"], float)
    for needle in needles:
        assert needle in message, message


def _upsert_raw(http: httpx.Client, content: bytes | str) -> httpx.Response:
    return http.put("/collections/bad/points", params={"wait": "true"}, content=content,
                    headers={"Content-Type": "application/json"})


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ('{"points": [{"id": 10, "vector": [1, 2, 3, 4]}, {"id": 11, "vector": [1, 2, 3]}]}',
         ("points[1].vector", "expected 4 dimensions, got 3")),
        ('{"points": [{"id": 10, "vector": [1, 2, 3, 4]}, {"id": 11, "vector": [1, 2, 3, 1e999]}]}',
         ("Format error in JSON body",)),
        ('{"points": [{"id": 10, "vector": [1, 2, 3, 4]}, {"id": 11, "vector": [1, 2, 3, 1e39]}]}',
         ("points[1].vector", "non-finite")),
        ('{"points": [{"id": 11, "vector": [1, 2, 3, NaN]}]}', ("Format error in JSON body",)),
        ('{"points": [{"id": 11, "vector": [1, 2, 3, Infinity]}]}', ("Format error in JSON body",)),
        ('{"points": [{"id": 10, "vector": [1, 2, 3, 4]}, {"id": -1, "vector": [1, 2, 3, 4]}]}', ("points[1].id",)),
        ('{"points": [{"id": "abc", "vector": [1, 2, 3, 4]}]}', ("points[0].id",)),
        ('{"points": [{"id": 1.5, "vector": [1, 2, 3, 4]}]}', ("points[0].id",)),
        ('{"points": [{"id": 1, "vector": [1, 2, "x", 4]}]}', ("points[0].vector[2]",)),
        ('{"points": [{"id": 1, "vector": {"s": {"indices": [1], "values": [0.5]}}}]}', ("sparse",)),
        ('{"batch": {"ids": [20, 21], "vectors": [[1, 2, 3, 4]]}}', ("batch.vectors",)),
        ('{"points": [{"id": 1, "vector": [1, 2, 3, 4]}', ("Format error in JSON body",)),
        ('[1, 2, 3]', ("Format error in JSON body", "array")),
        ('{"pints": []}', ("pints: unknown field",)),
    ],
)
def test_bad_upserts_write_nothing(http: httpx.Client, body: str, needles: tuple[str, ...]) -> None:
    before = _count(http)
    _assert_error(_upsert_raw(http, body), 400, *needles)
    assert _count(http) == before


def test_oversized_batch_is_rejected(http: httpx.Client) -> None:
    before = _count(http)
    points = [{"id": 1000 + i, "vector": [0.5] * DIM} for i in range(limits.POINTS_PER_REQUEST_MAX + 1)]
    response = http.put("/collections/bad/points", params={"wait": "true"}, json={"points": points})
    _assert_error(response, 400, "points", "POINTS_PER_REQUEST_MAX")
    assert _count(http) == before


def test_oversized_payload_is_rejected(http: httpx.Client) -> None:
    before = _count(http)
    payload = {"blob": "x" * (limits.PAYLOAD_BYTES_MAX + 10)}
    points = [{"id": 30, "vector": [0.5] * DIM}, {"id": 31, "vector": [0.5] * DIM, "payload": payload}]
    _assert_error(http.put("/collections/bad/points", json={"points": points}), 400, "points[1].payload",
                  "PAYLOAD_BYTES_MAX")
    _assert_error(http.post("/collections/bad/points/payload", json={"payload": payload, "points": [1]}), 400,
                  "payload", "PAYLOAD_BYTES_MAX")
    assert _count(http) == before


def test_oversized_body_is_rejected_before_reading(shared_node: Node) -> None:
    request = (
        "PUT /collections/bad/points HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {limits.REQUEST_BODY_BYTES_MAX + 1}\r\nConnection: close\r\n\r\n{{"
    )
    with socket.create_connection(("127.0.0.1", shared_node.http_port), timeout=10) as sock:
        sock.sendall(request.encode())
        reply = sock.recv(65536).decode(errors="replace")
    status_line = reply.split("\r\n", 1)[0]
    assert " 400 " in status_line or " 413 " in status_line, reply
    assert "request body" in reply


def test_invalid_batch_operation_writes_nothing(http: httpx.Client) -> None:
    before = _count(http)
    body = {"operations": [
        {"upsert": {"points": [{"id": 40, "vector": [1, 2, 3, 4]}]}},
        {"delete": {"points": [0]}},
        {"upsert": {"points": [{"id": 41, "vector": [1, 2]}]}},
    ]}
    _assert_error(http.post("/collections/bad/points/batch", json=body), 400, "operations[2].upsert.points[0].vector")
    assert _count(http) == before
    too_many = {"operations": [{"delete": {"points": [999]}}] * (limits.BATCH_OPERATIONS_MAX + 1)}
    _assert_error(http.post("/collections/bad/points/batch", json=too_many), 400, "BATCH_OPERATIONS_MAX")


@pytest.mark.parametrize(
    ("body", "needles"),
    [
        ({"vectors": {"size": 4, "distance": "Hamming"}}, ("vectors.distance", "Hamming")),
        ({"vectors": {"v": {"size": 4, "distance": "cosine"}}}, ("vectors.v.distance",)),
        ({"vectors": {"size": -1, "distance": "Dot"}}, ("vectors.size",)),
        ({"vectors": {"size": 4, "distance": "Dot"}, "sparse_vectors": {"s": {}}}, ("sparse_vectors",)),
        ({}, ("vectors",)),
    ],
)
def test_bad_collection_configs(http: httpx.Client, body: dict[str, Any], needles: tuple[str, ...]) -> None:
    _assert_error(http.put("/collections/never", json=body), 400, *needles)
    assert http.get("/collections/never/exists").json()["result"] == {"exists": False}


def test_duplicate_collection_is_a_conflict(http: httpx.Client) -> None:
    _assert_error(http.put("/collections/bad", json={"vectors": {"size": DIM, "distance": "Dot"}}), 409, "bad")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/collections/missing", None),
        ("POST", "/collections/missing/points/query", {"query": [1, 2, 3, 4]}),
        ("PUT", "/collections/missing/points", {"points": [{"id": 1, "vector": [1, 2, 3, 4]}]}),
        ("POST", "/collections/missing/points/scroll", {}),
        ("POST", "/collections/missing/points/count", {}),
        ("GET", "/collections/missing/points/1", None),
    ],
)
def test_unknown_collection_is_404(http: httpx.Client, method: str, path: str, body: Any) -> None:
    _assert_error(http.request(method, path, json=body), 404, "missing")


@pytest.mark.parametrize(
    ("body", "status", "needles"),
    [
        ({"query": [1, 2, 3]}, 400, ("query", "expected 4 dimensions, got 3")),
        ({"query": [1, 2, 3, 4], "limit": limits.TOP_K_MAX + 1}, 400, ("limit", "TOP_K_MAX")),
        ({"query": [1, 2, 3, 4], "using": "nope"}, 400, ("using",)),
        ({"query": [1, 2, 3, 4], "filter": {"must": [{"key": "i", "match": {}}]}}, 400, ("filter.must[0]",)),
        ({"query": {"recommend": {"positive": [1]}}}, 400, ("query.recommend",)),
        ({"query": 12345}, 404, ("12345",)),
        ({"query": "not-a-uuid"}, 400, ("query",)),
    ],
)
def test_bad_queries(http: httpx.Client, body: dict[str, Any], status: int, needles: tuple[str, ...]) -> None:
    _assert_error(http.post("/collections/bad/points/query", json=body), status, *needles)


def test_bad_query_batch_and_params(http: httpx.Client) -> None:
    searches = {"searches": [{"query": [1, 2, 3, 4]}] * (limits.QUERY_BATCH_MAX + 1)}
    _assert_error(http.post("/collections/bad/points/query/batch", json=searches), 400, "QUERY_BATCH_MAX")
    _assert_error(http.put("/collections/bad/points", params={"wait": "maybe"},
                           json={"points": [{"id": 1, "vector": [1, 2, 3, 4]}]}), 400, "wait")
    _assert_error(http.post("/collections/bad/points", json={"ids": [1, "zzz"]}), 400, "ids[1]")
    _assert_error(http.get("/collections/bad/points/not-an-id"), 400, "id")


def test_unknown_route_and_method(http: httpx.Client) -> None:
    assert http.get("/nowhere").status_code == 404
    assert http.delete("/collections/bad/points/scroll").status_code == 405


def test_node_keeps_serving(http: httpx.Client, shared_node: Node) -> None:
    assert httpx.get(f"{shared_node.url}/readyz").status_code == 200
    assert _count(http) == 5
    hits = http.post("/collections/bad/points/query", json={"query": [1, 2, 3, 4], "limit": 2}).json()
    assert len(hits["result"]["points"]) == 2


def test_api_key_from_environment(tmp_path: pathlib.Path) -> None:
    from tests.e2e.conftest import Node as NodeClass  # noqa: PLC0415 - the fixture module's class

    node = NodeClass(data_dir=tmp_path / "data", log_path=tmp_path / "node.log",
                     extra_env={"QCLUSTER__SERVICE__API_KEY": "s3cret"})
    node.start()
    try:
        assert httpx.get(f"{node.url}/readyz").status_code == 200
        _assert_error(httpx.get(f"{node.url}/collections"), 401, "API key")
        _assert_error(httpx.get(f"{node.url}/collections", headers={"api-key": "wrong"}), 401, "Invalid")
        ok = httpx.get(f"{node.url}/collections", headers={"api-key": "s3cret"})
        assert ok.status_code == 200 and json.loads(ok.text)["result"] == {"collections": []}
        bearer = httpx.get(f"{node.url}/collections", headers={"Authorization": "Bearer s3cret"})
        assert bearer.status_code == 200
    finally:
        node.stop()

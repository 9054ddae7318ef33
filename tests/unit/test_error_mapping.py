"""Every QclusterError subclass has an explicit row in the error table."""

from __future__ import annotations

import gc

import grpc
import pytest

import qcluster.errors as errors
from qcluster.api.error_mapping import ERROR_TABLE, http_headers_for, wire_status_for


def _all_subclasses(root: type) -> list[type]:
    found: list[type] = []
    pending = [root]
    while pending:
        cls = pending.pop()
        found.append(cls)
        pending.extend(cls.__subclasses__())
    return found


ALL_ERRORS = _all_subclasses(errors.QclusterError)


def test_discovers_the_documented_tree() -> None:
    names = {cls.__name__ for cls in ALL_ERRORS}
    assert set(errors.__all__) <= names


@pytest.mark.parametrize("cls", ALL_ERRORS, ids=lambda cls: cls.__name__)
def test_every_error_class_is_mapped(cls: type) -> None:
    assert cls in ERROR_TABLE, f"{cls.__module__}.{cls.__name__} has no row in ERROR_TABLE"
    status = ERROR_TABLE[cls]
    assert 400 <= status.http_status <= 599
    assert status.grpc_code in grpc.StatusCode.__members__


@pytest.mark.parametrize(
    ("error", "http_status"),
    [
        (errors.InvalidRequest("x"), 400),
        (errors.LimitExceeded("x"), 400),
        (errors.NotFound("x"), 404),
        (errors.AlreadyExists("x"), 409),
        (errors.PreconditionFailed("x"), 409),
        (errors.Unauthorized("x"), 401),
        (errors.Forbidden("x"), 403),
        (errors.NotLeader("x", leader_hint=None), 503),
        (errors.NoQuorum("x"), 503),
        (errors.ShardUnavailable("x"), 503),
        (errors.DeadlineExceeded("x"), 504),
        (errors.Overloaded("x", retry_after_s=1.5), 429),
        (errors.DataCorruption("x"), 500),
        (ValueError("a bug"), 500),
    ],
)
def test_status_of_instances(error: BaseException, http_status: int) -> None:
    assert wire_status_for(error).http_status == http_status


def test_retryable_errors_are_5xx_or_429() -> None:
    for cls in ALL_ERRORS:
        if cls.retryable:
            assert ERROR_TABLE[cls].http_status in (429, 503, 504, 507), cls


def test_overloaded_carries_retry_after() -> None:
    assert http_headers_for(errors.Overloaded("busy", retry_after_s=1.2)) == {"Retry-After": "2"}
    assert http_headers_for(errors.Overloaded("busy", retry_after_s=0)) == {"Retry-After": "1"}
    assert http_headers_for(errors.NotFound("x")) == {}


def test_unknown_subclass_falls_back_to_its_ancestor() -> None:
    class Custom(errors.NotFound):
        pass

    try:
        assert wire_status_for(Custom("x")).http_status == 404
    finally:
        # Drop the class so later walks of __subclasses__ do not see it.
        del Custom
        gc.collect()


# --- errors on the wire (the aiohttp app with a fake table of contents) -------

class _ExplodingToc:
    """Stands in for TableOfContents: every lookup fails in a chosen way."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def is_ready(self) -> bool:
        return True

    def collection(self, name: str) -> object:
        raise self.error


def _get(error: Exception, path: str) -> tuple[int, dict[str, object], dict[str, str]]:
    import asyncio
    import concurrent.futures

    from aiohttp.test_utils import TestClient, TestServer

    from qcluster.api.rest import NodeState, build_app

    async def run() -> tuple[int, dict[str, object], dict[str, str]]:
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
            state = NodeState(executor=executor, commit="0" * 40, body_bytes_max=1024, api_key=None)
            state.toc = _ExplodingToc(error)  # type: ignore[assignment]
            async with TestClient(TestServer(build_app(state))) as client:
                response = await client.post(path, json={})
                return response.status, await response.json(), dict(response.headers)

    return asyncio.run(run())


def test_unexpected_exception_is_a_500_and_the_app_keeps_serving() -> None:
    status, body, _headers = _get(RuntimeError("boom"), "/collections/c/points/count")
    assert status == 500
    assert "boom" in body["status"]["error"]  # type: ignore[index]
    status, body, _headers = _get(errors.NotFound("Collection `c` doesn't exist!"), "/collections/c/points/count")
    assert status == 404
    assert body["status"] == {"error": "Collection `c` doesn't exist!"}


def test_overloaded_sends_retry_after() -> None:
    status, _body, headers = _get(errors.Overloaded("busy", retry_after_s=2), "/collections/c/points/count")
    assert status == 429
    assert headers["Retry-After"] == "2"


def test_openapi_document_matches_the_router() -> None:
    import concurrent.futures

    from qcluster.api.rest import NodeState, build_app
    from qcluster.api.rest.app import ALL_ROUTES
    from qcluster.api.rest.openapi import build_document

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as executor:
        app = build_app(NodeState(executor=executor, commit="0" * 40, body_bytes_max=1024, api_key=None))
    registered = {(route.method, route.resource.canonical) for route in app.router.routes()  # type: ignore[union-attr]
                  if route.method != "HEAD"}
    document = build_document(ALL_ROUTES)
    documented = {(method.upper(), path) for path, methods in document["paths"].items() for method in methods}
    assert registered == documented
    assert len(documented) == len(ALL_ROUTES)

"""``AsyncClient``: the asyncio SDK (same methods as ``Client``, awaited)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import httpx
import numpy as np
from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from qcluster.client._dense import (
    QueryResult,
    UploadResult,
    Vectors,
    backoff_s,
    channel_options,
    is_retryable,
    query_requests,
    query_result,
    shard_operation,
    upload_plan,
)
from qcluster.client.sync import DEFAULT_GRPC_PORT, DEFAULT_URL, _progress_bar, grpc_target
from qcluster.client.errors import error_from_rpc, raises_qcluster_errors_async
from qcluster.errors import InvalidRequest, QclusterError
from qcluster.proto.v1 import dense_pb2_grpc

__all__ = ["AsyncClient"]


class AsyncClient:
    """Like ``Client``, for asyncio applications; ``client.qdrant`` is an
    ``AsyncQdrantClient``. Use ``async with`` or ``await close()``."""

    def __init__(self, url: str = DEFAULT_URL, *, grpc_port: int = DEFAULT_GRPC_PORT, api_key: str | None = None,
                 timeout: float = 60.0, prefer_grpc: bool = False) -> None:
        target, secure = grpc_target(url, grpc_port)
        self.url = url
        self.timeout = timeout
        self.qdrant = AsyncQdrantClient(url=url, grpc_port=grpc_port, prefer_grpc=prefer_grpc, api_key=api_key,
                                        timeout=max(1, round(timeout)), check_compatibility=False)
        if secure:
            self._channel = grpc.aio.secure_channel(target, grpc.ssl_channel_credentials(), options=channel_options())
        else:
            self._channel = grpc.aio.insecure_channel(target, options=channel_options())
        self._dense = dense_pb2_grpc.DensePointsStub(self._channel)
        self._metadata = (("api-key", api_key),) if api_key else ()
        self._http_headers = {"api-key": api_key} if api_key else {}

    async def close(self) -> None:
        await self._channel.close()
        await self.qdrant.close()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    async def _call(self, method: Callable[..., Any], request: Any, *, max_retries: int) -> tuple[Any, int]:
        for attempt in range(max_retries + 1):
            try:
                return await method(request, timeout=self.timeout, metadata=self._metadata), attempt
            except grpc.aio.AioRpcError as error:
                if not is_retryable(error) or attempt == max_retries:
                    raise error_from_rpc(error) from error
                await asyncio.sleep(backoff_s(attempt + 1))
        raise AssertionError("the loop returns or raises")

    async def upload(self, collection: str, vectors: Vectors, *, ids: Sequence[Any] | np.ndarray | None = None,
                     payloads: Sequence[Any] | None = None, batch_size: int = 1_000, parallel: int = 2,
                     wait: bool = True, max_retries: int = 5, progress: bool = False, start: int = 0,
                     on_checkpoint: Callable[[int], None] | None = None) -> UploadResult:
        """See ``Client.upload``: same batching, backpressure, retries and checkpoints."""
        plan = upload_plan(collection, vectors, ids=ids, payloads=payloads, batch_size=batch_size, wait=wait)
        if not 0 <= start <= plan.rows:
            raise InvalidRequest(f"start: must be between 0 and {plan.rows}")
        if parallel < 1:
            raise InvalidRequest("parallel: must be at least 1")
        started = time.perf_counter()
        queue = list(reversed(plan.batches(start)))
        finished: dict[int, int] = {}
        state = {"next_row": start, "retries": 0, "sent": 0}
        bar = _progress_bar(plan.rows, start, progress, f"upload {collection}")

        async def worker() -> None:
            while queue:  # each worker takes the next batch once its last one is acknowledged
                begin, end = queue.pop()
                try:
                    _reply, used = await self._call(self._dense.Upsert, plan.request(begin, end),
                                                    max_retries=max_retries)
                except QclusterError as error:
                    queue.clear()
                    error.add_note(f"upload of {collection!r} stopped at rows [{begin}, {end}); every row "
                                   f"before {state['next_row']} is written: resume with start={state['next_row']}")
                    raise
                state["retries"] += used
                state["sent"] += 1
                finished[begin] = end
                while state["next_row"] in finished:
                    state["next_row"] = finished.pop(state["next_row"])
                if on_checkpoint is not None:
                    on_checkpoint(state["next_row"])
                bar.update(end - begin)

        try:
            async with asyncio.TaskGroup() as group:
                for _ in range(parallel):
                    group.create_task(worker())
        except* QclusterError as errors:
            raise errors.exceptions[0] from None
        finally:
            bar.close()
        assert state["next_row"] == plan.rows
        return UploadResult(points=plan.rows - start, batches=state["sent"], retries=state["retries"],
                            seconds=time.perf_counter() - started)

    async def query(self, collection: str, vectors: np.ndarray, *, limit: int = 10, offset: int = 0,
                    using: str | None = None, filter: models.Filter | dict[str, Any] | None = None,
                    with_payload: bool = False, hnsw_ef: int | None = None, exact: bool = False,
                    score_threshold: float | None = None, batch_size: int = 256) -> QueryResult:
        """See ``Client.query``; the row batches are sent concurrently."""
        requests = query_requests(collection, vectors, limit=limit, offset=offset, using=using, filter=filter,
                                  with_payload=with_payload, hnsw_ef=hnsw_ef, exact=exact,
                                  score_threshold=score_threshold, batch_size=batch_size)
        replies = await asyncio.gather(*(self._call(self._dense.Query, request, max_retries=2)
                                         for request in requests))
        return query_result([reply for reply, _used in replies], limit=limit, single=np.ndim(vectors) == 1)

    @raises_qcluster_errors_async
    async def count(self, collection: str, *, exact: bool = True) -> int:
        return (await self.qdrant.count(collection, exact=exact)).count

    @raises_qcluster_errors_async
    async def cluster_status(self) -> dict[str, Any]:
        """See ``Client.cluster_status``."""
        async with httpx.AsyncClient(timeout=self.timeout) as http:
            response = await http.get(f"{self.url.rstrip('/')}/cluster", headers=self._http_headers)
        if response.status_code != 200:
            raise UnexpectedResponse.for_response(response)
        return response.json()["result"]  # type: ignore[no-any-return]

    @raises_qcluster_errors_async
    async def shard_placement(self, collection: str) -> Any:
        return await self.qdrant.collection_cluster_info(collection)

    @raises_qcluster_errors_async
    async def move_shard(self, collection: str, shard_id: int, *, from_peer_id: int, to_peer_id: int) -> bool:
        return await self.qdrant.cluster_collection_update(collection, shard_operation(
            "move_shard", shard_id=shard_id, from_peer_id=from_peer_id, to_peer_id=to_peer_id))

    @raises_qcluster_errors_async
    async def replicate_shard(self, collection: str, shard_id: int, *, from_peer_id: int, to_peer_id: int) -> bool:
        return await self.qdrant.cluster_collection_update(collection, shard_operation(
            "replicate_shard", shard_id=shard_id, from_peer_id=from_peer_id, to_peer_id=to_peer_id))

    @raises_qcluster_errors_async
    async def drop_replica(self, collection: str, shard_id: int, *, peer_id: int) -> bool:
        return await self.qdrant.cluster_collection_update(collection, shard_operation(
            "drop_replica", shard_id=shard_id, peer_id=peer_id))

"""The ``Shards`` service over internal gRPC: searches of one local replica
on behalf of another node's router.

Server: ``ShardsServicer`` runs ``LocalShard.search_batch`` in the storage
executor. Client: ``GrpcShards.search`` returns exactly what the remote
``search_batch`` returned. A shard this node does not hold is NOT_FOUND;
storage errors keep their gRPC code from the one error table.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any

import grpc

from qcluster.engine.shard import LocalShard
from qcluster.errors import QclusterError
from qcluster.proto.internal.v1 import replication_pb2 as replication_pb
from qcluster.proto.internal.v1 import shards_pb2 as pb
from qcluster.proto.internal.v1 import shards_pb2_grpc as pb_grpc
from qcluster.replication.messages import ShardKey
from qcluster.transport.codec import decode_requests, decode_results, encode_requests, encode_results
from qcluster.transport.pool import StubPool, peer_error
from qcluster.transport.secret import require_secret, secret_metadata
from qcluster.types import QueryRequest, ScoredPoint

__all__ = ["GrpcShards", "add_shards_service"]

ShardLookup = Callable[[ShardKey], LocalShard | None]


class ShardsServicer(pb_grpc.ShardsServicer):
    def __init__(self, shards: ShardLookup, *, executor: concurrent.futures.Executor, secret: str) -> None:
        assert secret, "internal services need the cluster secret"
        self._shards = shards
        self._executor = executor
        self._secret = secret.encode()

    async def Search(self, request: pb.ShardSearchRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await require_secret(context, self._secret)
        key = ShardKey(collection=request.shard.collection, shard_id=request.shard.shard_id)
        shard = self._shards(key)
        if shard is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no local replica of shard {key.shard_id} of {key.collection!r}")
        assert shard is not None

        def search() -> bytes:
            return encode_results(shard.search_batch(decode_requests(request.requests)))

        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, search)
        except QclusterError as error:
            # Only the API layer knows the error table; internal callers need the class, not the code.
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{error.code}: {error.message}")
            raise AssertionError("context.abort raises") from error
        return pb.ShardSearchReply(results=results)


def add_shards_service(server: grpc.aio.Server, shards: ShardLookup, *, executor: concurrent.futures.Executor,
                       secret: str) -> None:
    pb_grpc.add_ShardsServicer_to_server(ShardsServicer(shards, executor=executor, secret=secret), server)


class GrpcShards:
    """Remote shard reads, a channel per node, every call bounded by ``deadline_s``."""

    def __init__(self, *, addresses: Callable[[int], str | None], secret: str, deadline_s: float) -> None:
        assert secret and deadline_s > 0
        self._metadata = secret_metadata(secret)
        self._deadline_s = deadline_s
        self._pool = StubPool(pb_grpc.ShardsStub, addresses=addresses)

    async def search(self, node_id: int, key: ShardKey, requests: list[QueryRequest]) -> list[list[ScoredPoint]]:
        message = pb.ShardSearchRequest(shard=replication_pb.ShardRef(collection=key.collection,
                                                                      shard_id=key.shard_id),
                                        requests=encode_requests(requests))
        try:
            reply = await self._pool.stub(node_id).Search(message, timeout=self._deadline_s, metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise peer_error(node_id, error, deadline_s=self._deadline_s) from error
        return decode_results(reply.results)

    async def close(self) -> None:
        await self._pool.close()

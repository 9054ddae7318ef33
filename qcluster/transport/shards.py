"""The ``Shards`` service over internal gRPC: one node's router asking
another node to read one of its local replicas, or to write as a primary.

Server: ``ShardsServicer`` runs reads of a ``LocalShard`` in the internal
executor, and forwarded writes through the node's ``PrimaryWrite``. Client:
``GrpcShards`` returns exactly what the remote call returned. A shard this
node does not hold is NOT_FOUND (the router tries another replica); a
qcluster error raised remotely travels in the reply body and is raised again
by the client as the same class, so a bad request stays a bad request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from qcluster.engine.shard import LocalShard
from qcluster.errors import QclusterError
from qcluster.operations import Operation
from qcluster.proto.internal.v1 import replication_pb2 as replication_pb
from qcluster.proto.internal.v1 import shards_pb2 as pb
from qcluster.proto.internal.v1 import shards_pb2_grpc as pb_grpc
from qcluster.replication.messages import ShardKey
from qcluster.transport import codec
from qcluster.transport.pool import StubPool, peer_error
from qcluster.transport.secret import require_secret, secret_metadata
from qcluster.types import OrderBy, PayloadSelector, PointId, QueryRequest, Record, ScoredPoint

__all__ = ["GrpcShards", "PrimaryWrite", "add_shards_service"]

ShardLookup = Callable[[ShardKey], LocalShard | None]
# Apply an operation as this node's primary of a shard; returns its seq_no once acknowledged.
PrimaryWrite = Callable[[ShardKey, Operation], Awaitable[int]]


def _key(ref: replication_pb.ShardRef) -> ShardKey:
    return ShardKey(collection=ref.collection, shard_id=ref.shard_id)


class ShardsServicer(pb_grpc.ShardsServicer):
    def __init__(self, shards: ShardLookup, *, primary_write: PrimaryWrite | None,
                 executor: concurrent.futures.Executor, secret: str) -> None:
        assert secret, "internal services need the cluster secret"
        self._shards = shards
        self._primary_write = primary_write
        self._executor = executor
        self._secret = secret.encode()

    async def _local(self, ref: replication_pb.ShardRef, context: grpc.aio.ServicerContext) -> LocalShard:
        await require_secret(context, self._secret)
        key = _key(ref)
        shard = self._shards(key)
        if shard is None:
            await context.abort(grpc.StatusCode.NOT_FOUND,
                                f"no local replica of shard {key.shard_id} of {key.collection!r}")
        assert shard is not None
        return shard

    async def _answer(self, function: Callable[[], Any]) -> pb.ShardCallReply:
        try:
            value = await asyncio.get_running_loop().run_in_executor(self._executor, function)
        except QclusterError as error:
            return pb.ShardCallReply(body=codec.encode_failure(error))
        return pb.ShardCallReply(body=codec.encode_answer(value))

    async def Search(self, request: pb.ShardSearchRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        shard = await self._local(request.shard, context)

        def search() -> bytes:
            return codec.encode_results(shard.search_batch(codec.decode_requests(request.requests)))

        try:
            results = await asyncio.get_running_loop().run_in_executor(self._executor, search)
        except QclusterError as error:
            # Internal callers need to know only that this replica could not answer.
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{error.code}: {error.message}")
            raise AssertionError("context.abort raises") from error
        return pb.ShardSearchReply(results=results)

    async def Retrieve(self, request: pb.ShardCall, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        shard = await self._local(request.shard, context)
        ids, with_payload, with_vector = codec.decode_retrieve(request.body)
        return await self._answer(lambda: codec.records_to_wire(
            shard.retrieve(ids, with_payload=with_payload, with_vector=with_vector)))

    async def Scroll(self, request: pb.ShardCall, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        shard = await self._local(request.shard, context)
        call = codec.decode_scroll(request.body)

        def scroll() -> list[Any]:
            records, next_offset = shard.scroll(filter=call.filter, limit=call.limit, offset=call.offset,
                                                order_by=call.order_by, with_payload=call.with_payload,
                                                with_vector=call.with_vector)
            return codec.page_to_wire(records, next_offset)

        return await self._answer(scroll)

    async def Count(self, request: pb.ShardCall, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        shard = await self._local(request.shard, context)
        filter_ = codec.decode_value(request.body, "count request")
        return await self._answer(lambda: shard.count(filter=filter_))

    async def Write(self, request: pb.ShardCall, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await require_secret(context, self._secret)
        if self._primary_write is None:
            await context.abort(grpc.StatusCode.UNIMPLEMENTED, "this node takes no forwarded writes")
        assert self._primary_write is not None
        operation = codec.decode_write(request.body)
        try:
            seq_no = await self._primary_write(_key(request.shard), operation)
        except QclusterError as error:
            return pb.ShardCallReply(body=codec.encode_failure(error))
        return pb.ShardCallReply(body=codec.encode_answer(seq_no))


def add_shards_service(server: grpc.aio.Server, shards: ShardLookup, *, executor: concurrent.futures.Executor,
                       secret: str, primary_write: PrimaryWrite | None = None) -> None:
    servicer = ShardsServicer(shards, primary_write=primary_write, executor=executor, secret=secret)
    pb_grpc.add_ShardsServicer_to_server(servicer, server)


def _ref(key: ShardKey) -> replication_pb.ShardRef:
    return replication_pb.ShardRef(collection=key.collection, shard_id=key.shard_id)


class GrpcShards:
    """Remote shard calls, a channel per node, every call bounded by a deadline."""

    def __init__(self, *, addresses: Callable[[int], str | None], secret: str, deadline_s: float,
                 write_deadline_s: float | None = None) -> None:
        assert secret and deadline_s > 0
        self._metadata = secret_metadata(secret)
        self._deadline_s = deadline_s
        self._write_deadline_s = write_deadline_s or deadline_s
        self._pool = StubPool(pb_grpc.ShardsStub, addresses=addresses)

    async def _call(self, node_id: int, method: str, message: Any, *, deadline_s: float | None = None) -> Any:
        deadline_s = deadline_s or self._deadline_s
        try:
            return await getattr(self._pool.stub(node_id), method)(message, timeout=deadline_s,
                                                                  metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise peer_error(node_id, error, deadline_s=deadline_s) from error

    async def search(self, node_id: int, key: ShardKey, requests: list[QueryRequest]) -> list[list[ScoredPoint]]:
        message = pb.ShardSearchRequest(shard=_ref(key), requests=codec.encode_requests(requests))
        reply = await self._call(node_id, "Search", message)
        return codec.decode_results(reply.results)

    async def retrieve(self, node_id: int, key: ShardKey, ids: list[PointId], *, with_payload: PayloadSelector,
                       with_vector: bool | tuple[str, ...]) -> list[Record]:
        body = codec.encode_retrieve(ids, with_payload=with_payload, with_vector=with_vector)
        reply = await self._call(node_id, "Retrieve", pb.ShardCall(shard=_ref(key), body=body))
        return codec.records_from_wire(codec.decode_answer(reply.body, "retrieve reply"))

    async def scroll(self, node_id: int, key: ShardKey, *, filter: dict[str, Any] | None, limit: int,
                     offset: PointId | None, order_by: OrderBy | None, with_payload: PayloadSelector,
                     with_vector: bool | tuple[str, ...]) -> tuple[list[Record], PointId | None]:
        body = codec.encode_scroll(codec.ScrollCall(filter=filter, limit=limit, offset=offset, order_by=order_by,
                                                    with_payload=with_payload, with_vector=with_vector))
        reply = await self._call(node_id, "Scroll", pb.ShardCall(shard=_ref(key), body=body))
        return codec.page_from_wire(codec.decode_answer(reply.body, "scroll reply"))

    async def count(self, node_id: int, key: ShardKey, *, filter: dict[str, Any] | None) -> int:
        reply = await self._call(node_id, "Count", pb.ShardCall(shard=_ref(key), body=codec.encode_value(filter)))
        return int(codec.decode_answer(reply.body, "count reply"))

    async def write(self, node_id: int, key: ShardKey, operation: Operation) -> int:
        """Forward ``operation`` to the primary on ``node_id``; its seq_no once acknowledged there."""
        message = pb.ShardCall(shard=_ref(key), body=codec.encode_write(operation))
        reply = await self._call(node_id, "Write", message, deadline_s=self._write_deadline_s)
        return int(codec.decode_answer(reply.body, "write reply"))

    async def close(self) -> None:
        await self._pool.close()

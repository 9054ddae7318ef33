"""The ``Replication`` service over internal gRPC.

Server: ``ReplicationServicer`` runs ``ReplicaEndpoint`` calls in the
storage executor. Client: ``GrpcPeers`` implements ``replication.Peers``,
one channel per peer node, every call bounded by a deadline. Every call
carries the cluster secret (metadata ``x-qcluster-secret``); a call without
it is refused with UNAUTHENTICATED before anything is decoded.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path, PurePosixPath
from typing import Any, Final

import grpc

from qcluster.proto.internal.v1 import replication_pb2 as pb
from qcluster.proto.internal.v1 import replication_pb2_grpc as pb_grpc
from qcluster.replication.messages import Outcome, ReplicaAck, ReplicaOp, ShardKey
from qcluster.errors import QclusterError
from qcluster.replication.replica import ReplicaEndpoint, ReplicaStatus
from qcluster.transport.pool import StubPool, peer_error
from qcluster.transport.secret import SECRET_METADATA, require_secret, secret_metadata

__all__ = ["GrpcPeers", "SECRET_METADATA", "add_replication_service"]

_OUTCOMES: Final = {
    Outcome.APPLIED: pb.ReplicateReply.APPLIED, Outcome.DUPLICATE: pb.ReplicateReply.DUPLICATE,
    Outcome.GAP: pb.ReplicateReply.GAP, Outcome.STALE_TERM: pb.ReplicateReply.STALE_TERM,
    Outcome.NOT_FOUND: pb.ReplicateReply.NOT_FOUND, Outcome.REJECTED: pb.ReplicateReply.REJECTED,
    Outcome.DIVERGED: pb.ReplicateReply.DIVERGED,
}
_FROM_WIRE: Final = {wire: outcome for outcome, wire in _OUTCOMES.items()}


def _key(ref: pb.ShardRef) -> ShardKey:
    return ShardKey(collection=ref.collection, shard_id=ref.shard_id)


class ReplicationServicer(pb_grpc.ReplicationServicer):
    def __init__(self, endpoint: ReplicaEndpoint, *, executor: concurrent.futures.Executor, secret: str) -> None:
        assert secret, "internal services need the cluster secret"
        self._endpoint = endpoint
        self._executor = executor
        self._secret = secret.encode()

    async def _check(self, context: grpc.aio.ServicerContext) -> None:
        await require_secret(context, self._secret)

    async def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, function, *args)

    async def Replicate(self, request: pb.ReplicateRequest, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await self._check(context)
        op = ReplicaOp(shard=_key(request.shard), primary_term=request.primary_term, record=request.operation,
                       previous_term=request.previous_term)
        ack: ReplicaAck = await self._run(self._endpoint.replicate, op)
        return pb.ReplicateReply(outcome=_OUTCOMES[ack.outcome], last_seq=ack.last_seq, known_term=ack.known_term,
                                 message=ack.message, last_term=ack.last_term)

    async def FetchOperations(self, request: pb.FetchOperationsRequest,  # noqa: N802
                              context: grpc.aio.ServicerContext) -> Any:
        await self._check(context)
        found = await self._run(self._endpoint.operations_after, _key(request.shard), request.after_seq,
                                max(1, request.limit))
        if found is None:
            return pb.FetchOperationsReply(available=False)
        previous_term, records = found
        return pb.FetchOperationsReply(available=True, operations=records, previous_term=previous_term)

    async def ShardDigest(self, request: pb.ShardRef, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await self._check(context)
        found = await self._run(self._endpoint.digest, _key(request))
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no local replica of shard {request.shard_id} "
                                                           f"of {request.collection!r}")
        digest, last_seq = found
        return pb.ShardDigestReply(points_count=digest.points, content_digest=digest.digest, last_seq=last_seq)


    async def ReplicaStatus(self, request: pb.ShardRef, context: grpc.aio.ServicerContext) -> Any:  # noqa: N802
        await self._check(context)
        status: ReplicaStatus = await self._run(self._endpoint.status, _key(request))
        return pb.ReplicaStatusReply(exists=status.exists, last_seq=status.last_seq, last_term=status.last_term,
                                     known_term=status.known_term)

    async def InstallSnapshot(self, request_iterator: AsyncIterator[pb.SnapshotChunk],  # noqa: N802
                              context: grpc.aio.ServicerContext) -> Any:
        await self._check(context)
        key: ShardKey | None = None
        term = 0
        staging: Path | None = None
        handles: dict[str, Any] = {}
        try:
            async for chunk in request_iterator:
                if key is None:
                    key, term = _key(chunk.shard), chunk.primary_term
                    await self._run(self._endpoint.check_term, key, term)
                    staging = await self._run(self._endpoint.staging_dir, key)
                elif _key(chunk.shard) != key or chunk.primary_term != term:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "a snapshot stream names one shard and term")
                assert staging is not None
                handle = handles.get(chunk.file)
                if handle is None:
                    relative = PurePosixPath(chunk.file)
                    if relative.is_absolute() or ".." in relative.parts or not relative.parts:
                        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad snapshot file name {chunk.file!r}")
                    path = staging.joinpath(*relative.parts)
                    path.parent.mkdir(parents=True, exist_ok=True)
                    handle = handles[chunk.file] = open(path, "ab")  # noqa: SIM115 - closed below
                await self._run(handle.write, chunk.data)
            for handle in handles.values():
                await self._run(_close_synced, handle)
            handles.clear()
            if key is None or staging is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "an empty snapshot stream")
            assert key is not None and staging is not None
            last_seq, last_term = await self._run(self._endpoint.install_snapshot, key, term, staging)
        except QclusterError as error:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{error.code}: {error.message}")
            raise AssertionError("context.abort raises") from error
        finally:
            for handle in handles.values():
                handle.close()
            if staging is not None:
                shutil.rmtree(staging, ignore_errors=True)
        return pb.InstallSnapshotReply(last_seq=last_seq, last_term=last_term)


def _close_synced(handle: Any) -> None:
    handle.flush()
    os.fsync(handle.fileno())
    handle.close()


_SNAPSHOT_CHUNK: Final = 1 << 20


def add_replication_service(server: grpc.aio.Server, endpoint: ReplicaEndpoint, *,
                            executor: concurrent.futures.Executor, secret: str) -> None:
    pb_grpc.add_ReplicationServicer_to_server(ReplicationServicer(endpoint, executor=executor, secret=secret), server)


class GrpcPeers:
    """``replication.Peers`` over internal gRPC: a channel per node, calls bounded by ``deadline_s``."""

    def __init__(self, *, addresses: Callable[[int], str | None], secret: str, deadline_s: float) -> None:
        assert secret and deadline_s > 0
        self._metadata = secret_metadata(secret)
        self._deadline_s = deadline_s
        self._pool = StubPool(pb_grpc.ReplicationStub, addresses=addresses)

    async def replicate(self, node_id: int, op: ReplicaOp) -> ReplicaAck:
        request = pb.ReplicateRequest(shard=pb.ShardRef(collection=op.shard.collection, shard_id=op.shard.shard_id),
                                      primary_term=op.primary_term, operation=op.record,
                                      previous_term=op.previous_term)
        try:
            # wait_for_ready: a peer that just came back (channel in reconnect
            # backoff) is waited for up to the deadline instead of failing at once.
            reply = await self._pool.stub(node_id).Replicate(request, timeout=self._deadline_s, metadata=self._metadata,
                                                        wait_for_ready=True)
        except grpc.aio.AioRpcError as error:
            raise peer_error(node_id, error, deadline_s=self._deadline_s) from error
        return ReplicaAck(_FROM_WIRE[reply.outcome], reply.last_seq, reply.known_term, reply.message,
                          reply.last_term)

    async def replica_status(self, node_id: int, key: ShardKey) -> ReplicaStatus:
        request = pb.ShardRef(collection=key.collection, shard_id=key.shard_id)
        try:
            reply = await self._pool.stub(node_id).ReplicaStatus(request, timeout=self._deadline_s,
                                                                 metadata=self._metadata, wait_for_ready=True)
        except grpc.aio.AioRpcError as error:
            raise peer_error(node_id, error, deadline_s=self._deadline_s) from error
        return ReplicaStatus(exists=reply.exists, last_seq=reply.last_seq, last_term=reply.last_term,
                             known_term=reply.known_term)

    async def install_snapshot(self, node_id: int, key: ShardKey, *, primary_term: int, snapshot: Path,
                               deadline_s: float,
                               progress: Callable[[int], None] | None = None) -> tuple[int, int]:
        """Stream the snapshot directory ``snapshot`` to ``node_id``; the
        replica's (last_seq, last_term) once installed there.
        ``progress(bytes)`` is called with the bytes sent so far."""
        ref = pb.ShardRef(collection=key.collection, shard_id=key.shard_id)
        files = sorted(path for path in snapshot.rglob("*") if path.is_file())
        loop = asyncio.get_running_loop()

        async def chunks() -> AsyncIterator[pb.SnapshotChunk]:
            sent = 0
            for path in files:
                name = path.relative_to(snapshot).as_posix()
                with open(path, "rb") as handle:
                    first = True
                    while True:
                        data = await loop.run_in_executor(None, handle.read, _SNAPSHOT_CHUNK)
                        if not data and not first:
                            break
                        yield pb.SnapshotChunk(shard=ref, primary_term=primary_term, file=name, data=data)
                        sent += len(data)
                        if progress is not None:
                            progress(sent)
                        first = False
                        if not data:
                            break

        try:
            reply = await self._pool.stub(node_id).InstallSnapshot(chunks(), timeout=deadline_s,
                                                                   metadata=self._metadata)
        except grpc.aio.AioRpcError as error:
            raise peer_error(node_id, error, deadline_s=deadline_s) from error
        return reply.last_seq, reply.last_term

    async def close(self) -> None:
        await self._pool.close()

"""Replicated writes between real shards over real internal gRPC on loopback.

Three in-process "nodes", each with its own LocalShard (own directory, own
WAL) and its own grpc.aio server; the cluster state is the edge of this test:
an in-memory ``Membership`` that fences the way the Raft state machine does
(never the primary; a fence may leave fewer than write_consistency_factor in
sync, and the primary then refuses writes).
"""

from __future__ import annotations

import asyncio
import dataclasses
import concurrent.futures
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest

from qcluster.engine.shard import LocalShard
from qcluster.errors import ShardUnavailable
from qcluster.operations import DeletePoints, PointSelector, UpsertPoints
from qcluster.proto.internal.v1 import replication_pb2 as pb
from qcluster.proto.internal.v1 import replication_pb2_grpc as pb_grpc
from qcluster.replication.messages import ShardKey, ShardView
from qcluster.replication.primary import PrimaryWriter
from qcluster.replication.replica import ReplicaEndpoint
from qcluster.transport.replication import GrpcPeers, add_replication_service
from tests.e2e.conftest import free_port
from tests.unit.test_shard import _batch, _config

SECRET = "test-cluster-secret"
KEY = ShardKey("docs", 0)



@dataclass
class FakeMembership:
    """The cluster state's view of one shard, with Raft's fencing rule."""

    view_: ShardView
    fenced: list[int] = field(default_factory=list)

    def view(self, shard: ShardKey) -> ShardView | None:
        return self.view_ if shard == KEY else None

    async def fence(self, shard: ShardKey, node_id: int, *, primary_term: int) -> bool:
        if primary_term != self.view_.primary_term:
            return False
        if node_id not in self.view_.in_sync:
            return True
        if node_id == self.view_.primary:
            return False
        self.view_ = dataclasses.replace(self.view_, in_sync=self.view_.in_sync - {node_id})
        self.fenced.append(node_id)
        return True

    def add_in_sync(self, node_id: int) -> None:
        self.view_ = dataclasses.replace(self.view_, in_sync=self.view_.in_sync | {node_id})


class Node:
    def __init__(self, node_id: int, directory: Path, membership: FakeMembership,
                 executor: concurrent.futures.Executor) -> None:
        self.node_id = node_id
        self.directory = directory
        self.shard = LocalShard.open(directory, _config(indexing_threshold=10_000_000))
        self.endpoint = ReplicaEndpoint(shards=lambda key: self.shard if key == KEY else None, membership=membership)
        self.port = free_port()
        self.executor = executor
        self.server: grpc.aio.Server | None = None

    async def start(self) -> None:
        self.server = grpc.aio.server()
        add_replication_service(self.server, self.endpoint, executor=self.executor, secret=SECRET)
        self.server.add_insecure_port(f"127.0.0.1:{self.port}")
        await self.server.start()

    async def stop(self) -> None:
        assert self.server is not None
        await self.server.stop(grace=None)
        self.server = None


@asynccontextmanager
async def cluster(tmp_path: Path, *, write_consistency_factor: int = 1) -> AsyncIterator[dict[str, Any]]:
    executor = concurrent.futures.ThreadPoolExecutor(4)
    membership = FakeMembership(ShardView(primary=1, primary_term=1, in_sync=frozenset({1, 2, 3}),
                                          write_consistency_factor=write_consistency_factor))
    nodes = {node_id: Node(node_id, tmp_path / f"node{node_id}", membership, executor) for node_id in (1, 2, 3)}
    for node in nodes.values():
        await node.start()
    peers = GrpcPeers(addresses=lambda node_id: f"127.0.0.1:{nodes[node_id].port}" if node_id in nodes else None,
                      secret=SECRET, deadline_s=2.0)
    loop = asyncio.get_running_loop()
    writer = PrimaryWriter(node_id=1, membership=membership, peers=peers,
                           run_blocking=lambda function, *args: loop.run_in_executor(executor, function, *args))
    try:
        yield {"nodes": nodes, "membership": membership, "writer": writer, "peers": peers}
    finally:
        await peers.close()
        for node in nodes.values():
            if node.server is not None:
                await node.stop()
            node.shard.close()
        executor.shutdown(wait=True)


def _upsert(rng: random.Random, ids: list[int]) -> UpsertPoints:
    batch, _count = _batch(ids, rng)
    return UpsertPoints(points=batch)


def _run(coroutine: Any) -> Any:
    return asyncio.run(coroutine)


def test_writes_reach_every_in_sync_replica(tmp_path: Path) -> None:
    async def scenario() -> None:
        rng = random.Random(1)
        async with cluster(tmp_path) as c:
            nodes, writer = c["nodes"], c["writer"]
            for step in range(20):
                await writer.write(KEY, nodes[1].shard, _upsert(rng, rng.sample(range(500), 25)))
                if step % 5 == 4:
                    await writer.write(KEY, nodes[1].shard, DeletePoints(selector=PointSelector(
                        filter={"must": [{"key": "n", "match": {"value": step % 5}}]})))
            digests = {node_id: node.shard.content_digest() for node_id, node in nodes.items()}
            assert len(set(digests.values())) == 1, digests
            assert {node.shard.last_seq for node in nodes.values()} == {24}
            assert digests[1].points > 0

    _run(scenario())


def test_unreachable_replica_is_fenced_then_catches_up_from_the_wal(tmp_path: Path) -> None:
    async def scenario() -> None:
        rng = random.Random(2)
        async with cluster(tmp_path) as c:
            nodes, writer, membership = c["nodes"], c["writer"], c["membership"]
            await writer.write(KEY, nodes[1].shard, _upsert(rng, list(range(50))))
            await nodes[3].stop()
            for _ in range(5):  # acknowledged on nodes 1 and 2 once node 3 is out of the in-sync set
                await writer.write(KEY, nodes[1].shard, _upsert(rng, rng.sample(range(500), 20)))
            assert membership.fenced == [3] and membership.view_.in_sync == {1, 2}
            assert nodes[3].shard.last_seq == 1 and nodes[2].shard.last_seq == 6
            # Node 3 returns and is put back in sync (recovery's last step); the next
            # write finds it behind, sends it the missing records, and all converge.
            await nodes[3].start()
            membership.add_in_sync(3)
            await writer.write(KEY, nodes[1].shard, _upsert(rng, [7, 8, 9]))
            assert membership.fenced == [3], "node 3 took the write this time"
            assert len({node.shard.content_digest() for node in nodes.values()}) == 1
            assert {node.shard.last_seq for node in nodes.values()} == {7}

    _run(scenario())


def test_below_write_consistency_factor_writes_fail_until_a_replica_is_back(tmp_path: Path) -> None:
    """A fence that leaves fewer in-sync replicas than write_consistency_factor
    fails its write; later writes are refused before anything is logged;
    once recovery puts the replica back, writes go on and replicas agree."""
    async def scenario() -> None:
        rng = random.Random(3)
        async with cluster(tmp_path, write_consistency_factor=3) as c:
            nodes, writer, membership = c["nodes"], c["writer"], c["membership"]
            await writer.write(KEY, nodes[1].shard, _upsert(rng, list(range(10))))
            await nodes[2].stop()
            with pytest.raises(ShardUnavailable, match="not acknowledged"):
                await writer.write(KEY, nodes[1].shard, _upsert(rng, [100, 101]))
            assert membership.view_.in_sync == {1, 3}, "the failed replica was fenced"
            logged = nodes[1].shard.last_seq
            with pytest.raises(ShardUnavailable, match="fewer than its write_consistency_factor 3"):
                await writer.write(KEY, nodes[1].shard, _upsert(rng, [150]))
            assert nodes[1].shard.last_seq == logged, "nothing was logged"
            await nodes[2].start()
            membership.add_in_sync(2)  # what recovery does once node 2 has caught up
            await writer.write(KEY, nodes[1].shard, _upsert(rng, [200]))  # node 2 catches up first (GAP)
            assert len({node.shard.content_digest() for node in nodes.values()}) == 1

    _run(scenario())


def test_a_deposed_primary_cannot_acknowledge(tmp_path: Path) -> None:
    async def scenario() -> None:
        rng = random.Random(4)
        async with cluster(tmp_path) as c:
            nodes, writer = c["nodes"], c["writer"]
            await writer.write(KEY, nodes[1].shard, _upsert(rng, list(range(10))))
            # Node 2 has already heard from a newer primary (term 5).
            nodes[2].endpoint._observe_term(KEY, 5)
            with pytest.raises(ShardUnavailable, match="no longer the primary"):
                await writer.write(KEY, nodes[1].shard, _upsert(rng, [11]))

    _run(scenario())


def test_internal_calls_need_the_cluster_secret(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with cluster(tmp_path) as c:
            node = c["nodes"][2]
            async with grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel:
                stub = pb_grpc.ReplicationStub(channel)
                request = pb.ReplicateRequest(shard=pb.ShardRef(collection="docs", shard_id=0), primary_term=9,
                                              operation=b"\x80\x04garbage")
                for metadata in ((), (("x-qcluster-secret", "wrong"),)):
                    with pytest.raises(grpc.aio.AioRpcError) as refused:
                        await stub.Replicate(request, metadata=metadata, timeout=5)
                    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
            assert node.shard.last_seq == 0

    _run(scenario())


def test_a_replica_with_a_deposed_primarys_record_is_fenced(tmp_path: Path) -> None:
    async def scenario() -> None:
        rng = random.Random(5)
        async with cluster(tmp_path) as c:
            nodes, writer, membership = c["nodes"], c["writer"], c["membership"]
            for _ in range(3):
                await writer.write(KEY, nodes[1].shard, _upsert(rng, rng.sample(range(100), 10)))
            # Node 3 alone got seq 4 from the term-1 primary before it was replaced ...
            nodes[3].shard.apply_logged(_upsert(rng, [999]), term=1)
            # ... and the primary of term 2 assigns its own seq 4.
            membership.view_ = dataclasses.replace(membership.view_, primary_term=2)
            await writer.write(KEY, nodes[1].shard, _upsert(rng, [500, 501]))
            assert membership.fenced == [3], "the diverged replica is out of the in-sync set"
            assert nodes[1].shard.content_digest() == nodes[2].shard.content_digest()
            assert nodes[3].shard.content_digest() != nodes[1].shard.content_digest()

    _run(scenario())

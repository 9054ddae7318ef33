"""A search of a shard held by another node, over the internal ``Shards``
service on real gRPC, returns exactly what the local ``search_batch`` does:
same ids, scores, versions, payload selections and vectors."""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import random
from pathlib import Path

import grpc
import numpy as np
import pytest

from qcluster.engine.shard import LocalShard
from qcluster.errors import DataCorruption, ShardUnavailable
from qcluster.operations import UpsertPoints
from qcluster.replication.messages import ShardKey
from qcluster.transport.codec import decode_requests, encode_requests
from qcluster.transport.shards import GrpcShards, add_shards_service
from qcluster.types import PayloadSelector, QueryRequest, SearchParams
from tests.e2e.conftest import free_port
from tests.unit.test_shard import _batch, _config

SECRET = "shards-test-secret"
KEY = ShardKey("docs", 3)



def _requests() -> list[QueryRequest]:
    rng = np.random.default_rng(1)
    vectors = rng.normal(size=(6, 4)).astype(np.float32)
    return [
        QueryRequest(vector=vectors[0], using="a", limit=5),
        QueryRequest(vector=vectors[1], using="a", limit=3, offset=2, with_payload=PayloadSelector(),
                     with_vector=True, params=SearchParams(exact=True)),
        QueryRequest(vector=vectors[2], using="a", limit=4, filter={"must": [{"key": "n", "match": {"value": 2}}]},
                     with_payload=PayloadSelector(include=("tag",)), params=SearchParams(hnsw_ef=32)),
        QueryRequest(vector=vectors[3][:2], using="b", limit=2, score_threshold=-0.5, with_vector=("b",),
                     with_payload=PayloadSelector(exclude=("n",))),
    ]


def test_codec_round_trip_and_garbage() -> None:
    requests = _requests()
    decoded = decode_requests(encode_requests(requests))
    for before, after in zip(requests, decoded, strict=True):
        np.testing.assert_array_equal(before.vector, after.vector)
        # Every other field equal (the vector compared above; arrays have no plain ==).
        assert dataclasses.replace(before, vector=after.vector) == after
    for garbage in (b"", b"\x80\x04junk", b"\x81\xa1v\x09"):
        with pytest.raises(DataCorruption):
            decode_requests(garbage)


def test_remote_search_equals_local(tmp_path: Path) -> None:
    async def scenario() -> None:
        rng = random.Random(2)
        shard = LocalShard.open(tmp_path / "shard", _config(indexing_threshold=10_000_000))
        shard.apply(UpsertPoints(points=_batch(list(range(300)), rng)[0]))
        executor = concurrent.futures.ThreadPoolExecutor(2)
        server = grpc.aio.server()
        add_shards_service(server, lambda key: shard if key == KEY else None, executor=executor, secret=SECRET)
        port = free_port()
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        remote = GrpcShards(addresses=lambda node_id: f"127.0.0.1:{port}" if node_id == 7 else None,
                            secret=SECRET, deadline_s=5.0)
        try:
            requests = _requests()
            over_the_wire = await remote.search(7, KEY, requests)
            local = shard.search_batch(requests)
            assert len(over_the_wire) == len(local) == len(requests)
            for wire_points, local_points in zip(over_the_wire, local, strict=True):
                assert [(p.id, p.score, p.version, p.payload) for p in wire_points] == [
                    (p.id, p.score, p.version, p.payload) for p in local_points]
                for wire_point, local_point in zip(wire_points, local_points, strict=True):
                    assert (wire_point.vectors is None) == (local_point.vectors is None)
                    for name, vector in (local_point.vectors or {}).items():
                        np.testing.assert_array_equal(wire_point.vectors[name], vector)
            assert any(points for points in local), "the requests found something"
            with pytest.raises(ShardUnavailable, match="no local replica"):
                await remote.search(7, ShardKey("docs", 4), requests)
            unauthenticated = GrpcShards(addresses=lambda _node: f"127.0.0.1:{port}", secret="wrong-secret",
                                         deadline_s=5.0)
            with pytest.raises(Exception, match="UNAUTHENTICATED"):
                await unauthenticated.search(7, KEY, requests)
            await unauthenticated.close()
        finally:
            await remote.close()
            await server.stop(grace=None)
            executor.shutdown(wait=True)
            shard.close()

    asyncio.run(scenario())

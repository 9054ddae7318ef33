"""RaftNode's asyncio bridge, in one process on loopback: callbacks reach the
loop without blocking it, a timed-out proposal may still commit and its retry
applies once, close fails what is pending, and start refuses a damaged dump
or a taken port. (Multi-process behaviour is in test_consensus.py.)"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from qcluster.cluster.commands import AddNode
from qcluster.cluster.state import ResultCode
from qcluster.consensus import RaftNode, RaftSettings
from qcluster.errors import DataCorruption, DeadlineExceeded, Unavailable

SECRET = "bridge-test-secret"
ELECTION_WAIT_S = 5.0
CLOSE_S = 3.0


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{probe.getsockname()[1]}"


def add_node(node_id: int, *, request_id: str | None = None) -> AddNode:
    return AddNode(request_id=request_id or f"bridge-{node_id}", node_id=node_id, p2p_address=f"10.2.0.{node_id}:1",
                   http_address="h:1", grpc_address="g:1", at_ms=0)


def node(directory: Path, address: str, peers: tuple[str, ...] = (), **changes: Any) -> RaftNode:
    return RaftNode(RaftSettings(node_id=1, p2p_address=address, peer_addresses=peers, cluster_secret=SECRET,
                                 data_dir=directory, **changes))


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=30))


async def wait_leader(raft: RaftNode) -> None:
    async with asyncio.timeout(ELECTION_WAIT_S):
        while raft.leader() is None:
            await asyncio.sleep(0.02)


def test_every_proposal_is_appended_at_once(tmp_path: Path) -> None:
    """Non-batched appends (one append-entries per proposal) are what make a
    commit take about a millisecond rather than pysyncobj's batch period;
    the latency itself is printed by test_consensus.py, not asserted."""
    conf = node(tmp_path, free_address())._conf(tmp_path)
    assert conf.appendEntriesUseBatch is False and conf.commandsWaitLeader is True


def test_concurrent_proposals_reach_the_loop_without_blocking_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        raft = node(tmp_path, free_address())
        await raft.start()
        try:
            await wait_leader(raft)
            assert raft.is_leader(), "a cluster of one leads itself"
            loop_thread = threading.get_ident()
            seen: list[tuple[int, int]] = []
            unsubscribe = raft.subscribe(lambda state: seen.append((threading.get_ident(), state.version)))
            lags: list[float] = []

            async def measure_lag() -> None:
                while True:
                    started = time.monotonic()
                    await asyncio.sleep(0.001)
                    lags.append(time.monotonic() - started - 0.001)

            probe = asyncio.create_task(measure_lag())
            results = await asyncio.gather(*(raft.propose(add_node(index), timeout_s=10) for index in range(1, 501)))
            probe.cancel()
            assert sorted(result.version for result in results) == list(range(1, 501))
            state = await raft.wait_for_version(500, timeout_s=1)
            assert state.version == raft.state().version == 500
            await asyncio.sleep(0.05)
            assert seen[-1] == (loop_thread, 500), "subscribers run on the loop and see the latest state"
            assert {thread for thread, _ in seen} == {loop_thread}
            assert len(seen) <= 500, "deliveries are coalesced"
            print(f"\n[raft] 500 concurrent proposals: {len(seen)} deliveries, loop lag max {max(lags) * 1000:.1f} ms")
            assert max(lags) < 0.5, "the loop is never blocked for a commit"
            unsubscribe()
            await raft.propose(add_node(501), timeout_s=5)
            await asyncio.sleep(0.05)
            assert seen[-1][1] == 500, "unsubscribed"
        finally:
            await raft.close(timeout_s=CLOSE_S)

    run(scenario)


def test_a_timed_out_proposal_may_commit_later_and_its_retry_applies_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        first_address, second_address = free_address(), free_address()
        first = node(tmp_path / "a", first_address, (second_address,))
        second = node(tmp_path / "b", second_address, (first_address,))
        await first.start()
        try:
            command = add_node(7, request_id="maybe")
            with pytest.raises(DeadlineExceeded, match="outcome is unknown"):
                await first.propose(command, timeout_s=0.3)  # no quorum: the proposal waits for a leader
            assert first.state().version == 0
            await second.start()
            state = await first.wait_for_version(1, timeout_s=ELECTION_WAIT_S)
            assert 7 in state.nodes, "the command that timed out committed once a leader existed"
            retried = await first.propose(command, timeout_s=5)
            assert (retried.code, retried.version) == (ResultCode.OK, 1), "the retry gets the first result"
            again = await second.propose(add_node(8), timeout_s=5)
            assert again.version == 2, "the retry applied nothing"
        finally:
            await first.close(timeout_s=CLOSE_S)
            await second.close(timeout_s=CLOSE_S)

    run(scenario)


def test_close_fails_pending_proposals_and_later_calls(tmp_path: Path) -> None:
    async def scenario() -> None:
        raft = node(tmp_path, free_address(), (free_address(),))  # its peer never comes
        await raft.start()
        pending = asyncio.create_task(raft.propose(add_node(1), timeout_s=20))
        waiting = asyncio.create_task(raft.wait_for_version(1, timeout_s=20))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        await raft.close(timeout_s=CLOSE_S)
        for task in (pending, waiting):
            with pytest.raises(Unavailable):
                await task
        assert time.monotonic() - started < CLOSE_S
        with pytest.raises(Unavailable, match="not running"):
            await raft.propose(add_node(2), timeout_s=1)
        await raft.close(timeout_s=CLOSE_S)  # idempotent

    run(scenario)


def test_start_refuses_a_damaged_dump(tmp_path: Path) -> None:
    async def scenario() -> None:
        (tmp_path / "raft").mkdir()
        (tmp_path / "raft" / "cluster.dump").write_bytes(b"QCRAFTD\x00\x01\x00\x00\x00\x00garbage")
        raft = node(tmp_path, free_address())
        threads = threading.active_count()
        with pytest.raises(DataCorruption):
            await raft.start()
        assert threading.active_count() == threads, "no tick thread was started"

    run(scenario)


def test_start_fails_when_the_port_is_taken(tmp_path: Path) -> None:
    async def scenario() -> None:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            address = f"127.0.0.1:{taken.getsockname()[1]}"
            raft = node(tmp_path, address, bind_attempts_max=2, bind_retry_s=0.1)
            with pytest.raises(Unavailable, match="cannot bind"):
                await raft.start()

    run(scenario)


def test_a_restart_restores_the_state_from_the_dump(tmp_path: Path) -> None:
    async def scenario() -> None:
        address = free_address()
        raft = node(tmp_path, address, log_compaction_min_entries=4)
        await raft.start()
        await wait_leader(raft)
        for index in range(1, 11):
            await raft.propose(add_node(index), timeout_s=5)
        raft.force_log_compaction()
        await asyncio.sleep(0.3)
        await raft.close(timeout_s=CLOSE_S)

        again = node(tmp_path, address, log_compaction_min_entries=4)
        await again.start()
        try:
            state = await again.wait_for_version(10, timeout_s=ELECTION_WAIT_S)
            assert sorted(state.nodes) == list(range(1, 11))
            assert again.status().log_length < 10, "restored from the dump"
        finally:
            await again.close(timeout_s=CLOSE_S)

    run(scenario)

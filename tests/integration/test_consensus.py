"""Raft (pysyncobj) in real processes on loopback: election in any start order,
proposals from any node, kill -9 of the leader, recovery from the journal and
the full dump, catch-up by snapshot, membership changes, and an
unauthenticated peer that cannot change anything.

Each member is ``consensus_harness.py`` in its own process, driven over
stdin/stdout. Every wait is bounded; every process is ended by PID at the end
of its test. The figures (election, failover, commit latency) are printed:
run with ``-s`` to see them.
"""

from __future__ import annotations

import json
import os
import pickle
import queue
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from qcluster.cluster.commands import AddNode, encode
from tests.e2e.conftest import free_port

HARNESS = Path(__file__).with_name("consensus_harness.py")
SECRET = "consensus-test-secret"
READY_TIMEOUT_S = 15.0  # a process start: imports, key derivation, bind
REQUEST_TIMEOUT_S = 10.0
ELECTION_TIMEOUT_S = 5.0  # "a leader within a few seconds"
FAILOVER_TIMEOUT_S = 5.0
CATCH_UP_TIMEOUT_S = 10.0
PROPOSAL_TIMEOUT_S = 3.0
ELECTION_TIMEOUT_MIN_S = 0.4  # RaftSettings.election_timeout_min_s, the harness's
COMPACTION_ENTRIES = 20  # small, so the tests compact the log and use the full dump

T = TypeVar("T")


class Member:
    """One harness process; its data dir survives kill and restart."""

    def __init__(self, *, node_id: int, address: str, directory: Path) -> None:
        self.node_id = node_id
        self.address = address
        self.directory = directory
        self.peers: list[str] = []
        self.process: subprocess.Popen[str] | None = None
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._request_ids = iter(range(1_000_000))
        self.starts = 0

    def launch(self) -> None:
        assert self.process is None or self.process.poll() is not None, "already running"
        self.starts += 1
        log = open(self.directory / f"harness-{self.starts}.log", "w")  # noqa: SIM115 - owned by the process
        self.process = subprocess.Popen(
            [sys.executable, str(HARNESS), "--node-id", str(self.node_id), "--address", self.address,
             "--peers", ",".join(self.peers), "--secret", SECRET, "--data-dir", str(self.directory / "data"),
             "--compaction-entries", str(COMPACTION_ENTRIES), "--lifetime-s", "100"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True, bufsize=1,
        )
        log.close()
        self._lines = queue.Queue()
        threading.Thread(target=self._read, args=(self.process, self._lines), daemon=True).start()

    @staticmethod
    def _read(process: subprocess.Popen[str], lines: queue.Queue[str | None]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)
        lines.put(None)

    def wait_ready(self) -> float:
        """Wait for the "ready" line; returns the monotonic time it came."""
        message = self._next_line(READY_TIMEOUT_S)
        assert message.get("event") == "ready", message
        return time.monotonic()

    def start(self) -> float:
        self.launch()
        return self.wait_ready()

    def request(self, op: str, *, wait_s: float = REQUEST_TIMEOUT_S, **fields: Any) -> dict[str, Any]:
        """Send one request and wait at most ``wait_s`` for its answer."""
        assert self.process is not None and self.process.stdin is not None
        request_id = next(self._request_ids)
        self.process.stdin.write(json.dumps({"id": request_id, "op": op, **fields}) + "\n")
        self.process.stdin.flush()
        reply = self._next_line(wait_s)
        assert reply.get("id") == request_id, reply
        return reply

    def _next_line(self, timeout_s: float) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"node {self.node_id}: no answer within {timeout_s} s") from None
        assert line is not None, f"node {self.node_id} exited; see {self.directory}/harness-{self.starts}.log"
        message: dict[str, Any] = json.loads(line)
        return message

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def propose(self, data: bytes, *, timeout_s: float = PROPOSAL_TIMEOUT_S) -> dict[str, Any]:
        return self.request("propose", wait_s=timeout_s + 5, data_hex=data.hex(), timeout_s=timeout_s)

    @property
    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """kill -9, by PID."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=5)

    def stop(self) -> None:
        """Quit politely; kill -9 if it does not exit in time."""
        if not self.is_running:
            return
        assert self.process is not None and self.process.stdin is not None
        try:
            self.process.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.process.stdin.flush()
            self.process.wait(timeout=5)
        except (OSError, subprocess.TimeoutExpired):
            self.kill()


def make_members(tmp_path: Path, count: int) -> list[Member]:
    members = [
        Member(node_id=index + 1, address=f"127.0.0.1:{free_port()}", directory=tmp_path / f"node{index + 1}")
        for index in range(count)
    ]
    for member in members:
        member.directory.mkdir()
        member.peers = [other.address for other in members if other is not member]
    return members


@pytest.fixture
def cleanup() -> Iterator[list[Member]]:
    """Members registered here are ended, by PID, when the test ends."""
    members: list[Member] = []
    yield members
    for member in members:
        member.stop()


def wait_for(predicate: Callable[[], T | None], *, timeout_s: float, what: str, interval_s: float = 0.05) -> T:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(interval_s)


def agreed_leader(members: list[Member]) -> Member | None:
    """The member that leads, once every given member names it."""
    statuses = [member.status() for member in members]
    leaders = {status["leader_address"] for status in statuses}
    if len(leaders) != 1 or None in leaders:
        return None
    (address,) = leaders
    for member, status in zip(members, statuses, strict=True):
        if member.address == address:
            return member if status["is_leader"] else None
    return None  # a member outside the list leads


_request_numbers = iter(range(1_000_000))


def add_node(node_id: int, *, address: str | None = None, request_id: str | None = None) -> bytes:
    """An encoded AddNode: the command these tests replicate."""
    return encode(
        AddNode(
            request_id=request_id or f"test-{next(_request_numbers)}",
            node_id=node_id,
            p2p_address=address or f"10.1.{node_id // 250}.{node_id % 250}:6335",
            http_address=f"10.1.0.{node_id % 250}:6333",
            grpc_address=f"10.1.0.{node_id % 250}:6334",
            at_ms=1_000,
        )
    )


def accepted(reply: dict[str, Any]) -> int:
    assert reply.get("code") == "ok", reply
    version: int = reply["version"]
    return version


def converged(members: list[Member], *, version: int) -> bool:
    statuses = [member.status() for member in members]
    return all(status["state_version"] == version for status in statuses) and len(
        {status["digest"] for status in statuses}
    ) == 1


def register(members: list[Member], via: Member) -> int:
    """AddNode for every member with its real p2p address (the node id -> address map)."""
    version = 0
    for member in members:
        command = add_node(member.node_id, address=member.address, request_id=f"join-{member.node_id}")
        version = accepted(via.propose(command))
    return version


def restored_versions(member: Member) -> list[int]:
    """The state versions its current run restored from a raft dump (the log line is a coverage mark)."""
    log = (member.directory / f"harness-{member.starts}.log").read_text()
    marks = [line for line in log.splitlines() if "restored the raft dump: state version" in line]
    return [int(line.split("state version ")[1].split()[0]) for line in marks]


def start_together(members: list[Member]) -> float:
    for member in members:
        member.launch()
    return max(member.wait_ready() for member in members)


# --- a cluster shared by the tests that only read and add to it ---


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Member]]:
    members = make_members(tmp_path_factory.mktemp("raft"), 3)
    try:
        ready_at = start_together(members)
        leader = wait_for(lambda: agreed_leader(members), timeout_s=ELECTION_TIMEOUT_S, what="a leader")
        print(f"\n[raft] election after a simultaneous start: {time.monotonic() - ready_at:.2f} s")
        register(members, leader)
        yield members
    finally:
        for member in members:
            member.stop()


def test_proposals_from_any_node_commit_and_every_node_converges(cluster: list[Member]) -> None:
    leader = wait_for(lambda: agreed_leader(cluster), timeout_s=ELECTION_TIMEOUT_S, what="a leader")
    assert leader.status()["leader_node_id"] == leader.node_id, "the state maps the leader's address to its id"
    version = 0
    for round_number in range(10):
        for member in cluster:
            version = accepted(member.propose(add_node(1_000 + 10 * round_number + member.node_id)))
    wait_for(lambda: converged(cluster, version=version), timeout_s=CATCH_UP_TIMEOUT_S, what="one state everywhere")

    # Bytes that are no command commit, and every node rejects them alike; nothing wedges.
    garbage = cluster[1].propose(b"\x01\xc1 not msgpack")
    assert garbage["code"] == "invalid", garbage
    assert garbage["version"] == version
    version = accepted(cluster[2].propose(add_node(2_000, request_id="retried")))
    retried = cluster[0].propose(add_node(2_000, request_id="retried"))
    assert retried["code"] == "ok" and retried["version"] == version, "a retried request id gets its first result"
    wait_for(lambda: converged(cluster, version=version), timeout_s=CATCH_UP_TIMEOUT_S, what="convergence")

    latencies = [leader.propose(add_node(3_000 + index))["latency_ms"] for index in range(100)]
    follower = next(member for member in cluster if member is not leader)
    forwarded = [follower.propose(add_node(4_000 + index))["latency_ms"] for index in range(50)]
    print(
        f"\n[raft] commit latency on the leader: p50 {statistics.median(latencies):.2f} ms, "
        f"max {max(latencies):.2f} ms; from a follower: p50 {statistics.median(forwarded):.2f} ms, "
        f"max {max(forwarded):.2f} ms"
    )


@pytest.mark.parametrize("order", [(3, 1, 2), (2, 3, 1)], ids=["3-1-2", "2-3-1"])
def test_a_leader_is_elected_whatever_the_start_order(
    tmp_path: Path, cleanup: list[Member], order: tuple[int, int, int]
) -> None:
    members = make_members(tmp_path, 3)
    cleanup.extend(members)
    by_id = {member.node_id: member for member in members}
    first, second, third = (by_id[node_id] for node_id in order)
    first.start()
    time.sleep(1.0)  # alone: no quorum, no leader
    assert first.status()["leader_address"] is None
    majority_at = second.start()
    leader = wait_for(lambda: agreed_leader([first, second]), timeout_s=ELECTION_TIMEOUT_S, what="a leader of two")
    print(f"\n[raft] election once a majority is up (order {order}): {time.monotonic() - majority_at:.2f} s")
    version = accepted(leader.propose(add_node(1)))
    time.sleep(0.5)
    third.start()
    # Not necessarily the same leader: pysyncobj has no pre-vote, so a late
    # node that times out before it hears the leader bumps the term.
    wait_for(lambda: agreed_leader(members), timeout_s=ELECTION_TIMEOUT_S, what="all three agree on a leader")
    wait_for(lambda: converged(members, version=version), timeout_s=CATCH_UP_TIMEOUT_S, what="the late node catches up")
    accepted(third.propose(add_node(2)))


def test_a_leader_cut_off_from_its_quorum_proposes_nothing_as_leader(tmp_path: Path, cleanup: list[Member]) -> None:
    """The leader-only loops (liveness, the controller) propose through
    ``propose_as_leader``. A follower, and a leader whose followers stopped
    answering (both SIGSTOPped), get NotLeader at once and nothing is queued:
    once the followers resume, the refused commands are applied nowhere,
    where a plain proposal would wait in pysyncobj's queue for the next
    leader and commit a decision taken on a stale view."""
    members = make_members(tmp_path, 3)
    cleanup.extend(members)
    start_together(members)
    leader = wait_for(lambda: agreed_leader(members), timeout_s=ELECTION_TIMEOUT_S, what="a leader")
    register(members, leader)
    followers = [member for member in members if member is not leader]

    def as_leader(member: Member, node_id: int) -> dict[str, Any]:
        return member.request("propose_as_leader", wait_s=PROPOSAL_TIMEOUT_S + 5, data_hex=add_node(node_id).hex(),
                              timeout_s=PROPOSAL_TIMEOUT_S)

    wait_for(lambda: leader.status()["leads_quorum"], timeout_s=ELECTION_TIMEOUT_S, what="the leader leads a quorum")
    accepted(as_leader(leader, 100))
    refused = as_leader(followers[0], 101)
    assert refused.get("error") == "NotLeader", refused
    for follower in followers:
        assert follower.process is not None
        os.kill(follower.process.pid, signal.SIGSTOP)
    try:
        wait_for(lambda: not leader.status()["leads_quorum"], timeout_s=FAILOVER_TIMEOUT_S * 2,
                 what="the leader sees that no quorum answers it")
        refused = as_leader(leader, 102)
        assert refused.get("error") == "NotLeader", refused
    finally:
        for follower in followers:
            assert follower.process is not None
            os.kill(follower.process.pid, signal.SIGCONT)
    now_leader = wait_for(lambda: agreed_leader(members), timeout_s=ELECTION_TIMEOUT_S * 2, what="a leader again")
    version = accepted(now_leader.propose(add_node(103)))
    wait_for(lambda: converged(members, version=version), timeout_s=CATCH_UP_TIMEOUT_S, what="one state everywhere")
    node_ids = set(members[0].status()["node_ids"])
    assert {100, 103} <= node_ids and not {101, 102} & node_ids, node_ids


def test_failover_restart_and_recovery_from_journal_and_dump(tmp_path: Path, cleanup: list[Member]) -> None:
    members = make_members(tmp_path, 3)
    cleanup.extend(members)
    start_together(members)
    leader = wait_for(lambda: agreed_leader(members), timeout_s=ELECTION_TIMEOUT_S, what="a leader")
    register(members, leader)
    for index in range(30):
        accepted(members[index % 3].propose(add_node(100 + index)))

    # kill -9 the leader: a survivor commits within a few seconds (retrying the same request id).
    leader.kill()
    killed_at = time.monotonic()
    survivors = [member for member in members if member is not leader]
    command = add_node(500, request_id="after-failover")
    reply = wait_for(
        lambda: (r := survivors[0].propose(command, timeout_s=1.0)).get("code") == "ok" and r,
        timeout_s=FAILOVER_TIMEOUT_S, what="a commit after the leader died", interval_s=0.01,
    )
    failover_s = time.monotonic() - killed_at
    print(f"\n[raft] kill -9 of the leader -> a survivor's proposal committed after {failover_s:.2f} s")
    new_leader = wait_for(lambda: agreed_leader(survivors), timeout_s=ELECTION_TIMEOUT_S, what="a new leader")
    assert new_leader is not leader
    # The new leader counts the dead leader's silence from when it last heard
    # it (at least the shortest election timeout before its own election),
    # not from its election, so liveness marks a dead leader dead as soon as
    # any other member.
    silent_s = new_leader.status()["silent_s"][leader.address]
    assert silent_s >= ELECTION_TIMEOUT_MIN_S, silent_s

    # More commands than the compaction threshold: the survivors compact past
    # what the dead node has, so it must catch up from a snapshot (our dump).
    for index in range(3 * COMPACTION_ENTRIES):
        version = accepted(survivors[index % 2].propose(add_node(600 + index)))
    assert version > reply["version"]
    assert max(member.status()["log_length"] for member in survivors) < 3 * COMPACTION_ENTRIES, "compacted"
    leader.start()
    wait_for(lambda: converged(members, version=version), timeout_s=CATCH_UP_TIMEOUT_S, what="the restarted catches up")
    restored = restored_versions(leader)
    assert any(restored_version > reply["version"] for restored_version in restored), (
        f"the restarted node installed the leader's snapshot (restored versions {restored})"
    )

    # Compact everywhere, let the commit index reach the journal meta (saved
    # every second), kill -9 all: one node restarted alone (no quorum, nobody
    # to learn from) recovers the whole state from its dump and journal.
    for member in members:
        member.request("compact")
    digest = members[0].status()["digest"]
    time.sleep(1.5)
    for member in members:
        member.kill()
    lonely = members[1]
    lonely.start()
    wait_for(lambda: lonely.status()["state_version"] == version, timeout_s=CATCH_UP_TIMEOUT_S, what="local recovery")
    status = lonely.status()
    assert status["digest"] == digest
    assert status["log_length"] < COMPACTION_ENTRIES, "the state came from the full dump, not a full journal"
    assert status["leader_address"] is None
    assert (lonely.directory / "data" / "raft" / "cluster.dump").read_bytes().startswith(b"QCRAFTD")
    assert restored_versions(lonely) == [version], "its own dump, restored once"

    start_together([members[0], members[2]])
    leader = wait_for(lambda: agreed_leader(members), timeout_s=ELECTION_TIMEOUT_S, what="a leader after restart")
    version = accepted(leader.propose(add_node(900)))
    wait_for(lambda: converged(members, version=version), timeout_s=CATCH_UP_TIMEOUT_S, what="convergence at last")


def test_a_member_is_added_and_removed_one_at_a_time(
    tmp_path: Path, cluster: list[Member], cleanup: list[Member]
) -> None:
    newcomer = Member(node_id=4, address=f"127.0.0.1:{free_port()}", directory=tmp_path / "node4")
    newcomer.directory.mkdir()
    newcomer.peers = [member.address for member in cluster]
    cleanup.append(newcomer)
    newcomer.start()
    follower = next(member for member in cluster if not member.status()["is_leader"])
    added = follower.request("add_member", address=newcomer.address, timeout_s=PROPOSAL_TIMEOUT_S)
    assert "error" not in added, added
    version = accepted(newcomer.propose(add_node(5_000, address=newcomer.address, request_id="join-4")))
    everyone = [*cluster, newcomer]
    wait_for(lambda: converged(everyone, version=version), timeout_s=CATCH_UP_TIMEOUT_S, what="newcomer in sync")
    assert newcomer.address in cluster[0].status()["member_addresses"]

    removed = cluster[0].request("remove_member", address=newcomer.address, timeout_s=PROPOSAL_TIMEOUT_S)
    assert "error" not in removed, removed
    newcomer.stop()
    assert wait_for(
        lambda: all(newcomer.address not in member.status()["member_addresses"] for member in cluster),
        timeout_s=CATCH_UP_TIMEOUT_S, what="the member is gone everywhere",
    )
    accepted(cluster[2].propose(add_node(5_001)))


class _Canary:
    """Unpickling this creates a file: proof that a node ran a stranger's bytes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def _frame(message: object) -> bytes:
    """A message as pysyncobj frames it without a password: length, zlib(pickle)."""
    data = zlib.compress(pickle.dumps(message, protocol=2))
    return struct.pack("i", len(data)) + data


def _send_raw(address: str, payload: bytes) -> None:
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=2.0) as connection:
        connection.sendall(payload)
        connection.settimeout(0.5)
        try:
            connection.recv(1024)  # the node answers nothing, or closes
        except OSError:
            pass


def test_an_unauthenticated_peer_changes_nothing(tmp_path: Path, cluster: list[Member]) -> None:
    target = cluster[0]
    before = [member.status() for member in cluster]
    canary = tmp_path / "canary"
    payloads = [
        _frame(_Canary(canary)),  # code execution at unpickling
        _frame(["add", "127.0.0.1:1"]),  # pysyncobj's membership utility command
        _frame(["remove", cluster[1].address]),
        _frame(cluster[1].address) + _frame({"type": "apply_command", "command": b"\x00" + add_node(7_777)}),
        os.urandom(4096),
    ]
    for payload in payloads:
        _send_raw(target.address, payload)
    time.sleep(0.5)
    assert not canary.exists(), "the node unpickled unauthenticated bytes"
    after = [member.status() for member in cluster]
    for old, new in zip(before, after, strict=True):
        assert new["member_addresses"] == old["member_addresses"]
        assert new["state_version"] == old["state_version"]
        assert new["digest"] == old["digest"]
    assert 7_777 not in after[0]["node_ids"]
    assert all(member.is_running for member in cluster)
    accepted(target.propose(add_node(7_778)))


def test_the_canary_does_fire_without_a_password(tmp_path: Path) -> None:
    """The control for the test above: the same bytes run code in a pysyncobj
    node without a password, so their absence of effect above is the password's."""
    from pysyncobj import SyncObj, SyncObjConf  # the test may; qcluster code outside consensus/ may not

    address = f"127.0.0.1:{free_port()}"
    node = SyncObj(address, [], conf=SyncObjConf(bindAddress=address, autoTick=True))
    try:
        node.waitBinded()
        canary = tmp_path / "canary"
        _send_raw(address, _frame(_Canary(canary)))
        wait_for(canary.exists, timeout_s=3.0, what="the canary file")
    finally:
        node.destroy()
        wait_for(lambda: not node.tick_thread_alive(), timeout_s=3.0, what="the SyncObj stops")

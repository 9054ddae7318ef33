"""Joining through pysyncobj's utility protocol (``consensus/join.py``), in one
process on loopback: a member reports the members and its leader; a second
RaftNode started with them as peers is added and replicates; asking again
finds it a member; a wrong secret and a closed port fail within the bound with
a message that says which. (The ``--join`` flag end to end:
``tests/e2e/test_cluster_formation.py``.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from qcluster.cluster.commands import AddNode
from qcluster.config import ConfigError
from qcluster.consensus import (
    ClusterMembers,
    JoinSettings,
    RaftNode,
    RaftSettings,
    discover_members,
    request_membership,
)
from qcluster.errors import Unavailable
from tests.e2e.conftest import free_port

SECRET = "join-test-secret"
ELECTION_WAIT_S = 5.0
CLOSE_S = 3.0


def address() -> str:
    return f"127.0.0.1:{free_port()}"


def raft_node(directory: Path, node_id: int, own: str, peers: tuple[str, ...] = ()) -> RaftNode:
    return RaftNode(RaftSettings(node_id=node_id, p2p_address=own, peer_addresses=peers, cluster_secret=SECRET,
                                 data_dir=directory))


def join_settings(own: str, *contacts: str, secret: str = SECRET, attempts_max: int = 3) -> JoinSettings:
    return JoinSettings(self_address=own, contact_addresses=contacts, cluster_secret=secret, call_timeout_s=2.0,
                        attempts_max=attempts_max, retry_s=0.2)


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(test(), timeout=40))


async def wait_leader(raft: RaftNode) -> None:
    async with asyncio.timeout(ELECTION_WAIT_S):
        while raft.leader() is None:
            await asyncio.sleep(0.02)


def test_a_node_discovers_the_members_and_is_added(tmp_path: Path) -> None:
    async def scenario() -> None:
        first_address, second_address = address(), address()
        first = raft_node(tmp_path / "first", 1, first_address)
        await first.start()
        second: RaftNode | None = None
        try:
            await wait_leader(first)
            members = await discover_members(join_settings(second_address, first_address))
            assert members == ClusterMembers(contact_address=first_address, member_addresses=(first_address,),
                                             leader_address=first_address)
            second = raft_node(tmp_path / "second", 2, second_address, members.peers_of(second_address))
            await second.start()
            started = time.monotonic()
            joined = await request_membership(join_settings(second_address, first_address), members)
            assert joined.member_addresses == tuple(sorted((first_address, second_address)))
            print(f"added in {time.monotonic() - started:.2f} s")
            assert first.status().member_addresses == joined.member_addresses
            # The newcomer replicates: a command proposed on it commits on both.
            result = await second.propose(AddNode(request_id="join-2", node_id=2, p2p_address=second_address,
                                                  http_address="h:1", grpc_address="g:1", at_ms=0), timeout_s=5.0)
            assert result.is_accepted, result
            await first.wait_for_version(result.version, timeout_s=5.0)
            # Asked again (a restart): already a member, nothing to add.
            again = await discover_members(join_settings(second_address, first_address))
            assert again.includes(second_address)
        finally:
            if second is not None:
                await second.close(timeout_s=CLOSE_S)
            await first.close(timeout_s=CLOSE_S)

    run(scenario)


def test_a_wrong_secret_or_a_closed_port_fails_within_the_bound(tmp_path: Path) -> None:
    async def scenario() -> None:
        member_address = address()
        member = raft_node(tmp_path, 1, member_address)
        await member.start()
        try:
            await wait_leader(member)
            started = time.monotonic()
            with pytest.raises(Unavailable, match="cluster-secret") as wrong:
                await discover_members(join_settings(address(), member_address, secret="not-the-secret"))
            assert time.monotonic() - started < 5.0
            assert "after 3 attempts" in wrong.value.message
            with pytest.raises(Unavailable, match="cannot connect"):
                await discover_members(join_settings(address(), f"127.0.0.1:{free_port()}"))
            # A contact that does not answer is skipped for the next one.
            found = await discover_members(join_settings(address(), f"127.0.0.1:{free_port()}", member_address))
            assert found.contact_address == member_address
            assert member.status().member_addresses == (member_address,), "nothing changed"
        finally:
            await member.close(timeout_s=CLOSE_S)

    run(scenario)


@pytest.mark.parametrize(("changes", "message"), [
    ({"contact_addresses": ()}, "no member address"),
    ({"contact_addresses": ("127.0.0.1:7001",)}, "own address"),
    ({"contact_addresses": ("nohost",)}, "host:port"),
    ({"cluster_secret": ""}, "secret"),
    ({"attempts_max": 0}, "attempts_max"),
    ({"call_timeout_s": 0.0}, "call_timeout_s"),
])
def test_join_settings_are_checked(changes: dict[str, object], message: str) -> None:
    arguments: dict[str, object] = {"self_address": "127.0.0.1:7001", "contact_addresses": ("127.0.0.1:7002",),
                                    "cluster_secret": SECRET, **changes}
    with pytest.raises(ConfigError, match=message):
        JoinSettings(**arguments)  # type: ignore[arg-type]

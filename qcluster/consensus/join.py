"""Joining a running cluster: ``qcluster serve --join HOST:P2P``.

pysyncobj knows members by p2p address and changes membership one at a time
(``addNodeToCluster``, which needs ``dynamicMembershipChange=True``). A node
that was not in the initial peer list joins in three steps; the first and the
last go through pysyncobj's *utility protocol* on a member's Raft port — the
same port and the same password (the cluster secret) as Raft itself:

1. ``discover_members``: ask a member for ``status`` (its ``getStatus()``).
   ``self`` and every ``partner_node_status_server_<address>`` key are the
   members as that member knows them; ``leader`` is the leader it follows.
2. The caller starts its ``RaftNode`` with those members as peers, so that it
   already listens, and knows them, when the leader appends the change and
   starts sending it the log.
3. ``request_membership``: ask the member to ``add`` this node's p2p address.
   It calls ``addNodeToCluster``, which pysyncobj forwards to the leader, and
   answers ``SUCCESS ADD <address>`` once it has applied the change, or
   ``FAIL ADD <address>`` (no leader, another change not yet committed, ...).

Step 3 is skipped when this node's address is already a member: a restart of
a node that joined earlier (it keeps its id, address and data dir).

Bounds. One call waits at most ``call_timeout_s`` (plus pysyncobj's 0.5 s poll)
and runs in a worker thread: ``TcpUtility`` blocks, with its own poller. The
contacts (the join address, then ``--peers``) are asked in turn, for at most
``attempts_max`` rounds ``retry_s`` apart: while none answers, while the
cluster has no leader, or while the change is refused. Then ``Unavailable``
says why, and the node stops. A call that timed out may still take effect
(the change is queued until a leader commits it), so every round asks for
the members again before it asks to be added.

Security: a wrong secret looks like a closed connection (the member drops a
connection whose first message does not decrypt); ``_diagnose`` tells that
apart from a port where nothing listens. Answers are decrypted and
authenticated before pysyncobj unpickles them.

Limit: pysyncobj has no pre-vote. A joining node whose election timer ran out
before the leader reached it has a higher term, and the leader steps down
when it hears it: a join may cost one election.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, final

from pysyncobj.utility import TcpUtility, UtilityException

from qcluster.config import ConfigError
from qcluster.consensus.settings import parse_address
from qcluster.errors import Unavailable

__all__ = ["ClusterMembers", "JoinSettings", "discover_members", "request_membership"]

_STATUS_PARTNER_PREFIX: Final = "partner_node_status_server_"
_ADD_SUCCESS: Final = "SUCCESS ADD "
# pysyncobj's TcpUtility polls every 0.5 s and checks its deadline in between.
_UTILITY_POLL_S: Final = 0.5
# The worker thread is abandoned (it ends at its own deadline) this long after that.
_CALL_MARGIN_S: Final = 1.0
# Probe used to explain a dropped connection.
_PROBE_TIMEOUT_S: Final = 1.0
_ATTEMPTS_MAX_LIMIT: Final = 1_000


@dataclass(frozen=True, slots=True, kw_only=True)
class JoinSettings:
    """How this node joins: whom it asks, with which secret, how long."""

    # This node's p2p address: what the members will know it by.
    self_address: str
    # Members to ask, in this order: the join address first, then --peers.
    contact_addresses: tuple[str, ...]
    cluster_secret: str
    # One utility call (connect, authenticate, answer) waits at most this long.
    call_timeout_s: float = 3.0
    # Rounds over the contacts, this far apart, before giving up.
    attempts_max: int = 20
    retry_s: float = 0.5

    def __post_init__(self) -> None:
        if not self.cluster_secret:
            raise ConfigError("join: a cluster secret is required")
        parse_address(self.self_address)
        if not self.contact_addresses:
            raise ConfigError("join: no member address to join through")
        for address in self.contact_addresses:
            parse_address(address)
        if self.self_address in self.contact_addresses:
            raise ConfigError(f"join: {self.self_address} is this node's own address, not a member to ask")
        if not 0 < self.call_timeout_s <= 60 or not 0 < self.retry_s <= 60:
            raise ConfigError("join: call_timeout_s and retry_s must be in (0, 60]")
        if not 1 <= self.attempts_max <= _ATTEMPTS_MAX_LIMIT:
            raise ConfigError(f"join: attempts_max must be between 1 and {_ATTEMPTS_MAX_LIMIT}")


@final
@dataclass(frozen=True, slots=True)
class ClusterMembers:
    """The Raft members as one member (``contact_address``) reported them."""

    contact_address: str
    member_addresses: tuple[str, ...]  # sorted; the contact itself included
    leader_address: str | None  # the leader the contact follows, if any

    def __post_init__(self) -> None:
        assert self.member_addresses == tuple(sorted(set(self.member_addresses))), self.member_addresses
        assert self.member_addresses, "a member always reports itself"

    def includes(self, address: str) -> bool:
        return address in self.member_addresses

    def peers_of(self, address: str) -> tuple[str, ...]:
        """The members other than ``address``: a RaftNode's peer addresses."""
        return tuple(member for member in self.member_addresses if member != address)


class _CallFailed(Exception):
    """One utility call got no usable answer; the message says why."""


async def discover_members(settings: JoinSettings) -> ClusterMembers:
    """The current members, from the first contact that answers.

    Retries up to ``attempts_max`` rounds while no contact answers, then raises
    ``Unavailable`` naming each contact's last failure. Needs no leader: the
    members' configuration is known without one (and a restarting member is
    found among them without one).

    Cancel safety: nothing changes anywhere; a call in flight finishes in its
    worker thread within its own timeout.
    """
    failures: dict[str, str] = {}
    for attempt in range(settings.attempts_max):
        if attempt > 0:
            await asyncio.sleep(settings.retry_s)
        members = await _ask_members(settings, failures)
        if members is not None:
            return members
    raise Unavailable(f"cannot join the cluster: no member answered after {settings.attempts_max} attempts "
                      f"({_describe(failures)})")


async def request_membership(settings: JoinSettings, members: ClusterMembers) -> ClusterMembers:
    """Have this node added to the Raft members; returns the members once it is one.

    Call it after this node's RaftNode listens. Each round: if the latest view
    of the members includes this node, done; if the contact knows no leader,
    wait; otherwise ask the contact to add this node. Bounded by
    ``attempts_max`` rounds, then ``Unavailable``.

    Cancel safety: a change already asked for may still be committed (the
    member queues it until a leader takes it); a later call finds this node
    among the members and does not ask again.
    """
    assert not members.includes(settings.self_address), "already a member: nothing to request"
    failures: dict[str, str] = {}
    current: ClusterMembers | None = members
    for _ in range(settings.attempts_max):
        if current is not None:
            if current.includes(settings.self_address):
                return current
            if not await _ask_to_be_added(settings, current, failures):
                await asyncio.sleep(settings.retry_s)
        else:
            await asyncio.sleep(settings.retry_s)
        current = await _ask_members(settings, failures)
    if current is not None and current.includes(settings.self_address):
        return current
    raise Unavailable(f"cannot join the cluster: {settings.self_address} was not added within "
                      f"{settings.attempts_max} attempts ({_describe(failures)})")


async def _ask_to_be_added(settings: JoinSettings, members: ClusterMembers, failures: dict[str, str]) -> bool:
    """Ask the member that reported ``members`` to add this node; True when it says it did."""
    contact = members.contact_address
    if members.leader_address is None:
        failures[contact] = "the cluster has no leader"
        return False
    try:
        answer = await _call(contact, ["add", settings.self_address], settings=settings)
    except _CallFailed as failure:
        failures[contact] = f"asked to add {settings.self_address}: {failure}"
        return False
    if answer != _ADD_SUCCESS + settings.self_address:
        # FAIL: no leader after all, or another membership change is not committed yet.
        failures[contact] = f"asked to add {settings.self_address}, answered {answer!r}"
        return False
    return True


async def _ask_members(settings: JoinSettings, failures: dict[str, str]) -> ClusterMembers | None:
    """One round over the contacts; the first answer, or None (``failures`` updated)."""
    for contact in settings.contact_addresses:
        try:
            answer = await _call(contact, ["status"], settings=settings)
            return _members_from_status(contact, answer)
        except _CallFailed as failure:
            failures[contact] = str(failure)
    return None


def _members_from_status(contact: str, status: object) -> ClusterMembers:
    """pysyncobj's ``getStatus()`` dict -> ClusterMembers (``_CallFailed`` if it is not one)."""
    if not isinstance(status, dict) or status.get("self") is None:
        raise _CallFailed(f"answered {str(status)[:200]!r}, not a pysyncobj status")
    own = str(status["self"])  # a TCPNode; str() is its address
    partners = [str(key).removeprefix(_STATUS_PARTNER_PREFIX) for key in status
                if str(key).startswith(_STATUS_PARTNER_PREFIX)]
    addresses = tuple(sorted({own, *partners}))
    for address in addresses:
        try:
            parse_address(address)
        except ConfigError as exc:
            raise _CallFailed(f"reported a member {address!r} that is not host:port") from exc
    leader = status.get("leader")
    return ClusterMembers(contact_address=contact, member_addresses=addresses,
                          leader_address=None if leader is None else str(leader))


async def _call(address: str, command: Sequence[str], *, settings: JoinSettings) -> object:
    """One utility command in a worker thread, bounded; the decoded answer."""
    wait_s = settings.call_timeout_s + _UTILITY_POLL_S + _CALL_MARGIN_S
    try:
        async with asyncio.timeout(wait_s):
            return await asyncio.to_thread(_call_blocking, address, list(command),
                                           secret=settings.cluster_secret, timeout_s=settings.call_timeout_s)
    except TimeoutError as exc:
        raise _CallFailed(f"no answer within {wait_s:.3g} s") from exc


def _call_blocking(address: str, command: list[str], *, secret: str, timeout_s: float) -> object:
    """On a worker thread: a fresh TcpUtility (its own poller and socket) per call."""
    assert command, "a utility command has a name"
    started = time.monotonic()
    utility = TcpUtility(password=secret, timeout=timeout_s)
    try:
        answer = utility.executeCommand(address, command)
    except UtilityException as exc:
        raise _CallFailed(_diagnose(address, elapsed_s=time.monotonic() - started, timeout_s=timeout_s)) from exc
    if answer is None:  # pysyncobj returns None when it cannot even start connecting
        raise _CallFailed("cannot connect (bad address?)")
    return answer


def _diagnose(address: str, *, elapsed_s: float, timeout_s: float) -> str:
    """Why a call ended without an answer: pysyncobj reports every case as 'connection lost'."""
    if elapsed_s >= timeout_s:
        return f"no answer within {timeout_s:.3g} s"
    host, port = parse_address(address)
    try:
        with socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S):
            pass
    except OSError as exc:
        return f"cannot connect ({exc.strerror or exc})"
    return ("the member closed the connection without answering: is --cluster-secret the cluster's secret, "
            "and is this its p2p (Raft) port?")


def _describe(failures: dict[str, str]) -> str:
    return "; ".join(f"{address}: {reason}" for address, reason in failures.items()) or "no answer"

"""RaftNode: the cluster metadata replicated with pysyncobj, bridged to asyncio.

This package is the only importer of pysyncobj (tests/unit/test_layers.py).
What pysyncobj does, and how we hold it (design.md §7 has the measurements):

- **One replicated method.** pysyncobj numbers ``@replicated`` methods by
  their sorted names, so adding one renumbers the others and breaks the
  replay of an existing journal. ``_ClusterSyncObj.apply(bytes)`` is the only
  one; the bytes are a versioned, explicitly encoded command
  (``cluster/commands.py``), applied by ``transitions.apply_encoded``.
- **apply never raises.** pysyncobj retries a raising entry on every tick and
  the cluster wedges; ``ReplicatedStateMachine.apply`` turns anything into a
  rejected ``Result``.
- **Nothing of ours is pickled.** pysyncobj's log compaction would pickle the
  SyncObj's attributes; our serializer hooks write the full dump as msgpack
  (``_full_dump.py``, ``state_codec.py``). With a serializer set pysyncobj
  never forks (``useFork=False`` is set too) and pickles no attribute.
- **Journal and full dump, both.** A journal alone leaves a node restarted
  after a compaction empty forever while it still votes. Neither is fsynced
  by pysyncobj (our dump is): they survive kill -9, not a power loss.
- **The secret is required.** pysyncobj unpickles what reaches its port
  before authenticating it unless ``password`` is set; with it, every message
  is encrypted and authenticated (Fernet), and the port binds to the
  configured p2p address only.
- **Never block the loop.** A ``sync=True`` call blocks the event loop for a
  whole commit, and deadlocks on pysyncobj's tick thread. ``propose`` passes a
  callback, which pysyncobj calls on its tick thread; the callback hands the
  outcome to the loop with ``call_soon_threadsafe``, resolving a future.
- **Leadership is a hint, not a lease.** For up to
  ``leader_fallback_timeout_s`` an isolated leader still believes it leads;
  only a committed command proves anything. A proposal that timed out may
  still commit later: it is reported as "outcome unknown" and is retried
  with the same request id, which the state machine deduplicates.

Node identity is the node id (``RaftSettings.node_id``, Qdrant's peer id).
pysyncobj identifies members by p2p address, so the ClusterState maps ids to
addresses (``AddNode``), and a node keeps its address across restarts.

Threading: pysyncobj runs one tick thread per node. It applies committed
entries, writes and restores the full dump, and calls proposal callbacks.
Every public method of ``RaftNode`` runs on the event loop thread it was
started on; the loop reads pysyncobj's scalars (leader, term, indexes) and the
immutable ClusterState reference, each of which is one atomic read.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, final

from pysyncobj import FAIL_REASON, SyncObj, SyncObjConf, SyncObjException, replicated
from pysyncobj.node import TCPNode

from qcluster.cluster.commands import Command, encode
from qcluster.cluster.state import ClusterState, NodeId, Result
from qcluster.consensus._full_dump import RaftEntry, read_dump
from qcluster.consensus._state_machine import ReplicatedStateMachine
from qcluster.consensus.settings import RaftSettings
from qcluster.consensus.state_codec import decode_state
from qcluster.errors import (
    DeadlineExceeded,
    NoQuorum,
    NotLeader,
    Overloaded,
    PreconditionFailed,
    QclusterError,
    Unavailable,
)

__all__ = [
    "PROPOSALS_IN_FLIGHT_MAX",
    "RAFT_DIRECTORY",
    "VERSION_WAITERS_MAX",
    "RaftNode",
    "RaftStatus",
]

_logger = logging.getLogger(__name__)

RAFT_DIRECTORY: Final = "raft"  # under the node's data dir
_JOURNAL_FILE: Final = "journal"
_DUMP_FILE: Final = "cluster.dump"
# Proposals awaited at once by one node; one more is refused as Overloaded.
# pysyncobj's own queue of not-yet-appended commands has the same bound.
PROPOSALS_IN_FLIGHT_MAX: Final = 1_024
# Coroutines waiting in wait_for_version at once.
VERSION_WAITERS_MAX: Final = 1_024
# pysyncobj's poll timeout when idle; work (a proposal, a message) wakes it at once.
_TICK_PERIOD_S: Final = 0.05
# close() waits this long at most for the tick thread to stop.
_CLOSE_WAIT_S_MAX: Final = 5.0
_CLOSE_POLL_S: Final = 0.02
_OVERLOADED_RETRY_AFTER_S: Final = 0.1
_COPY_ATTEMPTS: Final = 5


@dataclass(frozen=True, slots=True)
class RaftStatus:
    """A snapshot of this node's view of Raft, for /cluster and for tests."""

    node_id: NodeId
    p2p_address: str
    leader_address: str | None
    is_leader: bool  # not a lease: see RaftNode.is_leader
    term: int
    commit_index: int
    last_applied: int
    log_length: int  # entries in the journal: small after a compaction
    member_addresses: tuple[str, ...]  # every member, this one included, sorted
    # Other members this node has a live connection to (its own view).
    connected_addresses: tuple[str, ...]
    has_quorum: bool  # this node is connected to a majority (its own view)
    state_version: int
    # On the leader: seconds since each other member last answered its
    # append-entries (heartbeats every heartbeat_period_s), counted from when
    # this node became leader at most. Empty on a follower. Unlike the
    # connection, this sees a member that is stalled (SIGSTOP, a VM pause) or
    # cut off without its TCP connection closing.
    silent_s: dict[str, float] = field(default_factory=dict)


class _ClusterSyncObj(SyncObj):  # type: ignore[misc]  # pysyncobj is untyped
    """The SyncObj subclass: exactly one replicated method, and attributes of
    ours (the state machine, the leader-contact clock) set before pysyncobj's
    constructor so that pysyncobj counts them among its own attributes and
    would never dump them.

    Leader stickiness (Raft thesis §4.2.3): a follower that heard from its
    leader within the shortest election timeout ignores a vote request. So a
    node that cannot hear the leader while the others can (a bridge
    partition, a node back from a pause) cannot depose it through them —
    without this, leadership flipped between the two sides of a bridge for
    as long as it lasted. pysyncobj has no such rule; its message handler is
    wrapped (its version is pinned).
    """

    def __init__(self, *, self_address: str, peer_addresses: tuple[str, ...], conf: SyncObjConf,
                 machine: ReplicatedStateMachine) -> None:
        self._machine = machine
        self._leader_heard_at = -math.inf  # monotonic time of the last append_entries of a current leader
        self._leader_heard_from: Any = None  # the node that sent it
        # Set when this node becomes leader: when, and (node, last heard) of the leader before it.
        self._became_leader_at = -math.inf
        self._predecessor: tuple[Any, float] | None = None
        self._sticky_s = conf.raftMinTimeout
        super().__init__(self_address, list(peer_addresses), conf=conf)

    def _SyncObj__onMessageReceived(self, node: Any, message: Any) -> None:  # noqa: N802 - overrides pysyncobj's
        kind = message.get("type") if isinstance(message, dict) else None
        if kind == "append_entries" and message.get("term", -1) >= self.raftCurrentTerm:
            self._leader_heard_at = time.monotonic()
            self._leader_heard_from = node
            self._report_applied_conflicts(message)
        elif kind == "request_vote" and not self._isLeader() and self._getLeader() is not None \
                and time.monotonic() - self._leader_heard_at < self._sticky_s:
            return
        SyncObj._SyncObj__onMessageReceived(self, node, message)

    def _SyncObj__onBecomeLeader(self) -> None:  # noqa: N802 - overrides pysyncobj's
        """pysyncobj counts every member's silence from now on (it resets
        ``__lastResponseTime``); remember the leader before this one and when
        this node last heard it, so that a dead leader's silence is counted
        from then (``RaftNode._silent_s``)."""
        self._predecessor = None if self._leader_heard_from is None else (self._leader_heard_from,
                                                                           self._leader_heard_at)
        SyncObj._SyncObj__onBecomeLeader(self)
        self._became_leader_at = time.monotonic()

    def _report_applied_conflicts(self, message: dict[str, Any]) -> None:
        """Log an ERROR when a leader's entries would replace an entry this
        node already applied with one of another term: a real divergence of
        the cluster state. pysyncobj also logs CRITICAL "truncating
        already-applied log entries" when it re-writes applied entries that
        are identical (same index and term: a leader re-sending what this node
        has); that case is harmless, and only this one is not."""
        applied = self.raftLastApplied
        for entry in message.get("entries") or ():
            _command, index, term = entry
            if index > applied:
                return
            local = self._SyncObj__getEntries(index, 1)
            if local and local[0][2] != term:
                _logger.error("raft log conflict at applied index %d: this node applied an entry of term %d, the "
                              "leader sends one of term %d; the cluster state may have diverged", index,
                              local[0][2], term)
                return

    @replicated  # type: ignore[misc]
    def apply(self, command: bytes) -> Result:
        """The replicated method. Runs on the tick thread of every node, in log
        order, for every committed command; never raises. The returned Result
        goes to the proposer's callback on this node only (a forwarded
        proposal's callback runs when its node applies the entry itself), so
        it never crosses the network and is never pickled."""
        return self._machine.apply(command)


@final
class RaftNode:
    """One member of the Raft group holding the ClusterState.

    Life cycle: ``RaftNode(settings)`` -> ``await start()`` -> ... ->
    ``await close(...)``. Every method must be called on the event loop that
    ran ``start`` (asserted).
    """

    def __init__(self, settings: RaftSettings) -> None:
        self._settings = settings
        self._machine = ReplicatedStateMachine(on_change=self._on_change_tick_thread)
        self._syncobj: _ClusterSyncObj | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._is_closed = False
        self._subscribers: list[Callable[[ClusterState], None]] = []
        # Set by the tick thread when it schedules a delivery, cleared by the
        # delivery on the loop: at most one delivery is queued at a time.
        self._is_delivery_pending = False
        self._version_waiters: list[tuple[int, asyncio.Future[ClusterState]]] = []
        self._pending_proposals: set[asyncio.Future[tuple[object, int]]] = set()
        self._membership_lock = asyncio.Lock()

    # --- life cycle ---

    async def start(self) -> None:
        """Open the journal and dump, bind the Raft port, start the tick thread.

        Raises ``DataCorruption`` for a damaged dump and ``Unavailable`` when the
        port cannot be bound within ``bind_attempts_max`` tries. The SyncObj is
        built on the loop thread, which blocks it briefly (key derivation from
        the secret, reading the journal, bounded by log compaction): pysyncobj
        stops its tick thread when the thread that built it exits, so it must be
        the long-lived loop thread, not a worker thread.
        """
        assert self._syncobj is None, "started twice"
        assert not self._is_closed
        self._loop = asyncio.get_running_loop()
        raft_directory = self._settings.data_dir / RAFT_DIRECTORY
        raft_directory.mkdir(parents=True, exist_ok=True)
        dump_path = raft_directory / _DUMP_FILE
        if dump_path.exists():
            # Refuse a damaged dump now: pysyncobj would log the failure and
            # run on with an empty state while still voting.
            decode_state(read_dump(dump_path).state)
        syncobj = _ClusterSyncObj(
            self_address=self._settings.p2p_address,
            peer_addresses=self._settings.peer_addresses,
            conf=self._conf(raft_directory),
            machine=self._machine,
        )
        self._syncobj = syncobj
        try:
            # Bounded: pysyncobj gives up after bind_attempts_max tries.
            await asyncio.to_thread(syncobj.waitBinded)
        except SyncObjException as exc:
            await self.close(timeout_s=_CLOSE_WAIT_S_MAX)
            raise Unavailable(f"cannot bind the Raft port {self._settings.p2p_address}") from exc
        _logger.info("raft node %d listening on %s", self._settings.node_id, self._settings.p2p_address)

    def _conf(self, raft_directory: Path) -> SyncObjConf:
        settings = self._settings
        return SyncObjConf(
            password=settings.cluster_secret,
            bindAddress=settings.p2p_address,
            autoTick=True,
            autoTickPeriod=_TICK_PERIOD_S,
            # One append per proposal: ~0.4 ms commits instead of ~100 ms batches.
            appendEntriesUseBatch=False,
            appendEntriesPeriod=settings.heartbeat_period_s,
            raftMinTimeout=settings.election_timeout_min_s,
            raftMaxTimeout=settings.election_timeout_max_s,
            connectionTimeout=settings.connection_timeout_s,
            connectionRetryTime=settings.connection_retry_s,
            leaderFallbackTimeout=settings.leader_fallback_timeout_s,
            journalFile=str(raft_directory / _JOURNAL_FILE),
            fullDumpFile=str(raft_directory / _DUMP_FILE),
            serializer=self._machine.write_dump,
            deserializer=self._restore_dump_tick_thread,
            useFork=False,
            logCompactionMinEntries=settings.log_compaction_min_entries,
            logCompactionMinTime=settings.log_compaction_min_interval_s,
            logCompactionSplit=False,
            dynamicMembershipChange=True,
            # A proposal made during an election waits for the new leader
            # (bounded by the proposer's timeout) instead of failing at once.
            commandsWaitLeader=True,
            commandsQueueSize=PROPOSALS_IN_FLIGHT_MAX,
            bindRetryTime=settings.bind_retry_s,
            maxBindRetries=settings.bind_attempts_max,
        )

    async def close(self, *, timeout_s: float) -> None:
        """Stop the tick thread and close the port and files. Idempotent.

        Proposals still awaited fail with ``Unavailable`` (outcome unknown:
        they may have committed). Waits at most ``timeout_s`` for the thread.
        """
        assert timeout_s >= 0
        if self._is_closed:
            return
        self._is_closed = True
        syncobj = self._syncobj
        if syncobj is not None:
            syncobj.destroy()  # the tick thread closes everything at its next tick
            deadline = time.monotonic() + min(timeout_s, _CLOSE_WAIT_S_MAX)
            while syncobj.tick_thread_alive() and time.monotonic() < deadline:
                await asyncio.sleep(_CLOSE_POLL_S)
            if syncobj.tick_thread_alive():
                _logger.warning("the raft tick thread did not stop within %.1f s", timeout_s)
        for future in list(self._pending_proposals):
            if not future.done():
                future.set_exception(Unavailable("the raft node closed; the outcome of the proposal is unknown"))
        for _, waiter in self._version_waiters:
            if not waiter.done():
                waiter.set_exception(Unavailable("the raft node closed"))
        self._version_waiters.clear()

    # --- proposals ---

    async def propose(self, command: Command, *, timeout_s: float) -> Result:
        """Replicate one command and return its Result once this node applied it.

        Works on any node: a follower forwards to the leader. A rejected command
        (a failed compare-and-set, say) is a committed Result, not an exception:
        see ``Result.to_error``. Raises, all retryable:

        - ``DeadlineExceeded`` after ``timeout_s``: **outcome unknown**, the
          command may still commit. Retry with the same request id; the state
          machine answers a repeated request id with its first result.
        - ``Unavailable``: the leader changed or the entry was discarded;
          outcome unknown likewise.
        - ``NoQuorum`` / ``NotLeader``: not proposed; retrying is safe.
        - ``Overloaded``: too many proposals in flight; not proposed.

        Cancel safety: cancelling the await does not withdraw the command; it
        may commit, exactly as after a timeout.
        """
        return await self.propose_encoded(encode(command), timeout_s=timeout_s)

    async def propose_encoded(self, data: bytes, *, timeout_s: float) -> Result:
        """``propose`` for bytes already encoded (or, in tests, not a command at all:
        they commit and are rejected as INVALID by every node)."""
        assert timeout_s > 0
        syncobj = self._running()
        self._raise_if_stale()
        if len(self._pending_proposals) >= PROPOSALS_IN_FLIGHT_MAX:
            raise Overloaded(
                f"{PROPOSALS_IN_FLIGHT_MAX} raft proposals in flight", retry_after_s=_OVERLOADED_RETRY_AFTER_S
            )
        result, reason = await self._await_callback(
            lambda callback: syncobj.apply(data, callback=callback), timeout_s=timeout_s, what="the proposal"
        )
        if reason != FAIL_REASON.SUCCESS:
            raise _proposal_error(reason, leader_hint=self.leader())
        assert isinstance(result, Result), f"apply returns a Result, not {type(result).__name__}"
        return result

    async def _await_callback(
        self, submit: Callable[[Callable[[object, int], None]], None], *, timeout_s: float, what: str
    ) -> tuple[object, int]:
        """Submit a pysyncobj call with a callback, and await the callback on the loop.

        The callback runs on the tick thread (or synchronously inside ``submit``
        when pysyncobj refuses at once) and only schedules ``_settle`` on the loop.
        """
        loop = self._loop
        assert loop is not None
        future: asyncio.Future[tuple[object, int]] = loop.create_future()

        def on_done(result: object, reason: int) -> None:
            # Never raises into pysyncobj: an exception in a callback escapes
            # its apply loop and makes it apply the entry again.
            try:
                loop.call_soon_threadsafe(_settle, future, result, reason)
            except RuntimeError:
                pass  # the loop is closed: nobody awaits the outcome any more

        self._pending_proposals.add(future)
        try:
            submit(on_done)
            async with asyncio.timeout(timeout_s):
                return await future
        except TimeoutError as exc:
            raise DeadlineExceeded(
                f"{what} was not committed within {timeout_s:.3g} s; its outcome is unknown: "
                "retry with the same request id"
            ) from exc
        finally:
            self._pending_proposals.discard(future)

    # --- membership (pysyncobj's dynamic membership change) ---

    async def add_member(self, p2p_address: str, *, timeout_s: float) -> None:
        """Add a Raft member (a node started with the current members as peers).

        One change at a time: this node serializes its own, and the leader
        refuses a change while another is uncommitted (``PreconditionFailed``,
        also when the member exists). Raises like ``propose`` otherwise. Record
        the node id -> address mapping with an ``AddNode`` command as well.
        """
        await self._change_membership(p2p_address, is_adding=True, timeout_s=timeout_s)

    async def remove_member(self, p2p_address: str, *, timeout_s: float) -> None:
        """Remove a Raft member. A removed node that still runs keeps calling
        elections, which the members refuse: stop it."""
        await self._change_membership(p2p_address, is_adding=False, timeout_s=timeout_s)

    async def _change_membership(self, p2p_address: str, *, is_adding: bool, timeout_s: float) -> None:
        assert timeout_s > 0
        syncobj = self._running()
        node = TCPNode(p2p_address)
        submit = syncobj.addNodeToCluster if is_adding else syncobj.removeNodeFromCluster
        async with self._membership_lock:
            _, reason = await self._await_callback(
                lambda callback: submit(node, callback=callback), timeout_s=timeout_s, what="the membership change"
            )
        if reason != FAIL_REASON.SUCCESS:
            raise _proposal_error(reason, leader_hint=self.leader())

    # --- reads ---

    def state(self) -> ClusterState:
        """The ClusterState after the last command this node applied. It may lag
        the leader's; ``wait_for_version`` waits for a known version (read your
        own writes: wait for the version in your command's Result).

        Raises ``Unavailable`` once a full dump failed to restore (see
        ``_stale_state_error``): the state is then stale for good. Safe from
        any thread: a state is immutable and replaced atomically.
        """
        if self._syncobj is None or self._is_closed:
            raise Unavailable("the raft node is not running")
        self._raise_if_stale()
        return self._machine.state

    async def wait_for_version(self, version: int, *, timeout_s: float) -> ClusterState:
        """The state once its version is at least ``version``; ``DeadlineExceeded`` after ``timeout_s``."""
        assert timeout_s > 0
        self._running()
        state = self._machine.state
        if state.version >= version:
            return state
        if len(self._version_waiters) >= VERSION_WAITERS_MAX:
            raise Overloaded(f"{VERSION_WAITERS_MAX} waiters for a cluster state version", retry_after_s=timeout_s)
        loop = self._loop
        assert loop is not None
        waiter: asyncio.Future[ClusterState] = loop.create_future()
        entry = (version, waiter)
        self._version_waiters.append(entry)
        try:
            async with asyncio.timeout(timeout_s):
                return await waiter
        except TimeoutError as exc:
            reached = self._machine.state.version
            raise DeadlineExceeded(f"the cluster state is at version {reached}, not yet {version}") from exc
        finally:
            if entry in self._version_waiters:
                self._version_waiters.remove(entry)

    def subscribe(self, callback: Callable[[ClusterState], None]) -> Callable[[], None]:
        """Call ``callback(state)`` on the event loop after the state changes;
        returns the function that unsubscribes.

        Level-triggered: deliveries are coalesced, so a callback sees the latest
        state, not every intermediate version (a burst of commits is one call).
        It must not block; an exception from it is logged. Changes applied
        before it subscribed are not delivered: read ``state()`` after subscribing.
        """
        self._running()
        self._subscribers.append(callback)

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)

        return unsubscribe

    def leader(self) -> str | None:
        """The p2p address of the leader this node last heard of, or None.
        A hint for routing, possibly stale."""
        node = self._running()._getLeader()
        return None if node is None else str(node.id)

    def leader_node_id(self) -> NodeId | None:
        """The node id of ``leader()``, through the ClusterState's address map;
        None if there is no leader or it has no ``AddNode`` yet."""
        address = self.leader()
        for node in self._machine.state.nodes.values():
            if address is not None and node.p2p_address == address:
                return node.node_id
        return None

    def is_leader(self) -> bool:
        """Whether this node believes it leads. NOT a lease: an isolated leader
        believes it for up to ``leader_fallback_timeout_s`` while another is
        elected. Leader-only work asks ``leads_quorum`` instead."""
        return bool(self._running()._isLeader())

    def leads_quorum(self) -> bool:
        """Whether this node leads and a majority of the members (itself
        among them) answered it within ``election_timeout_max_s``, after which
        a follower that cannot hear it stands for election. The condition for
        the leader-only loops (liveness, the controller) to act, and for
        ``propose_as_leader``: an isolated leader still believes it leads for
        up to ``leader_fallback_timeout_s``, and what it proposed after it
        stepped down would wait in pysyncobj's queue (``commandsWaitLeader``)
        and reach the next leader after the heal: a decision taken on a stale
        view, such as marking the new leader itself dead."""
        syncobj = self._running()
        return bool(syncobj._isLeader()) and self._majority_answered(syncobj, self._settings.election_timeout_max_s)

    async def propose_as_leader(self, command: Command, *, timeout_s: float) -> Result:
        """``propose`` for the leader-only loops: raises ``NotLeader``
        (retryable, nothing proposed) unless ``leads_quorum``. Fence the
        command itself with compare-and-set as well: leadership can still
        change between this check and the commit."""
        if not self.leads_quorum():
            raise NotLeader("this node does not lead a quorum of the cluster", leader_hint=self.leader())
        return await self.propose(command, timeout_s=timeout_s)

    def is_current(self) -> bool:
        """Whether this node's applied ClusterState is known to be current
        enough for a read that promises not to go back in time (a read at
        ``primary`` / ``majority`` / ``all``): a node back from a pause or a
        partition still believes the view it had, and would read a replica it
        no longer leads.

        - A follower: it heard from a leader within its election timeout (it
          is not about to stand for election) and has applied everything that
          leader had committed when it last wrote.
        - The leader: a majority of the members answered it within the
          shortest election timeout, so none of them can yet have helped
          elect another leader that committed a change this node lacks.

        Read from pysyncobj's private fields (the version is pinned); not a
        lease in the strict sense: see docs/chaos.md for what remains.
        """
        syncobj = self._running()
        now = time.monotonic()
        if syncobj._isLeader():
            return self._majority_answered(syncobj, self._settings.election_timeout_min_s)
        leader_commit = getattr(syncobj, "_SyncObj__leaderCommitIndex", None)
        election_deadline = getattr(syncobj, "_SyncObj__raftElectionDeadline", 0.0)
        return (syncobj._getLeader() is not None and election_deadline > now and leader_commit is not None
                and syncobj.raftLastApplied >= leader_commit)

    def status(self) -> RaftStatus:
        syncobj = self._running()
        members = {self._settings.p2p_address, *(str(node.id) for node in syncobj.otherNodes)}
        return RaftStatus(
            node_id=self._settings.node_id,
            p2p_address=self._settings.p2p_address,
            leader_address=self.leader(),
            is_leader=self.is_leader(),
            term=syncobj.raftCurrentTerm,
            commit_index=syncobj.raftCommitIndex,
            last_applied=syncobj.raftLastApplied,
            log_length=syncobj._getRaftLogSize(),
            member_addresses=tuple(sorted(members)),
            connected_addresses=tuple(sorted(str(node.id) for node in syncobj.otherNodes
                                             if syncobj.isNodeConnected(node))),
            has_quorum=syncobj.hasQuorum,
            state_version=self._machine.state.version,
            silent_s=self._silent_s(syncobj),
        )

    def _majority_answered(self, syncobj: _ClusterSyncObj, within_s: float) -> bool:
        """On the leader: a majority of the members, itself counted, answered within ``within_s``."""
        silent = self._silent_s(syncobj)
        answered = 1 + sum(1 for seconds in silent.values() if seconds < within_s)
        return answered * 2 > len(silent) + 1

    def _silent_s(self, syncobj: _ClusterSyncObj) -> dict[str, float]:
        """Seconds since each member last answered this leader, from
        pysyncobj's own record (``__lastResponseTime``, the one its
        leaderFallbackTimeout reads; private, so the version is pinned). The
        tick thread writes it: copied with a retry if it changes meanwhile.

        pysyncobj counts from this node's election for a member that has not
        answered since; for the leader before it, that would hide how long a
        dead leader has been silent already. Its silence is counted from when
        this node last heard it instead, crediting at most
        ``election_timeout_max_s`` before the election (what a follower that
        ran all along waits before it stands), so a follower back from a
        pause that wins an election does not take the old leader for dead."""
        if not syncobj._isLeader():
            return {}
        responses: dict[Any, float] = getattr(syncobj, "_SyncObj__lastResponseTime", {})
        for _ in range(_COPY_ATTEMPTS):
            try:
                copied = dict(responses)
            except RuntimeError:  # changed size during the copy
                continue
            now = time.monotonic()
            silent = {node: max(0.0, now - at) for node, at in copied.items()}
            predecessor, became_at = syncobj._predecessor, syncobj._became_leader_at
            if predecessor is not None and predecessor[0] in copied and copied[predecessor[0]] <= became_at:
                credit_s = min(max(0.0, became_at - predecessor[1]), self._settings.election_timeout_max_s)
                silent[predecessor[0]] = max(0.0, now - became_at) + credit_s
            return {str(node.id): seconds for node, seconds in silent.items()}
        return {}

    def force_log_compaction(self) -> None:
        """Write the full dump and drop the compacted log at the next tick (tests, operators)."""
        self._running().forceLogCompaction()

    # --- internals ---

    def _running(self) -> _ClusterSyncObj:
        syncobj = self._syncobj
        if syncobj is None or self._is_closed:
            raise Unavailable("the raft node is not running")
        assert asyncio.get_running_loop() is self._loop, "RaftNode is used from its own event loop only"
        return syncobj

    def _raise_if_stale(self) -> None:
        """A dump that fails to restore (a snapshot received from the leader
        that does not decode) leaves this node with a stale state for good:
        pysyncobj logs the failure, tells the leader the snapshot was installed
        and moves on. The node refuses to serve that state; a restart fails
        with ``DataCorruption`` on the damaged dump and needs an operator."""
        error = self._machine.restore_error
        if error is not None:
            raise Unavailable(f"this node's cluster state is stale: {error.message}") from error

    def _restore_dump_tick_thread(self, path: str) -> tuple[RaftEntry, RaftEntry, set[TCPNode]]:
        # pysyncobj compares the members it gets with its own Node objects, so
        # they must be TCPNodes: a plain address string would never equal this
        # node, and this node would add itself as its own peer.
        last_entry, previous_entry, addresses = self._machine.restore_dump(path)
        return last_entry, previous_entry, {TCPNode(address) for address in addresses}

    def _on_change_tick_thread(self, state: ClusterState) -> None:
        """Called by the state machine on the tick thread; hands over to the loop."""
        loop = self._loop
        assert loop is not None, "nothing is applied before start"
        if self._is_delivery_pending:
            return  # the queued delivery will read the latest state
        self._is_delivery_pending = True
        try:
            loop.call_soon_threadsafe(self._deliver)
        except RuntimeError:
            self._is_delivery_pending = False  # the loop is closed

    def _deliver(self) -> None:
        # Clear the flag before reading the state: a change after this read
        # schedules another delivery, so none is missed.
        self._is_delivery_pending = False
        state = self._machine.state
        for version, waiter in list(self._version_waiters):
            if version <= state.version and not waiter.done():
                waiter.set_result(state)
        for callback in list(self._subscribers):
            try:
                callback(state)
            except Exception:
                _logger.exception("a cluster state subscriber failed")


def _settle(future: asyncio.Future[tuple[object, int]], result: object, reason: int) -> None:
    """On the loop: resolve a proposal's future unless it timed out or was cancelled meanwhile."""
    if not future.done():
        future.set_result((result, reason))


def _proposal_error(reason: int, *, leader_hint: str | None) -> QclusterError:
    """pysyncobj's FAIL_REASON -> our error. Every one is retryable with the
    same request id; the messages say whether the command may have committed."""
    match reason:
        case FAIL_REASON.QUEUE_FULL:
            return Overloaded("the raft proposal queue is full; not proposed", retry_after_s=_OVERLOADED_RETRY_AFTER_S)
        case FAIL_REASON.MISSING_LEADER:
            return NoQuorum("no raft leader is known; not proposed")
        case FAIL_REASON.NOT_LEADER:
            return NotLeader(
                "the node the proposal was forwarded to no longer leads; not proposed", leader_hint=leader_hint
            )
        case FAIL_REASON.REQUEST_DENIED:
            return PreconditionFailed("the raft leader refused the membership change (another one is in progress, "
                                      "or the member already is / is not one)")
        case FAIL_REASON.DISCARDED | FAIL_REASON.LEADER_CHANGED | FAIL_REASON.UNKNOWN_OUTCOME:
            return Unavailable(f"the raft leader changed (pysyncobj reason {reason}); the outcome is unknown: "
                               "retry with the same request id")
        case _:
            return Unavailable(f"raft proposal failed with pysyncobj reason {reason}; the outcome is unknown")

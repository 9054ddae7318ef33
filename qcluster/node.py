"""Composition root: one node process. Imported by nothing but the CLI.

Order of start-up: the HTTP server starts first (probes answer, ``/readyz``
says 503), then the table of contents is opened in a worker thread so the
event loop keeps serving while collections load, then the node is ready.

Shutdown on SIGTERM or SIGINT: stop accepting connections, let in-flight
requests finish (bounded by ``service.shutdown_timeout_s``), then close
storage (flush, stop optimizers) and exit 0. The whole sequence is meant to
take well under 10 seconds.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import datetime
import gc
import logging
import math
import os
import pathlib
import signal
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any, Final

import threadpoolctl
import uvloop
from aiohttp import web

from qcluster.api.grpc import start_grpc_server
from qcluster.api.rest import build_app
from qcluster.api.state import NodeState
from qcluster.cluster.commands import AddNode, MarkNodeAlive, MarkNodeDead
from qcluster.cluster.state import Liveness, NodeInfo, ResultCode
from qcluster.config import Settings
from qcluster.engine import scan_cache
from qcluster.errors import QclusterError

if TYPE_CHECKING:
    from qcluster.consensus import RaftNode

__all__ = ["run_node", "serve"]

_log = logging.getLogger("qcluster.node")
_MIB: Final = 1024 * 1024
_ZERO_COMMIT: Final = "0" * 40
# Seconds left for closing storage after the HTTP server has stopped.
_STORAGE_CLOSE_TIMEOUT_S: Final = 2.5


def git_commit() -> str:
    """The 40-hex commit of the source tree, or zeros when not in a git checkout."""
    source_dir = pathlib.Path(__file__).resolve().parent
    try:
        completed = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=source_dir, capture_output=True, text=True, timeout=2, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return _ZERO_COMMIT
    commit = completed.stdout.strip()
    if completed.returncode != 0 or len(commit) != 40:
        return _ZERO_COMMIT
    return commit


def _open_toc(data_dir: pathlib.Path) -> object:
    from qcluster.storage.toc import TableOfContents  # noqa: PLC0415 - loaded after the loop runs

    data_dir.mkdir(parents=True, exist_ok=True)
    return TableOfContents.open(data_dir)


_REGISTER_TIMEOUT_S: Final = 3.0
_REGISTER_RETRY_S: Final = 0.5
_RAFT_CLOSE_TIMEOUT_S: Final = 2.0
_LIVENESS_PERIOD_S: Final = 0.2


class _ClusterMember:
    """Cluster mode: this node's Raft member and its entry in the ClusterState.

    The Raft group forms (or, with ``cluster.join``, this node joins it through
    a member: ``consensus/join.py``), and the node records itself with
    ``AddNode``, proposed by itself with a request id derived from its id, so
    a restart that proposes it again changes nothing.
    """

    def __init__(self, settings: Settings, runtime: Any) -> None:
        from qcluster.consensus import JoinSettings  # noqa: PLC0415 - pysyncobj only in cluster mode

        cluster = settings.cluster
        assert cluster.node_id is not None and cluster.secret is not None
        self.node_id = cluster.node_id
        self._settings = settings
        self._secret = cluster.secret
        self.p2p_address = settings.p2p_address
        advertised_host = self.p2p_address.rpartition(":")[0]
        self.http_address = f"{advertised_host}:{settings.service.http_port}"
        self.grpc_address = f"{advertised_host}:{settings.service.grpc_port}"
        self._static_peers = tuple(peer for peer in cluster.peer_addresses() if peer != self.p2p_address)
        join_address = cluster.join_address()
        # With cluster.join: ask the join address first, then the static peers.
        self._join = None if join_address is None else JoinSettings(
            self_address=self.p2p_address, cluster_secret=cluster.secret,
            contact_addresses=(join_address, *(peer for peer in self._static_peers if peer != join_address)))
        self._raft: RaftNode | None = None  # built by join(), once the peers are known
        self._dead_after_s = cluster.dead_after_s
        self._tasks: list[asyncio.Task[None]] = []
        self.runtime = runtime
        # Set once this node has applied its own AddNode (its view of the
        # cluster is at least as new as its registration).
        self.registered = asyncio.Event()

    @property
    def raft(self) -> RaftNode:
        raft = self._raft
        assert raft is not None, "the raft member is built by join()"
        return raft

    async def join(self) -> None:
        """Start this node's Raft member: with the static peers, or, with
        ``cluster.join``, with the members a member reports, and then ask to be
        added unless this node already is one (a restart). Raises
        ``QclusterError`` (the node stops) when the join fails within its bound.

        Cancel safety: ``close()`` afterwards stops whatever was started; an
        add already asked for may still be committed (a restart with the same
        flags then finds this node among the members).
        """
        from qcluster.consensus import (  # noqa: PLC0415 - pysyncobj only in cluster mode
            RaftNode,
            RaftSettings,
            discover_members,
            request_membership,
        )

        assert self._raft is None, "joined twice"
        join = self._join
        members = None
        if join is not None:
            _log.info("joining the cluster", extra={"p2p": self.p2p_address, "contacts": list(join.contact_addresses)})
            members = await discover_members(join)
            _log.info("cluster members", extra={"contact": members.contact_address, "leader": members.leader_address,
                                                "members": list(members.member_addresses)})
        peers = self._static_peers if members is None else members.peers_of(self.p2p_address)
        self._raft = RaftNode(RaftSettings(node_id=self.node_id, p2p_address=self.p2p_address, peer_addresses=peers,
                                           cluster_secret=self._secret, data_dir=self._settings.data_dir))
        await self._raft.start()
        if join is None or members is None:
            return
        if members.includes(self.p2p_address):
            _log.info("already a member of the cluster: not asking to be added", extra={"p2p": self.p2p_address})
            return
        joined = await request_membership(join, members)
        _log.info("added to the cluster", extra={"p2p": self.p2p_address, "members": list(joined.member_addresses)})

    async def start(self, toc: Any) -> Any:
        """After ``join``: start the distributed runtime; returns the catalog the API serves."""
        from qcluster.distributed.runtime import RaftAccess  # noqa: PLC0415 - cluster mode only

        raft = self.raft
        catalog = await self.runtime.start(toc=toc, raft=RaftAccess(
            state=raft.state, propose=lambda command, timeout_s: raft.propose(command, timeout_s=timeout_s),
            wait_for_version=lambda version, timeout_s: raft.wait_for_version(version, timeout_s=timeout_s),
            subscribe=raft.subscribe, leads_quorum=raft.leads_quorum, is_current=raft.is_current,
            propose_as_leader=lambda command, timeout_s: raft.propose_as_leader(command, timeout_s=timeout_s)))
        self._tasks.append(asyncio.create_task(self._register(), name="qcluster-register-node"))
        self._tasks.append(asyncio.create_task(self._watch_liveness(), name="qcluster-liveness"))
        return catalog

    async def _watch_liveness(self) -> None:
        """On the leader: mark a member dead once it has not answered the
        leader's heartbeats for ``dead_after_s`` — a stalled process or a cut
        link as much as a closed connection — and alive once it is connected
        and answering again. The request id names the liveness change it
        answers, so a retry (or a second leader's proposal for the same
        observation) applies once. Only a leader that a quorum answers acts
        (``RaftNode.leads_quorum``); and a leader marked dead (by a deposed
        leader's late proposal) marks itself alive, as nobody else would."""
        while True:  # until shutdown cancels it
            await asyncio.sleep(_LIVENESS_PERIOD_S)
            if not self.raft.leads_quorum():
                continue
            status = self.raft.status()
            connected = set(status.connected_addresses)
            for node in self.raft.state().nodes.values():
                if node.node_id == self.node_id:
                    if node.liveness is Liveness.DEAD:
                        await self._propose_liveness(MarkNodeAlive, node)
                    continue
                # A registered node that is no Raft member answers nothing.
                silent_s = status.silent_s.get(node.p2p_address, math.inf)
                if node.liveness is Liveness.DEAD and node.p2p_address in connected \
                        and silent_s < self._dead_after_s / 2:
                    await self._propose_liveness(MarkNodeAlive, node)
                elif node.liveness is Liveness.ALIVE and silent_s >= self._dead_after_s:
                    await self._propose_liveness(MarkNodeDead, node)

    async def _propose_liveness(self, kind: type[MarkNodeDead] | type[MarkNodeAlive], node: NodeInfo) -> None:
        command = kind(request_id=f"{kind.__name__}-{node.node_id}-{node.liveness_since_version}",
                       node_id=node.node_id, at_ms=int(time.time() * 1000))
        try:
            result = await self.raft.propose_as_leader(command, timeout_s=_REGISTER_TIMEOUT_S)
        except QclusterError as error:
            if not error.retryable:
                raise
            return  # tried again on the next round
        _log.log(logging.WARNING if kind is MarkNodeDead else logging.INFO, "cluster member liveness",
                 extra={"node_id": node.node_id, "marked": "dead" if kind is MarkNodeDead else "alive",
                        "result": result.code.value})

    async def _register(self) -> None:
        command = AddNode(request_id=f"add-node-{self.node_id}", node_id=self.node_id, p2p_address=self.p2p_address,
                          http_address=self.http_address, grpc_address=self.grpc_address,
                          at_ms=int(time.time() * 1000))
        while True:  # until registered; cancelled at shutdown
            try:
                result = await self.raft.propose(command, timeout_s=_REGISTER_TIMEOUT_S)
            except QclusterError as error:
                if not error.retryable:
                    raise
                await asyncio.sleep(_REGISTER_RETRY_S)  # no leader or quorum yet
                continue
            # Accepted may be the remembered result of an earlier AddNode with
            # this request id (this node before a restart, or another node
            # started with the same id): only the recorded address tells.
            known = self.raft.state().nodes.get(self.node_id)
            is_this_node = known is not None and known.p2p_address == self.p2p_address
            if is_this_node and (result.is_accepted or result.code is ResultCode.ALREADY_EXISTS):
                _log.info("cluster member registered", extra={"node_id": self.node_id, "p2p": self.p2p_address})
                await self.runtime.on_registered()
                self.registered.set()
                return
            reason = result.message if known is None or not result.is_accepted else (
                f"node {self.node_id} is registered with p2p address {known.p2p_address}")
            _log.error("cannot register this node in the cluster",
                       extra={"node_id": self.node_id, "p2p": self.p2p_address, "reason": reason})
            return

    def status_json(self) -> dict[str, Any]:
        """Qdrant's ``GET /cluster`` body, plus what we know beyond it under ``qcluster``."""
        status = self.raft.status()
        state = self.raft.state()
        return {
            "status": "enabled",
            "peer_id": self.node_id,
            "peers": {str(node.node_id): {"uri": f"http://{node.p2p_address}/"} for node in state.nodes.values()},
            "raft_info": {"term": status.term, "commit": status.commit_index, "pending_operations": 0,
                          "leader": self.raft.leader_node_id(), "role": "Leader" if status.is_leader else "Follower",
                          "is_voter": True},
            "consensus_thread_status": {"consensus_thread_status": "working",
                                        "last_update": datetime.datetime.now(datetime.UTC).isoformat()},
            "message_send_failures": {},
            "qcluster": {"p2p_address": self.p2p_address, "leader_address": status.leader_address,
                         "members": list(status.member_addresses), "has_quorum": status.has_quorum,
                         "state_version": status.state_version,
                         "nodes": {str(node.node_id): {"http": node.http_address, "grpc": node.grpc_address,
                                                       "liveness": node.liveness.value}
                                   for node in state.nodes.values()}},
        }

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.runtime.close()
        if self._raft is not None:
            await self._raft.close(timeout_s=_RAFT_CLOSE_TIMEOUT_S)


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)


async def _close_storage(state: NodeState, executor: concurrent.futures.ThreadPoolExecutor) -> bool:
    """Close storage; False if it did not finish in time (it goes on in its thread)."""
    toc = state.toc
    state.toc = None
    if toc is None:
        return True
    loop = asyncio.get_running_loop()
    try:
        await asyncio.wait_for(loop.run_in_executor(executor, toc.close), timeout=_STORAGE_CLOSE_TIMEOUT_S)
    except TimeoutError:
        _log.error("storage did not close in time; the WAL replays on the next start",
                   extra={"timeout_s": _STORAGE_CLOSE_TIMEOUT_S})
        return False
    return True


async def _load_storage(state: NodeState, settings: Settings, stop: asyncio.Event) -> Any | None:
    """Open storage in a thread; returns the table of contents, or None if it
    failed (already logged). The caller publishes it (``state.toc``)."""
    loop = asyncio.get_running_loop()
    opening = loop.run_in_executor(state.executor, _open_toc, settings.data_dir)
    try:
        toc: Any = await opening
    except Exception:  # noqa: BLE001 - reported, and the node exits non-zero
        _log.exception("cannot open storage", extra={"data_dir": str(settings.data_dir)})
        return None
    # Loaded payloads are a large, long-lived heap (1M points: ~1M dicts, a
    # 136 ms full collection); keep them out of the cyclic GC's generations.
    gc.freeze()
    _log.info("storage loaded", extra={"data_dir": str(settings.data_dir),
                                       "collections": len(toc.collection_names())})
    if stop.is_set():
        _log.info("stop requested while loading")
    return toc


async def _start_member(member: _ClusterMember, toc: Any, stop: asyncio.Event) -> tuple[Any | None, int]:
    """Join the cluster and start the member, unless a stop comes first
    (joining may wait for a member or a leader, up to its bound).

    Returns (the catalog the API serves, 0), or (None, exit code): 0 when
    stopped while joining, 1 when the join or the start failed (logged). The
    caller closes the member either way.
    """

    async def join_and_start() -> Any:
        await member.join()
        return await member.start(toc)

    starting = asyncio.create_task(join_and_start(), name="qcluster-join")
    stopping = asyncio.create_task(stop.wait(), name="qcluster-stop-while-joining")
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
    if not starting.done():
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError, QclusterError):
            await starting
        _log.info("stop requested while joining the cluster")
        return None, 0
    try:
        return starting.result(), 0
    except QclusterError as error:
        _log.error("cannot start the cluster member", extra={"node_id": member.node_id, "p2p": member.p2p_address,
                                                             "error": error.message})
        return None, 1


async def _wait_or_stop(event: asyncio.Event, stop: asyncio.Event) -> bool:
    """Wait for ``event``; False if ``stop`` came first."""
    waiting = asyncio.create_task(event.wait(), name="qcluster-wait-event")
    stopping = asyncio.create_task(stop.wait(), name="qcluster-wait-stop")
    try:
        await asyncio.wait({waiting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
        stopping.cancel()
    return event.is_set()


async def _serve(state: NodeState, settings: Settings, member: _ClusterMember | None, stop: asyncio.Event) -> int:
    """Load storage, give the API its catalog — in cluster mode the distributed
    one, once this node is a member and has applied its own registration
    (until then /readyz and every request answer 503; ``GET /cluster``
    already answers) — and serve until a stop. Returns the exit code."""
    toc = await _load_storage(state, settings, stop)
    if toc is None:
        return 1
    if member is None:
        state.toc = toc
    else:
        catalog, exit_code = await _start_member(member, toc, stop)
        if catalog is None:
            state.toc = toc  # closed at shutdown
            return exit_code
        # Until this node has applied its own registration, its view of the
        # cluster may predate collections created while it was down: a
        # "Collection doesn't exist" from it would be wrong, so it answers 503.
        state.unready_reason = "the node is joining the cluster: its view of the collections is not current yet"
        state.toc = catalog  # storage is closed through it at shutdown
        state.cluster_status = member.status_json
        if not await _wait_or_stop(member.registered, stop):
            _log.info("stop requested while registering in the cluster")
            return 0
        state.unready_reason = None
        _log.info("cluster mode", extra={"node_id": member.node_id, "p2p": member.p2p_address})
    _log.info("node ready")
    await stop.wait()
    return 0


_storage_left_running = False


async def run_node(settings: Settings) -> int:
    """Serve until SIGTERM/SIGINT; returns the process exit code."""
    global _storage_left_running  # noqa: PLW0603 - read once by serve() after the loop ends
    stop = asyncio.Event()
    _install_signal_handlers(stop)
    executor = concurrent.futures.ThreadPoolExecutor(
        max_workers=settings.service.worker_threads, thread_name_prefix="storage"
    )
    scan_cache.set_budget_bytes(settings.storage.filtered_scan_cache_mb * _MIB)
    state = NodeState(executor=executor, commit=git_commit(),
                      body_bytes_max=settings.service.max_request_size_mb * _MIB, api_key=settings.service.api_key)
    runner = web.AppRunner(build_app(state), handle_signals=False, access_log=None,
                           shutdown_timeout=settings.service.shutdown_timeout_s)
    await runner.setup()
    site = web.TCPSite(runner, settings.service.host, settings.service.http_port, reuse_address=True)
    exit_code = 0
    grpc_server = None
    member: _ClusterMember | None = None
    runtime = None
    if settings.cluster.is_enabled:
        from qcluster.distributed.runtime import ClusterRuntime  # noqa: PLC0415 - cluster mode only

        cluster = settings.cluster
        assert cluster.node_id is not None and cluster.secret is not None
        runtime = ClusterRuntime(node_id=cluster.node_id, secret=cluster.secret,
                                 write_timeout_s=cluster.write_timeout_s,
                                 internal_deadline_s=cluster.internal_deadline_s,
                                 replica_grace_s=cluster.replica_grace_s)
        member = _ClusterMember(settings, runtime)  # joins once storage is loaded
    try:
        try:
            await site.start()
            grpc_server, grpc_port = await start_grpc_server(
                state, host=settings.service.host, port=settings.service.grpc_port,
                internal_services=None if runtime is None else runtime.add_services)
        except OSError as exc:
            _log.error("cannot listen", extra={"host": settings.service.host, "error": str(exc)})
            return 1
        _log.info("listening", extra={"host": settings.service.host, "http_port": settings.service.http_port,
                                      "grpc_port": grpc_port})
        exit_code = await _serve(state, settings, member, stop)
        _log.info("shutting down")
    finally:
        # Stops listening, waits for in-flight handlers up to shutdown_timeout, closes connections.
        # Both servers drain at once, each bounded by shutdown_timeout_s — before the cluster member
        # closes, so requests in flight (internal ones from peers too) still find the router, Raft
        # and the runtime's threads rather than an executor that is shut down.
        stopping = [runner.cleanup()]
        if grpc_server is not None:
            stopping.append(grpc_server.stop(grace=settings.service.shutdown_timeout_s))
        await asyncio.gather(*stopping)
        if member is not None:
            state.cluster_status = None
            await member.close()
        _storage_left_running = not await _close_storage(state, executor)
        executor.shutdown(wait=False, cancel_futures=True)
    _log.info("stopped", extra={"exit_code": exit_code})
    return exit_code


def serve(settings: Settings) -> int:
    # Requests run in parallel on the storage thread pool; a BLAS call that
    # also fans out to its own threads oversubscribes the cores (measured: 8
    # concurrent clients on an exact-search segment went from 78 to 756 QPS).
    # OpenMP (FAISS index building) keeps every core.
    threadpoolctl.threadpool_limits(limits=1, user_api="blas")
    # uvloop: the same asyncio API on libuv; HTTP and gRPC hand-offs cost less
    # (measured: +10 % single queries with 8 clients, bench/results).
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        exit_code = runner.run(run_node(settings))
    if _storage_left_running:
        # toc.close() is still waiting in a worker thread (an index build runs
        # to its next cancellation point, up to seconds on a loaded machine),
        # and the interpreter would join that thread before exiting. Every
        # acknowledged write is in the fsynced WAL and every file is replaced
        # atomically, so ending now is as safe as kill -9 and keeps shutdown
        # within its bound (docs/operations.md "Shutdown").
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)
    return exit_code

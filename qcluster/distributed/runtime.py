"""Everything cluster mode runs on one node, wired together.

Built before the gRPC server starts (``add_services`` must register the
internal services first); ``start`` connects it to local storage and Raft
once they are up. Until then the internal services answer that this node
holds no replica, which the callers treat like any unreachable replica.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Final

import grpc

from qcluster.cluster.commands import Command, RemoveFromInSync
from qcluster.cluster.state import ClusterState, ReplicaState, Result
from qcluster.distributed.catalog import DistributedCatalog
from qcluster.distributed.controller import Controller
from qcluster.distributed.local import LocalReplicas
from qcluster.distributed.membership import ClusterMembership
from qcluster.distributed.proposer import Proposer, new_request_id
from qcluster.distributed.reconciler import Reconciler
from qcluster.distributed.recovery import Recovery
from qcluster.distributed.router import Router
from qcluster.engine.shard import LocalShard
from qcluster.errors import NotLeader, QclusterError, ShardUnavailable, Unavailable
from qcluster.operations import Operation
from qcluster.replication.messages import ShardKey, ShardView
from qcluster.replication.primary import PrimaryWriter
from qcluster.replication.replica import ReplicaEndpoint
from qcluster.storage.toc import TableOfContents
from qcluster.transport.replication import GrpcPeers, add_replication_service
from qcluster.transport.shards import GrpcShards, add_shards_service

__all__ = ["ClusterRuntime", "RaftAccess"]

_log = logging.getLogger(__name__)
_INTERNAL_WORKERS: Final = 8
# A facade call waits at most this much longer than the write timeout.
_CALL_MARGIN_S: Final = 10.0


class RaftAccess:
    """What the runtime needs from the node's Raft member (no pysyncobj here)."""

    def __init__(self, *, state: Callable[[], ClusterState], propose: Callable[[Command, float], Awaitable[Result]],
                 wait_for_version: Callable[[int, float], Awaitable[ClusterState]],
                 subscribe: Callable[[Callable[[ClusterState], None]], Callable[[], None]],
                 leads_quorum: Callable[[], bool], is_current: Callable[[], bool],
                 propose_as_leader: Callable[[Command, float], Awaitable[Result]]) -> None:
        self.state = state
        self.propose = propose
        self.wait_for_version = wait_for_version
        self.subscribe = subscribe
        self.leads_quorum = leads_quorum  # RaftNode.leads_quorum: the controller may act
        self.is_current = is_current  # RaftNode.is_current: this node's view may serve strong reads
        self.propose_as_leader = propose_as_leader  # RaftNode.propose_as_leader: the controller's proposals


class ClusterRuntime:
    def __init__(self, *, node_id: int, secret: str, write_timeout_s: float, internal_deadline_s: float,
                 replica_grace_s: float) -> None:
        self.node_id = node_id
        self._secret = secret
        self._write_timeout_s = write_timeout_s
        self._internal_deadline_s = internal_deadline_s
        self._replica_grace_s = replica_grace_s
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=_INTERNAL_WORKERS,
                                                              thread_name_prefix="internal")
        self._local: LocalReplicas | None = None
        self._membership: ClusterMembership | None = None
        self.router: Router | None = None
        self.recovery: Recovery | None = None
        self.reconciler: Reconciler | None = None
        self._proposer: Proposer | None = None
        self._parts: list[Any] = []
        self._unsubscribe: list[Callable[[], None]] = []
        self._closables: list[Any] = []

    # --- late-bound ends for the internal services ---

    def lookup(self, key: ShardKey) -> LocalShard | None:
        return None if self._local is None else self._local.lookup(key)

    def view(self, shard: ShardKey) -> ShardView | None:
        return None if self._membership is None else self._membership.view(shard)

    async def fence(self, shard: ShardKey, node_id: int, *, primary_term: int) -> bool:
        if self._membership is None:
            raise Unavailable("cluster mode is starting")
        return await self._membership.fence(shard, node_id, primary_term=primary_term)

    def staging_dir(self, key: ShardKey) -> Path:
        if self._local is None:
            raise ShardUnavailable("cluster mode is starting")
        return self._local.staging_dir(key)

    def install(self, key: ShardKey, snapshot: Path) -> LocalShard:
        if self._local is None:
            raise ShardUnavailable("cluster mode is starting")
        return self._local.install(key, snapshot)

    async def primary_write(self, key: ShardKey, operation: Operation) -> int:
        if self.router is None:
            raise ShardUnavailable("cluster mode is starting")
        return await self.router.primary_write(key, operation)

    def add_services(self, server: grpc.aio.Server) -> None:
        endpoint = ReplicaEndpoint(shards=self.lookup, membership=self, installer=self)
        add_replication_service(server, endpoint, executor=self.executor, secret=self._secret)
        add_shards_service(server, self.lookup, executor=self.executor, secret=self._secret,
                           primary_write=self.primary_write)

    # --- start and stop ---

    async def _run(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def start(self, *, toc: TableOfContents, raft: RaftAccess) -> DistributedCatalog:
        """Connect to storage and Raft; returns the catalog the API layer uses."""
        def addresses(node_id: int) -> str | None:
            node = raft.state().nodes.get(node_id)
            return None if node is None else node.grpc_address

        proposer = Proposer(state=raft.state, propose_once=raft.propose, wait_for_version=raft.wait_for_version)
        self._proposer = proposer
        peers = GrpcPeers(addresses=addresses, secret=self._secret, deadline_s=self._internal_deadline_s)
        remote = GrpcShards(addresses=addresses, secret=self._secret, deadline_s=self._internal_deadline_s,
                            write_deadline_s=self._write_timeout_s)
        self._closables += [peers, remote]
        local = LocalReplicas(toc)
        membership = ClusterMembership(proposer)
        writer = PrimaryWriter(node_id=self.node_id, membership=membership, peers=peers, run_blocking=self._run)
        reconciler = Reconciler(node_id=self.node_id, toc=toc, state=raft.state, run_blocking=self._run)
        recovery = Recovery(node_id=self.node_id, local=local, proposer=proposer, writer=writer, peers=peers,
                            run_blocking=self._run)
        # The controller's own proposer: a node that no longer leads a quorum
        # proposes nothing, so no stale decision waits in pysyncobj's queue
        # for the next leader.
        leader_proposer = Proposer(state=raft.state, propose_once=raft.propose_as_leader,
                                   wait_for_version=raft.wait_for_version, give_up_on=(NotLeader,))
        controller = Controller(proposer=leader_proposer, peers=peers, leads_quorum=raft.leads_quorum,
                                replica_grace_s=self._replica_grace_s)
        self.router = Router(node_id=self.node_id, local=local, proposer=proposer, writer=writer, remote=remote,
                             reconciler=reconciler, run_blocking=self._run, write_timeout_s=self._write_timeout_s,
                             transfers=recovery.transfers, is_current=raft.is_current)
        self._local, self._membership, self.recovery, self.reconciler = local, membership, recovery, reconciler
        reconciler.start()
        recovery.start()
        controller.start()
        self._parts = [controller, recovery, reconciler]
        for part in (reconciler, recovery):
            self._unsubscribe.append(raft.subscribe(part.on_state))
        return DistributedCatalog(router=self.router, toc=toc, loop=asyncio.get_running_loop(),
                                  call_timeout_s=self._write_timeout_s + _CALL_MARGIN_S)

    async def on_registered(self) -> None:
        """This node is in the state (its state is at least as new as its
        ``AddNode``): local collections unknown to the cluster may go, and
        replicas this node held in sync before it restarted leave the in-sync
        set, to come back through recovery (they may hold a write that was
        never acknowledged, or lack what was written while this node was down)."""
        assert self.reconciler is not None and self._proposer is not None, "started first"
        self.reconciler.may_delete = True
        state = self._proposer.state()
        for name, collection in state.collections.items():
            for shard_id, shard in collection.shards.items():
                replica = shard.replica(self.node_id)
                if replica is None or replica.state is not ReplicaState.ACTIVE or shard.primary == self.node_id:
                    continue
                try:
                    result = await self._proposer.propose(RemoveFromInSync(
                        request_id=new_request_id("rejoin"), collection=name, shard_id=shard_id,
                        node_id=self.node_id, expected_primary_term=shard.primary_term))
                except QclusterError as error:
                    _log.warning("cannot leave the in-sync set after a restart",
                                 extra={"collection": name, "shard_id": shard_id, "error": error.message})
                    continue
                _log.info("left the in-sync set after a restart; recovery brings it back",
                          extra={"collection": name, "shard_id": shard_id, "result": result.code.value})

    async def close(self) -> None:
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        for part in self._parts:
            await part.close()
        for closable in self._closables:
            await closable.close()
        self.executor.shutdown(wait=False, cancel_futures=True)

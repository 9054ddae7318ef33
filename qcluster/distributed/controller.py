"""The controller: what the Raft leader does for the whole cluster, once a second.

- Promotion: a shard whose primary's node is DEAD gets a new primary, the
  in-sync replica on a live node whose log goes furthest (``ReplicaStatus``),
  under a new term (``PromotePrimary``, compare-and-set on the old term).
- Fencing: an in-sync replica (not the primary) on a DEAD node leaves the
  in-sync set (``RemoveFromInSync``, compare-and-set on the primary term;
  below ``write_consistency_factor`` the shard refuses writes until recovery
  brings a replica back), so reads that ask every
  in-sync replica (``all``, ``majority``) stop waiting for it at once rather
  than at the next write; it comes back through recovery.
- Re-replication: once a node has been dead for ``replica_grace_s``, each
  shard it held gets a new replica on a live node (``AddReplica``; the
  primary's recovery fills it), and when a shard again has
  ``replication_factor`` in-sync replicas on live nodes, the replicas on lost
  nodes are dropped.
- Moves: a shard move whose target is in sync is finished (``FinishShardMove``).

Being the leader is not a lease: every command is compare-and-set (on the
primary term or the replica state), so a deposed leader's late proposal is
rejected, never applied twice or out of date.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Final

from qcluster.cluster.commands import AddReplica, DropReplica, FinishShardMove, PromotePrimary, RemoveFromInSync
from qcluster.cluster.placement import plan_re_replication
from qcluster.cluster.state import ClusterState, Liveness, ReplicaState
from qcluster.distributed.proposer import Proposer, new_request_id
from qcluster.errors import NotLeader, QclusterError
from qcluster.replication.messages import ShardKey
from qcluster.transport.replication import GrpcPeers

__all__ = ["Controller"]

_log = logging.getLogger(__name__)
_PERIOD_S: Final = 0.25


class Controller:
    def __init__(self, *, proposer: Proposer, peers: GrpcPeers, leads_quorum: Callable[[], bool],
                 replica_grace_s: float) -> None:
        self._proposer = proposer
        self._peers = peers
        self._leads_quorum = leads_quorum
        self._grace_ms = int(replica_grace_s * 1000)
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="qcluster-controller")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(_PERIOD_S)
            if not self._leads_quorum():
                continue
            try:
                await self.run_once()
            except NotLeader:
                _log.info("controller round stopped: this node no longer leads a quorum")
            except QclusterError as error:
                _log.warning("controller round failed", extra={"error": error.message})

    async def run_once(self) -> None:
        await self._promote(self._proposer.state())
        await self._fence_dead(self._proposer.state())
        await self._re_replicate(self._proposer.state())
        await self._finish_moves(self._proposer.state())

    async def _promote(self, state: ClusterState) -> None:
        alive = {node.node_id for node in state.nodes.values() if node.liveness is Liveness.ALIVE}
        for name, collection in state.collections.items():
            for shard_id, shard in collection.shards.items():
                if shard.primary in alive:
                    continue
                candidates = [node_id for node_id in sorted(shard.in_sync) if node_id in alive]
                if not candidates:
                    continue
                key = ShardKey(name, shard_id)
                reach: list[tuple[int, int]] = []
                for node_id in candidates:
                    try:
                        status = await self._peers.replica_status(node_id, key)
                    except QclusterError:
                        continue
                    if status.exists:
                        reach.append((status.last_seq, -node_id))
                if not reach:
                    continue
                chosen = -max(reach)[1]
                result = await self._proposer.propose(PromotePrimary(
                    request_id=new_request_id("promote"), collection=name, shard_id=shard_id, node_id=chosen,
                    expected_primary_term=shard.primary_term))
                _log.warning("primary promoted", extra={"collection": name, "shard_id": shard_id,
                                                        "old_primary": shard.primary, "new_primary": chosen,
                                                        "result": result.code.value})

    async def _fence_dead(self, state: ClusterState) -> None:
        dead = {node.node_id for node in state.nodes.values() if node.liveness is Liveness.DEAD}
        for name, collection in state.collections.items():
            for shard_id, shard in collection.shards.items():
                for node_id in sorted((shard.in_sync & dead) - {shard.primary}):
                    result = await self._proposer.propose(RemoveFromInSync(
                        request_id=new_request_id("fence-dead"), collection=name, shard_id=shard_id,
                        node_id=node_id, expected_primary_term=shard.primary_term))
                    _log.warning("replica on a dead node fenced", extra={
                        "collection": name, "shard_id": shard_id, "node_id": node_id, "result": result.code.value})

    async def _re_replicate(self, state: ClusterState) -> None:
        now_ms = int(time.time() * 1000)
        for planned in plan_re_replication(state, now_ms=now_ms, grace_period_ms=self._grace_ms):
            shard = state.shard(planned.collection, planned.shard_id)
            if shard is None or shard.move is not None:
                continue
            result = await self._proposer.propose(AddReplica(
                request_id=new_request_id("re-replicate"), collection=planned.collection,
                shard_id=planned.shard_id, node_id=planned.target, expected_primary_term=shard.primary_term))
            _log.warning("replica re-created", extra={"collection": planned.collection,
                                                      "shard_id": planned.shard_id, "node_id": planned.target,
                                                      "result": result.code.value})
        lost = {node.node_id for node in state.nodes.values()
                if node.liveness is Liveness.DEAD and now_ms - node.liveness_since_ms >= self._grace_ms}
        if not lost:
            return
        state = self._proposer.state()
        for name, collection in state.collections.items():
            for shard_id, shard in collection.shards.items():
                live_in_sync = [node_id for node_id in shard.in_sync if node_id not in lost]
                if len(live_in_sync) < collection.replication_factor:
                    continue
                for replica in shard.replicas:
                    if replica.node_id not in lost or replica.node_id == shard.primary:
                        continue
                    result = await self._proposer.propose(DropReplica(
                        request_id=new_request_id("drop-lost"), collection=name, shard_id=shard_id,
                        node_id=replica.node_id, expected_state=replica.state,
                        expected_primary_term=shard.primary_term))
                    _log.warning("replica on a lost node dropped", extra={
                        "collection": name, "shard_id": shard_id, "node_id": replica.node_id,
                        "result": result.code.value})

    async def _finish_moves(self, state: ClusterState) -> None:
        for name, collection in state.collections.items():
            for shard_id, shard in collection.shards.items():
                move = shard.move
                if move is None:
                    continue
                target = shard.replica(move.target)
                if target is None or target.state is not ReplicaState.ACTIVE:
                    continue
                result = await self._proposer.propose(FinishShardMove(
                    request_id=new_request_id("finish-move"), collection=name, shard_id=shard_id,
                    source=move.source, target=move.target, expected_primary_term=shard.primary_term))
                _log.info("shard move finished", extra={"collection": name, "shard_id": shard_id,
                                                        "source": move.source, "target": move.target,
                                                        "result": result.code.value})

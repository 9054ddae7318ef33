"""A primary brings its other replicas back in sync (docs/architecture.md §7).

Every second, and on every state change, the primary of each shard looks at
its replicas: one that is DEAD, INITIALIZING (new) or PARTIAL on a live node
gets a recovery task, one at a time per replica:

1. ``SetReplicaState`` -> PARTIAL (compare-and-set on the primary term);
2. catch up while writes go on: ask the replica where its log ends
   (``ReplicaStatus``); when its last record is in the primary's history
   (same seq and term) and the primary's WAL still holds what follows, send
   that WAL delta; otherwise cut a snapshot and stream it (``InstallSnapshot``),
   then send the delta after the snapshot;
3. under the shard's write barrier (no write in flight): send the last delta,
   then ``AddToInSync``. From that commit on, every write waits for it.

A replica that has a record the primary lacks (written by a deposed primary,
never acknowledged) fails the history check and is rebuilt from a snapshot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Final

from qcluster.cluster.commands import AddToInSync, SetReplicaState
from qcluster.cluster.state import ClusterState, Liveness, ReplicaState
from qcluster.distributed.local import LocalReplicas
from qcluster.distributed.proposer import Proposer, new_request_id
from qcluster.engine.shard import LocalShard
from qcluster.engine.snapshot import create_snapshot
from qcluster.errors import QclusterError, ShardUnavailable
from qcluster.replication.messages import ShardKey
from qcluster.replication.primary import LogTruncated, PrimaryWriter
from qcluster.transport.replication import GrpcPeers

__all__ = ["Recovery", "TransferProgress"]

_log = logging.getLogger(__name__)
_PERIOD_S: Final = 1.0
_SNAPSHOT_DEADLINE_S: Final = 600.0
_RETRY_AFTER_FAILURE_S: Final = 2.0

RunBlocking = Callable[..., Awaitable[Any]]


@dataclass(slots=True)
class TransferProgress:
    """One replica recovery this node (its shard's primary) is running."""

    shard_id: int
    to_node: int
    method: str = "wal_delta"  # "snapshot" once a snapshot is needed
    stage: str = "starting"    # starting, snapshot, wal_delta, final_delta, in_sync
    started_at: float = field(default_factory=time.time)
    from_seq: int = 0          # where the replica's log ended
    to_seq: int = 0            # the primary's last seq when this stage began
    sent_seq: int = 0          # the last record the replica holds
    snapshot_bytes: int = 0    # total size of the snapshot being sent
    snapshot_sent: int = 0

    def describe(self) -> dict[str, Any]:
        """``shard_transfers[].qcluster`` and a ``comment`` like Qdrant's."""
        described = {"stage": self.stage, "method": self.method, "started_at": self.started_at,
                     "elapsed_s": round(time.time() - self.started_at, 3), "from_seq": self.from_seq,
                     "to_seq": self.to_seq, "sent_seq": self.sent_seq}
        if self.method == "snapshot":
            described.update(snapshot_bytes=self.snapshot_bytes, snapshot_sent=self.snapshot_sent)
        return described

    def comment(self) -> str:
        if self.stage == "snapshot":
            return f"snapshot: {self.snapshot_sent} of {self.snapshot_bytes} bytes sent"
        done = max(0, self.sent_seq - self.from_seq)
        total = max(done, self.to_seq - self.from_seq)
        return f"{self.stage}: {done} of {total} records sent"


class Recovery:
    def __init__(self, *, node_id: int, local: LocalReplicas, proposer: Proposer, writer: PrimaryWriter,
                 peers: GrpcPeers, run_blocking: RunBlocking) -> None:
        self._node_id = node_id
        self._local = local
        self._proposer = proposer
        self._writer = writer
        self._peers = peers
        self._run = run_blocking
        self._running: dict[tuple[ShardKey, int], asyncio.Task[None]] = {}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.recoveries = 0  # completed, for status and tests
        # Recoveries in progress, by (shard, target node): GET /collections/{c}/cluster shows them.
        self.transfers: dict[tuple[ShardKey, int], TransferProgress] = {}

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="qcluster-recovery")

    def on_state(self, _state: ClusterState) -> None:
        self._wake.set()

    async def close(self) -> None:
        tasks = [task for task in (self._task, *self._running.values()) if task is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=_PERIOD_S)
            self._wake.clear()
            self._start_needed(self._proposer.state())

    def _start_needed(self, state: ClusterState) -> None:
        self._forget_finished(state)
        for name, collection in state.collections.items():
            for shard_id, shard in collection.shards.items():
                if shard.primary != self._node_id:
                    continue
                for replica in shard.replicas:
                    if replica.node_id == self._node_id or replica.state is ReplicaState.ACTIVE:
                        continue
                    node = state.nodes.get(replica.node_id)
                    if node is None or node.liveness is not Liveness.ALIVE:
                        continue
                    task_key = (ShardKey(name, shard_id), replica.node_id)
                    running = self._running.get(task_key)
                    if running is not None and not running.done():
                        continue
                    self._running[task_key] = asyncio.create_task(
                        self._recover(task_key[0], replica.node_id, shard.primary_term),
                        name=f"qcluster-recover-{name}-{shard_id}-{replica.node_id}")

    def _forget_finished(self, state: ClusterState) -> None:
        """Drop the progress of finished recoveries whose target no longer waits:
        a move's target stays listed (stage ``in_sync``) until the controller
        finishes the move, so a fast move still shows how it went."""
        for (key, node_id), progress in list(self.transfers.items()):
            if progress.stage != "in_sync":
                continue
            shard = state.shard(key.collection, key.shard_id)
            replica = None if shard is None else shard.replica(node_id)
            moving_here = shard is not None and shard.move is not None and shard.move.target == node_id
            if replica is None or (replica.state is ReplicaState.ACTIVE and not moving_here):
                del self.transfers[(key, node_id)]

    async def _recover(self, key: ShardKey, node_id: int, term: int) -> None:
        progress = self.transfers[(key, node_id)] = TransferProgress(shard_id=key.shard_id, to_node=node_id)
        synced = False
        try:
            synced = await self._recover_once(key, node_id, term)
        except (QclusterError, LogTruncated) as error:
            _log.warning("recovery failed; retried", extra={"collection": key.collection, "shard_id": key.shard_id,
                                                             "node_id": node_id, "error": str(error)})
            await asyncio.sleep(_RETRY_AFTER_FAILURE_S)
        finally:
            if synced:
                progress.stage = "in_sync"  # kept until the target no longer waits (_forget_finished)
            elif self.transfers.get((key, node_id)) is progress:
                del self.transfers[(key, node_id)]

    def _still_primary(self, key: ShardKey, term: int) -> bool:
        shard = self._proposer.state().shard(key.collection, key.shard_id)
        return shard is not None and shard.primary == self._node_id and shard.primary_term == term

    async def _recover_once(self, key: ShardKey, node_id: int, term: int) -> bool:
        """True once the replica is in sync; False when there was nothing to do."""
        shard_state = self._proposer.state().shard(key.collection, key.shard_id)
        replica = None if shard_state is None else shard_state.replica(node_id)
        if replica is None or not self._still_primary(key, term):
            return False
        _log.info("recovering a replica", extra={"collection": key.collection, "shard_id": key.shard_id,
                                                 "node_id": node_id, "from_state": replica.state.value})
        if replica.state is not ReplicaState.PARTIAL:
            result = await self._proposer.propose(SetReplicaState(
                request_id=new_request_id("recovery-start"), collection=key.collection, shard_id=key.shard_id,
                node_id=node_id, state=ReplicaState.PARTIAL, expected_state=replica.state,
                expected_primary_term=term))
            if not result.is_accepted:
                raise result.to_error()
        local = self._local.lookup(key)
        if local is None:
            raise ShardUnavailable("the primary's local replica is gone")
        await self._catch_up(key, node_id, term, local, stage="wal_delta")
        async with self._writer.barrier(key):
            if not self._still_primary(key, term):
                return False
            local = self._local.lookup(key)
            if local is None:
                raise ShardUnavailable("the primary's local replica is gone")
            await self._catch_up(key, node_id, term, local, stage="final_delta")
            result = await self._proposer.propose(AddToInSync(
                request_id=new_request_id("recovery-done"), collection=key.collection, shard_id=key.shard_id,
                node_id=node_id, expected_primary_term=term))
            if not result.is_accepted:
                raise result.to_error()
        self.recoveries += 1
        _log.info("replica back in sync", extra={"collection": key.collection, "shard_id": key.shard_id,
                                                 "node_id": node_id, "last_seq": local.last_seq})
        return True

    async def _catch_up(self, key: ShardKey, node_id: int, term: int, local: LocalShard, *, stage: str) -> None:
        """Bring the replica to the primary's current last_seq (writes may go on meanwhile)."""
        progress = self.transfers[(key, node_id)]  # registered by _recover for the whole recovery
        status = await self._peers.replica_status(node_id, key)
        if not status.exists:
            raise ShardUnavailable(f"node {node_id} has not created its replica yet")
        after = status.last_seq
        if stage == "wal_delta":
            progress.from_seq = after
        if not await self._run(_history_matches, local, status.last_seq, status.last_term):
            after = await self._send_snapshot(key, node_id, term, local, progress)
        progress.stage, progress.sent_seq, progress.to_seq = stage, after, local.last_seq

        def sent(seq_no: int) -> None:
            progress.sent_seq = seq_no

        try:
            refused = await self._writer.send_log(node_id, key, local, primary_term=term, after_seq=after,
                                                  progress=sent)
        except LogTruncated:
            after = await self._send_snapshot(key, node_id, term, local, progress)
            progress.stage, progress.sent_seq, progress.to_seq = stage, after, local.last_seq
            refused = await self._writer.send_log(node_id, key, local, primary_term=term, after_seq=after,
                                                  progress=sent)
        if refused is not None:
            raise ShardUnavailable(f"node {node_id} refused a record during recovery: "
                                   f"{refused.outcome.value} {refused.message}")

    async def _send_snapshot(self, key: ShardKey, node_id: int, term: int, local: LocalShard,
                             progress: TransferProgress) -> int:
        target = self._local.snapshot_dir(key)
        progress.method, progress.stage, progress.snapshot_sent = "snapshot", "snapshot", 0
        try:
            info = await self._run(create_snapshot, local, target)
            progress.snapshot_bytes = await self._run(_size_of, target)

            def sent(count: int) -> None:
                progress.snapshot_sent = count

            _log.info("sending a snapshot", extra={"collection": key.collection, "shard_id": key.shard_id,
                                                   "node_id": node_id, "seq_no": info.seq_no,
                                                   "files": len(info.files)})
            last_seq, _last_term = await self._peers.install_snapshot(
                node_id, key, primary_term=term, snapshot=target, deadline_s=_SNAPSHOT_DEADLINE_S, progress=sent)
        finally:
            await self._run(shutil.rmtree, target, True)
        return last_seq


def _size_of(directory: Any) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def _history_matches(shard: LocalShard, seq_no: int, term: int) -> bool:
    """Whether a replica whose log ends at (``seq_no``, ``term``) holds a
    prefix of this shard's history that the WAL can extend."""
    with shard.write_mutex:  # the optimizer moves the checkpoint under it
        if seq_no > shard.last_seq or seq_no < shard.checkpoint_seq:
            return False
        return shard.term_at(seq_no) == term

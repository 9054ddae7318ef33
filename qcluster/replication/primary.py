"""The primary's side of a replicated write.

One write at a time per shard (an asyncio lock): the primary checks that the
shard has at least ``write_consistency_factor`` in-sync replicas (else it
refuses, logging nothing), logs and applies the operation, then sends the WAL
record to every in-sync replica in parallel. The write is acknowledged only
when every in-sync replica holds it; a replica that does not is first
removed from the in-sync set through Raft (``Membership.fence``). If the
cluster refuses that (this node is no longer the primary) or cannot decide it
(no quorum), or the set is now below ``write_consistency_factor``, the write
fails: it is never acknowledged on fewer replicas than promised.

A failed write may still be applied on the primary and some replicas (its
outcome is "unknown", as for any request that times out). A replica that
stays in sync without it reports a GAP on the next write and is sent the
missing records from the primary's WAL first, so in-sync replicas never skip
an operation. Every record carries its term and the term of the record
before it; a replica whose history differs (DIVERGED: records from a
deposed primary) is fenced and must be rebuilt from a snapshot.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Final, TypeVar

from qcluster.engine.shard import LocalShard
from qcluster.errors import QclusterError, ShardUnavailable, TooFewInSync
from qcluster.operations import Operation, encode_operation
from qcluster.replication.messages import Membership, Outcome, Peers, ReplicaAck, ReplicaOp, ShardKey, ShardView

__all__ = ["LogTruncated", "PrimaryWriter"]

T = TypeVar("T")
RunBlocking = Callable[..., Awaitable[Any]]

# Records sent per round when a replica reports a gap, and rounds at most.
_CATCH_UP_BATCH: Final = 256
_CATCH_UP_ROUNDS: Final = 64
_SEND_LOG_ROUNDS_MAX: Final = 10_000
_NOT_FOUND_RETRIES: Final = 20
_NOT_FOUND_PAUSE_S: Final = 0.1


class PrimaryWriter:
    def __init__(self, *, node_id: int, membership: Membership, peers: Peers, run_blocking: RunBlocking) -> None:
        """``run_blocking(function, *args)`` runs storage calls off the event loop."""
        self._node_id = node_id
        self._membership = membership
        self._peers = peers
        self._run = run_blocking
        self._locks: dict[ShardKey, asyncio.Lock] = {}

    def barrier(self, key: ShardKey) -> asyncio.Lock:
        """The lock every write of ``key`` holds: a recovery holds it to let
        a replica catch up with no write in flight, then join the in-sync set."""
        return self._locks.setdefault(key, asyncio.Lock())

    async def write(self, key: ShardKey, shard: LocalShard, operation: Operation) -> int:
        """Apply ``operation`` as the primary of ``key``; returns its seq_no once acknowledged."""
        async with self.barrier(key):
            view = self._membership.view(key)
            if view is None:
                raise ShardUnavailable(f"shard {key.shard_id} of {key.collection!r} is not in the cluster state")
            if view.primary != self._node_id:
                raise ShardUnavailable(f"node {self._node_id} is not the primary of shard {key.shard_id} of "
                                       f"{key.collection!r} (node {view.primary} is, term {view.primary_term})")
            _require_enough_in_sync(key, view, what="nothing was written")
            seq_no, record, previous_term = await self._run(
                lambda: shard.apply_logged(operation, term=view.primary_term))
            op = ReplicaOp(shard=key, primary_term=view.primary_term, record=record, previous_term=previous_term)
            targets = sorted(view.in_sync - {self._node_id})
            acks = await asyncio.gather(*(self._deliver(node, shard, op, seq_no) for node in targets),
                                        return_exceptions=True)
            for node, ack in zip(targets, acks, strict=True):
                await self._settle(key, node, ack, seq_no=seq_no, primary_term=view.primary_term)
            after = self._membership.view(key)
            if after is None or (after.primary, after.primary_term) != (view.primary, view.primary_term):
                raise ShardUnavailable(f"shard {key.shard_id} of {key.collection!r} got another primary while "
                                       f"node {self._node_id} wrote seq {seq_no}: it is not acknowledged")
            _require_enough_in_sync(key, after, what=f"seq {seq_no} is not acknowledged")
            return seq_no

    async def _settle(self, key: ShardKey, node: int, ack: ReplicaAck | BaseException, *, seq_no: int,
                      primary_term: int) -> None:
        """Accept a replica's answer, or fence the replica, or fail the write."""
        if isinstance(ack, ReplicaAck) and ack.holds_it:
            return
        if isinstance(ack, BaseException) and not isinstance(ack, QclusterError):
            raise ack  # a bug, or cancellation: never swallowed
        if isinstance(ack, ReplicaAck) and ack.outcome is Outcome.STALE_TERM:
            raise ShardUnavailable(
                f"node {node} knows primary term {ack.known_term} for shard {key.shard_id} of {key.collection!r}, "
                f"newer than this primary's {primary_term}: this node is no longer the primary; "
                f"seq {seq_no} is not acknowledged")
        reason = (ack.message or ack.outcome.value) if isinstance(ack, ReplicaAck) else str(ack)
        if not await self._membership.fence(key, node, primary_term=primary_term):
            raise ShardUnavailable(
                f"the replica on node {node} did not take seq {seq_no} ({reason}) and the cluster refused to "
                f"remove it from the in-sync set (this node is no longer the primary): the write is not "
                f"acknowledged")

    async def _deliver(self, node: int, shard: LocalShard, op: ReplicaOp, seq_no: int) -> ReplicaAck:
        """Send ``op``; if the replica lacks earlier records, send those first."""
        ack = await self._peers.replicate(node, op)
        for _ in range(_NOT_FOUND_RETRIES):
            if ack.outcome is not Outcome.NOT_FOUND:
                break
            # A new shard: that node's reconciler has not created its copy yet (milliseconds).
            await asyncio.sleep(_NOT_FOUND_PAUSE_S)
            ack = await self._peers.replicate(node, op)
        for _ in range(_CATCH_UP_ROUNDS):
            if ack.outcome is not Outcome.GAP:
                return ack
            try:
                refused = await self.send_log(node, op.shard, shard, primary_term=op.primary_term,
                                              after_seq=ack.last_seq, stop_before=seq_no)
            except LogTruncated:
                return ack  # no longer in the log: the replica needs a snapshot; it is fenced
            if refused is not None:
                return refused  # GAP cannot happen here; DIVERGED or a failure: fenced
            ack = await self._peers.replicate(node, op)
        return ack

    async def send_log(self, node: int, key: ShardKey, shard: LocalShard, *, primary_term: int, after_seq: int,
                       stop_before: int | None = None,
                       progress: Callable[[int], None] | None = None) -> ReplicaAck | None:
        """Send ``node`` this primary's logged records after ``after_seq`` (up
        to, not including, ``stop_before``; else to the end of the log), in
        order. None once the replica holds them all; the answer of the first
        record it did not take otherwise. Raises ``LogTruncated`` when the WAL
        no longer holds the records after ``after_seq`` (send a snapshot).
        ``progress(seq_no)`` is called after each record the replica holds."""
        for _ in range(_SEND_LOG_ROUNDS_MAX):
            delta = await self._run(lambda after=after_seq: shard.operations_after(after, limit=_CATCH_UP_BATCH))
            if delta is None:
                raise LogTruncated(f"the log of shard {key.shard_id} of {key.collection!r} no longer holds "
                                   f"seq {after_seq + 1}")
            previous_term, records = delta
            records = [item for item in records if stop_before is None or item.seq_no < stop_before]
            if not records:
                return None
            for item in records:
                op = ReplicaOp(shard=key, primary_term=primary_term, previous_term=previous_term,
                               record=encode_operation(item.operation, seq_no=item.seq_no, term=item.term))
                ack = await self._peers.replicate(node, op)
                if not ack.holds_it:
                    return ack
                previous_term, after_seq = item.term, item.seq_no
                if progress is not None:
                    progress(after_seq)
        raise ShardUnavailable(f"node {node} did not catch up on shard {key.shard_id} of {key.collection!r} "
                               f"after {_SEND_LOG_ROUNDS_MAX} rounds")


def _require_enough_in_sync(key: ShardKey, view: ShardView, *, what: str) -> None:
    if len(view.in_sync) < view.write_consistency_factor:
        raise TooFewInSync(
            f"shard {key.shard_id} of {key.collection!r} has {len(view.in_sync)} in-sync replicas, fewer than its "
            f"write_consistency_factor {view.write_consistency_factor}, until recovery brings one back: {what}")


class LogTruncated(Exception):  # noqa: N818 - a condition the caller handles, not a client error
    """The primary's WAL no longer holds the records a replica needs: it needs a snapshot."""

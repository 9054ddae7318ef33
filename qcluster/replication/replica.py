"""The replica's side: apply a primary's records in sequence, refuse a deposed primary.

A replica remembers the highest primary term it has seen per shard (and
takes the cluster state's term when that is higher). A record from an older
term comes from a primary that has been replaced: it is refused with
STALE_TERM, so that primary learns it must not acknowledge anything.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from qcluster.engine.consistency import ContentDigest
from qcluster.engine.shard import LocalShard
from qcluster.errors import PreconditionFailed, QclusterError, ShardUnavailable
from qcluster.operations import encode_operation
from qcluster.replication.messages import Membership, Outcome, ReplicaAck, ReplicaOp, ShardKey

__all__ = ["ReplicaEndpoint", "ReplicaStatus", "SnapshotInstaller"]

ShardLookup = Callable[[ShardKey], LocalShard | None]


@dataclass(frozen=True, slots=True)
class ReplicaStatus:
    exists: bool
    last_seq: int
    last_term: int
    known_term: int


class SnapshotInstaller(Protocol):
    """Local storage, as snapshot installation needs it."""

    def staging_dir(self, key: ShardKey) -> Path:
        """A fresh empty directory to receive a snapshot of ``key`` into."""
        ...

    def install(self, key: ShardKey, snapshot: Path) -> LocalShard:
        """Replace the local replica of ``key`` with the checked snapshot; the new shard."""
        ...


class ReplicaEndpoint:
    """Blocking calls; the transport runs them in the storage executor."""

    def __init__(self, *, shards: ShardLookup, membership: Membership,
                 installer: SnapshotInstaller | None = None) -> None:
        self._shards = shards
        self._membership = membership
        self._installer = installer
        self._terms: dict[ShardKey, int] = {}
        self._lock = threading.Lock()

    def _observe_term(self, key: ShardKey, term: int) -> int:
        """Record ``term`` if newer; returns the highest term known for ``key`` before it."""
        view = self._membership.view(key)
        with self._lock:
            known = max(self._terms.get(key, 0), view.primary_term if view is not None else 0)
            self._terms[key] = max(known, term)
            return known

    def replicate(self, op: ReplicaOp) -> ReplicaAck:
        shard = self._shards(op.shard)
        if shard is None:
            return ReplicaAck(Outcome.NOT_FOUND, 0, 0, f"no local replica of shard {op.shard.shard_id} "
                                                       f"of {op.shard.collection!r}")
        known = self._observe_term(op.shard, op.primary_term)
        if op.primary_term < known:
            return ReplicaAck(Outcome.STALE_TERM, shard.last_seq, known,
                              f"primary term {op.primary_term} is older than {known}")
        try:
            applied, last_seq, last_term = shard.apply_replicated(op.record, previous_term=op.previous_term)
        except QclusterError as error:
            return ReplicaAck(Outcome.REJECTED, shard.last_seq, op.primary_term, error.message, shard.last_term)
        return ReplicaAck(Outcome(applied.value), last_seq, op.primary_term, last_term=last_term)

    def operations_after(self, key: ShardKey, after_seq: int, limit: int) -> tuple[int, list[bytes]] | None:
        """(term at ``after_seq``, WAL records after it), or None when the log
        no longer holds them (or there is no such local replica)."""
        shard = self._shards(key)
        if shard is None:
            return None
        delta = shard.operations_after(after_seq, limit=limit)
        if delta is None:
            return None
        previous_term, records = delta
        return previous_term, [encode_operation(item.operation, seq_no=item.seq_no, term=item.term)
                               for item in records]

    def digest(self, key: ShardKey) -> tuple[ContentDigest, int] | None:
        shard = self._shards(key)
        if shard is None:
            return None
        return shard.content_digest(), shard.last_seq

    def status(self, key: ShardKey) -> ReplicaStatus:
        shard = self._shards(key)
        known = self._observe_term(key, 0)
        if shard is None:
            return ReplicaStatus(exists=False, last_seq=0, last_term=0, known_term=known)
        return ReplicaStatus(exists=True, last_seq=shard.last_seq, last_term=shard.last_term, known_term=known)

    def check_term(self, key: ShardKey, primary_term: int) -> None:
        """Raise unless ``primary_term`` is at least the newest term known for ``key``."""
        known = self._observe_term(key, primary_term)
        if primary_term < known:
            raise PreconditionFailed(f"primary term {primary_term} is older than {known} for shard "
                                     f"{key.shard_id} of {key.collection!r}")

    def staging_dir(self, key: ShardKey) -> Path:
        if self._installer is None:
            raise ShardUnavailable("this node does not install snapshots")
        return self._installer.staging_dir(key)

    def install_snapshot(self, key: ShardKey, primary_term: int, snapshot: Path) -> tuple[int, int]:
        """Replace the local replica with ``snapshot`` (received from the
        primary of ``primary_term``); returns its (last_seq, last_term)."""
        if self._installer is None:
            raise ShardUnavailable("this node does not install snapshots")
        self.check_term(key, primary_term)
        shard = self._installer.install(key, snapshot)
        return shard.last_seq, shard.last_term

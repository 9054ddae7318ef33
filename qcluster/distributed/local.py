"""This node's replicas, in its table of contents."""

from __future__ import annotations

import uuid
from pathlib import Path

from qcluster.engine.shard import LocalShard
from qcluster.engine.snapshot import restore_snapshot
from qcluster.errors import NotFound, ShardUnavailable
from qcluster.replication.messages import ShardKey
from qcluster.storage.toc import TableOfContents

__all__ = ["LocalReplicas"]


class LocalReplicas:
    """Shard lookup for the internal services, and ``replication.SnapshotInstaller``."""

    def __init__(self, toc: TableOfContents) -> None:
        self._toc = toc

    def lookup(self, key: ShardKey) -> LocalShard | None:
        try:
            collection = self._toc.collection(key.collection)
        except NotFound:
            return None
        shard = collection.local_shard(key.shard_id)
        return None if shard is None or shard.is_closed else shard

    def staging_dir(self, key: ShardKey) -> Path:
        try:
            collection = self._toc.collection(key.collection)
        except NotFound as error:
            raise ShardUnavailable(f"collection {key.collection!r} is not created on this node yet") from error
        path = collection.directory / "incoming" / f"{key.shard_id}-{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        return path

    def install(self, key: ShardKey, snapshot: Path) -> LocalShard:
        collection = self._toc.collection(key.collection)
        return collection.replace_shard(key.shard_id, lambda shard_dir: restore_snapshot(snapshot, shard_dir))

    def snapshot_dir(self, key: ShardKey) -> Path:
        """A fresh path (not created) to cut a snapshot of the local replica into."""
        collection = self._toc.collection(key.collection)
        parent = collection.directory / "outgoing"
        parent.mkdir(exist_ok=True)
        return parent / f"{key.shard_id}-{uuid.uuid4().hex}"

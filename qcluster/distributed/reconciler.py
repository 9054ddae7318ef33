"""Make local storage hold exactly the replicas the cluster state places here.

On every state change (coalesced: the latest state wins) and once a second:
a collection in the state gets a local distributed collection (its config,
no shards yet), and takes the state's config when a PATCH changed it; every replica on this node gets its local shard (created
empty; a recovery fills it); a local shard whose replica is gone is
removed. A local collection absent from the state is deleted only once this
node has registered in the cluster (its state is then at least as new as its
own ``AddNode``), so a node that restarts never deletes data because of a
state it has not caught up with yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
from collections.abc import Awaitable, Callable
from typing import Any, Final

from qcluster.cluster.state import ClusterState, CollectionState, NodeId
from qcluster.errors import QclusterError
from qcluster.storage.config_codec import config_from_json, config_to_json
from qcluster.storage.toc import TableOfContents
from qcluster.types import CollectionConfig

__all__ = ["Reconciler", "decode_config", "encode_config"]

_log = logging.getLogger(__name__)
_PERIOD_S: Final = 1.0

RunBlocking = Callable[..., Awaitable[Any]]


def encode_config(config: CollectionConfig) -> bytes:
    """A collection's config as the cluster state carries it (opaque bytes there)."""
    return json.dumps(config_to_json(config), sort_keys=True).encode()


def decode_config(collection: CollectionState) -> CollectionConfig:
    return config_from_json(json.loads(collection.config))


class Reconciler:
    def __init__(self, *, node_id: NodeId, toc: TableOfContents, state: Callable[[], ClusterState],
                 run_blocking: RunBlocking) -> None:
        self._node_id = node_id
        self._toc = toc
        self._state = state
        self._run = run_blocking
        self._wake = asyncio.Event()
        self._applied_version = -1
        self._version_changed = asyncio.Condition()
        self.may_delete = False  # set once the node has registered
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._clean_leftovers()
        self._task = asyncio.create_task(self._loop(), name="qcluster-reconciler")

    def _clean_leftovers(self) -> None:
        for name in self._toc.collection_names():
            directory = self._toc.collection(name).directory
            for leftover in ("incoming", "outgoing"):
                shutil.rmtree(directory / leftover, ignore_errors=True)

    def on_state(self, _state: ClusterState) -> None:
        self._wake.set()

    async def _loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=_PERIOD_S)
            self._wake.clear()
            state = self._state()
            try:
                await self._run(self._apply, state)
            except QclusterError as error:
                _log.error("reconcile failed", extra={"error": error.message})
                continue
            async with self._version_changed:
                self._applied_version = state.version
                self._version_changed.notify_all()

    async def wait_for(self, version: int, *, timeout_s: float) -> None:
        """Until local storage reflects the state at ``version`` (or later)."""
        self._wake.set()
        async with self._version_changed:
            await asyncio.wait_for(self._version_changed.wait_for(lambda: self._applied_version >= version),
                                   timeout=timeout_s)

    def _apply(self, state: ClusterState) -> None:
        for name, collection in state.collections.items():
            mine = {shard_id for shard_id, shard in collection.shards.items()
                    if shard.replica(self._node_id) is not None}
            if not self._toc.exists(name):
                self._toc.create_collection(name, decode_config(collection), distributed=True)
                _log.info("collection created locally", extra={"collection": name, "shards": sorted(mine)})
            local = self._toc.collection(name)
            if encode_config(local.config) != collection.config:
                self._toc.replace_config(name, decode_config(collection))
                _log.info("collection config updated locally", extra={"collection": name})
            for shard_id in sorted(mine - local.shards.keys()):
                local.add_shard(shard_id)
                _log.info("local replica created", extra={"collection": name, "shard_id": shard_id})
            for shard_id in sorted(local.shards.keys() - mine):
                local.remove_shard(shard_id)
                _log.info("local replica removed", extra={"collection": name, "shard_id": shard_id})
        if self.may_delete:
            for name in self._toc.collection_names():
                if name not in state.collections and self._toc.collection(name).distributed:
                    self._toc.delete_collection(name)
                    _log.info("collection deleted locally", extra={"collection": name})

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task



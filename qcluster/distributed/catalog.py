"""What the API layer calls in cluster mode: the table of contents and
collection interfaces of ``qcluster.storage``, answered by the router.

API actions run synchronously in the node's API executor; these facades hand
each call to the router on the event loop and wait for it (bounded). The
router runs local storage work in its own executor, so an API thread that
waits here never holds a thread the answer needs.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

import numpy as np

from qcluster.distributed.router import Router, run_cluster_operation
from qcluster.errors import DeadlineExceeded, NotFound
from qcluster.operations import Operation
from qcluster.storage.collection import prepare_operation
from qcluster.storage.interface import AliasAction, CollectionInfo, UpdateResult, UpdateStatus
from qcluster.storage.toc import TableOfContents, validate_name
from qcluster.types import (
    CollectionConfig,
    CollectionPatch,
    OrderBy,
    PayloadSelector,
    PointId,
    QueryRequest,
    ReadConsistency,
    Record,
    ScoredColumns,
    ScoredPoint,
)

__all__ = ["DistributedCatalog", "DistributedCollection"]

T = TypeVar("T")
ShardKeys = tuple[int | str, ...] | None
_EPOCH: Final = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


class DistributedCatalog:
    """``TableOfContents`` in cluster mode: collections and aliases come from
    the cluster state; changes to them go through Raft."""

    def __init__(self, *, router: Router, toc: TableOfContents, loop: asyncio.AbstractEventLoop,
                 call_timeout_s: float) -> None:
        self.router = router
        self.local = toc
        self._loop = loop
        self._timeout_s = call_timeout_s

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        future = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        try:
            return future.result(timeout=self._timeout_s)
        except TimeoutError as error:
            future.cancel()
            raise DeadlineExceeded(f"the cluster did not answer within {self._timeout_s} s") from error

    def is_ready(self) -> bool:
        return self.local.is_ready()

    def close(self) -> None:
        self.local.close()

    def create_collection(self, name: str, config: CollectionConfig) -> None:
        validate_name(name, path="collection_name")
        self.call(self.router.create_collection(name, config))

    def delete_collection(self, name: str) -> bool:
        return self.call(self.router.delete_collection(name))

    def resolve(self, name_or_alias: str) -> str:
        """The collection an alias names (cluster-wide), or the name itself."""
        return self.router.state().aliases.get(name_or_alias, name_or_alias)

    def collection(self, name_or_alias: str) -> DistributedCollection:
        name = self.resolve(name_or_alias)
        self.router.collection_state(name)  # NotFound
        return DistributedCollection(self, name)

    def collection_names(self) -> list[str]:
        return sorted(self.router.state().collections)

    def exists(self, name: str) -> bool:
        state = self.router.state()
        return name in state.collections or name in state.aliases

    def update_collection(self, name: str, patch: CollectionPatch) -> None:
        self.call(self.router.update_collection(name, patch))

    def update_aliases(self, actions: list[AliasAction]) -> None:
        self.call(self.router.update_aliases(actions))

    def aliases(self, collection_name: str | None = None) -> list[tuple[str, str]]:
        state = self.router.state()
        if collection_name is not None:
            self.router.collection_state(collection_name)  # NotFound
        return sorted((alias, target) for alias, target in state.aliases.items()
                      if collection_name in (None, target))


class DistributedCollection:
    """``storage.Collection`` in cluster mode, for one request."""

    def __init__(self, catalog: DistributedCatalog, name: str, consistency: ReadConsistency | None = None,
                 shard_keys: ShardKeys = None) -> None:
        self._catalog = catalog
        self._router = catalog.router
        self.name = name
        self.config = self._router.config(name)
        self._consistency = consistency
        self._shard_keys = shard_keys

    def reading(self, consistency: ReadConsistency | None, *,
                shard_keys: ShardKeys = None) -> DistributedCollection:
        """This collection, read under ``consistency`` (Qdrant's read
        consistency) from the shards of ``shard_keys`` (custom sharding)."""
        consistency = consistency or self._consistency
        if consistency == self._consistency and shard_keys == self._shard_keys:
            return self
        return DistributedCollection(self._catalog, self.name, consistency, shard_keys)

    @property
    def created_at(self) -> datetime.datetime:
        """When this node created its local part (read only by collection info)."""
        try:
            return self._catalog.local.collection(self.name).created_at
        except NotFound:
            return _EPOCH

    def update(self, operation: Operation, *, wait: bool, shard_keys: ShardKeys = None) -> UpdateResult:
        # Validated for every shard before any shard writes (a shard's own checks see only its points).
        operation = prepare_operation(operation, config=self.config, retrieve=self.retrieve)
        seq_no = self._catalog.call(self._router.write(self.name, operation, shard_keys=shard_keys))
        return UpdateResult(operation_id=seq_no,
                            status=UpdateStatus.COMPLETED if wait else UpdateStatus.ACKNOWLEDGED)

    def query(self, request: QueryRequest) -> list[ScoredPoint]:
        return self.query_batch([request])[0]

    def query_batch(self, requests: list[QueryRequest]) -> list[list[ScoredPoint]]:
        for request in requests:
            self.config.vector_params(request.using, path="using")
        return self._catalog.call(self._router.search(self.name, requests, consistency=self._consistency,
                                                      shard_keys=self._shard_keys))

    def query_matrix(self, request: QueryRequest, queries: np.ndarray) -> ScoredColumns:
        return ScoredColumns.by_points(self.query_batch, request, queries)

    def retrieve(self, ids: list[PointId], *, with_payload: PayloadSelector,
                 with_vector: bool | tuple[str, ...]) -> list[Record]:
        return self._catalog.call(self._router.retrieve(self.name, ids, with_payload=with_payload,
                                                        with_vector=with_vector, consistency=self._consistency,
                                                      shard_keys=self._shard_keys))

    def scroll(self, *, filter: dict[str, Any] | None, limit: int, offset: PointId | None,
               order_by: OrderBy | None, with_payload: PayloadSelector,
               with_vector: bool | tuple[str, ...]) -> tuple[list[Record], PointId | None]:
        return self._catalog.call(self._router.scroll(self.name, filter=filter, limit=limit, offset=offset,
                                                      order_by=order_by, with_payload=with_payload,
                                                      with_vector=with_vector, consistency=self._consistency,
                                                      shard_keys=self._shard_keys))

    def count(self, *, filter: dict[str, Any] | None, exact: bool) -> int:
        return self._catalog.call(self._router.count(self.name, filter=filter, consistency=self._consistency,
                                                      shard_keys=self._shard_keys))

    def info(self) -> CollectionInfo:
        """This node's view: points across the cluster, index and segment
        figures of the local replicas."""
        local = self._catalog.local.collection(self.name).info()
        return dataclasses.replace(local, points_count=self.count(filter=None, exact=True))

    def create_shard_key(self, key: int | str) -> None:
        self._catalog.call(self._router.create_shard_key(self.name, key))

    def delete_shard_key(self, key: int | str) -> None:
        self._catalog.call(self._router.delete_shard_key(self.name, key))

    def cluster_operation(self, operation: str, raw: dict[str, Any]) -> None:
        self._catalog.call(run_cluster_operation(self._router, self.name, operation, raw))

    def cluster_info(self, *, digest: bool = False) -> dict[str, Any]:
        return self._catalog.call(self._router.cluster_info(self.name, digest=digest))

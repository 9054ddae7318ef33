"""Per-node state that the API handlers (REST and gRPC) share."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, final

from qcluster.errors import Unavailable

if TYPE_CHECKING:
    from qcluster.storage.toc import TableOfContents

__all__ = ["NodeState"]


@final
class NodeState:
    """What the API handlers need from the node. ``toc`` is None while starting."""

    def __init__(
        self,
        *,
        executor: concurrent.futures.ThreadPoolExecutor,
        commit: str,
        body_bytes_max: int,
        api_key: str | None,
    ) -> None:
        assert len(commit) == 40, commit
        assert body_bytes_max > 0
        self.executor = executor
        self.commit = commit
        self.body_bytes_max = body_bytes_max
        self.api_key = api_key
        self.toc: TableOfContents | None = None
        # Set while ``toc`` is loaded but must not answer yet (cluster mode: the
        # node has not caught up with the cluster's catalog): requests get a
        # 503 with this text rather than answers from a view that may lag.
        self.unready_reason: str | None = None
        # Cluster mode: Qdrant's GET /cluster body, from the node's Raft member.
        self.cluster_status: Callable[[], dict[str, Any]] | None = None

    def ready_toc(self) -> TableOfContents:
        toc = self.toc
        if toc is None:
            raise Unavailable("the node is starting: storage is not loaded yet")
        if self.unready_reason is not None:
            raise Unavailable(self.unready_reason)
        return toc

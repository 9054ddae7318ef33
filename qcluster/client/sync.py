"""``Client``: the blocking SDK."""

from __future__ import annotations

import concurrent.futures
import time
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any

import grpc
import httpx
import numpy as np
from qdrant_client import QdrantClient, models
from qdrant_client.http.exceptions import UnexpectedResponse

from qcluster.client._dense import (
    QueryResult,
    UploadResult,
    Vectors,
    backoff_s,
    channel_options,
    is_retryable,
    query_requests,
    query_result,
    shard_operation,
    upload_plan,
)
from qcluster.client.errors import error_from_rpc, raises_qcluster_errors
from qcluster.errors import InvalidRequest, QclusterError
from qcluster.proto.v1 import dense_pb2_grpc

__all__ = ["Client", "grpc_target"]

DEFAULT_URL = "http://localhost:6333"
DEFAULT_GRPC_PORT = 6334


def grpc_target(url: str, grpc_port: int) -> tuple[str, bool]:
    """``host:grpc_port`` of the node at ``url`` and whether it uses TLS."""
    parsed = urllib.parse.urlsplit(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise InvalidRequest(f"url: expected http(s)://host[:port], got {url!r}")
    host = f"[{parsed.hostname}]" if ":" in parsed.hostname else parsed.hostname
    return f"{host}:{grpc_port}", parsed.scheme == "https"


def _progress_bar(total: int, initial: int, enabled: bool, label: str) -> Any:
    from tqdm import tqdm  # noqa: PLC0415 - only when an upload runs

    return tqdm(total=total, initial=initial, unit="pt", unit_scale=True, disable=not enabled, desc=label,
                smoothing=0.1)


class Client:
    """A qcluster node, from numpy.

    ``upload`` and ``query`` use qcluster's dense gRPC extension (vectors as
    raw float32, no per-float encoding). Everything else goes through
    ``client.qdrant``, an ordinary ``qdrant_client.QdrantClient`` on the same
    node. Thread-safe; ``close()`` (or ``with``) releases the connections.
    """

    def __init__(self, url: str = DEFAULT_URL, *, grpc_port: int = DEFAULT_GRPC_PORT, api_key: str | None = None,
                 timeout: float = 60.0, prefer_grpc: bool = False) -> None:
        target, secure = grpc_target(url, grpc_port)
        self.url = url
        self.timeout = timeout
        self.qdrant = QdrantClient(url=url, grpc_port=grpc_port, prefer_grpc=prefer_grpc, api_key=api_key,
                                   timeout=max(1, round(timeout)), check_compatibility=False)
        if secure:
            self._channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(), options=channel_options())
        else:
            self._channel = grpc.insecure_channel(target, options=channel_options())
        self._dense = dense_pb2_grpc.DensePointsStub(self._channel)
        self._metadata = (("api-key", api_key),) if api_key else ()
        self._http_headers = {"api-key": api_key} if api_key else {}

    def close(self) -> None:
        self._channel.close()
        self.qdrant.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ bulk paths

    def _call(self, method: Callable[..., Any], request: Any, *, max_retries: int) -> tuple[Any, int]:
        """``method(request)`` with retries of retryable failures; returns (reply, retries used)."""
        for attempt in range(max_retries + 1):
            try:
                return method(request, timeout=self.timeout, metadata=self._metadata), attempt
            except grpc.RpcError as error:
                if not is_retryable(error) or attempt == max_retries:
                    raise error_from_rpc(error) from error
                time.sleep(backoff_s(attempt + 1))
        raise AssertionError("the loop returns or raises")

    def upload(self, collection: str, vectors: Vectors, *, ids: Sequence[Any] | np.ndarray | None = None,
               payloads: Sequence[Any] | None = None, batch_size: int = 1_000, parallel: int = 2,
               wait: bool = True, max_retries: int = 5, progress: bool = False, start: int = 0,
               on_checkpoint: Callable[[int], None] | None = None) -> UploadResult:
        """Write ``vectors`` (one matrix, or ``{name: matrix}``) with ``ids``
        (default: the row numbers) and ``payloads`` in batches.

        At most ``parallel`` batches are in flight (backpressure: the next
        batch is built only when one is acknowledged). A batch that fails
        with a retryable status (UNAVAILABLE, RESOURCE_EXHAUSTED other than
        a message over the size bound, DEADLINE_EXCEEDED, ABORTED) is sent again up to ``max_retries`` times with
        exponential backoff; upserts are idempotent, so a retry cannot
        duplicate. ``on_checkpoint(next_row)`` is called whenever every row
        before ``next_row`` is acknowledged; pass that as ``start`` to resume.
        Any other error stops the upload and is raised with a note saying
        where to resume.
        """
        plan = upload_plan(collection, vectors, ids=ids, payloads=payloads, batch_size=batch_size, wait=wait)
        if not 0 <= start <= plan.rows:
            raise InvalidRequest(f"start: must be between 0 and {plan.rows}")
        if parallel < 1:
            raise InvalidRequest("parallel: must be at least 1")
        started = time.perf_counter()
        batches = iter(plan.batches(start))
        finished: dict[int, int] = {}  # begin -> end of acknowledged batches past next_row
        next_row, retries, sent = start, 0, 0
        bar = _progress_bar(plan.rows, start, progress, f"upload {collection}")

        def send(begin: int, end: int) -> int:
            _reply, used = self._call(self._dense.Upsert, plan.request(begin, end), max_retries=max_retries)
            return used

        try:
            with concurrent.futures.ThreadPoolExecutor(parallel, thread_name_prefix="qcluster-upload") as pool:
                pending: dict[concurrent.futures.Future[int], tuple[int, int]] = {}
                for bounds in batches:
                    pending[pool.submit(send, *bounds)] = bounds
                    if len(pending) >= parallel:
                        break
                while pending:
                    done, _ = concurrent.futures.wait(pending, return_when=concurrent.futures.FIRST_COMPLETED)
                    for future in done:
                        begin, end = pending.pop(future)
                        try:
                            retries += future.result()
                        except QclusterError as error:
                            for other in pending:
                                other.cancel()
                            error.add_note(f"upload of {collection!r} stopped at rows [{begin}, {end}); every row "
                                           f"before {next_row} is written: resume with start={next_row}")
                            raise
                        sent += 1
                        finished[begin] = end
                        while next_row in finished:
                            next_row = finished.pop(next_row)
                        if on_checkpoint is not None:
                            on_checkpoint(next_row)
                        bar.update(end - begin)
                        following = next(batches, None)
                        if following is not None:
                            pending[pool.submit(send, *following)] = following
        finally:
            bar.close()
        assert next_row == plan.rows, (next_row, plan.rows)
        return UploadResult(points=plan.rows - start, batches=sent, retries=retries,
                            seconds=time.perf_counter() - started)

    def query(self, collection: str, vectors: np.ndarray, *, limit: int = 10, offset: int = 0,
              using: str | None = None, filter: models.Filter | dict[str, Any] | None = None,
              with_payload: bool = False, hnsw_ef: int | None = None, exact: bool = False,
              score_threshold: float | None = None, batch_size: int = 256) -> QueryResult:
        """Nearest neighbours of one vector (1-d) or of every row (2-d), as
        numpy arrays (see ``QueryResult``); rows go ``batch_size`` per call."""
        requests = query_requests(collection, vectors, limit=limit, offset=offset, using=using, filter=filter,
                                  with_payload=with_payload, hnsw_ef=hnsw_ef, exact=exact,
                                  score_threshold=score_threshold, batch_size=batch_size)
        replies = [self._call(self._dense.Query, request, max_retries=2)[0] for request in requests]
        return query_result(replies, limit=limit, single=np.ndim(vectors) == 1)

    # ------------------------------------------------------- administration

    @raises_qcluster_errors
    def count(self, collection: str, *, exact: bool = True) -> int:
        return self.qdrant.count(collection, exact=exact).count

    @raises_qcluster_errors
    def cluster_status(self) -> dict[str, Any]:
        """``GET /cluster`` as JSON: ``{"status": "disabled"}`` on a single node;
        in cluster mode Qdrant's fields (``peer_id``, ``peers``, ``raft_info``)
        plus ``qcluster`` (members' addresses and liveness, which qdrant-client's
        model would drop)."""
        response = httpx.get(f"{self.url.rstrip('/')}/cluster", headers=self._http_headers, timeout=self.timeout)
        if response.status_code != 200:
            raise UnexpectedResponse.for_response(response)
        return response.json()["result"]  # type: ignore[no-any-return]

    @raises_qcluster_errors
    def shard_placement(self, collection: str) -> Any:
        """``GET /collections/{collection}/cluster``: local and remote shards, their states, transfers."""
        return self.qdrant.collection_cluster_info(collection)

    @raises_qcluster_errors
    def move_shard(self, collection: str, shard_id: int, *, from_peer_id: int, to_peer_id: int) -> bool:
        return self.qdrant.cluster_collection_update(collection, shard_operation(
            "move_shard", shard_id=shard_id, from_peer_id=from_peer_id, to_peer_id=to_peer_id))

    @raises_qcluster_errors
    def replicate_shard(self, collection: str, shard_id: int, *, from_peer_id: int, to_peer_id: int) -> bool:
        return self.qdrant.cluster_collection_update(collection, shard_operation(
            "replicate_shard", shard_id=shard_id, from_peer_id=from_peer_id, to_peer_id=to_peer_id))

    @raises_qcluster_errors
    def drop_replica(self, collection: str, shard_id: int, *, peer_id: int) -> bool:
        return self.qdrant.cluster_collection_update(collection, shard_operation(
            "drop_replica", shard_id=shard_id, peer_id=peer_id))

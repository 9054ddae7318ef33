"""Coalesce concurrent requests into batches for the storage thread pool.

Single-vector queries arriving together are answered by one executor job and
one FAISS batch search instead of one each: the executor hand-off, the
per-call Python overhead and FAISS's per-call cost are paid once per batch.
A request that finds no batch running starts one at once (alone, if nobody
else is waiting); requests that arrive while a batch runs queue up and go
together in the next one. So an idle node answers with single-request
latency and a loaded one batches by itself ("batch the work and run at your
own pace").

One batch runs at a time, normally. FAISS spreads a batch over every core
(OpenMP) with the GIL released, so a second batch beside it adds no cores:
it only splits the queue into smaller batches and adds a third Python thread
contending for the GIL. Measured on pypi-minilm-100k with 8 REST clients (2
cores): two batches in flight averaged 2.1 queries a batch, took 1.6 ms
each, and answered ~1 650 QPS; one at a time averaged 3.9 queries, 1.2 ms,
and ~2 250 QPS. But one slow batch (a large filtered scan, say) must not hold
every other query behind it: when the running batch has taken longer than
``overlap_after_s``, the next one starts beside it, up to ``parallel_max``.

There are no background tasks and no polling. A request appends itself to
the queue, starts a batch if it may, and sleeps on its own future. A batch is
one executor job that runs ``run_batch`` and hands its outcomes back to the
loop with one ``call_soon_threadsafe``; there the results are delivered and
the next batch starts from whatever queued up meanwhile. So a request is
woken exactly once, by its own result. (The job is submitted with
``executor.submit``, not ``loop.run_in_executor``: the asyncio future that
would wrap the executor's future, and the chaining between the two, cost a
few percent of the event loop's time per request under load.) The only timer
is the one that lets a second batch overlap a slow first one.

Cancel safety: cancelling a waiting request drops only its wait; a queued
request is skipped when its batch is formed, a running batch still delivers
the other results, and a cancelled request's own result is discarded.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Generic, TypeVar, final

from qcluster.errors import Unavailable

__all__ = ["QUERY_BATCHES_PARALLEL", "QUERY_BATCH_MAX", "QUERY_OVERLAP_AFTER_S", "Batcher"]

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(slots=True)
class _Pending(Generic[Item, Result]):
    item: Item
    done: asyncio.Future[Result]


# Defaults of the query batchers (REST /points/query, gRPC Points/Query, dense single rows).
QUERY_BATCH_MAX: Final = 64
QUERY_BATCHES_PARALLEL: Final = 2
QUERY_OVERLAP_AFTER_S: Final = 0.005


@final
class Batcher(Generic[Item, Result]):
    """Runs ``run_batch(items) -> results-or-exceptions`` in ``executor``, one
    batch of at most ``batch_max`` items at a time, or up to ``parallel_max``
    at once while the oldest running batch has run longer than ``overlap_after_s``."""

    def __init__(
        self,
        *,
        executor: concurrent.futures.Executor,
        run_batch: Callable[[list[Item]], list[Result | BaseException]],
        batch_max: int = QUERY_BATCH_MAX,
        parallel_max: int = QUERY_BATCHES_PARALLEL,
        overlap_after_s: float = QUERY_OVERLAP_AFTER_S,
    ) -> None:
        assert batch_max > 0
        assert parallel_max > 0
        assert overlap_after_s >= 0
        self._executor = executor
        self._run_batch = run_batch
        self._batch_max = batch_max
        self._parallel_max = parallel_max
        self._overlap_after_s = overlap_after_s
        self._queue: collections.deque[_Pending[Item, Result]] = collections.deque()
        self._running = 0
        self._started: dict[int, float] = {}  # running batch -> when it started (loop time)
        self._next_batch = 0
        self._overlap_timer: asyncio.TimerHandle | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Result] = loop.create_future()
        self._queue.append(_Pending(item, done))
        self._start_batches(loop)
        try:
            return await done
        except asyncio.CancelledError:
            done.cancel()  # a queued item is skipped; a running one's result is dropped
            raise

    def _start_batches(self, loop: asyncio.AbstractEventLoop) -> None:
        """Start what may start now; if the queue must wait for a batch to
        become slow, arm the timer that looks again then."""
        while self._queue and self._running < self._parallel_max:
            if self._running:
                overlap_at = min(self._started.values()) + self._overlap_after_s
                if loop.time() < overlap_at:
                    if self._overlap_timer is None:
                        self._overlap_timer = loop.call_at(overlap_at, self._on_overlap_timer, loop)
                    return
            self._start_batch(loop)

    def _on_overlap_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        self._overlap_timer = None
        self._start_batches(loop)

    def _start_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = []
        while self._queue and len(batch) < self._batch_max:
            pending = self._queue.popleft()
            if not pending.done.done():
                batch.append(pending)
        if not batch:
            return
        items = [pending.item for pending in batch]
        batch_id = self._next_batch
        self._next_batch += 1

        def job() -> None:  # in the executor
            try:
                outcomes: list[Result | BaseException] | BaseException = self._run_batch(items)
            except BaseException as error:  # noqa: BLE001 - delivered to every item of the batch
                outcomes = error
            _call_soon(loop, self._deliver, batch_id, batch, outcomes)

        try:
            future = self._executor.submit(job)
        except RuntimeError as error:  # the executor is shut down: the node is stopping
            for pending in batch:
                pending.done.set_exception(error)
            return
        self._running += 1
        self._started[batch_id] = loop.time()
        # A job cancelled before it ran (executor shut down with cancel_futures)
        # never calls back: its requests are failed here instead of hanging.
        future.add_done_callback(
            lambda finished: _call_soon(loop, self._deliver, batch_id, batch, Unavailable("the node is stopping"))
            if finished.cancelled() else None)

    def _deliver(self, batch_id: int, batch: list[_Pending[Item, Result]],
                 outcomes: list[Result | BaseException] | BaseException) -> None:
        self._running -= 1
        del self._started[batch_id]
        assert self._running == len(self._started) >= 0
        if isinstance(outcomes, BaseException):
            outcomes = [outcomes] * len(batch)
        assert len(outcomes) == len(batch)
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.done.done():
                continue  # its request was cancelled
            if isinstance(outcome, BaseException):
                pending.done.set_exception(outcome)
            else:
                pending.done.set_result(outcome)
        # Whatever queued up while this batch ran goes next.
        self._start_batches(asyncio.get_running_loop())


def _call_soon(loop: asyncio.AbstractEventLoop, callback: Callable[..., None], *args: object) -> None:
    """``loop.call_soon_threadsafe`` from a worker thread; a closed loop (the
    node stopped while a batch ran) has nobody left to answer."""
    try:
        loop.call_soon_threadsafe(callback, *args)
    except RuntimeError:
        pass

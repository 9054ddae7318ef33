"""Coalesce concurrent requests into batches for the storage thread pool.

Single-vector queries arriving together are answered by one executor job and
one FAISS batch search instead of one each: the executor hand-off, the
per-call Python overhead and FAISS's per-call cost are paid once per batch.
Nothing waits on a timer: a request that finds a free slot starts a batch at
once (alone, if nobody else is waiting); requests that arrive while
``parallel_max`` batches are running queue up and go together in the next
one. So an idle node answers with single-request latency and a loaded one
batches by itself ("batch the work and run at your own pace").

There are no background tasks and no polling. A request appends itself to
the queue, starts a batch if a slot is free, and sleeps on its own future. A
batch is an executor future whose done callback delivers every result and,
since its slot is now free, starts the next batch from whatever queued up
meanwhile. So a request is woken exactly once, by its own result.

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
from typing import Generic, TypeVar, final

__all__ = ["Batcher"]

Item = TypeVar("Item")
Result = TypeVar("Result")


@dataclass(slots=True)
class _Pending(Generic[Item, Result]):
    item: Item
    done: asyncio.Future[Result]


@final
class Batcher(Generic[Item, Result]):
    """Runs ``run_batch(items) -> results-or-exceptions`` in ``executor``, at most
    ``parallel_max`` batches at once, each of at most ``batch_max`` items."""

    def __init__(
        self,
        *,
        executor: concurrent.futures.Executor,
        run_batch: Callable[[list[Item]], list[Result | BaseException]],
        batch_max: int,
        parallel_max: int,
    ) -> None:
        assert batch_max > 0
        assert parallel_max > 0
        self._executor = executor
        self._run_batch = run_batch
        self._batch_max = batch_max
        self._parallel_max = parallel_max
        self._queue: collections.deque[_Pending[Item, Result]] = collections.deque()
        self._running = 0

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Result] = loop.create_future()
        self._queue.append(_Pending(item, done))
        if self._running < self._parallel_max:
            self._start_batch(loop)
        try:
            return await done
        except asyncio.CancelledError:
            done.cancel()  # a queued item is skipped; a running one's result is dropped
            raise

    def _start_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = []
        while self._queue and len(batch) < self._batch_max:
            pending = self._queue.popleft()
            if not pending.done.done():
                batch.append(pending)
        if not batch:
            return
        try:
            future = loop.run_in_executor(self._executor, self._run_batch, [pending.item for pending in batch])
        except RuntimeError as error:  # the executor is shut down: the node is stopping
            for pending in batch:
                pending.done.set_exception(error)
            return
        self._running += 1
        future.add_done_callback(lambda finished: self._deliver(loop, batch, finished))

    def _deliver(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending[Item, Result]],
                 finished: asyncio.Future[list[Result | BaseException]]) -> None:
        self._running -= 1
        assert self._running >= 0
        if finished.cancelled():
            outcomes: list[Result | BaseException] = [asyncio.CancelledError()] * len(batch)
        elif finished.exception() is not None:
            outcomes = [finished.exception()] * len(batch)  # type: ignore[list-item]
        else:
            outcomes = finished.result()
        assert len(outcomes) == len(batch)
        for pending, outcome in zip(batch, outcomes, strict=True):
            if pending.done.done():
                continue  # its request was cancelled
            if isinstance(outcome, BaseException):
                pending.done.set_exception(outcome)
            else:
                pending.done.set_result(outcome)
        # The slot is free: whatever queued up while this batch ran goes next.
        while self._queue and self._running < self._parallel_max:
            self._start_batch(loop)

"""Coalesce concurrent requests into batches for the storage thread pool.

Single-vector queries arriving together are answered by one executor job and
one FAISS batch search instead of one each: the executor hand-off, the
per-call Python overhead and FAISS's per-call cost are paid once per batch.
Nothing waits on a timer: a request that finds a free slot starts a batch at
once (alone, if nobody else is waiting); requests that arrive while
``parallel_max`` batches are running queue up and go together in the next
one. So an idle node answers with single-request latency and a loaded one
batches by itself ("batch the work and run at your own pace").

There are no background tasks. A batch is an executor future whose done
callback delivers every result; waiting requests sleep on their own future
or on the "a slot is free" signal, whichever comes first.

Cancel safety: cancelling a waiting request drops only its wait; a running
batch still delivers the other results, and a cancelled request's own result
is discarded.
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
        self._slot_freed: asyncio.Future[None] | None = None

    async def submit(self, item: Item) -> Result:
        loop = asyncio.get_running_loop()
        pending: _Pending[Item, Result] = _Pending(item, loop.create_future())
        self._queue.append(pending)
        try:
            while not pending.done.done():  # ends: every batch delivers, and a free slot always starts one
                if self._running < self._parallel_max and self._queue:
                    self._start_batch(loop)
                    continue
                if self._slot_freed is None or self._slot_freed.done():
                    self._slot_freed = loop.create_future()
                await asyncio.wait((pending.done, self._slot_freed), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pending.done.cancel()  # a queued item is skipped; a running one's result is dropped
            raise
        return pending.done.result()

    def _start_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        batch = []
        while self._queue and len(batch) < self._batch_max:
            pending = self._queue.popleft()
            if not pending.done.cancelled():
                batch.append(pending)
        if not batch:
            return
        self._running += 1
        future = loop.run_in_executor(self._executor, self._run_batch, [pending.item for pending in batch])
        future.add_done_callback(lambda finished: self._deliver(batch, finished))

    def _deliver(self, batch: list[_Pending[Item, Result]], finished: asyncio.Future[list[Result | BaseException]]) -> None:
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
        if self._slot_freed is not None and not self._slot_freed.done():
            self._slot_freed.set_result(None)

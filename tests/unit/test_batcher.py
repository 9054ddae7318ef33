"""The query Batcher: coalesces under load, isolates errors, survives cancellation."""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading

import pytest

from qcluster.api.batcher import Batcher


def _run(coroutine):  # type: ignore[no-untyped-def]
    return asyncio.run(coroutine)


def test_lone_request_runs_at_once_and_load_coalesces() -> None:
    release = threading.Event()
    seen: list[list[int]] = []

    def run_batch(items: list[int]) -> list[int | BaseException]:
        seen.append(list(items))
        if len(seen) == 1:
            release.wait(5)  # hold the first batch so the others queue up behind it
        return [item * 10 for item in items]

    async def scenario() -> list[int]:
        with concurrent.futures.ThreadPoolExecutor(2) as executor:
            batcher = Batcher(executor=executor, run_batch=run_batch, batch_max=8, parallel_max=1)
            first = asyncio.ensure_future(batcher.submit(0))
            await asyncio.sleep(0.05)
            rest = [asyncio.ensure_future(batcher.submit(n)) for n in range(1, 6)]
            await asyncio.sleep(0.05)
            release.set()
            return await asyncio.gather(first, *rest)

    assert _run(scenario()) == [0, 10, 20, 30, 40, 50]
    assert seen == [[0], [1, 2, 3, 4, 5]], "one lone batch, then the queued five together"


def test_errors_stay_with_their_item() -> None:
    def run_batch(items: list[int]) -> list[int | BaseException]:
        return [ValueError(f"bad {item}") if item % 2 else item for item in items]

    async def scenario() -> list[object]:
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            batcher = Batcher(executor=executor, run_batch=run_batch, batch_max=8, parallel_max=1)
            return await asyncio.gather(*(batcher.submit(n) for n in range(4)), return_exceptions=True)

    outcomes = _run(scenario())
    assert outcomes[0] == 0 and outcomes[2] == 2
    assert isinstance(outcomes[1], ValueError) and isinstance(outcomes[3], ValueError)


def test_a_failing_batch_fails_its_items_only() -> None:
    def run_batch(items: list[int]) -> list[int | BaseException]:
        if 99 in items:
            raise RuntimeError("storage broke")
        return items

    async def scenario() -> tuple[object, object]:
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            batcher = Batcher(executor=executor, run_batch=run_batch, batch_max=1, parallel_max=1)
            bad, good = await asyncio.gather(batcher.submit(99), batcher.submit(1), return_exceptions=True)
            return bad, good

    bad, good = _run(scenario())
    assert isinstance(bad, RuntimeError)
    assert good == 1


def test_cancelling_the_running_batch_owner_still_answers_the_others() -> None:
    release = threading.Event()

    def run_batch(items: list[int]) -> list[int | BaseException]:
        release.wait(5)
        return items

    async def scenario() -> list[int]:
        with concurrent.futures.ThreadPoolExecutor(1) as executor:
            batcher = Batcher(executor=executor, run_batch=run_batch, batch_max=8, parallel_max=1)
            owner = asyncio.ensure_future(batcher.submit(1))
            await asyncio.sleep(0.02)
            queued = [asyncio.ensure_future(batcher.submit(n)) for n in (2, 3)]
            await asyncio.sleep(0.02)
            owner.cancel()
            release.set()
            with pytest.raises(asyncio.CancelledError):
                await owner
            return await asyncio.wait_for(asyncio.gather(*queued), 5)

    assert _run(scenario()) == [2, 3]


def test_a_queue_longer_than_batch_max_drains_in_order_and_skips_cancelled_items() -> None:
    release = threading.Event()
    seen: list[list[int]] = []

    def run_batch(items: list[int]) -> list[int | BaseException]:
        seen.append(list(items))
        if len(seen) == 1:
            release.wait(5)
        return items

    async def scenario() -> list[int]:
        with concurrent.futures.ThreadPoolExecutor(2) as executor:
            batcher = Batcher(executor=executor, run_batch=run_batch, batch_max=3, parallel_max=1)
            first = asyncio.ensure_future(batcher.submit(0))
            await asyncio.sleep(0.02)
            queued = [asyncio.ensure_future(batcher.submit(n)) for n in range(1, 8)]
            await asyncio.sleep(0.02)
            queued[1].cancel()  # item 2 never reaches run_batch
            release.set()
            answers = await asyncio.wait_for(asyncio.gather(first, *queued, return_exceptions=True), 5)
            return [answer for answer in answers if not isinstance(answer, BaseException)]

    assert _run(scenario()) == [0, 1, 3, 4, 5, 6, 7]
    assert seen == [[0], [1, 3, 4], [5, 6, 7]]


def test_a_stopped_executor_fails_the_request_instead_of_hanging() -> None:
    async def scenario() -> None:
        executor = concurrent.futures.ThreadPoolExecutor(1)
        executor.shutdown()
        batcher = Batcher(executor=executor, run_batch=lambda items: items, batch_max=4, parallel_max=1)
        with pytest.raises(RuntimeError):
            await asyncio.wait_for(batcher.submit(1), 5)
        assert batcher._running == 0  # noqa: SLF001 - the slot is not leaked

    _run(scenario())


def test_a_batch_cancelled_before_it_ran_fails_its_requests_and_frees_its_slot() -> None:
    """The executor is shut down with cancel_futures while a batch waits in its
    queue: that batch's job never runs, and its requests get Unavailable."""
    from qcluster.errors import Unavailable

    release = threading.Event()
    blocker_started = threading.Event()

    def blocker() -> None:
        blocker_started.set()
        release.wait(5)

    async def scenario() -> None:
        executor = concurrent.futures.ThreadPoolExecutor(1)
        executor.submit(blocker)  # occupies the only worker
        assert blocker_started.wait(5)
        batcher = Batcher(executor=executor, run_batch=lambda items: items, batch_max=4, parallel_max=1)
        waiting = asyncio.ensure_future(batcher.submit(1))
        await asyncio.sleep(0.02)
        executor.shutdown(wait=False, cancel_futures=True)
        with pytest.raises(Unavailable):
            await asyncio.wait_for(waiting, 5)
        assert batcher._running == 0  # noqa: SLF001 - the slot is not leaked
        release.set()

    _run(scenario())


def test_one_batch_at_a_time_until_the_running_one_is_slow() -> None:
    """Queued requests wait for a fast batch (so they go together), but a
    batch that runs past overlap_after_s gets a second one beside it, so one
    slow query does not hold every other one."""
    release = threading.Event()
    seen: list[list[int]] = []

    def run_batch(items: list[int]) -> list[int | BaseException]:
        seen.append(list(items))
        if 0 in items:
            release.wait(5)  # the slow batch
        return items

    async def scenario() -> None:
        with concurrent.futures.ThreadPoolExecutor(2) as executor:
            batcher = Batcher(executor=executor, run_batch=run_batch, batch_max=8, parallel_max=2,
                              overlap_after_s=0.2)
            slow = asyncio.ensure_future(batcher.submit(0))
            await asyncio.sleep(0.02)
            queued = [asyncio.ensure_future(batcher.submit(n)) for n in (1, 2, 3)]
            await asyncio.sleep(0.05)
            assert seen == [[0]], "before overlap_after_s the queue waits for the running batch"
            assert await asyncio.wait_for(asyncio.gather(*queued), 2) == [1, 2, 3]
            assert not slow.done(), "the queue was answered beside the slow batch, not after it"
            assert seen == [[0], [1, 2, 3]]
            release.set()
            assert await asyncio.wait_for(slow, 5) == 0
            assert batcher._running == 0  # noqa: SLF001

    _run(scenario())

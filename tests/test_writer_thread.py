"""The ledger writer's own thread: results, errors, order, cancellation, stop."""

from __future__ import annotations

import threading
import time

import pytest
import trio

from ledger.writer_thread import WriterThread


async def test_runs_jobs_in_its_own_thread_and_returns_their_values():
    thread = WriterThread("test writer")
    thread.start()
    try:
        names = [await thread.run_sync(lambda: threading.current_thread().name) for _ in range(3)]
        assert names == ["test writer"] * 3
        assert threading.current_thread().name != "test writer"
        assert await thread.run_sync(lambda a, b: a + b, 2, 3) == 5
    finally:
        await thread.stop()


async def test_an_exception_reaches_the_caller_and_the_thread_goes_on():
    thread = WriterThread("test writer")
    thread.start()
    try:
        with pytest.raises(ZeroDivisionError):
            await thread.run_sync(lambda: 1 / 0)
        assert await thread.run_sync(lambda: "still serving") == "still serving"
    finally:
        await thread.stop()


async def test_concurrent_callers_are_served_one_at_a_time_in_order():
    thread = WriterThread("test writer")
    thread.start()
    running, seen, overlaps = [0], [], []

    def job(n: int) -> int:
        running[0] += 1
        overlaps.append(running[0])
        time.sleep(0.001)
        seen.append(n)
        running[0] -= 1
        return n

    try:
        results = {}

        async def call(n: int) -> None:
            results[n] = await thread.run_sync(job, n)

        async with trio.open_nursery() as nursery:
            for n in range(20):
                nursery.start_soon(call, n)
                await trio.testing.wait_all_tasks_blocked()  # queue them in a known order
        assert results == {n: n for n in range(20)}
        assert seen == list(range(20))
        assert max(overlaps) == 1
    finally:
        await thread.stop()


async def test_a_cancelled_caller_waits_for_its_job_to_finish():
    """Cancellation cannot abandon a job: the caller gets the job's result, then Cancelled at its next checkpoint."""
    thread = WriterThread("test writer")
    thread.start()
    release, finished = threading.Event(), []

    def job() -> None:
        release.wait(5)
        finished.append(True)

    timer = threading.Timer(0.05, release.set)
    try:
        with trio.CancelScope() as scope:
            scope.cancel()
            timer.start()
            assert await thread.run_sync(job) is None
            assert finished == [True]
            await trio.lowlevel.checkpoint()
        assert scope.cancelled_caught
        assert finished == [True]
        assert release.is_set()
    finally:
        timer.cancel()
        await thread.stop()


async def test_stop_ends_the_thread_and_refuses_new_jobs():
    thread = WriterThread("test writer")
    thread.start()
    await thread.stop()
    assert "test writer" not in [t.name for t in threading.enumerate()]
    with pytest.raises(RuntimeError, match="not running"):
        await thread.run_sync(lambda: None)

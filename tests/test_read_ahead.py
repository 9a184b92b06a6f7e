"""gateway/read_ahead.py: provider events read in a background task, taken in batches."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from gateway.providers.base import ProviderError
from gateway.read_ahead import BATCH_EVENTS_MAX, event_batches


class Source:
    """A provider-like async generator whose pace the test controls."""

    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel(1000)
        self.closed = trio.Event()

    async def events(self):
        try:
            async for item in self.recv:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self.closed.set()


async def test_events_that_arrive_while_the_run_is_busy_form_one_batch(nursery):
    source = Source()
    async with event_batches(source.events(), nursery) as batches:
        await source.send.send(1)
        assert await batches.__anext__() == [1]
        for n in range(2, 7):  # the run is busy (committing): five events arrive meanwhile
            await source.send.send(n)
        await trio.testing.wait_all_tasks_blocked()
        assert await batches.__anext__() == [2, 3, 4, 5, 6]
        await source.send.aclose()
        with pytest.raises(StopAsyncIteration):
            await batches.__anext__()


async def test_a_batch_is_bounded_and_order_is_kept(nursery):
    source = Source()
    total = BATCH_EVENTS_MAX + 10
    for n in range(total):
        await source.send.send(n)
    await source.send.aclose()
    async with event_batches(source.events(), nursery) as batches:
        await trio.testing.wait_all_tasks_blocked()
        got = [batch async for batch in batches]
    assert len(got[0]) == BATCH_EVENTS_MAX  # everything read ahead while the run waited, up to the bound
    assert max(len(b) for b in got) == BATCH_EVENTS_MAX
    assert [n for b in got for n in b] == list(range(total))


async def test_a_provider_error_comes_after_the_events_read_before_it(nursery):
    source = Source()
    for item in ("a", "b", ProviderError("upstream stream broke")):
        await source.send.send(item)
    async with event_batches(source.events(), nursery) as batches:
        await trio.testing.wait_all_tasks_blocked()
        assert await batches.__anext__() == ["a", "b"]
        with pytest.raises(ProviderError, match="stream broke"):
            await batches.__anext__()


async def test_leaving_early_closes_the_provider_iterator(nursery):
    source = Source()
    await source.send.send("first")
    async with event_batches(source.events(), nursery) as batches:
        assert await batches.__anext__() == ["first"]
        # the run stops here (the client left); more events would still be coming
    with trio.fail_after(2):
        await source.closed.wait()  # the reader was cancelled and closed the upstream iterator


async def test_without_a_nursery_events_come_one_at_a_time():
    source = Source()
    for n in range(3):
        await source.send.send(n)
    await source.send.aclose()
    async with event_batches(source.events(), None) as batches:
        assert [b async for b in batches] == [[0], [1], [2]]
    assert source.closed.is_set()


async def test_a_reader_cancelled_from_outside_is_an_error_not_an_end(nursery):
    async def hold(task_status=trio.TASK_STATUS_IGNORED):
        async with trio.open_nursery() as readers:  # stands for the server's background nursery
            task_status.started(readers)
            await trio.sleep_forever()

    readers = await nursery.start(hold)
    source = Source()
    await source.send.send("a")
    async with event_batches(source.events(), readers) as batches:
        assert await batches.__anext__() == ["a"]
        readers.cancel_scope.cancel()  # as at server shutdown, while the run still reads
        with pytest.raises(ProviderError, match="stopped before it ended"):
            await batches.__anext__()

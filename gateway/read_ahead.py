"""Read-ahead: a streamed response keeps reading its provider while the ledger commits.

A streamed response appends what the provider sent, waits until it is durable, and only then
sends it (write-ahead). Reading the provider only between those waits would give every delta
its own append, its own wait and its own write to the client, and leave the upstream idle
meanwhile. A ReadAhead reads the provider's events in a background task into a bounded
channel; the run takes everything that arrived while it was busy as one batch, so under
load one append and one chunk to the client carry many deltas. Each delta stays its own
ledger event, in the provider's order; with a quiet provider a batch is one event, so
nothing waits for company.

Provider errors (and any other exception of the reader) are handed over in order, after the
events read before them, and raised by ``batches``; a reader cancelled from outside (server
shutdown) before the provider's stream ended is a ProviderError too, never a quiet end.

Cancellation: ``aclose`` (the run's ``finally``) cancels the reader, which closes the
provider's iterator and so the upstream call. The reader lives in a nursery that outlives
the request (``Services.background``), because the run is an async generator and must not
hold a nursery across its ``yield``; the run's ``finally`` is what bounds the reader's life.
"""

from __future__ import annotations

from contextlib import aclosing, asynccontextmanager
from typing import Any, AsyncIterator, Optional

import trio

from gateway.providers.base import ProviderError

EVENTS_QUEUED_MAX = 256  # provider events read ahead and not yet taken; the reader waits beyond this
READ_STEP_EVENTS_MAX = 4  # events the reader hands over between two checkpoints (fairness to other requests)
BATCH_EVENTS_MAX = 256  # provider events one batch (one append, one chunk to the client) takes at most


class _Failed:
    __slots__ = ("error",)

    def __init__(self, error: BaseException) -> None:
        self.error = error


class ReadAhead:
    """Reads ``events`` in a task of ``nursery``; ``batches()`` yields what arrived, in order."""

    def __init__(self, nursery: trio.Nursery, events: AsyncIterator[Any]) -> None:
        self._events = events
        self._send, self._recv = trio.open_memory_channel[Any](EVENTS_QUEUED_MAX)
        self._scope = trio.CancelScope()
        self._ended = False  # the provider's iterator ran to its end
        nursery.start_soon(self._read)

    async def _read(self) -> None:
        with self._scope, self._send:
            try:
                send, send_nowait = self._send.send, self._send.send_nowait
                unyielded = 0
                async with aclosing(self._events) as events:
                    async for event in events:
                        unyielded += 1
                        if unyielded < READ_STEP_EVENTS_MAX:
                            try:
                                send_nowait(event)
                                continue
                            except trio.WouldBlock:
                                pass
                        unyielded = 0
                        await send(event)  # a checkpoint: other requests get their turn
                self._ended = True
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return  # the run stopped taking events
            except Exception as exc:  # a ProviderError, or a bug: the run raises it
                try:
                    await self._send.send(_Failed(exc))
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass

    async def batches(self) -> AsyncIterator[list[Any]]:
        """Lists of at least one event: the next event, and every event already read after it."""
        receive, receive_nowait = self._recv.receive, self._recv.receive_nowait
        while True:
            try:
                batch = [await receive()]
            except trio.EndOfChannel:
                if not self._ended:  # the reader was cancelled from outside (server shutdown)
                    raise ProviderError("reading the upstream stopped before it ended") from None
                return
            while len(batch) < BATCH_EVENTS_MAX and not isinstance(batch[-1], _Failed):
                try:
                    batch.append(receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            if isinstance(batch[-1], _Failed):
                if len(batch) > 1:
                    yield batch[:-1]
                raise batch[-1].error
            yield batch

    def aclose(self) -> None:
        """Stop the reader (it closes the provider's iterator) and stop taking events."""
        self._scope.cancel()
        self._recv.close()


async def _one_by_one(events: AsyncIterator[Any]) -> AsyncIterator[list[Any]]:
    async with aclosing(events):
        async for event in events:
            yield [event]


@asynccontextmanager
async def event_batches(
    events: AsyncIterator[Any], nursery: Optional[trio.Nursery]
) -> AsyncIterator[AsyncIterator[list[Any]]]:
    """Batches of ``events``: read ahead in ``nursery``, or one event at a time without one."""
    if nursery is None:
        batches = _one_by_one(events)
        async with aclosing(batches):
            yield batches
        return
    reader = ReadAhead(nursery, events)
    try:
        batches = reader.batches()
        async with aclosing(batches):
            yield batches
    finally:
        reader.aclose()

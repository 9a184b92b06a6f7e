"""Group commit: many concurrent appends, one writer task, one transaction per group.

Producers call ``submit(batch)`` and sleep; the writer task takes every queued append (up
to ``events_per_commit_max`` events), hands the group to ``commit`` (which runs the
transaction in a worker thread) and wakes each producer with its own outcome: its records,
or the error that rejected that append alone. Producers park on trio's low-level
primitives rather than channels and events: at tens of thousands of appends per second,
the per-append scheduling cost is what limits throughput.

Cancellation: a producer cancelled while its append still waits in the queue is removed
from it and raises Cancelled (nothing was written). Once the writer has taken the append
the producer stays until the commit finishes (milliseconds), then gets Cancelled at its
next checkpoint; the append is durable either way, and retrying it with the same event ids
returns the original records. The writer shields each commit, so cancelling the writer
never loses a committed group's outcome.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Awaitable, Callable, Sequence

import outcome
import trio

from ledger.errors import LedgerError, StoreClosed

CommitFn = Callable[[list[list[Any]]], Awaitable[list[Any]]]


class _Entry:
    __slots__ = ("batch", "task", "taken")

    def __init__(self, batch: list[Any], task: trio.lowlevel.Task) -> None:
        self.batch = batch
        self.task = task
        self.taken = False


class GroupCommitter:
    """The queue between producers and the single writer task."""

    def __init__(self, commit: CommitFn, events_per_commit_max: int, appends_queued_max: int) -> None:
        self._commit = commit
        self.events_per_commit_max = events_per_commit_max
        self.appends_queued_max = appends_queued_max
        self._queue: deque[_Entry] = deque()
        self._work = trio.lowlevel.ParkingLot()  # the writer waits here for appends
        self._room = trio.lowlevel.ParkingLot()  # producers wait here when the queue is full
        self._stopped = trio.Event()
        self.running = False
        self.closed = False

    async def submit(self, batch: Sequence[Any]) -> Any:
        """Queue one append and sleep until the writer has its outcome."""
        while len(self._queue) >= self.appends_queued_max and not self.closed:
            await self._room.park()
        if self.closed or not self.running:
            raise StoreClosed("store is closed" if self.closed else "store writer is not running")
        entry = _Entry(list(batch), trio.lowlevel.current_task())
        self._queue.append(entry)
        if self._work:
            self._work.unpark()

        def abort(_raise_cancel: Any) -> trio.lowlevel.Abort:
            if entry.taken:
                return trio.lowlevel.Abort.FAILED
            self._queue.remove(entry)
            return trio.lowlevel.Abort.SUCCEEDED

        return await trio.lowlevel.wait_task_rescheduled(abort)

    async def run(self, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The writer loop; returns once closed and the queue is drained."""
        self.running = True
        task_status.started()
        try:
            while True:
                if not self._queue:
                    if self.closed:
                        return
                    await self._work.park()
                    continue
                group: list[_Entry] = []
                events = 0
                while self._queue and events < self.events_per_commit_max:
                    entry = self._queue.popleft()
                    entry.taken = True
                    group.append(entry)
                    events += len(entry.batch)
                if self._room:
                    self._room.unpark_all()
                with trio.CancelScope(shield=True):
                    try:
                        outcomes = await self._commit([e.batch for e in group])
                    except Exception as exc:  # the whole transaction failed (I/O error)
                        error = LedgerError(f"commit failed: {exc!r}")
                        outcomes = [error] * len(group)
                for entry, result in zip(group, outcomes):
                    value = outcome.Error(result) if isinstance(result, BaseException) else outcome.Value(result)
                    trio.lowlevel.reschedule(entry.task, value)
        finally:
            self.running = False
            while self._queue:
                entry = self._queue.popleft()
                trio.lowlevel.reschedule(entry.task, outcome.Error(StoreClosed("store writer stopped")))
            self._room.unpark_all()
            self._stopped.set()

    async def aclose(self) -> None:
        """Refuse new appends, let the writer commit what is queued, wait for it to stop."""
        self.closed = True
        self._work.unpark_all()
        self._room.unpark_all()
        if self.running:
            await self._stopped.wait()

"""Keeps projections current: catch up from the store, then follow it.

Commits of this process are pushed by the store (``subscribe``) and applied at once, in
the trio thread, before the appending task wakes up: a response is readable the moment its
append returns. Commits by other processes (the CLI creating a platform while the server
runs) are found by polling the store's head every ``poll_interval_s`` and reading what is
new. Every record is applied exactly once, in position order: a pushed record that does
not follow the last applied one waits for the reader to fill the gap.

Cancellation: ``run`` may be cancelled at any await; the projections stay consistent (a
record is applied whole or not at all) and ``position`` says how far they got.
"""

from __future__ import annotations

from typing import Optional, Sequence

import trio

from ledger.store import EventStore, Recorded
from projections.base import Projection


class ProjectionRunner:
    """Feeds recorded events, in order, to a set of projections."""

    poll_interval_s = 0.1  # how soon another process's appends become visible
    read_batch_max = 5000  # records per catch-up read

    def __init__(self, store: EventStore, projections: Sequence[Projection]) -> None:
        self.store = store
        self.projections = list(projections)
        self.position = 0
        self._wake = trio.Event()
        self._advanced = trio.Event()
        store.subscribe(self._on_commit)

    def _apply(self, recorded: Recorded) -> None:
        for projection in self.projections:
            projection.apply(recorded)
        self.position = recorded.position

    def _on_commit(self, records: Sequence[Recorded]) -> None:
        for recorded in records:
            if recorded.position == self.position + 1:
                self._apply(recorded)
            elif recorded.position > self.position:
                self._wake.set()  # a gap: another process wrote in between; let run() read it
                break
        self._signal()

    def _signal(self) -> None:
        self._advanced.set()
        self._advanced = trio.Event()

    async def catch_up(self) -> int:
        """Apply everything recorded so far; return the position reached."""
        while True:
            records = await self.store.read_all(after=self.position, limit=self.read_batch_max)
            for recorded in records:
                if recorded.position == self.position + 1:
                    self._apply(recorded)
            if records:
                self._signal()
            if len(records) < self.read_batch_max:
                return self.position

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Catch up, report started, then follow the store until cancelled."""
        await self.catch_up()
        task_status.started()
        while True:
            with trio.move_on_after(self.poll_interval_s):
                await self._wake.wait()
            self._wake = trio.Event()
            if await self.store.head() > self.position:
                await self.catch_up()

    async def wait_for(self, position: int, timeout_s: Optional[float] = None) -> bool:
        """Wait until the projections have applied ``position``; False on timeout."""
        with trio.move_on_after(timeout_s if timeout_s is not None else float("inf")):
            while self.position < position:
                self._wake.set()
                await self._advanced.wait()
            return True
        return False

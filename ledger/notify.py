"""Tells in-process readers about commits: subscriber callbacks and position waits.

Both stores own one Notifier. After each commit the store calls ``published(records)`` in
the trio thread: subscribers run synchronously (they must not block), then every task
waiting in ``wait_for`` re-checks. A subscriber that raises is logged and counted, never
turned into a failed append: its events are committed either way. Commits by other
processes are not pushed; ``wait_for`` polls the store's head every ``poll_interval_s``
to see them.
"""

from __future__ import annotations

from typing import Awaitable, Callable, Optional, Sequence

import logging

import trio

from ledger.store import Recorded, Subscriber

log = logging.getLogger("assistiv.ledger")


class Notifier:
    """Subscriber list plus a wake-up for position waiters."""

    poll_interval_s = 0.05

    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []
        self._changed = trio.Event()
        self.known_head = 0
        self.subscriber_errors = 0  # callbacks that raised (logged); the commits themselves stood

    def subscribe(self, callback: Subscriber) -> None:
        self._subscribers.append(callback)

    def published(self, records: Sequence[Recorded]) -> None:
        """Call after a commit, in the trio thread, with the newly recorded events."""
        if records:
            self.known_head = max(self.known_head, records[-1].position)
            for callback in self._subscribers:
                try:
                    callback(records)
                except Exception:  # the events ARE committed: never report them as failed appends
                    self.subscriber_errors += 1
                    log.exception("a ledger subscriber failed on positions %d-%d", records[0].position,
                                  records[-1].position)
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for(
        self, position: int, head: Callable[[], Awaitable[int]], timeout_s: Optional[float] = None
    ) -> bool:
        """Wait until ``head()`` reaches ``position``. Cancellation simply ends the wait."""
        with trio.move_on_after(timeout_s if timeout_s is not None else float("inf")):
            while True:
                if self.known_head >= position:
                    return True
                self.known_head = max(self.known_head, await head())
                if self.known_head >= position:
                    return True
                with trio.move_on_after(self.poll_interval_s):
                    await self._changed.wait()
        return False

"""Counts requests in flight, so shutdown can wait for them (bounded) and no longer.

Hypercorn's own graceful shutdown also waits for idle keep-alive connections, which an
SDK client may hold open for minutes; we wait for requests instead, then stop hypercorn.
"""

from __future__ import annotations

import trio


class InFlight:
    def __init__(self) -> None:
        self.count = 0
        self._idle = trio.Event()
        self._idle.set()

    def enter(self) -> None:
        self.count += 1
        if self.count == 1:
            self._idle = trio.Event()

    def exit(self) -> None:
        self.count -= 1
        if self.count == 0:
            self._idle.set()

    async def wait_idle(self) -> None:
        """Return once nothing is in flight. Cancellation simply ends the wait."""
        await self._idle.wait()

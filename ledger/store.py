"""The EventStore protocol and its two value types, NewEvent (what you append) and Recorded.

Every store (memory, SQLite) passes the one contract suite in tests/test_store_contract.py.

An ``append`` is atomic: all of its events are recorded, or none. Appends that arrive
together may share one transaction (group commit), but a conflict rejects only the append
that caused it. ``expected_version`` on a NewEvent is the version the stream must have just
before that event (0 = the stream must be empty); None = any. Re-appending an event id that
is recorded returns the original record (idempotency); an append must repeat all of its ids
or none of them.
"""

from __future__ import annotations

import uuid
from typing import Any, Callable, Optional, Protocol, Sequence

import attrs

from ledger.events import Event


def new_event_id() -> str:
    """A fresh random event id (use a derived id instead where a retry must dedupe)."""
    return uuid.uuid4().hex


@attrs.frozen
class NewEvent:
    """One event to append to ``stream``."""

    stream: str
    event: Event
    event_id: str = attrs.field(factory=new_event_id)
    expected_version: Optional[int] = None


@attrs.frozen
class Recorded:
    """The envelope of a recorded event.

    ``position`` is the gap-free global order (from 1), ``version`` the order within the
    stream (from 1), ``recorded_at`` microseconds since the Unix epoch (UTC), and ``hash`` =
    sha256(bytes(prev_hash) || canonical JSON of the other fields): see ledger.chain.
    """

    position: int
    stream: str
    version: int
    event_id: str
    recorded_at: int
    prev_hash: str
    hash: str
    event: Event

    @property
    def recorded_at_s(self) -> int:
        """Whole seconds since the epoch, as OpenAI objects carry their times."""
        return self.recorded_at // 1_000_000


Subscriber = Callable[[Sequence[Recorded]], None]


class EventStore(Protocol):
    """What every store offers. All methods are trio-async; see each store for cancellation."""

    async def append(self, batch: Sequence[NewEvent]) -> list[Recorded]:
        """Record ``batch`` atomically once it is durable; return its records."""

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[Recorded]:
        """Up to ``limit`` records with position > ``after``, in position order."""

    async def read_stream(self, stream: str) -> list[Recorded]:
        """Every record of ``stream`` in version order."""

    async def head(self) -> int:
        """The highest recorded position (0 for an empty store), including other writers'."""

    async def wait_for(self, position: int, timeout_s: Optional[float] = None) -> bool:
        """Wait until ``position`` is recorded and readable; False on timeout."""

    async def statistics(self) -> dict[str, Any]:
        """Counters: events, streams, appends, commits, events per commit."""

    def subscribe(self, callback: Subscriber) -> None:
        """Call ``callback`` in the trio thread with the records of each commit of this process."""

    async def aclose(self) -> None:
        """Finish queued appends, then close."""

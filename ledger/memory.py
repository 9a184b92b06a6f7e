"""The in-memory reference store: the contract in its plainest form, for tests and demos.

Nothing is durable. Appends are sequenced at once (no group commit); every method is still
async and checkpoints, so callers see the same scheduling points as with the SQLite store.
"""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any, Optional, Sequence

import trio

from ledger.chain import GENESIS_HASH
from ledger.errors import LedgerError, StoreClosed
from ledger.notify import Notifier
from ledger.sequencer import Sequencer
from ledger.store import NewEvent, Recorded, Subscriber


class MemoryStore:
    """An EventStore held in lists and dicts."""

    def __init__(self) -> None:
        self._records: list[Recorded] = []
        self.rows: list[tuple] = []  # the rows a SQLite store would hold, for chain checks
        self._by_id: dict[str, Recorded] = {}
        self._streams: dict[str, list[Recorded]] = defaultdict(list)
        self._notifier = Notifier()
        self._appends = 0
        self._closed = False

    async def append(self, batch: Sequence[NewEvent]) -> list[Recorded]:
        if self._closed:
            raise StoreClosed("store is closed")
        await trio.lowlevel.checkpoint()
        head_hash = self._records[-1].hash if self._records else GENESIS_HASH
        seq = Sequencer(
            len(self._records),
            head_hash,
            lambda stream: len(self._streams.get(stream, ())),
            self._by_id,
            time.time_ns() // 1000,
        )
        outcome = seq.place(list(batch))
        if isinstance(outcome, LedgerError):
            raise outcome
        self._appends += 1
        for record in seq.records:
            self._records.append(record)
            self._by_id[record.event_id] = record
            self._streams[record.stream].append(record)
        self.rows.extend(seq.rows)
        self._notifier.published(seq.records)
        return outcome

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[Recorded]:
        await trio.lowlevel.checkpoint()
        return self._records[after : after + limit]

    async def read_stream(self, stream: str) -> list[Recorded]:
        await trio.lowlevel.checkpoint()
        return list(self._streams.get(stream, ()))

    async def head(self) -> int:
        await trio.lowlevel.checkpoint()
        return len(self._records)

    async def wait_for(self, position: int, timeout_s: Optional[float] = None) -> bool:
        return await self._notifier.wait_for(position, self.head, timeout_s)

    async def statistics(self) -> dict[str, Any]:
        await trio.lowlevel.checkpoint()
        return {
            "events": len(self._records),
            "streams": len(self._streams),
            "appends": self._appends,
            "commits": self._appends,
            "events_per_commit": round(len(self._records) / self._appends, 2) if self._appends else 0.0,
        }

    def subscribe(self, callback: Subscriber) -> None:
        self._notifier.subscribe(callback)

    async def aclose(self) -> None:
        self._closed = True

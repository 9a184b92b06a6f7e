"""Rate windows: requests and tokens per end user over the last minute and day.

Folded from ``response.accepted`` (a request) and ``usage.charged`` (its tokens) at their
recorded times; entries older than a day are dropped as later events arrive, so memory
stays bounded by one day's traffic per end user. ``check`` compares the windows with the
limits in force at ``now`` (the caller's clock).
"""

from __future__ import annotations

import math
import bisect
from typing import Any, Optional

from ledger.events import ResponseAccepted, UsageCharged
from ledger.store import Recorded
from projections import digest

MINUTE_S = 60
DAY_S = 86_400


class Window:
    """(time_s, amount) entries in time order with prefix sums: ``since`` is O(log n).

    Entries older than the span are dropped as newer ones arrive (deterministically, by the
    recorded times); a read at ``now`` never changes the state.
    """

    __slots__ = ("times", "prefix", "start")

    COMPACT_ENTRIES_MIN = 1024  # dropped entries kept before the lists are compacted

    def __init__(self) -> None:
        self.times: list[float] = []
        self.prefix: list[int] = [0]  # prefix[i] = sum of amounts before entry i
        self.start = 0  # entries before this index are dropped

    def add(self, at_s: float, amount: int, span_s: int) -> None:
        self.times.append(at_s)
        self.prefix.append(self.prefix[-1] + amount)
        self.start = bisect.bisect_right(self.times, at_s - span_s, lo=self.start)
        if self.start >= self.COMPACT_ENTRIES_MIN and self.start * 2 >= len(self.times):
            base = self.prefix[self.start]
            self.times = self.times[self.start :]
            self.prefix = [p - base for p in self.prefix[self.start :]]
            self.start = 0

    @property
    def entries(self) -> int:
        return len(self.times) - self.start

    def since(self, after_s: float) -> tuple[int, Optional[float]]:
        """(sum of amounts after ``after_s``, time of the oldest such entry)."""
        i = bisect.bisect_right(self.times, after_s, lo=self.start)
        if i == len(self.times):
            return 0, None
        return self.prefix[-1] - self.prefix[i], self.times[i]


class RatesProjection:
    """Per end user: request times (for rpm and rpd) and token counts (for tpm)."""

    name = "rates"

    def __init__(self) -> None:
        self.requests: dict[str, Window] = {}
        self.tokens: dict[str, Window] = {}

    def apply(self, recorded: Recorded) -> None:
        event = recorded.event
        at = recorded.recorded_at / 1_000_000
        if isinstance(event, ResponseAccepted) and event.end_user_id:
            self.requests.setdefault(event.end_user_id, Window()).add(at, 1, DAY_S)
        elif isinstance(event, UsageCharged) and event.end_user_id:
            used = event.usage.input_tokens + event.usage.output_tokens
            self.tokens.setdefault(event.end_user_id, Window()).add(at, used, MINUTE_S)

    def exceeded(self, end_user_id: str, limits: Any, now_s: float, pending_requests: int = 0) -> Optional[int]:
        """Seconds to wait (Retry-After) if a limit is reached at ``now_s``, else None."""
        waits = []
        requests = self.requests.get(end_user_id, Window())
        for limit, span in ((limits.rpm_limit, MINUTE_S), (limits.rpd_limit, DAY_S)):
            if limit is None:
                continue
            count, oldest = requests.since(now_s - span)
            if count + pending_requests >= limit:
                waits.append((oldest + span - now_s) if oldest is not None else 1)
        if limits.tpm_limit is not None:
            used, oldest = self.tokens.get(end_user_id, Window()).since(now_s - MINUTE_S)
            if used >= limits.tpm_limit:
                waits.append((oldest + MINUTE_S - now_s) if oldest is not None else 1)
        return max(1, math.ceil(max(waits))) if waits else None

    def fingerprint(self) -> Any:
        """Window counts, and a digest of every live entry (time, running total) of every request
        and token window (projections.digest); entries already dropped are not state."""
        state = {kind: {euid: _window_state(w) for euid, w in windows.items()}
                 for kind, windows in (("requests", self.requests), ("tokens", self.tokens))}
        return {"requests": len(self.requests), "tokens": len(self.tokens), "sha256": digest.sha256(state)}


def _window_state(window: Window) -> list[Any]:
    """The live entries as (recorded time, amount): independent of when the lists were compacted."""
    start, times, prefix = window.start, window.times, window.prefix
    return [[times[i], prefix[i + 1] - prefix[i]] for i in range(start, len(times))]

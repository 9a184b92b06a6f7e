"""Errors raised by event stores.

    LedgerError
    ├── ConcurrencyConflict      an expected stream version did not match (stream, expected, actual)
    ├── DuplicateEventMismatch   some, not all, event ids of one append were already recorded
    ├── UnknownEventType         a stored tag this build does not know (a newer writer?)
    ├── ChainBroken              the hash chain does not verify at ``position``
    └── StoreClosed              append or read after the store was closed
"""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises."""


class ConcurrencyConflict(LedgerError):
    """An append stated an expected version of ``stream`` and the stream was elsewhere."""

    def __init__(self, stream: str, expected: int, actual: int) -> None:
        super().__init__(f"stream {stream!r}: expected version {expected}, actual {actual}")
        self.stream = stream
        self.expected = expected
        self.actual = actual


class DuplicateEventMismatch(LedgerError):
    """A retried append must repeat the whole original append: all its ids or none."""

    def __init__(self, known: list[str], unknown: list[str]) -> None:
        super().__init__(f"event ids already recorded {known[:3]} mixed with new ids {unknown[:3]}")
        self.known = known
        self.unknown = unknown


class UnknownEventType(LedgerError):
    """A recorded ``type`` tag that no event class claims."""

    def __init__(self, tag: object) -> None:
        super().__init__(f"unknown event type {tag!r}")
        self.tag = tag


class ChainBroken(LedgerError):
    """The hash chain fails at ``position`` (edited, reordered or missing events)."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"hash chain broken at position {position}: {reason}")
        self.position = position
        self.reason = reason


class StoreClosed(LedgerError):
    """The store was closed; nothing more can be appended or read through it."""

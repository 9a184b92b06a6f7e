"""The projection protocol: a deterministic fold over recorded events.

``apply(recorded)`` may read only the record (event and envelope): no clock, no config, no
I/O, no randomness (DESIGN invariant 10). Then a projection rebuilt from position 0 equals
the live one, which ``replay verify`` checks through ``fingerprint()``.
"""

from __future__ import annotations

from typing import Any, Protocol

from ledger.store import Recorded


class Projection(Protocol):
    """A named, deterministic fold."""

    name: str

    def apply(self, recorded: Recorded) -> None:
        """Fold one record, in position order. Records of unrelated types are ignored."""

    def fingerprint(self) -> Any:
        """A JSON-native summary of the whole state, equal for equal histories."""

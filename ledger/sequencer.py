"""Places a group of appends on the ledger: positions, versions, hashes, conflicts.

Both stores use this one piece of logic, so they cannot disagree on what an append means.
A Sequencer works against a snapshot of the store taken inside the writing transaction:
the head (position, hash), a way to read a stream's current version, and the records
already holding any of the group's event ids. It is pure computation: no I/O, no clock
(the caller passes ``recorded_at``).
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence, Union

from ledger.chain import record_hash
from ledger.codec import event_to_json
from ledger.errors import ConcurrencyConflict, DuplicateEventMismatch, LedgerError
from ledger.events import TAGS
from ledger.store import NewEvent, Recorded

Row = tuple  # (position, stream, version, event_id, type, recorded_at, prev_hash, hash, data)
Outcome = Union[list[Recorded], LedgerError]


class Sequencer:
    """Assigns the next positions to appends, one append at a time, in arrival order."""

    def __init__(
        self,
        head_position: int,
        head_hash: str,
        stream_version: Callable[[str], int],
        existing: Mapping[str, Recorded],
        recorded_at: int,
    ) -> None:
        self.position = head_position
        self.hash = head_hash
        self._stream_version = stream_version
        self._existing = existing
        self._recorded_at = recorded_at
        self.versions: dict[str, int] = {}  # streams touched by this group -> version after it
        self.placed: dict[str, Recorded] = {}
        self.rows: list[Row] = []
        self.records: list[Recorded] = []

    def version_of(self, stream: str) -> int:
        """The stream's version including what this group placed so far."""
        version = self.versions.get(stream)
        if version is None:
            version = self._stream_version(stream)
            self.versions[stream] = version
        return version

    def place(self, batch: Sequence[NewEvent]) -> Outcome:
        """Place one append; return its records, or the error that rejects it alone."""
        ids = [new.event_id for new in batch]
        existing, placed = self._existing, self.placed
        if existing or placed:
            known = [i for i in ids if i in existing or i in placed]
            if known:
                if len(known) == len(ids) and len(set(ids)) == len(ids):
                    return [existing.get(i) or placed[i] for i in ids]
                return DuplicateEventMismatch(known, [i for i in ids if i not in known])
        if len(batch) > 1 and len(set(ids)) != len(ids):
            return DuplicateEventMismatch([i for i in ids if ids.count(i) > 1], [])
        overlay: dict[str, int] = {}
        for new in batch:
            stream = new.stream
            current = overlay[stream] if stream in overlay else self.version_of(stream)
            if new.expected_version is not None and new.expected_version != current:
                return ConcurrencyConflict(stream, new.expected_version, current)
            overlay[stream] = current + 1
        out: list[Recorded] = []
        recorded_at, versions = self._recorded_at, self.versions
        for new in batch:
            stream, event_id, event = new.stream, new.event_id, new.event
            version = versions[stream] + 1
            versions[stream] = version
            position = self.position + 1
            data = event_to_json(event)
            prev = self.hash
            digest = record_hash(prev, position, stream, version, event_id, recorded_at, data)
            record = Recorded(position, stream, version, event_id, recorded_at, prev, digest, event)
            self.rows.append(
                (position, stream, version, event_id, TAGS[type(event)], recorded_at, prev, digest, data.decode())
            )
            placed[event_id] = record
            out.append(record)
            self.position = position
            self.hash = digest
        self.records.extend(out)
        return out

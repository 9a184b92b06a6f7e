"""The head anchor: the ledger's last position and hash, kept in a small file beside it.

Nothing inside a ledger file shows that its last events were deleted: the shorter chain is
still a valid chain. So the gateway keeps ``<ledger file>.head``::

    {"position": 1234, "hash": "<64 hex>", "written_at": 1767225600000000}

(``written_at``: unix microseconds, like ``recorded_at``), rewritten after its appends at
most once per ``AnchorWriter.interval_s`` and once more at clean shutdown. ``replay verify``
checks that the ledger still holds that record with that hash (``check``): a position
beyond the ledger's head means its tail was truncated; another hash there means the ledger
was rewritten from that position or before.

What it proves: when the anchor was written, the ledger held at least ``position`` records
ending in ``hash``. What it cannot prove: events appended in the last ``interval_s`` before
a crash (the anchor lags the ledger by up to that), events appended by another process (a
CLI) after the gateway last wrote it, or anything against someone who can edit both files:
keep a copy of the anchor (or an export's manifest) elsewhere for that.

At start-up the gateway checks the anchor it finds (``set_aside_if_broken``): one that the
ledger no longer holds (the ledger was truncated, rewritten or replaced while the gateway
was stopped) is renamed ``<ledger>.head.rejected-<unix seconds>`` rather than overwritten,
and ``replay verify`` reports every such file: a restore from backup looks the same as
tampering, so an operator who restored one removes the file after recording why.

Cost: the anchor is written off the request path (a background task, in a worker thread)
by write-to-temporary-then-rename, without fsync. The ledger's commit is durable before the
anchor names it, so after a power loss the anchor may be older than the ledger (harmless:
it is checked at its own position) or, rarely, empty (verify then reports it unreadable).

Cancellation: ``run`` ends at its next wait; a write in progress completes (its thread is
never abandoned), and ``close`` writes the last head once more.
"""

from __future__ import annotations

import functools
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Callable, Optional, Sequence

import attrs
import orjson
import trio

from ledger.errors import LedgerError
from ledger.sqlite import hash_at
from ledger.store import Recorded

SUFFIX = ".head"
REJECTED = ".rejected-"  # <ledger>.head.rejected-<unix seconds>: an anchor the gateway found broken at start
ANCHOR_BYTES_MAX = 4096  # an anchor is ~130 bytes; anything bigger is not one


class AnchorUnreadable(LedgerError):
    """The anchor file exists but is not an anchor (garbled, truncated, or edited)."""


@attrs.frozen
class Anchor:
    position: int
    hash: str
    written_at: int  # unix microseconds


def anchor_path(ledger: str | Path) -> Path:
    """``<ledger file>.head``."""
    return Path(f"{ledger}{SUFFIX}")


def write_anchor(path: Path, anchor: Anchor) -> None:
    """Replace the file atomically (temporary file + rename); no fsync (see the module docstring)."""
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}.{threading.get_ident()}")
    temporary.write_bytes(orjson.dumps(attrs.asdict(anchor)) + b"\n")
    os.replace(temporary, path)


def read_anchor(path: Path) -> Optional[Anchor]:
    """The anchor in ``path``; None when there is no such file; AnchorUnreadable when it is not one."""
    try:
        with open(path, "rb") as file:
            raw = file.read(ANCHOR_BYTES_MAX + 1)
    except FileNotFoundError:
        return None
    try:
        if len(raw) > ANCHOR_BYTES_MAX:
            raise ValueError(f"more than {ANCHOR_BYTES_MAX} bytes")
        data = orjson.loads(raw)
        if not isinstance(data, dict) or set(data) != {"position", "hash", "written_at"}:
            raise ValueError("expected exactly the keys position, hash, written_at")
        position, hash_, written_at = data["position"], data["hash"], data["written_at"]
        if type(position) is not int or position < 1 or type(written_at) is not int:
            raise ValueError("position and written_at must be integers, position from 1")
        if not isinstance(hash_, str) or len(hash_) != 64 or hash_.strip("0123456789abcdef"):
            raise ValueError("hash must be 64 lowercase hex digits")
    except ValueError as exc:  # orjson.JSONDecodeError is a ValueError
        raise AnchorUnreadable(f"head anchor {path} is unreadable: {exc}") from None
    return Anchor(position, hash_, written_at)


def check(anchor: Anchor, head: int, hash_at: Callable[[int], Optional[str]]) -> Optional[tuple[int, str]]:
    """(first bad position, why) when the ledger (ending at ``head``) does not hold ``anchor``, else None."""
    if anchor.position > head:
        return head + 1, (f"the ledger ends at position {head}, but its head anchor recorded position "
                          f"{anchor.position}: tail truncated (positions {head + 1}..{anchor.position} are gone)")
    found = hash_at(anchor.position)
    if found is None:
        return anchor.position, f"record {anchor.position}, which the head anchor names, is missing"
    if found != anchor.hash:
        return anchor.position, (f"record {anchor.position} has hash {found[:16]}..., but the head anchor "
                                 f"recorded {anchor.hash[:16]}...: the ledger was rewritten at or before it")
    return None


def rejected_paths(ledger: str | Path) -> list[Path]:
    """The anchors the gateway set aside at start-up, oldest first."""
    path = anchor_path(ledger)
    return sorted(path.parent.glob(f"{path.name}{REJECTED}*"))


def set_aside_if_broken(ledger: str | Path, conn: sqlite3.Connection) -> Optional[str]:
    """At start-up: if the anchor beside ``ledger`` is unreadable or not held by it, rename it
    (never overwrite the evidence) and return why; else None."""
    path = anchor_path(ledger)
    try:
        anchor = read_anchor(path)
        if anchor is None:
            return None
        head = conn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
        broken = check(anchor, head, functools.partial(hash_at, conn))
        if broken is None:
            return None
        why = broken[1]
    except AnchorUnreadable as exc:
        why = str(exc)
    target = path.with_name(f"{path.name}{REJECTED}{int(time.time())}")
    os.replace(path, target)
    return f"{why}; kept as {target}"


class AnchorWriter:
    """Keeps ``<ledger>.head`` at the last committed record: subscribe ``observe``, start ``run``,
    call ``close`` after the store has drained."""

    interval_s = 1.0  # at most one anchor write per second while appends go on

    def __init__(self, path: Path) -> None:
        self.path = path
        self._latest: Optional[tuple[int, str]] = None
        self._written: Optional[tuple[int, str]] = None
        self._changed = trio.Event()
        self._lock = threading.Lock()  # a worker thread's write and close() never interleave

    def observe(self, records: Sequence[Recorded]) -> None:
        """The store's subscriber (trio thread, after each commit): remember the head; no I/O here."""
        if records:
            last = records[-1]
            if self._latest is None or last.position > self._latest[0]:
                self._latest = (last.position, last.hash)
                self._changed.set()

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """Write the head when it moved, then rest ``interval_s``; forever (cancel to stop)."""
        task_status.started()
        while True:
            await self._changed.wait()
            self._changed = trio.Event()
            await trio.to_thread.run_sync(self.write)
            await trio.sleep(self.interval_s)

    def write(self) -> None:
        """Write the latest head if it is not written yet (any thread)."""
        with self._lock:
            latest = self._latest
            if latest is None or latest == self._written:
                return
            write_anchor(self.path, Anchor(latest[0], latest[1], time.time_ns() // 1000))
            self._written = latest

    def close(self) -> None:
        """At clean shutdown, after the store's last commit: the anchor names the final head."""
        self.write()

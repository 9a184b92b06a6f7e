"""The SQLite event store: one file, WAL, ``synchronous=FULL``, group commit, hash chain.

One writer task per process drains a bounded trio channel of appends and commits many of
them in one transaction, in the store's own worker thread (``BEGIN IMMEDIATE`` ...
``executemany`` ... ``COMMIT``; see ledger/writer_thread.py), then wakes every waiter: an
append returns only once its transaction is durable. Inside the transaction the writer
re-reads the head, so several processes may append to the same file (SQLite's write lock
serializes them; ``busy_timeout`` waits) and the chain stays one chain. Readers use their
own connection; WAL lets them read while the writer writes.

Cancellation: a caller cancelled while its append waits may or may not have had it
committed; appending the same event ids again returns the original records. The writer's
thread is never abandoned mid-transaction (the writer waits for its outcome), so a
cancelled scope cannot leave a half-written group. ``aclose`` commits everything already queued.
"""

from __future__ import annotations

import sqlite3
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator, Iterator, Optional, Sequence

import sqlite_utils
import trio

from ledger.chain import GENESIS_HASH
from ledger.codec import event_from_json
from ledger.errors import LedgerError
from ledger.group_commit import GroupCommitter
from ledger.notify import Notifier
from ledger.sequencer import Sequencer
from ledger.store import NewEvent, Recorded, Subscriber
from ledger.writer_thread import WriterThread

_COLUMNS = "position, stream, version, event_id, type, recorded_at, prev_hash, hash, data"
_INSERT = f"INSERT INTO events ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
_IDS_PER_QUERY_MAX = 500  # stays below SQLite's default bound-variable limit (999)


def connect(path: str | Path, readonly: bool = False) -> sqlite3.Connection:
    """A connection usable from worker threads, in autocommit mode, WAL, FULL sync."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, check_same_thread=False, isolation_level=None)
    else:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    if not readonly:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
    return conn


def hash_at(conn: sqlite3.Connection, position: int) -> Optional[str]:
    """The hash of the record at ``position``, None when the ledger has no such record."""
    row = conn.execute("SELECT hash FROM events WHERE position = ?", (position,)).fetchone()
    return row[0] if row else None


def create_schema(conn: sqlite3.Connection) -> None:
    """The events table and its two unique indexes (idempotent)."""
    db = sqlite_utils.Database(conn)
    db["events"].create(
        {
            "position": int,
            "stream": str,
            "version": int,
            "event_id": str,
            "type": str,
            "recorded_at": int,
            "prev_hash": str,
            "hash": str,
            "data": str,
        },
        pk="position",
        not_null={"stream", "version", "event_id", "type", "recorded_at", "prev_hash", "hash", "data"},
        strict=True,
        if_not_exists=True,
    )
    db["events"].create_index(["stream", "version"], unique=True, if_not_exists=True)
    db["events"].create_index(["event_id"], unique=True, if_not_exists=True)


def row_to_record(row: tuple) -> Recorded:
    """(position, stream, version, event_id, type, recorded_at, prev_hash, hash, data) -> Recorded."""
    position, stream, version, event_id, _type, recorded_at, prev_hash, hash_, data = row
    return Recorded(position, stream, version, event_id, recorded_at, prev_hash, hash_, event_from_json(data))


def iter_rows(conn: sqlite3.Connection, after: int = 0, batch_rows: int = 10_000) -> Iterator[tuple]:
    """Raw rows in position order, for tools that check the chain without decoding."""
    while True:
        rows = conn.execute(
            f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?", (after, batch_rows)
        ).fetchall()
        if not rows:
            return
        yield from rows
        after = rows[-1][0]


class _Rejected(Exception):
    """Internal: the fast path met a rejection that may be an idempotent retry."""


class SQLiteStore:
    """An EventStore in one SQLite file. Start ``run`` in a nursery before appending."""

    events_per_commit_max = 1024  # one transaction holds at most this many events
    append_queue_max = 10_000  # appends waiting for the writer; more senders wait (backpressure)
    stream_cache_max = 200_000  # stream versions remembered between transactions

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._wconn = connect(self.path)
        create_schema(self._wconn)
        self._rconn = connect(self.path)
        self._read_limiter = trio.CapacityLimiter(1)
        self._thread = WriterThread(f"ledger writer {self.path.name}")
        self._committer = GroupCommitter(self._commit, self.events_per_commit_max, self.append_queue_max)
        self._notifier = Notifier()
        self._versions: dict[str, int] = {}
        self._cache_head = -1  # head position the version cache is valid for
        self._closed = False
        self._stats = {"appends": 0, "commits": 0, "events_committed": 0}

    # --- writer ----------------------------------------------------------------------------

    async def run(self, task_status=trio.TASK_STATUS_IGNORED) -> None:
        """The writer task: commit queued appends in groups until the store is closed."""
        self._thread.start()
        try:
            await self._committer.run(task_status)
        finally:
            with trio.CancelScope(shield=True):
                await self._thread.stop()

    async def _commit(self, batches: list[list[NewEvent]]) -> list[Any]:
        outcomes, records = await self._thread.run_sync(self._commit_group, batches)
        self._stats["commits"] += 1
        self._stats["appends"] += len(batches)
        self._stats["events_committed"] += len(records)
        self._notifier.published(records)
        return outcomes

    def _commit_group(self, batches: list[list[NewEvent]]) -> tuple[list[Any], list[Recorded]]:
        try:
            return self._try_commit_group(batches, look_up_ids=False)
        except (sqlite3.IntegrityError, _Rejected):
            # An event id is already recorded (a retried append), or an append was rejected:
            # redo the group looking the ids up first, so that a retry gets the original
            # records back instead of a conflict.
            return self._try_commit_group(batches, look_up_ids=True)

    def _try_commit_group(self, batches: list[list[NewEvent]], look_up_ids: bool) -> tuple[list[Any], list[Recorded]]:
        conn = self._wconn
        conn.execute("BEGIN IMMEDIATE")
        try:
            row = conn.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
            head_position, head_hash = row if row else (0, GENESIS_HASH)
            if head_position != self._cache_head or len(self._versions) > self.stream_cache_max:
                self._versions.clear()  # another process wrote, or the cache grew too big
            existing = self._records_by_ids([n.event_id for b in batches for n in b]) if look_up_ids else {}
            seq = Sequencer(head_position, head_hash, self._stream_version, existing, time.time_ns() // 1000)
            outcomes = [seq.place(batch) for batch in batches]
            if not look_up_ids and any(isinstance(o, LedgerError) for o in outcomes):
                raise _Rejected()
            if seq.rows:
                conn.executemany(_INSERT, seq.rows)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            self._cache_head = -1
            raise
        self._versions.update(seq.versions)
        self._cache_head = seq.position
        return outcomes, seq.records

    def _stream_version(self, stream: str) -> int:
        version = self._versions.get(stream)
        if version is None:
            row = self._wconn.execute("SELECT max(version) FROM events WHERE stream = ?", (stream,)).fetchone()
            version = row[0] or 0
        return version

    def _records_by_ids(self, ids: list[str]) -> dict[str, Recorded]:
        found: dict[str, Recorded] = {}
        for start in range(0, len(ids), _IDS_PER_QUERY_MAX):
            chunk = ids[start : start + _IDS_PER_QUERY_MAX]
            marks = ",".join("?" * len(chunk))
            for row in self._wconn.execute(f"SELECT {_COLUMNS} FROM events WHERE event_id IN ({marks})", chunk):
                found[row[3]] = row_to_record(row)
        return found

    # --- the EventStore protocol -----------------------------------------------------------

    async def append(self, batch: Sequence[NewEvent]) -> list[Recorded]:
        """Queue ``batch`` for the writer and wait until it is durable (or rejected)."""
        if not batch:
            return []
        return await self._committer.submit(batch)

    async def _read(self, fn, *args):
        return await trio.to_thread.run_sync(fn, *args, limiter=self._read_limiter)

    async def read_all(self, after: int = 0, limit: int = 1000) -> list[Recorded]:
        def read() -> list[Recorded]:
            rows = self._rconn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE position > ? ORDER BY position LIMIT ?", (after, limit)
            ).fetchall()
            return [row_to_record(r) for r in rows]

        return await self._read(read)

    async def read_stream(self, stream: str) -> list[Recorded]:
        def read() -> list[Recorded]:
            rows = self._rconn.execute(
                f"SELECT {_COLUMNS} FROM events WHERE stream = ? ORDER BY version", (stream,)
            ).fetchall()
            return [row_to_record(r) for r in rows]

        return await self._read(read)

    async def head(self) -> int:
        def read() -> int:
            return self._rconn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]

        return await self._read(read)

    async def wait_for(self, position: int, timeout_s: Optional[float] = None) -> bool:
        return await self._notifier.wait_for(position, self.head, timeout_s)

    async def statistics(self) -> dict[str, Any]:
        def read() -> dict[str, Any]:
            events = self._rconn.execute("SELECT coalesce(max(position), 0) FROM events").fetchone()[0]
            streams = self._rconn.execute("SELECT count(DISTINCT stream) FROM events").fetchone()[0]
            return {"events": events, "streams": streams}

        stats = await self._read(read)
        stats.update(self._stats)
        commits = self._stats["commits"]
        stats["events_per_commit"] = round(self._stats["events_committed"] / commits, 2) if commits else 0.0
        return stats

    def subscribe(self, callback: Subscriber) -> None:
        self._notifier.subscribe(callback)

    async def aclose(self) -> None:
        """Stop taking appends, let the writer commit what is queued, close the connections."""
        if self._closed:
            return
        self._closed = True
        await self._committer.aclose()  # the writer has committed its last group and stopped
        async with self._read_limiter:
            self._wconn.close()
            self._rconn.close()


@asynccontextmanager
async def open_sqlite_store(path: str | Path) -> AsyncIterator[SQLiteStore]:
    """A running SQLiteStore for the body of the ``async with``; drained and closed after."""
    store = SQLiteStore(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)
        try:
            yield store
        finally:
            with trio.CancelScope(shield=True):
                await store.aclose()

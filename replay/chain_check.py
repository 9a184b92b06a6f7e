"""The hash chain, checked in independent pieces (so several processes can share the work).

Each row's hash covers its own ``prev_hash`` column, so the chain splits into two checks:
every row hashes to its stored ``hash`` (``fast_record_hash``; ``replay verify`` does this in
the tasks that read the rows anyway, each row by exactly one of them), and the rows link:
positions 1, 2, 3... with each ``prev_hash`` the previous row's ``hash`` (``link_range``,
reading only those three columns). ``check_range`` does both for a range of positions.
``link`` then joins ranges (each range's first ``prev_hash`` is the previous range's last
hash, the first is the genesis hash). Together this is exactly ``ledger.chain.ChainVerifier``
from position 1, and gives the same first failing position.

``fast_record_hash`` builds the canonical JSON envelope of ``ledger.chain.record_hash``
by hand (its keys are fixed and already in sorted order); the two agree byte for byte
(tests/test_replay_units.py::test_fast_record_hash_is_record_hash).
"""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Optional

import attrs
import orjson

from ledger.chain import GENESIS_HASH

_sha256 = hashlib.sha256
_dumps = orjson.dumps
_fromhex = bytes.fromhex
ENVELOPE = b'%s{"event":%s,"event_id":%s,"position":%d,"prev_hash":%s,"recorded_at":%d,"stream":%s,"version":%d}'
RANGE_EVENTS = 200_000  # positions per range task: enough work to amortise a task, small enough to balance


def fast_record_hash(prev_hash: str, position: int, stream: str, version: int, event_id: str, recorded_at: int,
                     event_json: bytes) -> str:
    """The same value as ``ledger.chain.record_hash`` with the same arguments."""
    body = ENVELOPE % (_fromhex(prev_hash), event_json, _dumps(event_id), position, _dumps(prev_hash), recorded_at,
                        _dumps(stream), version)
    return _sha256(body).hexdigest()


@attrs.frozen
class RangeResult:
    """What one range check found: its ends, and the first failure in it (if any)."""

    after: int
    upto: int
    first_prev_hash: Optional[str]  # prev_hash of the row at after + 1 (None: no rows)
    last_position: int
    last_hash: str
    bad_position: Optional[int] = None
    reason: str = ""


def check_range(conn: sqlite3.Connection, after: int, upto: int) -> RangeResult:
    """Check rows ``after < position <= upto`` (see the module docstring)."""
    cursor = conn.execute(
        "SELECT position, stream, version, event_id, recorded_at, prev_hash, hash, CAST(data AS BLOB) FROM events "
        "WHERE position > ? AND position <= ? ORDER BY position", (after, upto))
    expected, last_hash, first_prev = after + 1, "", None
    envelope, sha, dumps, fromhex = ENVELOPE, _sha256, _dumps, _fromhex
    while True:
        rows = cursor.fetchmany(20_000)
        if not rows:
            break
        for position, stream, version, event_id, recorded_at, prev_hash, hash_, data in rows:
            if position != expected:
                return RangeResult(after, upto, first_prev, expected - 1, last_hash, expected,
                                   f"position {expected} is missing (next is {position})")
            if first_prev is None:
                first_prev = prev_hash
            elif prev_hash != last_hash:
                return RangeResult(after, upto, first_prev, expected - 1, last_hash, position,
                                   "prev_hash does not match the previous record's hash")
            try:
                body = envelope % (fromhex(prev_hash), data, dumps(event_id), position, dumps(prev_hash), recorded_at,
                                   dumps(stream), version)
            except (ValueError, TypeError) as exc:
                return RangeResult(after, upto, first_prev, expected - 1, last_hash, position,
                                   f"malformed envelope ({exc})")
            if sha(body).hexdigest() != hash_:
                return RangeResult(after, upto, first_prev, expected - 1, last_hash, position,
                                   "hash does not match the record's content")
            last_hash = hash_
            expected += 1
    if expected != upto + 1:
        return RangeResult(after, upto, first_prev, expected - 1, last_hash, expected,
                           f"position {expected} is missing")
    return RangeResult(after, upto, first_prev, upto, last_hash)


def link_range(path: str, after: int, upto: int) -> RangeResult:
    """Positions ``after < position <= upto`` are all there and each names its predecessor's hash
    (hashes themselves not recomputed: see the module docstring)."""
    from ledger.sqlite import connect

    conn = connect(path, readonly=True)
    cursor = conn.execute("SELECT position, prev_hash, hash FROM events WHERE position > ? AND position <= ? "
                          "ORDER BY position", (after, upto))
    expected, last_hash, first_prev = after + 1, "", None
    try:
        while rows := cursor.fetchmany(50_000):
            for position, prev_hash, hash_ in rows:
                if position != expected:
                    return RangeResult(after, upto, first_prev, expected - 1, last_hash, expected,
                                       f"position {expected} is missing (next is {position})")
                if first_prev is None:
                    first_prev = prev_hash
                elif prev_hash != last_hash:
                    return RangeResult(after, upto, first_prev, expected - 1, last_hash, position,
                                       "prev_hash does not match the previous record's hash")
                last_hash = hash_
                expected += 1
    finally:
        conn.close()
    if expected != upto + 1:
        return RangeResult(after, upto, first_prev, expected - 1, last_hash, expected,
                           f"position {expected} is missing")
    return RangeResult(after, upto, first_prev, upto, last_hash)


def row_hash_ok(row: tuple) -> bool:
    """Whether a (position, stream, version, event_id, type, recorded_at, prev_hash, hash, data) row,
    ``data`` as bytes, hashes to its stored hash."""
    position, stream, version, event_id, _, recorded_at, prev_hash, hash_, data = row
    try:
        body = ENVELOPE % (_fromhex(prev_hash), data, _dumps(event_id), position, _dumps(prev_hash), recorded_at,
                            _dumps(stream), version)
    except (ValueError, TypeError):
        return False
    return _sha256(body).hexdigest() == hash_


def check_range_file(path: str, after: int, upto: int) -> RangeResult:
    """``check_range`` on its own read-only connection to the ledger at ``path`` (a task for a worker)."""
    from ledger.sqlite import connect

    conn = connect(path, readonly=True)
    try:
        return check_range(conn, after, upto)
    finally:
        conn.close()


def ranges(head: int, size: int = RANGE_EVENTS) -> list[tuple[int, int]]:
    """(after, upto) pairs covering positions 1..head."""
    return [(start, min(start + size, head)) for start in range(0, head, size)]


def link(results: list[RangeResult]) -> tuple[Optional[int], str, str]:
    """(first bad position or None, its reason, head hash) over range results in order."""
    previous_hash = GENESIS_HASH
    for result in results:
        if result.first_prev_hash is not None and result.first_prev_hash != previous_hash:
            return result.after + 1, "prev_hash does not match the previous record's hash", previous_hash
        if result.bad_position is not None:
            return result.bad_position, result.reason, previous_hash
        previous_hash = result.last_hash
    return None, "", previous_hash

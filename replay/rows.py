"""Reading the ledger file for replay: position-bounded scans, fast decoding, which projection needs what.

Every tool here reads a snapshot bounded by the head position it saw first, so a ledger
still being appended to (``verify --url`` against a running gateway) reads the same way
as a copy.

Decoding: ``decode(position, type_column, data)`` returns the event, or raises BadRow. The
stored ``type`` column is not covered by the hash chain, so it must equal the data's own
tag. A fast path builds the event directly when the stored JSON has exactly the canonical
shape (every field, each of its exact JSON type: the same object the codec builds, about
three times faster); anything else goes through the codec, which decides.

``RESPONSE_ONLY`` are the types only the responses projection reacts to, so the other folds
skip them (tests/test_replay_units.py::test_other_folds_may_skip_response_only_events checks
that skipping changes nothing).
"""

from __future__ import annotations

import sqlite3
import typing
from typing import Any, Callable, Iterator, Optional, Sequence, Union

import attrs
import orjson

from ledger.codec import event_from_dict
from ledger.errors import LedgerError
from ledger.events import EVENT_TYPES, TAGS, ArgumentsDelta, Event, ItemFinished, ItemStarted, RequestKeyed, TextDelta
from ledger.store import Recorded

COLUMNS = ("position", "stream", "version", "event_id", "type", "recorded_at", "prev_hash", "hash", "data")
FETCH_ROWS = 20_000  # rows per fetchmany: big enough to amortise the call, small enough for memory

# The bulk of any ledger: only the responses projection (which folds every event naming a
# response) reacts to these; every other projection ignores them. Every other type goes to
# every projection, so a new event type can never be skipped by mistake.
RESPONSE_ONLY = (TextDelta, ArgumentsDelta, ItemStarted, ItemFinished, RequestKeyed)


def tags(*classes: type) -> tuple[str, ...]:
    return tuple(TAGS[c] for c in classes)


RESPONSE_ONLY_TAGS = tags(*RESPONSE_ONLY)


class BadRow(LedgerError):
    """A stored row that does not decode, or whose ``type`` column disagrees with its data."""

    def __init__(self, position: int, reason: str) -> None:
        super().__init__(f"position {position}: {reason}")
        self.position = position
        self.reason = reason


def head(conn: sqlite3.Connection) -> tuple[int, str]:
    """(position, hash) of the last record, (0, "") for an empty ledger."""
    row = conn.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
    return (row[0], row[1]) if row else (0, "")


def scan(conn: sqlite3.Connection, after: int, upto: int, only: Optional[Sequence[str]] = None,
         without: Optional[Sequence[str]] = None, blob: bool = False,
         or_stream_not: Optional[str] = None) -> Iterator[tuple]:
    """Rows (COLUMNS) with ``after < position <= upto`` in position order, optionally of some types only
    (``or_stream_not``: and every row of the streams not starting so, whatever its type column says);
    ``blob``: ``data`` as bytes (no text decoding; what the decoder and the hash want)."""
    where, args = "position > ? AND position <= ?", [after, upto]
    types = ""
    if only is not None:
        types, args = f"type IN ({','.join('?' * len(only))})", args + list(only)
    if without is not None:
        types, args = f"type NOT IN ({','.join('?' * len(without))})", args + list(without)
    if types and or_stream_not is not None:
        types, args = f"({types} OR substr(stream, 1, ?) != ?)", args + [len(or_stream_not), or_stream_not]
    if types:
        where += " AND " + types
    columns = ", ".join(COLUMNS[:-1]) + (", CAST(data AS BLOB)" if blob else ", data")
    cursor = conn.execute(f"SELECT {columns} FROM events WHERE {where} ORDER BY position", args)
    while True:
        rows = cursor.fetchmany(FETCH_ROWS)
        if not rows:
            return
        yield from rows


_loads = orjson.loads
_NO = object()  # "not the canonical shape": let the codec decide


def _price_table(x: Any) -> bool:
    return all(type(v) is dict and all(type(p) is str for p in v.values()) for v in x.values())


def _test(tp: Any, var: str, env: dict) -> Optional[str]:
    """Python source true when ``var`` is NOT a canonical JSON value of ``tp``; None if ``tp`` is unknown here."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp in (str, int, bool):
        return f"type({var}) is not {tp.__name__}"
    if tp is Any:
        return "False"
    if origin is Union and len(args) == 2 and type(None) in args:
        inner = _test(args[0] if args[1] is type(None) else args[1], var, env)
        return None if inner is None else f"({var} is not None and ({inner}))"
    if origin is dict and args == (str, Any):
        return f"type({var}) is not dict"
    if origin is list and typing.get_origin(args[0]) is dict and typing.get_args(args[0]) == (str, Any):
        return f"(type({var}) is not list or any(type(v) is not dict for v in {var}))"
    if origin is dict and args == (str, dict[str, str]):
        env["_price_table"] = _price_table
        return f"(type({var}) is not dict or not _price_table({var}))"
    return None


def _builder(cls: type, tagged: bool = True) -> Optional[Callable[[dict], Any]]:
    """Compile a function that builds ``cls`` straight from a dict holding exactly its fields (and
    its tag), each of its exact JSON type, and returns _NO for any other shape. None if a field's
    type is not one the fast path knows (that class always goes through the codec)."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in attrs.fields(cls)]
    env: dict[str, Any] = {"cls": cls, "_NO": _NO, "KEYS": frozenset(names) | ({"type"} if tagged else set())}
    lines = ["def build(value):", "    if value.keys() != KEYS: return _NO"]
    for i, name in enumerate(names):
        tp, var = hints[name], f"a{i}"
        lines.append(f"    {var} = value[{name!r}]")
        args = typing.get_args(tp)
        optional = typing.get_origin(tp) is Union and len(args) == 2 and type(None) in args
        inner = (args[0] if args[1] is type(None) else args[1]) if optional else tp
        if attrs.has(inner):
            nested = _builder(inner, tagged=False)
            if nested is None:
                return None
            env[f"b{i}"] = nested
            indent = "    "
            if optional:
                lines.append(f"    if {var} is not None:")
                indent = "        "
            lines.append(f"{indent}if type({var}) is not dict: return _NO")
            lines.append(f"{indent}{var} = b{i}({var})")
            lines.append(f"{indent}if {var} is _NO: return _NO")
            continue
        test = _test(tp, var, env)
        if test is None:
            return None
        lines.append(f"    if {test}: return _NO")
    lines.append(f"    return cls({', '.join(f'a{i}' for i in range(len(names)))})")
    exec("\n".join(lines), env)  # noqa: S102 - generated from the event classes' own field types
    return env["build"]


_BUILDERS = {tag: _builder(cls) for tag, cls in EVENT_TYPES.items()}


def decode(position: int, type_: str, data: str | bytes) -> Event:
    """The event of a stored row (see the module docstring); BadRow if it does not decode."""
    try:
        value = _loads(data)
    except orjson.JSONDecodeError as exc:
        raise BadRow(position, f"data is not JSON ({exc})") from None
    if type(value) is not dict or value.get("type") != type_:
        tag = value.get("type") if isinstance(value, dict) else None
        raise BadRow(position, f"the type column says {type_!r} but the data is {tag!r}")
    build = _BUILDERS.get(type_)
    if build is not None:
        event = build(value)
        if event is not _NO:
            return event
    try:
        return event_from_dict(value)
    except (LedgerError, ValueError) as exc:
        raise BadRow(position, f"does not decode: {exc}") from None


def record(row: tuple) -> Recorded:
    """A full row (COLUMNS order) as a Recorded, decoded."""
    position, stream, version, event_id, type_, recorded_at, prev_hash, hash_, data = row
    return Recorded(position, stream, version, event_id, recorded_at, prev_hash, hash_, decode(position, type_, data))


def row_json(row: tuple) -> dict:
    """A stored row as a JSON object with its exact column values (``data`` verbatim)."""
    return dict(zip(COLUMNS, row))

"""The rebuild half of ``replay verify``: independent tasks over one ledger file, each from position 0.

    fold_accounts   tenancy, prices, money, rates and usage projections (every event but the
                    response-only ones), with the money invariants (replay.money_check), every
                    charge recomputed (replay.charges), stream versions of non-response streams,
                    and the materialised file's tables rebuilt up to its checkpoint
    fold_streams    the response streams in a range of stream names, in position order: each
                    row's chain hash recomputed, each stream's versions 1, 2, 3..., and every
                    stream folded alone through the one renderer (projections.wire.view_class:
                    the fold the history projection makes), with ``render`` its bytes too
    fold_responses  the whole responses projection, for its fingerprint (``verify --url``)

Every row's hash is recomputed by exactly one task: rows of response streams by
fold_streams, all others by fold_accounts (chosen by stream name, since the type column is
not covered by the hash); replay.chain_check.link_range checks the links between rows.

Each task opens the file itself (read-only) and reads up to the same ``head`` position, so
the tasks can run in separate processes; their results are small picklable summaries.
Problems are (position, message) pairs; a task stops at the first row it cannot decode.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Optional

import attrs
import orjson

from ledger.sqlite import connect
from projections.catalog import build_all
from projections.wire import view_class
from replay.charges import ChargeChecker, Difference
from replay.money_check import MoneyChecker, Problem
from ledger.store import Recorded
from replay.chain_check import ENVELOPE, row_hash_ok
from replay.rows import RESPONSE_ONLY_TAGS, BadRow, decode, record, scan

HASH_MISMATCH = "hash does not match the record's content"


def stream_bounds(shares: int) -> list[str]:
    """Bounds splitting the response streams (every name in ["response-", "response.")) into ``shares``
    ranges, even for the usual "response-resp_<hex>" ids (any other id still lands in one of them).
    Each range task scans the whole table, so fewer, larger shares cost less in all."""
    inner = [f"response-resp_{16 * i // shares:x}" for i in range(1, shares)]
    return ["response-", *inner, "response."]


@attrs.frozen
class AccountsResult:
    fingerprints: dict[str, Any]
    live_fingerprints: Optional[dict[str, Any]]
    problems: list[Problem]
    differences: list[Difference]
    charges_checked: int
    charged_micros: int
    in_flight: list[tuple[str, str]]
    counts: dict[str, int]
    materialised: list[Problem]


def fold_accounts(path: str, head: int, live_position: Optional[int] = None,
                  materialised: Optional[tuple[str, int]] = None) -> AccountsResult:
    """Fold every projection but responses, checking money, charges and the materialised file."""
    from replay.materialise import Materialiser

    conn = connect(path, readonly=True)
    projections = {name: p for name, p in build_all().items() if name != "responses"}
    folds = list(projections.values())
    money_check = MoneyChecker(projections["money"])
    charges = ChargeChecker()
    mat = Materialiser() if materialised else None
    mat_upto = materialised[1] if materialised else 0
    versions: dict[str, int] = {}
    problems: list[Problem] = []
    live: Optional[dict[str, Any]] = None
    for row in scan(conn, 0, head, without=RESPONSE_ONLY_TAGS, blob=True, or_stream_not="response-"):
        position, stream, version, event_id, type_, recorded_at, prev_hash, hash_, data = row
        if live_position is not None and live is None and position > live_position:
            live = {name: p.fingerprint() for name, p in projections.items()}
        if not stream.startswith("response-"):  # rows of response streams: fold_streams hashes them
            if not row_hash_ok(row):
                problems.append((position, f"hash chain broken at position {position}: {HASH_MISMATCH}"))
            if version != versions.get(stream, 0) + 1:
                problems.append((position, f"stream {stream} goes from version {versions.get(stream, 0)} to {version}"))
            versions[stream] = version
        try:
            recorded = Recorded(position, stream, version, event_id, recorded_at, prev_hash, hash_,
                                decode(position, type_, data))
        except BadRow as bad:
            problems.append((bad.position, bad.reason))
            break
        for projection in folds:
            projection.apply(recorded)
        money_check.apply(recorded)
        charges.apply(recorded)
        if mat is not None and position <= mat_upto:
            mat.apply(recorded)
    if live_position is not None and live is None:
        live = {name: p.fingerprint() for name, p in projections.items()}
    in_flight = money_check.finish()
    problems += money_check.problems
    mat_problems = _compare_materialised(materialised[0], mat, mat_upto) if mat is not None else []
    tenancy, money = projections["tenancy"], projections["money"]
    counts = {"platforms": len(tenancy.platforms), "wallets": len(money.wallets), "budgets": len(money.budgets),
              "price_versions": len(charges.versions)}
    return AccountsResult({name: p.fingerprint() for name, p in projections.items()}, live, problems,
                          charges.differences, charges.checked, charges.recorded_micros, in_flight, counts,
                          mat_problems)


def _compare_materialised(path: str, rebuilt, upto: int) -> list[Problem]:
    """The file's tables equal the same folds rebuilt here from position 0 to its checkpoint."""
    import sqlite3

    from replay.materialise import TABLES, open_db

    fresh = open_db(Path(":memory:"))
    rebuilt.flush(fresh, upto, "")
    stored = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    problems: list[Problem] = []
    try:
        for table, key in TABLES.items():
            query = f"SELECT * FROM {table} ORDER BY {key}"
            ours, theirs = fresh.execute(query).fetchall(), stored.execute(query).fetchall()
            if ours != theirs:
                bad = next((a, b) for a, b in zip(ours + [None] * len(theirs), theirs + [None] * len(ours)) if a != b)
                where = (bad[0] or bad[1])[0]
                problems.append((where if isinstance(where, int) else None,
                                 f"materialised table {table} differs from the rebuild at {where!r} "
                                 f"(stored {bad[1]!r}, rebuilt {bad[0]!r})"))
    finally:
        stored.close()
    return problems


@attrs.frozen
class StreamsResult:
    responses: int
    bytes_rendered: int
    problems: list[Problem]


def fold_streams(path: str, head: int, low: str, high: str, render: bool = False) -> StreamsResult:
    """Check and fold the response streams ``low <= stream < high`` (see the module docstring); with
    ``render``, through the renderer's byte-producing path too."""
    conn = connect(path, readonly=True)
    cursor = conn.execute(
        "SELECT position, stream, version, event_id, type, recorded_at, prev_hash, hash, CAST(data AS BLOB) "
        "FROM events WHERE position <= ? AND stream >= ? AND stream < ? ORDER BY position", (head, low, high))
    views: dict[str, Any] = {}  # stream -> its view, folded through the one renderer
    versions: dict[str, int] = {}
    quoted: dict[str, bytes] = {}  # stream -> its JSON string, for the hash envelope
    problems: list[Problem] = []
    broken: set[str] = set()
    rendered = 0
    # The hot loop of verify: the row's hash, its version, its event and the fold, inlined.
    envelope, sha256, fromhex, dumps = ENVELOPE, hashlib.sha256, bytes.fromhex, orjson.dumps
    while rows := cursor.fetchmany(20_000):
        for position, stream, version, event_id, type_, recorded_at, prev_hash, hash_, data in rows:
            name = quoted.get(stream)
            if name is None:
                name = quoted[stream] = dumps(stream)
            try:
                ok = sha256(envelope % (fromhex(prev_hash), data, dumps(event_id), position, dumps(prev_hash),
                                        recorded_at, name, version)).hexdigest() == hash_
            except (ValueError, TypeError):
                ok = False
            if not ok:
                problems.append((position, f"hash chain broken at position {position}: {HASH_MISMATCH}"))
                broken.add(stream)
            if stream in broken:
                continue
            if version != versions.get(stream, 0) + 1:
                problems.append((position, f"stream {stream} goes from version {versions.get(stream, 0)} to {version}"))
                broken.add(stream)
                continue
            versions[stream] = version
            try:
                recorded = Recorded(position, stream, version, event_id, recorded_at, prev_hash, hash_,
                                    decode(position, type_, data))
                view = views.get(stream)
                if view is None:
                    view, out = view_class(recorded.event).start(recorded, render)
                    views[stream] = view
                else:
                    out = view.apply(recorded, render)
                rendered += len(out)
            except BadRow as bad:
                problems.append((bad.position, bad.reason))
                broken.add(stream)
            except (KeyError, IndexError, TypeError, AttributeError, AssertionError) as exc:
                problems.append((position, f"the renderer cannot fold this event of {stream} ({exc!r})"))
                broken.add(stream)
    conn.close()
    return StreamsResult(len(views), rendered, problems)


@attrs.frozen
class ResponsesResult:
    fingerprint: Any
    live_fingerprint: Optional[Any]
    problems: list[Problem]


def fold_responses(path: str, head: int, live_position: Optional[int] = None) -> ResponsesResult:
    """The whole responses projection in position order, for its fingerprint (at ``live_position`` too)."""
    conn = connect(path, readonly=True)
    responses = build_all()["responses"]
    problems: list[Problem] = []
    live = None
    for row in scan(conn, 0, head, blob=True):
        if live_position is not None and live is None and row[0] > live_position:
            live = responses.fingerprint()
        try:
            responses.apply(record(row))
        except BadRow as bad:
            problems.append((bad.position, bad.reason))
            break
        except (KeyError, IndexError, TypeError, AttributeError, AssertionError) as exc:
            problems.append((row[0], f"the responses projection cannot fold this event ({exc!r})"))
            break
    if live_position is not None and live is None:
        live = responses.fingerprint()
    return ResponsesResult(responses.fingerprint(), live, problems)

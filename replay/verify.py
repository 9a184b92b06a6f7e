"""``replay verify``: the ledger's own evidence, checked from position 0.

1. The hash chain: every record hashes to its stored hash (recomputed by the task that reads
   it anyway) and continues its predecessor (replay.chain_check, in parallel ranges).
2. Every event decodes with this build's codec, and its stored ``type`` column is its tag.
3. Every projection is rebuilt from position 0 (replay.fold): the money and tenancy side
   with the money invariants (every hold released or its request still in flight; every
   balance the sum of its transactions; money settled = usage charged) and every charge
   recomputed from its recorded usage, price version and calculator (replay.charges).
4. Every response stream folds alone through the one renderer (``render``: producing its SSE
   bytes too, which costs a third more); every stream's versions run 1, 2, 3... in position
   order. ``replay stream`` renders any one response's bytes.
5. With ``live`` fingerprints (from a running gateway's ``/healthz?projections=1``), the
   rebuilt projections at that same position equal the live ones; with a materialised
   projections file, its tables equal the same folds rebuilt up to its checkpoint.
6. The head anchor (``<ledger>.head``, ledger/head_file.py, or ``anchor_file``): the ledger
   still holds the record it names with the same hash, so a tail truncated (or rewritten)
   since the gateway last wrote it is caught; anchors the gateway set aside at start-up as
   broken are reported too. It is read before the ledger's head, so a running gateway's
   newer anchor never looks like a truncation. Without one, the summary says the tail's
   truncation cannot be checked.
7. With ``against`` (an export's manifest), the ledger still holds the exported head record
   and its first ``tree_size`` records hash to the manifest's Merkle root, so a ledger
   truncated (or rewritten) since the export is caught.

Reads the SQLite file only; works on a copy with no server running. Problems carry the
position where the ledger stops holding; ``first_bad_position`` is the smallest.
"""

from __future__ import annotations

import functools
import sqlite3
from pathlib import Path
from typing import Any, Optional

import attrs

from ledger import head_file
from ledger.sqlite import connect, hash_at
from replay import chain_check, fold, rows
from replay.charges import Difference
from replay.merkle import root_of
from replay.parallel import Progress, default_jobs, run_tasks

PROBLEMS_SHOWN_MAX = 50  # problems listed in the summary; the count says how many more


@attrs.define
class VerifyReport:
    events: int = 0
    head_hash: str = ""
    platforms: int = 0
    responses: int = 0
    wallets: int = 0
    budgets: int = 0
    price_versions: int = 0
    charges: int = 0
    charged_micros: int = 0
    in_flight: list[tuple[str, str]] = attrs.field(factory=list)
    differences: list[Difference] = attrs.field(factory=list)
    merkle_root: Optional[str] = None
    materialised_position: Optional[int] = None
    problems: list[tuple[Optional[int], str]] = attrs.field(factory=list)
    chain_break: Optional[int] = None  # where the hash chain stops; what the folds find past it is hearsay
    anchor_file: Optional[str] = None  # the head anchor checked (None: there was none)
    anchor: Optional[head_file.Anchor] = None

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first_bad_position(self) -> Optional[int]:
        """The chain's first broken position, else the earliest position of any problem."""
        if self.chain_break is not None:
            return self.chain_break
        positions = [p for p, _ in self.problems if p is not None]
        return min(positions) if positions else None

    def fail(self, message: str, position: Optional[int] = None) -> None:
        self.problems.append((position, message))

    def sorted_problems(self) -> list[tuple[Optional[int], str]]:
        """The chain's break first (everything else may follow from it), then by position."""
        return sorted(self.problems, key=lambda p: (not p[1].startswith("hash chain broken"), p[0] is None, p[0] or 0))


def ledger_root(path: str, size: int) -> tuple[str, int, Optional[str]]:
    """(Merkle root hex of records 1..size, leaves found, hash of record ``size``)."""
    conn = connect(path, readonly=True)
    hashes = (bytes.fromhex(h) for (h,) in conn.execute(
        "SELECT hash FROM events WHERE position <= ? ORDER BY position", (size,)))
    root, count = root_of(hashes)
    return root.hex(), count, hash_at(conn, size)


def _materialised(path: Path, conn: sqlite3.Connection, head: int, report: VerifyReport) -> Optional[tuple[str, int]]:
    """(file, checkpoint) of the materialised projections to compare, if the file exists and fits."""
    if not path.exists():
        return None
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        found = db.execute("SELECT min(position), min(hash) FROM checkpoints").fetchone()
        db.close()
    except sqlite3.Error as exc:
        report.fail(f"materialised projections {path}: unreadable ({exc})")
        return None
    position, hash_ = found if found and found[0] is not None else (0, "")
    report.materialised_position = position
    if position > head:
        report.fail(f"materialised projections {path} reached position {position}, beyond this ledger's head "
                    f"{head}: the ledger lost its tail", head + 1)
        return None
    if position and hash_at(conn, position) != hash_:
        report.fail(f"materialised projections {path}: the ledger's record {position} is not the one they were "
                    "built from", position)
        return None
    return str(path), position


def _read_anchors(path: str, anchor_file: Optional[Path], report: VerifyReport) -> Optional[head_file.Anchor]:
    """The head anchor (None if absent or unreadable, the latter a problem); set-aside anchors are problems."""
    file = Path(anchor_file) if anchor_file is not None else head_file.anchor_path(path)
    for rejected in head_file.rejected_paths(path):
        report.fail(f"the gateway found its head anchor broken at start-up and set it aside as {rejected}: the "
                    "ledger was truncated, rewritten or restored while it was stopped (remove the file once "
                    "that is explained)")
    try:
        anchor = head_file.read_anchor(file)
    except head_file.AnchorUnreadable as exc:
        report.anchor_file = str(file)
        report.fail(str(exc))
        return None
    if anchor is not None:
        report.anchor_file, report.anchor = str(file), anchor
    elif anchor_file is not None:
        report.fail(f"no head anchor at {file}")
    return anchor


def verify_ledger(path: str | Path, live: Optional[dict[str, Any]] = None, jobs: Optional[int] = None,
                  against: Optional[dict[str, Any]] = None, projections_file: Optional[Path] = None,
                  render: bool = False, anchor_file: Optional[Path] = None) -> VerifyReport:
    """Run every check (see the module docstring) on the ledger file at ``path``."""
    path = str(path)
    report = VerifyReport()
    anchor = _read_anchors(path, anchor_file, report)  # before the head: the gateway may append meanwhile
    conn = connect(path, readonly=True)
    head, head_hash = rows.head(conn)
    report.events, report.head_hash = head, head_hash
    if anchor is not None:
        broken = head_file.check(anchor, head, functools.partial(hash_at, conn))
        if broken is not None:
            report.fail(f"head anchor {report.anchor_file}: {broken[1]}", broken[0])
    live_position = live.get("position") if live is not None else None
    materialised = _materialised(projections_file, conn, head, report) if projections_file else None
    conn.close()
    if live_position is not None and live_position > head:
        report.fail(f"the live gateway is at position {live_position}, beyond this ledger's {head}", head + 1)
        live_position = None
    jobs = jobs if jobs is not None else default_jobs(head)
    bounds = fold.stream_bounds(max(1, jobs))
    tasks: list[tuple] = [(fold.fold_accounts, (path, head, live_position, materialised))]
    tasks += [(fold.fold_streams, (path, head, lo, hi, render)) for lo, hi in zip(bounds, bounds[1:])]
    extra: dict[str, int] = {}
    if live is not None:
        extra["responses"] = len(tasks)
        tasks.append((fold.fold_responses, (path, head, live_position)))
    if against is not None:
        extra["against"] = len(tasks)
        tasks.append((ledger_root, (path, int(against["tree_size"]))))
    first_range = len(tasks)
    tasks += [(chain_check.link_range, (path, a, b)) for a, b in chain_check.ranges(head)]
    progress = Progress("verify", len(tasks), " tasks")
    try:
        results = run_tasks(tasks, jobs, lambda i: progress.advance(1 if i >= 0 else 0))
    finally:
        progress.close()
    bad, reason, _ = chain_check.link(results[first_range:])
    if bad is not None:
        report.fail(f"hash chain broken at position {bad}: {reason}", bad)
    if against is not None:
        _check_against(against, results[extra["against"]], head, report)
    _assemble(report, results[0], results[1:len(bounds)], results[extra["responses"]] if live else None, live)
    breaks = [p for p, message in report.problems if p is not None and message.startswith("hash chain broken")]
    report.chain_break = min(breaks) if breaks else None
    return report


def _check_against(against: dict[str, Any], found: tuple[str, int, Optional[str]], head: int,
                   report: VerifyReport) -> None:
    root, count, hash_at_size = found
    size, expected_hash = int(against["tree_size"]), against.get("head_hash")
    report.merkle_root = root
    if count < size:
        report.fail(f"the ledger ends at position {head}, but the export's manifest recorded position {size} "
                    f"(head {str(expected_hash)[:16]}...): its tail was truncated", head + 1)
        return
    if expected_hash is not None and hash_at_size != expected_hash:
        report.fail(f"record {size} is not the head the export recorded (ledger {str(hash_at_size)[:16]}..., "
                    f"manifest {expected_hash[:16]}...)", size)
    if root != against["root"]:
        report.fail(f"records 1..{size} give Merkle root {root[:16]}..., the export recorded "
                    f"{against['root'][:16]}...: the ledger was rewritten since the export", size)


def _assemble(report: VerifyReport, accounts: fold.AccountsResult, streams: list[fold.StreamsResult],
              responses: Optional[fold.ResponsesResult], live: Optional[dict[str, Any]]) -> None:
    for position, message in accounts.problems + accounts.materialised:
        report.fail(message, position)
    for result in streams:
        for position, message in result.problems:
            report.fail(message, position)
    for difference in accounts.differences:
        report.fail(f"charge differs: {difference.line()}", difference.position)
    report.differences = accounts.differences
    report.charges, report.charged_micros = accounts.charges_checked, accounts.charged_micros
    report.in_flight = accounts.in_flight
    report.platforms, report.wallets = accounts.counts["platforms"], accounts.counts["wallets"]
    report.budgets, report.price_versions = accounts.counts["budgets"], accounts.counts["price_versions"]
    report.responses = sum(r.responses for r in streams)
    if live is not None and responses is not None and accounts.live_fingerprints is not None:
        for position, message in responses.problems:
            report.fail(message, position)
        rebuilt = dict(accounts.live_fingerprints, responses=responses.live_fingerprint)
        for name, fingerprint in live.get("projections", {}).items():
            if _jsonish(rebuilt.get(name)) != _jsonish(fingerprint):
                report.fail(f"projection {name!r} rebuilt from 0 differs from the live one at position "
                            f"{live.get('position')}", live.get("position"))


def _jsonish(value: Any) -> Any:
    """Tuples and lists compare equal after a JSON round trip; normalise both sides."""
    if isinstance(value, (list, tuple)):
        return [_jsonish(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonish(v) for k, v in value.items()}
    return value

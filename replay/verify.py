"""``replay verify``: the ledger's own evidence, checked from position 0.

1. The hash chain: every record continues its predecessor (ledger.chain).
2. Every event decodes with this build's codec.
3. The projections rebuilt from position 0 agree with each other's paths: each response's
   stream folded alone with the wire renderer gives the same Response object as the
   history projection (the one-renderer invariant).
4. With ``live`` fingerprints (from a running gateway's ``/healthz?projections=1``), the
   rebuilt projections up to that same position equal the live ones.

Reads the SQLite file only; works on a copy with no server running.
"""

from __future__ import annotations

import sqlite3
from typing import Any, Optional

import attrs

from ledger.chain import ChainVerifier
from ledger.codec import event_from_json
from ledger.errors import ChainBroken, LedgerError
from ledger.sqlite import iter_rows
from ledger.store import Recorded
from projections.catalog import build_all
from projections.responses import ResponsesProjection
from projections.wire import ResponseView


@attrs.define
class VerifyReport:
    events: int = 0
    head_hash: str = ""
    streams: int = 0
    responses: int = 0
    platforms: int = 0
    problems: list[str] = attrs.field(factory=list)
    first_bad_position: Optional[int] = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def fail(self, message: str, position: Optional[int] = None) -> None:
        self.problems.append(message)
        if position is not None and (self.first_bad_position is None or position < self.first_bad_position):
            self.first_bad_position = position


def verify_ledger(conn: sqlite3.Connection, live: Optional[dict[str, Any]] = None) -> VerifyReport:
    """Check the chain, decode and fold everything; compare with ``live`` if given."""
    report = VerifyReport()
    chain = ChainVerifier()
    built = build_all()
    responses, tenancy = built["responses"], built["tenancy"]
    projections = list(built.values())
    streams: dict[str, list[Recorded]] = {}
    live_position = live.get("position") if live else None
    live_projections: Optional[dict[str, Any]] = None
    for row in iter_rows(conn):
        position, stream, version, event_id, _type, recorded_at, prev_hash, hash_, data = row
        try:
            chain.check(position, stream, version, event_id, recorded_at, prev_hash, hash_, data.encode())
            event = event_from_json(data)
        except (ChainBroken, LedgerError, ValueError) as exc:
            report.fail(str(exc), position)
            break
        recorded = Recorded(position, stream, version, event_id, recorded_at, prev_hash, hash_, event)
        for projection in projections:
            projection.apply(recorded)
        if stream.startswith("response-"):
            streams.setdefault(stream, []).append(recorded)
        report.events = position
        if live_position is not None and position == live_position:
            live_projections = {p.name: p.fingerprint() for p in projections}
    report.head_hash = chain.hash
    report.streams = len(streams)
    report.responses = len(responses.views)
    report.platforms = len(tenancy.platforms)
    if report.ok:
        _check_renderer(streams, responses, report)
    if live is not None and report.ok:
        if live_position == 0:
            live_projections = {name: p.fingerprint() for name, p in build_all().items()}
        if live_projections is None:
            report.fail(f"the live gateway is at position {live_position}, beyond this ledger's {report.events}")
        else:
            for name, fingerprint in live["projections"].items():
                if _jsonish(live_projections.get(name)) != _jsonish(fingerprint):
                    report.fail(f"projection {name!r} rebuilt from 0 differs from the live one at position "
                                f"{live_position}", live_position)
    return report


def _check_renderer(streams: dict[str, list[Recorded]], responses: ResponsesProjection, report: VerifyReport) -> None:
    for records in streams.values():
        view, _ = ResponseView.start(records[0])
        for recorded in records[1:]:
            view.apply(recorded)
        history = responses.views.get(view.response_id)
        if history is None or history.response_object() != view.response_object():
            report.fail(f"response {view.response_id}: the rendered stream and the history projection disagree",
                        records[-1].position)


def _jsonish(value: Any) -> Any:
    """Tuples and lists compare equal after a JSON round trip; normalise both sides."""
    if isinstance(value, (list, tuple)):
        return [_jsonish(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonish(v) for k, v in value.items()}
    return value

"""What a dispute pack holds, shared by ``replay export`` (writing) and ``replay verify-export`` (checking).

A pack is a directory:

    events.jsonl    the selected events, in ledger order, one stored row per line: every column
                    exactly as stored (``data`` is the event's canonical JSON, verbatim), chain
                    hashes included, so each record's hash can be recomputed from its fields
    prices.jsonl    the price-table versions the selected charges name, as stored rows too
    proofs.jsonl    per row of both files, in position order: {"position", "path"}, the RFC 6962
                    inclusion proof of that record's hash in the Merkle tree of the whole ledger
    manifest.json   selection, counts, totals, first and last position, the ledger's head
                    (position and hash) and Merkle root at export time, the price versions,
                    which streams are complete, and each file's SHA-256 and line count

The Merkle tree's leaf i is the 32-byte chain hash of ledger position i + 1; its size is the
head position. One tenant's events are proven against the root while every other tenant's
stay out of the pack. Publish or send the root through another channel (an invoice, a
statement): ``verify-export --root`` then ties the pack to it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import attrs

from ledger.events import BudgetToppedUp, HoldPlaced, HoldReleased, ResponseAccepted, UsageCharged, WalletCredited
from ledger.store import Recorded

FORMAT = "assistiv-dispute-pack/1"
EVENTS_FILE, PRICES_FILE, PROOFS_FILE, MANIFEST_FILE = "events.jsonl", "prices.jsonl", "proofs.jsonl", "manifest.json"
SPEC = {
    "chain": "hash = SHA-256(bytes.fromhex(prev_hash) || canonical JSON of {event, event_id, position, prev_hash, "
             "recorded_at, stream, version}); canonical JSON = RFC 8785 (keys sorted, no whitespace, UTF-8); "
             "event = the row's data, verbatim; the first prev_hash is 64 zeros",
    "merkle": "RFC 6962 section 2.1 (RFC 9162 section 2.1): leaf = SHA-256(0x00 || bytes.fromhex(hash)), "
              "node = SHA-256(0x01 || left || right); leaf i is ledger position i + 1; tree size = head position",
}


@attrs.frozen
class Selection:
    """One tenant (platform, optionally one end user) over [from_s, to_s) of recorded time."""

    platform_id: str
    end_user_id: Optional[str] = None
    from_s: Optional[int] = None
    to_s: Optional[int] = None

    def in_time(self, at_s: int) -> bool:
        return (self.from_s is None or at_s >= self.from_s) and (self.to_s is None or at_s < self.to_s)

    def owns(self, event: Any) -> bool:
        """Whether an event outside response streams belongs to this tenant (time aside)."""
        if getattr(event, "platform_id", None) != self.platform_id:
            return False
        return self.end_user_id is None or getattr(event, "end_user_id", None) == self.end_user_id

    def owns_response(self, accepted: ResponseAccepted) -> bool:
        return accepted.platform_id == self.platform_id and (self.end_user_id is None
                                                             or accepted.end_user_id == self.end_user_id)

    def as_json(self) -> dict[str, Any]:
        from replay.timeparse import iso

        return {"platform_id": self.platform_id, "end_user_id": self.end_user_id, "from": iso(self.from_s),
                "to": iso(self.to_s), "from_s": self.from_s, "to_s": self.to_s,
                "rule": "events of the tenant recorded in [from, to); a response is included whole when its "
                        "response.accepted is in [from, to)"}


def totals(records: list[Recorded]) -> dict[str, Any]:
    """The sums a manifest states and verify-export recomputes."""
    out: dict[str, Any] = {"responses": 0, "charges": 0, "charged_micros": 0, "input_tokens": 0,
                           "cached_input_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0,
                           "charges_by_billing_status": {}, "wallet_credited_micros": 0,
                           "wallet_settled_micros": 0, "budget_topped_up_micros": 0, "budget_settled_micros": 0,
                           "holds_placed": 0, "holds_released": 0}
    for recorded in records:
        event = recorded.event
        if isinstance(event, ResponseAccepted):
            out["responses"] += 1
        elif isinstance(event, UsageCharged):
            out["charges"] += 1
            out["charged_micros"] += event.cost_micros
            for name in ("input_tokens", "cached_input_tokens", "output_tokens", "reasoning_tokens"):
                out[name] += getattr(event.usage, name)
            by = out["charges_by_billing_status"]
            by[event.billing_status] = by.get(event.billing_status, 0) + 1
        elif isinstance(event, WalletCredited):
            out["wallet_credited_micros"] += event.amount_micros
        elif isinstance(event, BudgetToppedUp):
            out["budget_topped_up_micros"] += event.amount_micros
        elif isinstance(event, HoldPlaced):
            out["holds_placed"] += 1
        elif isinstance(event, HoldReleased):
            out["holds_released"] += 1
            if event.outcome == "settled":
                out[f"{event.account}_settled_micros"] = out.get(f"{event.account}_settled_micros", 0) + \
                    event.charged_micros
    return out


def by_type(rows: list[tuple]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row[4]] = counts.get(row[4], 0) + 1
    return dict(sorted(counts.items()))


def stream_spans(rows: list[tuple]) -> dict[str, dict[str, Any]]:
    """Per stream: first and last version in the pack, and whether every version in between is."""
    spans: dict[str, list[int]] = {}
    for row in rows:
        span = spans.setdefault(row[1], [row[2], row[2], 0])
        span[0], span[1], span[2] = min(span[0], row[2]), max(span[1], row[2]), span[2] + 1
    return {s: {"first_version": a, "last_version": b, "complete": n == b - a + 1}
            for s, (a, b, n) in sorted(spans.items())}


def file_digest(data: bytes) -> dict[str, Any]:
    return {"sha256": hashlib.sha256(data).hexdigest(), "lines": data.count(b"\n")}

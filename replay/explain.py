"""``replay stream RESPONSE_ID``: the exact bytes sent, or (``--explain``) a readable timeline.

Chat completions (``CHATCMPL_ID``) too: a chat stream's bytes are ``data:`` chunks counted as
such; a non-streamed chat completion was sent one JSON body, which ``stream`` prints.

The timeline lists every event of the response's stream and its reservation's holds and
releases on the wallet and budget streams, in ledger order, each with its time offset from
the first; then where the stream stopped and why, what the client was sent, and what was
billed: the usage (reported by the provider or estimated by the gateway), the cost, and
the price version and calculator it was computed with (recomputed here to show it holds).
"""

from __future__ import annotations

import sqlite3
import sys
from typing import Optional, TextIO

from ledger.events import (
    ArgumentsDelta,
    HoldPlaced,
    HoldReleased,
    ItemFinished,
    ItemStarted,
    PricesPublished,
    ResponseAccepted,
    ResponseFinished,
    TextDelta,
    UsageCharged,
)
from ledger.store import Recorded
from projections.chat_wire import is_chat
from projections.money import budget_stream, wallet_stream
from projections.pricing import PRICES_STREAM
from projections.responses import response_stream
from projections.wire import CLIENT_DISCONNECTED, FAILED_BEFORE_OUTPUT, UPSTREAM_FAILED, answer_bytes, render_stream
from replay.charges import recompute
from replay.rows import COLUMNS, record
from replay.timeparse import iso

_SELECT = f"SELECT {', '.join(COLUMNS)} FROM events"
SHOWN_CHARS_MAX = 48  # of a delta's text in the timeline


def response_records(conn: sqlite3.Connection, response_id: str) -> list[Recorded]:
    rows = conn.execute(f"{_SELECT} WHERE stream = ? ORDER BY version", (response_stream(response_id),)).fetchall()
    return [record(r) for r in rows]


def stream_bytes(conn: sqlite3.Connection, response_id: str, out=None) -> int:
    """Write the bytes the client was sent; 1 if the ledger has no such response.

    The SSE bytes of a stream; for a non-streamed request, the one JSON body it was answered
    (the Response object or ``chat.completion``, or the 502/504 error body), nothing if the
    client left.
    """
    records = response_records(conn, response_id)
    if not records:
        print(f"no response {response_id!r} in this ledger", file=sys.stderr)
        return 1
    out = out or sys.stdout.buffer
    if _unstreamed(records):
        answered = answer_bytes(records)
        out.write(answered[1] if answered is not None else b"")
    else:
        out.write(render_stream(records))
    out.flush()
    return 0


def _unstreamed(records: list[Recorded]) -> bool:
    return not records[0].event.stream


def _sent(records: list[Recorded], response_id: str) -> str:
    """What the client was sent, in words (``replay stream`` prints the bytes)."""
    how = f"(`assistiv replay stream {response_id}` prints {{}})"
    if _unstreamed(records):
        chat = is_chat(records[0].event)
        answered = answer_bytes(records)
        if answered is None:
            what = "chat completion" if chat else "response"
            return f"nothing: the client left before the answer (a non-streamed {what})"
        status, body = answered
        kind = "an error" if status != 200 else "a chat.completion" if chat else "the Response object"
        return f"one JSON object, HTTP {status} with {kind}, {len(body):,} bytes " + how.format("it")
    sent = render_stream(records)
    if is_chat(records[0].event):
        frames = [f for f in sent.split(b"\n\n") if f]
        chunks = sum(1 for f in frames if f.startswith(b'data: {"id"'))
        tail = ", then an error chunk" if frames and frames[-1].startswith(b'data: {"error"') else ""
        tail += ", then data: [DONE]" if frames and frames[-1] == b"data: [DONE]" else ""
        return f"{len(sent):,} bytes of SSE, {chunks:,} chat.completion.chunk frames{tail} " + how.format("them")
    return f"{len(sent):,} bytes of SSE, {sent.count(b'event: '):,} events " + how.format("them")


def _holds(conn: sqlite3.Connection, accepted: ResponseAccepted, response_id: str) -> list[Recorded]:
    streams = [wallet_stream(accepted.platform_id)] + ([budget_stream(accepted.end_user_id)]
                                                        if accepted.end_user_id else [])
    marks = ",".join("?" * len(streams))
    rows = conn.execute(f"{_SELECT} WHERE stream IN ({marks}) AND type IN ('hold.placed', 'hold.released') "
                        "AND json_extract(data, '$.reservation_id') = ? ORDER BY position", (*streams, response_id))
    return [record(r) for r in rows]


def _price_version(conn: sqlite3.Connection, version_id: str) -> Optional[PricesPublished]:
    for row in conn.execute(f"{_SELECT} WHERE stream = ? AND event_id = ?", (PRICES_STREAM, version_id)):
        event = record(row).event
        if isinstance(event, PricesPublished):
            return event
    for row in conn.execute(f"{_SELECT} WHERE stream = ? ORDER BY version", (PRICES_STREAM,)):
        event = record(row).event
        if isinstance(event, PricesPublished) and event.version_id == version_id:
            return event
    return None


def describe(recorded: Recorded, text_so_far: int) -> str:
    """One line of what an event says."""
    event = recorded.event
    if isinstance(event, ResponseAccepted):
        return (f"request accepted: model {event.model} via {event.provider}, "
                f"{'streamed' if event.stream else 'not streamed'}, {len(event.input_items)} input items")
    if isinstance(event, TextDelta):
        shown = event.delta if len(event.delta) <= SHOWN_CHARS_MAX else event.delta[:SHOWN_CHARS_MAX] + "..."
        return f"text {shown!r} ({text_so_far:,} chars so far)"
    if isinstance(event, ArgumentsDelta):
        return f"arguments of item {event.output_index}: {event.delta[:SHOWN_CHARS_MAX]!r}"
    if isinstance(event, ItemStarted):
        return f"item {event.output_index} started: {event.item.get('type')} {event.item.get('id', '')}"
    if isinstance(event, ItemFinished):
        return f"item {event.output_index} finished: {event.status}"
    if isinstance(event, ResponseFinished):
        extra = f", {event.interruption}" if event.interruption else ""
        return f"finished: {event.status}{extra}"
    if isinstance(event, UsageCharged):
        return (f"charged {event.cost_micros:,} micro-USD ({event.billing_status}) for {event.token_count_method} "
                "usage")
    if isinstance(event, HoldPlaced):
        return f"{event.account} hold of {event.amount_micros:,} micro-USD{' (capped)' if event.capped else ''}"
    if isinstance(event, HoldReleased):
        return f"{event.account} hold {event.outcome}, charged {event.charged_micros:,} micro-USD"
    return type(event).__name__


def stop_reason(finished: Optional[ResponseFinished], deltas: int, chat: str = "") -> str:
    """Where the stream stopped and why, in words. ``chat``: "stream" or "json" for a chat
    completion (its stream ends with an error chunk; a non-streamed one's failure is an HTTP error)."""
    if finished is None:
        return "still open: no response.finished is recorded (the request is in flight, or the gateway stopped)"
    if finished.interruption == CLIENT_DISCONNECTED:
        return f"client left after {deltas:,} deltas; nothing more was sent"
    if finished.interruption == UPSTREAM_FAILED:
        error = f" ({finished.error.code}: {finished.error.message})" if finished.error else ""
        told = {"json": "an HTTP error, no partial answer", "stream": "a final error chunk and no [DONE]"}.get(
            chat, "an error event")
        return f"upstream dropped after {deltas:,} deltas{error}; the client got {told}"
    if finished.interruption == FAILED_BEFORE_OUTPUT:
        error = f" ({finished.error.code}: {finished.error.message})" if finished.error else ""
        return f"failed before output{error}; the client got an HTTP error, no stream"
    if finished.status == "completed":
        return "completed"
    if finished.status == "incomplete":
        return f"incomplete ({finished.incomplete_reason or 'no reason recorded'})"
    return f"{finished.status}" + (f" ({finished.error.code}: {finished.error.message})" if finished.error else "")


def explain(conn: sqlite3.Connection, response_id: str, out: TextIO) -> int:
    """Write the timeline; 1 if the ledger has no such response."""
    own = response_records(conn, response_id)
    if not own or not isinstance(own[0].event, ResponseAccepted):
        print(f"no response {response_id!r} in this ledger", file=sys.stderr)
        return 1
    accepted: ResponseAccepted = own[0].event
    timeline = sorted(own + _holds(conn, accepted, response_id), key=lambda r: r.position)
    start = timeline[0].recorded_at
    out.write(f"response {response_id}\n  platform {accepted.platform_id}, end user {accepted.end_user_id or '-'}\n"
              f"  accepted {iso(own[0].recorded_at_s)} at position {own[0].position}\n\n")
    text = deltas = 0
    finished: Optional[ResponseFinished] = None
    charge: Optional[UsageCharged] = None
    for recorded in timeline:
        event = recorded.event
        if isinstance(event, (TextDelta, ArgumentsDelta)):
            deltas += 1
            text += len(event.delta)
        finished = event if isinstance(event, ResponseFinished) else finished
        charge = event if isinstance(event, UsageCharged) else charge
        version = f"v{recorded.version}" if recorded.stream == own[0].stream else "  "
        offset = f"+{(recorded.recorded_at - start) / 1e6:.6f}"
        out.write(f"  {offset:>12} s  #{recorded.position:<9} {version:>6}  "
                  f"{_tag(recorded):<26} {describe(recorded, text)}\n")
    chat = ("json" if _unstreamed(own) else "stream") if is_chat(accepted) else ""
    out.write(f"\nstopped: {stop_reason(finished, deltas, chat)}\n")
    out.write(f"sent to the client: {_sent(own, response_id)}\n")
    _billing(conn, charge, finished, out)
    return 0


def _tag(recorded: Recorded) -> str:
    from ledger.events import TAGS

    return TAGS[type(recorded.event)]


def _billing(conn: sqlite3.Connection, charge: Optional[UsageCharged], finished: Optional[ResponseFinished],
             out: TextIO) -> None:
    if charge is None:
        out.write("billed: nothing recorded (no usage.charged" + (": the request is still open)\n"
                                                                   if finished is None else ")\n"))
        return
    usage = charge.usage
    source = ("reported by the provider" if charge.token_count_method == "reported" else
              "estimated by the gateway (the provider reported none: about 4 characters per token)")
    out.write(f"billed: {charge.cost_micros:,} micro-USD ({charge.cost_micros / 1e6:.6f} USD), "
              f"{charge.billing_status}, status {charge.status}\n")
    out.write(f"  usage {source}: {usage.input_tokens:,} input ({usage.cached_input_tokens:,} cached), "
              f"{usage.output_tokens:,} output ({usage.reasoning_tokens:,} reasoning) tokens\n")
    version = _price_version(conn, charge.price_version_id) if charge.price_version_id else None
    cost, reasons = recompute(charge, version)
    prices = version.models.get(charge.model) if version else None
    out.write(f"  price version {charge.price_version_id or '(none)'} (sha256 {charge.price_sha256[:16] or '-'}...), "
              f"calculator {charge.calculator_version}; {charge.model}: {prices or 'no prices (free)'}\n")
    verdict = "matches" if not reasons else "; ".join(reasons)
    out.write(f"  recomputed: {cost if cost is not None else '?'} micro-USD ({verdict})\n")

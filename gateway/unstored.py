"""What the ledger keeps of a ``store: false`` request: metadata and usage, not its text.

DESIGN (invariant 13): a request sent with ``store: false`` keeps its metadata and usage in
the ledger, but not prompt or output text. ``withheld(event)`` is the event as recorded:
the same type, ids, indexes, roles, item types, statuses, tool names, token counts and
money, with every text-bearing value (message text, instructions, function arguments and
outputs, image and file data, MCP arguments, outputs and error texts) replaced by ``""``.
The client still receives the full answer: the run renders its bytes from the events as
they were, and records them withheld (gateway/pipeline.py). So a ``store: false`` response
can be neither continued nor retrieved (404), and ``replay stream`` of one shows its
structure and timing with empty text.
"""

from __future__ import annotations

from typing import Any

import attrs

from ledger.events import (
    ArgumentsDelta,
    ItemStarted,
    McpApprovalRequested,
    McpApprovalResponded,
    McpCallFinished,
    McpCallStarted,
    ResponseAccepted,
    TextDelta,
)

# Keys whose string values are prompt or output text (or carry user data such as images).
TEXT_KEYS = frozenset({
    "text", "content", "arguments", "output", "instructions", "image_url", "file_data", "file_url", "refusal",
    "reason", "summary", "message",
})


def blank_text(value: Any) -> Any:
    """``value`` with the string of every key in TEXT_KEYS, at any depth, replaced by ``""``."""
    if isinstance(value, dict):
        return {k: ("" if k in TEXT_KEYS and isinstance(v, str) else blank_text(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [blank_text(v) for v in value]
    return value


def withheld(event: Any) -> Any:
    """The event as a ``store: false`` response records it (see the module docstring)."""
    if isinstance(event, (TextDelta, ArgumentsDelta)):
        return attrs.evolve(event, delta="")
    if isinstance(event, ResponseAccepted):
        return attrs.evolve(event, params=blank_text(event.params), input_items=blank_text(event.input_items))
    if isinstance(event, ItemStarted):
        return attrs.evolve(event, item=blank_text(event.item))
    if isinstance(event, (McpCallStarted, McpApprovalRequested)):
        return attrs.evolve(event, arguments="")
    if isinstance(event, McpCallFinished):
        return attrs.evolve(event, output=None if event.output is None else "", error=blank_text(event.error))
    if isinstance(event, McpApprovalResponded):
        return attrs.evolve(event, reason=None if event.reason is None else "")
    return event

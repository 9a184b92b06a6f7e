"""Helpers for driving an adapter directly: collect its events and summarize them."""

from __future__ import annotations

from typing import Any, Optional

from gateway.providers.base import Finish, ProviderError, TextChunk, ToolCallArguments, ToolCallStart, UsageReport


async def drain(provider: Any, call: Any) -> tuple[list[Any], Optional[ProviderError]]:
    """Every event the adapter yields, and the ProviderError it ended with (or None)."""
    events: list[Any] = []
    try:
        async for event in provider.stream(call):
            events.append(event)
    except ProviderError as exc:
        return events, exc
    return events, None


def text(events: list[Any]) -> str:
    return "".join(e.text for e in events if isinstance(e, TextChunk))


def tool_calls(events: list[Any]) -> list[tuple[str, str, str]]:
    """``(call_id, name, arguments)`` per tool call, arguments reassembled from their pieces."""
    calls: dict[int, list[str]] = {}
    for e in events:
        if isinstance(e, ToolCallStart):
            assert e.index == len(calls), "tool calls must start in index order"
            calls[e.index] = [e.call_id, e.name, ""]
        elif isinstance(e, ToolCallArguments):
            calls[e.index][2] += e.delta
    return [tuple(c) for c in calls.values()]  # type: ignore[misc]


def tail(events: list[Any]) -> list[Any]:
    """The last two events, which must be the UsageReport and the Finish."""
    assert isinstance(events[-2], UsageReport) and isinstance(events[-1], Finish)
    return events[-2:]

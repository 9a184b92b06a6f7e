"""The offline ``demo`` provider: deterministic text, streamed in several deltas, with usage.

It answers with a fixed sentence that quotes the last user text, one word per delta.
Usage is counted the same way every time: input tokens = ceil(characters of all input text
/ 4), output tokens = number of deltas. ``max_output_tokens`` cuts the answer short with
finish reason ``length``. A ``delay_ms`` pause before each delta makes a slow stream for
tests of disconnects and shutdown. Cancellation during a pause simply ends the stream.

With function tools it plays the tool loop: when the last message is the user's, it calls
a tool (the named one for a forced ``tool_choice``; every tool, in parallel, for
``required``; else the first), filling each string parameter with the user's text; after
tool results it answers in text quoting them. ``tool_choice: "none"`` keeps it to text.
"""

from __future__ import annotations

import json
import math
import uuid
from typing import AsyncIterator

import trio

from gateway.providers.base import (
    Finish,
    ModelCall,
    ProviderEvent,
    TextChunk,
    ToolCallArguments,
    ToolCallStart,
    UsageReport,
)
from ledger.events import Usage

QUOTE_CHARS_MAX = 200  # how much of the prompt the demo answer quotes


def _texts(call: ModelCall) -> list[str]:
    texts = [call.instructions] if call.instructions else []
    for message in call.messages:
        for part in message["content"]:
            if part.get("type") in ("input_text", "output_text", "text"):
                texts.append(part["text"])
    return texts


def demo_answer(call: ModelCall) -> list[str]:
    """The deltas the demo model sends for ``call``."""
    last_user = ""
    for message in call.messages:
        if message["role"] == "user":
            last_user = " ".join(p.get("text", "") for p in message["content"] if "text" in p)
    quoted = " ".join(last_user.split())[:QUOTE_CHARS_MAX] or "nothing"
    words = f"Hello from the Assistiv demo model. You said: {quoted}".split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


def demo_tool_calls(call: ModelCall) -> list[tuple[str, str]]:
    """(name, JSON arguments) of the calls the demo model makes for ``call`` (maybe none)."""
    if not call.tools or call.tool_choice == "none" or not call.messages or call.messages[-1]["role"] != "user":
        return []
    if isinstance(call.tool_choice, dict):
        tools = [t for t in call.tools if t["name"] == call.tool_choice.get("name")]
    elif call.tool_choice == "required" and call.parallel_tool_calls:
        tools = call.tools
    else:
        tools = call.tools[:1]
    user_text = " ".join(p.get("text", "") for p in call.messages[-1]["content"] if "text" in p)
    calls = []
    for tool in tools:
        properties = (tool.get("parameters") or {}).get("properties") or {}
        defaults = {"string": user_text, "number": 0, "integer": 0, "boolean": False}
        args = {name: defaults.get(spec.get("type") if isinstance(spec, dict) else None) for name, spec in properties.items()}
        calls.append((tool["name"], json.dumps(args, separators=(",", ":"))))
    return calls


def _after_tools_answer(call: ModelCall) -> list[str]:
    names = {c["call_id"]: c["name"] for m in call.messages for c in m.get("tool_calls", ())}
    results = []
    for message in reversed(call.messages):
        if message["role"] != "tool":
            break
        output = " ".join(p.get("text", "") for p in message["content"])
        results.insert(0, f"{names.get(message['call_id'], 'tool')} returned {output}")
    words = ("The tools answered: " + "; ".join(results)).split(" ")
    return [w if i == 0 else " " + w for i, w in enumerate(words)]


class DemoProvider:
    def __init__(self, delay_ms: int = 0) -> None:
        self.delay_s = delay_ms / 1000

    async def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        input_tokens = math.ceil(sum(len(t) for t in _texts(call)) / 4)
        tool_calls = demo_tool_calls(call)
        if tool_calls:
            output_chars = 0
            for index, (name, arguments) in enumerate(tool_calls):
                yield ToolCallStart(index, f"call_{uuid.uuid4().hex[:24]}", name)
                third = max(1, len(arguments) // 3)
                for start in range(0, len(arguments), third):  # split the JSON at arbitrary places
                    if self.delay_s:
                        await trio.sleep(self.delay_s)
                    yield ToolCallArguments(index, arguments[start : start + third])
                output_chars += len(name) + len(arguments)
            yield UsageReport(Usage(input_tokens=input_tokens, output_tokens=math.ceil(output_chars / 4)))
            yield Finish("tool_calls")
            return
        deltas = _after_tools_answer(call) if call.messages and call.messages[-1]["role"] == "tool" else demo_answer(call)
        reason = "stop"
        if call.max_output_tokens is not None and len(deltas) > call.max_output_tokens:
            deltas, reason = deltas[: call.max_output_tokens], "length"
        for delta in deltas:
            if self.delay_s:
                await trio.sleep(self.delay_s)
            yield TextChunk(delta)
        yield UsageReport(Usage(input_tokens=input_tokens, output_tokens=len(deltas)))
        yield Finish(reason)

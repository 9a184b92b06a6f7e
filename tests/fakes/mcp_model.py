"""A fake model (OpenAI Chat Completions upstream) that calls the tools it is offered.

Its script is the last user message of the conversation, one instruction per line:

    call <function> <JSON arguments>    call this function (several lines: parallel calls)
    repeat                              after tool results, make the same calls again while
                                        the functions are still offered

It makes the scripted calls whose function it is offered, when the conversation ends with
the user's message (or with tool results and ``repeat``); otherwise it answers in text:
``Tool results: <each tool message, joined by " | ">`` after tool results, or ``No tool
called.`` Usage is the chat fake's fixed USAGE per call. Use with ``FakeServer(handler)``.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.openai_chat import sse, tail, text_events, tool_events
from tests.fakes.server import Request, Step

TEXT_PIECE_CHARS = 16  # the answer is streamed in pieces of this size


def _script(messages: list[dict[str, Any]]) -> tuple[list[tuple[str, str]], bool]:
    user = [m for m in messages if m["role"] == "user"]
    text = user[-1]["content"] if user else ""
    if isinstance(text, list):
        text = " ".join(p.get("text", "") for p in text)
    calls, repeat = [], False
    for line in text.splitlines():
        words = line.strip().split(" ", 2)
        if words[0] == "call" and len(words) >= 2:
            calls.append((words[1], words[2] if len(words) == 3 else "{}"))
        elif words[0] == "repeat":
            repeat = True
    return calls, repeat


def _trailing_tool_results(messages: list[dict[str, Any]]) -> list[str]:
    results = []
    for message in reversed(messages):
        if message["role"] != "tool":
            break
        results.insert(0, message["content"])
    return results


def answer(request: Request) -> list[Step]:
    """The handler: tool calls or a text answer, as described in the module docstring."""
    body = request.json()
    messages = body["messages"]
    offered = {t["function"]["name"] for t in body.get("tools") or []}
    calls, repeat = _script(messages)
    results = _trailing_tool_results(messages)
    wanted = [(name, args) for name, args in calls if name in offered]
    if wanted and (not results or repeat) and body.get("tool_choice") != "none":
        turn = sum(1 for m in messages if m["role"] == "assistant")
        calls_ = [(f"call_{turn}_{i}", name, args) for i, (name, args) in enumerate(wanted)]
        return sse(tool_events(calls_) + tail("tool_calls"))
    text = "Tool results: " + " | ".join(results) if results else "No tool called."
    pieces = [text[i: i + TEXT_PIECE_CHARS] for i in range(0, len(text), TEXT_PIECE_CHARS)]
    return sse(text_events(pieces) + tail())


def script(*calls: tuple[str, dict[str, Any]], repeat: bool = False) -> str:
    """A user message that makes the fake model call ``(function, arguments)`` pairs."""
    lines = [f"call {name} {json.dumps(args)}" for name, args in calls]
    return "\n".join(lines + (["repeat"] if repeat else []))

"""The offline ``demo`` provider: deterministic text, streamed in several deltas, with usage.

It answers with a fixed sentence that quotes the last user text, one word per delta.
Usage is counted the same way every time: input tokens = ceil(characters of all input text
/ 4), output tokens = number of deltas. ``max_output_tokens`` cuts the answer short with
finish reason ``length``. A ``delay_ms`` pause before each delta makes a slow stream for
tests of disconnects and shutdown. Cancellation during a pause simply ends the stream.
"""

from __future__ import annotations

import math
from typing import AsyncIterator

import trio

from gateway.providers.base import Finish, ModelCall, ProviderEvent, TextChunk, UsageReport
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


class DemoProvider:
    def __init__(self, delay_ms: int = 0) -> None:
        self.delay_s = delay_ms / 1000

    async def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        deltas = demo_answer(call)
        reason = "stop"
        if call.max_output_tokens is not None and len(deltas) > call.max_output_tokens:
            deltas, reason = deltas[: call.max_output_tokens], "length"
        for delta in deltas:
            if self.delay_s:
                await trio.sleep(self.delay_s)
            yield TextChunk(delta)
        input_tokens = math.ceil(sum(len(t) for t in _texts(call)) / 4)
        yield UsageReport(Usage(input_tokens=input_tokens, output_tokens=len(deltas)))
        yield Finish(reason)

"""A fake OpenAI Chat Completions upstream: handler factories for ``FakeServer``.

Each factory returns a handler (request -> script) that answers ``POST .../chat/completions``
the way OpenAI does: ``data: {chunk}`` events, a finish chunk, a usage chunk with
``choices: []`` and ``data: [DONE]``. SSE bytes are split at odd places by default. The
server records what it got in ``FakeServer.requests``; set ``server.handler`` to change the
script between calls.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from tests.fakes.server import Body, Drop, Handler, Sleep, Status, Step, sse_chunks

MODEL = "fake-upstream-chat"
USAGE = {"prompt_tokens": 57, "completion_tokens": 13, "total_tokens": 70,
         "prompt_tokens_details": {"cached_tokens": 21}, "completion_tokens_details": {"reasoning_tokens": 5}}
ARGUMENT_PIECE_CHARS = (3, 1, 7, 2, 5)  # cycling sizes of the pieces tool-call arguments are cut into


def chunk(delta: Optional[dict[str, Any]] = None, finish: Optional[str] = None,
          usage: Optional[dict[str, Any]] = None) -> bytes:
    """One ``data:`` event of a chat.completion.chunk (``delta=None`` with usage: the usage chunk)."""
    body: dict[str, Any] = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 1735689600,
                            "model": MODEL, "system_fingerprint": "fp_fake", "usage": usage}
    body["choices"] = [] if delta is None else [
        {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}]
    return b"data: " + json.dumps(body).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"


def text_events(deltas: Sequence[str]) -> list[bytes]:
    """The role chunk and one chunk per text delta."""
    return [chunk({"role": "assistant", "content": ""})] + [chunk({"content": d}) for d in deltas]


def tail(finish: str = "stop", usage: Optional[dict[str, Any]] = USAGE) -> list[bytes]:
    """Finish chunk, usage chunk (when ``usage``) and ``[DONE]``."""
    return [chunk({}, finish)] + ([chunk(None, usage=usage)] if usage is not None else []) + [DONE]


def cut_pieces(text: str, sizes: Sequence[int] = ARGUMENT_PIECE_CHARS) -> list[str]:
    pieces, i, k = [], 0, 0
    while i < len(text):
        pieces.append(text[i : i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    return pieces


def tool_events(calls: Sequence[tuple[str, str, str]], interleave: bool = False) -> list[bytes]:
    """Tool-call deltas for ``(call_id, name, arguments)`` calls, arguments cut into odd pieces.

    Call i starts with a piece carrying its id and name; ``interleave`` mixes the argument
    pieces of parallel calls round-robin (OpenAI sends them one call after another)."""
    starts = [chunk({"role": "assistant", "content": None, "tool_calls": [
        {"index": i, "id": cid, "type": "function", "function": {"name": name, "arguments": ""}}]})
        for i, (cid, name, _) in enumerate(calls)]
    pieces = [[chunk({"tool_calls": [{"index": i, "function": {"arguments": p}}]}) for p in cut_pieces(args)]
              for i, (_, _, args) in enumerate(calls)]
    if not interleave:
        return [e for start, own in zip(starts, pieces) for e in [start, *own]]
    events = list(starts)
    for round_ in range(max(len(p) for p in pieces)):
        events += [own[round_] for own in pieces if round_ < len(own)]
    return events


def sse(events: list[bytes], odd: bool = True, status: int = 200) -> list[Step]:
    return [Status(status)] + sse_chunks(events, odd)


def text_answer(deltas: Sequence[str], usage: Optional[dict[str, Any]] = USAGE, finish: str = "stop",
                odd: bool = True) -> Handler:
    """A streamed text answer; usage in the last chunk before ``[DONE]``."""
    return lambda request: sse(text_events(deltas) + tail(finish, usage), odd)


def tool_calls_answer(calls: Sequence[tuple[str, str, str]], usage: Optional[dict[str, Any]] = USAGE,
                      interleave: bool = False, finish: str = "tool_calls") -> Handler:
    """One or several parallel tool calls, arguments split at odd places."""
    return lambda request: sse(tool_events(calls, interleave) + tail(finish, usage))


def http_error(status: int = 500, message: str = "The server had an error while processing your request.",
               type_: str = "server_error", code: Optional[str] = None) -> Handler:
    """A complete JSON error body in OpenAI's shape."""
    body = json.dumps({"error": {"message": message, "type": type_, "param": None, "code": code}}).encode()
    headers = {"content-type": "application/json"}
    if status == 429:
        headers["retry-after"] = "1"
    return lambda request: [Body(status, headers, body)]


def wrong_content_type() -> Handler:
    """200 with an HTML page, as a misconfigured proxy answers."""
    return lambda request: [Body(200, {"content-type": "text/html"}, b"<html><body>Welcome to nginx!</body></html>")]


def malformed_chunk(deltas_before: Sequence[str] = ("Hel",)) -> Handler:
    """Some deltas, then a ``data:`` line that is not JSON."""
    return lambda request: sse(text_events(deltas_before) + [b'data: {"choices": [{"delta": \n\n'] + tail())


def in_stream_error(message: str, deltas_before: Sequence[str] = ()) -> Handler:
    """Some deltas, then an ``{"error": ...}`` payload (vLLM and OpenAI do this mid-stream)."""
    error = json.dumps({"error": {"message": message, "type": "server_error", "param": None, "code": None}})
    return lambda request: sse(text_events(deltas_before) + [b"data: " + error.encode() + b"\n\n"])


def stall(seconds: float, deltas_before: Sequence[str] = (), before_headers: bool = False) -> Handler:
    """Go silent for ``seconds`` (before the status line, or after some deltas)."""
    if before_headers:
        return lambda request: [Sleep(seconds)] + sse(text_events(deltas_before) + tail())
    return lambda request: sse(text_events(deltas_before), odd=False) + [Sleep(seconds)] + sse_chunks(tail())


def drop(deltas_before: Sequence[str]) -> Handler:
    """Some deltas, then the connection closes abruptly (no final chunk)."""
    return lambda request: sse(text_events(deltas_before), odd=False) + [Drop()]


def cut(deltas: Sequence[str]) -> Handler:
    """Some deltas, then a clean end of body without finish_reason or ``[DONE]``."""
    return lambda request: sse(text_events(deltas))


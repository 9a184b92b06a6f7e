"""A fake Gemini upstream: handler factories for ``FakeServer``.

Each factory returns a handler (request -> script) answering
``POST /v1beta/models/{model}:streamGenerateContent?alt=sse`` the way Gemini does: one
``data: {GenerateContentResponse}`` event per chunk, CRLF line endings, cumulative
``usageMetadata`` on every chunk and ``finishReason`` on the last. SSE bytes are split at odd
places by default. ``FakeServer.requests`` records what the adapter sent; set
``server.handler`` to change the script between calls.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from tests.fakes.server import Body, Drop, Handler, Sleep, Status, Step, sse_chunks

MODEL_VERSION = "gemini-fake-001"
USAGE = {"promptTokenCount": 57, "cachedContentTokenCount": 21, "candidatesTokenCount": 13,
         "thoughtsTokenCount": 5, "totalTokenCount": 75}


def chunk(parts: Optional[list[dict[str, Any]]] = None, finish: Optional[str] = None,
          usage: Optional[dict[str, Any]] = None, **extra: Any) -> bytes:
    """One ``data:`` event holding a GenerateContentResponse (no candidates when ``parts`` is None)."""
    body: dict[str, Any] = {"modelVersion": MODEL_VERSION, "responseId": "fake-response", **extra}
    if parts is not None:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish:
            candidate["finishReason"] = finish
        body["candidates"] = [candidate]
    if usage is not None:
        body["usageMetadata"] = usage
    return b"data: " + json.dumps(body).encode() + b"\r\n\r\n"


def partial_usage(step: int) -> dict[str, Any]:
    """The cumulative usage Gemini reports on an early chunk (smaller than the final one)."""
    return {"promptTokenCount": USAGE["promptTokenCount"], "candidatesTokenCount": step,
            "totalTokenCount": USAGE["promptTokenCount"] + step}


def text_events(deltas: Sequence[str], finish: str = "STOP", usage: dict[str, Any] = USAGE,
                thought: Optional[str] = None) -> list[bytes]:
    """An optional thought part, one chunk per delta, then the finish chunk with the final usage."""
    events = [chunk([{"text": thought, "thought": True}], usage=partial_usage(0))] if thought else []
    events += [chunk([{"text": d}], usage=partial_usage(i + 1)) for i, d in enumerate(deltas[:-1])]
    last = [{"text": deltas[-1]}] if deltas else []
    return events + [chunk(last, finish=finish, usage=usage)]


def sse(events: list[bytes], odd: bool = True) -> list[Step]:
    return [Status(200)] + sse_chunks(events, odd)


def text_answer(deltas: Sequence[str], finish: str = "STOP", usage: dict[str, Any] = USAGE,
                thought: Optional[str] = None, odd: bool = True) -> Handler:
    """A streamed text answer; the last chunk carries finishReason and the final usage."""
    return lambda request: sse(text_events(deltas, finish, usage, thought), odd)


def tool_calls_answer(calls: Sequence[tuple[str, dict[str, Any]]], text: Optional[str] = None,
                      ids: Optional[Sequence[str]] = None) -> Handler:
    """Optional text, then ``functionCall`` parts for ``(name, args)`` (first alone, the rest together)."""
    parts = [{"functionCall": {"name": name, "args": args, **({"id": ids[i]} if ids else {})},
              "thoughtSignature": "c2lnbmF0dXJl"} for i, (name, args) in enumerate(calls)]
    events = [chunk([{"text": text}], usage=partial_usage(1))] if text else []
    events += [chunk(parts[:1], usage=partial_usage(2))]
    events += [chunk(parts[1:], finish="STOP", usage=USAGE)]
    return lambda request: sse(events)


def blocked(reason: str = "SAFETY") -> Handler:
    """The prompt is refused: no candidates, ``promptFeedback.blockReason``."""
    usage = {"promptTokenCount": 9, "totalTokenCount": 9}
    return lambda request: sse([chunk(None, usage=usage, promptFeedback={"blockReason": reason})])


def http_error(status: int = 400, message: str = "API key not valid. Please pass a valid API key.",
               status_text: str = "INVALID_ARGUMENT") -> Handler:
    """A complete JSON error body in Google's shape."""
    body = json.dumps({"error": {"code": status, "message": message, "status": status_text}}).encode()
    return lambda request: [Body(status, {"content-type": "application/json; charset=UTF-8"}, body)]


def wrong_content_type() -> Handler:
    """200 with a JSON array, as streamGenerateContent answers without ``alt=sse``."""
    body = b"[" + chunk([{"text": "hi"}], finish="STOP")[6:-4] + b"]"
    return lambda request: [Body(200, {"content-type": "application/json; charset=UTF-8"}, body)]


def malformed_chunk(deltas_before: Sequence[str] = ("Hel",)) -> Handler:
    """Some deltas, then a ``data:`` line that is not JSON."""
    events = [chunk([{"text": d}]) for d in deltas_before]
    return lambda request: sse(events + [b'data: {"candidates": [{"content": \r\n\r\n'] + text_events(["x"]))


def in_stream_error(message: str = "The model is overloaded. Please try again later.",
                    deltas_before: Sequence[str] = ()) -> Handler:
    """Some deltas, then an ``{"error": ...}`` chunk (Gemini does this on a 200 stream)."""
    error = json.dumps({"error": {"code": 503, "message": message, "status": "UNAVAILABLE"}}).encode()
    events = [chunk([{"text": d}]) for d in deltas_before]
    return lambda request: sse(events + [b"data: " + error + b"\r\n\r\n"])


def stall(seconds: float, deltas_before: Sequence[str] = ()) -> Handler:
    """Some deltas, then silence for ``seconds``, then the finish chunk."""
    events = [chunk([{"text": d}]) for d in deltas_before]
    return lambda request: sse(events, odd=False) + [Sleep(seconds)] + sse_chunks(text_events(["late"]))


def drop(deltas_before: Sequence[str]) -> Handler:
    """Some deltas, then the connection closes abruptly (no terminating chunk)."""
    events = [chunk([{"text": d}], usage=partial_usage(i + 1)) for i, d in enumerate(deltas_before)]
    return lambda request: sse(events, odd=False) + [Drop()]


def cut(deltas: Sequence[str]) -> Handler:
    """Some deltas, then a clean end of body without any finishReason."""
    return lambda request: sse([chunk([{"text": d}]) for d in deltas])

"""A fake Anthropic Messages upstream: handler factories for ``FakeServer``.

Each factory returns a handler (request -> script) answering ``POST /v1/messages`` the way
Anthropic streams: ``event: NAME`` + ``data: {"type": NAME, ...}`` pairs from message_start
to message_stop, with a ``ping`` early on. SSE bytes are split at odd places by default and
tool-call arguments are cut into odd ``input_json_delta`` pieces. ``FakeServer.requests``
records what the adapter sent; set ``server.handler`` to change the script between calls.

Like the real API, every answering handler first refuses (400 invalid_request_error) a
request that breaks a rule Anthropic enforces: tool_use/tool_result blocks without ``tools``.
"""

from __future__ import annotations

import functools
import json
from typing import Any, Callable, Optional, Sequence

from tests.fakes.server import Body, Drop, Handler, Sleep, Status, Step, sse_chunks

MODEL = "claude-fake-1"
USAGE = {"input_tokens": 40, "cache_read_input_tokens": 12, "cache_creation_input_tokens": 5}  # input = 57
OUTPUT_TOKENS = 13
ARGUMENT_PIECE_CHARS = (3, 1, 7, 2, 5)  # cycling sizes of the pieces tool-call arguments are cut into


TOOLS_REQUIRED = "messages: Requests which include `tool_use` or `tool_result` blocks must define tools."


def rule_broken(request: Any) -> Optional[str]:
    """Anthropic's message for a request it would refuse, or None."""
    try:
        body = json.loads(request.body)
    except ValueError:
        return None
    blocks = [b for m in body.get("messages") or [] if isinstance(m.get("content"), list) for b in m["content"]]
    if any(b.get("type") in ("tool_use", "tool_result") for b in blocks) and not body.get("tools"):
        return TOOLS_REQUIRED
    return None


def enforced(factory: Callable[..., Handler]) -> Callable[..., Handler]:
    """``factory``'s handlers answer a request Anthropic would refuse with its 400 instead."""
    @functools.wraps(factory)
    def make(*args: Any, **kwargs: Any) -> Handler:
        handler = factory(*args, **kwargs)

        def checked(request: Any) -> list[Step]:
            broken = rule_broken(request)
            if broken is not None:
                return http_error(400, "invalid_request_error", broken)(request)
            return handler(request)
        return checked
    return make


def event(name: str, **fields: Any) -> bytes:
    """One SSE event; ``data.type`` equals the event name, as Anthropic sends it."""
    return f"event: {name}\ndata: {json.dumps({'type': name, **fields})}\n\n".encode()


def head(usage: dict[str, Any] = USAGE) -> list[bytes]:
    message = {"id": "msg_fake", "type": "message", "role": "assistant", "content": [], "model": MODEL,
               "stop_reason": None, "stop_sequence": None, "usage": {**usage, "output_tokens": 1}}
    return [event("message_start", message=message), event("ping")]


def tail(stop_reason: str = "end_turn", output_tokens: int = OUTPUT_TOKENS) -> list[bytes]:
    """message_delta (stop reason, cumulative output tokens) and message_stop."""
    return [event("message_delta", delta={"stop_reason": stop_reason, "stop_sequence": None},
                  usage={"output_tokens": output_tokens}),
            event("message_stop")]


def text_block(deltas: Sequence[str], index: int = 0) -> list[bytes]:
    """A text content block streamed as one text_delta per delta."""
    return ([event("content_block_start", index=index, content_block={"type": "text", "text": ""})]
            + [event("content_block_delta", index=index, delta={"type": "text_delta", "text": d}) for d in deltas]
            + [event("content_block_stop", index=index)])


def cut_pieces(text: str, sizes: Sequence[int] = ARGUMENT_PIECE_CHARS) -> list[str]:
    pieces, i, k = [], 0, 0
    while i < len(text):
        pieces.append(text[i : i + sizes[k % len(sizes)]])
        i += sizes[k % len(sizes)]
        k += 1
    return pieces


def tool_block(call_id: str, name: str, arguments: str, index: int) -> list[bytes]:
    """A tool_use block: empty input at start, then the JSON cut into odd partial_json pieces."""
    start = event("content_block_start", index=index,
                  content_block={"type": "tool_use", "id": call_id, "name": name, "input": {}})
    pieces = [event("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": ""})]
    pieces += [event("content_block_delta", index=index, delta={"type": "input_json_delta", "partial_json": p})
               for p in cut_pieces(arguments)]
    return [start, *pieces, event("content_block_stop", index=index)]


def sse(events: list[bytes], odd: bool = True) -> list[Step]:
    return [Status(200)] + sse_chunks(events, odd)


def text_events(deltas: Sequence[str], stop_reason: str = "end_turn", usage: dict[str, Any] = USAGE,
                output_tokens: int = OUTPUT_TOKENS) -> list[bytes]:
    return head(usage) + text_block(deltas) + tail(stop_reason, output_tokens)


@enforced
def text_answer(deltas: Sequence[str], stop_reason: str = "end_turn", usage: dict[str, Any] = USAGE,
                output_tokens: int = OUTPUT_TOKENS, odd: bool = True) -> Handler:
    """A streamed text answer with usage in message_start and message_delta."""
    return lambda request: sse(text_events(deltas, stop_reason, usage, output_tokens), odd)


@enforced
def tool_calls_answer(calls: Sequence[tuple[str, str, str]], text: Optional[str] = None) -> Handler:
    """Optional text, then one tool_use block per ``(call_id, name, arguments)``; stop_reason tool_use."""
    blocks = text_block([text]) if text else []
    offset = 1 if text else 0
    for i, (call_id, name, arguments) in enumerate(calls):
        blocks += tool_block(call_id, name, arguments, i + offset)
    return lambda request: sse(head() + blocks + tail("tool_use"))


def http_error(status: int = 529, type_: str = "overloaded_error", message: str = "Overloaded") -> Handler:
    """A complete JSON error body in Anthropic's shape."""
    body = json.dumps({"type": "error", "error": {"type": type_, "message": message}}).encode()
    return lambda request: [Body(status, {"content-type": "application/json"}, body)]


@enforced
def wrong_content_type() -> Handler:
    """200 with a JSON (non-streamed) message, as if ``stream`` had been ignored."""
    body = json.dumps({"id": "msg_fake", "type": "message", "content": [{"type": "text", "text": "hi"}]}).encode()
    return lambda request: [Body(200, {"content-type": "application/json"}, body)]


@enforced
def malformed_chunk(deltas_before: Sequence[str] = ("Hel",)) -> Handler:
    """Some deltas, then an event whose data is not JSON."""
    events = head() + text_block(deltas_before)[:-1]
    return lambda request: sse(events + [b'event: content_block_delta\ndata: {"type": "content_\n\n'] + tail())


@enforced
def in_stream_error(message: str = "Overloaded", deltas_before: Sequence[str] = ()) -> Handler:
    """Some deltas, then an ``error`` event (Anthropic sends overloaded_error this way)."""
    error = event("error", error={"type": "overloaded_error", "message": message})
    return lambda request: sse(head() + text_block(deltas_before)[:-1] + [error])


@enforced
def stall(seconds: float, deltas_before: Sequence[str] = ()) -> Handler:
    """Some deltas, then silence for ``seconds``, then the rest."""
    return lambda request: (sse(head() + text_block(deltas_before)[:-1], odd=False) + [Sleep(seconds)]
                            + sse_chunks([event("content_block_stop", index=0)] + tail()))


@enforced
def drop(deltas_before: Sequence[str]) -> Handler:
    """Some deltas, then the connection closes abruptly (no terminating chunk)."""
    return lambda request: sse(head() + text_block(deltas_before)[:-1], odd=False) + [Drop()]


@enforced
def cut(deltas: Sequence[str]) -> Handler:
    """A clean end of body after the text block, without message_delta or message_stop."""
    return lambda request: sse(head() + text_block(deltas))

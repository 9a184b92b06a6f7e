"""A fake OpenAI Responses API upstream: handler factories for ``FakeServer``.

Each factory returns a handler (request -> script) that answers ``POST .../responses`` in
OpenAI's event order (``event: <type>`` + ``data: {... "sequence_number"}``, no ``[DONE]``):
response.created, response.in_progress, the output items' events, then one terminal
event. SSE bytes are split at odd places by default. The server records what it got in
``FakeServer.requests``; set ``server.handler`` to change the script between calls.
"""

from __future__ import annotations

import json
from typing import Any, Optional, Sequence

from tests.fakes.openai_chat import cut_pieces, http_error, wrong_content_type
from tests.fakes.server import Drop, Handler, Sleep, Status, Step, sse_chunks

MODEL = "fake-upstream-responses"
USAGE = {"input_tokens": 61, "input_tokens_details": {"cached_tokens": 24, "cache_write_tokens": 0},
         "output_tokens": 17, "output_tokens_details": {"reasoning_tokens": 6}, "total_tokens": 78}

__all__ = ["MODEL", "USAGE", "Stream", "text_answer", "tool_calls_answer", "incomplete", "failed", "error_event",
           "http_error", "wrong_content_type", "malformed_event", "stall", "drop", "cut"]


class Stream:
    """Builds one Responses event stream, numbering events as it goes."""

    def __init__(self) -> None:
        self.events: list[bytes] = []
        self.output: list[dict[str, Any]] = []
        self.open_text: Optional[dict[str, Any]] = None

    def add(self, type_: str, **fields: Any) -> "Stream":
        body = {"type": type_, "sequence_number": len(self.events), **fields}
        self.events.append(b"event: %s\ndata: %s\n\n" % (type_.encode(), json.dumps(body).encode()))
        return self

    def response(self, status: str, usage: Optional[dict] = None, **extra: Any) -> dict[str, Any]:
        return {"id": "resp_fake", "object": "response", "created_at": 1735689600, "status": status, "model": MODEL,
                "output": list(self.output) if status != "in_progress" else [], "usage": usage, "error": None,
                "incomplete_details": None, **extra}

    def start(self) -> "Stream":
        return self.add("response.created", response=self.response("in_progress")).add(
            "response.in_progress", response=self.response("in_progress"))

    def text(self, deltas: Sequence[str]) -> "Stream":
        """A message item's opening events and its text deltas (closed by ``close_text``)."""
        item = {"id": "msg_fake", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
        index = len(self.output)
        self.open_text = {"item": item, "index": index, "text": "".join(deltas)}
        self.add("response.output_item.added", output_index=index, item=item)
        self.add("response.content_part.added", item_id="msg_fake", output_index=index, content_index=0,
                 part={"type": "output_text", "text": "", "annotations": []})
        for delta in deltas:
            self.add("response.output_text.delta", item_id="msg_fake", output_index=index, content_index=0,
                     delta=delta, logprobs=[])
        return self

    def close_text(self, status: str = "completed") -> "Stream":
        opened, self.open_text = self.open_text, None
        if opened is None:
            return self
        part = {"type": "output_text", "text": opened["text"], "annotations": []}
        where = {"item_id": "msg_fake", "output_index": opened["index"], "content_index": 0}
        self.add("response.output_text.done", **where, text=opened["text"], logprobs=[])
        self.add("response.content_part.done", **where, part=part)
        item = {**opened["item"], "status": status, "content": [part]}
        self.output.append(item)
        return self.add("response.output_item.done", output_index=opened["index"], item=item)

    def tool_calls(self, calls: Sequence[tuple[str, str, str]], interleave: bool = False) -> "Stream":
        """Function-call items for ``(call_id, name, arguments)``, arguments in odd pieces.

        OpenAI sends one call after another; ``interleave`` opens all calls first and mixes
        their argument deltas round-robin."""
        first = len(self.output)
        items = [{"id": f"fc_fake{i}", "type": "function_call", "status": "in_progress", "call_id": cid,
                  "name": name, "arguments": ""} for i, (cid, name, _) in enumerate(calls)]
        pieces = [cut_pieces(args) for _, _, args in calls]

        def added(i: int) -> None:
            self.add("response.output_item.added", output_index=first + i, item=items[i])

        def delta(i: int, piece: str) -> None:
            self.add("response.function_call_arguments.delta", item_id=items[i]["id"], output_index=first + i,
                     delta=piece)

        def done(i: int) -> None:
            name, args = calls[i][1], calls[i][2]
            self.add("response.function_call_arguments.done", item_id=items[i]["id"], output_index=first + i,
                     name=name, arguments=args)
            final = {**items[i], "status": "completed", "arguments": args}
            self.output.append(final)
            self.add("response.output_item.done", output_index=first + i, item=final)

        if interleave:
            for i in range(len(calls)):
                added(i)
            for round_ in range(max(map(len, pieces))):
                for i, own in enumerate(pieces):
                    if round_ < len(own):
                        delta(i, own[round_])
            for i in range(len(calls)):
                done(i)
        else:
            for i in range(len(calls)):
                added(i)
                for piece in pieces[i]:
                    delta(i, piece)
                done(i)
        return self

    def completed(self, usage: Optional[dict] = USAGE) -> "Stream":
        return self.add("response.completed", response=self.response("completed", usage))

    def incomplete(self, reason: str, usage: Optional[dict] = USAGE) -> "Stream":
        return self.add("response.incomplete", response=self.response("incomplete", usage,
                                                                      incomplete_details={"reason": reason}))

    def failed(self, message: str, code: str = "server_error") -> "Stream":
        return self.add("response.failed", response={**self.response("failed"),
                                                      "error": {"code": code, "message": message}})

    def steps(self, odd: bool = True) -> list[Step]:
        return [Status()] + sse_chunks(self.events, odd)


def text_answer(deltas: Sequence[str], usage: Optional[dict] = USAGE, odd: bool = True) -> Handler:
    """A streamed text answer ending with response.completed (with ``usage``)."""
    return lambda request: Stream().start().text(deltas).close_text().completed(usage).steps(odd)


def tool_calls_answer(calls: Sequence[tuple[str, str, str]], usage: Optional[dict] = USAGE,
                      interleave: bool = False, text: Sequence[str] = ()) -> Handler:
    """Optional text, then one or several parallel function calls, arguments in odd pieces."""
    def handler(request: Any) -> list[Step]:
        stream = Stream().start()
        if text:
            stream.text(text).close_text()
        return stream.tool_calls(calls, interleave).completed(usage).steps()
    return handler


def incomplete(deltas: Sequence[str], reason: str = "max_output_tokens", usage: Optional[dict] = USAGE) -> Handler:
    """Text cut short, ending with response.incomplete (``incomplete_details.reason``)."""
    return lambda request: Stream().start().text(deltas).close_text("incomplete").incomplete(reason, usage).steps()


def failed(message: str, deltas_before: Sequence[str] = ()) -> Handler:
    """Some deltas, then response.failed carrying ``message``."""
    return lambda request: Stream().start().text(deltas_before).failed(message).steps()


def error_event(message: str, code: str = "server_error", deltas_before: Sequence[str] = ()) -> Handler:
    """Some deltas, then a bare ``error`` event."""
    return lambda request: Stream().start().text(deltas_before).add(
        "error", code=code, message=message, param=None).steps()


def malformed_event(deltas_before: Sequence[str] = ("Hel",)) -> Handler:
    """Some deltas, then a ``data:`` line that is not JSON."""
    def handler(request: Any) -> list[Step]:
        stream = Stream().start().text(deltas_before)
        stream.events.append(b'event: response.output_text.delta\ndata: {"type": "response.output\n\n')
        return stream.close_text().completed().steps()
    return handler


def stall(seconds: float, deltas_before: Sequence[str] = (), before_headers: bool = False) -> Handler:
    """Go silent for ``seconds`` (before the status line, or after some deltas)."""
    def handler(request: Any) -> list[Step]:
        head = Stream().start().text(deltas_before)
        if before_headers:
            return [Sleep(seconds)] + head.close_text().completed().steps()
        sent = len(head.events)
        rest = head.close_text().completed().events[sent:]
        return [Status()] + sse_chunks(head.events[:sent], odd=False) + [Sleep(seconds)] + sse_chunks(rest)
    return handler


def drop(deltas_before: Sequence[str]) -> Handler:
    """Some deltas, then the connection closes abruptly (no final chunk)."""
    return lambda request: Stream().start().text(deltas_before).steps(odd=False) + [Drop()]


def cut(deltas: Sequence[str]) -> Handler:
    """Some deltas, then a clean end of body without a terminal event."""
    return lambda request: Stream().start().text(deltas).close_text().steps()

"""The one renderer of the Chat Completions wire format, from the same ledger events.

A chat completion is recorded like a response (``response.accepted`` with
``params.api == "chat.completions"``, then items, deltas and ``response.finished``);
``ChatView`` folds those events into ``chat.completion.chunk`` SSE frames (``data: {...}``,
no ``event:`` lines) and the final ``chat.completion`` object:

    response.accepted        the first chunk: delta {"role": "assistant", "content": ""}
    response.item_started    function_call: a tool_calls delta with id, name, empty arguments
    response.text_delta      delta {"content"}
    response.arguments_delta delta {"tool_calls": [{"index", "function": {"arguments"}}]}
    response.finished        completed/incomplete: the finish_reason chunk, the usage chunk
                             (stream_options.include_usage), then ``data: [DONE]``;
                             failed after output: ``data: {"error": {...}}`` and no [DONE];
                             client gone or failed before output: nothing

A non-streamed request is answered ``client_answer()``: the ``chat.completion`` object, or a
502/504 error body when the upstream failed (even after output: see there).

Pure: times are the envelope's ``recorded_at``; no clock, no config, no I/O.
"""

from __future__ import annotations

from typing import Any, Optional

import orjson

from ledger.events import ArgumentsDelta, ItemStarted, ResponseAccepted, ResponseDeleted, ResponseFinished, TextDelta
from ledger.events import Usage
from ledger.store import Recorded
from projections.wire import CLIENT_DISCONNECTED, FAILED_BEFORE_OUTPUT, GATEWAY_RESTARTED, upstream_failure
from projections.wire import SILENT_INTERRUPTIONS as SILENT

CHAT_API = "chat.completions"


def chat_usage(usage: Usage) -> dict[str, Any]:
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens},
        "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
    }


def _data(payload: Any) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class ChatView:
    """The state of one chat completion, folded from its events."""

    def __init__(self, recorded: Recorded) -> None:
        accepted = recorded.event
        assert isinstance(accepted, ResponseAccepted)
        self.accepted = accepted
        self.params = accepted.params
        self.created = recorded.recorded_at_s
        self.text = ""
        self.tool_calls: list[dict[str, Any]] = []
        self.tool_index: dict[int, int] = {}  # output index -> tool_calls index
        self.status = "in_progress"
        self.finish_reason: Optional[str] = None
        self.usage: Optional[Usage] = None
        self.error: Optional[dict[str, Any]] = None
        self.interruption: Optional[str] = None
        self.deleted = False
        self.version = recorded.version
        self.last_position = recorded.position

    @property
    def response_id(self) -> str:
        return self.accepted.response_id

    @property
    def finished(self) -> bool:
        return self.status != "in_progress"

    @classmethod
    def start(cls, recorded: Recorded, render: bool = True) -> tuple["ChatView", bytes]:
        view = cls(recorded)
        return view, view._chunk({"role": "assistant", "content": ""}) if render else b""

    def _chunk(self, delta: dict[str, Any], finish_reason: Optional[str] = None) -> bytes:
        chunk = {"id": self.response_id, "object": "chat.completion.chunk", "created": self.created,
                 "model": self.accepted.model, "system_fingerprint": None,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}]}
        if self.params.get("include_usage"):
            chunk["usage"] = None
        return _data(chunk)

    def apply(self, recorded: Recorded, render: bool = True) -> bytes:
        self.version, self.last_position = recorded.version, recorded.position
        event = recorded.event
        if isinstance(event, TextDelta):
            self.text += event.delta
            return self._chunk({"content": event.delta}) if render else b""
        if isinstance(event, ItemStarted) and event.item.get("type") == "function_call":
            index = len(self.tool_calls)
            self.tool_index[event.output_index] = index
            self.tool_calls.append({"id": event.item["call_id"], "type": "function",
                                    "function": {"name": event.item["name"], "arguments": ""}})
            return self._chunk({"tool_calls": [{"index": index, "id": event.item["call_id"], "type": "function",
                                                "function": {"name": event.item["name"], "arguments": ""}}]}) \
                if render else b""
        if isinstance(event, ArgumentsDelta):
            index = self.tool_index[event.output_index]
            self.tool_calls[index]["function"]["arguments"] += event.delta
            return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": event.delta}}]}) \
                if render else b""
        if isinstance(event, ResponseFinished):
            return self._finished(event, render)
        if isinstance(event, ResponseDeleted):
            self.deleted = True
        return b""

    def _finished(self, event: ResponseFinished, render: bool) -> bytes:
        self.status, self.usage, self.interruption = event.status, event.usage, event.interruption
        if event.error is not None:
            self.error = {"message": event.error.message, "type": "server_error", "param": None,
                          "code": event.error.code}
        if event.incomplete_reason == "max_output_tokens":  # before tool_calls: truncated arguments say so
            self.finish_reason = "length"
        elif event.incomplete_reason == "content_filter":
            self.finish_reason = "content_filter"
        elif self.tool_calls:
            self.finish_reason = "tool_calls"
        else:
            self.finish_reason = "stop"
        if not render or event.interruption in SILENT:
            return b""
        if event.status == "failed":
            return _data({"error": self.error})
        out = self._chunk({}, self.finish_reason)
        if self.params.get("include_usage"):
            out += _data({"id": self.response_id, "object": "chat.completion.chunk", "created": self.created,
                          "model": self.accepted.model, "system_fingerprint": None, "choices": [],
                          "usage": chat_usage(event.usage)})
        return out + b"data: [DONE]\n\n"

    def client_answer(self) -> Optional[tuple[int, dict[str, Any]]]:
        """What a non-streamed request was answered: ``(HTTP status, JSON body)``; None if nothing.

        200 and the ``chat.completion`` when the answer finished (finish_reason stop, length,
        tool_calls or content_filter). When the upstream failed, 502 ``upstream_error`` (504
        ``upstream_timeout``) in the error shape, before or after output: Chat Completions has no
        status field, so a 200 with partial content would pass for a complete answer. Output
        made before the failure is billed, as for an interrupted stream, and the message says so.
        None while in progress, or when nothing was sent (the client left, the gateway restarted).
        """
        if self.status == "in_progress" or self.interruption in (CLIENT_DISCONNECTED, GATEWAY_RESTARTED):
            return None  # the client left, or its connection ended with the gateway process
        if self.status != "failed":
            return 200, self.completion_object()
        status, body = upstream_failure(self.error)
        if self.interruption != FAILED_BEFORE_OUTPUT:
            tokens = self.usage.output_tokens if self.usage is not None else 0
            message = self.error["message"] if self.error else "The response failed."
            body["error"]["message"] = (f"The upstream provider failed mid-answer: {message}. The {tokens} output "
                                        f"tokens produced before the failure are billed ({self.response_id}); send "
                                        "the request again for a complete answer.")
        return status, body

    def completion_object(self) -> dict[str, Any]:
        """The non-streamed ``chat.completion``."""
        message: dict[str, Any] = {"role": "assistant", "content": self.text or None, "refusal": None}
        if self.tool_calls:
            message["tool_calls"] = [dict(call, function=dict(call["function"])) for call in self.tool_calls]
        return {
            "id": self.response_id, "object": "chat.completion", "created": self.created,
            "model": self.accepted.model, "system_fingerprint": None, "service_tier": "default",
            "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": self.finish_reason}],
            "usage": chat_usage(self.usage) if self.usage is not None else None,
        }


def is_chat(accepted: Any) -> bool:
    return isinstance(accepted, ResponseAccepted) and accepted.params.get("api") == CHAT_API


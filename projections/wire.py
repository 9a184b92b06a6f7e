"""The one renderer of the Responses wire format (DESIGN invariant 11).

``ResponseView`` folds the events of one response stream, in version order, into the
Response object; with ``render=True`` each fold step also returns the exact SSE bytes that
event puts on the wire. The live gateway sends what this returns for each durable event,
``GET /v1/responses/{id}?stream=true`` and ``replay stream`` run the same fold over the
recorded events, so "what the client was sent" is a pure function of the ledger.

Mapping (ledger event -> SSE events, each with the next ``sequence_number``):

    response.accepted        response.created, response.in_progress
    response.item_started    response.output_item.added (+ response.content_part.added for a message,
                             response.mcp_list_tools.in_progress / response.mcp_call.in_progress
                             for those items)
    response.text_delta      response.output_text.delta
    response.arguments_delta response.function_call_arguments.delta
                             (response.mcp_call_arguments.delta for an mcp_call)
    response.item_finished   message: response.output_text.done, response.content_part.done,
                             response.output_item.done;
                             function_call: response.function_call_arguments.done (with name),
                             response.output_item.done; other items: response.output_item.done
    mcp.tools_listed         response.mcp_list_tools.completed | .failed (the item gets its tools/error)
    mcp.call_started         response.mcp_call_arguments.done
    mcp.call_finished        response.mcp_call.completed | .failed (the item gets its output/error)
    mcp.approval_requested   response.output_item.added + response.output_item.done (a whole item)
    response.finished        response.completed | response.incomplete | error + response.failed;
                             nothing when the client had disconnected (nobody was listening) or
                             when start-up recovery ended it (the connection died with the process),
                             and then nothing either for the item-closing events of that last append

A response that failed before any output was answered with an HTTP error, not a stream:
``render_stream`` gives b"" for it, since the client was sent none of these bytes.

Pure: no clock (times are the envelope's ``recorded_at``), no config, no I/O.
"""

from __future__ import annotations

from typing import Any, Optional

import orjson

from ledger.events import (
    ArgumentsDelta,
    ItemFinished,
    ItemStarted,
    McpApprovalRequested,
    McpCallFinished,
    McpCallStarted,
    McpToolsListed,
    ResponseAccepted,
    ResponseDeleted,
    ResponseFinished,
    TextDelta,
    Usage,
)
from ledger.store import Recorded

CLIENT_DISCONNECTED = "client_disconnected"  # the client left; nothing more was sent
UPSTREAM_FAILED = "upstream_failed"  # the upstream broke after output started
FAILED_BEFORE_OUTPUT = "failed_before_output"  # answered with an HTTP error instead of a stream
GATEWAY_RESTARTED = "gateway_restarted"  # the gateway died mid-response; start-up recovery ended it
SILENT_INTERRUPTIONS = (CLIENT_DISCONNECTED, FAILED_BEFORE_OUTPUT, GATEWAY_RESTARTED)


def upstream_failure(error: Optional[dict[str, Any]]) -> tuple[int, dict[str, Any]]:
    """The HTTP answer to a request whose upstream failed before any output (``error``: the
    view's recorded error): 502 ``upstream_error``, or 504 ``upstream_timeout``, in the error
    shape. What the live route sends and what ``replay stream`` prints for it."""
    error = error or {"code": "upstream_error", "message": "The response failed."}
    code = error["code"] if error["code"] in ("upstream_error", "upstream_timeout") else "upstream_error"
    return (504 if code == "upstream_timeout" else 502), {"error": {
        "message": f"The upstream provider failed: {error['message']}", "type": "server_error", "param": None,
        "code": code}}


def sse_frame(event_type: str, payload: dict[str, Any]) -> bytes:
    """One server-sent event: ``event: <type>`` and ``data: <json>``."""
    return b"event: " + event_type.encode() + b"\ndata: " + orjson.dumps(payload) + b"\n\n"


def sorted_json(value: Any) -> Any:
    """``value`` with every dict's keys sorted, recursively.

    Events read back from the ledger have sorted keys (canonical JSON); events still in
    memory keep their insertion order. Rendering through this makes both give the same bytes.
    """
    if isinstance(value, dict):
        return {k: sorted_json(value[k]) for k in sorted(value)}
    if isinstance(value, list):
        return [sorted_json(v) for v in value]
    return value


def _item(item: dict[str, Any]) -> dict[str, Any]:
    """An output item in a fixed key order: OpenAI's for messages and calls, sorted for the rest."""
    if item.get("type") == "function_call":
        return {
            "id": item["id"],
            "type": "function_call",
            "status": item["status"],
            "call_id": item["call_id"],
            "name": item["name"],
            "arguments": item.get("arguments", ""),
        }
    if item.get("type") == "message":
        return {
            "id": item["id"],
            "type": "message",
            "status": item["status"],
            "role": item.get("role", "assistant"),
            "content": sorted_json(item.get("content", [])),
        }
    return sorted_json(item)


def usage_object(usage: Usage) -> dict[str, Any]:
    """OpenAI's usage object, detail objects included."""
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_input_tokens, "cache_write_tokens": 0},
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.input_tokens + usage.output_tokens,
    }


class ResponseView:
    """The state of one response, folded from its events."""

    __slots__ = (
        "accepted",
        "params",
        "created_at",
        "completed_at",
        "status",
        "items",
        "usage",
        "usage_estimated",
        "error",
        "incomplete_details",
        "interruption",
        "deleted",
        "sequence_number",
        "version",
        "last_position",
    )

    def __init__(self, recorded: Recorded) -> None:
        accepted = recorded.event
        assert isinstance(accepted, ResponseAccepted)
        self.accepted = accepted
        self.params = sorted_json(accepted.params)
        self.created_at = recorded.recorded_at_s
        self.completed_at: Optional[int] = None
        self.status = "in_progress"
        self.items: list[dict[str, Any]] = []
        self.usage: Optional[Usage] = None
        self.usage_estimated = False
        self.error: Optional[dict[str, Any]] = None
        self.incomplete_details: Optional[dict[str, Any]] = None
        self.interruption: Optional[str] = None
        self.deleted = False
        self.sequence_number = 0
        self.version = recorded.version
        self.last_position = recorded.position

    # --- identity ----------------------------------------------------------------------------

    @property
    def response_id(self) -> str:
        return self.accepted.response_id

    @property
    def platform_id(self) -> str:
        return self.accepted.platform_id

    @property
    def end_user_id(self) -> Optional[str]:
        return self.accepted.end_user_id

    @property
    def finished(self) -> bool:
        return self.status != "in_progress"

    # --- the fold ----------------------------------------------------------------------------

    @classmethod
    def start(cls, recorded: Recorded, render: bool = True) -> tuple["ResponseView", bytes]:
        """Begin a view from the ``response.accepted`` record; return it and its bytes."""
        view = cls(recorded)
        if not render:
            view.sequence_number = 2
            return view, b""
        snapshot = view.response_object()
        return view, view._frame("response.created", {"response": snapshot}) + view._frame(
            "response.in_progress", {"response": snapshot}
        )

    def apply(self, recorded: Recorded, render: bool = True) -> bytes:
        """Fold one later event of this response; return its SSE bytes (b"" if not rendering)."""
        self.version = recorded.version
        self.last_position = recorded.position
        event = recorded.event
        if isinstance(event, TextDelta):
            item = self.items[event.output_index]
            part = item["content"][0]
            part["text"] += event.delta
            return self._emit(
                render,
                "response.output_text.delta",
                lambda: {
                    "item_id": item["id"],
                    "output_index": event.output_index,
                    "content_index": 0,
                    "delta": event.delta,
                    "logprobs": [],
                },
            )
        if isinstance(event, ArgumentsDelta):
            item = self.items[event.output_index]
            item["arguments"] += event.delta
            kind = "mcp_call" if item["type"] == "mcp_call" else "function_call"
            return self._emit(
                render,
                f"response.{kind}_arguments.delta",
                lambda: {"item_id": item["id"], "output_index": event.output_index, "delta": event.delta},
            )
        if isinstance(event, (McpToolsListed, McpCallStarted, McpCallFinished, McpApprovalRequested)):
            return self._mcp(event, render)
        if isinstance(event, ItemStarted):
            return self._item_started(event, render)
        if isinstance(event, ItemFinished):
            return self._item_finished(event, render)
        if isinstance(event, ResponseFinished):
            return self._finished(event, recorded, render)
        if isinstance(event, ResponseDeleted):
            self.deleted = True
            return b""
        return b""

    def _item_started(self, event: ItemStarted, render: bool) -> bytes:
        item = _item(event.item)
        out = self._emit(
            render, "response.output_item.added", lambda: {"output_index": event.output_index, "item": dict(item)}
        )
        if item.get("type") == "message":
            part = {"type": "output_text", "text": "", "annotations": []}
            out += self._emit(
                render,
                "response.content_part.added",
                lambda: {"item_id": item["id"], "output_index": event.output_index, "content_index": 0, "part": part},
            )
            item["content"] = [dict(part)]
        elif item.get("type") in ("mcp_list_tools", "mcp_call"):
            out += self._emit(render, f"response.{item['type']}.in_progress",
                              lambda: {"item_id": item["id"], "output_index": event.output_index})
        self.items.append(item)
        return out

    def _mcp(self, event: Any, render: bool) -> bytes:
        """The MCP steps of an item: listing result, arguments done, call result, approval request."""
        if isinstance(event, McpApprovalRequested):
            item = {"id": event.approval_request_id, "type": "mcp_approval_request",
                    "server_label": event.server_label, "name": event.name, "arguments": event.arguments}
            self.items.append(item)
            out = self._emit(render, "response.output_item.added",
                             lambda: {"output_index": event.output_index, "item": dict(item)})
            return out + self._emit(render, "response.output_item.done",
                                    lambda: {"output_index": event.output_index, "item": item})
        item = self.items[event.output_index]
        common = {"item_id": item["id"], "output_index": event.output_index}
        if isinstance(event, McpToolsListed):
            item["tools"], item["error"] = sorted_json(event.tools), event.error
            outcome = "failed" if event.error is not None else "completed"
            return self._emit(render, f"response.mcp_list_tools.{outcome}", lambda: common)
        if isinstance(event, McpCallStarted):
            item["arguments"] = event.arguments
            return self._emit(render, "response.mcp_call_arguments.done",
                              lambda: {**common, "arguments": event.arguments})
        item["output"], item["error"] = event.output, sorted_json(event.error)
        outcome = "failed" if event.error is not None else "completed"
        return self._emit(render, f"response.mcp_call.{outcome}", lambda: common)

    def _item_finished(self, event: ItemFinished, render: bool) -> bytes:
        item = self.items[event.output_index]
        if "status" in item:  # mcp_list_tools items have none
            item["status"] = event.status
        out = b""
        if item.get("type") == "message":
            part = item["content"][0]
            common = {"item_id": item["id"], "output_index": event.output_index, "content_index": 0}
            out += self._emit(
                render, "response.output_text.done", lambda: {**common, "text": part["text"], "logprobs": []}
            )
            out += self._emit(render, "response.content_part.done", lambda: {**common, "part": part})
        elif item.get("type") == "function_call":
            out += self._emit(
                render,
                "response.function_call_arguments.done",
                lambda: {"item_id": item["id"], "output_index": event.output_index, "name": item["name"],
                         "arguments": item["arguments"]},
            )
        return out + self._emit(
            render, "response.output_item.done", lambda: {"output_index": event.output_index, "item": item}
        )

    def _finished(self, event: ResponseFinished, recorded: Recorded, render: bool) -> bytes:
        self.status = event.status
        self.usage = event.usage
        self.usage_estimated = event.usage_estimated
        self.interruption = event.interruption
        if event.status == "completed":
            self.completed_at = recorded.recorded_at_s
        if event.incomplete_reason is not None:
            self.incomplete_details = {"reason": event.incomplete_reason}
        if event.error is not None:
            self.error = {"code": event.error.code, "message": event.error.message}
        if event.interruption in SILENT_INTERRUPTIONS or not render:
            return b""
        if event.status == "failed":
            error = self.error or {"code": "server_error", "message": "The response failed."}
            out = self._frame("error", {"code": error["code"], "message": error["message"], "param": None})
            return out + self._frame("response.failed", {"response": self.response_object()})
        return self._frame(f"response.{event.status}", {"response": self.response_object()})

    # --- rendering ---------------------------------------------------------------------------

    def _frame(self, event_type: str, fields: dict[str, Any]) -> bytes:
        payload = {"type": event_type, "sequence_number": self.sequence_number, **fields}
        self.sequence_number += 1
        return sse_frame(event_type, payload)

    def _emit(self, render: bool, event_type: str, fields) -> bytes:
        if not render:
            self.sequence_number += 1
            return b""
        return self._frame(event_type, fields())

    def client_answer(self) -> Optional[tuple[int, dict[str, Any]]]:
        """What a non-streamed request was answered: ``(HTTP status, JSON body)``; None while it
        runs, or when nothing was sent (the client left, the gateway restarted). 200 and the
        Response object once finished (a failure after output is a Response with ``status:
        "failed"``); ``upstream_failure`` when the upstream failed before any output."""
        if self.status == "in_progress" or self.interruption in (CLIENT_DISCONNECTED, GATEWAY_RESTARTED):
            return None
        if self.interruption == FAILED_BEFORE_OUTPUT:
            return upstream_failure(self.error)
        return 200, self.response_object()

    def response_object(self) -> dict[str, Any]:
        """The Response object as OpenAI returns it (a fresh dict each call)."""
        params = self.params
        return {
            "id": self.response_id,
            "object": "response",
            "created_at": self.created_at,
            "status": self.status,
            "completed_at": self.completed_at,
            "error": self.error,
            "incomplete_details": self.incomplete_details,
            **params,
            "model": self.accepted.model,
            "output": [_copy_item(item) for item in self.items],
            "usage": usage_object(self.usage) if self.usage is not None else None,
        }


def _copy_item(item: dict[str, Any]) -> dict[str, Any]:
    copy = dict(item)
    if "content" in copy:
        copy["content"] = [dict(part) for part in copy["content"]]
    return copy


def view_class(accepted: ResponseAccepted):
    """The renderer for a recorded request: Responses, or Chat Completions (projections.chat_wire)."""
    from projections.chat_wire import ChatView, is_chat

    return ChatView if is_chat(accepted) else ResponseView


def fold(records: list[Recorded]) -> Any:
    """The view (Response or chat completion) of one stream's records in version order, rendering nothing."""
    view, _ = view_class(records[0].event).start(records[0], render=False)
    for recorded in records[1:]:
        view.apply(recorded, render=False)
    return view


def answer_bytes(records: list[Recorded]) -> Optional[tuple[int, bytes]]:
    """What a non-streamed request was answered, as sent: ``(HTTP status, JSON bytes)`` of its
    view's ``client_answer()``; None when nothing was sent."""
    answered = fold(records).client_answer()
    return None if answered is None else (answered[0], orjson.dumps(answered[1]))


def render_stream(records: list[Recorded]) -> bytes:
    """All SSE bytes of one response (or chat completion) stream, from its records in version order.

    A stream that ended silently (the client had left, or start-up recovery ended it) was sent
    nothing of its terminal append: the deltas still buffered and the events closing its items
    were recorded after the connection was gone. They share the terminal event's
    ``recorded_at`` (one append is one commit, and a stream's appends are sequential), so
    their frames are left out here.
    """
    if not records:
        return b""
    view, out = view_class(records[0].event).start(records[0])
    parts = [out]
    for recorded in records[1:]:
        parts.append(view.apply(recorded))
    if view.interruption == FAILED_BEFORE_OUTPUT:
        return b""
    if view.interruption in SILENT_INTERRUPTIONS:
        ended_at = next(r.recorded_at for r in reversed(records) if isinstance(r.event, ResponseFinished))
        sent = len(records)
        while sent > 1 and records[sent - 1].recorded_at == ended_at:
            sent -= 1
        parts = parts[:sent]
    return b"".join(parts)

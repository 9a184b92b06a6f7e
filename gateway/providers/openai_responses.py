"""Adapter for OpenAI's own Responses API (``POST {base_url}/responses``).

One ``ModelCall`` becomes one streamed, unstored (``store: false``) request. Normalized
messages become Responses input items: messages with typed parts (assistant text as
``output_text``, other roles' text as ``input_text``), an assistant's tool calls as
``function_call`` items after its message, tool results as ``function_call_output``.
Function tools are sent flat, a named ``tool_choice`` as ``{"type": "function", "name"}``,
``parallel_tool_calls`` only with tools, ``text.format`` (flat json_schema) unless plain text.

The SSE answer: ``response.output_text.delta`` is text; a ``function_call`` item in
``response.output_item.added`` starts tool call number n (n = its order among function
calls); ``response.function_call_arguments.delta`` is mapped to n by ``item_id`` (or
``output_index``); arguments that only arrive in ``response.output_item.done`` are sent
then. ``response.completed`` / ``response.incomplete`` give UsageReport then Finish;
``response.failed``, ``error`` events and ``{"error": ...}`` payloads are ProviderErrors
with the upstream message, as is a stream that ends without a terminal event. Other event
types (reasoning, refusals, annotations, hosted tools) are ignored.

Cancellation: if the consumer stops iterating, ``aclose()`` leaves the ``async with`` blocks
and httpx closes the upstream connection; nothing else is held.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, AsyncIterator, Optional

import httpx2

from gateway.config import ProviderConfig
from gateway.providers.base import (
    Finish,
    ModelCall,
    ProviderError,
    ProviderEvent,
    TextChunk,
    ToolCallArguments,
    ToolCallStart,
    UsageReport,
)
from gateway.providers.http import iter_sse, json_data, open_stream
from ledger.events import Usage

INCOMPLETE_REASONS = {"max_output_tokens": "length", "content_filter": "content_filter"}
TEXT_PARTS = ("input_text", "output_text", "text")


def _part(part: dict[str, Any], role: str) -> dict[str, Any]:
    kind = part.get("type")
    if kind in TEXT_PARTS:
        return {"type": "output_text" if role == "assistant" else "input_text", "text": part.get("text", "")}
    if kind == "input_image":
        out = {"type": "input_image", "detail": part.get("detail") or "auto"}
        for key in ("image_url", "file_id"):
            if part.get(key) is not None:
                out[key] = part[key]
        return out
    if kind == "input_file":
        return {"type": "input_file", **{k: part[k] for k in ("file_data", "file_url", "file_id", "filename")
                                          if part.get(k) is not None}}
    raise ProviderError(f"content part of type {kind!r} cannot be sent to the Responses API")


def input_items(call: ModelCall) -> list[dict[str, Any]]:
    """The Responses ``input`` array for a normalized call."""
    items: list[dict[str, Any]] = []
    for message in call.messages:
        role = message["role"]
        parts = message.get("content") or []
        if role == "tool":
            output = "".join(p.get("text", "") for p in parts if p.get("type") in TEXT_PARTS)
            items.append({"type": "function_call_output", "call_id": message["call_id"], "output": output})
            continue
        if parts or not message.get("tool_calls"):
            items.append({"type": "message", "role": role, "content": [_part(p, role) for p in parts]})
        for c in message.get("tool_calls") or []:
            items.append({"type": "function_call", "call_id": c["call_id"], "name": c["name"],
                          "arguments": c.get("arguments") or ""})
    return items


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict):
        return {"type": "function", "name": choice.get("name") or (choice.get("function") or {}).get("name")}
    return choice


def responses_payload(call: ModelCall) -> dict[str, Any]:
    """The JSON body of the upstream request."""
    payload: dict[str, Any] = {"model": call.model, "input": input_items(call), "stream": True, "store": False}
    for key, value in (("instructions", call.instructions), ("temperature", call.temperature),
                       ("top_p", call.top_p), ("max_output_tokens", call.max_output_tokens)):
        if value is not None:
            payload[key] = value
    if call.text_format and call.text_format.get("type") != "text":
        payload["text"] = {"format": call.text_format}
    if call.tools:
        payload["tools"] = [{"type": "function", **{k: t[k] for k in ("name", "description", "parameters", "strict")
                                                    if t.get(k) is not None}} for t in call.tools]
        payload["tool_choice"] = _tool_choice(call.tool_choice)
        payload["parallel_tool_calls"] = call.parallel_tool_calls
    elif call.tool_choice == "none":
        payload["tool_choice"] = "none"
    return payload


def _usage(raw: Optional[dict[str, Any]]) -> Optional[Usage]:
    if not raw:
        return None
    return Usage(
        input_tokens=raw.get("input_tokens") or 0,
        cached_input_tokens=(raw.get("input_tokens_details") or {}).get("cached_tokens") or 0,
        output_tokens=raw.get("output_tokens") or 0,
        reasoning_tokens=(raw.get("output_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


def _message(error: Any, fallback: str) -> str:
    if isinstance(error, dict):
        message = error.get("message") or fallback
        return f"{message} ({error['code']})" if error.get("code") else message
    return str(error) if error else fallback


class _Calls:
    """Function-call items -> our 0-based indexes, and how much of each one's arguments was sent."""

    def __init__(self) -> None:
        self.by_item: dict[str, int] = {}
        self.by_output: dict[int, int] = {}
        self.sent: dict[int, str] = {}

    def start(self, event: dict[str, Any]) -> list[ProviderEvent]:
        item = event["item"]
        index = len(self.sent)
        self.sent[index] = ""
        if item.get("id"):
            self.by_item[item["id"]] = index
        if event.get("output_index") is not None:
            self.by_output[event["output_index"]] = index
        out: list[ProviderEvent] = [ToolCallStart(index, item.get("call_id") or item.get("id") or "", item["name"])]
        return out + self.arguments(event, item.get("arguments") or "")

    def find(self, event: dict[str, Any]) -> Optional[int]:
        if event.get("item_id") in self.by_item:
            return self.by_item[event["item_id"]]
        item_id = (event.get("item") or {}).get("id")
        if item_id in self.by_item:
            return self.by_item[item_id]
        return self.by_output.get(event.get("output_index"))

    def arguments(self, event: dict[str, Any], delta: str) -> list[ProviderEvent]:
        index = self.find(event)
        if index is None or not delta:
            return []
        self.sent[index] += delta
        return [ToolCallArguments(index, delta)]

    def done(self, event: dict[str, Any]) -> list[ProviderEvent]:
        """Arguments the item's final form has beyond the deltas sent (some servers send no deltas)."""
        index = self.find(event)
        final = (event.get("item") or {}).get("arguments") or ""
        if index is None or not final.startswith(self.sent[index]):
            return []
        return self.arguments(event, final[len(self.sent[index]):])


class OpenAIResponsesProvider:
    def __init__(self, config: ProviderConfig, http_client: httpx2.AsyncClient) -> None:
        if not config.base_url:
            raise ValueError(f"provider {config.name!r} needs a base_url")
        self.config = config
        self.http = http_client
        self.url = config.base_url.rstrip("/") + "/responses"

    def headers(self) -> dict[str, str]:
        key = self.config.api_key()
        return {"Accept": "text/event-stream", **({"Authorization": f"Bearer {key}"} if key else {})}

    async def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        calls = _Calls()
        async with open_stream(self.http, self.url, responses_payload(call), self.headers(),
                               timeout=self.config.timeout()) as response, aclosing(iter_sse(response)) as events:
            async for name, data in events:
                if data.strip() == "[DONE]":
                    continue  # read on to the end, so the connection goes back to the pool
                event = json_data(data)
                if not isinstance(event, dict):
                    raise ProviderError(f"upstream sent an unexpected event: {data[:200]!r}")
                kind = event.get("type") or name
                if kind == "error" or event.get("error"):
                    raise ProviderError(f"upstream error: {_message(event.get('error') or event, 'unknown error')}")
                if kind == "response.output_text.delta":
                    if event.get("delta"):
                        yield TextChunk(event["delta"])
                    continue
                if kind == "response.output_item.added" and (event.get("item") or {}).get("type") == "function_call":
                    out = calls.start(event)
                elif kind == "response.function_call_arguments.delta":
                    out = calls.arguments(event, event.get("delta") or "")
                elif kind == "response.output_item.done" and (event.get("item") or {}).get("type") == "function_call":
                    out = calls.done(event)
                elif kind in ("response.completed", "response.incomplete"):
                    body = event.get("response") or {}
                    usage = _usage(body.get("usage"))
                    if usage is not None:
                        yield UsageReport(usage)
                    if kind == "response.incomplete":
                        reason = (body.get("incomplete_details") or {}).get("reason")
                        yield Finish(INCOMPLETE_REASONS.get(reason, "length"))
                    else:
                        yield Finish("tool_calls" if calls.sent else "stop")
                    return
                elif kind == "response.failed":
                    error = (event.get("response") or {}).get("error")
                    raise ProviderError(f"upstream response failed: {_message(error, 'no reason given')}")
                else:
                    continue
                for item in out:
                    yield item
        raise ProviderError("upstream stream ended without a terminal event (interrupted)")

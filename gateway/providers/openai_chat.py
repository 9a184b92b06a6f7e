"""Adapter for any OpenAI-compatible Chat Completions server (OpenAI, vLLM, llama.cpp, ...).

One ``ModelCall`` becomes one ``POST {base_url}/chat/completions`` with ``stream: true`` and
``stream_options.include_usage: true``; the SSE answer becomes normalized events.

Choices made where servers differ:
- ``developer`` messages are sent with role ``system``: every compatible server knows
  ``system``, many (vLLM, llama.cpp, older OpenAI models) reject ``developer``.
- ``max_output_tokens`` is sent as ``max_completion_tokens`` only. OpenAI deprecated
  ``max_tokens`` and rejects it for reasoning models, and sending both is an error there;
  current vLLM, SGLang and llama.cpp read ``max_completion_tokens``.
- A message whose parts are all text is sent as one string (older servers want strings).
- ``input_file`` with a ``file_url`` has no Chat Completions form: ProviderError before sending.
- ``parallel_tool_calls`` is sent only with tools (some servers reject it otherwise).

The stream: ``delta.content`` is text; ``delta.tool_calls`` pieces are grouped by their
``index`` (ToolCallStart once per call, in order of appearance, then its argument pieces);
the usage chunk (``choices: []``) gives UsageReport. UsageReport and Finish are yielded when
the stream ends (``data: [DONE]``, or a clean end after a finish_reason); "stop" after tool
calls becomes "tool_calls" (Ollama and older vLLM say "stop"). A stream that ends with
neither, an ``{"error": ...}`` payload or malformed JSON is a ProviderError.

Cancellation: if the consumer stops iterating, ``aclose()`` leaves the ``async with`` blocks
and httpx closes the upstream connection; nothing else is held.
"""

from __future__ import annotations

import uuid
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

FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content_filter",
                  "tool_calls": "tool_calls", "function_call": "tool_calls"}
TEXT_PARTS = ("input_text", "output_text", "text")


def _text_of(parts: list[dict[str, Any]]) -> str:
    return "".join(p.get("text", "") for p in parts if p.get("type") in TEXT_PARTS)


def _part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind in TEXT_PARTS:
        return {"type": "text", "text": part.get("text", "")}
    if kind == "input_image":
        image = {"url": part["image_url"]}
        if part.get("detail"):
            image["detail"] = part["detail"]
        return {"type": "image_url", "image_url": image}
    if kind == "input_file":
        if part.get("file_url") and not (part.get("file_data") or part.get("file_id")):
            raise ProviderError("Chat Completions servers cannot take a file by URL (input_file.file_url)")
        file = {k: part[k] for k in ("file_data", "file_id", "filename") if part.get(k) is not None}
        return {"type": "file", "file": file}
    raise ProviderError(f"content part of type {kind!r} cannot be sent to a Chat Completions server")


def _content(parts: list[dict[str, Any]]) -> Any:
    if all(p.get("type") in TEXT_PARTS for p in parts):
        return _text_of(parts)
    return [_part(p) for p in parts]


def chat_messages(call: ModelCall) -> list[dict[str, Any]]:
    """The Chat Completions ``messages`` array for a normalized call."""
    out: list[dict[str, Any]] = []
    if call.instructions:
        out.append({"role": "system", "content": call.instructions})
    for message in call.messages:
        role = message["role"]
        parts = message.get("content") or []
        if role == "tool":
            out.append({"role": "tool", "tool_call_id": message["call_id"], "content": _text_of(parts)})
        elif role == "assistant":
            entry: dict[str, Any] = {"role": "assistant", "content": _text_of(parts) if parts else None}
            if message.get("tool_calls"):
                entry["tool_calls"] = [
                    {"id": c["call_id"], "type": "function",
                     "function": {"name": c["name"], "arguments": c.get("arguments") or ""}}
                    for c in message["tool_calls"]
                ]
            out.append(entry)
        else:
            out.append({"role": "system" if role == "developer" else role, "content": _content(parts)})
    return out


def _tool_choice(choice: Any) -> Any:
    if isinstance(choice, dict):
        name = choice.get("name") or (choice.get("function") or {}).get("name")
        return {"type": "function", "function": {"name": name}}
    return choice


def _response_format(fmt: Optional[dict[str, Any]]) -> Optional[dict[str, Any]]:
    if not fmt or fmt.get("type") == "text":
        return None
    if fmt["type"] == "json_schema":
        schema = {"name": fmt.get("name", "response"), "schema": fmt.get("schema", {}),
                  "strict": bool(fmt.get("strict", False))}
        if fmt.get("description"):
            schema["description"] = fmt["description"]
        return {"type": "json_schema", "json_schema": schema}
    return {"type": fmt["type"]}


def chat_payload(call: ModelCall) -> dict[str, Any]:
    """The JSON body of the upstream request."""
    payload: dict[str, Any] = {"model": call.model, "messages": chat_messages(call), "stream": True,
                               "stream_options": {"include_usage": True}}
    for key, value in (("temperature", call.temperature), ("top_p", call.top_p),
                       ("max_completion_tokens", call.max_output_tokens),
                       ("response_format", _response_format(call.text_format)), ("stop", call.stop),
                       ("presence_penalty", call.presence_penalty), ("frequency_penalty", call.frequency_penalty)):
        if value is not None:
            payload[key] = value
    if call.tools:
        payload["tools"] = [
            {"type": "function", "function": {k: t[k] for k in ("name", "description", "parameters", "strict")
                                              if t.get(k) is not None}}
            for t in call.tools
        ]
        payload["tool_choice"] = _tool_choice(call.tool_choice)
        payload["parallel_tool_calls"] = call.parallel_tool_calls
    elif call.tool_choice == "none":
        payload["tool_choice"] = "none"
    return payload


def _usage(raw: dict[str, Any]) -> Usage:
    return Usage(
        input_tokens=raw.get("prompt_tokens") or 0,
        cached_input_tokens=(raw.get("prompt_tokens_details") or {}).get("cached_tokens") or 0,
        output_tokens=raw.get("completion_tokens") or 0,
        reasoning_tokens=(raw.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0,
    )


def _error_message(data: dict[str, Any]) -> str:
    error = data.get("error")
    if isinstance(error, dict):
        return str(error.get("message") or error)
    return str(error or data.get("message") or data)


class _ToolCalls:
    """Upstream tool-call pieces -> our 0-based indexes; a call starts once its name is known."""

    def __init__(self) -> None:
        self.ours: dict[Any, int] = {}  # upstream index (or call id) -> our index
        self.names: dict[int, str] = {}
        self.ids: dict[int, str] = {}
        self.pending: dict[int, list[str]] = {}  # argument pieces that came before the name
        self.started: set[int] = set()
        self.last: Optional[int] = None

    def _index(self, piece: dict[str, Any]) -> int:
        key = piece.get("index")
        if key is None:  # some servers omit ``index``: a new id starts a call, no id continues the last
            if piece.get("id") and piece["id"] not in self.ids.values() or self.last is None:
                key = ("call", len(self.ours))
            else:
                return self.last
        if key not in self.ours:
            self.ours[key] = len(self.ours)
        return self.ours[key]

    def feed(self, piece: dict[str, Any]) -> list[ProviderEvent]:
        index = self.last = self._index(piece)
        function = piece.get("function") or {}
        if piece.get("id"):
            self.ids.setdefault(index, piece["id"])
        if function.get("name"):
            self.names.setdefault(index, function["name"])
        if function.get("arguments"):
            self.pending.setdefault(index, []).append(function["arguments"])
        out: list[ProviderEvent] = []
        if index not in self.started and index in self.names:
            self.started.add(index)
            out.append(ToolCallStart(index, self.ids.get(index) or f"call_{uuid.uuid4().hex}", self.names[index]))
        if index in self.started:
            out += [ToolCallArguments(index, d) for d in self.pending.pop(index, [])]
        return out


class OpenAIChatProvider:
    interleaves_tool_calls = True  # servers may mix parallel calls' argument pieces (by index): see pipeline

    def __init__(self, config: ProviderConfig, http_client: httpx2.AsyncClient) -> None:
        if not config.base_url:
            raise ValueError(f"provider {config.name!r} needs a base_url")
        self.config = config
        self.http = http_client
        self.url = config.base_url.rstrip("/") + "/chat/completions"

    def headers(self) -> dict[str, str]:
        key = self.config.api_key()
        return {"Accept": "text/event-stream", **({"Authorization": f"Bearer {key}"} if key else {})}

    async def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        payload = chat_payload(call)
        usage: Optional[Usage] = None
        finish: Optional[str] = None
        done = False
        tools = _ToolCalls()
        async with open_stream(self.http, self.url, payload, self.headers(), timeout=self.config.timeout()) \
                as response, aclosing(iter_sse(response)) as events:
            async for _event, data in events:
                if done or data.strip() == "[DONE]":
                    done = True  # read on to the end, so the connection goes back to the pool
                    continue
                chunk = json_data(data)
                if not isinstance(chunk, dict):
                    raise ProviderError(f"upstream sent an unexpected chunk: {data[:200]!r}")
                if "error" in chunk or chunk.get("object") == "error":
                    raise ProviderError(f"upstream error: {_error_message(chunk)}")
                if chunk.get("usage"):
                    usage = _usage(chunk["usage"])
                for choice in chunk.get("choices") or []:
                    if choice.get("index", 0) != 0:
                        continue
                    delta = choice.get("delta") or {}
                    if delta.get("content"):
                        yield TextChunk(delta["content"])
                    for piece in delta.get("tool_calls") or []:
                        for event in tools.feed(piece):
                            yield event
                    if choice.get("finish_reason"):
                        finish = FINISH_REASONS.get(choice["finish_reason"], "stop")
        if not done and finish is None:
            raise ProviderError("upstream stream ended before it finished (interrupted)")
        if usage is not None:
            yield UsageReport(usage)
        if tools.started and finish in (None, "stop"):
            finish = "tool_calls"  # some servers (Ollama, older vLLM) say "stop" after tool calls
        yield Finish(finish or "stop")

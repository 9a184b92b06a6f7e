"""The ``anthropic`` adapter: Anthropic's Messages API, streamed (POST {base_url}/v1/messages).

Request mapping (normalized call -> Messages body):

- ``instructions``, every system/developer message (wherever it sits) and the JSON-format
  instruction become the top-level ``system`` string, one paragraph each.
- ``max_tokens`` is required by Anthropic: ``max_output_tokens`` or ``DEFAULT_MAX_OUTPUT_TOKENS``.
- ``temperature`` is clamped to Anthropic's 0..1 (OpenAI allows 0..2; values above 1 become 1);
  ``top_p`` is passed as is (some newer models refuse both at once: their 400 is passed on).
- Text parts -> ``text`` blocks (empty ones dropped: Anthropic rejects them); images ->
  ``image`` blocks with a base64 (data URL) or url source; files -> ``document`` blocks
  (PDF base64/url, text/* as a text source, image/* as an image); ``file_id`` is an error.
- Assistant tool calls -> ``tool_use`` blocks (arguments parsed to an object); tool outputs ->
  ``tool_result`` blocks in a user turn. Consecutive turns of one role are merged, since
  Anthropic requires user/assistant alternation.
- Tools -> ``{"name", "description", "input_schema"}``; a tool's ``strict`` is dropped (strict
  tool use is a beta behind its own header here; the schema still guides the model).
  tool_choice auto/none/required (any)/``{"name"}`` or ``{"type": "function", "name"}`` (tool);
  ``parallel_tool_calls=False`` sets ``disable_parallel_tool_use``. With no tools, neither is
  sent, except that Anthropic rejects a request whose history has tool_use/tool_result
  blocks but no ``tools`` ("requests which include tool_use or tool_result blocks must define
  tools"): then the tools named in the history are declared with a permissive schema
  (``{"type": "object"}``) and ``tool_choice`` none, so the model can read its earlier calls
  but cannot call again a tool the client no longer offers.
- ``json_object``/``json_schema`` formats have no native switch here: an instruction to answer
  only with JSON (and the schema) is appended to the system prompt.

Usage: input = ``input_tokens`` + cache reads + cache writes (Anthropic reports them apart,
OpenAI counts them in); cached = cache reads; output = the last ``output_tokens`` seen.
Anthropic does not break thinking tokens out, so reasoning stays 0. Thinking blocks are not
shown. Cancellation: the consumer's ``aclose()`` exits ``open_stream``, which closes the
upstream connection; no cancel scope is held across a ``yield``.
"""

from __future__ import annotations

import base64
from contextlib import aclosing
from typing import Any, AsyncIterator, Optional

import attrs
import httpx2
import orjson

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
from gateway.providers.parts import (
    TEXT_PART_TYPES,
    arguments_object,
    file_source,
    json_format_instruction,
    parse_data_url,
    system_text,
    text_of,
)
from ledger.events import Usage

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_OUTPUT_TOKENS = 4096  # Anthropic requires max_tokens; used when the request sets none
TEMPERATURE_MAX = 1.0  # Anthropic's upper bound (OpenAI's is 2)
FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}


def _image_block(url: str) -> dict[str, Any]:
    parsed = parse_data_url(url)
    if parsed is None:
        return {"type": "image", "source": {"type": "url", "url": url}}
    return {"type": "image", "source": {"type": "base64", "media_type": parsed[0], "data": parsed[1]}}


def _file_block(part: dict[str, Any]) -> dict[str, Any]:
    kind, media_type, data = file_source(part)
    if media_type.startswith("image/"):
        source = {"type": "url", "url": data} if kind == "url" else {"type": "base64", "media_type": media_type,
                                                                      "data": data}
        return {"type": "image", "source": source}
    if kind == "url":
        block: dict[str, Any] = {"type": "document", "source": {"type": "url", "url": data}}
    elif media_type.startswith("text/"):
        text = base64.b64decode(data).decode("utf-8", errors="replace")
        block = {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": text}}
    else:
        block = {"type": "document", "source": {"type": "base64", "media_type": media_type, "data": data}}
    if part.get("filename"):
        block["title"] = part["filename"]
    return block


def _content_blocks(parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    blocks = []
    for part in parts:
        kind = part.get("type")
        if kind in TEXT_PART_TYPES:
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "input_image":
            blocks.append(_image_block(part["image_url"]))
        elif kind == "input_file":
            blocks.append(_file_block(part))
    return blocks


def _turn(message: dict[str, Any]) -> tuple[str, list[dict[str, Any]]]:
    """The Anthropic role and content blocks of one normalized message."""
    role = message["role"]
    if role == "tool":
        block: dict[str, Any] = {"type": "tool_result", "tool_use_id": message["call_id"]}
        output = text_of(message["content"])
        if output:
            block["content"] = output
        return "user", [block]
    blocks = _content_blocks(message["content"])
    if role == "assistant":
        for tool_call in message.get("tool_calls") or []:
            blocks.append({"type": "tool_use", "id": tool_call["call_id"], "name": tool_call["name"],
                           "input": arguments_object(tool_call["arguments"], tool_call["call_id"])})
    return role, blocks


def _tool_choice(call: ModelCall) -> dict[str, Any]:
    choice = call.tool_choice
    if choice == "none":
        return {"type": "none"}
    if isinstance(choice, dict) and choice.get("name"):
        out: dict[str, Any] = {"type": "tool", "name": choice["name"]}
    elif choice == "required":
        out = {"type": "any"}
    else:
        out = {"type": "auto"}
    if not call.parallel_tool_calls:
        out["disable_parallel_tool_use"] = True
    return out


def build_request(call: ModelCall) -> dict[str, Any]:
    """The Messages API body (stream=true) for a normalized call."""
    messages: list[dict[str, Any]] = []
    for message in call.messages:
        if message["role"] in ("system", "developer"):
            continue
        role, blocks = _turn(message)
        if not blocks:
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"].extend(blocks)
        else:
            messages.append({"role": role, "content": blocks})
    body: dict[str, Any] = {
        "model": call.model,
        "max_tokens": call.max_output_tokens or DEFAULT_MAX_OUTPUT_TOKENS,
        "messages": messages,
        "stream": True,
    }
    system = system_text(call, json_format_instruction(call.text_format))
    if system:
        body["system"] = system
    if call.temperature is not None:
        body["temperature"] = min(call.temperature, TEMPERATURE_MAX)
    if call.top_p is not None:
        body["top_p"] = call.top_p
    if call.stop:
        body["stop_sequences"] = call.stop  # Anthropic has no presence/frequency penalties: they are dropped
    if call.tools:
        body["tools"] = [{"name": t["name"], "description": t.get("description") or "",
                          "input_schema": t.get("parameters") or {"type": "object", "properties": {}}}
                         for t in call.tools]
        body["tool_choice"] = _tool_choice(call)
    else:
        history = _history_tool_names(messages)
        if history is not None:
            body["tools"] = [{"name": name, "description": "", "input_schema": {"type": "object"}}
                             for name in history]
            body["tool_choice"] = {"type": "none"}
    return body


def _history_tool_names(messages: list[dict[str, Any]]) -> Optional[list[str]]:
    """The tool names of the tool_use blocks in ``messages`` (in order, once each), or None when
    there are no tool_use/tool_result blocks at all."""
    names: dict[str, None] = {}
    found = False
    for message in messages:
        for block in message["content"]:
            if block["type"] == "tool_use":
                names[block["name"]] = None
            found = found or block["type"] in ("tool_use", "tool_result")
    return list(names) if found else None


def _usage(raw: dict[str, Any], usage: Usage) -> Usage:
    """``usage`` updated with the fields present in one Anthropic usage object."""
    changes = {}
    if raw.get("input_tokens") is not None:
        cached = raw.get("cache_read_input_tokens") or 0
        written = raw.get("cache_creation_input_tokens") or 0
        changes["input_tokens"] = raw["input_tokens"] + cached + written
        changes["cached_input_tokens"] = cached
    if raw.get("output_tokens") is not None:
        changes["output_tokens"] = raw["output_tokens"]
    return attrs.evolve(usage, **changes)


class AnthropicProvider:
    """Streams one Messages API call per ``stream()``; see the module docstring for the mapping."""

    def __init__(self, config: ProviderConfig, http_client: httpx2.AsyncClient) -> None:
        self.config = config
        self.http = http_client
        self.url = (config.base_url or "https://api.anthropic.com").rstrip("/") + "/v1/messages"

    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION, "accept": "text/event-stream"}
        key = self.config.api_key()
        if key:
            headers["x-api-key"] = key
        return headers

    async def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        body = build_request(call)
        async with open_stream(self.http, self.url, body, headers=self._headers(),
                               timeout=self.config.timeout()) as response:
            async for event in _events(response):
                yield event


async def _events(response: httpx2.Response) -> AsyncIterator[ProviderEvent]:
    """Normalized events from the Messages SSE stream; ends at ``message_stop``."""
    usage = Usage()
    stop_reason: Optional[str] = None
    tools: dict[int, list[Any]] = {}  # block index -> [tool call index, arguments seen?, start input]
    async with aclosing(iter_sse(response)) as sse:
        async for name, data in sse:
            payload = json_data(data)
            if not isinstance(payload, dict):
                raise ProviderError(f"upstream sent an unexpected stream event: {data[:200]!r}")
            kind = payload.get("type") or name
            if kind == "message_start":
                usage = _usage((payload.get("message") or {}).get("usage") or {}, usage)
            elif kind == "content_block_start":
                block = payload.get("content_block") or {}
                if block.get("type") == "tool_use":
                    index = len(tools)
                    tools[payload.get("index", index)] = [index, False, block.get("input") or {}]
                    yield ToolCallStart(index, block["id"], block["name"])
                elif block.get("type") == "text" and block.get("text"):
                    yield TextChunk(block["text"])
            elif kind == "content_block_delta":
                delta = payload.get("delta") or {}
                if delta.get("type") == "text_delta" and delta.get("text"):
                    yield TextChunk(delta["text"])
                elif delta.get("type") == "input_json_delta" and delta.get("partial_json"):
                    tool = tools.get(payload.get("index"))
                    if tool is None:
                        raise ProviderError("upstream sent tool arguments for a block that is not a tool call")
                    tool[1] = True
                    yield ToolCallArguments(tool[0], delta["partial_json"])
            elif kind == "content_block_stop":
                tool = tools.get(payload.get("index"))
                if tool is not None and not tool[1]:
                    yield ToolCallArguments(tool[0], orjson.dumps(tool[2]).decode())
            elif kind == "message_delta":
                stop_reason = (payload.get("delta") or {}).get("stop_reason") or stop_reason
                usage = _usage(payload.get("usage") or {}, usage)
            elif kind == "message_stop":
                yield UsageReport(usage)
                yield Finish(FINISH_REASONS.get(stop_reason or "", "stop"))
                return
            elif kind == "error":
                error = payload.get("error") or {}
                raise ProviderError(f"upstream error: {error.get('type', 'error')}: {error.get('message', '')}".strip())
    raise ProviderError("upstream stream ended before message_stop")

"""The ``gemini`` adapter: Gemini's generateContent API, streamed as SSE.

POST {base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse, key in ``x-goog-api-key``.

Request mapping (normalized call -> GenerateContentRequest):

- ``instructions`` + every system/developer message -> ``systemInstruction``.
- user -> "user", assistant -> "model"; text parts -> ``text``; images and files -> ``inlineData``
  (data URLs, raw base64 file_data) or ``fileData`` (URLs; the MIME type is guessed from the
  name, else image/jpeg for images and application/pdf for files); ``file_id`` is an error.
- Assistant tool calls -> ``functionCall`` parts, each with the documented placeholder
  ``thoughtSignature`` ``skip_thought_signature_validator`` (we keep no signatures, and
  Gemini 3 rejects replayed calls without one). Tool outputs -> ``functionResponse`` parts in a
  "user" turn; the function name is looked up from the earlier assistant call with that
  call_id; ``response`` is the output when it is a JSON object, else ``{"output": value}``.
  Consecutive turns of one role are merged (all responses to one step go in one turn).
- ``generationConfig``: temperature, topP, maxOutputTokens; json formats set
  ``responseMimeType`` application/json, json_schema adds ``responseJsonSchema`` (plain JSON
  Schema, as clients send it; ``responseSchema`` would need a translation to OpenAPI).
- Tools -> one ``functionDeclarations`` list (name, description, parameters); a tool's
  ``strict`` is dropped, since Gemini has no strict-schema switch (its schema is used as a
  guide, not enforced). tool_choice -> ``functionCallingConfig.mode`` AUTO / NONE / ANY
  (+ ``allowedFunctionNames`` for a named tool, in either form ``{"name"}`` or
  ``{"type": "function", "name"}``). ``parallel_tool_calls`` has no Gemini equivalent and is
  ignored.

Stream: text parts -> TextChunk (``thought`` parts are not shown); each ``functionCall`` ->
ToolCallStart (its ``id`` if Gemini sent one, else a fresh random ``call_`` id, so the same
call made again in a later turn gets another id: clients key tool outputs by call_id; the
ledger records the id, so replays need not recompute it) + one ToolCallArguments. usageMetadata is cumulative:
the last one wins; output = candidates + thoughts tokens, reasoning = thoughts. The finish
is reported when the stream ends. Cancellation: ``aclose()`` exits ``open_stream``, which
closes the upstream connection; no cancel scope is held across a ``yield``.
"""

from __future__ import annotations

import secrets
from contextlib import aclosing
from typing import Any, AsyncIterator, Optional
from urllib.parse import quote

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
    guess_media_type,
    json_format_instruction,
    parse_data_url,
    system_text,
    text_of,
)
from ledger.events import Usage

THOUGHT_SIGNATURE_PLACEHOLDER = "skip_thought_signature_validator"
CALL_ID_HEX_CHARS = 24  # random hex digits after "call_" (96 bits)
FILTER_REASONS = {"SAFETY", "RECITATION", "PROHIBITED_CONTENT", "BLOCKLIST", "SPII", "IMAGE_SAFETY"}
BROKEN_CALL_REASONS = {"MALFORMED_FUNCTION_CALL", "UNEXPECTED_TOOL_CALL", "TOO_MANY_TOOL_CALLS"}
TOOL_MODES = {"auto": "AUTO", "none": "NONE", "required": "ANY"}


def _media_part(url: str, default_type: str) -> dict[str, Any]:
    parsed = parse_data_url(url)
    if parsed is None:
        return {"fileData": {"mimeType": guess_media_type(url, default_type), "fileUri": url}}
    return {"inlineData": {"mimeType": parsed[0], "data": parsed[1]}}


def _parts(content: list[dict[str, Any]]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    for part in content:
        kind = part.get("type")
        if kind in TEXT_PART_TYPES:
            if part.get("text"):
                parts.append({"text": part["text"]})
        elif kind == "input_image":
            parts.append(_media_part(part["image_url"], "image/jpeg"))
        elif kind == "input_file":
            source, media_type, data = file_source(part)
            key = "fileData" if source == "url" else "inlineData"
            parts.append({key: {"mimeType": media_type, ("fileUri" if source == "url" else "data"): data}})
    return parts


def _function_response(message: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    call_id = message["call_id"]
    if call_id not in names:
        raise ProviderError(f"tool output for call_id {call_id!r} has no matching earlier tool call")
    output = text_of(message["content"])
    try:
        value: Any = orjson.loads(output)
    except orjson.JSONDecodeError:
        value = output
    response = value if isinstance(value, dict) else {"output": value}
    return {"functionResponse": {"name": names[call_id], "response": response}}


def build_request(call: ModelCall) -> dict[str, Any]:
    """The GenerateContentRequest body for a normalized call."""
    names = {tc["call_id"]: tc["name"] for m in call.messages if m["role"] == "assistant"
             for tc in m.get("tool_calls") or []}
    contents: list[dict[str, Any]] = []
    for message in call.messages:
        role = message["role"]
        if role in ("system", "developer"):
            continue
        if role == "tool":
            role, parts = "user", [_function_response(message, names)]
        else:
            parts = _parts(message["content"])
            if role == "assistant":
                role = "model"
                for tc in message.get("tool_calls") or []:
                    parts.append({"functionCall": {"name": tc["name"],
                                                   "args": arguments_object(tc["arguments"], tc["call_id"])},
                                  "thoughtSignature": THOUGHT_SIGNATURE_PLACEHOLDER})
        if not parts:
            continue
        if contents and contents[-1]["role"] == role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    body: dict[str, Any] = {"contents": contents}
    system = system_text(call)
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    generation: dict[str, Any] = {}
    if call.temperature is not None:
        generation["temperature"] = call.temperature
    if call.top_p is not None:
        generation["topP"] = call.top_p
    if call.max_output_tokens is not None:
        generation["maxOutputTokens"] = call.max_output_tokens
    for key, value in (("stopSequences", call.stop), ("presencePenalty", call.presence_penalty),
                       ("frequencyPenalty", call.frequency_penalty)):
        if value is not None:
            generation[key] = value
    if json_format_instruction(call.text_format):
        generation["responseMimeType"] = "application/json"
        if call.text_format and call.text_format.get("type") == "json_schema":
            generation["responseJsonSchema"] = call.text_format.get("schema") or {}
    if generation:
        body["generationConfig"] = generation
    if call.tools:
        declarations = []
        for tool in call.tools:
            declaration = {"name": tool["name"], "description": tool.get("description") or ""}
            if tool.get("parameters"):
                declaration["parameters"] = tool["parameters"]
            declarations.append(declaration)
        body["tools"] = [{"functionDeclarations": declarations}]
        choice = call.tool_choice
        config: dict[str, Any] = {"mode": TOOL_MODES.get(choice, "AUTO") if isinstance(choice, str) else "ANY"}
        if isinstance(choice, dict) and choice.get("name"):
            config["allowedFunctionNames"] = [choice["name"]]
        body["toolConfig"] = {"functionCallingConfig": config}
    return body


def new_call_id() -> str:
    """A fresh id for a function call Gemini sent without one (unique per call made)."""
    return "call_" + secrets.token_hex(CALL_ID_HEX_CHARS // 2)


def _usage(meta: dict[str, Any]) -> Usage:
    thoughts = meta.get("thoughtsTokenCount") or 0
    return Usage(
        input_tokens=(meta.get("promptTokenCount") or 0) + (meta.get("toolUsePromptTokenCount") or 0),
        cached_input_tokens=meta.get("cachedContentTokenCount") or 0,
        output_tokens=(meta.get("candidatesTokenCount") or 0) + thoughts,
        reasoning_tokens=thoughts,
    )


class GeminiProvider:
    """Streams one streamGenerateContent call per ``stream()``; see the module docstring."""

    def __init__(self, config: ProviderConfig, http_client: httpx2.AsyncClient) -> None:
        self.config = config
        self.http = http_client
        self.base_url = (config.base_url or "https://generativelanguage.googleapis.com").rstrip("/")

    def url(self, model: str) -> str:
        return f"{self.base_url}/v1beta/models/{quote(model, safe='-._~')}:streamGenerateContent?alt=sse"

    async def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        body = build_request(call)
        headers = {"accept": "text/event-stream"}
        key = self.config.api_key()
        if key:
            headers["x-goog-api-key"] = key
        async with open_stream(self.http, self.url(call.model), body, headers=headers,
                               timeout=self.config.timeout()) as response:
            async for event in _events(response):
                yield event


async def _events(response: httpx2.Response) -> AsyncIterator[ProviderEvent]:
    """Normalized events from the SSE stream of GenerateContentResponse chunks."""
    usage: Optional[Usage] = None
    finish: Optional[str] = None
    calls = 0
    async with aclosing(iter_sse(response)) as sse:
        async for _, data in sse:
            chunk = json_data(data)
            if not isinstance(chunk, dict):
                raise ProviderError(f"upstream sent an unexpected stream chunk: {data[:200]!r}")
            if isinstance(chunk.get("error"), dict):
                error = chunk["error"]
                raise ProviderError(f"upstream error: {error.get('status') or error.get('code')}: "
                                    f"{error.get('message', '')}")
            if isinstance(chunk.get("usageMetadata"), dict):
                usage = _usage(chunk["usageMetadata"])
            if (chunk.get("promptFeedback") or {}).get("blockReason"):
                finish = "content_filter"
            candidates = chunk.get("candidates") or []
            if not candidates:
                continue
            candidate = candidates[0]
            for part in (candidate.get("content") or {}).get("parts") or []:
                if part.get("text") and not part.get("thought"):
                    yield TextChunk(part["text"])
                elif isinstance(part.get("functionCall"), dict):
                    function = part["functionCall"]
                    if not isinstance(function.get("name"), str):
                        raise ProviderError("upstream sent a function call without a name")
                    arguments = orjson.dumps(function.get("args") or {}).decode()
                    yield ToolCallStart(calls, function.get("id") or new_call_id(), function["name"])
                    yield ToolCallArguments(calls, arguments)
                    calls += 1
            reason = candidate.get("finishReason")
            if reason and reason != "FINISH_REASON_UNSPECIFIED":
                if reason in BROKEN_CALL_REASONS:
                    raise ProviderError(f"upstream model failed to call a tool ({reason})")
                if reason == "MAX_TOKENS":
                    finish = "length"
                elif reason in FILTER_REASONS:
                    finish = "content_filter"
                else:
                    finish = "tool_calls" if calls else "stop"
    if finish is None:
        raise ProviderError("upstream stream ended without a finish reason")
    if usage is not None:
        yield UsageReport(usage)
    yield Finish(finish)

"""Validation of ``POST /v1/chat/completions`` bodies, mapped onto the Responses pipeline.

Chat messages become the same conversation items a Responses request records (messages,
``function_call`` items for assistant ``tool_calls``, ``function_call_output`` items for
``tool`` messages), so both APIs share one pipeline, one ledger format and one billing.
Choices: ``n`` other than 1 is a 400 (one answer per request keeps billing and replay
one-to-one); ``stop`` (up to 4 strings), ``presence_penalty`` and ``frequency_penalty``
pass to providers that have them (the OpenAI Responses API has none: dropped there);
``logprobs``/``seed``/``logit_bias`` and other OpenAI fields we do not act on are
accepted and ignored; unknown fields are 400 ``unknown_parameter``.
"""

from __future__ import annotations

from typing import Any, Optional

from gateway.errors import ApiError, invalid
from gateway.request_input import new_id
from gateway.request_tools import parse_tool_choice, parse_tools
from gateway.responses_request import CreateRequest, _bool, _metadata, _number, _optional_str

KNOWN_FIELDS = {
    "model", "messages", "stream", "stream_options", "temperature", "top_p", "max_tokens", "max_completion_tokens",
    "response_format", "tools", "tool_choice", "parallel_tool_calls", "stop", "presence_penalty",
    "frequency_penalty", "n", "user", "metadata", "store",
}
IGNORED_FIELDS = {"logprobs", "top_logprobs", "seed", "logit_bias", "service_tier", "reasoning_effort",
                  "prompt_cache_key", "safety_identifier", "modalities", "verbosity"}
MESSAGES_MAX = 2048
STOP_SEQUENCES_MAX = 4


def _text(content: Any, param: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list) and all(isinstance(p, dict) and p.get("type") == "text" for p in content):
        return "".join(str(p.get("text", "")) for p in content)
    raise invalid(f"Invalid '{param}': expected a string or text parts.", param, "invalid_type")


def _parts(content: Any, role: str, param: str) -> list[dict[str, Any]]:
    text_kind = "output_text" if role == "assistant" else "input_text"
    if content is None and role == "assistant":
        return []
    if isinstance(content, str):
        return [{"type": text_kind, "text": content, **({"annotations": []} if role == "assistant" else {})}]
    if not isinstance(content, list):
        raise invalid(f"Invalid '{param}': expected a string or an array of content parts.", param, "invalid_type")
    parts = []
    for i, part in enumerate(content):
        where = f"{param}[{i}]"
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text" and isinstance(part.get("text"), str):
            parts.append({"type": text_kind, "text": part["text"],
                          **({"annotations": []} if role == "assistant" else {})})
        elif kind == "image_url" and role != "assistant" and isinstance(part.get("image_url"), dict) \
                and isinstance(part["image_url"].get("url"), str):
            parts.append({"type": "input_image", "image_url": part["image_url"]["url"], "file_id": None,
                          "detail": part["image_url"].get("detail", "auto")})
        elif kind == "file" and role != "assistant" and isinstance(part.get("file"), dict):
            file = {k: v for k, v in part["file"].items() if k in ("file_id", "file_data", "filename") and v}
            if not any(k in file for k in ("file_id", "file_data")):
                raise invalid(f"Invalid '{where}.file': needs 'file_id' or 'file_data'.", f"{where}.file",
                              "missing_required_parameter")
            parts.append({"type": "input_file", **file})
        elif kind == "refusal" and role == "assistant":
            continue
        else:
            raise invalid(f"Invalid '{where}': unsupported content part for role '{role}'.", where, "invalid_value")
    return parts


def parse_messages(value: Any) -> list[dict[str, Any]]:
    """Chat messages as conversation items (see the module docstring)."""
    if not isinstance(value, list) or not value:
        raise invalid("Invalid 'messages': expected a non-empty array.", "messages",
                      "missing_required_parameter" if value is None else "invalid_type")
    if len(value) > MESSAGES_MAX:
        raise invalid(f"Invalid 'messages': at most {MESSAGES_MAX} messages.", "messages", "array_above_max_length")
    items: list[dict[str, Any]] = []
    for i, message in enumerate(value):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise invalid(f"Invalid '{param}': expected an object.", param, "invalid_type")
        role = message.get("role")
        if role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise invalid(f"Missing '{param}.tool_call_id'.", f"{param}.tool_call_id",
                              "missing_required_parameter")
            items.append({"type": "function_call_output", "id": new_id("fco"), "call_id": call_id,
                          "output": _text(message.get("content"), f"{param}.content"), "status": "completed"})
            continue
        if role not in ("system", "developer", "user", "assistant"):
            raise invalid(f"Invalid '{param}.role': expected system, developer, user, assistant or tool.",
                          f"{param}.role", "invalid_value")
        parts = _parts(message.get("content"), role, f"{param}.content")
        tool_calls = message.get("tool_calls") if role == "assistant" else None
        if parts or not tool_calls:
            items.append({"type": "message", "id": new_id("msg"), "role": role, "content": parts,
                          "status": "completed"})
        for k, call in enumerate(tool_calls or []):
            where = f"{param}.tool_calls[{k}]"
            function = call.get("function") if isinstance(call, dict) else None
            if not isinstance(function, dict) or not isinstance(call.get("id"), str) \
                    or not isinstance(function.get("name"), str) or not isinstance(function.get("arguments"), str):
                raise invalid(f"Invalid '{where}': expected {{id, type: function, function: {{name, arguments}}}}.",
                              where, "invalid_value")
            items.append({"type": "function_call", "id": new_id("fc"), "call_id": call["id"],
                          "name": function["name"], "arguments": function["arguments"], "status": "completed"})
    return items


def _response_format(value: Any) -> dict[str, Any]:
    if value is None:
        return {"type": "text"}
    kind = value.get("type") if isinstance(value, dict) else None
    if kind in ("text", "json_object"):
        return {"type": kind}
    if kind == "json_schema" and isinstance(value.get("json_schema"), dict):
        spec = value["json_schema"]
        if not isinstance(spec.get("name"), str) or not isinstance(spec.get("schema"), dict):
            raise invalid("Invalid 'response_format.json_schema': needs 'name' and 'schema'.",
                          "response_format.json_schema", "invalid_value")
        return {"type": "json_schema", "name": spec["name"], "schema": spec["schema"],
                "strict": bool(spec.get("strict", False))}
    raise invalid("Invalid 'response_format.type': expected text, json_object or json_schema.",
                  "response_format.type", "invalid_value")


def _stop(value: Any) -> Optional[list[str]]:
    if value is None:
        return None
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops) \
            or len(stops) > STOP_SEQUENCES_MAX:
        raise invalid(f"Invalid 'stop': a string or up to {STOP_SEQUENCES_MAX} strings.", "stop", "invalid_value")
    return stops


def parse_chat_request(body: Any) -> tuple[CreateRequest, bool]:
    """The pipeline request for a chat body, and whether the stream should end with a usage chunk."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    for name in body:
        if name not in KNOWN_FIELDS and name not in IGNORED_FIELDS:
            raise invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    for i, tool in enumerate(body.get("tools") or []):
        if isinstance(tool, dict) and tool.get("type") == "mcp":
            raise ApiError(422, "Hosted MCP tools (type 'mcp') are only available on /v1/responses.",
                           code="unsupported_tool_type", param=f"tools[{i}].type")
    n = body.get("n")
    if n is not None and n != 1:
        raise invalid("Only n=1 is supported: send one request per answer.", "n", "unsupported_value")
    limit = None
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise invalid(f"Invalid '{name}': expected a positive integer.", name, "invalid_value")
            limit = value if limit is None else limit
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise invalid("Invalid 'stream_options': expected an object.", "stream_options", "invalid_type")
    tools = parse_tools(body.get("tools"))
    request = CreateRequest(
        model=model,
        input_items=parse_messages(body.get("messages")),
        stream=_bool(body, "stream", False),
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        max_output_tokens=limit,
        metadata=_metadata(body.get("metadata")),
        store=_bool(body, "store", True),
        user=_optional_str(body, "user"),
        text_format=_response_format(body.get("response_format")),
        tools=tools,
        tool_choice=parse_tool_choice(body.get("tool_choice"), tools),
        parallel_tool_calls=_bool(body, "parallel_tool_calls", True),
        stop=_stop(body.get("stop")),
        presence_penalty=_number(body, "presence_penalty", -2, 2),
        frequency_penalty=_number(body, "frequency_penalty", -2, 2),
    )
    return request, bool((options or {}).get("include_usage"))

"""Validation of ``POST /v1/responses`` bodies into a ``CreateRequest``.

A request is validated completely before anything is recorded or sent upstream. Every
problem is a 400 in OpenAI's error shape with ``param`` naming the field (a dotted path
such as ``input[2].content[0].text``).

Unknown fields: OpenAI answers 400 ``unknown_parameter``, and so do we. Parameters that
OpenAI defines but this gateway does not act on (``reasoning``, ``include``,
``truncation``, ``service_tier``, ``prompt_cache_key``, ``safety_identifier``,
``stream_options``, ``top_logprobs``) are accepted and ignored, so that SDKs which send
them keep working. ``thread_id`` is Assistiv's extension (sent via ``extra_body``).
"""

from __future__ import annotations

from typing import Any, Optional

import attrs

from gateway.errors import ApiError, invalid
from gateway.request_input import parse_input
from gateway.request_tools import parse_tool_choice, parse_tools_and_servers

KNOWN_FIELDS = {
    "model", "input", "instructions", "stream", "temperature", "top_p", "max_output_tokens",
    "metadata", "store", "user", "text", "response_format", "tools", "tool_choice",
    "parallel_tool_calls", "previous_response_id", "thread_id", "max_tool_calls",
}
IGNORED_FIELDS = {
    "reasoning", "include", "truncation", "service_tier", "prompt_cache_key", "safety_identifier",
    "stream_options", "top_logprobs", "background", "prompt_cache_retention",
}
METADATA_PAIRS_MAX = 16
METADATA_KEY_CHARS_MAX = 64
METADATA_VALUE_CHARS_MAX = 512


@attrs.frozen
class CreateRequest:
    """A validated create request; ``input_items`` are normalized and carry ids."""

    model: str
    input_items: list[dict[str, Any]]
    instructions: Optional[str] = None
    stream: bool = False
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    max_output_tokens: Optional[int] = None
    metadata: dict[str, str] = attrs.field(factory=dict)
    store: bool = True
    user: Optional[str] = None
    text_format: dict[str, Any] = attrs.field(factory=lambda: {"type": "text"})
    tools: list[dict[str, Any]] = attrs.field(factory=list)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    previous_response_id: Optional[str] = None
    thread_id: Optional[str] = None
    max_tool_calls: Optional[int] = None
    stop: Optional[list[str]] = None  # set by Chat Completions requests only
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    # Hosted MCP servers named in ``tools``, with their secrets: memory only, never recorded
    # (``tools`` holds their redacted echo).
    mcp_servers: tuple[Any, ...] = attrs.field(default=(), repr=False)

    def echoed_params(self) -> dict[str, Any]:
        """The request fields a Response object echoes (sorted; ``thread_id`` is our extension)."""
        return {
            "background": False,
            "instructions": self.instructions,
            "max_output_tokens": self.max_output_tokens,
            "max_tool_calls": self.max_tool_calls,
            "metadata": self.metadata,
            "parallel_tool_calls": self.parallel_tool_calls,
            "previous_response_id": self.previous_response_id,
            "reasoning": {"effort": None, "summary": None},
            "service_tier": "default",
            "store": self.store,
            "temperature": 1.0 if self.temperature is None else self.temperature,
            "text": {"format": self.text_format},
            "thread_id": self.thread_id,
            "tool_choice": self.tool_choice,
            "tools": self.tools,
            "top_p": 1.0 if self.top_p is None else self.top_p,
            "truncation": "disabled",
            "user": self.user,
        }


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(body: dict, name: str, low: float, high: float) -> Optional[float]:
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value):
        raise invalid(f"Invalid type for '{name}': expected a number.", name, "invalid_type")
    if not low <= value <= high:
        raise invalid(f"Invalid '{name}': expected a value between {low:g} and {high:g}, got {value}.", name,
                      "invalid_value")
    return float(value)


def _bool(body: dict, name: str, default: bool) -> bool:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, bool):
        raise invalid(f"Invalid type for '{name}': expected a boolean.", name, "invalid_type")
    return value


def _optional_str(body: dict, name: str) -> Optional[str]:
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise invalid(f"Invalid type for '{name}': expected a string.", name, "invalid_type")
    return value


def _metadata(value: Any) -> dict[str, str]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise invalid("Invalid 'metadata': expected an object of string pairs.", "metadata", "invalid_type")
    if len(value) > METADATA_PAIRS_MAX:
        raise invalid(f"Invalid 'metadata': at most {METADATA_PAIRS_MAX} pairs.", "metadata", "invalid_value")
    for key, val in value.items():
        if len(key) > METADATA_KEY_CHARS_MAX:
            raise invalid(f"Invalid 'metadata': keys are at most {METADATA_KEY_CHARS_MAX} characters.",
                          f"metadata.{key}", "invalid_value")
        if not isinstance(val, str) or len(val) > METADATA_VALUE_CHARS_MAX:
            raise invalid(f"Invalid 'metadata.{key}': values are strings of at most {METADATA_VALUE_CHARS_MAX} "
                          "characters.", f"metadata.{key}", "invalid_value")
    return dict(value)


def _text_format(body: dict) -> dict[str, Any]:
    text, alias = body.get("text"), body.get("response_format")
    if text is not None and not isinstance(text, dict):
        raise invalid("Invalid 'text': expected an object.", "text", "invalid_type")
    fmt, param = (text or {}).get("format"), "text.format"
    if fmt is None and alias is not None:
        fmt, param = alias, "response_format"
    if fmt is None:
        return {"type": "text"}
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise invalid(f"Invalid '{param}.type': expected text, json_object or json_schema.", f"{param}.type",
                      "invalid_value")
    if fmt["type"] != "json_schema":
        return {"type": fmt["type"]}
    schema_src = fmt.get("json_schema") if isinstance(fmt.get("json_schema"), dict) else fmt  # chat-style alias
    name, schema = schema_src.get("name"), schema_src.get("schema")
    if not isinstance(name, str) or not name:
        raise invalid(f"Missing required parameter: '{param}.name'.", f"{param}.name", "missing_required_parameter")
    if not isinstance(schema, dict):
        raise invalid(f"Missing required parameter: '{param}.schema'.", f"{param}.schema",
                      "missing_required_parameter")
    out = {"type": "json_schema", "name": name, "schema": schema, "strict": bool(schema_src.get("strict", False))}
    if isinstance(schema_src.get("description"), str):
        out["description"] = schema_src["description"]
    return out


def parse_create_request(body: Any) -> CreateRequest:
    """Validate a decoded JSON body; raise ApiError(400) naming the first bad field."""
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    for name in body:
        if name not in KNOWN_FIELDS and name not in IGNORED_FIELDS:
            raise invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    model = body.get("model")
    if model is None:
        raise invalid("Missing required parameter: 'model'.", "model", "missing_required_parameter")
    if not isinstance(model, str) or not model:
        raise invalid("Invalid 'model': expected a non-empty string.", "model", "invalid_type")
    if "input" not in body or body["input"] is None:
        raise invalid("Missing required parameter: 'input'.", "input", "missing_required_parameter")
    tools, mcp_servers = parse_tools_and_servers(body.get("tools"))
    max_tool_calls = body.get("max_tool_calls")
    if max_tool_calls is not None and (not isinstance(max_tool_calls, int) or isinstance(max_tool_calls, bool)
                                       or max_tool_calls < 1):
        raise invalid("Invalid 'max_tool_calls': expected a positive integer.", "max_tool_calls", "invalid_value")
    max_output_tokens = body.get("max_output_tokens")
    if max_output_tokens is not None and (not isinstance(max_output_tokens, int) or isinstance(max_output_tokens, bool)):
        raise invalid("Invalid type for 'max_output_tokens': expected an integer.", "max_output_tokens", "invalid_type")
    if max_output_tokens is not None and max_output_tokens < 1:
        raise invalid("Invalid 'max_output_tokens': expected a value >= 1.", "max_output_tokens",
                      "integer_below_min_value")
    return CreateRequest(
        model=model,
        input_items=parse_input(body["input"]),
        instructions=_optional_str(body, "instructions"),
        stream=_bool(body, "stream", False),
        temperature=_number(body, "temperature", 0, 2),
        top_p=_number(body, "top_p", 0, 1),
        max_output_tokens=max_output_tokens,
        metadata=_metadata(body.get("metadata")),
        store=_bool(body, "store", True),
        user=_optional_str(body, "user"),
        text_format=_text_format(body),
        parallel_tool_calls=_bool(body, "parallel_tool_calls", True),
        tools=tools,
        tool_choice=parse_tool_choice(body.get("tool_choice"), tools),
        previous_response_id=_optional_str(body, "previous_response_id"),
        thread_id=_optional_str(body, "thread_id"),
        max_tool_calls=max_tool_calls,
        mcp_servers=tuple(mcp_servers),
    )


def check_model_rules(request: CreateRequest, min_output_tokens: Optional[int]) -> None:
    """The model's own rules: ``max_output_tokens`` below its minimum is 422 (the seed's contract)."""
    if min_output_tokens and request.max_output_tokens is not None and request.max_output_tokens < min_output_tokens:
        raise ApiError(
            422,
            f"Invalid 'max_output_tokens': integer below minimum value. Expected a value >= {min_output_tokens}, "
            f"but got {request.max_output_tokens} instead.",
            code="integer_below_min_value",
            param="max_output_tokens",
        )

"""Input items of ``POST /v1/responses``: validation and normalization.

Every item is normalized to the shape the ledger records and the input_items route lists,
each with an id: messages (content always an array of parts), ``function_call`` replays
and ``function_call_output`` results, ``mcp_approval_response`` answers, and replays of the
MCP items a response outputs (``mcp_list_tools``, ``mcp_call``, ``mcp_approval_request``), which
a client using ``store: false`` sends back. Errors are 400s whose ``param`` is the item's path.
"""

from __future__ import annotations

import uuid
from typing import Any

from gateway.errors import invalid

ROLES = ("user", "assistant", "system", "developer")
INPUT_ITEMS_MAX = 2048  # items in one request's input
FUNCTION_OUTPUT_CHARS_MAX = 1_000_000  # one function_call_output's text


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


def _part(part: Any, role: str, param: str) -> dict[str, Any]:
    if not isinstance(part, dict):
        raise invalid(f"Invalid '{param}': expected an object.", param, "invalid_type")
    kind = part.get("type")
    text_kinds = ("output_text", "refusal") if role == "assistant" else ("input_text",)
    if kind in ("input_text", "output_text"):
        if kind not in text_kinds and not (role == "assistant" and kind == "input_text"):
            raise invalid(f"Invalid '{param}.type': '{kind}' is not allowed for role '{role}'.", f"{param}.type",
                          "invalid_value")
        if not isinstance(part.get("text"), str):
            raise invalid(f"Missing or invalid '{param}.text': expected a string.", f"{param}.text",
                          "invalid_type")
        out = {"type": kind, "text": part["text"]}
        if kind == "output_text":
            out["annotations"] = part.get("annotations") or []
        return out
    if kind == "input_image":
        url, file_id = part.get("image_url"), part.get("file_id")
        if not isinstance(url, str) and not isinstance(file_id, str):
            raise invalid(f"Invalid '{param}': input_image needs 'image_url' or 'file_id'.", param,
                          "missing_required_parameter")
        detail = part.get("detail", "auto")
        if detail not in ("low", "high", "auto", "original"):
            raise invalid(f"Invalid '{param}.detail': expected low, high or auto.", f"{param}.detail",
                          "invalid_value")
        return {"type": "input_image", "image_url": url, "file_id": file_id, "detail": detail}
    if kind == "input_file":
        fields = {k: part.get(k) for k in ("file_id", "file_url", "file_data", "filename")}
        if not any(isinstance(fields[k], str) for k in ("file_id", "file_url", "file_data")):
            raise invalid(f"Invalid '{param}': input_file needs 'file_id', 'file_url' or 'file_data'.", param,
                          "missing_required_parameter")
        return {"type": "input_file", **{k: v for k, v in fields.items() if v is not None}}
    raise invalid(f"Invalid '{param}.type': unsupported content type {kind!r}.", f"{param}.type", "invalid_value")


def _message(item: dict, param: str) -> dict[str, Any]:
    role = item.get("role")
    if role not in ROLES:
        raise invalid(f"Invalid '{param}.role': expected one of {', '.join(ROLES)}.", f"{param}.role",
                      "invalid_value")
    content = item.get("content")
    if isinstance(content, str):
        kind = "output_text" if role == "assistant" else "input_text"
        parts = [{"type": kind, "text": content, **({"annotations": []} if kind == "output_text" else {})}]
    elif isinstance(content, list):
        parts = [_part(p, role, f"{param}.content[{i}]") for i, p in enumerate(content)]
    else:
        raise invalid(f"Invalid '{param}.content': expected a string or an array of content parts.",
                      f"{param}.content", "invalid_type")
    item_id = item.get("id") if isinstance(item.get("id"), str) else new_id("msg")
    return {"type": "message", "id": item_id, "role": role, "content": parts, "status": "completed"}


def parse_input(value: Any) -> list[dict[str, Any]]:
    """Normalize ``input`` (a string or an array of items) to message items with ids."""
    if isinstance(value, str):
        return [_message({"role": "user", "content": value}, "input")]
    if not isinstance(value, list):
        raise invalid("Invalid 'input': expected a string or an array of input items.", "input", "invalid_type")
    if not value:
        raise invalid("Invalid 'input': the array is empty.", "input", "empty_array")
    if len(value) > INPUT_ITEMS_MAX:
        raise invalid(f"Invalid 'input': at most {INPUT_ITEMS_MAX} items.", "input", "array_above_max_length")
    items = []
    for i, item in enumerate(value):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise invalid(f"Invalid '{param}': expected an object.", param, "invalid_type")
        kind = item.get("type", "message")
        if kind == "message":
            items.append(_message(item, param))
        elif kind == "function_call":
            items.append(_function_call(item, param))
        elif kind == "function_call_output":
            items.append(_function_call_output(item, param))
        elif kind in MCP_ITEMS:
            items.append(MCP_ITEMS[kind](item, param))
        else:
            raise invalid(f"Invalid '{param}.type': unsupported input item type {kind!r}.", f"{param}.type",
                          "invalid_value")
    return items


def _string_field(item: dict, name: str, param: str) -> str:
    value = item.get(name)
    if not isinstance(value, str) or (name != "arguments" and not value):
        raise invalid(f"Missing or invalid '{param}.{name}': expected a string.", f"{param}.{name}",
                      "missing_required_parameter" if value is None else "invalid_type")
    return value


def _function_call(item: dict, param: str) -> dict[str, Any]:
    call_id = _string_field(item, "call_id", param)
    return {
        "type": "function_call",
        "id": item["id"] if isinstance(item.get("id"), str) else new_id("fc"),
        "call_id": call_id,
        "name": _string_field(item, "name", param),
        "arguments": _string_field(item, "arguments", param),
        "status": "completed",
    }


def _function_call_output(item: dict, param: str) -> dict[str, Any]:
    call_id = _string_field(item, "call_id", param)
    output = item.get("output")
    if isinstance(output, list):
        texts = []
        for i, part in enumerate(output):
            if not isinstance(part, dict) or part.get("type") != "input_text" or not isinstance(part.get("text"), str):
                raise invalid(f"Invalid '{param}.output[{i}]': only input_text parts are supported.",
                              f"{param}.output[{i}]", "invalid_value")
            texts.append(part["text"])
        output = "".join(texts)
    if not isinstance(output, str):
        raise invalid(f"Missing or invalid '{param}.output': expected a string.", f"{param}.output",
                      "invalid_type")
    if len(output) > FUNCTION_OUTPUT_CHARS_MAX:
        raise invalid(f"Invalid '{param}.output': at most {FUNCTION_OUTPUT_CHARS_MAX} characters.",
                      f"{param}.output", "string_above_max_length")
    return {
        "type": "function_call_output",
        "id": item["id"] if isinstance(item.get("id"), str) else new_id("fco"),
        "call_id": call_id,
        "output": output,
        "status": "completed",
    }


MCP_TOOLS_MAX = 1_000  # tools in one replayed mcp_list_tools item


def _optional(item: dict, name: str, param: str, kinds: tuple[type, ...]) -> Any:
    value = item.get(name)
    if value is not None and not isinstance(value, kinds):
        raise invalid(f"Invalid '{param}.{name}'.", f"{param}.{name}", "invalid_type")
    return value


def _mcp_approval_response(item: dict, param: str) -> dict[str, Any]:
    approve = item.get("approve")
    if not isinstance(approve, bool):
        raise invalid(f"Missing or invalid '{param}.approve': expected a boolean.", f"{param}.approve",
                      "missing_required_parameter" if approve is None else "invalid_type")
    return {
        "type": "mcp_approval_response",
        "id": item["id"] if isinstance(item.get("id"), str) else new_id("mcpa"),
        "approval_request_id": _string_field(item, "approval_request_id", param),
        "approve": approve,
        "reason": _optional(item, "reason", param, (str,)),
    }


def _mcp_list_tools(item: dict, param: str) -> dict[str, Any]:
    tools = item.get("tools")
    if not isinstance(tools, list) or len(tools) > MCP_TOOLS_MAX:
        raise invalid(f"Invalid '{param}.tools': expected an array of at most {MCP_TOOLS_MAX} tools.",
                      f"{param}.tools", "invalid_type")
    out = []
    for i, tool in enumerate(tools):
        where = f"{param}.tools[{i}]"
        if not isinstance(tool, dict):
            raise invalid(f"Invalid '{where}': expected an object.", where, "invalid_type")
        out.append({"name": _string_field(tool, "name", where),
                    "description": _optional(tool, "description", where, (str,)),
                    "input_schema": _optional(tool, "input_schema", where, (dict,)) or {},
                    "annotations": _optional(tool, "annotations", where, (dict,))})
    return {
        "type": "mcp_list_tools",
        "id": item["id"] if isinstance(item.get("id"), str) else new_id("mcpl"),
        "server_label": _string_field(item, "server_label", param),
        "tools": out,
        "error": _optional(item, "error", param, (str,)),
    }


def _mcp_call(item: dict, param: str) -> dict[str, Any]:
    status = item.get("status") or "completed"
    if status not in ("completed", "incomplete", "failed"):
        raise invalid(f"Invalid '{param}.status': a replayed mcp_call is completed, incomplete or failed.",
                      f"{param}.status", "invalid_value")
    return {
        "type": "mcp_call",
        "id": item["id"] if isinstance(item.get("id"), str) else new_id("mcp"),
        "status": status,
        "server_label": _string_field(item, "server_label", param),
        "name": _string_field(item, "name", param),
        "arguments": _string_field(item, "arguments", param),
        "output": _optional(item, "output", param, (str,)),
        "error": _optional(item, "error", param, (dict, str)),
        "approval_request_id": _optional(item, "approval_request_id", param, (str,)),
    }


def _mcp_approval_request(item: dict, param: str) -> dict[str, Any]:
    return {
        "type": "mcp_approval_request",
        "id": _string_field(item, "id", param),
        "server_label": _string_field(item, "server_label", param),
        "name": _string_field(item, "name", param),
        "arguments": _string_field(item, "arguments", param),
    }


MCP_ITEMS = {
    "mcp_approval_response": _mcp_approval_response,
    "mcp_list_tools": _mcp_list_tools,
    "mcp_call": _mcp_call,
    "mcp_approval_request": _mcp_approval_request,
}

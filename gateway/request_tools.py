"""``tools`` and ``tool_choice`` of ``POST /v1/responses``: function tools, validated and flat.

Function tools are accepted in the Responses shape (flat: ``{"type": "function", "name",
"description", "parameters", "strict"}``) and, as the seed promises "the same format as
chat completions", in the chat shape (``{"type": "function", "function": {...}}``); both
are recorded and echoed flat. ``mcp`` tools (hosted MCP servers, gateway/mcp/spec.py) are
echoed with their ``authorization`` and ``headers`` values redacted; the values themselves
are returned apart, in memory only, as ``McpServer`` objects.
"""

from __future__ import annotations

import re
from typing import Any

from gateway.errors import invalid
from gateway.mcp.spec import McpServer, parse_mcp_tool

TOOLS_MAX = 128  # tools in one request
TOOL_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")


def _function_tool(tool: dict, param: str) -> dict[str, Any]:
    spec = tool.get("function") if isinstance(tool.get("function"), dict) else tool
    name = spec.get("name")
    if not isinstance(name, str) or not TOOL_NAME.match(name):
        raise invalid(f"Invalid '{param}.name': 1-64 letters, digits, '_' or '-'.", f"{param}.name",
                      "invalid_value")
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise invalid(f"Invalid '{param}.description': expected a string.", f"{param}.description", "invalid_type")
    parameters = spec.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise invalid(f"Invalid '{param}.parameters': expected a JSON schema object.", f"{param}.parameters",
                      "invalid_type")
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise invalid(f"Invalid '{param}.strict': expected a boolean.", f"{param}.strict", "invalid_type")
    return {"type": "function", "name": name, "description": description, "parameters": parameters,
            "strict": strict}


def parse_tools(value: Any) -> list[dict[str, Any]]:
    """Validate ``tools``; the list as recorded and echoed (MCP secrets redacted)."""
    return parse_tools_and_servers(value)[0]


def parse_tools_and_servers(value: Any) -> tuple[list[dict[str, Any]], list[McpServer]]:
    """Validate ``tools``: (echoed tools, MCP servers with their secrets). Function names and
    MCP server labels must be unique."""
    if value is None:
        return [], []
    if not isinstance(value, list):
        raise invalid("Invalid 'tools': expected an array.", "tools", "invalid_type")
    if len(value) > TOOLS_MAX:
        raise invalid(f"Invalid 'tools': at most {TOOLS_MAX} tools.", "tools", "array_above_max_length")
    tools, names, servers = [], set(), []
    for i, tool in enumerate(value):
        param = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise invalid(f"Invalid '{param}': expected an object.", param, "invalid_type")
        kind = tool.get("type")
        if kind == "mcp":
            server = parse_mcp_tool(tool, param)
            if any(s.label == server.label for s in servers):
                raise invalid(f"Invalid '{param}.server_label': duplicate server_label {server.label!r}.",
                              f"{param}.server_label", "invalid_value")
            servers.append(server)
            tools.append(server.echo())
            continue
        if kind != "function":
            raise invalid(f"Invalid '{param}.type': unsupported tool type {kind!r}.", f"{param}.type",
                          "invalid_value")
        parsed = _function_tool(tool, param)
        if parsed["name"] in names:
            raise invalid(f"Invalid '{param}.name': duplicate tool name {parsed['name']!r}.", f"{param}.name",
                          "invalid_value")
        names.add(parsed["name"])
        tools.append(parsed)
    return tools, servers


def function_tools(tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The function tools among recorded ``tools``."""
    return [t for t in tools if t["type"] == "function"]


def parse_tool_choice(value: Any, tools: list[dict[str, Any]]) -> Any:
    """``auto`` | ``none`` | ``required`` | ``{"type": "function", "name"}`` naming a given tool |
    ``{"type": "mcp", "server_label", "name"?}`` naming a given MCP server."""
    if value is None:
        return "auto"
    if value in ("auto", "none", "required"):
        if value == "required" and not tools:
            raise invalid("Invalid 'tool_choice': 'required' needs at least one tool.", "tool_choice",
                          "invalid_value")
        return value
    if isinstance(value, dict) and value.get("type") == "function":
        spec = value.get("function") if isinstance(value.get("function"), dict) else value
        name = spec.get("name")
        if name not in {t["name"] for t in function_tools(tools)}:
            raise invalid(f"Invalid 'tool_choice': no function named {name!r} in 'tools'.", "tool_choice.name",
                          "invalid_value")
        return {"type": "function", "name": name}
    if isinstance(value, dict) and value.get("type") == "mcp":
        label, name = value.get("server_label"), value.get("name")
        if label not in {t["server_label"] for t in tools if t["type"] == "mcp"}:
            raise invalid(f"Invalid 'tool_choice': no mcp tool with server_label {label!r} in 'tools'.",
                          "tool_choice.server_label", "invalid_value")
        if name is not None and (not isinstance(name, str) or not name):
            raise invalid("Invalid 'tool_choice.name': expected a tool name.", "tool_choice.name", "invalid_type")
        return {"type": "mcp", "server_label": label, "name": name}
    raise invalid("Invalid 'tool_choice': expected auto, none, required, a function or an mcp server.",
                  "tool_choice", "invalid_value")

"""Request-level checks of hosted MCP tools, before anything is recorded (400 naming the field).

* at most ``[mcp].servers_max`` MCP servers per request;
* every ``server_url`` passes the URL policy (gateway/mcp/policy.py);
* every ``mcp_approval_response`` answers an ``mcp_approval_request`` of the conversation
  (context or this input) that has no answer yet, of a server this request names in ``tools``.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from gateway.config import McpConfig
from gateway.errors import invalid
from gateway.mcp.policy import Origin, check_url
from gateway.mcp.spec import McpServer


def check_servers(servers: Sequence[McpServer], tools: Sequence[dict[str, Any]], config: McpConfig,
                  allowlist: Iterable[Origin]) -> None:
    """The servers' count and URLs (``tools`` are the echoed tools, to name the right index)."""
    if len(servers) > config.servers_max:
        raise invalid(f"Invalid 'tools': at most {config.servers_max} mcp tools per request.", "tools",
                      "array_above_max_length")
    positions = {t["server_label"]: i for i, t in enumerate(tools) if t["type"] == "mcp"}
    for server in servers:
        check_url(server.url, allowlist, f"tools[{positions[server.label]}].server_url")


def check_approvals(context: Sequence[dict[str, Any]], input_items: Sequence[dict[str, Any]],
                    servers: Sequence[McpServer]) -> None:
    """Each approval response answers an open approval request of a server in ``tools``."""
    labels = {server.label for server in servers}
    requests = {item["id"]: item for item in context if item["type"] == "mcp_approval_request"}
    answered = {item["approval_request_id"] for item in context if item["type"] == "mcp_approval_response"}
    for i, item in enumerate(input_items):
        if item["type"] == "mcp_approval_request":
            requests[item["id"]] = item
        if item["type"] != "mcp_approval_response":
            continue
        param = f"input[{i}].approval_request_id"
        request = requests.get(item["approval_request_id"])
        if request is None:
            raise invalid(f"No MCP approval request found with id {item['approval_request_id']!r}.", param,
                          "invalid_value")
        if item["approval_request_id"] in answered:
            raise invalid(f"The MCP approval request {item['approval_request_id']!r} was already answered.", param,
                          "invalid_value")
        if request["server_label"] not in labels:
            raise invalid(f"The approval request {request['id']!r} is for MCP server {request['server_label']!r}: "
                          "send that mcp tool in 'tools' to run the call.", param, "invalid_value")
        answered.add(item["approval_request_id"])

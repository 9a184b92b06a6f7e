"""MCP tools as the model sees them: namespaced function names, mapped both ways.

Tool ``ask`` of server ``deepwiki`` is offered to the model as the function
``deepwiki__ask``, so two servers' tools never clash. A pair whose plain name would not be a
valid function name (1-64 of letters, digits, ``_``, ``-``), or would clash with another
function, is named ``<prefix>_<8 hex digits of SHA-256 of label and name>`` instead. The
plain name is a pure function of the pair, so earlier turns' calls keep their names.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Iterable, Optional

import attrs

FUNCTION_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
SEPARATOR = "__"
HASHED_PREFIX_CHARS_MAX = 64 - 9  # room for "_" and 8 hex digits


def plain_name(label: str, tool: str) -> str:
    """``label__tool``: the name a tool gets unless it is invalid or taken."""
    return f"{label}{SEPARATOR}{tool}"


def hashed_name(label: str, tool: str) -> str:
    """A valid, near-unique function name for any (label, tool) pair."""
    digest = hashlib.sha256(f"{label}\x00{tool}".encode()).hexdigest()[:8]
    prefix = re.sub(r"[^a-zA-Z0-9_-]", "_", plain_name(label, tool))[:HASHED_PREFIX_CHARS_MAX]
    return f"{prefix}_{digest}"


def function_name(label: str, tool: str) -> str:
    """The function name of a tool, when nothing clashes with it."""
    name = plain_name(label, tool)
    return name if FUNCTION_NAME.match(name) else hashed_name(label, tool)


@attrs.frozen
class McpFunction:
    """One MCP tool offered to the model."""

    function: str
    server_label: str
    tool: str
    description: Optional[str]
    input_schema: dict[str, Any]
    annotations: Optional[dict[str, Any]]

    def definition(self) -> dict[str, Any]:
        """The normalized function definition providers receive."""
        schema = self.input_schema if self.input_schema.get("type") == "object" else {
            "type": "object", "properties": {}}
        return {"name": self.function, "description": self.description, "parameters": schema, "strict": None}


class ToolMap:
    """Function name <-> (server label, tool) for the MCP tools of one model call."""

    def __init__(self, taken: Iterable[str] = ()) -> None:
        self._taken = set(taken)  # the request's own function tools
        self._by_function: dict[str, McpFunction] = {}
        self._by_pair: dict[tuple[str, str], McpFunction] = {}

    def add(self, label: str, tool: dict[str, Any], server_description: Optional[str] = None) -> McpFunction:
        """Offer ``tool`` (an mcp_list_tools entry) of server ``label``; idempotent per pair."""
        pair = (label, tool["name"])
        if pair in self._by_pair:
            return self._by_pair[pair]
        name = function_name(*pair)
        if name in self._taken or name in self._by_function:
            name = hashed_name(*pair)
        description = tool.get("description")
        if server_description:
            description = f"{description or ''} (MCP server {label}: {server_description})".strip()
        function = McpFunction(name, label, tool["name"], description, tool.get("input_schema") or {},
                               tool.get("annotations"))
        self._by_function[name] = self._by_pair[pair] = function
        return function

    def lookup(self, function: str) -> Optional[McpFunction]:
        return self._by_function.get(function)

    def for_pair(self, label: str, tool: str) -> Optional[McpFunction]:
        return self._by_pair.get((label, tool))

    def functions(self, labels: Optional[Iterable[str]] = None) -> list[McpFunction]:
        """The offered functions (of the servers ``labels`` only, when given), in order added."""
        wanted = set(labels) if labels is not None else None
        return [f for f in self._by_function.values() if wanted is None or f.server_label in wanted]

    def __len__(self) -> int:
        return len(self._by_function)

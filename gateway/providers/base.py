"""The normalized provider interface: one call in, a stream of normalized events out.

An adapter turns a ``ModelCall`` into an async iterator of ``TextChunk``,
``ToolCallStart``/``ToolCallArguments``, ``UsageReport`` and ``Finish``; failures raise
``ProviderError`` (``timeout=True`` for timeouts), before or after output started. Adapters
hold no cancel scope across a ``yield``: a consumer may stop iterating at any point (the
client left) and ``aclose()`` ends the upstream call.

Normalized messages (``ModelCall.messages``), in conversation order:

    {"role": "user" | "system" | "developer", "content": [parts]}
    {"role": "assistant", "content": [parts], "tool_calls": [{"call_id", "name", "arguments"}]}
                                                    (tool_calls optional; content may be [])
    {"role": "tool", "call_id": str, "content": [{"type": "input_text", "text": output}]}

Parts: ``{"type": "input_text"|"output_text", "text"}``, ``{"type": "input_image", "image_url",
"detail"}`` (URL or data URL), ``{"type": "input_file", "file_data"|"file_url"|"file_id",
"filename"}``. Tools (``ModelCall.tools``): ``{"name", "description", "parameters", "strict"}``
function definitions; ``tool_choice``: "auto" | "none" | "required" | {"name": str}.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Optional, Protocol, Union

import attrs

from ledger.events import Usage


@attrs.frozen
class ModelCall:
    """What every adapter receives, whatever the provider."""

    model: str  # the upstream model name
    messages: list[dict[str, Any]]  # normalized: {"role", "content": [parts]} in order
    instructions: Optional[str] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    max_output_tokens: Optional[int] = None
    text_format: Optional[dict[str, Any]] = None  # {"type": "text"|"json_object"} or json_schema (flat)
    tools: list[dict[str, Any]] = attrs.field(factory=list)
    tool_choice: Any = "auto"
    parallel_tool_calls: bool = True
    stop: Optional[list[str]] = None  # Chat Completions' stop sequences (not in the Responses API)
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None


@attrs.frozen
class TextChunk:
    text: str


@attrs.frozen
class ToolCallStart:
    """The model began tool call number ``index`` (0-based, in output order)."""

    index: int
    call_id: str
    name: str


@attrs.frozen
class ToolCallArguments:
    """A piece of the JSON arguments of tool call ``index`` (pieces split anywhere)."""

    index: int
    delta: str


@attrs.frozen
class UsageReport:
    usage: Usage


@attrs.frozen
class Finish:
    reason: str  # stop | length | content_filter | tool_calls


ProviderEvent = Union[TextChunk, ToolCallStart, ToolCallArguments, UsageReport, Finish]


class ProviderError(Exception):
    """The upstream failed: an HTTP error, a broken stream, a malformed answer, a timeout."""

    def __init__(self, message: str, timeout: bool = False, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.timeout = timeout
        self.status = status


class Provider(Protocol):
    def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        """Start the upstream call and yield its normalized events."""

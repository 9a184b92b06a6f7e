"""Event types of the ledger: frozen attrs classes, each with an explicit, stable tag.

The tag (``TAGS[cls]``) is what the ledger stores in ``type``; it never derives from a class
name, so renaming a class cannot break a recorded ledger. A tag, once recorded anywhere, is
forever: change an event's meaning by adding a new event type, never by editing an old one.

Fields hold only JSON-native values (str, int, bool, None, lists, dicts). Money is integer
micro-USD; times come from the envelope's ``recorded_at``, never from the event body.
"""

from __future__ import annotations

from typing import Any, Optional, Union

import attrs

# --- tenancy -------------------------------------------------------------------------------


@attrs.frozen
class PlatformCreated:
    """A platform (tenant) came into being."""

    platform_id: str
    name: str


@attrs.frozen
class ApiKeyCreated:
    """An API key was issued; only its SHA-256 hash and a display prefix are kept."""

    key_id: str
    platform_id: str
    key_hash: str
    prefix: str
    end_user_id: Optional[str] = None
    expires_at: Optional[int] = None  # unix seconds; None = never


@attrs.frozen
class ApiKeyRevoked:
    """An API key stopped working."""

    key_id: str
    platform_id: str


# --- responses -----------------------------------------------------------------------------


@attrs.frozen
class Usage:
    """Token usage as reported by the provider (or estimated, see ResponseFinished)."""

    input_tokens: int = 0
    cached_input_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0


@attrs.frozen
class ErrorInfo:
    """An error as it appears in a Response object or an ``error`` stream event."""

    code: str
    message: str


@attrs.frozen
class ResponseAccepted:
    """A /v1/responses request passed validation and is about to run.

    ``params`` holds the echoed request fields of the Response object (instructions, model
    parameters, tools, metadata...), ``input_items`` the normalized input items with their ids.
    """

    response_id: str
    platform_id: str
    model: str
    provider: str
    stream: bool
    params: dict[str, Any]
    input_items: list[dict[str, Any]]
    end_user_id: Optional[str] = None


@attrs.frozen
class ItemStarted:
    """An output item began (a message, later function calls and MCP items)."""

    response_id: str
    output_index: int
    item: dict[str, Any]


@attrs.frozen
class TextDelta:
    """A piece of output text for the message item at ``output_index``."""

    response_id: str
    output_index: int
    delta: str


@attrs.frozen
class ArgumentsDelta:
    """A piece of the JSON arguments of the function_call item at ``output_index``."""

    response_id: str
    output_index: int
    delta: str


@attrs.frozen
class ItemFinished:
    """The output item at ``output_index`` is done, with its final status."""

    response_id: str
    output_index: int
    status: str  # completed | incomplete


@attrs.frozen
class ResponseFinished:
    """The terminal event of a response.

    ``status``: completed | incomplete | failed. ``interruption`` says why a stream stopped
    early: ``client_disconnected`` (nothing more was sent; the client was gone) or
    ``upstream_failed``. ``usage_estimated`` marks usage the gateway estimated because the
    provider reported none.
    """

    response_id: str
    status: str
    usage: Usage
    usage_estimated: bool = False
    incomplete_reason: Optional[str] = None
    error: Optional[ErrorInfo] = None
    interruption: Optional[str] = None


@attrs.frozen
class ResponseDeleted:
    """The response was deleted by its owner; it stays in the ledger, hidden from reads."""

    response_id: str


Event = Union[
    PlatformCreated,
    ApiKeyCreated,
    ApiKeyRevoked,
    ResponseAccepted,
    ItemStarted,
    TextDelta,
    ArgumentsDelta,
    ItemFinished,
    ResponseFinished,
    ResponseDeleted,
]

TAGS: dict[type, str] = {
    PlatformCreated: "platform.created",
    ApiKeyCreated: "api_key.created",
    ApiKeyRevoked: "api_key.revoked",
    ResponseAccepted: "response.accepted",
    ItemStarted: "response.item_started",
    TextDelta: "response.text_delta",
    ArgumentsDelta: "response.arguments_delta",
    ItemFinished: "response.item_finished",
    ResponseFinished: "response.finished",
    ResponseDeleted: "response.deleted",
}

EVENT_TYPES: dict[str, type] = {tag: cls for cls, tag in TAGS.items()}

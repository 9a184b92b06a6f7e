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


@attrs.frozen
class PlatformUpdated:
    """A platform's name and settings after a change (the whole new state, not a diff).

    ``default_budget_micros``: each new end user gets a monthly budget of this size.
    The rate limits are the platform's defaults for its end users (None = no limit).
    """

    platform_id: str
    name: str
    default_budget_micros: Optional[int] = None
    rpm_limit: Optional[int] = None
    tpm_limit: Optional[int] = None
    rpd_limit: Optional[int] = None


@attrs.frozen
class EndUserCreated:
    """An end user of a platform, unique per platform by ``external_id``."""

    end_user_id: str
    platform_id: str
    external_id: str
    display_name: Optional[str] = None
    metadata: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class EndUserUpdated:
    """An end user's editable state after a change; ``is_active`` false = deleted (deactivated)."""

    end_user_id: str
    platform_id: str
    display_name: Optional[str]
    metadata: dict[str, Any]
    is_active: bool


@attrs.frozen
class RateLimitsSet:
    """Per-end-user rate-limit overrides (None = that dimension unlimited); ``cleared`` drops them all."""

    platform_id: str
    end_user_id: str
    rpm_limit: Optional[int] = None
    tpm_limit: Optional[int] = None
    rpd_limit: Optional[int] = None
    cleared: bool = False


# --- money ---------------------------------------------------------------------------------


@attrs.frozen
class PricesPublished:
    """A version of the price table; charges name the version they used.

    ``models`` maps a model id to its decimal-string prices in USD per million tokens
    (``input``, ``cached_input``, ``output``); ``sha256`` is over the canonical JSON of
    ``models``; ``calculator_version`` names the rounding rule charges follow.
    """

    version_id: str
    sha256: str
    calculator_version: str
    models: dict[str, dict[str, str]]


@attrs.frozen
class WalletCredited:
    """Money into (or, negative ``amount_micros``, out of) a platform wallet by hand.

    ``kind``: top_up | refund | adjustment.
    """

    platform_id: str
    transaction_id: str
    kind: str
    amount_micros: int
    description: Optional[str] = None


@attrs.frozen
class BudgetSet:
    """An end user's budget settings after a create or change (the whole state).

    ``period``: one_time | daily | monthly (UTC calendar boundaries); at each boundary the
    spend resets and, with ``auto_replenish``, the limit becomes ``replenish_micros``.
    """

    platform_id: str
    end_user_id: str
    budget_id: str
    max_micros: int
    period: str
    auto_replenish: bool = False
    replenish_micros: Optional[int] = None
    low_balance_threshold_micros: Optional[int] = None
    is_suspended: bool = False


@attrs.frozen
class BudgetToppedUp:
    """The budget limit raised by ``amount_micros`` (re-arms the low-balance alert)."""

    platform_id: str
    end_user_id: str
    transaction_id: str
    amount_micros: int
    description: Optional[str] = None


@attrs.frozen
class BudgetLowBalance:
    """The remaining budget fell to or below its threshold (once per crossing)."""

    platform_id: str
    end_user_id: str
    remaining_micros: int


@attrs.frozen
class HoldPlaced:
    """Money reserved on one account (``wallet`` of the platform or ``budget`` of the end user).

    ``capped``: the worst case exceeded what was available, so the hold is only what was
    available (at most one capped hold per account is in flight at a time).
    """

    reservation_id: str
    account: str  # wallet | budget
    platform_id: str
    end_user_id: Optional[str]
    amount_micros: int
    capped: bool = False


@attrs.frozen
class HoldReleased:
    """A hold ended: ``settled`` charges ``charged_micros`` (may exceed the hold), ``voided`` charges 0."""

    reservation_id: str
    account: str
    platform_id: str
    end_user_id: Optional[str]
    outcome: str  # settled | voided
    charged_micros: int
    description: Optional[str] = None


@attrs.frozen
class UsageCharged:
    """What one upstream call cost, and everything needed to recompute it.

    cost = ceil(input x input price + cached x cached price + output x output price) in
    micro-USD, prices from ``price_version_id`` (whose hash is ``price_sha256``), by
    ``calculator_version``. ``token_count_method``: reported | estimated.
    """

    response_id: str
    platform_id: str
    end_user_id: Optional[str]
    model: str
    provider: str
    request_type: str  # response | chat.completion
    usage: "Usage"
    token_count_method: str
    price_version_id: str
    price_sha256: str
    calculator_version: str
    cost_micros: int
    status: str  # success | interrupted | failed
    latency_ms: int
    billing_status: str  # billed | free | voided


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
class RequestKeyed:
    """The request carried an ``Idempotency-Key``: the SHA-256 of its body, to tell a retry from a reuse."""

    response_id: str
    request_sha256: str


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
    """A piece of the JSON arguments of the function_call (or mcp_call) item at ``output_index``."""

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


# --- hosted MCP tools ----------------------------------------------------------------------
# Secrets never appear here: MCP ``authorization`` and ``headers`` values stay in memory.


@attrs.frozen
class McpToolsListed:
    """The gateway asked an MCP server for its tools (the mcp_list_tools item at ``output_index``).

    ``tools``: ``{"name", "description", "input_schema", "annotations"}`` per tool the
    request allows; ``error`` says why listing failed (then ``tools`` is empty).
    """

    response_id: str
    output_index: int
    server_label: str
    tools: list[dict[str, Any]]
    duration_ms: int
    error: Optional[str] = None


@attrs.frozen
class McpCallStarted:
    """The arguments of the mcp_call item at ``output_index`` are complete and the gateway acts on
    them now: it runs the tool, or (a limit reached, arguments not a JSON object) refuses it at
    once; ``McpCallFinished`` follows either way."""

    response_id: str
    output_index: int
    server_label: str
    name: str
    arguments: str
    approval_request_id: Optional[str] = None


@attrs.frozen
class McpCallFinished:
    """The outcome of the mcp_call item at ``output_index``: ``output`` (text fed back to the
    model, capped) or ``error`` (the MCP error object: ``{"type": "mcp_protocol_error" |
    "mcp_tool_execution_error" | "http_error", ...}``). ``output_chars`` is the size of the
    tool's output before the cap; ``limit`` names the limit this call hit, if any."""

    response_id: str
    output_index: int
    duration_ms: int
    output: Optional[str] = None
    error: Optional[dict[str, Any]] = None
    output_chars: int = 0
    limit: Optional[str] = None


@attrs.frozen
class McpApprovalRequested:
    """An MCP call waits for the client's approval: the mcp_approval_request item at ``output_index``."""

    response_id: str
    output_index: int
    approval_request_id: str
    server_label: str
    name: str
    arguments: str


@attrs.frozen
class McpApprovalResponded:
    """The client answered an approval request (input ``mcp_approval_response``): the call runs
    in this response when ``approve``, never otherwise."""

    response_id: str
    approval_request_id: str
    approve: bool
    server_label: str
    name: str
    reason: Optional[str] = None


@attrs.frozen
class McpLimitReached:
    """A response reached an MCP limit: ``limit`` names it (``max_tool_calls``, ``mcp_calls_max``,
    ``call_timeout_s``, ``time_budget_s``, ``output_chars_max``, ``tools_per_server_max``),
    ``value`` is its value in its unit; ``output_index`` the item it affected, if one."""

    response_id: str
    limit: str
    value: int
    output_index: Optional[int] = None
    detail: str = ""


@attrs.frozen
class McpUsageCharged:
    """One MCP tool call counted against the platform's month (on the wallet stream).

    ``call_number`` is the platform's n-th MCP call in ``period`` (UTC calendar month,
    ``YYYY-MM``); calls up to ``free_calls`` cost nothing, later ones ``price_micros``.
    ``cost_micros`` is what the wallet is charged (an ``mcp_usage`` transaction when > 0).
    """

    platform_id: str
    end_user_id: Optional[str]
    response_id: str
    output_index: int  # of the mcp_call item in its response
    call_item_id: str
    server_label: str
    name: str
    period: str
    call_number: int
    free_calls: int
    price_micros: int
    cost_micros: int
    billing_status: str  # free | billed


# --- the gateway process -------------------------------------------------------------------


@attrs.frozen
class GatewayStarted:
    """A gateway process finished start-up and is about to serve; ``recorded_at`` says when.

    ``recovery``: whether start-up recovery ran (gateway/recovery.py; off for replicas that
    share a store). ``recovered``: the responses (and chat completions) a killed process left
    in flight that this start finished as failed with ``gateway_restarted``, in ledger order.
    ``position``: the ledger position the projections had reached when recovery looked.
    """

    instance_id: str
    recovery: bool
    recovered: list[str]
    position: int


Event = Union[
    PlatformCreated,
    ApiKeyCreated,
    ApiKeyRevoked,
    PlatformUpdated,
    EndUserCreated,
    EndUserUpdated,
    RateLimitsSet,
    PricesPublished,
    WalletCredited,
    BudgetSet,
    BudgetToppedUp,
    BudgetLowBalance,
    HoldPlaced,
    HoldReleased,
    UsageCharged,
    ResponseAccepted,
    RequestKeyed,
    ItemStarted,
    TextDelta,
    ArgumentsDelta,
    ItemFinished,
    ResponseFinished,
    ResponseDeleted,
    McpToolsListed,
    McpCallStarted,
    McpCallFinished,
    McpApprovalRequested,
    McpApprovalResponded,
    McpLimitReached,
    McpUsageCharged,
    GatewayStarted,
]

TAGS: dict[type, str] = {
    PlatformCreated: "platform.created",
    ApiKeyCreated: "api_key.created",
    ApiKeyRevoked: "api_key.revoked",
    PlatformUpdated: "platform.updated",
    EndUserCreated: "end_user.created",
    EndUserUpdated: "end_user.updated",
    RateLimitsSet: "rate_limits.set",
    PricesPublished: "prices.published",
    WalletCredited: "wallet.credited",
    BudgetSet: "budget.set",
    BudgetToppedUp: "budget.topped_up",
    BudgetLowBalance: "budget.low_balance",
    HoldPlaced: "hold.placed",
    HoldReleased: "hold.released",
    UsageCharged: "usage.charged",
    ResponseAccepted: "response.accepted",
    RequestKeyed: "response.request_keyed",
    ItemStarted: "response.item_started",
    TextDelta: "response.text_delta",
    ArgumentsDelta: "response.arguments_delta",
    ItemFinished: "response.item_finished",
    ResponseFinished: "response.finished",
    ResponseDeleted: "response.deleted",
    McpToolsListed: "mcp.tools_listed",
    McpCallStarted: "mcp.call_started",
    McpCallFinished: "mcp.call_finished",
    McpApprovalRequested: "mcp.approval_requested",
    McpApprovalResponded: "mcp.approval_responded",
    McpLimitReached: "mcp.limit_reached",
    McpUsageCharged: "mcp.usage_charged",
    GatewayStarted: "gateway.started",
}

EVENT_TYPES: dict[str, type] = {tag: cls for cls, tag in TAGS.items()}

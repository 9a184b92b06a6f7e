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
}

EVENT_TYPES: dict[str, type] = {tag: cls for cls, tag in TAGS.items()}

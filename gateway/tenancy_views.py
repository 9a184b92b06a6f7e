"""JSON of tenancy objects (platforms, keys, end users, rate limits) and page-numbered lists.

Times are ISO-8601 UTC strings; money is a JSON number of USD (integer micro-USD inside).
A key's hash never leaves the projection; its raw form appears only in the create answer.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Optional, Sequence

from gateway.paging import LIST_LIMIT_MAX, int_arg
from projections.tenancy import EndUser, KeyInfo, Platform, RateLimits

PAGE_MAX = 1_000_000  # page numbers beyond this are surely a client bug
LIST_LIMIT_DEFAULT = 20  # items per page
MICROS_PER_USD = 1_000_000


def iso(seconds: Optional[int]) -> Optional[str]:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def usd(micros: Optional[int]) -> Optional[float]:
    """Micro-USD as a JSON number; exact for every amount below 2**53 micro-USD."""
    return None if micros is None else micros / MICROS_PER_USD


def rate_limits_object(limits: RateLimits, resolution: Optional[str] = None) -> dict[str, Any]:
    body: dict[str, Any] = {"rpm_limit": limits.rpm_limit, "tpm_limit": limits.tpm_limit,
                            "rpd_limit": limits.rpd_limit}
    if resolution is not None:
        body["resolution"] = resolution
    return body


def platform_object(platform: Platform) -> dict[str, Any]:
    return {
        "id": platform.platform_id,
        "name": platform.name,
        "settings": {
            "default_budget_usd": usd(platform.default_budget_micros),
            "rate_limits": rate_limits_object(platform.rate_limits),
        },
        "created_at": iso(platform.created_at),
        "updated_at": iso(platform.updated_at),
    }


def key_object(key: KeyInfo) -> dict[str, Any]:
    """``is_active`` is false once revoked; expiry is shown apart, in ``expires_at``."""
    return {
        "id": key.key_id,
        "platform_id": key.platform_id,
        "end_user_id": key.end_user_id,
        "key_prefix": key.prefix,
        "is_active": not key.revoked,
        "expires_at": iso(key.expires_at),
        "created_at": iso(key.created_at),
    }


def end_user_object(user: EndUser) -> dict[str, Any]:
    return {
        "id": user.end_user_id,
        "platform_id": user.platform_id,
        "external_id": user.external_id,
        "display_name": user.display_name,
        "metadata": user.metadata,
        "is_active": user.is_active,
        "created_at": iso(user.created_at),
        "updated_at": iso(user.updated_at),
    }


def numbered_page(items: Sequence[Any]) -> dict[str, Any]:
    """One page of ``items`` (oldest first) per the request's ``page`` and ``limit``: ``{data, total, page, limit}``."""
    page = int_arg("page", 1, 1, PAGE_MAX)
    limit = int_arg("limit", LIST_LIMIT_DEFAULT, 1, LIST_LIMIT_MAX)
    start = (page - 1) * limit
    return {"data": list(items[start:start + limit]), "total": len(items), "page": page, "limit": limit}

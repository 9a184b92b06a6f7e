"""Validation of management request bodies (platforms, keys, end users, rate limits).

Each body is validated completely before anything is recorded. Every problem is a 400 in
OpenAI's error shape with ``param`` naming the field (dotted for nested fields, such as
``settings.rate_limits.rpm_limit``); a field this API does not know is ``unknown_parameter``.
In a PATCH, a field left out keeps its value (``MISSING``) and ``null`` clears it where the
field may be empty.
"""

from __future__ import annotations

import time
from datetime import datetime, timezone
from typing import Any, Optional

import attrs
import orjson
from quart import request

from gateway.errors import invalid
from gateway.http import json_body
from gateway.money_json import parse_usd

NAME_CHARS_MAX = 100  # platform and key names
EXTERNAL_ID_CHARS_MAX = 255
DISPLAY_NAME_CHARS_MAX = 100
METADATA_BYTES_MAX = 16 * 1024  # an end user's metadata object, encoded as JSON
RATE_LIMIT_MAX = 1_000_000_000  # requests or tokens per window
RATE_LIMIT_FIELDS = ("rpm_limit", "tpm_limit", "rpd_limit")


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()  # a PATCH field that was not sent


@attrs.frozen
class PlatformPatch:
    name: Any = MISSING
    default_budget_micros: Any = MISSING  # Optional[int]
    rate_limits: dict[str, Optional[int]] = attrs.field(factory=dict)  # only the dimensions sent


@attrs.frozen
class EndUserCreate:
    external_id: str
    display_name: Optional[str] = None
    metadata: dict[str, Any] = attrs.field(factory=dict)


@attrs.frozen
class EndUserPatch:
    display_name: Any = MISSING
    metadata: Any = MISSING
    is_active: Any = MISSING


async def object_body() -> dict[str, Any]:
    """The JSON object body; an empty body is ``{}``."""
    if not (await request.get_data()).strip():
        return {}
    body = await json_body()
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.", None, "invalid_type")
    return body


def check_fields(body: dict[str, Any], allowed: set[str], prefix: str = "") -> None:
    for name in body:
        if name not in allowed:
            raise invalid(f"Unknown parameter: '{prefix}{name}'.", prefix + name, "unknown_parameter")


def text(value: Any, param: str, chars_max: int, nullable: bool = False) -> Optional[str]:
    """A string of 1..chars_max characters (or None when ``nullable``)."""
    if value is None and nullable:
        return None
    if not isinstance(value, str):
        raise invalid(f"Invalid type for '{param}': expected a string.", param, "invalid_type")
    if not 1 <= len(value) <= chars_max:
        raise invalid(f"Invalid '{param}': expected 1 to {chars_max} characters.", param, "invalid_value")
    return value


def boolean(value: Any, param: str) -> bool:
    if not isinstance(value, bool):
        raise invalid(f"Invalid type for '{param}': expected a boolean.", param, "invalid_type")
    return value


def metadata(value: Any, param: str = "metadata") -> dict[str, Any]:
    """A JSON object of at most METADATA_BYTES_MAX encoded bytes."""
    if not isinstance(value, dict):
        raise invalid(f"Invalid type for '{param}': expected an object.", param, "invalid_type")
    if len(orjson.dumps(value)) > METADATA_BYTES_MAX:
        raise invalid(f"Invalid '{param}': at most {METADATA_BYTES_MAX} bytes of JSON.", param, "invalid_value")
    return value


def rate_limit(value: Any, param: str) -> Optional[int]:
    """A positive integer, or None (no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise invalid(f"Invalid type for '{param}': expected a positive integer or null.", param, "invalid_type")
    if not 1 <= value <= RATE_LIMIT_MAX:
        raise invalid(f"Invalid '{param}': expected a value between 1 and {RATE_LIMIT_MAX}.", param, "invalid_value")
    return value


def usd_micros(value: Any, param: str) -> Optional[int]:
    """A JSON number of USD > 0 as exact integer micro-USD (None stays None): gateway.money_json's rule."""
    return None if value is None else parse_usd(value, param)


def expires_at(value: Any, param: str = "expires_at") -> Optional[int]:
    """An ISO-8601 time in the future (no offset = UTC) as unix seconds; None = never."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise invalid(f"Invalid type for '{param}': expected an ISO-8601 time string.", param, "invalid_type")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise invalid(f"Invalid '{param}': expected an ISO-8601 time such as 2030-01-31T00:00:00Z.",
                      param, "invalid_value") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    seconds = int(moment.timestamp())
    if seconds <= time.time():
        raise invalid(f"Invalid '{param}': the time must be in the future.", param, "invalid_value")
    return seconds


def parse_platform_patch(body: dict[str, Any]) -> PlatformPatch:
    check_fields(body, {"name", "settings"})
    name = text(body["name"], "name", NAME_CHARS_MAX) if "name" in body else MISSING
    settings = body.get("settings", {})
    if not isinstance(settings, dict):
        raise invalid("Invalid type for 'settings': expected an object.", "settings", "invalid_type")
    check_fields(settings, {"default_budget_usd", "rate_limits"}, "settings.")
    budget = MISSING
    if "default_budget_usd" in settings:
        budget = usd_micros(settings["default_budget_usd"], "settings.default_budget_usd")
    limits = settings.get("rate_limits", {})
    if not isinstance(limits, dict):
        raise invalid("Invalid type for 'settings.rate_limits': expected an object.", "settings.rate_limits",
                      "invalid_type")
    check_fields(limits, set(RATE_LIMIT_FIELDS), "settings.rate_limits.")
    parsed = {k: rate_limit(v, f"settings.rate_limits.{k}") for k, v in limits.items()}
    return PlatformPatch(name, budget, parsed)


def parse_rate_limits(body: dict[str, Any]) -> dict[str, Optional[int]]:
    """A PUT of per-user overrides: every dimension, a missing one = no limit."""
    check_fields(body, set(RATE_LIMIT_FIELDS))
    return {k: rate_limit(body.get(k), k) for k in RATE_LIMIT_FIELDS}


def parse_key_create(body: dict[str, Any]) -> Optional[int]:
    """A key create body; returns its expiry. ``name`` is checked but not kept (keys carry none)."""
    check_fields(body, {"name", "expires_at"})
    if "name" in body:
        text(body["name"], "name", NAME_CHARS_MAX, nullable=True)
    return expires_at(body.get("expires_at"))


def parse_end_user_create(body: dict[str, Any]) -> EndUserCreate:
    check_fields(body, {"external_id", "display_name", "metadata"})
    if "external_id" not in body:
        raise invalid("Missing required parameter: 'external_id'.", "external_id", "missing_required_parameter")
    return EndUserCreate(
        text(body["external_id"], "external_id", EXTERNAL_ID_CHARS_MAX),
        text(body.get("display_name"), "display_name", DISPLAY_NAME_CHARS_MAX, nullable=True),
        metadata(body["metadata"]) if body.get("metadata") is not None else {},
    )


def parse_end_user_patch(body: dict[str, Any]) -> EndUserPatch:
    check_fields(body, {"display_name", "metadata", "is_active"})
    patch = EndUserPatch()
    if "display_name" in body:
        patch = attrs.evolve(patch, display_name=text(body["display_name"], "display_name",
                                                      DISPLAY_NAME_CHARS_MAX, nullable=True))
    if "metadata" in body:
        value = body["metadata"]
        patch = attrs.evolve(patch, metadata={} if value is None else metadata(value))
    if "is_active" in body:
        patch = attrs.evolve(patch, is_active=boolean(body["is_active"], "is_active"))
    return patch

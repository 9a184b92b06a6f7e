"""OpenAI's cursor paging (``limit``, ``order``, ``after`` -> ``first_id``, ``last_id``, ``has_more``)."""

from __future__ import annotations

from typing import Any, Callable

from quart import request

from gateway.errors import invalid

LIST_LIMIT_MAX = 100  # items per page


def int_arg(name: str, default: int, low: int, high: int) -> int:
    """An integer query argument within [low, high], or a 400 naming it."""
    raw = request.args.get(name)
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise invalid(f"Invalid '{name}': expected an integer.", name, "invalid_type") from None
    if not low <= value <= high:
        raise invalid(f"Invalid '{name}': expected a value between {low} and {high}.", name, "invalid_value")
    return value


def cursor_page(items: list[Any], item_id: Callable[[Any], str], default_order: str = "desc") -> dict[str, Any]:
    """One page of ``items`` (oldest first) per the request's ``limit``, ``order`` and ``after``."""
    order = request.args.get("order", default_order)
    if order not in ("asc", "desc"):
        raise invalid("Invalid 'order': expected 'asc' or 'desc'.", "order", "invalid_value")
    limit = int_arg("limit", 20, 1, LIST_LIMIT_MAX)
    ordered = list(reversed(items)) if order == "desc" else list(items)
    after = request.args.get("after")
    if after:
        ids = [item_id(item) for item in ordered]
        if after not in ids:
            raise invalid(f"Invalid 'after': no item with id '{after}'.", "after", "invalid_value")
        ordered = ordered[ids.index(after) + 1 :]
    page = ordered[:limit]
    return {
        "object": "list",
        "data": page,
        "first_id": item_id(page[0]) if page else None,
        "last_id": item_id(page[-1]) if page else None,
        "has_more": len(ordered) > limit,
    }

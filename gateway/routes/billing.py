"""Wallet, budgets, logs and usage routes (CONTRACT management API, platform keys; /v1/me/budget).

Writes are ledger appends whose event ids derive from the ``Idempotency-Key`` header when
one is sent, so a retried top-up or budget create is recorded once and answers the original
result; the same key with another body is 409 ``idempotency_key_reused``. A budget PATCH
that changes nothing (``{}`` included) records nothing. Every bad input is a 400 that
records nothing. Every answer waits until the projections have applied the write.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid
from typing import Any, Optional

from quart import Response, request
from quart_trio import QuartTrio

from gateway.errors import ApiError, invalid, not_found
from gateway.http import end_user_key, json_body, json_response, platform_key
from gateway.idempotency import header_key, reused, scoped_id
from gateway.money_json import TXN_DESCRIPTION_CHARS_MAX, iso, parse_usd, txn_json, usd
from gateway.paging import int_arg
from gateway.services import Services
from ledger.events import BudgetSet, BudgetToppedUp, WalletCredited
from ledger.store import NewEvent
from projections.money import PERIODS, Budget, budget_stream, wallet_stream

RECENT_TRANSACTIONS = 5  # shown inline with a wallet
BUDGET_FIELDS = {"max_usd", "period", "auto_replenish", "replenish_amount", "low_balance_threshold", "is_suspended"}
GROUP_BY = ("end_user", "model", "day")


def page_of(items: list[Any]) -> dict[str, Any]:
    """``{"data", "total", "page", "limit"}`` for the request's ``page`` and ``limit``."""
    page, limit = int_arg("page", 1, 1, 1_000_000), int_arg("limit", 20, 1, 100)
    return {"data": items[(page - 1) * limit : page * limit], "total": len(items), "page": page, "limit": limit}


def budget_json(budget: Budget, now_s: int) -> dict[str, Any]:
    max_micros, used, start = budget.view_at(now_s)
    return {
        "id": budget.budget_id, "platform_id": budget.platform_id, "end_user_id": budget.end_user_id,
        "max_usd": usd(max_micros), "used_usd": usd(used), "remaining_usd": usd(max_micros - used),
        "reserved_usd": usd(budget.reserved_micros), "period": budget.period, "period_start": iso(start),
        "auto_replenish": budget.auto_replenish, "replenish_amount": usd(budget.replenish_micros),
        "low_balance_threshold": usd(budget.low_balance_threshold_micros), "is_active": True,
        "is_suspended": budget.is_suspended, "created_at": iso(budget.created_at), "updated_at": iso(budget.updated_at),
    }


def _only(body: Any, allowed: set[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise invalid("The request body must be a JSON object.")
    for name in body:
        if name not in allowed:
            raise invalid(f"Unknown parameter: '{name}'.", name, "unknown_parameter")
    return body


def _description(body: dict[str, Any]) -> Optional[str]:
    """A top-up's optional ``description``: a string of at most TXN_DESCRIPTION_CHARS_MAX characters."""
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        raise invalid("Invalid type for 'description': expected a string.", "description", "invalid_type")
    if description is not None and len(description) > TXN_DESCRIPTION_CHARS_MAX:
        raise invalid(f"Invalid 'description': at most {TXN_DESCRIPTION_CHARS_MAX} characters.", "description",
                      "invalid_value")
    return description


def _event_id(kind: str, scope: str) -> str:
    """A fresh id, or one derived from the Idempotency-Key so a retry appends nothing new."""
    key = header_key()
    return f"{kind}_{uuid.uuid4().hex}" if key is None else scoped_id(f"{kind}_", f"{scope}:{kind}", key)


async def _record(services: Services, new: NewEvent) -> None:
    """Append; a retried Idempotency-Key must carry the same body (409 otherwise)."""
    [recorded] = await services.store.append([new])
    if recorded.event != new.event:
        raise reused()
    await services.runner.wait_for(recorded.position)


def _budget_settings(body: dict, current: Optional[Budget]) -> dict[str, Any]:
    settings: dict[str, Any] = {
        "max_micros": current.max_micros if current else None, "period": current.period if current else "one_time",
        "auto_replenish": current.auto_replenish if current else False,
        "replenish_micros": current.replenish_micros if current else None,
        "low_balance_threshold_micros": current.low_balance_threshold_micros if current else None,
        "is_suspended": current.is_suspended if current else False,
    }
    if "max_usd" in body:
        settings["max_micros"] = parse_usd(body["max_usd"], "max_usd")
    elif current is None:
        raise invalid("Missing required parameter: 'max_usd'.", "max_usd", "missing_required_parameter")
    if "period" in body:
        if body["period"] not in PERIODS:
            raise invalid("Invalid 'period': expected one_time, daily or monthly.", "period", "invalid_value")
        settings["period"] = body["period"]
    for name in ("auto_replenish", "is_suspended"):
        if name in body:
            if not isinstance(body[name], bool):
                raise invalid(f"Invalid '{name}': expected a boolean.", name, "invalid_type")
            settings[name] = body[name]
    if "replenish_amount" in body:
        value = body["replenish_amount"]
        settings["replenish_micros"] = None if value is None else parse_usd(value, "replenish_amount")
    if "low_balance_threshold" in body:
        value = body["low_balance_threshold"]
        settings["low_balance_threshold_micros"] = (None if value is None else
                                                    parse_usd(value, "low_balance_threshold", allow_zero=True))
    if settings["auto_replenish"] and settings["replenish_micros"] is None:
        raise invalid("'replenish_amount' is required when 'auto_replenish' is true.", "replenish_amount",
                      "missing_required_parameter")
    return settings


def register(app: QuartTrio, services: Services) -> None:
    def end_user_of(pid: str, euid: str):
        user = services.tenancy.end_user(pid, euid)
        if user is None:
            raise not_found(f"End user '{euid}' not found.")
        return user

    def budget_of(euid: str) -> Budget:
        budget = services.money.budget(euid)
        if budget is None:
            raise not_found("This end user has no budget.")
        return budget

    @app.get("/v1/platforms/<pid>/wallet")
    async def get_wallet(pid: str) -> Response:
        platform_key(services, pid)
        wallet = services.money.wallet_view(pid)
        return json_response({
            "id": f"wallet_{pid}", "platform_id": pid, "balance": usd(wallet.balance_micros),
            "reserved": usd(wallet.reserved_micros), "available": usd(wallet.available_micros), "currency": "usd",
            "is_active": True, "created_at": iso(services.tenancy.platforms[pid].created_at),
            "updated_at": iso(wallet.updated_at or None),
            "recent_transactions": [txn_json(t) for t in reversed(wallet.transactions[-RECENT_TRANSACTIONS:])],
        })

    @app.post("/v1/platforms/<pid>/wallet/topup")
    async def top_up_wallet(pid: str) -> Response:
        platform_key(services, pid)
        body = _only(await json_body(), {"amount", "description"})
        amount = parse_usd(body.get("amount"), "amount")
        description = _description(body)
        txn_id = _event_id("txn", pid)
        await _record(services, NewEvent(wallet_stream(pid), WalletCredited(pid, txn_id, "top_up", amount,
                                                                            description), txn_id))
        wallet = services.money.wallet_view(pid)
        txn = next(t for t in wallet.transactions if t.id == txn_id)
        return json_response({"transaction": txn_json(txn), "balance": usd(wallet.balance_micros)}, 201)

    @app.get("/v1/platforms/<pid>/wallet/transactions")
    async def wallet_transactions(pid: str) -> Response:
        platform_key(services, pid)
        txns = services.money.wallet_view(pid).transactions
        return json_response(page_of([txn_json(t) for t in reversed(txns)]))

    @app.post("/v1/platforms/<pid>/end-users/<euid>/budget")
    async def create_budget(pid: str, euid: str) -> Response:
        platform_key(services, pid)
        end_user_of(pid, euid)
        body = _only(await json_body(), BUDGET_FIELDS)
        budget_id = _event_id("bud", euid)
        existing = services.money.budget(euid)
        if existing is not None and existing.budget_id != budget_id:  # equal ids: a retry of this very create
            raise ApiError(409, "This end user already has a budget; change it with PATCH.", code="budget_exists")
        settings = _budget_settings(body, None)
        await _record(services, NewEvent(budget_stream(euid), BudgetSet(pid, euid, budget_id, **settings), budget_id))
        return json_response(budget_json(budget_of(euid), int(time.time())), 201)

    @app.get("/v1/platforms/<pid>/end-users/<euid>/budget")
    async def get_budget(pid: str, euid: str) -> Response:
        platform_key(services, pid)
        end_user_of(pid, euid)
        return json_response(budget_json(budget_of(euid), int(time.time())))

    @app.patch("/v1/platforms/<pid>/end-users/<euid>/budget")
    async def patch_budget(pid: str, euid: str) -> Response:
        platform_key(services, pid)
        end_user_of(pid, euid)
        body = _only(await json_body(), BUDGET_FIELDS)
        budget = budget_of(euid)
        settings = _budget_settings(body, budget)
        if settings != _budget_settings({}, budget):  # a PATCH that changes nothing records nothing
            event = BudgetSet(pid, euid, budget.budget_id, **settings)
            await _record(services, NewEvent(budget_stream(euid), event, _event_id("budset", euid)))
        return json_response(budget_json(budget_of(euid), int(time.time())))

    @app.post("/v1/platforms/<pid>/end-users/<euid>/budget/topup")
    async def top_up_budget(pid: str, euid: str) -> Response:
        platform_key(services, pid)
        end_user_of(pid, euid)
        body = _only(await json_body(), {"amount", "description"})
        amount = parse_usd(body.get("amount"), "amount")
        description = _description(body)
        budget_of(euid)
        txn_id = _event_id("btxn", euid)
        event = BudgetToppedUp(pid, euid, txn_id, amount, description)
        await _record(services, NewEvent(budget_stream(euid), event, txn_id))
        return json_response(budget_json(budget_of(euid), int(time.time())), 201)

    @app.get("/v1/platforms/<pid>/end-users/<euid>/budget/transactions")
    async def budget_transactions(pid: str, euid: str) -> Response:
        platform_key(services, pid)
        end_user_of(pid, euid)
        return json_response(page_of([txn_json(t) for t in reversed(budget_of(euid).transactions)]))

    @app.get("/v1/me/budget")
    async def my_budget() -> Response:
        key = end_user_key(services)
        return json_response(budget_json(budget_of(key.end_user_id), int(time.time())))

    @app.get("/v1/platforms/<pid>/logs")
    async def logs(pid: str) -> Response:
        platform_key(services, pid)
        rows = services.usage.rows.get(pid, [])
        model, end_user = request.args.get("model"), request.args.get("end_user_id")
        rows = [r for r in rows if (not model or r.model_id == model) and (not end_user or r.end_user_id == end_user)]
        return json_response(page_of([r.as_json(iso) for r in reversed(rows)]))

    @app.get("/v1/platforms/<pid>/usage")
    async def usage(pid: str) -> Response:
        platform_key(services, pid)
        group_by = [g for g in request.args.get("group_by", "model").split(",") if g]
        for g in group_by:
            if g not in GROUP_BY:
                raise invalid(f"Invalid 'group_by': {g!r} is not one of end_user, model, day.", "group_by",
                              "invalid_value")
        bounds = [_date_arg(name) for name in ("from", "to")]
        groups = services.usage.totals(pid, group_by, *bounds)
        for group in groups:
            group["cost_usd"] = usd(group.pop("cost_micros"))
        return json_response({"object": "list", "group_by": group_by, "data": groups})


def _date_arg(name: str) -> Optional[int]:
    """``from``/``to`` as unix seconds: an ISO date (UTC midnight), an ISO time, or unix seconds."""
    raw = request.args.get(name)
    if not raw:
        return None
    try:
        if raw.isdigit():
            return int(raw)
        moment = dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise invalid(f"Invalid '{name}': expected an ISO-8601 date or time.", name, "invalid_value") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp())


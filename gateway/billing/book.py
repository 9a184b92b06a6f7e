"""Pre-flight checks and reserve-then-settle decisions (DESIGN invariants 6 and 8).

Decisions read the money projection and this process's own appends still on their way to
the ledger, so they are made synchronously, without an ``await`` between checking and
queueing the append:

* ``pending`` holds and events per account stream are what this process has queued but
  not yet seen committed; available = projection's available - pending holds.
* Every hold is appended with ``expected_version`` = the account stream's committed
  version + this process's pending appends to it. The writer commits a process's appends
  in queue order, so these hold in-process; another process's append in between makes
  the versions disagree, the hold is rejected (nothing recorded) and the caller retries
  on fresh state. Two requests, or two gateway processes, can never spend the same money.

Pre-flight order (CONTRACT): rate limit (429 + Retry-After), budget suspended, budget
exhausted (remaining must be > 0), wallet insufficient (a zero-cost request passes). A
hold is the request's true worst case (its output limit is what the provider is told, see
gateway/billing/estimate.py) or it is marked ``capped``: a worst case above what is
available is still admitted while available > 0, held at what is available, and a worst
case above ``hold_usd_max`` (``Reservation.hold_micros_max``) is held at that. At most one
capped hold per account may be open at a time (others get the usual 402 and may retry), so
the total overshoot of an account is bounded by one request's worst case. Settlement
records the real cost, never clamped.

A response whose hosted MCP tools make it call the model several times reserves and
settles each model call on its own (``turn`` 2, 3, ... after the first): each has its own
hold, its own ``usage.charged`` (one log row per upstream call) and its own release, so
the holds always cover the call in flight. Each MCP tool call is counted per platform and
UTC calendar month on the wallet stream (``mcp_charge``): free up to the configured tier,
then a fixed price, as an ``mcp_usage`` wallet transaction.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from decimal import Decimal
from typing import Any, Callable, Optional, Sequence

import attrs

from gateway.errors import ApiError
from ledger.events import (
    BudgetLowBalance,
    HoldPlaced,
    HoldReleased,
    McpUsageCharged,
    ResponseAccepted,
    Usage,
    UsageCharged,
)
from ledger.store import EventStore, NewEvent, Recorded
from projections.money import MoneyProjection, budget_stream, wallet_stream
from projections.pricing import CALCULATOR_VERSION, PricesProjection, compute_cost_micros
from projections.rates import RatesProjection
from projections.tenancy import TenancyProjection


def payment_required(code: str, message: str) -> ApiError:
    return ApiError(402, message, code=code, type_="insufficient_quota")


def _turn(turn: int) -> str:
    """The event-id suffix of a model call after a response's first (none for the first)."""
    return "" if turn == 1 else f".{turn}"


def usd_to_micros(usd: str) -> int:
    return math.ceil(Decimal(usd) * 1_000_000)


def month_of(at_s: float) -> str:
    """The UTC calendar month (``YYYY-MM``) of a unix time."""
    return time.strftime("%Y-%m", time.gmtime(at_s))


@attrs.define
class Reservation:
    """What a request reserved, and what settling it needs."""

    reservation_id: str
    platform_id: str
    end_user_id: Optional[str]
    model: str
    provider: str
    request_type: str
    prices: Optional[dict[str, str]]
    price_version_id: str
    price_sha256: str
    holds: dict[str, int] = attrs.Factory(dict)  # account (wallet|budget) -> micro-USD held
    started_at: float = 0.0
    hold_micros_max: Optional[int] = None  # config's hold_usd_max: a larger worst case is held capped at this


class Book:
    """Money decisions of one gateway process."""

    def __init__(self, store: EventStore, money: MoneyProjection, tenancy: TenancyProjection,
                 prices: PricesProjection, rates: RatesProjection, clock: Callable[[], float] = time.time) -> None:
        self.money = money
        self.tenancy = tenancy
        self.prices = prices
        self.rates = rates
        self.clock = clock
        self._pending_streams: dict[str, str] = {}  # event id -> account stream, until committed
        self._pending_holds: dict[str, tuple[str, int, bool]] = {}  # event id -> (stream, micros, capped)
        self._pending_requests: dict[str, str] = {}  # response id -> end user, until accepted is recorded
        self._pending_mcp: dict[str, tuple[str, str]] = {}  # event id -> (platform, month) of an MCP charge
        self._mcp_calls = Counter[tuple[str, str]]()
        self._events = Counter[str]()
        self._held = Counter[str]()
        self._capped = Counter[str]()
        self._low_alerts: set[str] = set()
        store.subscribe(self._on_commit)

    # --- bookkeeping of this process's in-flight appends ------------------------------------

    def _on_commit(self, records: Sequence[Recorded]) -> None:
        for recorded in records:
            self._forget(recorded.event_id)
            if isinstance(recorded.event, ResponseAccepted):
                self._pending_requests.pop(recorded.event.response_id, None)
            elif isinstance(recorded.event, BudgetLowBalance):
                self._low_alerts.discard(recorded.event.end_user_id)

    def _forget(self, event_id: str) -> None:
        stream = self._pending_streams.pop(event_id, None)
        if stream is not None:
            self._events[stream] -= 1
        hold = self._pending_holds.pop(event_id, None)
        if hold is not None:
            self._held[hold[0]] -= hold[1]
            self._capped[hold[0]] -= hold[2]
        month = self._pending_mcp.pop(event_id, None)
        if month is not None:
            self._mcp_calls[month] -= 1

    def abandon(self, events: Sequence[NewEvent], response_id: Optional[str] = None) -> None:
        """Forget events whose append failed (nothing of them was recorded)."""
        for new in events:
            self._forget(new.event_id)
            if isinstance(new.event, BudgetLowBalance):
                self._low_alerts.discard(new.event.end_user_id)
        if response_id is not None:
            self._pending_requests.pop(response_id, None)

    def _account_event(self, stream: str, event: Any, event_id: str, check_version: bool) -> NewEvent:
        expected = self.money.stream_version(stream) + self._events[stream] if check_version else None
        self._pending_streams[event_id] = stream
        self._events[stream] += 1
        return NewEvent(stream, event, event_id, expected)

    # --- pre-flight and reservation ----------------------------------------------------------

    def reserve(self, reservation: Reservation, worst_case_micros: int, turn: int = 1) -> list[NewEvent]:
        """Run the pre-flight checks; return the hold events to append with ``response.accepted``
        (turn 1), or on their own before a later model call of the response (no rate limit then).

        Raises ApiError 429/402. Synchronous on purpose (see the module docstring).
        """
        now = self.clock()
        pid, euid, rid = reservation.platform_id, reservation.end_user_id, reservation.reservation_id
        reservation.holds.clear()
        if euid and turn == 1:
            limits, _ = self.tenancy.rate_limits(pid, euid)
            pending = sum(1 for user in self._pending_requests.values() if user == euid)
            wait_s = self.rates.exceeded(euid, limits, now, pending)
            if wait_s is not None:
                raise ApiError(429, f"Rate limit reached for this end user; retry in {wait_s} s.",
                               code="rate_limit_exceeded", type_="rate_limit_error",
                               headers={"Retry-After": str(wait_s)})
        budget = self.money.budget(euid)
        plans: list[tuple[str, str, int, bool]] = []  # (account, stream, amount, capped)
        if budget is not None:
            stream = budget_stream(budget.end_user_id)
            if budget.is_suspended:
                raise payment_required("budget_suspended", "The end user's budget is suspended.")
            available = budget.available_at(int(now)) - self._held[stream]
            if available <= 0:
                raise payment_required("budget_exhausted", "The end user's budget is exhausted.")
            plans.append(self._plan("budget", stream, worst_case_micros, available, budget.capped_open,
                                    "budget_exhausted", reservation.hold_micros_max))
        wallet = self.money.wallet_view(pid)
        stream = wallet_stream(pid)
        available = wallet.available_micros - self._held[stream]
        if worst_case_micros > 0 and available <= 0:
            raise payment_required("wallet_insufficient", "The platform wallet has insufficient funds.")
        plans.append(self._plan("wallet", stream, worst_case_micros, available, wallet.capped_open,
                                "wallet_insufficient", reservation.hold_micros_max))
        events = []
        for account, stream, amount, capped in plans:
            if amount <= 0:
                continue
            hold = HoldPlaced(rid, account, pid, euid, amount, capped)
            new = self._account_event(stream, hold, f"{rid}.hold.{account}{_turn(turn)}", check_version=True)
            self._pending_holds[new.event_id] = (stream, amount, capped)
            self._held[stream] += amount
            self._capped[stream] += capped
            reservation.holds[account] = amount
            events.append(new)
        if euid and turn == 1:
            self._pending_requests[rid] = euid
        reservation.started_at = now
        return events

    def _plan(self, account: str, stream: str, worst: int, available: int, capped_open: int,
              code: str, hold_max: Optional[int]) -> tuple[str, str, int, bool]:
        """The hold on one account: the worst case, or less - what is available, or ``hold_max`` -
        marked capped (one at a time per account)."""
        limit = available if hold_max is None else min(available, hold_max)
        if worst <= limit:
            return account, stream, worst, False
        if capped_open + self._capped[stream] > 0:
            why = "funds" if worst > available else f"hold limit ({hold_max:,} micro-USD)"
            raise payment_required(code, f"This request's worst case exceeds the {account}'s {why} while another "
                                         "under-reserved request is in flight on it; retry shortly.")
        return account, stream, limit, True

    # --- settlement ---------------------------------------------------------------------------

    def settle(self, reservation: Reservation, response_stream: str, usage: Usage, estimated: bool, status: str,
               charge: bool = True, turn: int = 1) -> list[NewEvent]:
        """The events that charge ``usage`` of model call ``turn`` (or void, ``charge=False``) and release
        its holds."""
        cost = compute_cost_micros(usage, reservation.prices) if charge else 0
        rid, pid, euid = reservation.reservation_id, reservation.platform_id, reservation.end_user_id
        billing_status = "voided" if not charge else ("billed" if cost else "free")
        events = [NewEvent(response_stream, UsageCharged(
            response_id=rid, platform_id=pid, end_user_id=euid, model=reservation.model,
            provider=reservation.provider, request_type=reservation.request_type, usage=usage,
            token_count_method="estimated" if estimated else "reported",
            price_version_id=reservation.price_version_id, price_sha256=reservation.price_sha256,
            calculator_version=CALCULATOR_VERSION, cost_micros=cost, status=status,
            latency_ms=int((self.clock() - reservation.started_at) * 1000), billing_status=billing_status,
        ), f"{rid}.charge{_turn(turn)}")]
        tokens = usage.input_tokens + usage.output_tokens
        description = f"Inference: {tokens} tokens ({reservation.model})"
        budget = self.money.budget(euid)
        accounts = {"wallet": wallet_stream(pid)}
        if budget is not None:
            accounts["budget"] = budget_stream(budget.end_user_id)
        for account, stream in accounts.items():
            if account not in reservation.holds and not cost:
                continue
            outcome = "settled" if charge else "voided"
            release = HoldReleased(rid, account, pid, euid, outcome, cost, description)
            events.append(self._account_event(stream, release, f"{rid}.release.{account}{_turn(turn)}",
                                              check_version=False))
        if budget is not None and cost and budget.low_balance_threshold_micros is not None:
            remaining = budget.available_at(int(self.clock())) + budget.reserved_micros - cost
            if remaining <= budget.low_balance_threshold_micros and budget.low_armed \
                    and budget.end_user_id not in self._low_alerts:
                self._low_alerts.add(budget.end_user_id)
                alert = BudgetLowBalance(pid, budget.end_user_id, remaining)
                events.append(self._account_event(budget_stream(budget.end_user_id), alert,
                                                  f"{rid}.low_balance{_turn(turn)}", check_version=False))
        return events

    def void(self, reservation: Reservation, turn: int) -> list[NewEvent]:
        """Release the holds of model call ``turn``, which never ran (no charge, no log row)."""
        rid, pid, euid = reservation.reservation_id, reservation.platform_id, reservation.end_user_id
        streams = {"wallet": wallet_stream(pid), "budget": budget_stream(euid or "")}
        return [self._account_event(streams[account], HoldReleased(rid, account, pid, euid, "voided", 0,
                                                                   "Model call not made"),
                                    f"{rid}.release.{account}{_turn(turn)}", check_version=False)
                for account in reservation.holds]

    # --- hosted MCP tool calls ---------------------------------------------------------------

    def mcp_charge(self, reservation: Reservation, output_index: int, call_item_id: str, server_label: str,
                   name: str, free_calls: int, price_usd: str) -> NewEvent:
        """The ``mcp.usage_charged`` event of one MCP call about to run (append with an expected
        wallet version: two appends can never take the same place in the month's count).

        Raises ApiError 402 when the call is not free and the wallet cannot pay for it.
        """
        pid = reservation.platform_id
        month = month_of(self.clock())
        number = self.money.wallet_view(pid).mcp_calls.get(month, 0) + self._mcp_calls[(pid, month)] + 1
        price = usd_to_micros(price_usd)
        cost = 0 if number <= free_calls else price
        stream = wallet_stream(pid)
        if cost and self.money.wallet_view(pid).available_micros - self._held[stream] < cost:
            raise payment_required("wallet_insufficient", "The platform wallet has insufficient funds for this "
                                                          "MCP tool call.")
        event = McpUsageCharged(pid, reservation.end_user_id, reservation.reservation_id, output_index, call_item_id,
                                server_label, name, month, number, free_calls, price, cost,
                                "billed" if cost else "free")
        new = self._account_event(stream, event, f"{reservation.reservation_id}.mcp.{call_item_id}",
                                  check_version=True)
        self._pending_mcp[new.event_id] = (pid, month)
        self._mcp_calls[(pid, month)] += 1
        return new

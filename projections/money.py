"""Platform wallets and end-user budgets, folded from money events (integer micro-USD).

Wallet: balance = credits - settled charges; ``reserved`` = open holds; available =
balance - reserved. Budget: remaining = max - used; available = remaining - reserved.
Every change is also a transaction row with the balance after it, so a statement always
adds up. Budget periods (daily / monthly, UTC calendar) roll over when an event of that
budget is recorded in a later period, using the event's recorded time, so the fold stays
deterministic; ``Budget.view_at(now)`` shows the rollover a read at ``now`` would see
without recording anything. Hosted MCP tool calls are counted per wallet and month
(``mcp.usage_charged``); those past the free tier are ``mcp_usage`` transactions.
"""

from __future__ import annotations

import datetime as dt
import functools
from typing import Any, Optional

import attrs

from ledger.events import (
    BudgetLowBalance,
    BudgetSet,
    BudgetToppedUp,
    HoldPlaced,
    HoldReleased,
    McpUsageCharged,
    WalletCredited,
)
from ledger.store import Recorded
from projections import digest

PERIODS = ("one_time", "daily", "monthly")


def wallet_stream(platform_id: str) -> str:
    return f"wallet-{platform_id}"


def budget_stream(end_user_id: str) -> str:
    return f"budget-{end_user_id}"


def period_start(period: str, at_s: int, created_s: int) -> int:
    """Start (unix seconds) of the period containing ``at_s``; one_time budgets never roll.

    Unix time has exactly 86,400 seconds per UTC day, so a day starts at ``at_s`` rounded
    down to a multiple of it; a month's start is looked up once per day (this runs on every
    pre-flight and every money event)."""
    if period == "one_time":
        return created_s
    day_start = at_s - at_s % DAY_S
    if period == "daily":
        return day_start
    return _month_start(day_start)


DAY_S = 86_400


@functools.lru_cache(maxsize=64)
def _month_start(day_start_s: int) -> int:
    """Start (unix seconds) of the UTC month containing the day that starts at ``day_start_s``."""
    moment = dt.datetime.fromtimestamp(day_start_s, dt.timezone.utc)
    return int(moment.replace(day=1).timestamp())


@attrs.define
class Txn:
    id: str
    type: str
    amount_micros: int
    balance_after_micros: int
    created_at: int
    description: Optional[str] = None


@attrs.define
class Account:
    """What wallets and budgets share: holds, transactions, the stream version."""

    reserved_micros: int = 0
    holds: dict[str, HoldPlaced] = attrs.Factory(dict)
    capped_open: int = 0
    version: int = 0
    transactions: list[Txn] = attrs.Factory(list)

    def place(self, hold: HoldPlaced) -> None:
        self.holds[hold.reservation_id] = hold
        self.reserved_micros += hold.amount_micros
        self.capped_open += hold.capped

    def release(self, reservation_id: str) -> None:
        hold = self.holds.pop(reservation_id, None)
        if hold is not None:
            self.reserved_micros -= hold.amount_micros
            self.capped_open -= hold.capped


@attrs.define
class Wallet(Account):
    platform_id: str = ""
    balance_micros: int = 0
    created_at: int = 0
    updated_at: int = 0
    mcp_calls: dict[str, int] = attrs.Factory(dict)  # UTC month (YYYY-MM) -> MCP tool calls counted

    @property
    def available_micros(self) -> int:
        return self.balance_micros - self.reserved_micros


@attrs.define
class Budget(Account):
    budget_id: str = ""
    platform_id: str = ""
    end_user_id: str = ""
    max_micros: int = 0
    used_micros: int = 0
    period: str = "one_time"
    period_start: int = 0
    auto_replenish: bool = False
    replenish_micros: Optional[int] = None
    low_balance_threshold_micros: Optional[int] = None
    is_suspended: bool = False
    low_armed: bool = True
    created_at: int = 0
    updated_at: int = 0

    @property
    def remaining_micros(self) -> int:
        return self.max_micros - self.used_micros

    def view_at(self, now_s: int) -> tuple[int, int, int]:
        """(max, used, period_start) as a read at ``now_s`` sees them (a rollover not yet recorded)."""
        start = period_start(self.period, now_s, self.created_at)
        if self.period != "one_time" and start > self.period_start:
            fresh_max = self.replenish_micros if self.auto_replenish and self.replenish_micros else self.max_micros
            return fresh_max, 0, start
        return self.max_micros, self.used_micros, self.period_start

    def available_at(self, now_s: int) -> int:
        max_micros, used, _ = self.view_at(now_s)
        return max_micros - used - self.reserved_micros

    def roll(self, at_s: int, txn_id: str) -> None:
        """Record the period rollover an event at ``at_s`` brings, if any."""
        max_micros, used, start = self.view_at(at_s)
        if start != self.period_start:
            self.max_micros, self.used_micros, self.period_start = max_micros, used, start
            self.low_armed = True
            self.transactions.append(Txn(txn_id, "period_reset", 0, self.remaining_micros, start,
                                         f"{self.period} period started"))


class MoneyProjection:
    """Wallets by platform id and budgets by end-user id."""

    name = "money"

    def __init__(self) -> None:
        self.wallets: dict[str, Wallet] = {}
        self.budgets: dict[str, Budget] = {}

    def wallet(self, platform_id: str) -> Wallet:
        """The platform's wallet, created empty if needed (for the fold; readers use wallet_view)."""
        wallet = self.wallets.get(platform_id)
        if wallet is None:
            wallet = self.wallets[platform_id] = Wallet(platform_id=platform_id)
        return wallet

    def wallet_view(self, platform_id: str) -> Wallet:
        """The platform's wallet for reading; an empty one (not stored) if it has none yet."""
        return self.wallets.get(platform_id) or Wallet(platform_id=platform_id)

    def budget(self, end_user_id: Optional[str]) -> Optional[Budget]:
        return self.budgets.get(end_user_id) if end_user_id else None

    def stream_version(self, stream: str) -> int:
        kind, _, owner = stream.partition("-")
        account = self.wallets.get(owner) if kind == "wallet" else self.budgets.get(owner)
        return account.version if account is not None else 0

    def apply(self, recorded: Recorded) -> None:
        event, at = recorded.event, recorded.recorded_at_s
        account: Optional[Account] = None
        if isinstance(event, WalletCredited):
            account = wallet = self.wallet(event.platform_id)
            wallet.balance_micros += event.amount_micros
            wallet.transactions.append(Txn(event.transaction_id, event.kind, event.amount_micros,
                                           wallet.balance_micros, at, event.description))
        elif isinstance(event, BudgetSet):
            account = self._budget_set(event, at, recorded.event_id)
        elif isinstance(event, BudgetToppedUp):
            account = budget = self.budgets.get(event.end_user_id)
            if budget is not None:
                budget.roll(at, f"{event.transaction_id}.reset")
                budget.max_micros += event.amount_micros
                budget.low_armed = True
                budget.transactions.append(Txn(event.transaction_id, "top_up", event.amount_micros,
                                               budget.remaining_micros, at, event.description))
        elif isinstance(event, BudgetLowBalance):
            account = budget = self.budgets.get(event.end_user_id)
            if budget is not None:
                budget.low_armed = False
        elif isinstance(event, (HoldPlaced, HoldReleased)):
            account = self._hold(event, at, recorded.event_id)
        elif isinstance(event, McpUsageCharged):
            account = wallet = self.wallet(event.platform_id)
            wallet.mcp_calls[event.period] = wallet.mcp_calls.get(event.period, 0) + 1
            if event.cost_micros:
                wallet.balance_micros -= event.cost_micros
                wallet.transactions.append(Txn(recorded.event_id, "mcp_usage", -event.cost_micros,
                                               wallet.balance_micros, at,
                                               f"MCP call {event.server_label}/{event.name} "
                                               f"(#{event.call_number} in {event.period})"))
        if account is not None:
            if recorded.stream.startswith(("wallet-", "budget-")):
                account.version = recorded.version
            if isinstance(account, (Wallet, Budget)):
                account.updated_at = at

    def _budget_set(self, event: BudgetSet, at: int, event_id: str) -> Budget:
        budget = self.budgets.get(event.end_user_id)
        if budget is None or budget.budget_id != event.budget_id:
            budget = Budget(budget_id=event.budget_id, platform_id=event.platform_id, end_user_id=event.end_user_id,
                            created_at=at, period_start=period_start(event.period, at, at), period=event.period)
            self.budgets[event.end_user_id] = budget
            budget.transactions.append(Txn(f"{event.budget_id}.opening", "opening_balance", event.max_micros,
                                           event.max_micros, at, "budget created"))
        else:
            budget.roll(at, f"{event_id}.reset")
            if event.max_micros != budget.max_micros:
                budget.transactions.append(Txn(f"{event_id}.limit", "limit_change",
                                               event.max_micros - budget.max_micros,
                                               event.max_micros - budget.used_micros, at, "max_usd changed"))
            if event.is_suspended != budget.is_suspended:
                budget.transactions.append(Txn(f"{event_id}.suspension",
                                               "suspended" if event.is_suspended else "resumed", 0,
                                               event.max_micros - budget.used_micros, at, None))
            if event.period != budget.period:
                budget.period = event.period
                budget.period_start = period_start(event.period, at, budget.created_at)
        budget.max_micros = event.max_micros
        budget.auto_replenish = event.auto_replenish
        budget.replenish_micros = event.replenish_micros
        budget.low_balance_threshold_micros = event.low_balance_threshold_micros
        budget.is_suspended = event.is_suspended
        return budget

    def _hold(self, event: HoldPlaced | HoldReleased, at: int, event_id: str) -> Optional[Account]:
        if event.account == "wallet":
            account: Optional[Account] = self.wallet(event.platform_id)
        else:
            account = self.budgets.get(event.end_user_id or "")
            if isinstance(account, Budget):
                account.roll(at, f"{event_id}.reset")
        if account is None:
            return None
        if isinstance(event, HoldPlaced):
            account.place(event)
            return account
        account.release(event.reservation_id)
        if event.outcome == "settled" and event.charged_micros:
            if isinstance(account, Wallet):
                account.balance_micros -= event.charged_micros
                after, kind = account.balance_micros, "llm_usage"
            else:
                assert isinstance(account, Budget)
                account.used_micros += event.charged_micros
                after, kind = account.remaining_micros, "debit"
            account.transactions.append(Txn(event_id, kind, -event.charged_micros, after, at, event.description))
        return account

    def fingerprint(self) -> Any:
        """Counts, and a digest of every field of every wallet and budget: their holds and every
        transaction with its balance after (projections.digest)."""
        state = {
            "wallets": {pid: _account_state(w) for pid, w in self.wallets.items()},
            "budgets": {euid: _account_state(b) for euid, b in self.budgets.items()},
        }
        return {"wallets": len(self.wallets), "budgets": len(self.budgets), "sha256": digest.sha256(state)}


def _account_state(account: Account) -> dict[str, Any]:
    """Every field of a wallet or budget; records as tuples of all their fields."""
    state = attrs.asdict(account, filter=lambda field, _: field.name not in ("holds", "transactions"))
    state["holds"] = {rid: digest.rows([hold], HoldPlaced)[0] for rid, hold in account.holds.items()}
    state["transactions"] = digest.rows(account.transactions, Txn)
    return state

"""Money invariants, checked while the money projection is rebuilt from position 0.

* Every reservation ends: each ``hold.placed`` is released (settled or voided) before the
  same (reservation, account) is held again, and at the end each is released or still open
  because its request is in flight (its response has no ``response.finished``). A response
  that calls the model several times (hosted MCP tools) holds and releases once per call.
  A hold still open after its response finished, a second hold while one is open, or a
  release without a hold that charges nothing, is a problem. So is a hold still open after
  a ``gateway.started`` with recovery on whose ``position`` (what its start-up recovery
  looked at) is at or after the hold: that recovery finishes every request a stopped
  gateway left in flight and releases its holds, so the request is not in flight any more.
* Money moved = money charged: per response, the settled wallet releases add up to its
  ``usage.charged`` costs (and so do the budget releases, when it has any); a voided
  release charges nothing.
* Balances are the sum of their transactions: after every money event, each transaction
  the projection recorded continues the running balance of its account (a budget's
  ``period_reset`` starts a new period: its balance is the period's fresh limit), the
  account's balance is its last transaction's, and a wallet's balance equals an
  independent sum (credits minus settled charges). At the end, each account's reserved
  amount is the sum of its open holds.

Problems are (position, message) pairs: the position where the ledger stops adding up.
"""

from __future__ import annotations

from typing import Optional

from ledger import events as ledger_events
from ledger.events import HoldPlaced, HoldReleased, ResponseFinished, UsageCharged, WalletCredited
from ledger.store import Recorded
from projections.money import Account, Budget, MoneyProjection, Wallet

# Hosted MCP tool calls past the free tier are charged straight to the wallet (no hold).
McpUsageCharged = getattr(ledger_events, "McpUsageCharged", None)
# Start-up recovery (gateway/recovery.py) records each start; None in a build without it.
GatewayStarted = getattr(ledger_events, "GatewayStarted", None)

Problem = tuple[Optional[int], str]  # (position, message); None: no single position


class MoneyChecker:
    """Feed it the records the money fold sees, in order, after the projection applied each."""

    def __init__(self, money: MoneyProjection) -> None:
        self.money = money
        self.problems: list[Problem] = []
        self.open: dict[tuple[str, str], tuple[int, HoldPlaced]] = {}  # (reservation, account) -> hold
        self.settled: dict[tuple[str, str], tuple[int, int]] = {}  # (reservation, account) -> (sum, last position)
        self.finished: dict[str, int] = {}  # response id -> position of its response.finished
        self.charged: dict[str, tuple[int, int]] = {}  # response id -> (sum of usage.charged costs, last position)
        self.credited: dict[str, int] = {}  # platform -> credits - settled charges - MCP charges (independent)
        self.recovered_upto: Optional[tuple[int, int]] = None  # (position recovery looked at, its gateway.started)
        self._seen_txns: dict[int, int] = {}  # id(account) -> transactions already checked
        self._last_balance: dict[int, int] = {}
        self._last_credit: dict[int, Optional[int]] = {}

    def fail(self, position: Optional[int], message: str) -> None:
        self.problems.append((position, message))

    def apply(self, recorded: Recorded) -> None:
        event, position = recorded.event, recorded.position
        kind = type(event)
        if kind is HoldPlaced:
            key = (event.reservation_id, event.account)
            if key in self.open:
                self.fail(position, f"a second {event.account} hold for reservation {event.reservation_id} while "
                                    f"the one placed at {self.open[key][0]} is open")
            self.open[key] = (position, event)
        elif kind is HoldReleased:
            self._release(position, event)
        elif kind is ResponseFinished:
            self.finished[event.response_id] = position
        elif kind is UsageCharged:
            total, _ = self.charged.get(event.response_id, (0, 0))
            self.charged[event.response_id] = (total + event.cost_micros, position)
        elif kind is WalletCredited:
            self.credited[event.platform_id] = self.credited.get(event.platform_id, 0) + event.amount_micros
        elif kind is McpUsageCharged:
            self.credited[event.platform_id] = self.credited.get(event.platform_id, 0) - event.cost_micros
        elif kind is GatewayStarted:
            if event.recovery and (self.recovered_upto is None or event.position >= self.recovered_upto[0]):
                self.recovered_upto = (event.position, position)
        # Any event may change the accounts it names; look when their transactions or money moved.
        wallet = self.money.wallets.get(getattr(event, "platform_id", None) or "")
        if wallet is not None and (self._seen_txns.get(id(wallet)) != len(wallet.transactions)
                                   or self._last_credit.get(id(wallet)) != self.credited.get(wallet.platform_id)):
            self._check_account(position, wallet, force=True)
        budget = self.money.budgets.get(getattr(event, "end_user_id", None) or "")
        if budget is not None and self._seen_txns.get(id(budget)) != len(budget.transactions):
            self._check_account(position, budget, force=True)

    def _release(self, position: int, event: HoldReleased) -> None:
        key = (event.reservation_id, event.account)
        if self.open.pop(key, None) is None and not (event.outcome == "settled" and event.charged_micros > 0):
            self.fail(position, f"{event.account} release of reservation {event.reservation_id} without a hold")
        if event.outcome not in ("settled", "voided"):
            self.fail(position, f"unknown release outcome {event.outcome!r}")
        elif event.outcome == "voided" and event.charged_micros != 0:
            self.fail(position, f"voided release of {event.reservation_id} charges {event.charged_micros}")
        if event.outcome == "settled":
            total, _ = self.settled.get(key, (0, 0))
            self.settled[key] = (total + event.charged_micros, position)
            if event.account == "wallet":
                self.credited[event.platform_id] = self.credited.get(event.platform_id, 0) - event.charged_micros

    def _check_account(self, position: Optional[int], account: Account, force: bool = False) -> None:
        """The transactions added since the last look continue the account's running balance."""
        key = id(account)
        unchanged = self._seen_txns.get(key) == len(account.transactions) and key in self._last_balance
        if unchanged and not force and (not isinstance(account, Wallet)
                                        or self._last_credit.get(key) == self.credited.get(account.platform_id)):
            return  # no new transaction and no money in or out: nothing changed that could stop adding up
        balance = self._last_balance.get(key, 0)
        for txn in account.transactions[self._seen_txns.get(key, 0):]:
            if txn.type in ("period_reset", "opening_balance"):
                balance = txn.balance_after_micros  # a new period (or the first) starts from its limit
                if txn.type == "opening_balance" and txn.amount_micros != balance:
                    self.fail(position, f"opening transaction {txn.id} does not open at its amount")
            else:
                balance += txn.amount_micros
                if txn.balance_after_micros != balance:
                    self.fail(position, f"transaction {txn.id}: balance after {txn.balance_after_micros}, "
                                        f"but the transactions add up to {balance}")
                    balance = txn.balance_after_micros
        self._seen_txns[key] = len(account.transactions)
        self._last_balance[key] = balance
        if isinstance(account, Wallet):
            self._last_credit[key] = self.credited.get(account.platform_id)
            if account.balance_micros != balance:
                self.fail(position, f"wallet of {account.platform_id}: balance {account.balance_micros} but its "
                                    f"transactions add up to {balance}")
            independent = self.credited.get(account.platform_id, 0)
            if account.balance_micros != independent:
                self.fail(position, f"wallet of {account.platform_id}: balance {account.balance_micros} but "
                                    f"credits minus settled charges are {independent}")
        elif isinstance(account, Budget) and account.remaining_micros != balance:
            self.fail(position, f"budget of {account.end_user_id}: remaining {account.remaining_micros} but its "
                                f"transactions add up to {balance}")

    def finish(self) -> list[tuple[str, str]]:
        """Check what only the whole history shows; return the holds still open with their request in flight."""
        for (reservation_id, account), (total, position) in self.settled.items():
            charged = self.charged.get(reservation_id, (0, 0))[0]
            if total != charged:
                self.fail(position, f"the {account} releases of reservation {reservation_id} settled {total} "
                                    f"micro-USD, but its usage.charged costs add up to {charged}")
        for response_id, (total, position) in self.charged.items():
            if total > 0 and (response_id, "wallet") not in self.settled:
                self.fail(position, f"response {response_id} was charged {total} but its wallet was not")
        in_flight = []
        for (reservation_id, account), (position, hold) in sorted(self.open.items(), key=lambda kv: kv[1][0]):
            finished_at = self.finished.get(reservation_id)
            if finished_at is not None:
                self.fail(finished_at, f"{account} hold of reservation {reservation_id} (placed at {position}) is "
                                       "still open after its response finished")
            elif self.recovered_upto is not None and position <= self.recovered_upto[0]:
                self.fail(self.recovered_upto[1], f"{account} hold of reservation {reservation_id} (placed at "
                                                  f"{position}) is still open after the gateway restarted at "
                                                  f"position {self.recovered_upto[1]}: its start-up recovery "
                                                  "should have finished the request and released the hold")
            else:
                in_flight.append((reservation_id, account))
        self._check_reserved()
        for account in [*self.money.wallets.values(), *self.money.budgets.values()]:
            self._check_account(None, account, force=True)  # every account once more, whatever changed
        return in_flight

    def _check_reserved(self) -> None:
        reserved: dict[tuple[str, str], int] = {}
        for (_, account), (_, hold) in self.open.items():
            owner = hold.platform_id if account == "wallet" else (hold.end_user_id or "")
            reserved[(account, owner)] = reserved.get((account, owner), 0) + hold.amount_micros
        accounts = [("wallet", pid, w) for pid, w in self.money.wallets.items()]
        accounts += [("budget", euid, b) for euid, b in self.money.budgets.items()]
        for kind, owner, account in accounts:
            expected = reserved.get((kind, owner), 0)
            if account.reserved_micros != expected:
                self.fail(None, f"{kind} of {owner}: reserved {account.reserved_micros}, open holds sum to {expected}")

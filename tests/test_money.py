"""The money fold and the book's decisions, with recorded times and the clock injected (never slept)."""

from __future__ import annotations

import datetime as dt
import time

import attrs
import pytest

from gateway.billing.book import Book, Reservation
from gateway.errors import ApiError
from ledger.events import BudgetSet, BudgetToppedUp, HoldPlaced, HoldReleased, Usage, WalletCredited
from ledger.memory import MemoryStore
from ledger.store import NewEvent, Recorded
from projections.money import MoneyProjection, budget_stream, wallet_stream
from projections.pricing import PricesProjection, compute_cost_micros
from projections.rates import RatesProjection
from projections.runner import ProjectionRunner
from projections.tenancy import TenancyProjection

PRICES = {"input": "100.00", "cached_input": "50.00", "output": "200.00"}


def at(*args: int) -> int:
    """Unix seconds of a UTC date-time."""
    return int(dt.datetime(*args, tzinfo=dt.timezone.utc).timestamp())


class Folder:
    """Feeds events with chosen recorded times into a MoneyProjection."""

    def __init__(self) -> None:
        self.money = MoneyProjection()
        self.position = 0
        self.versions: dict[str, int] = {}

    def apply(self, stream: str, event, when_s: int) -> None:
        self.position += 1
        self.versions[stream] = self.versions.get(stream, 0) + 1
        self.money.apply(Recorded(self.position, stream, self.versions[stream], f"e{self.position}", when_s * 1_000_000,
                                  "0" * 64, "0" * 64, event))


def spend(folder: Folder, euid: str, micros: int, when_s: int, rid: str) -> None:
    folder.apply(budget_stream(euid), HoldPlaced(rid, "budget", "p", euid, micros), when_s)
    folder.apply(budget_stream(euid), HoldReleased(rid, "budget", "p", euid, "settled", micros), when_s)


def test_calculator_rounds_up_and_prices_cached_tokens():
    """cost = ceil(uncached x input + cached x cached + output x output) micro-USD."""
    usage = Usage(input_tokens=10, cached_input_tokens=4, output_tokens=3)
    assert compute_cost_micros(usage, PRICES) == 6 * 100 + 4 * 50 + 3 * 200
    assert compute_cost_micros(Usage(input_tokens=1), {"input": "0.15", "output": "0.6"}) == 1  # 0.15 rounds up
    assert compute_cost_micros(usage, None) == 0
    assert compute_cost_micros(Usage(input_tokens=3, cached_input_tokens=3), {"input": "1", "output": "1"}) == 3


def test_daily_budget_resets_at_utc_midnight():
    """Spend resets when an event lands on the next UTC day; a read's view_at sees it without an event."""
    folder = Folder()
    folder.apply(budget_stream("eu"), BudgetSet("p", "eu", "b", 1_000_000, "daily"), at(2026, 3, 1, 10))
    spend(folder, "eu", 400_000, at(2026, 3, 1, 23, 59), "r1")
    budget = folder.money.budget("eu")
    assert budget.remaining_micros == 600_000
    assert budget.view_at(at(2026, 3, 2, 0, 0, 1)) == (1_000_000, 0, at(2026, 3, 2))
    assert budget.view_at(at(2026, 3, 1, 23, 59, 59))[1] == 400_000
    spend(folder, "eu", 100_000, at(2026, 3, 2, 8), "r2")
    assert (budget.used_micros, budget.period_start) == (100_000, at(2026, 3, 2))
    assert [t.type for t in budget.transactions] == ["opening_balance", "debit", "period_reset", "debit"]
    assert budget.transactions[-1].balance_after_micros == 900_000


def test_monthly_auto_replenish_sets_the_limit_at_the_boundary():
    """A monthly budget with auto_replenish gets max = replenish_amount on the 1st, spend reset."""
    folder = Folder()
    folder.apply(budget_stream("eu"), BudgetSet("p", "eu", "b", 5_000_000, "monthly", True, 2_000_000),
                 at(2026, 1, 15))
    spend(folder, "eu", 4_500_000, at(2026, 1, 31, 23), "r1")
    budget = folder.money.budget("eu")
    assert budget.view_at(at(2026, 2, 1, 0, 0, 0)) == (2_000_000, 0, at(2026, 2, 1))
    assert budget.period_start == at(2026, 1, 1)
    spend(folder, "eu", 1, at(2026, 2, 3), "r2")
    assert (budget.max_micros, budget.used_micros) == (2_000_000, 1)


def test_one_time_budget_never_resets():
    """A one_time budget keeps its spend across days and months."""
    folder = Folder()
    folder.apply(budget_stream("eu"), BudgetSet("p", "eu", "b", 1_000_000, "one_time"), at(2026, 1, 1))
    spend(folder, "eu", 300_000, at(2026, 1, 2), "r1")
    assert folder.money.budget("eu").view_at(at(2027, 6, 1))[1] == 300_000


def test_wallet_statement_adds_up():
    """Each wallet transaction carries the balance after it; holds change available, not balance."""
    folder = Folder()
    folder.apply(wallet_stream("p"), WalletCredited("p", "t1", "top_up", 1_000_000), at(2026, 1, 1))
    folder.apply(wallet_stream("p"), HoldPlaced("r1", "wallet", "p", None, 300_000), at(2026, 1, 1))
    wallet = folder.money.wallet("p")
    assert (wallet.balance_micros, wallet.available_micros) == (1_000_000, 700_000)
    folder.apply(wallet_stream("p"), HoldReleased("r1", "wallet", "p", None, "settled", 120_000), at(2026, 1, 1))
    folder.apply(wallet_stream("p"), WalletCredited("p", "t2", "refund", 20_000), at(2026, 1, 2))
    assert [(t.type, t.amount_micros, t.balance_after_micros) for t in wallet.transactions] == [
        ("top_up", 1_000_000, 1_000_000), ("llm_usage", -120_000, 880_000), ("refund", 20_000, 900_000)]
    assert wallet.reserved_micros == 0 and wallet.version == 4


def test_top_up_rearms_low_balance():
    """A budget top-up raises the limit and re-arms the low-balance alert."""
    folder = Folder()
    folder.apply(budget_stream("eu"), BudgetSet("p", "eu", "b", 1_000_000, "one_time", low_balance_threshold_micros=1),
                 at(2026, 1, 1))
    budget = folder.money.budget("eu")
    budget.low_armed = False
    folder.apply(budget_stream("eu"), BudgetToppedUp("p", "eu", "t", 500_000), at(2026, 1, 2))
    assert budget.low_armed and budget.max_micros == 1_500_000


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


async def make_book(store: MemoryStore, clock: Clock) -> tuple[Book, MoneyProjection, ProjectionRunner]:
    money, tenancy, prices, rates = MoneyProjection(), TenancyProjection(), PricesProjection(), RatesProjection()
    runner = ProjectionRunner(store, [tenancy, prices, money, rates])
    await runner.catch_up()
    return Book(store, money, tenancy, prices, rates, clock), money, runner


def reservation(rid: str, euid: str | None = "eu") -> Reservation:
    return Reservation(rid, "p", euid, "m", "demo", "response", PRICES, "v1", "h")


async def test_capped_hold_one_at_a_time():
    """Worst case above available: the hold is capped, and a second capped hold is refused with 402."""
    store, clock = MemoryStore(), Clock(at(2026, 5, 5))
    await store.append([NewEvent(wallet_stream("p"), WalletCredited("p", "t", "top_up", 10_000_000)),
                        NewEvent(budget_stream("eu"), BudgetSet("p", "eu", "b", 50_000, "monthly"))])
    book, money, _ = await make_book(store, clock)
    first = book.reserve(reservation("r1"), worst_case_micros=80_000)
    assert [(e.event.account, e.event.amount_micros, e.event.capped) for e in first] == [
        ("budget", 50_000, True), ("wallet", 80_000, False)]
    with pytest.raises(ApiError) as refused:
        book.reserve(reservation("r2"), worst_case_micros=10_000)  # nothing left after the pending cap
    assert refused.value.code == "budget_exhausted"
    await store.append(first)
    assert money.budget("eu").capped_open == 1 and book._capped[budget_stream("eu")] == 0


async def test_hold_above_hold_max_is_capped_one_at_a_time():
    """A worst case above hold_usd_max is held at that limit and marked capped; a second waits for the first."""
    store, clock = MemoryStore(), Clock(at(2026, 5, 5))
    await store.append([NewEvent(wallet_stream("p"), WalletCredited("p", "t", "top_up", 10_000_000))])
    book, money, _ = await make_book(store, clock)
    first = attrs.evolve(reservation("r1", euid=None), hold_micros_max=5_000)
    holds = book.reserve(first, worst_case_micros=80_000)
    assert [(e.event.account, e.event.amount_micros, e.event.capped) for e in holds] == [("wallet", 5_000, True)]
    await store.append(holds)
    with pytest.raises(ApiError) as refused:  # plenty of money, but the first is still under-reserved
        book.reserve(attrs.evolve(reservation("r2", euid=None), hold_micros_max=5_000), worst_case_micros=80_000)
    assert (refused.value.status, refused.value.code) == (402, "wallet_insufficient")
    below = book.reserve(attrs.evolve(reservation("r3", euid=None), hold_micros_max=5_000), worst_case_micros=4_000)
    assert [(e.event.amount_micros, e.event.capped) for e in below] == [(4_000, False)]  # a true worst case passes
    await store.append(below)
    settled = book.settle(first, "response-r1", Usage(input_tokens=100, output_tokens=100), False, "success")
    await store.append(settled)
    assert money.wallet("p").balance_micros == 10_000_000 - 30_000  # the overshoot is charged, never clamped
    again = book.reserve(attrs.evolve(reservation("r4", euid=None), hold_micros_max=5_000), worst_case_micros=80_000)
    assert [e.event.capped for e in again] == [True]


async def test_one_under_reserved_hold_per_wallet():
    """Two end users with ample budgets share a wallet: only one hold short of its worst case at a time."""
    store, clock = MemoryStore(), Clock(at(2026, 5, 5))
    await store.append([NewEvent(wallet_stream("p"), WalletCredited("p", "t", "top_up", 100_000))] + [
        NewEvent(budget_stream(euid), BudgetSet("p", euid, f"b-{euid}", 10_000_000, "monthly")) for euid in "ab"])
    book, money, _ = await make_book(store, clock)
    full = book.reserve(reservation("r1", "a"), 70_000)
    await store.append(full)
    short = book.reserve(reservation("r2", "b"), 50_000)  # 30,000 left in the wallet: capped there
    assert [(e.event.account, e.event.amount_micros, e.event.capped) for e in short] == [
        ("budget", 50_000, False), ("wallet", 30_000, True)]
    await store.append(short)
    await store.append(book.void(_held(full, "r1", "a"), 1))
    assert money.wallet("p").available_micros == 70_000
    with pytest.raises(ApiError) as refused:  # 70,000 available, but r2 is still under-reserved on this wallet
        book.reserve(reservation("r3", "a"), 80_000)
    assert refused.value.code == "wallet_insufficient" and "under-reserved" in refused.value.message
    assert [e.event.capped for e in book.reserve(reservation("r4", "a"), 60_000)] == [False, False]


async def test_daily_budget_exhausted_today_admits_tomorrow():
    """Pre-flight with the clock injected: exhausted at 23:59:59 UTC, admitted at 00:00:01 the next day.

    The memory store records events at the real time, so the clock moves from today's end."""
    today = dt.datetime.now(dt.timezone.utc).date()
    tomorrow = today + dt.timedelta(days=1)
    store, clock = MemoryStore(), Clock(time.time())
    await store.append([NewEvent(wallet_stream("p"), WalletCredited("p", "t", "top_up", 10_000_000)),
                        NewEvent(budget_stream("eu"), BudgetSet("p", "eu", "b", 10_000, "daily"))])
    book, money, _ = await make_book(store, clock)
    spent = reservation("r1")
    await store.append(book.reserve(spent, 10_000))
    await store.append(book.settle(spent, "response-r1", Usage(input_tokens=20, output_tokens=40), False, "success"))
    assert money.budget("eu").used_micros == 10_000
    clock.now = at(today.year, today.month, today.day, 23, 59, 59)
    with pytest.raises(ApiError) as exhausted:
        book.reserve(reservation("r2"), 1_000)
    assert exhausted.value.code == "budget_exhausted"
    clock.now = at(tomorrow.year, tomorrow.month, tomorrow.day, 0, 0, 1)
    holds = book.reserve(reservation("r3"), 1_000)
    assert [(e.event.account, e.event.amount_micros, e.event.capped) for e in holds] == [
        ("budget", 1_000, False), ("wallet", 1_000, False)]


async def test_monthly_auto_replenish_through_preflight():
    """Exhausted this month; on the 1st of the next, pre-flight sees the replenished limit (capping a larger worst
    case at it). The memory store records at the real time, so the clock moves from this month's end."""
    month = dt.datetime.now(dt.timezone.utc).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    next_month = (month + dt.timedelta(days=32)).replace(day=1)
    store, clock = MemoryStore(), Clock(time.time())
    await store.append([NewEvent(wallet_stream("p"), WalletCredited("p", "t", "top_up", 10_000_000)),
                        NewEvent(budget_stream("eu"), BudgetSet("p", "eu", "b", 5_000, "monthly", True, 2_000))])
    book, money, _ = await make_book(store, clock)
    spent = reservation("r1")
    await store.append(book.reserve(spent, 5_000))
    await store.append(book.settle(spent, "response-r1", Usage(input_tokens=10, output_tokens=20), False, "success"))
    clock.now = next_month.timestamp() - 60
    with pytest.raises(ApiError) as exhausted:
        book.reserve(reservation("r2"), 1_000)
    assert exhausted.value.code == "budget_exhausted"
    clock.now = next_month.timestamp() + 5
    holds = book.reserve(reservation("r3"), 3_000)
    assert [(e.event.account, e.event.amount_micros, e.event.capped) for e in holds] == [
        ("budget", 2_000, True), ("wallet", 3_000, False)]


async def test_budget_exhausted_is_answered_before_wallet_insufficient():
    """An exhausted budget and an empty wallet: budget_exhausted; with budget left, the empty wallet answers."""
    store, clock = MemoryStore(), Clock(at(2026, 5, 5))
    await store.append([NewEvent(budget_stream("eu"), BudgetSet("p", "eu", "b", 1_000, "one_time")),
                        NewEvent(budget_stream("eu"), HoldPlaced("r0", "budget", "p", "eu", 1_000)),
                        NewEvent(budget_stream("eu"), HoldReleased("r0", "budget", "p", "eu", "settled", 1_000)),
                        NewEvent(budget_stream("other"), BudgetSet("p", "other", "b2", 1_000, "one_time"))])
    book, _, _ = await make_book(store, clock)
    with pytest.raises(ApiError) as first:
        book.reserve(reservation("r1"), 500)
    assert first.value.code == "budget_exhausted"
    with pytest.raises(ApiError) as second:
        book.reserve(reservation("r2", "other"), 500)
    assert second.value.code == "wallet_insufficient"


def _held(holds, rid: str, euid: str) -> Reservation:
    """The reservation whose ``holds`` were placed (to void it)."""
    res = reservation(rid, euid)
    res.holds.update({new.event.account: new.event.amount_micros for new in holds})
    return res


async def test_preflight_order_and_free_requests():
    """Suspended beats exhausted beats wallet; a zero-cost request passes an empty wallet."""
    store, clock = MemoryStore(), Clock(at(2026, 5, 5))
    await store.append([NewEvent(budget_stream("eu"), BudgetSet("p", "eu", "b", 1, "one_time", is_suspended=True))])
    book, _, _ = await make_book(store, clock)
    with pytest.raises(ApiError) as suspended:
        book.reserve(reservation("r1"), 1_000)
    assert (suspended.value.status, suspended.value.code) == (402, "budget_suspended")
    assert book.reserve(reservation("r2", euid=None), 0) == []  # free, no budget: passes an empty wallet
    with pytest.raises(ApiError) as wallet:
        book.reserve(reservation("r3", euid=None), 1)
    assert wallet.value.code == "wallet_insufficient"


async def test_two_processes_never_spend_the_same_money():
    """Two books on one store (two gateway processes): stale versions are rejected, never double-spent."""
    store, clock = MemoryStore(), Clock(at(2026, 5, 5))
    await store.append([NewEvent(wallet_stream("p"), WalletCredited("p", "t", "top_up", 100_000))])
    book_a, money_a, runner_a = await make_book(store, clock)
    book_b, money_b, runner_b = await make_book(store, clock)
    holds_a = book_a.reserve(reservation("ra", euid=None), 100_000)
    holds_b = book_b.reserve(reservation("rb", euid=None), 100_000)  # B has not seen A's hold yet
    await store.append(holds_a)
    from ledger.errors import ConcurrencyConflict

    with pytest.raises(ConcurrencyConflict):
        await store.append(holds_b)
    book_b.abandon(holds_b, "rb")
    await runner_b.catch_up()
    with pytest.raises(ApiError) as refused:
        book_b.reserve(reservation("rb2", euid=None), 1)
    assert refused.value.code == "wallet_insufficient"
    assert money_b.wallet("p").reserved_micros == 100_000


async def test_settle_charges_actual_usage_and_alerts_low_balance_once():
    """Settlement releases the hold, charges the real cost, and records one low-balance alert per crossing."""
    store, clock = MemoryStore(), Clock(at(2026, 5, 5))
    await store.append([NewEvent(wallet_stream("p"), WalletCredited("p", "t", "top_up", 10_000_000)),
                        NewEvent(budget_stream("eu"), BudgetSet("p", "eu", "b", 20_000, "one_time",
                                                               low_balance_threshold_micros=15_000))])
    book, money, _ = await make_book(store, clock)
    alerts = []
    for n in range(3):  # each costs 3,000: remaining 17,000, then 14,000 (crosses 15,000), then 11,000
        res = reservation(f"r{n}")
        await store.append(book.reserve(res, 9_000))
        settle = book.settle(res, f"response-r{n}", Usage(input_tokens=10, output_tokens=10), False, "success")
        await store.append(settle)
        alerts.append([type(e.event).__name__ for e in settle].count("BudgetLowBalance"))
    assert alerts == [0, 1, 0]
    budget = money.budget("eu")
    assert budget.used_micros == 3 * (10 * 100 + 10 * 200) and budget.reserved_micros == 0
    assert money.wallet("p").balance_micros == 10_000_000 - 9_000


def test_rate_windows_count_by_recorded_time():
    """rpm/rpd/tpm windows count what falls inside them at the read time; Retry-After names the wait."""
    from ledger.events import ResponseAccepted
    from projections.rates import RatesProjection
    from projections.tenancy import RateLimits

    rates = RatesProjection()
    for n, second in enumerate((0, 10, 20, 70)):
        rates.apply(Recorded(n + 1, f"response-r{n}", 1, f"e{n}", (1_000 + second) * 1_000_000, "0" * 64, "0" * 64,
                             ResponseAccepted(f"r{n}", "p", "m", "demo", False, {}, [], "eu")))
    limits = RateLimits(rpm_limit=3)
    assert rates.exceeded("eu", limits, now_s=1_071) is None  # requests at 20 and 70 in the last minute
    assert rates.exceeded("eu", limits, now_s=1_071, pending_requests=1) == 9  # the one at 20 leaves at 1,080
    assert rates.exceeded("eu", RateLimits(rpd_limit=4), now_s=1_080) == 86_400 - 80
    assert rates.exceeded("eu", RateLimits(rpd_limit=4), now_s=1_000 + 86_401) is None


def test_period_start_is_the_utc_calendar_boundary():
    """period_start's arithmetic equals the UTC calendar's day and month starts at random instants."""
    import datetime as dt
    import random

    from projections.money import period_start

    rng = random.Random(7)
    instants = [0, 86_399, 86_400, 951_782_400, 4_107_542_399] + [rng.randrange(0, 4_200_000_000) for _ in range(2000)]
    for at_s in instants:
        moment = dt.datetime.fromtimestamp(at_s, dt.timezone.utc)
        day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        assert period_start("daily", at_s, 5) == int(day.timestamp())
        assert period_start("monthly", at_s, 5) == int(day.replace(day=1).timestamp())
        assert period_start("one_time", at_s, 5) == 5

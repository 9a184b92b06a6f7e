"""Money, usage and rates fingerprints digest their whole state: equal histories agree, and a wrong token
count, status, balance or suspension - invisible to counts and sums - changes the fingerprint."""

from __future__ import annotations

import attrs

from ledger.events import BudgetSet, HoldPlaced, HoldReleased, ResponseAccepted, Usage, UsageCharged, WalletCredited
from ledger.store import Recorded
from projections.money import MoneyProjection, budget_stream, wallet_stream
from projections.rates import RatesProjection
from projections.usage import UsageProjection

T0_US = 1_770_000_000 * 1_000_000


def charge(rid: str, output_tokens: int, status: str = "success") -> UsageCharged:
    return UsageCharged(rid, "p", "eu", "priced", "demo", "response", Usage(input_tokens=10, output_tokens=output_tokens),
                        "reported", "prices_1", "0" * 64, "1", 1_000 + output_tokens, status, 12, "billed")


def history() -> list[tuple[str, object]]:
    """A small history touching every folded kind: a wallet, a budget, two charged requests."""
    events: list[tuple[str, object]] = [
        (wallet_stream("p"), WalletCredited("p", "t1", "top_up", 5_000_000, "first")),
        (budget_stream("eu"), BudgetSet("p", "eu", "b1", 2_000_000, "monthly")),
    ]
    for rid, output_tokens in (("r1", 20), ("r2", 30)):
        events.append(("response-" + rid, ResponseAccepted(rid, "p", "priced", "demo", False, {}, [], "eu")))
        for account, stream in (("wallet", wallet_stream("p")), ("budget", budget_stream("eu"))):
            events.append((stream, HoldPlaced(rid, account, "p", "eu", 9_000)))
        events.append(("response-" + rid, charge(rid, output_tokens)))
        for account, stream in (("wallet", wallet_stream("p")), ("budget", budget_stream("eu"))):
            events.append((stream, HoldReleased(rid, account, "p", "eu", "settled", 1_000 + output_tokens, "x")))
    return events


def fold(events) -> dict[str, object]:
    """Fingerprints of the three projections after folding ``events`` in order."""
    projections = [MoneyProjection(), UsageProjection(), RatesProjection()]
    versions: dict[str, int] = {}
    for position, (stream, event) in enumerate(events, 1):
        versions[stream] = versions.get(stream, 0) + 1
        recorded = Recorded(position, stream, versions[stream], f"e{position}", T0_US + position * 1_000_000,
                            "0" * 64, "0" * 64, event)
        for projection in projections:
            projection.apply(recorded)
    return {p.name: p.fingerprint() for p in projections}


def changed(events, index: int, **fields) -> list:
    """``events`` with the event at ``index`` evolved."""
    out = list(events)
    stream, event = out[index]
    out[index] = (stream, attrs.evolve(event, **fields))
    return out


def test_equal_histories_have_equal_fingerprints():
    """Folding the same history twice gives the same fingerprints, each with its digest."""
    assert fold(history()) == fold(history())
    assert all(len(f["sha256"]) == 64 for f in fold(history()).values())


def test_a_wrong_token_count_or_status_changes_usage_and_rates():
    """One more output token (same cost, same counts) changes the usage and rates fingerprints."""
    events = history()
    index = next(i for i, (_, e) in enumerate(events) if isinstance(e, UsageCharged))
    original = events[index][1]
    more_tokens = changed(events, index, usage=attrs.evolve(original.usage, output_tokens=21))
    failed = changed(events, index, status="interrupted")
    base, tokens, status = fold(events), fold(more_tokens), fold(failed)
    assert tokens["usage"] != base["usage"] and tokens["rates"] != base["rates"]
    assert status["usage"] != base["usage"] and status["rates"] == base["rates"]
    assert tokens["usage"]["rows"] == base["usage"]["rows"]  # the counts alone would not have told


def test_a_wrong_balance_or_suspension_changes_money():
    """A settlement of another amount, or a suspended budget, changes the money fingerprint."""
    events = history()
    index = next(i for i, (_, e) in enumerate(events) if isinstance(e, HoldReleased))
    assert fold(changed(events, index, charged_micros=1_021))["money"] != fold(events)["money"]
    suspended = events + [(budget_stream("eu"), BudgetSet("p", "eu", "b1", 2_000_000, "monthly", is_suspended=True))]
    resumed = suspended + [(budget_stream("eu"), BudgetSet("p", "eu", "b1", 2_000_000, "monthly"))]
    assert len({str(fold(h)["money"]) for h in (events, suspended, resumed)}) == 3

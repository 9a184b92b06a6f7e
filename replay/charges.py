"""Recompute every ``usage.charged`` from what it recorded, and list each difference.

A charge names its price-table version, that table's hash and the calculator version.
Replay finds the version among the ``prices.published`` events recorded *before* the
charge, checks that the table hashes to its recorded sha256 (and to the one the charge
recorded), recomputes the cost from the raw usage with the recorded calculator
(projections.pricing.compute_cost_micros), and compares: cost, and billing status (voided
charges cost 0; otherwise billed when the cost is above 0, else free).
"""

from __future__ import annotations

from typing import Optional

import attrs

from ledger.events import PricesPublished, UsageCharged
from ledger.store import Recorded
from projections.pricing import compute_cost_micros, table_sha256


@attrs.frozen
class Difference:
    """One charge that does not follow from its recorded usage and prices."""

    position: int
    response_id: str
    platform_id: str
    end_user_id: Optional[str]
    model: str
    recorded_micros: int
    recomputed_micros: Optional[int]
    reason: str

    def line(self) -> str:
        again = "?" if self.recomputed_micros is None else str(self.recomputed_micros)
        return (f"position {self.position}: response {self.response_id} ({self.platform_id}/"
                f"{self.end_user_id or '-'}, {self.model}): recorded {self.recorded_micros} micro-USD, "
                f"recomputed {again}: {self.reason}")


@attrs.define
class Selection:
    """Which charges to look at (None = any); times are unix seconds, ``to_s`` exclusive."""

    platform_id: Optional[str] = None
    end_user_id: Optional[str] = None
    from_s: Optional[int] = None
    to_s: Optional[int] = None

    def wants(self, charge: UsageCharged, at_s: int) -> bool:
        return ((self.platform_id is None or charge.platform_id == self.platform_id)
                and (self.end_user_id is None or charge.end_user_id == self.end_user_id)
                and (self.from_s is None or at_s >= self.from_s) and (self.to_s is None or at_s < self.to_s))


def recompute(charge: UsageCharged, version: Optional[PricesPublished],
              table_ok: Optional[bool] = None) -> tuple[Optional[int], list[str]]:
    """(recomputed cost or None, reasons it differs) for one charge against its price version
    (``table_ok``: whether the version's table hashes to its sha256, if already known)."""
    reasons: list[str] = []
    prices = None
    if charge.price_version_id:
        if version is None:
            return None, [f"price version {charge.price_version_id!r} is not recorded before this charge"]
        if not (table_ok if table_ok is not None else table_sha256(version.models) == version.sha256):
            reasons.append(f"price version {version.version_id} does not hash to its recorded sha256")
        if charge.price_sha256 != version.sha256:
            reasons.append(f"the charge names price hash {charge.price_sha256[:12]}..., the version has "
                           f"{version.sha256[:12]}...")
        prices = version.models.get(charge.model)
    try:
        cost = compute_cost_micros(charge.usage, prices, charge.calculator_version)
    except ValueError as exc:
        return None, reasons + [str(exc)]
    if charge.billing_status == "voided":
        cost = 0
    if charge.cost_micros != cost:
        reasons.append(f"cost {charge.cost_micros} != {cost} recomputed")
    status = "voided" if charge.billing_status == "voided" else ("billed" if cost > 0 else "free")
    if charge.billing_status != status:
        reasons.append(f"billing status {charge.billing_status!r}, expected {status!r}")
    return cost, reasons


class ChargeChecker:
    """Feed it price versions and charges in ledger order; it keeps the differences."""

    def __init__(self, selection: Optional[Selection] = None) -> None:
        self.selection = selection or Selection()
        self.versions: dict[str, PricesPublished] = {}
        self.tables_ok: dict[str, bool] = {}  # version id -> its table hashes to its sha256
        self.differences: list[Difference] = []
        self.checked = 0
        self.recorded_micros = 0
        self.recomputed_micros = 0
        self.used_versions: set[str] = set()

    def apply(self, recorded: Recorded) -> None:
        event = recorded.event
        if isinstance(event, PricesPublished):
            if event.version_id not in self.versions:
                self.versions[event.version_id] = event
                self.tables_ok[event.version_id] = table_sha256(event.models) == event.sha256
        elif isinstance(event, UsageCharged) and self.selection.wants(event, recorded.recorded_at_s):
            self.check(recorded.position, event)

    def check(self, position: int, charge: UsageCharged) -> None:
        version = self.versions.get(charge.price_version_id)
        cost, reasons = recompute(charge, version, self.tables_ok.get(charge.price_version_id))
        self.checked += 1
        self.recorded_micros += charge.cost_micros
        self.recomputed_micros += cost or 0
        if charge.price_version_id:
            self.used_versions.add(charge.price_version_id)
        if reasons:
            self.differences.append(Difference(position, charge.response_id, charge.platform_id, charge.end_user_id,
                                               charge.model, charge.cost_micros, cost, "; ".join(reasons)))

"""The projections a gateway keeps, in the order the runner applies them (and replay rebuilds them)."""

from __future__ import annotations

from projections.money import MoneyProjection
from projections.pricing import PricesProjection
from projections.rates import RatesProjection
from projections.responses import ResponsesProjection
from projections.tenancy import TenancyProjection
from projections.usage import UsageProjection


def build_all() -> dict[str, object]:
    """Fresh, empty projections by name."""
    projections = [TenancyProjection(), PricesProjection(), MoneyProjection(), RatesProjection(), ResponsesProjection(),
                   UsageProjection()]
    return {p.name: p for p in projections}

"""Price tables and the charge calculator, shared by the gateway and by replay.

A charge is computed from the raw usage and one recorded price-table version, never from
the live configuration, so replay recomputes every historical charge exactly:

    calculator "v1":
      uncached = input_tokens - cached_input_tokens
      cost_micros = ceil(uncached x input + cached x cached_input + output_tokens x output)

with prices as decimal strings in USD per million tokens, which makes "tokens x price" a
number of micro-USD. ``cached_input`` falls back to ``input`` when a model has none.
Reasoning tokens are part of ``output_tokens`` (as OpenAI reports them) and are not added
again.
"""

from __future__ import annotations

import functools
import hashlib
import math
from decimal import Decimal
from typing import Any, Optional

from ledger.codec import canonical_json
from ledger.events import PricesPublished, Usage
from ledger.store import Recorded

CALCULATOR_VERSION = "v1"
PRICES_STREAM = "prices"
PRICE_STRINGS_CACHED_MAX = 1024  # distinct price strings parsed once each (a few per model)


def table_sha256(models: dict[str, dict[str, str]]) -> str:
    """The hash that identifies a price table's content."""
    return hashlib.sha256(canonical_json(models)).hexdigest()


@functools.lru_cache(maxsize=PRICE_STRINGS_CACHED_MAX)
def _decimal(price: str) -> Decimal:
    """A price string as a Decimal, parsed once (Decimal is immutable, so sharing it is safe)."""
    return Decimal(price)


def compute_cost_micros(usage: Usage, prices: Optional[dict[str, str]], calculator: str = CALCULATOR_VERSION) -> int:
    """The charge in integer micro-USD, rounded up; 0 for a model with no prices."""
    if calculator != CALCULATOR_VERSION:
        raise ValueError(f"unknown calculator version {calculator!r}")
    if not prices:
        return 0
    input_price = _decimal(prices.get("input", "0"))
    cached_price = _decimal(prices.get("cached_input") or prices.get("input", "0"))
    output_price = _decimal(prices.get("output", "0"))
    cached = min(usage.cached_input_tokens, usage.input_tokens)
    exact = (usage.input_tokens - cached) * input_price + cached * cached_price + usage.output_tokens * output_price
    return math.ceil(exact)


def worst_case_micros(input_tokens_max: int, output_tokens_max: int, prices: Optional[dict[str, str]]) -> int:
    """An upper bound of a call's cost: every input token uncached, every output token used."""
    return compute_cost_micros(Usage(input_tokens=input_tokens_max, output_tokens=output_tokens_max), prices)


class PricesProjection:
    """Every published price-table version; the latest one is in force."""

    name = "prices"

    def __init__(self) -> None:
        self.versions: dict[str, PricesPublished] = {}
        self.latest: Optional[PricesPublished] = None

    def apply(self, recorded: Recorded) -> None:
        event = recorded.event
        if isinstance(event, PricesPublished):
            self.versions[event.version_id] = event
            self.latest = event

    def fingerprint(self) -> Any:
        return {"versions": sorted(self.versions), "latest": self.latest.version_id if self.latest else None}

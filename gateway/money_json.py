"""Money at the HTTP edge: JSON numbers of USD (at most 6 decimals) <-> integer micro-USD."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any, Optional

from gateway.errors import invalid

MICROS_PER_USD = 1_000_000
AMOUNT_USD_MAX = Decimal("1000000000")  # no single amount above a billion dollars


def parse_usd(value: Any, param: str, *, allow_zero: bool = False) -> int:
    """A USD amount from JSON as integer micro-USD; 400 naming ``param`` when it is not one.

    Accepts a JSON number (or a decimal string) with at most 6 decimals, > 0 (>= 0 with
    ``allow_zero``). Floats are read through their shortest repr, so 0.1 is exactly 0.1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise invalid(f"Invalid '{param}': expected a number of USD.", param, "invalid_type")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise invalid(f"Invalid '{param}': {value!r} is not a number.", param, "invalid_type") from None
    if not amount.is_finite():
        raise invalid(f"Invalid '{param}': expected a finite number.", param, "invalid_value")
    if amount.as_tuple().exponent < -6 and amount != amount.quantize(Decimal("0.000001")):
        raise invalid(f"Invalid '{param}': at most 6 decimal places (micro-USD).", param, "invalid_value")
    if amount < 0 or (amount == 0 and not allow_zero):
        raise invalid(f"Invalid '{param}': expected a value {'>=' if allow_zero else '>'} 0.", param, "invalid_value")
    if amount > AMOUNT_USD_MAX:
        raise invalid(f"Invalid '{param}': at most {AMOUNT_USD_MAX} USD.", param, "invalid_value")
    return int(amount * MICROS_PER_USD)


def usd(micros: Optional[int]) -> Optional[float]:
    """Integer micro-USD as a JSON number of USD (6 decimals)."""
    return None if micros is None else round(micros / MICROS_PER_USD, 6)


def iso(unix_s: Optional[int]) -> Optional[str]:
    """Unix seconds as an ISO-8601 UTC string."""
    if unix_s is None:
        return None
    return dt.datetime.fromtimestamp(unix_s, dt.timezone.utc).isoformat().replace("+00:00", "Z")

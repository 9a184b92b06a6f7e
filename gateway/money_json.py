"""Money at the HTTP edge: JSON numbers of USD (at most 6 decimals) <-> integer micro-USD.

Every money input of the API (wallet and budget top-ups, budget limits and thresholds, a
platform's ``default_budget_usd``) goes through ``parse_usd``: a JSON number, as CONTRACT
says; a string such as ``"5"`` is a 400 ``invalid_type`` (one rule everywhere, so a client
that works on one route works on all). A float is read through its shortest repr, so 0.1 is
exactly 100000 micro-USD; more than 6 decimals is a 400, never a rounding.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal, InvalidOperation
from typing import Any, Optional

from gateway.errors import invalid
from projections.money import Txn

MICROS_PER_USD = 1_000_000
AMOUNT_USD_MAX = Decimal("1000000000")  # no single amount above a billion dollars
TXN_DESCRIPTION_CHARS_MAX = 500  # a transaction's description, kept in the ledger and every statement


def parse_usd(value: Any, param: str, *, allow_zero: bool = False) -> int:
    """A USD amount from JSON as integer micro-USD; 400 naming ``param`` when it is not one.

    Accepts a JSON number with at most 6 decimals, > 0 (>= 0 with ``allow_zero``), at most
    ``AMOUNT_USD_MAX``.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise invalid(f"Invalid type for '{param}': expected a JSON number of USD.", param, "invalid_type")
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise invalid(f"Invalid '{param}': {value!r} is not a number.", param, "invalid_type") from None
    return decimal_micros(amount, param, allow_zero=allow_zero)


def decimal_micros(amount: Decimal, param: str, *, allow_zero: bool = False, allow_negative: bool = False) -> int:
    """A USD amount as integer micro-USD: finite, at most 6 decimals, > 0 (>= 0 with
    ``allow_zero``; any sign but 0 with ``allow_negative``), at most ``AMOUNT_USD_MAX`` in size;
    else a 400 naming ``param``. The one rule for money over HTTP and on the command line."""
    if not amount.is_finite():
        raise invalid(f"Invalid '{param}': expected a finite number.", param, "invalid_value")
    if amount.as_tuple().exponent < -6 and amount != amount.quantize(Decimal("0.000001")):
        raise invalid(f"Invalid '{param}': at most 6 decimal places (micro-USD).", param, "invalid_value")
    if (amount < 0 and not allow_negative) or (amount == 0 and not allow_zero):
        expected = "other than 0" if allow_negative else (">= 0" if allow_zero else "> 0")
        raise invalid(f"Invalid '{param}': expected a value {expected}.", param, "invalid_value")
    if abs(amount) > AMOUNT_USD_MAX:
        raise invalid(f"Invalid '{param}': at most {AMOUNT_USD_MAX} USD.", param, "invalid_value")
    return int(amount * MICROS_PER_USD)


def txn_json(txn: Txn) -> dict[str, Any]:
    """A wallet or budget transaction as the API shows it."""
    return {"id": txn.id, "type": txn.type, "amount": usd(txn.amount_micros), "balance_after":
            usd(txn.balance_after_micros), "description": txn.description, "created_at": iso(txn.created_at)}


def usd(micros: Optional[int]) -> Optional[float]:
    """Integer micro-USD as a JSON number of USD (6 decimals)."""
    return None if micros is None else round(micros / MICROS_PER_USD, 6)


def iso(unix_s: Optional[int]) -> Optional[str]:
    """Unix seconds as an ISO-8601 UTC string."""
    if unix_s is None:
        return None
    return dt.datetime.fromtimestamp(unix_s, dt.timezone.utc).isoformat().replace("+00:00", "Z")

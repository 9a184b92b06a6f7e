"""``assistiv wallet credit``: the operator's refunds and adjustments of a platform wallet.

A platform tops its own wallet up over HTTP (``POST .../wallet/topup``). Refunds (money given
back, say after a billing dispute) and adjustments (corrections, either way) are decided by
whoever runs the gateway and holds its ledger, so they are a command on the ledger, not a
route a tenant's key could call. Each is one ``wallet.credited`` event (``kind`` refund,
adjustment or top_up) that the wallet's transactions list with the balance after it, so
``GET .../wallet/transactions``, ``assistiv report wallet`` and ``replay verify`` all show it.

Rules: a refund or top-up is > 0; an adjustment is != 0; at most 6 decimals (micro-USD) and a
billion USD; a description is required for refunds and adjustments (the audit trail says
why). A debit is appended with the wallet stream's expected version and refused when it would
leave less than the holds of the requests in flight (a running gateway's hold placed meanwhile
makes the append conflict, and the check runs again on the new state). The transaction id is
the event id, so re-running a command with the same ``--transaction-id`` records nothing new
and answers the original; the same id with other values is refused.

Works whether or not a gateway serves the same ledger (the store serialises the writers; a
running gateway picks the event up from the ledger like any other append).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any, Optional

import trio

from gateway.errors import ApiError
from gateway.money_json import TXN_DESCRIPTION_CHARS_MAX, decimal_micros, txn_json, usd
from gateway.request_input import new_id
from gateway.services import build_services
from ledger.errors import ConcurrencyConflict
from ledger.events import WalletCredited
from ledger.store import NewEvent
from projections.money import wallet_stream

KINDS = ("refund", "adjustment", "top_up")
APPEND_ATTEMPTS_MAX = 20  # a debit re-checked after this many lost races gives up


class CreditRefused(Exception):
    """The command's input or the wallet's state does not allow this credit (message says why)."""


def parse_amount(text: str, kind: str) -> int:
    """A USD decimal string as micro-USD, under the API's money rule (gateway.money_json); only
    an adjustment may be negative."""
    try:
        return decimal_micros(Decimal(text), "--amount", allow_negative=kind == "adjustment")
    except InvalidOperation:
        raise CreditRefused(f"--amount {text!r} is not a number of USD") from None
    except ApiError as refused:
        raise CreditRefused(refused.message) from None


async def credit_wallet(config, store, platform_id: str, kind: str, amount_micros: int,
                        description: Optional[str], transaction_id: Optional[str] = None) -> dict[str, Any]:
    """Record the credit (see the module docstring); the transaction and the balance after, as JSON."""
    if kind not in KINDS:
        raise CreditRefused(f"--kind must be one of {', '.join(KINDS)}")
    if kind != "top_up" and not (description or "").strip():
        raise CreditRefused(f"a {kind} needs --description (why), for the audit trail")
    if description is not None and len(description) > TXN_DESCRIPTION_CHARS_MAX:
        raise CreditRefused(f"--description has more than {TXN_DESCRIPTION_CHARS_MAX} characters")
    txn_id = transaction_id or new_id("txn")
    event = WalletCredited(platform_id, txn_id, kind, amount_micros, description)
    services = build_services(config, store)
    outcome: Any = None
    async with trio.open_nursery() as nursery:
        await nursery.start(services.runner.run)
        try:
            outcome = await _record(services, store, event)
        except CreditRefused as refused:
            outcome = refused  # raised below, outside the nursery (not as an exception group)
        nursery.cancel_scope.cancel()
    if isinstance(outcome, CreditRefused):
        raise outcome
    return outcome


async def _record(services, store, event: WalletCredited) -> dict[str, Any]:
    platform_id, txn_id, amount_micros = event.platform_id, event.transaction_id, event.amount_micros
    stream = wallet_stream(platform_id)
    for _ in range(APPEND_ATTEMPTS_MAX):
        await services.runner.wait_for(await store.head())
        if platform_id not in services.tenancy.platforms:
            raise CreditRefused(f"no platform {platform_id!r} in this ledger")
        expected = None
        if amount_micros < 0:
            wallet = services.money.wallet_view(platform_id)
            if wallet.available_micros + amount_micros < 0:
                raise CreditRefused(
                    f"the wallet has {usd(wallet.available_micros)} USD not held for requests in flight; "
                    f"a debit of {usd(-amount_micros)} USD would take it below that")
            expected = services.money.stream_version(stream)
        try:
            [recorded] = await store.append([NewEvent(stream, event, txn_id, expected)])
        except ConcurrencyConflict:
            continue
        break
    else:
        raise CreditRefused("the wallet kept changing; try again")
    if recorded.event != event:
        raise CreditRefused(f"transaction {txn_id!r} was already recorded with other values: {recorded.event!r}")
    await services.runner.wait_for(recorded.position)
    wallet = services.money.wallet_view(platform_id)
    txn = next(t for t in wallet.transactions if t.id == txn_id)
    return {"transaction": txn_json(txn), "balance": usd(wallet.balance_micros)}

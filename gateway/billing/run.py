"""The money of one response run, one model call ("turn") at a time (DESIGN invariant 8).

Turn 1's holds are appended with ``response.accepted`` (``ResponseRun._accept``). When hosted
MCP tools make a response call the model again, it reserves before each later call
(``reserve_turn``: the same pre-flight money checks, no rate limit) and settles each call on
its own (``settle``): one ``usage.charged`` and one log row per upstream call, and the holds
always cover the call in flight. ``void`` releases the holds of a call that never ran.
``mcp_charges`` counts the MCP tool calls about to run (free tier, then a price per call).

Cancellation: ``reserve_turn`` appends once per attempt; a cancelled append may or may not
be recorded, and the run's ``finally`` then settles or voids what it believes is open.
"""

from __future__ import annotations

from typing import Any, Awaitable, Callable, Iterable, Optional

import attrs

from gateway.billing.book import Book, Reservation
from gateway.config import McpConfig
from gateway.errors import ApiError
from gateway.providers.base import ModelCall
from ledger.errors import ConcurrencyConflict
from ledger.events import Usage
from ledger.store import EventStore, NewEvent

ACCEPT_ATTEMPTS_MAX = 20  # reservation retries after losing a race for an account's version


def busy() -> ApiError:
    return ApiError(503, "Too much contention on this account; retry the request.", code="busy",
                    type_="server_error")


@attrs.define
class RunBilling:
    """What a run needs to reserve and settle: the book, its reservation, the worst case."""

    book: Book
    reservation: Reservation
    worst_case_micros: int
    catch_up: Callable[[], Awaitable[Any]]
    estimate: Optional[Callable[[ModelCall], int]] = None  # the worst case of a later model call
    mcp: McpConfig = McpConfig()
    holds_open: bool = False  # the current turn reserved and is not settled yet
    # The output limit a model call is sent with when the request sets none (the model's
    # reserve_output_tokens): what its hold covers, so the hold stays a true worst case.
    output_tokens_default: Optional[int] = None

    async def reserve_turn(self, store: EventStore, call: ModelCall, turn: int) -> None:
        """Hold the worst case of model call ``turn`` (> 1). Raises ApiError 402 when the money is gone."""
        worst = self.estimate(call) if self.estimate is not None else self.worst_case_micros
        for _ in range(ACCEPT_ATTEMPTS_MAX):
            holds = self.book.reserve(self.reservation, worst, turn)
            try:
                await store.append(holds)
            except ConcurrencyConflict:
                self.book.abandon(holds)
                await self.catch_up()
                continue
            self.holds_open = True
            return
        raise busy()

    def settle(self, response_stream: str, usage: Usage, estimated: bool, status: str, charge: bool,
               turn: int) -> list[NewEvent]:
        """Charge (or void, ``charge=False``) model call ``turn`` and release its holds."""
        self.holds_open = False
        return self.book.settle(self.reservation, response_stream, usage, estimated, status, charge, turn)

    def void(self, turn: int) -> list[NewEvent]:
        """Release the holds of model call ``turn``, which was reserved but never made."""
        if not self.holds_open:
            return []
        self.holds_open = False
        return self.book.void(self.reservation, turn)

    def mcp_charges(self, calls: Iterable[tuple[int, str, str, str]]) -> tuple[list[NewEvent], list[ApiError]]:
        """Charges for MCP calls about to run, each ``(output index, item id, server label, tool)``;
        with, per call, None or the 402 that refuses it."""
        events: list[NewEvent] = []
        refusals: list[Any] = []
        for output_index, item_id, label, name in calls:
            try:
                events.append(self.book.mcp_charge(self.reservation, output_index, item_id, label, name,
                                                   self.mcp.free_calls_per_month, self.mcp.price_per_call_usd))
                refusals.append(None)
            except ApiError as refused:
                refusals.append(refused)
        return events, refusals

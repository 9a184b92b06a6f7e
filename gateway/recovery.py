"""Start-up recovery: finish what a killed gateway left in flight (DESIGN invariants 8 and 9).

A gateway killed mid-request (kill -9, power loss) leaves responses whose ``response.accepted``
and ``hold.placed`` events are durable but which nothing will ever finish: their holds would
keep the end user's budget and the platform wallet reserved forever, and the output they
emitted (durable, maybe seen by the client) would never be billed. ``recover_at_start`` runs
after the projections caught up and before the gateway serves, and ends each such response
(or chat completion) as an upstream drop ends one today (``ResponseRun._finish_failed``), in
one atomic append per response with the response stream's expected version:

* MCP work in flight is marked failed: a listing gets ``mcp.tools_listed`` with an error, a
  call that started gets ``mcp.call_finished`` with an ``mcp_protocol_error`` (its outcome is
  unknown) and its item ``failed``; every other open item is finished ``incomplete``.
* ``response.finished``: status ``failed``, error code and interruption ``gateway_restarted``.
  It renders no bytes (projections/wire.py): the client's connection died with the process,
  and ``render_stream`` leaves out the frames of the whole recovery append (the items it
  closes), so ``replay stream`` shows what the client got before the crash.
* The model call in flight is settled by the book's own ``settle`` (gateway/billing/book.py)
  at the price version in force when the request was accepted: charged the documented
  estimate of its emitted usage (``emitted_usage_estimate``, the interrupted run's formula;
  always marked estimated, since a provider's report died with the process), or voided when
  the response has no output item at all, as a failure before output is. Its holds are
  released either way. ``store: false`` responses recorded no text, so their output is
  estimated as one token per recorded delta (the pipeline records no empty delta), input 0.

Then ``gateway.started`` records when the process started, whether recovery ran, and what it
recovered. A response is recovered wholly or not at all (one append), and a recovered one is
finished, so the next start recovers nothing twice. Recovery assumes this process is the only
writer of the ledger: ``[ledger] recover_in_flight`` turns it off for replicas sharing a store.

Cancellation: a start-up cancelled half-way (a signal) leaves the responses not reached yet
unrecovered; the next start recovers them.
"""

from __future__ import annotations

from typing import Any, Optional

from gateway.billing.book import Reservation
from gateway.billing.estimate import emitted_usage_estimate
from gateway.conversation import messages_from_items
from gateway.mcp.client import CONNECTION_FAILED
from gateway.providers.base import ModelCall
from gateway.request_input import new_id
from gateway.services import Services
from gateway.unstored import withheld
from ledger.errors import ConcurrencyConflict
from ledger.events import (
    ArgumentsDelta,
    ErrorInfo,
    GatewayStarted,
    ItemFinished,
    ItemStarted,
    McpApprovalRequested,
    McpCallFinished,
    McpCallStarted,
    McpToolsListed,
    PricesPublished,
    ResponseAccepted,
    ResponseFinished,
    TextDelta,
    Usage,
    UsageCharged,
)
from ledger.store import NewEvent, Recorded
from projections.chat_wire import is_chat
from projections.pricing import PRICES_STREAM, compute_cost_micros
from projections.responses import response_stream
from projections.wire import GATEWAY_RESTARTED, ResponseView

GATEWAY_STREAM = "gateway"
RESTARTED_MESSAGE = ("The gateway restarted while this response was in progress; it was ended here and billed "
                     "for the output recorded before the restart.")
MCP_RESTARTED_MESSAGE = "The gateway restarted while this MCP request was running; its outcome is unknown."


async def recover_at_start(services: Services) -> list[str]:
    """Finish every accepted, unfinished response (when ``[ledger] recover_in_flight``), then
    record ``gateway.started``; return the ids recovered, in ledger order."""
    position = await services.runner.catch_up()
    recovered: list[str] = []
    if services.config.ledger.recover_in_flight:
        unfinished = [view.response_id for view in services.responses.views.values() if not view.finished]
        prices = [(r.position, r.event) for r in await services.store.read_stream(PRICES_STREAM)
                  if isinstance(r.event, PricesPublished)] if unfinished else []
        for response_id in unfinished:
            if await _recover(services, response_id, prices):
                recovered.append(response_id)
    instance_id = new_id("gw")
    started = GatewayStarted(instance_id, services.config.ledger.recover_in_flight, recovered, position)
    [record] = await services.store.append([NewEvent(GATEWAY_STREAM, started, f"{instance_id}.started")])
    await services.runner.wait_for(record.position)
    return recovered


async def _recover(services: Services, response_id: str, prices: list[tuple[int, PricesPublished]]) -> bool:
    """One response's recovery append; False when it finished meanwhile (another writer)."""
    stream = response_stream(response_id)
    records = await services.store.read_stream(stream)
    if not records or not isinstance(records[0].event, ResponseAccepted) \
            or any(isinstance(r.event, ResponseFinished) for r in records):
        return False
    state = _InFlight(records)
    usage, active = state.turn_usage(services)
    counted = [c.usage for c in state.charges] + ([usage] if active else [])  # as ResponseRun._total
    total = Usage(sum(u.input_tokens for u in counted), sum(u.cached_input_tokens for u in counted),
                  sum(u.output_tokens for u in counted), sum(u.reasoning_tokens for u in counted))
    estimated = active or any(c.token_count_method == "estimated" for c in state.charges)
    finished = ResponseFinished(response_id, "failed", total, estimated, error=ErrorInfo(GATEWAY_RESTARTED,
                                RESTARTED_MESSAGE), interruption=GATEWAY_RESTARTED)
    events = [*state.closing_events(), finished]
    if not state.accepted.params.get("store", True):
        events = [withheld(event) for event in events]
    version = records[-1].version
    batch = [NewEvent(stream, event, f"{response_id}.{version + i + 1}", version + i) for i, event in enumerate(events)]
    money = _settle(services, state, usage, prices) if active else []
    try:
        appended = await services.store.append([*batch, *money])
    except ConcurrencyConflict:
        services.book.abandon(money)
        return False
    await services.runner.wait_for(appended[-1].position)
    return True


def _settle(services: Services, state: "_InFlight", usage: Usage,
            prices: list[tuple[int, PricesPublished]]) -> list[NewEvent]:
    """The book's settlement of the model call in flight: charge the estimate, or void; release its holds."""
    accepted = state.accepted
    in_force = [version for position, version in prices if position < state.records[0].position]
    version = in_force[-1] if in_force else None
    model_prices = version.models.get(accepted.model) if version is not None else None
    holds = {}
    wallet = services.money.wallets.get(accepted.platform_id)
    budget = services.money.budget(accepted.end_user_id)
    for account, kept in (("wallet", wallet), ("budget", budget)):
        hold = kept.holds.get(accepted.response_id) if kept is not None else None
        if hold is not None:
            holds[account] = hold.amount_micros
    if not holds and (not services.config.billing.enabled or compute_cost_micros(usage, model_prices)):
        return []  # no hold for this call (billing was off when it ran, or it never reserved): nothing to settle
    # Holds are settled even if billing is off now: they were taken when it was on, and must end.
    now = services.book.clock()
    turn_s = (state.records[-1].recorded_at - state.records[state.turn_start - 1].recorded_at) / 1_000_000
    reservation = Reservation(
        reservation_id=accepted.response_id, platform_id=accepted.platform_id, end_user_id=accepted.end_user_id,
        model=accepted.model, provider=accepted.provider,
        request_type="chat.completion" if is_chat(accepted) else "response", prices=model_prices,
        price_version_id=version.version_id if version else "", price_sha256=version.sha256 if version else "",
        holds=holds, started_at=now - turn_s)  # latency: the call's recorded life, not the downtime
    charge = state.items_started > 0
    return services.book.settle(reservation, response_stream(accepted.response_id), usage, True,
                                "interrupted" if charge else "failed", charge, len(state.charges) + 1)


class _InFlight:
    """What a response's records say about where it stopped."""

    def __init__(self, records: list[Recorded]) -> None:
        self.records = records
        self.accepted: ResponseAccepted = records[0].event
        self.charges: list[UsageCharged] = []
        self.turn_start = 1  # index of the first record of the model call in flight
        self.items_started = 0
        self.started: dict[int, Recorded] = {}  # open item index -> its item.started record
        self.listed: set[int] = set()
        self.calls: dict[int, Recorded] = {}  # mcp_call index -> mcp.call_started record, while running
        for i, recorded in enumerate(records[1:], 1):
            event = recorded.event
            if isinstance(event, ItemStarted):
                self.started[event.output_index] = recorded
                self.items_started += 1
            elif isinstance(event, McpApprovalRequested):
                self.items_started += 1
            elif isinstance(event, ItemFinished):
                self.started.pop(event.output_index, None)
            elif isinstance(event, McpToolsListed):
                self.listed.add(event.output_index)
            elif isinstance(event, McpCallStarted):
                self.calls[event.output_index] = recorded
            elif isinstance(event, McpCallFinished):
                self.calls.pop(event.output_index, None)
            elif isinstance(event, UsageCharged):
                self.charges.append(event)
                self.turn_start = i + 1

    def turn_usage(self, services: Services) -> tuple[Usage, bool]:
        """The estimate of the model call in flight, and whether one was in flight at all.

        One was unless the last call settled and no later call emitted anything (a crash
        while MCP tools ran: the next call had not reserved yet).
        """
        deltas = [r.event for r in self.records[self.turn_start:] if isinstance(r.event, (TextDelta, ArgumentsDelta))]
        active = self.turn_start == 1 or bool(deltas) or self._holds_open(services)
        if not self.accepted.params.get("store", True):
            return Usage(output_tokens=len(deltas)), active
        output_chars = sum(len(d.delta) for d in deltas)
        return emitted_usage_estimate(self._call(services), output_chars), active

    def _holds_open(self, services: Services) -> bool:
        rid, accepted = self.accepted.response_id, self.accepted
        wallet = services.money.wallets.get(accepted.platform_id)
        budget = services.money.budget(accepted.end_user_id)
        return any(account is not None and rid in account.holds for account in (wallet, budget))

    def _call(self, services: Services) -> ModelCall:
        """The model call in flight as far as the estimate reads it: instructions and messages."""
        params, accepted = self.accepted.params, self.accepted
        context: list[dict[str, Any]] = []
        parent: Optional[ResponseView] = None
        if params.get("previous_response_id"):
            parent = services.responses.views.get(params["previous_response_id"])
        elif params.get("thread_id"):  # the thread's latest completed turn before this one was accepted
            done = [v for v in services.responses.thread(accepted.platform_id, params["thread_id"],
                                                         accepted.end_user_id)
                    if v.status == "completed" and v.last_position < self.records[0].position]
            parent = done[-1] if done else None
        if parent is not None:
            context = services.responses.context_items(parent)
        output: list[dict[str, Any]] = []
        if self.turn_start > 1:  # a later call of an MCP loop sees this response's items so far
            view, _ = ResponseView.start(self.records[0], render=False)
            for recorded in self.records[1:self.turn_start]:
                view.apply(recorded, render=False)
            output = view.items
        messages = messages_from_items([*context, *accepted.input_items, *output])
        return ModelCall(model=accepted.model, messages=messages, instructions=params.get("instructions"))

    def closing_events(self) -> list[Any]:
        """Events that end the MCP work in flight and finish every open item, in index order."""
        rid = self.accepted.response_id
        last_at = self.records[-1].recorded_at
        events: list[Any] = []
        for index in sorted(set(self.started) | set(self.calls)):
            since = self.calls.get(index) or self.started[index]
            duration_ms = (last_at - since.recorded_at) // 1000  # what the ledger shows it ran, at least
            item = self.started[index].event.item if index in self.started else {}
            if item.get("type") == "mcp_list_tools" and index not in self.listed:
                events += [McpToolsListed(rid, index, item.get("server_label", ""), [], duration_ms,
                                          MCP_RESTARTED_MESSAGE), ItemFinished(rid, index, "completed")]
            elif index in self.calls:
                error = {"type": "mcp_protocol_error", "code": CONNECTION_FAILED, "message": MCP_RESTARTED_MESSAGE}
                events += [McpCallFinished(rid, index, duration_ms, error=error), ItemFinished(rid, index, "failed")]
            else:
                events.append(ItemFinished(rid, index, "incomplete"))
        return events

"""The hosted-MCP steps of a response run (gateway/pipeline.py drives them from ``frames()``).

``McpSteps`` is a mixin of ``ResponseRun``: its methods build the ledger events of each MCP
step and append them with the run's ``_append`` (write-ahead; the bytes they return are
what ``frames()`` yields), keeping the run's item bookkeeping (``_open``, ``_mcp_open``,
``_items_started``). The decisions themselves are gateway/mcp/loop.py's.

Cancellation: ``_finish_calls`` runs the MCP calls in one await; cancelled there, the calls
are abandoned and the run's ``finally`` records the response as interrupted.
"""

from __future__ import annotations

from typing import Any

from gateway.billing.run import ACCEPT_ATTEMPTS_MAX, busy
from gateway.mcp.loop import PendingCall, Plan
from gateway.request_input import new_id
from ledger.errors import ConcurrencyConflict
from ledger.events import (
    ArgumentsDelta,
    ErrorInfo,
    ItemFinished,
    ItemStarted,
    McpApprovalRequested,
    McpCallStarted,
    ResponseFinished,
)
from ledger.store import NewEvent


class McpSteps:
    """MCP steps of ``ResponseRun`` (see the module docstring)."""

    def _tool_choice(self: Any) -> Any:
        """The request's tool_choice for providers; a forced choice holds only until MCP calls ran."""
        assert self.mcp is not None
        choice = self.request.tool_choice
        if isinstance(choice, dict) and choice.get("type") == "mcp":
            if self._mcp_acted or self.mcp.closed:
                return "auto"
            if not choice.get("name"):
                return "required"
            function = self.mcp.toolmap.for_pair(choice["server_label"], choice["name"])
            return {"type": "function", "name": function.function} if function is not None else "auto"
        if self._mcp_acted and (choice == "required" or isinstance(choice, dict)):
            return "auto"
        return choice

    async def _record_approvals(self: Any) -> bytes:
        """The client's answers to approval requests (not rendered: they are input, not output)."""
        assert self.mcp is not None
        events = self.mcp.approval_events({item["id"] for item in self.request.input_items})
        return await self._append(*events) if events else b""

    async def _finish_listings(self: Any, servers: list[Any], indexes: list[int], listings: dict[str, Any]) -> bytes:
        """Record each server's tools (or error); a failed listing fails the response."""
        assert self.mcp is not None
        events: list[Any] = []
        errors = []
        for server, index in zip(servers, indexes):
            listing = listings[server.label]
            listed = self.mcp.listed_events(index, server.label, listing)
            events += [*listed, ItemFinished(self.response_id, index, "completed")]
            self._open.remove(index)
            if listing.error is not None:
                errors.append(listed[0].error)
        if not errors:
            return await self._append(*events)
        usage, estimated = self._total()
        out = await self._append(
            *events,
            ResponseFinished(self.response_id, "failed", usage, estimated,
                             error=ErrorInfo("mcp_list_tools_failed", " ".join(errors))),
            extra=self._settle("failed"),
        )
        self.finished = True
        return out

    async def _start_approved(self: Any, calls: list[PendingCall]) -> bytes:
        """mcp_call items for calls the client approved, their arguments in one delta."""
        events: list[Any] = []
        for call in calls:
            index, item = self._new_item(call.item())
            call.output_index = index
            self._mcp_open.add(index)
            events += [ItemStarted(self.response_id, index, item), ArgumentsDelta(self.response_id, index, call.arguments)]
        return await self._append(*events)

    def _approval_requests(self: Any, calls: list[PendingCall]) -> list[Any]:
        events = []
        for call in calls:
            index = self._items_started
            self._items_started += 1
            events.append(McpApprovalRequested(self.response_id, index, new_id("mcpr"), call.function.server_label,
                                               call.function.tool, call.arguments))
        return events

    async def _start_calls(self: Any, calls: list[PendingCall], approvals: list[PendingCall],
                           turn_end: bool) -> tuple[bytes, list[Plan]]:
        """Decide and record the start of ``calls`` (with the end of the turn, when ``turn_end``):
        one atomic append with the turn's settlement and the MCP charges of the calls that run."""
        assert self.mcp is not None
        plans = self.mcp.plan(calls)
        self._mcp_acted = True
        events = [*self._take_buffer(), *(self._close_items("completed", mcp=False) if turn_end else []),
                  *self._approval_requests(approvals)]
        for plan in plans:
            call = plan.call
            events.append(McpCallStarted(self.response_id, call.output_index, call.function.server_label,
                                         call.function.tool, call.arguments, call.approval_request_id))
        money = self._settle("success") if turn_end else []
        for _ in range(ACCEPT_ATTEMPTS_MAX):
            charges: list[NewEvent] = []
            if self.billing is not None:
                runnable = [p for p in plans if p.runs]
                charges, refusals = self.billing.mcp_charges(
                    (p.call.output_index, p.call.item_id, p.call.function.server_label, p.call.function.tool)
                    for p in runnable)
                for plan, refused in zip(runnable, refusals):
                    if refused is not None:
                        plan.error = {"type": "mcp_tool_execution_error",
                                      "content": [{"type": "text", "text": f"Not run: {refused.message}"}]}
            try:
                return await self._append(*events, extra=[*money, *charges]), plans
            except ConcurrencyConflict as conflict:
                if self.billing is None or conflict.stream == self.stream:
                    raise
                self.billing.book.abandon(charges)
                await self.billing.catch_up()
        raise busy()

    async def _finish_calls(self: Any, plans: list[Plan]) -> bytes:
        """Run the calls that run (one await) and record every call's outcome."""
        assert self.mcp is not None
        runnable = [p for p in plans if p.runs]
        outcomes = await self.mcp.run(runnable) if runnable else {}
        events: list[Any] = []
        for plan in plans:
            index = plan.call.output_index
            finished = self.mcp.finished_events(plan, outcomes.get(plan.call.item_id) if plan.runs else None)
            events += [*finished, ItemFinished(self.response_id, index, "failed" if finished[0].error else "completed")]
            self._open.remove(index)
            self._mcp_open.discard(index)
        return await self._append(*events)

"""The bookkeeping of one response's MCP tool loop; ``gateway.pipeline`` drives it.

What it keeps: the request's servers, the tools already listed in the conversation (an
``mcp_list_tools`` item without error in the context or the input: that server is not
listed again), the functions offered to the model (``names.ToolMap``), the MCP calls of the
current model turn, and the limits. What it decides: which servers to list, whether a call
needs approval, and, at the end of a turn, which calls run and which are refused. It builds
the ledger events of those decisions; the pipeline appends them (write-ahead) and renders.

An ``mcp_list_tools`` item holds, as OpenAI's does, only the tools the request allowed then.
Its id ends with the server's ``listing_key()`` (redacted URL and ``allowed_tools``): an
item whose key differs from this request's server (another URL under the same label, or
another filter, wider or narrower) does not count, and the server is listed again. Items
whose id has no key (made elsewhere, or replayed from before keys) count by label alone.
An approved call runs only if this request still offers its tool (``allowed_tools`` may have
changed since the approval request); otherwise it is refused, with the reason in its item.

Limits (each hit is an ``McpLimitReached`` event; all but the last are visible in an item):
    max_tool_calls / mcp_calls_max   calls beyond the smaller are refused (error in the item)
    call_timeout_s                   a call (or listing) running longer fails with a timeout error
    time_budget_s                    from the response's start; later calls are refused, running
                                     ones (and listings) are cut at the budget's end, naming it
    output_chars_max                 tool output beyond it is cut, with a notice, before the
                                     model and the ledger see it
    tools_per_server_max             tools of one server beyond it are not offered (the item lists
                                     the tools offered; only the ledger says how many were not)
After a calls or time limit, the model's next turn is offered no MCP tools, so it answers.

Cancellation: ``list_servers`` and ``run`` are single awaits (McpClient sessions inside);
cancelling them abandons the calls in flight, and the pipeline records the response as
interrupted with those items incomplete.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Iterable, Optional

import attrs
import orjson
import trio

from gateway.config import McpConfig
from gateway.mcp.client import INVALID_PARAMS, REQUEST_TIMEOUT, CallOutcome, CallRequest, Listing, McpClient
from gateway.mcp.names import McpFunction, ToolMap, function_name
from gateway.mcp.spec import McpServer
from gateway.request_input import new_id
from ledger.events import McpApprovalResponded, McpCallFinished, McpLimitReached, McpToolsListed

LISTING_ID = re.compile(r"^mcpl_[0-9a-f]+_([0-9a-f]{12})$")  # the id of a listing item, with its listing key


@attrs.define
class PendingCall:
    """An MCP call the model made (or the client approved) in this response."""

    function: McpFunction
    item_id: str
    output_index: Optional[int] = None  # None while it waits for approval (no mcp_call item)
    arguments: str = ""
    approval_request_id: Optional[str] = None
    needs_approval: bool = False
    refusal: Optional[dict[str, Any]] = None  # the error of an approved call this request may not run

    def item(self) -> dict[str, Any]:
        """The mcp_call item as it starts (output_item.added)."""
        return {"id": self.item_id, "type": "mcp_call", "status": "in_progress", "server_label":
                self.function.server_label, "name": self.function.tool, "arguments": "", "output": None,
                "error": None, "approval_request_id": self.approval_request_id}


@attrs.define
class Plan:
    """What happens to one call at the end of a turn: it runs, or is refused with ``error``."""

    call: PendingCall
    arguments: dict[str, Any] = attrs.Factory(dict)
    error: Optional[dict[str, Any]] = None
    limit: Optional[str] = None
    timeout_s: float = 0.0
    budget_bound: bool = False  # the time budget, not call_timeout_s, set this call's deadline

    @property
    def runs(self) -> bool:
        return self.error is None


class McpLoop:
    """The MCP state of one response (see the module docstring)."""

    def __init__(self, response_id: str, servers: Iterable[McpServer], history: Iterable[dict[str, Any]],
                 config: McpConfig, max_tool_calls: Optional[int], client: McpClient, reserved_names: Iterable[str],
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.response_id = response_id
        self.servers = {server.label: server for server in servers}
        self.config = config
        self.client = client
        self.clock = clock
        self.started_at = clock()
        self.toolmap = ToolMap(reserved_names)
        self.calls_run = 0
        self.closed: Optional[str] = None  # the limit that closed MCP tools for the rest of the response
        self.turn: dict[int, PendingCall] = {}  # provider's tool-call index -> call, this turn
        self.approvals: list[tuple[dict[str, Any], dict[str, Any]]] = []  # (request item, response item)
        if max_tool_calls is not None and max_tool_calls < config.mcp_calls_max:
            self.calls_max, self.calls_limit = max_tool_calls, "max_tool_calls"
        else:
            self.calls_max, self.calls_limit = config.mcp_calls_max, "mcp_calls_max"
        self.listed: set[str] = set()
        self.listing_limit = "call_timeout_s"  # the limit that bounds this response's listings
        self.listing_timeout_s = config.call_timeout_s
        requests: dict[str, dict[str, Any]] = {}
        for item in history:
            kind = item["type"]
            if kind == "mcp_list_tools" and not item.get("error") and self._current(item):
                self._offer(item["server_label"], item.get("tools") or [])
            elif kind == "mcp_approval_request":
                requests[item["id"]] = item
            elif kind == "mcp_approval_response" and item["approval_request_id"] in requests:
                self.approvals.append((requests[item["approval_request_id"]], item))

    def name_of(self, label: str, tool: str) -> str:
        """The function name the model knows tool ``tool`` of server ``label`` by."""
        function = self.toolmap.for_pair(label, tool)
        return function.function if function is not None else function_name(label, tool)

    # --- listing -----------------------------------------------------------------------------

    def _current(self, item: dict[str, Any]) -> bool:
        """Whether a listing item of the conversation lists this request's server as it is now."""
        server = self.servers.get(item["server_label"])
        if server is None:
            return False
        keyed = LISTING_ID.match(item.get("id") or "")
        return keyed is None or keyed.group(1) == server.listing_key()

    def _offer(self, label: str, tools: list[dict[str, Any]]) -> list[dict[str, Any]]:
        server = self.servers[label]
        kept = [t for t in tools if server.allows(t["name"], t.get("annotations"))][: self.config.tools_per_server_max]
        for tool in kept:
            self.toolmap.add(label, tool, server.description)
        self.listed.add(label)
        return kept

    def servers_to_list(self) -> list[McpServer]:
        """Servers of this request with no tool list in the conversation yet."""
        return [server for label, server in self.servers.items() if label not in self.listed]

    @staticmethod
    def listing_item(server: McpServer) -> dict[str, Any]:
        """The item as it starts; its id ends with the server's listing key (see the module docstring)."""
        return {"id": f"{new_id('mcpl')}_{server.listing_key()}", "type": "mcp_list_tools",
                "server_label": server.label, "tools": [], "error": None}

    def _remaining_s(self) -> float:
        return self.started_at + self.config.time_budget_s - self.clock()

    async def list_servers(self, servers: list[McpServer]) -> dict[str, Listing]:
        """List every server's tools, concurrently, in one await."""
        remaining = self._remaining_s()
        timeout_s = max(0.0, min(self.config.call_timeout_s, remaining))
        self.listing_limit = "time_budget_s" if remaining < self.config.call_timeout_s else "call_timeout_s"
        self.listing_timeout_s = timeout_s
        listings: dict[str, Listing] = {}

        async def one(server: McpServer) -> None:
            listings[server.label] = await self.client.list_tools(server, timeout_s)

        async with trio.open_nursery() as nursery:
            for server in servers:
                nursery.start_soon(one, server)
        return listings

    def listed_events(self, output_index: int, label: str, listing: Listing) -> list[Any]:
        """McpToolsListed for one server (tools the request allows), and a limit event if one was hit."""
        if listing.error is not None:
            error, limit = listing.error, self.listing_limit
            if listing.timed_out:
                error = (f"Listing tools timed out after {round(self.listing_timeout_s, 1):g} s "
                         f"({limit}: {self.limit_value(limit)}).")
            events: list[Any] = [McpToolsListed(self.response_id, output_index, label, [], listing.duration_ms,
                                                f"Error retrieving tool list from MCP server '{label}': {error}")]
            if listing.timed_out:
                events.append(McpLimitReached(self.response_id, limit, self.limit_value(limit), output_index,
                                              "listing tools"))
            return events
        allowed = [t for t in listing.tools if self.servers[label].allows(t["name"], t.get("annotations"))]
        kept = self._offer(label, listing.tools)
        events = [McpToolsListed(self.response_id, output_index, label, kept, listing.duration_ms)]
        if len(allowed) > len(kept):
            events.append(McpLimitReached(self.response_id, "tools_per_server_max", self.config.tools_per_server_max,
                                          output_index, f"{len(allowed) - len(kept)} tools of '{label}' not offered"))
        return events

    # --- approvals ---------------------------------------------------------------------------

    def approval_events(self, input_ids: set[str]) -> list[McpApprovalResponded]:
        """One event per approval response of this request's input."""
        return [McpApprovalResponded(self.response_id, request["id"], response["approve"], request["server_label"],
                                     request["name"], response.get("reason"))
                for request, response in self.approvals if response["id"] in input_ids]

    def approved_calls(self, input_ids: set[str]) -> list[PendingCall]:
        """Calls this request's input approved: they run before the model's first turn."""
        calls = []
        for request, response in self.approvals:
            if response["id"] not in input_ids or not response["approve"]:
                continue
            label, name = request["server_label"], request["name"]
            function = self.toolmap.for_pair(label, name)
            refusal = None
            if function is None:  # allowed_tools (or the server's tools) changed since the request
                function = McpFunction(name, label, name, None, {}, None)
                refusal = {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text":
                           f"Not run: tool {name!r} of MCP server {label!r} is not among the tools this request "
                           "offers (allowed_tools), so the approval cannot be used."}]}
            calls.append(PendingCall(function, new_id("mcp"), arguments=request["arguments"],
                                     approval_request_id=request["id"], refusal=refusal))
        return calls

    # --- one model turn ----------------------------------------------------------------------

    def definitions(self) -> list[dict[str, Any]]:
        """The MCP functions offered to the model in the next turn (none once a limit closed them)."""
        return [] if self.closed else [f.definition() for f in self.toolmap.functions()]

    def start_call(self, provider_index: int, function_name: str) -> Optional[PendingCall]:
        """The call if ``function_name`` is an MCP tool (else None: a client function call)."""
        function = self.toolmap.lookup(function_name)
        if function is None:
            return None
        server = self.servers[function.server_label]
        needs_approval = not self.closed and server.needs_approval(function.tool, function.annotations)
        call = PendingCall(function, new_id("mcp"), needs_approval=needs_approval)
        self.turn[provider_index] = call
        return call

    def take_turn(self) -> list[PendingCall]:
        """This turn's calls in the order the model made them; the turn starts afresh."""
        calls = list(self.turn.values())
        self.turn = {}
        return calls

    def plan(self, calls: list[PendingCall]) -> list[Plan]:
        """Decide, in order, which calls run (arguments, calls limit, time budget)."""
        plans = []
        for call in calls:
            plan = Plan(call)
            remaining = self._remaining_s()
            try:
                parsed = orjson.loads(call.arguments or "{}")
            except orjson.JSONDecodeError:
                parsed = None
            if call.refusal is not None:
                plan.error = call.refusal
            elif not isinstance(parsed, dict):
                plan.error = {"type": "mcp_protocol_error", "code": INVALID_PARAMS,
                              "message": "Invalid params: the arguments are not a JSON object."}
            elif self.closed is not None or self.calls_run >= self.calls_max or remaining <= 0:
                limit = self.closed or (self.calls_limit if self.calls_run >= self.calls_max else "time_budget_s")
                self.closed = self.closed or limit
                plan.limit = limit
                plan.error = {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text":
                              f"Not run: this response reached its {limit} limit ({self.limit_value(limit)})."}]}
            else:
                plan.arguments = parsed
                plan.timeout_s = min(self.config.call_timeout_s, remaining)
                plan.budget_bound = remaining < self.config.call_timeout_s
                self.calls_run += 1
            plans.append(plan)
        return plans

    def limit_value(self, limit: str) -> int:
        if limit in ("max_tool_calls", "mcp_calls_max"):
            return self.calls_max
        if limit == "time_budget_s":
            return math.ceil(self.config.time_budget_s)
        return math.ceil(self.config.call_timeout_s)

    async def run(self, plans: list[Plan]) -> dict[str, CallOutcome]:
        """Run the plans that run, grouped by server (one session each), concurrently: one await."""
        by_server: dict[str, list[CallRequest]] = {}
        for plan in plans:
            if plan.runs:
                by_server.setdefault(plan.call.function.server_label, []).append(
                    CallRequest(plan.call.item_id, plan.call.function.tool, plan.arguments, plan.timeout_s))
        outcomes: dict[str, CallOutcome] = {}

        async def one(label: str, requests: list[CallRequest]) -> None:
            outcomes.update(await self.client.call_tools(self.servers[label], requests))

        async with trio.open_nursery() as nursery:
            for label, requests in by_server.items():
                nursery.start_soon(one, label, requests)
        return outcomes

    def finished_events(self, plan: Plan, outcome: Optional[CallOutcome]) -> list[Any]:
        """McpCallFinished for one planned call (and McpLimitReached for a limit it hit)."""
        index = plan.call.output_index
        assert index is not None
        if outcome is None:  # refused before running
            events: list[Any] = [McpCallFinished(self.response_id, index, 0, error=plan.error, limit=plan.limit)]
            if plan.limit:
                events.append(McpLimitReached(self.response_id, plan.limit, self.limit_value(plan.limit), index,
                                              f"call to {plan.call.function.tool!r} not run"))
            return events
        server = self.servers[plan.call.function.server_label]
        limit = None
        output, error, chars = outcome.output, outcome.error, 0
        if outcome.timed_out:
            limit = "time_budget_s" if plan.budget_bound else "call_timeout_s"
            if limit == "time_budget_s":
                self.closed = self.closed or limit
            error = {"type": "mcp_protocol_error", "code": REQUEST_TIMEOUT, "message": f"The tool call timed out "
                     f"after {round(plan.timeout_s, 1):g} s ({limit}: {self.limit_value(limit)})."}
        if output is not None:
            output = server.scrub(output)
            chars = len(output)
            if chars > self.config.output_chars_max:
                output = output[: self.config.output_chars_max] + (
                    f"\n[output truncated: {self.config.output_chars_max} of {chars} characters]")
                limit = limit or "output_chars_max"
        if error is not None:  # the item carries the error; an execution error's text is its content
            if error.get("type") == "mcp_tool_execution_error":
                error = {"type": "mcp_tool_execution_error", "content": [{"type": "text", "text": output or ""}]}
            output = None
        events = [McpCallFinished(self.response_id, index, outcome.duration_ms, output=output, error=error,
                                  output_chars=chars, limit=limit)]
        if limit:
            value = self.config.output_chars_max if limit == "output_chars_max" else self.limit_value(limit)
            events.append(McpLimitReached(self.response_id, limit, value, index,
                                          f"call to {plan.call.function.tool!r}"))
        return events


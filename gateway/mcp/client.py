"""Talking to MCP servers with the official SDK (mcp 2.x, streamable HTTP) under trio.

Each operation is one ``await`` that opens a session, does its work and closes it:
``list_tools`` (initialize, then tools/list page by page) and ``call_tools`` (initialize,
then several tools/call concurrently, each with its own deadline). The SDK's anyio task
groups are entered and exited inside that await, never across a ``yield`` of the response
generator (stack-notes §1 and §3); the price is one session setup (~57 ms on loopback) per
operation. Headers and the bearer token go on the httpx2 client the SDK is given; servers
that are not allowlisted are reached only through ``policy.guarded_transport``.

Failures never escape as exceptions. A listing gives an error string; a call gives a
``CallOutcome`` whose ``error`` is the MCP error object of the Responses API:

    {"type": "mcp_tool_execution_error", "content": [...]}  the tool ran and reported an error
    {"type": "mcp_protocol_error", "code", "message"}        a JSON-RPC error; a timeout is -32001,
                                                              a failed connection -32000
    {"type": "http_error", "code", "message"}                the server answered an HTTP error

Every message passes through the server's ``scrub`` first, so no secret is recorded.

Cancellation: cancelling an operation cancels its session (the SDK closes its HTTP
streams); nothing outlives the await. Deadlines are the caller's, per call.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from types import SimpleNamespace
from typing import Any, AsyncIterator, Iterable, Optional

import attrs
import httpx2
import orjson
import trio
# The mcp SDK is imported on first use, in a worker thread and before any MCP timeout starts:
# importing it costs about 0.8 s, which every gateway start (and every CLI call) would otherwise
# pay, MCP tools or not, and which must neither block the event loop nor eat a call's time budget.
_sdk: Optional[SimpleNamespace] = None


def _import_sdk() -> SimpleNamespace:
    from mcp import ClientSession, MCPError
    from mcp.client.streamable_http import streamable_http_client
    from mcp.types import PaginatedRequestParams

    return SimpleNamespace(ClientSession=ClientSession, MCPError=MCPError, PaginatedRequestParams=PaginatedRequestParams,
                           streamable_http_client=streamable_http_client)


async def load_sdk() -> SimpleNamespace:
    """The mcp SDK's entry points, imported once (in a thread; cancellation waits for the import)."""
    global _sdk
    if _sdk is None:
        _sdk = await trio.to_thread.run_sync(_import_sdk)
    return _sdk

from gateway.mcp.policy import Origin, guarded_transport, is_allowlisted
from gateway.mcp.spec import McpServer

LIST_PAGES_MAX = 20  # tools/list pages read from one server
TOOLS_READ_MAX = 1_000  # tools read from one server (the request's filters apply after)
TOOLS_JSON_BYTES_MAX = 1_000_000  # of the tools kept from one listing (names, descriptions, schemas)
MESSAGE_CHARS_MAX = 500  # of an error message
CONNECTION_FAILED = -32000
REQUEST_TIMEOUT = -32001
INVALID_PARAMS = -32602


@attrs.frozen
class CallRequest:
    """One tools/call to make: ``key`` identifies it to the caller."""

    key: Any
    name: str
    arguments: dict[str, Any]
    timeout_s: float


@attrs.frozen
class CallOutcome:
    """What one call gave: ``output`` text or an ``error`` object; ``timed_out`` when its deadline passed."""

    duration_ms: int
    output: Optional[str] = None
    error: Optional[dict[str, Any]] = None
    timed_out: bool = False


@attrs.frozen
class Listing:
    tools: list[dict[str, Any]]
    duration_ms: int
    error: Optional[str] = None
    timed_out: bool = False


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def error_object(exc: BaseException, statuses: list[int], server: McpServer) -> dict[str, Any]:
    """The MCP error object for a failed operation (HTTP status first, then the SDK's exception)."""
    if statuses:
        status = statuses[-1]
        return {"type": "http_error", "code": status, "message": f"The MCP server answered HTTP {status}."}
    leaves = _leaves(exc)
    for leaf in leaves:
        if _sdk is not None and isinstance(leaf, _sdk.MCPError):
            return {"type": "mcp_protocol_error", "code": leaf.code, "message": _clean(leaf.message, server)}
    for leaf in leaves:
        if isinstance(leaf, httpx2.TimeoutException):
            return {"type": "mcp_protocol_error", "code": REQUEST_TIMEOUT,
                    "message": _clean(f"The MCP server timed out: {leaf}", server)}
        if isinstance(leaf, httpx2.TransportError):
            return {"type": "mcp_protocol_error", "code": CONNECTION_FAILED,
                    "message": _clean(f"Could not reach the MCP server: {leaf}", server)}
    leaf = leaves[0]
    return {"type": "mcp_protocol_error", "code": CONNECTION_FAILED,
            "message": _clean(f"{type(leaf).__name__}: {leaf}", server)}


def _clean(message: str, server: McpServer) -> str:
    message = server.scrub(str(message))
    return message if len(message) <= MESSAGE_CHARS_MAX else message[:MESSAGE_CHARS_MAX] + "…"


def _block(block: Any) -> dict[str, Any]:
    return block.model_dump(mode="json", by_alias=True, exclude_none=True)


def result_text(result: Any) -> str:
    """A tools/call result as text for the model: text blocks joined, other blocks as JSON."""
    parts = []
    for block in result.content or []:
        parts.append(block.text if getattr(block, "type", None) == "text" else orjson.dumps(_block(block)).decode())
    if not parts and result.structured_content is not None:
        parts.append(orjson.dumps(result.structured_content).decode())
    return "\n".join(parts)


class McpClient:
    """MCP operations for the gateway; holds only the allowlist (no connections between operations)."""

    def __init__(self, allowlist: Iterable[Origin]) -> None:
        self.allowlist = tuple(allowlist)

    @asynccontextmanager
    async def _session(self, server: McpServer, timeout_s: float, statuses: list[int]) -> AsyncIterator[Any]:
        sdk = await load_sdk()  # already loaded by the public methods, before their timers start
        ClientSession, streamable_http_client = sdk.ClientSession, sdk.streamable_http_client

        async def on_response(response: httpx2.Response) -> None:
            if response.status_code >= 400 and response.request.method == "POST":
                statuses.append(response.status_code)

        transport = None if is_allowlisted(server.url, self.allowlist) else guarded_transport()
        client = httpx2.AsyncClient(headers=server.http_headers(), timeout=httpx2.Timeout(timeout_s),
                                    transport=transport, trust_env=False, event_hooks={"response": [on_response]})
        async with client, streamable_http_client(server.url, http_client=client) as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                yield session

    async def list_tools(self, server: McpServer, timeout_s: float) -> Listing:
        """Every tool of ``server`` (``{"name", "description", "input_schema", "annotations"}``)."""
        await load_sdk()
        start = trio.current_time()
        statuses: list[int] = []
        tools: list[dict[str, Any]] = []
        error: Optional[str] = None
        with trio.move_on_after(timeout_s) as scope:
            try:
                async with self._session(server, timeout_s, statuses) as session:
                    cursor, size = None, 0
                    for _ in range(LIST_PAGES_MAX):
                        params = _sdk.PaginatedRequestParams(cursor=cursor) if cursor else None
                        page = await session.list_tools(params=params)
                        for tool in page.tools[: TOOLS_READ_MAX - len(tools)]:
                            entry = {"name": tool.name, "description": tool.description,
                                     "input_schema": tool.input_schema,
                                     "annotations": _block(tool.annotations) if tool.annotations else None}
                            size += len(orjson.dumps(entry))
                            if size > TOOLS_JSON_BYTES_MAX:
                                break
                            tools.append(entry)
                        cursor = page.next_cursor
                        if not cursor or len(tools) >= TOOLS_READ_MAX or size > TOOLS_JSON_BYTES_MAX:
                            break
            except Exception as exc:  # noqa: BLE001 - every failure becomes the item's error
                problem = error_object(exc, statuses, server)
                error = f"{problem['message']}" + (f" (code {problem['code']})" if problem["type"] != "http_error" else "")
        duration_ms = int((trio.current_time() - start) * 1000)
        if scope.cancelled_caught:
            return Listing([], duration_ms, f"Listing tools timed out after {timeout_s:g} s.", timed_out=True)
        if error is not None:
            return Listing([], duration_ms, error)
        return Listing(tools, duration_ms)

    async def call_tools(self, server: McpServer, calls: list[CallRequest]) -> dict[Any, CallOutcome]:
        """Run ``calls`` on one session, concurrently; each call's timeout counts from now."""
        await load_sdk()
        start = trio.current_time()
        statuses: list[int] = []
        outcomes: dict[Any, CallOutcome] = {}

        def elapsed_ms() -> int:
            return int((trio.current_time() - start) * 1000)

        async def one(session: Any, call: CallRequest) -> None:
            with trio.move_on_at(start + call.timeout_s) as scope:
                try:
                    result = await session.call_tool(call.name, call.arguments)
                except Exception as exc:  # noqa: BLE001 - reported to the model as the call's error
                    outcomes[call.key] = CallOutcome(elapsed_ms(), error=error_object(exc, statuses, server))
                    return
                if result.is_error:
                    content = [_block(b) for b in result.content or []]
                    outcomes[call.key] = CallOutcome(elapsed_ms(), output=result_text(result),
                                                     error={"type": "mcp_tool_execution_error", "content": content})
                else:
                    outcomes[call.key] = CallOutcome(elapsed_ms(), output=result_text(result))
            if scope.cancelled_caught:
                outcomes[call.key] = timed_out(call)

        def timed_out(call: CallRequest) -> CallOutcome:
            return CallOutcome(elapsed_ms(), error={"type": "mcp_protocol_error", "code": REQUEST_TIMEOUT,
                                                    "message": f"The tool call timed out after {call.timeout_s:g} s."},
                               timed_out=True)

        deadline = start + max(call.timeout_s for call in calls)
        with trio.move_on_at(deadline):
            try:
                async with self._session(server, deadline - start, statuses) as session:
                    async with trio.open_nursery() as nursery:
                        for call in calls:
                            nursery.start_soon(one, session, call)
            except Exception as exc:  # noqa: BLE001 - the session failed: every call not done shares the error
                problem = error_object(exc, statuses, server)
                for call in calls:
                    outcomes.setdefault(call.key, CallOutcome(elapsed_ms(), error=problem))
        for call in calls:
            if call.key not in outcomes:
                outcomes[call.key] = timed_out(call)
        return outcomes

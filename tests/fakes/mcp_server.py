"""A real MCP server for tests: the official SDK's ``MCPServer`` over streamable HTTP, on loopback.

``with McpTestServer() as server:`` runs it with uvicorn in a daemon thread on a free port
and stops it on exit (uvicorn's ``should_exit``; open calls get ``GRACEFUL_S`` to end).
``server.url`` is the MCP endpoint; ``server.denied_url`` answers every request 401;
``server.headers`` lists the headers of every HTTP request the server got (lower-case names).

Tools: ``add`` (read-only: two integers), ``echo``, ``fail`` (raises ToolError: an execution
error), ``protocol_error`` (raises MCPError: a JSON-RPC error), ``slow`` (sleeps), ``big``
(returns ``chars`` characters).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any, Optional

import uvicorn
from mcp import MCPError
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

START_TIMEOUT_S = 10
GRACEFUL_S = 1


def build_server() -> MCPServer:
    server = MCPServer("assistiv-tests")

    @server.tool(annotations=ToolAnnotations(read_only_hint=True))
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def echo(text: str) -> str:
        """Return the text unchanged."""
        return text

    @server.tool()
    def fail(reason: str) -> str:
        """Always fails with the given reason."""
        raise ToolError(f"failed on purpose: {reason}")

    @server.tool()
    def protocol_error() -> str:
        """Answers with a JSON-RPC error instead of a result."""
        raise MCPError(-32050, "the tool refused at the protocol level")

    @server.tool()
    async def slow(seconds: float) -> str:
        """Sleep, then answer."""
        await asyncio.sleep(seconds)
        return f"slept {seconds} s"

    @server.tool()
    def big(chars: int) -> str:
        """Return this many characters."""
        return "x" * chars

    return server


class McpTestServer:
    """The test MCP server on 127.0.0.1 (see the module docstring)."""

    def __init__(self) -> None:
        self.headers: list[dict[str, str]] = []
        self._mcp_app: Any = None
        self._server: Optional[uvicorn.Server] = None
        self._thread: Optional[threading.Thread] = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/mcp"

    @property
    def denied_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/denied/mcp"

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.headers.append({k.decode().lower(): v.decode() for k, v in scope["headers"]})
            if scope["path"].startswith("/denied"):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json")]})
                await send({"type": "http.response.body", "body": b'{"error": "unauthorized"}'})
                return
        await self._mcp_app(scope, receive, send)

    def _run(self) -> None:
        # Built in the server's own thread: anyio picks the async library of the thread that
        # creates its locks, and the test calling us may be running trio.
        self._mcp_app = build_server().streamable_http_app()
        config = uvicorn.Config(self._app, host="127.0.0.1", port=0, log_level="critical", lifespan="on",
                                interface="asgi3", timeout_graceful_shutdown=GRACEFUL_S)
        self._server = uvicorn.Server(config)
        self._server.run()

    def __enter__(self) -> "McpTestServer":
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while self._server is None or not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the test MCP server did not start")
            time.sleep(0.02)
        self.port = self._server.servers[0].sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(GRACEFUL_S + 5)

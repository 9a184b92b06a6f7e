"""The stack the MCP tests run on: a real MCP server, a fake model that calls its tools, a gateway.

``mcp_stack(tmp_path_factory, mcp=..., models=...)`` starts the test MCP server
(tests/fakes/mcp_server.py), the fake model upstream (tests/fakes/mcp_model.py, an OpenAI
Chat Completions server) and ``assistiv serve`` configured for both, with ``[mcp]`` set by
the caller (the allowlist always names loopback). Everything stops when the context ends.
``silent_server()`` gives the URL of a server that never answers (for timeouts).
"""

from __future__ import annotations

import socket
import sqlite3
from contextlib import contextmanager
from typing import Any, Iterator

import attrs
import httpx
import openai
import orjson

from tests.conftest import Gateway, start_gateway
from tests.fakes import mcp_model
from tests.fakes.mcp_server import McpTestServer
from tests.fakes.server import FakeServer

LABEL = "t"  # the test server's server_label: its tools are offered as t__add, t__echo, ...
FREE_MODELS = """
[[models]]
id = "mcp-model"
provider = "fake"
"""


@attrs.define
class McpStack:
    gateway: Gateway
    mcp: McpTestServer
    model: FakeServer

    def tool(self, **fields: Any) -> dict[str, Any]:
        """The test server as an ``mcp`` tool (no approval needed unless ``fields`` say so)."""
        return {"type": "mcp", "server_label": LABEL, "server_url": self.mcp.url, "require_approval": "never",
                **fields}

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.gateway.base_url, api_key=self.gateway.key, timeout=30, max_retries=0)

    def post(self, body: dict[str, Any]) -> httpx.Response:
        return httpx.post(self.gateway.base_url + "/responses", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {self.gateway.key}"})

    def raw_stream(self, body: dict[str, Any]) -> bytes:
        """Every byte of a streamed create, read with plain httpx."""
        with httpx.stream("POST", self.gateway.base_url + "/responses", json={**body, "stream": True}, timeout=30,
                          headers={"Authorization": f"Bearer {self.gateway.key}"}) as answer:
            assert answer.status_code == 200, answer.read()
            return answer.read()

    def events(self, response_id: str, *types: str) -> list[dict[str, Any]]:
        """Recorded events naming ``response_id`` (on any stream), of ``types`` if given, in order."""
        conn = sqlite3.connect(f"file:{self.gateway.data_dir / 'ledger.db'}?mode=ro", uri=True)
        try:
            rows = conn.execute("SELECT type, data FROM events ORDER BY position").fetchall()
        finally:
            conn.close()
        out = [orjson.loads(data) for kind, data in rows if not types or kind in types]
        return [e for e in out if e.get("response_id") == response_id]

    def head(self) -> int:
        return httpx.get(self.gateway.url + "/healthz", timeout=30).json()["position"]


@contextmanager
def silent_server() -> Iterator[str]:
    """An MCP URL on loopback whose server takes connections and never answers (a hung server)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)  # the kernel completes the handshakes; nobody ever reads or answers
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/mcp"
    finally:
        sock.close()


@contextmanager
def mcp_stack(tmp_path_factory, mcp: str = "", models: str = FREE_MODELS) -> Iterator[McpStack]:
    """Start the MCP server, the fake model and a gateway for them (``mcp``: more ``[mcp]`` lines)."""
    with McpTestServer() as server, FakeServer(mcp_model.answer) as model:
        path = tmp_path_factory.mktemp("mcp-config") / "gateway.toml"
        path.write_text(f"""
[[providers]]
name = "fake"
kind = "openai-chat"
base_url = "{model.url}/v1"
{models}
[mcp]
url_allowlist = ["http://127.0.0.1"]
{mcp}
""")
        gateway = start_gateway(tmp_path_factory.mktemp("mcp-gateway"), "--config", str(path))
        try:
            yield McpStack(gateway, server, model)
        finally:
            gateway.stop()


def offered(request) -> list[str]:
    """The tool names a recorded model request offered (Chat Completions shape)."""
    return [t["function"]["name"] for t in request.json().get("tools") or []]

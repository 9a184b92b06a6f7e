"""MCP security: secrets never recorded or logged, and where MCP servers may (not) live."""

from __future__ import annotations

import pytest
import trio

from gateway.errors import ApiError
from gateway.mcp.policy import GuardedBackend, RefusedAddress, check_url, is_allowlisted, is_public, parse_allowlist
from gateway.mcp.spec import bearer
from tests.fakes.mcp_model import script
from tests.mcp_stack import mcp_stack

TOKEN = "sk-eu_TOKEN-value-4f1d0c9a7b"  # as Assistiv's own examples send it: with "Bearer "
BARE_TOKEN = "bare-oauth-token-9c2e11"  # as OpenAI sends it
HEADER_SECRET = "hdr-secret-77a1be"


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with mcp_stack(tmp_path_factory) as running:
        yield running


def ledger_and_log_bytes(stack) -> bytes:
    """The ledger file, its WAL and shared memory, and the server log, as bytes."""
    data_dir = stack.gateway.data_dir
    return b"".join(p.read_bytes() for p in sorted(data_dir.glob("ledger.db*"))) + stack.gateway.log.read_bytes()


def test_secrets_reach_the_server_but_never_the_ledger_or_logs(stack):
    """authorization/headers are sent (Bearer added only when missing), redacted in the echo, absent on disk."""
    client = stack.client()
    first = client.responses.create(model="mcp-model", input=script(("t__echo", {"text": "hi"})), tools=[
        stack.tool(authorization=f"Bearer {TOKEN}", headers={"X-Api-Key": HEADER_SECRET})])
    assert first.output[1].output == "hi"
    sent = stack.mcp.headers[-1]
    assert sent["authorization"] == f"Bearer {TOKEN}" and sent["x-api-key"] == HEADER_SECRET
    assert first.tools[0].authorization == "[redacted]" and first.tools[0].headers == {"X-Api-Key": "[redacted]"}
    second = client.responses.create(model="mcp-model", input="hi", tools=[stack.tool(authorization=BARE_TOKEN)])
    assert stack.mcp.headers[-1]["authorization"] == f"Bearer {BARE_TOKEN}"
    assert second.status == "completed"
    failed = stack.post({"model": "mcp-model", "input": "hi", "tools": [
        stack.tool(server_url=stack.mcp.denied_url, authorization=TOKEN, headers={"X-Api-Key": HEADER_SECRET})]})
    assert failed.json()["status"] == "failed"
    assert TOKEN not in failed.text and HEADER_SECRET not in failed.text
    stored = ledger_and_log_bytes(stack)
    for secret in (TOKEN, BARE_TOKEN, HEADER_SECRET):
        assert secret.encode() not in stored
    assert b"[redacted]" in stored


def test_a_token_in_the_server_url_query_is_used_but_never_recorded(stack):
    """Servers that take their key in the URL: the call reaches them; the echo and the ledger redact it."""
    query_secret = "qs-token-3b9f02e1"
    tool = stack.tool(server_url=f"{stack.mcp.url}?api_key={query_secret}")
    response = stack.client().responses.create(model="mcp-model", input=script(("t__echo", {"text": "ok"})),
                                                tools=[tool])
    assert response.output[1].output == "ok"
    assert response.tools[0].server_url == f"{stack.mcp.url}?api_key=[redacted]"
    assert query_secret.encode() not in ledger_and_log_bytes(stack)


@pytest.mark.parametrize(("url", "why"), [
    ("http://mcp.example.com/mcp", "must be https"),
    ("https://10.1.2.3/mcp", "not public"),
    ("https://169.254.169.254/latest", "not public"),
    ("https://[::1]:8443/mcp", "not public"),
    ("https://localhost/mcp", "not public"),
    ("http://127.0.0.1.evil.example/mcp", "must be https"),
    ("ftp://example.com/mcp", "http(s) URL"),
    ("https://user:pw@example.com/mcp", "not in the URL"),
])
def test_refused_server_urls_are_400_and_nothing_is_recorded(stack, url, why):
    """Non-https outside the allowlist and private/loopback/link-local addresses are 400s naming the field."""
    position = stack.head()
    answer = stack.post({"model": "mcp-model", "input": "hi", "tools": [
        {"type": "function", "name": "f"}, stack.tool(server_url=url)]})
    assert answer.status_code == 400, answer.text
    assert answer.json()["error"]["param"] == "tools[1].server_url" and why in answer.json()["error"]["message"]
    assert stack.head() == position


def test_bad_mcp_tools_are_400(stack):
    """server_label is required and unique; unknown fields, connectors and reserved headers are refused."""
    for tool, param in (
        ({"type": "mcp", "server_url": stack.mcp.url}, "tools[0].server_label"),
        (stack.tool(server_label="a b"), "tools[0].server_label"),
        (stack.tool(connector_id="connector_gmail"), "tools[0].connector_id"),
        (stack.tool(surprise=True), "tools[0].surprise"),
        (stack.tool(headers={"Host": "x"}), "tools[0].headers"),
        (stack.tool(require_approval="sometimes"), "tools[0].require_approval"),
        (stack.tool(allowed_tools="add"), "tools[0].allowed_tools"),
    ):
        answer = stack.post({"model": "mcp-model", "input": "hi", "tools": [tool]})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, (tool, answer.text)
    twice = stack.post({"model": "mcp-model", "input": "hi", "tools": [stack.tool(), stack.tool()]})
    assert twice.status_code == 400 and twice.json()["error"]["param"] == "tools[1].server_label"
    orphan = stack.post({"model": "mcp-model", "tools": [stack.tool()], "input": [
        {"type": "mcp_approval_response", "approval_request_id": "mcpr_nope", "approve": True}]})
    assert orphan.status_code == 400 and orphan.json()["error"]["param"] == "input[0].approval_request_id"


def test_url_policy_rules():
    """Allowlist entries match whole origins; only global unicast addresses are public."""
    allowlist = parse_allowlist(["http://127.0.0.1", "https://mcp.internal:8443"])
    assert is_allowlisted("http://127.0.0.1:9000/mcp", allowlist)
    assert not is_allowlisted("http://127.0.0.1.evil.example/mcp", allowlist)
    assert not is_allowlisted("https://127.0.0.1/mcp", allowlist)  # the scheme is part of the origin
    assert is_allowlisted("https://mcp.internal:8443/x", allowlist)
    assert not is_allowlisted("https://mcp.internal/x", allowlist)  # another port
    assert [is_public(a) for a in ("8.8.8.8", "10.0.0.1", "172.16.5.4", "192.168.1.1", "127.0.0.1", "169.254.1.1",
                                   "100.64.0.1", "0.0.0.0", "224.0.0.1", "::1", "fe80::1", "fd00::1",
                                   "::ffff:127.0.0.1", "2606:4700::1111")] == [
        True, False, False, False, False, False, False, False, False, False, False, False, False, True]
    check_url("https://mcp.example.com/mcp", (), "p")
    with pytest.raises(ApiError):
        check_url("http://127.0.0.1:1/mcp", (), "p")
    with pytest.raises(ValueError):
        parse_allowlist(["127.0.0.1"])
    assert bearer("abc") == "Bearer abc" and bearer("Bearer abc") == "Bearer abc" and bearer("bearer x") == "bearer x"


async def test_guarded_connections_refuse_names_resolving_inside():
    """The connection guard resolves a name itself and refuses a non-public address (DNS rebinding)."""
    with pytest.raises(RefusedAddress, match="non-public"):
        await GuardedBackend().connect_tcp("localhost", 80, timeout=5)
    with trio.fail_after(5):
        with pytest.raises(RefusedAddress):
            await GuardedBackend().connect_tcp("127.0.0.1", 80)

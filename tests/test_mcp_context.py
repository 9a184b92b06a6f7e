"""Hosted MCP tools across requests: what a conversation's earlier items let the next request do.

The tool list in the context is reused only while it lists the same server with the same
``allowed_tools``; an approval is used only if the approving request still allows the tool.
"""

from __future__ import annotations

import pytest

from tests.fakes.mcp_model import script
from tests.mcp_stack import mcp_stack, offered


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with mcp_stack(tmp_path_factory) as running:
        yield running


@pytest.fixture
def upstream(stack):
    stack.model.requests.clear()
    return stack.model


def test_approved_call_outside_allowed_tools_is_refused(stack, upstream):
    """An approval for `add` sent with allowed_tools ["echo"]: the call does not run, its item says why."""
    client = stack.client()
    asked = client.responses.create(model="mcp-model", input=script(("t__add", {"a": 1, "b": 2})),
                                    tools=[stack.tool(require_approval="always")])
    request = asked.output[1]
    assert request.type == "mcp_approval_request" and request.name == "add"
    calls_before = len(stack.events(asked.id, "mcp.call_started"))
    answered = client.responses.create(
        model="mcp-model", previous_response_id=asked.id,
        tools=[stack.tool(require_approval="always", allowed_tools=["echo"])],
        input=[{"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}])
    assert [o.type for o in answered.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert [t.name for t in answered.output[0].tools] == ["echo"]  # listed again: the filter changed
    call = answered.output[1]
    assert (call.name, call.status, call.output, call.approval_request_id) == ("add", "failed", None, request.id)
    assert call.error.type == "mcp_tool_execution_error"
    assert "'add'" in call.error.content[0]["text"] and "allowed_tools" in call.error.content[0]["text"]
    assert answered.output_text.startswith("Tool results: Error: Not run: tool 'add'")  # the model was told
    [finished] = stack.events(answered.id, "mcp.call_finished")
    assert finished["duration_ms"] == 0 and finished["error"]["type"] == "mcp_tool_execution_error"
    assert calls_before == 0 and offered(upstream.requests[-1]) == ["t__echo"]


def test_relisted_when_allowed_tools_widen(stack, upstream):
    """A list made under allowed_tools ["echo"] is not reused once the request allows every tool."""
    client = stack.client()
    narrow = client.responses.create(model="mcp-model", input="hi", tools=[stack.tool(allowed_tools=["echo"])])
    assert [t.name for t in narrow.output[0].tools] == ["echo"]
    same = client.responses.create(model="mcp-model", previous_response_id=narrow.id, input="hi again",
                                   tools=[stack.tool(allowed_tools=["echo"])])
    assert [o.type for o in same.output] == ["message"]  # same server, same filter: not listed again
    wider = client.responses.create(model="mcp-model", previous_response_id=same.id, tools=[stack.tool()],
                                    input=script(("t__add", {"a": 2, "b": 2})))
    assert [o.type for o in wider.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert len(wider.output[0].tools) == 6 and wider.output[1].output == "4"
    assert "t__add" in offered(upstream.requests[-2])


def test_relisted_when_the_server_url_changes(stack, upstream):
    """Same label, another server_url: the new server is listed (here it refuses), never the old list reused."""
    client = stack.client()
    first = client.responses.create(model="mcp-model", input="hi", tools=[stack.tool()])
    assert first.output[0].type == "mcp_list_tools" and first.output[0].error is None
    moved = stack.post({"model": "mcp-model", "previous_response_id": first.id, "input": "hi",
                        "tools": [stack.tool(server_url=stack.mcp.denied_url)]}).json()
    assert moved["status"] == "failed" and moved["error"]["code"] == "mcp_list_tools_failed"
    assert "HTTP 401" in moved["output"][0]["error"]
    replayed = client.responses.create(model="mcp-model", store=False, input=[
        first.output[0].model_dump(exclude_none=True), {"role": "user", "content": "hi"}],
        tools=[stack.tool(server_url=stack.mcp.url + "?v=2")])
    assert replayed.output[0].type == "mcp_list_tools" and replayed.output[0].error is None
    assert replayed.output[0].id != first.output[0].id

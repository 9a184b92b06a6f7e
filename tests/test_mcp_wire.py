"""MCP streams on the wire: the official SDK parses every event, `replay stream` gives the same bytes.

Also the approval defaults as a client sees them: ``require_approval`` omitted means OpenAI's
"always", and the per-tool object with ``always`` asks only for the tools it names.
"""

from __future__ import annotations

import warnings

import pytest

from tests.fakes.mcp_model import script
from tests.mcp_stack import LABEL, mcp_stack
from tests.test_responses_e2e import parse_sse


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with mcp_stack(tmp_path_factory) as running:
        yield running


def sdk_events(stack, **params) -> list:
    """Every event of a streamed create as the SDK's responses.stream() parses it (warnings are errors)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pydantic warning (an item field of the wrong type) fails the test
        with stack.client().responses.stream(model="mcp-model", **params) as stream:
            return list(stream)


def replayed(stack, received: bytes) -> bytes:
    response_id = parse_sse(received)[0]["response"]["id"]
    return stack.gateway.cli("replay", "--data-dir", str(stack.gateway.data_dir), "stream", response_id).stdout


def test_sdk_parses_a_failed_call(stack):
    """response.mcp_call.failed and the failed mcp_call item (error object) parse as the SDK's types."""
    events = sdk_events(stack, input=script(("t__fail", {"reason": "wire"})), tools=[stack.tool()])
    failed = [e for e in events if e.type == "response.mcp_call.failed"]
    assert len(failed) == 1 and failed[0].item_id.startswith("mcp_") and failed[0].output_index == 1
    [done] = [e for e in events if e.type == "response.output_item.done" and e.item.type == "mcp_call"]
    assert done.item.status == "failed" and done.item.error.type == "mcp_tool_execution_error"
    assert done.item.id == failed[0].item_id and events[-1].type == "response.completed"


def test_sdk_parses_a_failed_listing(stack):
    """response.mcp_list_tools.failed, the error event and response.failed parse as the SDK's types."""
    events = sdk_events(stack, input="hi", tools=[stack.tool(server_url=stack.mcp.denied_url)])
    types = [e.type for e in events]
    assert types[2:] == ["response.output_item.added", "response.mcp_list_tools.in_progress",
                         "response.mcp_list_tools.failed", "response.output_item.done", "error", "response.failed"]
    failed = events[4]
    assert failed.item_id == events[2].item.id and failed.output_index == 0
    assert events[5].item.type == "mcp_list_tools" and "HTTP 401" in events[5].item.error
    assert events[6].code == "mcp_list_tools_failed" and events[-1].response.error.code == "mcp_list_tools_failed"


def test_require_approval_omitted_means_always(stack):
    """No require_approval (OpenAI's default "always"): the call becomes an approval request, added then done."""
    tool = {"type": "mcp", "server_label": LABEL, "server_url": stack.mcp.url}
    events = sdk_events(stack, input=script(("t__echo", {"text": "hi"})), tools=[tool])
    types = [e.type for e in events]
    assert types[2:] == ["response.output_item.added", "response.mcp_list_tools.in_progress",
                         "response.mcp_list_tools.completed", "response.output_item.done",
                         "response.output_item.added", "response.output_item.done", "response.completed"]
    added, done = events[6], events[7]
    assert added.item.type == done.item.type == "mcp_approval_request" and added.item.id == done.item.id
    assert (done.item.name, done.item.server_label, done.item.arguments) == ("echo", LABEL, '{"text": "hi"}')
    final = events[-1].response
    assert [o.type for o in final.output] == ["mcp_list_tools", "mcp_approval_request"]
    assert final.tools[0].require_approval == "always"


def test_per_tool_always_asks_only_for_the_named_tools(stack):
    """require_approval {"always": {"tool_names": ["echo"]}}: add runs at once, echo waits for approval."""
    tool = stack.tool(require_approval={"always": {"tool_names": ["echo"]}})
    response = stack.client().responses.create(model="mcp-model", tools=[tool], input=script(
        ("t__add", {"a": 1, "b": 2}), ("t__echo", {"text": "later"})))
    assert [o.type for o in response.output] == ["mcp_list_tools", "mcp_call", "mcp_approval_request"]
    assert response.output[1].name == "add" and response.output[1].output == "3"
    assert response.output[2].name == "echo"
    assert not [e for e in stack.events(response.id, "mcp.call_started") if e["name"] == "echo"]


def test_replay_stream_reproduces_an_approval_stream(stack):
    """`replay stream` gives the exact bytes of a response that ends with an approval request."""
    received = stack.raw_stream({"model": "mcp-model", "tools": [stack.tool(require_approval="always")],
                                 "input": script(("t__add", {"a": 2, "b": 2}))})
    assert b'"type":"mcp_approval_request"' in received
    assert replayed(stack, received) == received


def test_replay_stream_reproduces_a_failed_listing_stream(stack):
    """`replay stream` gives the exact bytes of a response failed by its tool listing."""
    received = stack.raw_stream({"model": "mcp-model", "input": "hi",
                                 "tools": [stack.tool(server_url=stack.mcp.denied_url)]})
    assert b"response.mcp_list_tools.failed" in received and b"response.failed" in received
    assert replayed(stack, received) == received

"""MCP limits and failures end to end: the total time budget, listing timeouts, HTTP errors in a call.

Two gateways: one whose calls are bounded by ``call_timeout_s`` (1 s, a budget far away), one
whose ``time_budget_s`` (4 s) is shorter than its ``call_timeout_s`` (20 s), so the budget is
what cuts a listing or a call. Each limit hit must show in the response and in the ledger.
"""

from __future__ import annotations

import time

import pytest

from tests.fakes.mcp_model import script
from tests.mcp_stack import mcp_stack, silent_server

BUDGET_S = 4


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with mcp_stack(tmp_path_factory, mcp="call_timeout_s = 1.0\n") as running:
        yield running


@pytest.fixture(scope="module")
def budget_stack(tmp_path_factory):
    with mcp_stack(tmp_path_factory, mcp=f"call_timeout_s = 20.0\ntime_budget_s = {BUDGET_S}\n") as running:
        warm = running.client().responses.create(model="mcp-model", input="hi", tools=[running.tool()])
        assert warm.status == "completed"  # the gateway imported the mcp SDK: the budget is the tools' alone
        yield running


def test_time_budget_cuts_a_running_call_and_the_model_answers(budget_stack):
    """A call running past time_budget_s fails naming that limit; no MCP tools after; the model answers."""
    budget_stack.model.requests.clear()
    started = time.monotonic()
    response = budget_stack.client().responses.create(
        model="mcp-model", input=script(("t__slow", {"seconds": 15}), repeat=True), tools=[budget_stack.tool()])
    assert time.monotonic() - started < 15
    assert [o.type for o in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    call = response.output[1]
    assert (call.status, call.error.type, getattr(call.error, "code", None)) == (
        "failed", "mcp_protocol_error", -32001)
    assert f"(time_budget_s: {BUDGET_S})" in call.error.message
    assert response.status == "completed" and response.output_text.startswith("Tool results: Error")
    assert not budget_stack.model.requests[-1].json().get("tools")  # the budget closed MCP tools
    [limit] = budget_stack.events(response.id, "mcp.limit_reached")
    assert (limit["limit"], limit["value"], limit["output_index"]) == ("time_budget_s", BUDGET_S, 1)
    assert budget_stack.events(response.id, "mcp.call_finished")[0]["limit"] == "time_budget_s"


def test_listing_cut_by_the_time_budget_records_that_limit(budget_stack):
    """A server that never answers the listing: cut at time_budget_s (not call_timeout_s), named as such."""
    with silent_server() as url:
        answer = budget_stack.post({"model": "mcp-model", "input": "hi", "tools": [budget_stack.tool(server_url=url)]})
    body = answer.json()
    assert answer.status_code == 200 and body["status"] == "failed"
    assert body["error"]["code"] == "mcp_list_tools_failed"
    assert body["output"][0]["error"].endswith(f"timed out after {BUDGET_S} s (time_budget_s: {BUDGET_S}).")
    [limit] = budget_stack.events(body["id"], "mcp.limit_reached")
    assert (limit["limit"], limit["value"], limit["output_index"]) == ("time_budget_s", BUDGET_S, 0)


def test_listing_timeout_fails_the_response_and_names_the_limit(stack):
    """A server that never answers the listing: after call_timeout_s the item's error, a failed response."""
    stack.model.requests.clear()
    with silent_server() as url:
        started = time.monotonic()
        answer = stack.post({"model": "mcp-model", "input": "hi", "tools": [stack.tool(server_url=url)]})
        elapsed = time.monotonic() - started
    body = answer.json()
    assert body["status"] == "failed" and body["error"]["code"] == "mcp_list_tools_failed" and elapsed < 5
    item = body["output"][0]
    assert item["type"] == "mcp_list_tools" and item["tools"] == []
    assert item["error"] == ("Error retrieving tool list from MCP server 't': Listing tools timed out after 1 s "
                             "(call_timeout_s: 1).")
    [limit] = stack.events(body["id"], "mcp.limit_reached")
    assert (limit["limit"], limit["value"]) == ("call_timeout_s", 1)
    assert not stack.model.requests


def test_http_error_during_a_call_goes_into_the_item_and_to_the_model(stack):
    """Tools listed earlier (replayed), then the server answers 401 to the call: an http_error in mcp_call."""
    listing = {"type": "mcp_list_tools", "id": "mcpl_listed_elsewhere", "server_label": "t", "error": None,
               "tools": [{"name": "add", "input_schema": {"type": "object"}, "annotations": None}]}
    response = stack.client().responses.create(
        model="mcp-model", store=False, tools=[stack.tool(server_url=stack.mcp.denied_url)],
        input=[listing, {"role": "user", "content": script(("t__add", {"a": 1, "b": 2}))}])
    assert [o.type for o in response.output] == ["mcp_call", "message"]  # not listed again
    call = response.output[0]
    assert call.status == "failed" and call.output is None
    assert (call.error.type, call.error.code, call.error.message) == (
        "http_error", 401, "The MCP server answered HTTP 401.")
    assert response.status == "completed"
    assert response.output_text == "Tool results: Error (http_error 401): The MCP server answered HTTP 401."
    [finished] = stack.events(response.id, "mcp.call_finished")
    assert finished["error"]["code"] == 401 and finished["limit"] is None

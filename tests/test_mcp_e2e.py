"""Hosted MCP tools end to end: the official openai SDK -> gateway -> fake model + a real MCP server.

The fake model (tests/fakes/mcp_model.py) calls the functions its script names when it is
offered them and answers "Tool results: ..." once it sees their results. Tools of the test
server (label ``t``) are offered as ``t__add``, ``t__fail``, ...
"""

from __future__ import annotations

import json
import time
import warnings

import httpx
import openai
import pytest

from tests.fakes.mcp_model import script
from tests.mcp_stack import FREE_MODELS, mcp_stack, offered
from tests.test_responses_e2e import parse_sse

DEMO = """
[[providers]]
name = "demo"
kind = "demo"

[[models]]
id = "demo"
provider = "demo"
"""
CALL_TIMEOUT_S = 1.0
OUTPUT_CHARS_MAX = 1_000
MCP_EVENTS_ORDER = [
    "response.created", "response.in_progress",
    "response.output_item.added", "response.mcp_list_tools.in_progress", "response.mcp_list_tools.completed",
    "response.output_item.done",
    "response.output_item.added", "response.mcp_call.in_progress",
]
CALL_TAIL = ["response.mcp_call_arguments.done", "response.mcp_call.completed", "response.output_item.done",
             "response.output_item.added", "response.content_part.added"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with mcp_stack(tmp_path_factory, mcp=f"call_timeout_s = {CALL_TIMEOUT_S}\noutput_chars_max = {OUTPUT_CHARS_MAX}\n"
                                         "mcp_calls_max = 4\n", models=FREE_MODELS + DEMO) as running:
        yield running


@pytest.fixture
def upstream(stack):
    stack.model.requests.clear()
    return stack.model


def test_list_call_and_answer_streamed(stack, upstream):
    """Streamed: list tools, the call with streamed arguments, then the answer; the SDK parses every event."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a pydantic warning (e.g. mcp_call.error of the wrong type) fails
        with stack.client().responses.stream(model="mcp-model", input=script(("t__add", {"a": 2, "b": 3})),
                                             tools=[stack.tool()]) as stream:
            events = list(stream)
            assert events[-1].type == "response.completed", [
                (e.type, getattr(getattr(e, "response", None), "error", None) or getattr(e, "message", None))
                for e in events[-6:]]
            final = stream.get_final_response()
    types = [e.type for e in events]
    assert types[:8] == MCP_EVENTS_ORDER
    deltas = types[8:types.index("response.mcp_call_arguments.done")]
    assert deltas and set(deltas) == {"response.mcp_call_arguments.delta"}
    done_at = types.index("response.mcp_call_arguments.done")
    assert types[done_at:done_at + 5] == CALL_TAIL
    assert types[-1] == "response.completed" and len({e.sequence_number for e in events}) == len(events)
    listed, call, message = final.output
    assert listed.type == "mcp_list_tools" and listed.server_label == "t" and listed.error is None
    assert {t.name for t in listed.tools} == {"add", "echo", "fail", "protocol_error", "slow", "big"}
    assert call.type == "mcp_call" and call.name == "add" and call.server_label == "t"
    assert json.loads(call.arguments) == {"a": 2, "b": 3} and call.output == "5" and call.error is None
    assert call.status == "completed" and call.id.startswith("mcp_") and listed.id.startswith("mcpl_")
    assert "".join(e.delta for e in events if e.type == "response.mcp_call_arguments.delta") == call.arguments
    assert final.output_text == "Tool results: 5"
    assert final.id == events[0].response.id and final.status == "completed"
    first, second = upstream.requests  # two model calls inside the one response
    assert offered(first) == ["t__add", "t__echo", "t__fail", "t__protocol_error", "t__slow", "t__big"]
    tool_messages = [m for m in second.json()["messages"] if m["role"] == "tool"]
    assert [m["content"] for m in tool_messages] == ["5"]


def test_list_call_and_answer_not_streamed(stack, upstream):
    """Not streamed: the same items; usage adds up both model calls."""
    response = stack.client().responses.create(model="mcp-model", input=script(("t__echo", {"text": "héllo ✓"})),
                                               tools=[stack.tool()])
    assert [o.type for o in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert response.output[1].output == "héllo ✓"
    assert response.output_text == "Tool results: héllo ✓"
    assert response.usage.input_tokens == 2 * 57 and response.usage.output_tokens == 2 * 13
    assert stack.client().responses.retrieve(response.id).model_dump() == response.model_dump()
    assert response.tools[0].type == "mcp" and response.tools[0].server_label == "t"


def test_allowed_tools_list_and_filter(stack, upstream):
    """allowed_tools as a list or a read_only filter: only those tools are listed and offered."""
    client = stack.client()
    response = client.responses.create(model="mcp-model", input="hello", tools=[stack.tool(allowed_tools=["echo"])])
    assert [t.name for t in response.output[0].tools] == ["echo"]
    assert offered(upstream.requests[-1]) == ["t__echo"]
    assert response.output_text == "No tool called."
    read_only = client.responses.create(model="mcp-model", input=script(("t__fail", {"reason": "x"})),
                                        tools=[stack.tool(allowed_tools={"read_only": True})])
    assert [t.name for t in read_only.output[0].tools] == ["add"]
    assert [o.type for o in read_only.output] == ["mcp_list_tools", "message"]  # t__fail was not offered
    assert read_only.tools[0].allowed_tools.read_only is True


def test_not_relisted_while_in_context(stack, upstream):
    """A follow-up (previous_response_id or replayed items) does not list again, yet calls the tools."""
    client = stack.client()
    first = client.responses.create(model="mcp-model", input="hi", tools=[stack.tool()])
    assert first.output[0].type == "mcp_list_tools"
    second = client.responses.create(model="mcp-model", previous_response_id=first.id, tools=[stack.tool()],
                                     input=script(("t__add", {"a": 40, "b": 2})))
    assert [o.type for o in second.output] == ["mcp_call", "message"]
    assert second.output[0].output == "42"
    replayed = client.responses.create(model="mcp-model", store=False, tools=[stack.tool()], input=[
        first.output[0].model_dump(exclude_none=True), {"role": "user", "content": script(("t__add", {"a": 1, "b": 1}))}])
    assert [o.type for o in replayed.output] == ["mcp_call", "message"] and replayed.output[0].output == "2"
    earlier = [m for m in upstream.requests[-1].json()["messages"] if m.get("tool_calls")]
    assert earlier and earlier[0]["tool_calls"][0]["function"]["name"] == "t__add"


def test_tool_errors_go_back_to_the_model(stack, upstream):
    """Execution errors, JSON-RPC errors and bad arguments fill mcp_call.error; the model answers."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        response = stack.client().responses.create(
            model="mcp-model", tools=[stack.tool()],
            input=script(("t__fail", {"reason": "boom"}), ("t__protocol_error", {})) + "\ncall t__add not-json")
    calls = [o for o in response.output if o.type == "mcp_call"]
    assert [c.status for c in calls] == ["failed", "failed", "failed"]
    assert all(c.output is None for c in calls)
    execution, protocol, arguments = (c.error for c in calls)
    assert execution.type == "mcp_tool_execution_error" and "failed on purpose: boom" in execution.content[0]["text"]
    assert (protocol.type, protocol.code) == ("mcp_protocol_error", -32050)
    assert (arguments.type, arguments.code) == ("mcp_protocol_error", -32602)
    assert response.status == "completed"
    assert response.output_text.startswith("Tool results: Error: Error executing tool fail: failed on purpose: boom")


def test_listing_failure_fails_the_response_clearly(stack, upstream):
    """A server answering 401 to the listing: the item's error, a failed response naming it, no model call."""
    raw = stack.raw_stream({"model": "mcp-model", "input": "hi",
                            "tools": [stack.tool(server_url=stack.mcp.denied_url)]})
    events = parse_sse(raw)
    assert [e["type"] for e in events[2:]] == [
        "response.output_item.added", "response.mcp_list_tools.in_progress", "response.mcp_list_tools.failed",
        "response.output_item.done", "error", "response.failed"]
    item = events[5]["item"]
    assert item["error"] == "Error retrieving tool list from MCP server 't': The MCP server answered HTTP 401."
    assert events[-1]["response"]["error"]["code"] == "mcp_list_tools_failed"
    assert not upstream.requests


def test_call_timeout_is_an_error_and_a_recorded_limit(stack, upstream):
    """A call slower than call_timeout_s fails with a timeout error; the limit is in the ledger."""
    response = stack.client().responses.create(model="mcp-model", input=script(("t__slow", {"seconds": 5})),
                                               tools=[stack.tool()])
    call = response.output[1]
    assert (call.status, call.error.type, call.error.code) == ("failed", "mcp_protocol_error", -32001)
    assert "timed out after 1 s" in call.error.message
    assert response.output_text.startswith("Tool results: Error (mcp_protocol_error -32001)")
    finished = stack.events(response.id, "mcp.call_finished")[0]
    assert finished["limit"] == "call_timeout_s" and 900 <= finished["duration_ms"] < 3_000
    [limit] = stack.events(response.id, "mcp.limit_reached")
    assert (limit["limit"], limit["value"], limit["output_index"]) == ("call_timeout_s", 1, 1)


def test_max_tool_calls_stops_calls_and_the_model_answers(stack, upstream):
    """A model calling again and again: max_tool_calls runs that many, refuses the next, then no tools."""
    response = stack.client().responses.create(model="mcp-model", input=script(("t__add", {"a": 1, "b": 2}),
                                                                               repeat=True),
                                               tools=[stack.tool()], max_tool_calls=2)
    calls = [o for o in response.output if o.type == "mcp_call"]
    assert [c.status for c in calls] == ["completed", "completed", "failed"]
    assert "max_tool_calls limit (2)" in calls[2].error.content[0]["text"]
    assert response.output[-1].type == "message" and response.max_tool_calls == 2
    assert offered(upstream.requests[-1]) == []  # the last model call was offered no MCP tools
    [limit] = stack.events(response.id, "mcp.limit_reached")
    assert (limit["limit"], limit["value"]) == ("max_tool_calls", 2)
    ceiling = stack.client().responses.create(model="mcp-model", input=script(("t__add", {"a": 1, "b": 2}),
                                                                              repeat=True), tools=[stack.tool()])
    assert sum(1 for o in ceiling.output if o.type == "mcp_call" and o.status == "completed") == 4  # mcp_calls_max
    assert stack.events(ceiling.id, "mcp.limit_reached")[0]["limit"] == "mcp_calls_max"


def test_large_output_is_cut(stack, upstream):
    """Output above output_chars_max reaches the model and the ledger cut, with a notice."""
    response = stack.client().responses.create(model="mcp-model", input=script(("t__big", {"chars": 5_000})),
                                               tools=[stack.tool()])
    output = response.output[1].output
    assert output == "x" * OUTPUT_CHARS_MAX + f"\n[output truncated: {OUTPUT_CHARS_MAX} of 5000 characters]"
    finished = stack.events(response.id, "mcp.call_finished")[0]
    assert (finished["output_chars"], finished["limit"]) == (5_000, "output_chars_max")
    tool_message = [m for m in upstream.requests[-1].json()["messages"] if m["role"] == "tool"][0]
    assert tool_message["content"] == output


def test_approval_approved_runs_the_call(stack, upstream):
    """require_approval (default always): an approval request ends the response; approving runs the call."""
    client = stack.client()
    tool = stack.tool(require_approval="always")
    asked = client.responses.create(model="mcp-model", input=script(("t__add", {"a": 20, "b": 1})), tools=[tool])
    assert asked.status == "completed"
    assert [o.type for o in asked.output] == ["mcp_list_tools", "mcp_approval_request"]
    request = asked.output[1]
    assert (request.name, request.server_label, json.loads(request.arguments)) == ("add", "t", {"a": 20, "b": 1})
    assert request.id.startswith("mcpr_")
    with client.responses.stream(model="mcp-model", previous_response_id=asked.id, tools=[tool], input=[
            {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}]) as stream:
        types = [e.type for e in stream]
        approved = stream.get_final_response()
    assert [o.type for o in approved.output] == ["mcp_call", "message"]
    assert approved.output[0].approval_request_id == request.id and approved.output[0].output == "21"
    assert approved.output_text == "Tool results: 21"
    assert types[2:5] == ["response.output_item.added", "response.mcp_call.in_progress",
                          "response.mcp_call_arguments.delta"]
    [decision] = stack.events(approved.id, "mcp.approval_responded")
    assert decision["approve"] is True and decision["approval_request_id"] == request.id
    with pytest.raises(openai.BadRequestError) as again:  # one answer per request
        client.responses.create(model="mcp-model", previous_response_id=approved.id, tools=[tool], input=[
            {"type": "mcp_approval_response", "approval_request_id": request.id, "approve": True}])
    assert again.value.param == "input[0].approval_request_id"


def test_approval_denied_skips_the_call(stack, upstream):
    """approve: false: no call runs; the model is told and answers; per-tool rules pick what needs approval."""
    client = stack.client()
    tool = stack.tool(require_approval={"never": {"tool_names": ["add"]}})
    asked = client.responses.create(model="mcp-model", tools=[tool],
                                    input=script(("t__add", {"a": 1, "b": 1}), ("t__echo", {"text": "secret plan"})))
    assert [o.type for o in asked.output] == ["mcp_list_tools", "mcp_call", "mcp_approval_request"]
    assert asked.output[1].output == "2" and asked.output[2].name == "echo"
    denied = client.responses.create(model="mcp-model", previous_response_id=asked.id, tools=[tool], input=[
        {"type": "mcp_approval_response", "approval_request_id": asked.output[2].id, "approve": False,
         "reason": "not now"}])
    assert [o.type for o in denied.output] == ["message"]
    assert "refused this tool call" in denied.output_text and "not now" in denied.output_text
    assert not stack.events(denied.id, "mcp.call_started")


def test_replay_stream_reproduces_mcp_bytes(stack, upstream):
    """`replay stream` gives the exact bytes the client received for an MCP response."""
    received = stack.raw_stream({"model": "mcp-model", "tools": [stack.tool()],
                                 "input": script(("t__add", {"a": 1, "b": 1}), ("t__fail", {"reason": "r"}))})
    response_id = parse_sse(received)[0]["response"]["id"]
    replayed = stack.gateway.cli("replay", "--data-dir", str(stack.gateway.data_dir), "stream", response_id).stdout
    assert replayed == received


def test_client_leaving_during_a_call_records_the_interruption(stack, upstream):
    """A client that leaves while a tool runs: the call item ends incomplete, the response interrupted."""
    body = {"model": "mcp-model", "stream": True, "tools": [stack.tool()], "input": script(("t__slow", {"seconds": 0.8}))}
    with httpx.stream("POST", stack.gateway.base_url + "/responses", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {stack.gateway.key}"}) as answer:
        seen = []
        for line in answer.iter_lines():
            if line.startswith("data: "):
                seen.append(json.loads(line[6:]))
                if seen[-1]["type"] == "response.mcp_call_arguments.done":
                    break
    response_id = seen[0]["response"]["id"]
    deadline = time.monotonic() + 10
    while not stack.events(response_id, "response.finished") and time.monotonic() < deadline:
        time.sleep(0.05)
    [finished] = stack.events(response_id, "response.finished")
    assert finished["interruption"] == "client_disconnected" and finished["status"] == "incomplete"
    closed = {e["output_index"]: e["status"] for e in stack.events(response_id, "response.item_finished")}
    assert closed[1] == "incomplete" and not stack.events(response_id, "mcp.call_finished")
    assert len(upstream.requests) == 1  # the model was not called again


def test_tool_choice_mcp_forces_the_first_call_only(stack, upstream):
    """tool_choice {"type": "mcp", ...} forces that tool on the first model call, then "auto"."""
    response = stack.client().responses.create(
        model="mcp-model", input=script(("t__add", {"a": 1, "b": 1})), tools=[stack.tool()],
        tool_choice={"type": "mcp", "server_label": "t", "name": "add"})
    assert response.tool_choice.type == "mcp" and response.output_text == "Tool results: 2"
    first, second = (r.json()["tool_choice"] for r in upstream.requests)
    assert first == {"type": "function", "function": {"name": "t__add"}} and second == "auto"


def test_demo_model_calls_an_offered_mcp_tool(stack, upstream):
    """The offline demo model calls the first tool it is offered (quickstart without keys)."""
    response = stack.client().responses.create(model="demo", input="hello there",
                                               tools=[stack.tool(allowed_tools=["echo"])])
    assert [o.type for o in response.output] == ["mcp_list_tools", "mcp_call", "message"]
    assert response.output[1].output == "hello there"
    assert response.output_text == "The tools answered: t__echo returned hello there"

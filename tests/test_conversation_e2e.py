"""Conversation state and function calling end to end, on the offline demo model.

The same flows run against every provider kind's fake upstream in the tests of those
adapters; here they show the gateway side: context from the ledger, tool-call items and
events, 404s and tenancy.
"""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import start_gateway
from tests.test_responses_e2e import parse_sse, sync_client

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get current weather for a location",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string", "description": "City name"}},
        "required": ["location"],
        "additionalProperties": False,
    },
    "strict": True,
}
TIME_TOOL = {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {
    "city": {"type": "string"}}}}


def run_tool(call) -> str:
    args = json.loads(call.arguments)
    return f"15C and cloudy in {args['location']}" if call.name == "get_weather" else f"noon in {args['city']}"


def test_weather_loop_with_previous_response_id(gateway):
    """Call -> run the tool locally -> send function_call_output with previous_response_id -> final text."""
    client = sync_client(gateway)
    first = client.responses.create(model="demo", input="London", tools=[WEATHER_TOOL])
    assert first.status == "completed"
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather" and call.status == "completed"
    assert call.id.startswith("fc_") and call.call_id.startswith("call_")
    assert json.loads(call.arguments) == {"location": "London"}
    assert first.tools[0].name == "get_weather" and first.tools[0].strict is True
    second = client.responses.create(
        model="demo",
        previous_response_id=first.id,
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": run_tool(call)}],
        tools=[WEATHER_TOOL],
    )
    assert second.previous_response_id == first.id
    assert second.output_text == "The tools answered: get_weather returned 15C and cloudy in London"


def test_weather_loop_streamed_with_sdk_helper(gateway):
    """The streamed tool call has the documented events; the helper's final response carries the call."""
    client = sync_client(gateway)
    with client.responses.stream(model="demo", input="Paris", tools=[WEATHER_TOOL]) as stream:
        events = list(stream)
        final = stream.get_final_response()
    types = [e.type for e in events]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types[-3:] == ["response.function_call_arguments.done", "response.output_item.done", "response.completed"]
    assert set(types[3:-3]) == {"response.function_call_arguments.delta"} and len(types[3:-3]) >= 2
    done = events[-3]
    assert done.name == "get_weather"
    assert "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta") == done.arguments
    [call] = final.output
    assert call.arguments == done.arguments and call.id == events[2].item.id
    with client.responses.stream(
        model="demo", previous_response_id=final.id, tools=[WEATHER_TOOL],
        input=[{"type": "function_call_output", "call_id": call.call_id, "output": run_tool(call)}],
    ) as stream:
        answer = stream.get_final_response()
    assert answer.output_text.endswith("15C and cloudy in Paris")


def test_stateless_replay_of_call_and_output(gateway):
    """Replaying function_call + function_call_output items without previous_response_id works."""
    client = sync_client(gateway)
    response = client.responses.create(
        model="demo",
        tools=[WEATHER_TOOL],
        input=[
            {"role": "user", "content": "Weather in Rome?"},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"location":"Rome"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": "{\"temp\":18}"},
        ],
    )
    assert response.output_text == 'The tools answered: get_weather returned {"temp":18}'
    items = client.responses.input_items.list(response.id, order="asc")
    assert [i.type for i in items.data] == ["message", "function_call", "function_call_output"]


def test_parallel_calls_when_required(gateway):
    """tool_choice=required with two tools makes two parallel calls at consecutive output indexes."""
    client = sync_client(gateway)
    stream = client.responses.create(model="demo", input="Oslo", tools=[WEATHER_TOOL, TIME_TOOL],
                                     tool_choice="required", stream=True)
    events = list(stream)
    added = [e for e in events if e.type == "response.output_item.added"]
    assert [(e.output_index, e.item.name) for e in added] == [(0, "get_weather"), (1, "get_time")]
    final = events[-1].response
    assert [o.name for o in final.output] == ["get_weather", "get_time"]
    outputs = [{"type": "function_call_output", "call_id": c.call_id, "output": run_tool(c)} for c in final.output]
    answer = client.responses.create(model="demo", previous_response_id=final.id, input=outputs,
                                     tools=[WEATHER_TOOL, TIME_TOOL])
    assert "get_weather returned 15C and cloudy in Oslo" in answer.output_text
    assert "get_time returned noon in Oslo" in answer.output_text


def test_forced_and_none_tool_choice(gateway):
    """A named tool_choice forces that tool; tool_choice=none keeps the answer to text."""
    client = sync_client(gateway)
    forced = client.responses.create(model="demo", input="Lima", tools=[WEATHER_TOOL, TIME_TOOL],
                                     tool_choice={"type": "function", "name": "get_time"})
    assert [o.name for o in forced.output] == ["get_time"]
    assert forced.tool_choice.name == "get_time"
    plain = client.responses.create(model="demo", input="Lima", tools=[WEATHER_TOOL], tool_choice="none")
    assert plain.output[0].type == "message"
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="demo", input="x", tools=[WEATHER_TOOL],
                                tool_choice={"type": "function", "name": "nope"})
    assert bad.value.param == "tool_choice.name"


def test_unmatched_call_output_is_400(gateway):
    """A function_call_output whose call_id matches no call is rejected and nothing is recorded."""
    client = sync_client(gateway)
    with pytest.raises(openai.BadRequestError) as bad:
        client.responses.create(model="demo", input=[
            {"type": "function_call_output", "call_id": "call_missing", "output": "x"}])
    assert bad.value.param == "input[0].call_id"


def test_twenty_turn_chain_keeps_context(gateway):
    """previous_response_id across 20 turns: each turn sees every earlier input and output."""
    client = sync_client(gateway)
    previous = None
    for turn in range(20):
        response = client.responses.create(model="demo", input=f"turn {turn}", previous_response_id=previous,
                                           instructions="only for this turn" if turn == 0 else None)
        previous = response.id
    items = client.responses.input_items.list(previous, order="asc")
    assert [i.content[0].text for i in items.data] == ["turn 19"]
    # The context the demo saw is recorded in its usage: input tokens grow with every turn.
    chain_usage = client.responses.retrieve(previous).usage.input_tokens
    first_usage = client.responses.create(model="demo", input="turn 19").usage.input_tokens
    assert chain_usage > 10 * first_usage
    assert client.responses.retrieve(previous).instructions is None


def test_previous_response_errors(gateway):
    """Unknown, deleted and other-tenant previous responses are 404 previous_response_not_found."""
    client = sync_client(gateway)
    with pytest.raises(openai.NotFoundError) as unknown:
        client.responses.create(model="demo", input="x", previous_response_id="resp_nope")
    assert unknown.value.code == "previous_response_not_found"
    deleted = client.responses.create(model="demo", input="x")
    client.responses.delete(deleted.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.create(model="demo", input="x", previous_response_id=deleted.id)
    other = json.loads(gateway.cli("platform", "create", "--name", "other", "--json",
                                   "--data-dir", str(gateway.data_dir)).stdout)["api_key"]["raw_key"]
    mine = client.responses.create(model="demo", input="mine")
    import time

    time.sleep(0.3)  # the running server picks up the new platform's key
    with pytest.raises(openai.NotFoundError) as foreign:
        sync_client(gateway, key=other).responses.create(model="demo", input="x", previous_response_id=mine.id)
    assert foreign.value.code == "previous_response_not_found"


def test_store_false_cannot_be_continued(gateway):
    """A response created with store=false cannot be continued; the error says why."""
    client = sync_client(gateway)
    unstored = client.responses.create(model="demo", input="x", store=False)
    with pytest.raises(openai.NotFoundError) as error:
        client.responses.create(model="demo", input="y", previous_response_id=unstored.id)
    assert "store=false" in error.value.message


def test_thread_id_continues_and_lists(gateway):
    """thread_id continues from the thread's latest completed response; the thread lists its responses."""
    client = sync_client(gateway)
    first = client.responses.create(model="demo", input="alpha", extra_body={"thread_id": "th_1"})
    second = client.responses.create(model="demo", input="beta", extra_body={"thread_id": "th_1"})
    assert second.previous_response_id == first.id
    assert second.model_extra["thread_id"] == "th_1"
    third = client.responses.create(model="demo", input="gamma", extra_body={"thread_id": "th_1"})
    assert third.previous_response_id == second.id
    listed = httpx.get(gateway.base_url + "/threads/th_1/responses", params={"limit": 2},
                       headers={"Authorization": f"Bearer {gateway.key}"}, timeout=30).json()
    assert [r["id"] for r in listed["data"]] == [first.id, second.id] and listed["has_more"] is True
    rest = httpx.get(gateway.base_url + "/threads/th_1/responses", params={"after": second.id},
                     headers={"Authorization": f"Bearer {gateway.key}"}, timeout=30).json()
    assert [r["id"] for r in rest["data"]] == [third.id] and rest["has_more"] is False


def test_input_items_paging_with_sdk(gateway):
    """input_items.list pages with limit/after/has_more the way the SDK iterates."""
    client = sync_client(gateway)
    texts = [f"message {i}" for i in range(7)]
    response = client.responses.create(model="demo", input=[{"role": "user", "content": t} for t in texts])
    page = client.responses.input_items.list(response.id, limit=3)
    assert page.has_more is True and len(page.data) == 3
    everything = [item.content[0].text for item in client.responses.input_items.list(response.id, limit=3)]
    assert everything == list(reversed(texts))
    ascending = [i.content[0].text for i in client.responses.input_items.list(response.id, order="asc", limit=2)]
    assert ascending == texts


def test_conversation_survives_restart(fresh_gateway):
    """previous_response_id works across a gateway restart (context comes from the ledger)."""
    client = sync_client(fresh_gateway)
    first = client.responses.create(model="demo", input="Berlin", tools=[WEATHER_TOOL])
    assert fresh_gateway.stop() == 0
    again = start_gateway(fresh_gateway.data_dir)
    again.key = fresh_gateway.key
    try:
        call = first.output[0]
        answer = sync_client(again).responses.create(
            model="demo", previous_response_id=first.id, tools=[WEATHER_TOOL],
            input=[{"type": "function_call_output", "call_id": call.call_id, "output": run_tool(call)}])
        assert answer.output_text.endswith("15C and cloudy in Berlin")
        with httpx.stream("GET", again.base_url + f"/responses/{first.id}", params={"stream": "true"},
                          headers={"Authorization": f"Bearer {again.key}"}, timeout=30) as replayed:
            events = parse_sse(replayed.read())
        assert events[-1]["response"]["output"][0]["call_id"] == call.call_id
    finally:
        assert again.stop() == 0

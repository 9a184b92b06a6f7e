"""The function-calling loop end to end, shared by every real-provider kind's e2e class.

The standard weather loop with the official openai SDK: the model calls ``get_weather``,
the client runs it, sends the ``function_call_output`` back (with ``previous_response_id``,
or statelessly by replaying the call and its output) and gets the final answer; streamed
(``responses.stream()``) and not. Each kind says how its fake upstream makes the call and
what the second upstream request must hold: the call and its output in the provider's own
format. Mixed into ``NativeE2E`` and ``UpstreamE2E``, which supply the ``gw``/``upstream``
fixtures, ``fake`` and ``DELTAS``-style text answers.
"""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.test_responses_e2e import parse_sse, sync_client

WEATHER_TOOL = {"type": "function", "name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
TIME_TOOL = {"type": "function", "name": "get_time", "description": "Local time in a city",
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}
WEATHER_OUTPUT = '{"temp_c": 18}'
FINAL_TEXT = ["It is ", "18C in Paris", "."]
CALL_EVENTS = ("response.output_item.added", "response.function_call_arguments.done", "response.output_item.done")


def create(client, streamed: bool, **params: Any):
    """One create: plain, or with ``responses.stream()`` (then the streamed call events are checked)."""
    if not streamed:
        return client.responses.create(**params)
    with client.responses.stream(**params) as stream:
        events = list(stream)
        final = stream.get_final_response()
    for item in final.output:
        if item.type == "function_call":
            deltas = [e.delta for e in events if e.type == "response.function_call_arguments.delta"
                      and e.item_id == item.id]
            [done] = [e for e in events if e.type == "response.function_call_arguments.done" and e.item_id == item.id]
            assert "".join(deltas) == done.arguments == item.arguments and done.name == item.name
    return final


class ToolLoopE2E:
    """The weather loop, parallel-call order; subclasses implement the three hooks."""

    interleaves_tool_calls = False  # the adapter keeps parallel calls open until the stream ends

    def tool_calls_answer(self) -> Any:
        """A fake handler answering with one get_weather call for Paris (arguments {"city": "Paris"})."""
        raise NotImplementedError

    def parallel_calls_answer(self) -> Any:
        """A fake handler answering with get_weather(Paris) and get_time(Tokyo) in parallel."""
        raise NotImplementedError

    def check_tool_round_trip(self, body: dict[str, Any], call_id: str) -> None:
        """Assert the upstream body of the turn that sends the get_weather output back."""
        raise NotImplementedError

    def _first_call(self, gw, upstream, streamed: bool, **params: Any):
        client = sync_client(gw)
        upstream.handler = self.tool_calls_answer()
        first = create(client, streamed, model="fake-model", input="Weather in Paris?", tools=[WEATHER_TOOL],
                       **params)
        assert first.status == "completed"
        [call] = first.output
        assert (call.type, call.name, call.status) == ("function_call", "get_weather", "completed")
        assert json.loads(call.arguments) == {"city": "Paris"}
        upstream.handler = self.fake.text_answer(FINAL_TEXT)
        return client, first, call

    @staticmethod
    def _output(call) -> dict[str, Any]:
        return {"type": "function_call_output", "call_id": call.call_id, "output": WEATHER_OUTPUT}

    def test_weather_loop_with_previous_response_id(self, gw, upstream):
        """Call -> run locally -> function_call_output with previous_response_id -> answer; upstream got both."""
        client, first, call = self._first_call(gw, upstream, streamed=False)
        second = create(client, False, model="fake-model", previous_response_id=first.id, tools=[WEATHER_TOOL],
                        input=[self._output(call)])
        assert second.status == "completed" and second.output_text == "".join(FINAL_TEXT)
        assert second.previous_response_id == first.id
        self.check_tool_round_trip(upstream.requests[-1].json(), call.call_id)

    def test_weather_loop_streamed_with_previous_response_id(self, gw, upstream):
        """The same loop with responses.stream() on both turns; deltas add up; upstream got both."""
        client, first, call = self._first_call(gw, upstream, streamed=True)
        second = create(client, True, model="fake-model", previous_response_id=first.id, tools=[WEATHER_TOOL],
                        input=[self._output(call)])
        assert second.output_text == "".join(FINAL_TEXT) and second.previous_response_id == first.id
        self.check_tool_round_trip(upstream.requests[-1].json(), call.call_id)

    def test_weather_loop_stateless_replay(self, gw, upstream):
        """store=false first turn; the second replays the message, the call and its output, no previous id."""
        client, _, call = self._first_call(gw, upstream, streamed=False, store=False)
        replayed = [{"role": "user", "content": "Weather in Paris?"}, call.model_dump(exclude_none=True),
                    self._output(call)]
        second = create(client, False, model="fake-model", tools=[WEATHER_TOOL], input=replayed)
        assert second.output_text == "".join(FINAL_TEXT) and second.previous_response_id is None
        self.check_tool_round_trip(upstream.requests[-1].json(), call.call_id)

    def test_weather_loop_stateless_replay_streamed(self, gw, upstream):
        """The stateless loop with responses.stream() on both turns."""
        client, _, call = self._first_call(gw, upstream, streamed=True, store=False)
        replayed = [{"role": "user", "content": "Weather in Paris?"}, call.model_dump(exclude_none=True),
                    self._output(call)]
        second = create(client, True, model="fake-model", tools=[WEATHER_TOOL], input=replayed)
        assert second.output_text == "".join(FINAL_TEXT)
        self.check_tool_round_trip(upstream.requests[-1].json(), call.call_id)

    def test_parallel_calls_stream_each_call_closed_before_the_next(self, gw, upstream):
        """Parallel calls: each call's arguments.done and item.done come before the next call's added
        (as OpenAI streams), unless the upstream may interleave calls (then all close at the end)."""
        upstream.handler = self.parallel_calls_answer()
        body = {"model": "fake-model", "input": "Weather and time?", "tools": [WEATHER_TOOL, TIME_TOOL],
                "stream": True}
        with httpx.stream("POST", gw.base_url + "/responses", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {gw.key}"}) as answer:
            events = parse_sse(answer.read())
        order = [(e["type"], e["output_index"]) for e in events if e["type"] in CALL_EVENTS]
        added, args_done, item_done = CALL_EVENTS
        if self.interleaves_tool_calls:
            expected = [(added, 0), (added, 1), (args_done, 0), (item_done, 0), (args_done, 1), (item_done, 1)]
        else:
            expected = [(added, 0), (args_done, 0), (item_done, 0), (added, 1), (args_done, 1), (item_done, 1)]
        assert order == expected
        final = events[-1]["response"]
        assert [(o["name"], json.loads(o["arguments"])) for o in final["output"]] == [
            ("get_weather", {"city": "Paris"}), ("get_time", {"city": "Tokyo"})]

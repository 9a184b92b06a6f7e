"""End to end: the openai SDK -> a real ``assistiv serve`` -> the anthropic adapter -> a fake Messages API."""

from __future__ import annotations

from tests.fakes import anthropic as fake_anthropic
from tests.native_e2e import UPSTREAM_KEY, UPSTREAM_MODEL, NativeE2E
from tests.test_responses_e2e import sync_client
from tests.tool_loop_e2e import FINAL_TEXT, WEATHER_OUTPUT, WEATHER_TOOL


class TestAnthropicE2E(NativeE2E):
    kind = "anthropic"
    fake = fake_anthropic
    usage = {"input": 57, "cached": 12, "output": 13, "reasoning": 0}
    length_finish = {"stop_reason": "max_tokens"}
    filter_finish = {"stop_reason": "refusal"}

    def check_request(self, request, prompt, instructions):
        assert (request.method, request.path) == ("POST", "/v1/messages")
        assert request.headers["x-api-key"] == UPSTREAM_KEY
        assert request.headers["anthropic-version"] == "2023-06-01"
        assert request.json() == {"model": UPSTREAM_MODEL, "max_tokens": 4096, "stream": True, "system": instructions,
                                  "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}]}

    def tool_calls_answer(self):
        return fake_anthropic.tool_calls_answer([("toolu_01", "get_weather", '{"city": "Paris"}')])

    def parallel_calls_answer(self):
        return fake_anthropic.tool_calls_answer([("toolu_01", "get_weather", '{"city": "Paris"}'),
                                                 ("toolu_02", "get_time", '{"city": "Tokyo"}')])

    def check_tool_round_trip(self, body, call_id):
        assert call_id == "toolu_01"
        assert body["messages"] == [
            {"role": "user", "content": [{"type": "text", "text": "Weather in Paris?"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                                               "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01",
                                          "content": '{"temp_c": 18}'}]}]
        assert [t["name"] for t in body["tools"]] == ["get_weather"]
        assert body["tool_choice"] == {"type": "auto"}

    def test_tool_output_turn_without_tools_is_accepted_upstream(self, gw, upstream):
        """The output goes back without `tools`: the fake (like Anthropic) would refuse tool blocks without tools,
        so the adapter declares the history's tool (not callable: tool_choice none) and the answer arrives."""
        client = sync_client(gw)
        upstream.handler = self.tool_calls_answer()
        first = client.responses.create(model="fake-model", input="Weather in Paris?", tools=[WEATHER_TOOL])
        upstream.handler = fake_anthropic.text_answer(FINAL_TEXT)
        second = client.responses.create(model="fake-model", previous_response_id=first.id, input=[
            {"type": "function_call_output", "call_id": first.output[0].call_id, "output": WEATHER_OUTPUT}])
        assert second.status == "completed" and second.output_text == "".join(FINAL_TEXT)
        body = upstream.requests[-1].json()
        assert body["tools"] == [{"name": "get_weather", "description": "", "input_schema": {"type": "object"}}]
        assert body["tool_choice"] == {"type": "none"}

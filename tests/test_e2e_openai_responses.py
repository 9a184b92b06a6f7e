"""End to end through the openai-responses adapter: the openai SDK -> gateway -> fake Responses API server."""

from __future__ import annotations

from tests.fakes import openai_responses
from tests.fakes.server import Request
from tests.upstream_e2e import UpstreamE2E


class TestOpenAIResponsesEndToEnd(UpstreamE2E):
    kind = "openai-responses"
    fake = openai_responses
    usage = {"input": 61, "cached": 24, "output": 17, "reasoning": 6}

    def check_request(self, request: Request, prompt: str, instructions: str) -> None:
        assert request.path == "/v1/responses"
        body = request.json()
        assert body["model"] == "upstream-model-v1"
        assert body["instructions"] == instructions
        assert body["input"] == [{"type": "message", "role": "user",
                                  "content": [{"type": "input_text", "text": prompt}]}]
        assert (body["stream"], body["store"]) == (True, False)

    def tool_calls_answer(self):
        return openai_responses.tool_calls_answer([("call_w1", "get_weather", '{"city": "Paris"}')])

    def parallel_calls_answer(self):
        return openai_responses.tool_calls_answer([("call_w1", "get_weather", '{"city": "Paris"}'),
                                                   ("call_t2", "get_time", '{"city": "Tokyo"}')])

    def check_tool_round_trip(self, body, call_id):
        assert call_id == "call_w1"
        assert body["input"] == [
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris?"}]},
            {"type": "function_call", "call_id": "call_w1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
            {"type": "function_call_output", "call_id": "call_w1", "output": '{"temp_c": 18}'}]
        assert [t["name"] for t in body["tools"]] == ["get_weather"]
        assert body["tool_choice"] == "auto"

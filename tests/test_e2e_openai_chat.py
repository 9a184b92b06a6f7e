"""End to end through the openai-chat adapter: the openai SDK -> gateway -> fake Chat Completions server."""

from __future__ import annotations

from tests.fakes import openai_chat
from tests.fakes.server import Request
from tests.upstream_e2e import UpstreamE2E


class TestOpenAIChatEndToEnd(UpstreamE2E):
    kind = "openai-chat"
    fake = openai_chat
    usage = {"input": 57, "cached": 21, "output": 13, "reasoning": 5}

    def check_request(self, request: Request, prompt: str, instructions: str) -> None:
        assert request.path == "/v1/chat/completions"
        body = request.json()
        assert body["model"] == "upstream-model-v1"
        assert body["messages"] == [{"role": "system", "content": instructions}, {"role": "user", "content": prompt}]
        assert body["stream"] is True and body["stream_options"] == {"include_usage": True}

    interleaves_tool_calls = True  # Chat Completions servers may mix parallel calls' pieces by index

    def tool_calls_answer(self):
        return openai_chat.tool_calls_answer([("call_w1", "get_weather", '{"city": "Paris"}')])

    def parallel_calls_answer(self):
        return openai_chat.tool_calls_answer([("call_w1", "get_weather", '{"city": "Paris"}'),
                                              ("call_t2", "get_time", '{"city": "Tokyo"}')])

    def check_tool_round_trip(self, body, call_id):
        assert call_id == "call_w1"
        assert body["messages"] == [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_w1", "type": "function",
                 "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_w1", "content": '{"temp_c": 18}'}]
        assert [t["function"]["name"] for t in body["tools"]] == ["get_weather"]
        assert body["tool_choice"] == "auto"

    def test_interleaved_parallel_calls_stream_consistently(self, gw, upstream):
        """Interleaved argument pieces of parallel calls: each call's deltas add up to its done event."""
        from tests.upstream_e2e import CALLS, raw_stream
        from tests.test_responses_e2e import parse_sse

        upstream.handler = self.fake.tool_calls_answer(CALLS, interleave=True)
        tools = [{"type": "function", "name": name, "parameters": {"type": "object"}} for _, name, _ in CALLS]
        events = parse_sse(raw_stream(gw, {"model": "fake-model", "input": "both", "tools": tools}))
        for index, (call_id, name, arguments) in enumerate(CALLS):
            deltas = [e["delta"] for e in events
                      if e["type"] == "response.function_call_arguments.delta" and e["output_index"] == index]
            done = [e for e in events
                    if e["type"] == "response.function_call_arguments.done" and e["output_index"] == index]
            assert "".join(deltas) == arguments == done[0]["arguments"] and done[0]["name"] == name
            done_at = events.index(done[0])
            assert all(events.index(e) < done_at for e in events
                       if e["type"] == "response.function_call_arguments.delta" and e["output_index"] == index)
        assert [o["call_id"] for o in events[-1]["response"]["output"]] == [c[0] for c in CALLS]

    def test_client_disconnect_stops_the_upstream_call(self, gw, upstream):
        """When the client leaves mid-stream the gateway closes its upstream connection too."""
        from tests.fakes.server import Chunk, Sleep, Status
        import time

        import httpx

        events = [b'data: {"choices":[{"index":0,"delta":{"content":"tick "}}]}\n\n'] * 200
        upstream.handler = lambda request: [Status(), *[s for e in events for s in (Chunk(e), Sleep(0.02))]]
        before = upstream.abandoned
        with httpx.stream("POST", gw.base_url + "/responses", timeout=30,
                          headers={"Authorization": f"Bearer {gw.key}"},
                          json={"model": "fake-model", "input": "tick", "stream": True}) as answer:
            for chunk in answer.iter_raw():
                if b"output_text.delta" in chunk:
                    break
        deadline = time.monotonic() + 5
        while upstream.abandoned == before:
            assert time.monotonic() < deadline, "the upstream call was not stopped"
            time.sleep(0.05)

"""End to end: the openai SDK -> a real ``assistiv serve`` -> the gemini adapter -> a fake Gemini API."""

from __future__ import annotations

from gateway.providers.gemini import THOUGHT_SIGNATURE_PLACEHOLDER
from tests.fakes import gemini as fake_gemini
from tests.native_e2e import UPSTREAM_KEY, UPSTREAM_MODEL, NativeE2E


class TestGeminiE2E(NativeE2E):
    kind = "gemini"
    fake = fake_gemini
    usage = {"input": 57, "cached": 21, "output": 18, "reasoning": 5}
    length_finish = {"finish": "MAX_TOKENS"}
    filter_finish = {"finish": "SAFETY"}

    def check_request(self, request, prompt, instructions):
        assert request.method == "POST"
        assert request.path == f"/v1beta/models/{UPSTREAM_MODEL}:streamGenerateContent?alt=sse"
        assert request.headers["x-goog-api-key"] == UPSTREAM_KEY
        assert request.json() == {"contents": [{"role": "user", "parts": [{"text": prompt}]}],
                                  "systemInstruction": {"parts": [{"text": instructions}]},
                                  # no max_output_tokens: the limit the hold covers (reserve_output_tokens)
                                  "generationConfig": {"maxOutputTokens": 4096}}

    def tool_calls_answer(self):
        return fake_gemini.tool_calls_answer([("get_weather", {"city": "Paris"})])

    def parallel_calls_answer(self):
        return fake_gemini.tool_calls_answer([("get_weather", {"city": "Paris"}), ("get_time", {"city": "Tokyo"})])

    def check_tool_round_trip(self, body, call_id):
        assert call_id.startswith("call_")
        assert body["contents"] == [
            {"role": "user", "parts": [{"text": "Weather in Paris?"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                                         "thoughtSignature": THOUGHT_SIGNATURE_PLACEHOLDER}]},
            {"role": "user", "parts": [{"functionResponse": {"name": "get_weather",
                                                             "response": {"temp_c": 18}}}]}]
        assert body["tools"][0]["functionDeclarations"][0]["name"] == "get_weather"
        assert body["toolConfig"] == {"functionCallingConfig": {"mode": "AUTO"}}

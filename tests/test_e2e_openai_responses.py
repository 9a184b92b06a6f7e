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

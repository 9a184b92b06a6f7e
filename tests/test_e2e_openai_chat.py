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

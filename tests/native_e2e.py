"""End-to-end checks shared by the native (non-OpenAI) provider kinds: anthropic and gemini.

The official openai SDK talks to a real ``assistiv serve`` configured (TOML) for a fake
upstream of the kind under test. A test module subclasses ``NativeE2E`` (name starting
with ``Test``), names the kind and its fake module, and says what the upstream request must
look like. One fake and one gateway run per class; each test scripts the fake through
``fake.handler``. The function-calling loop is in tests/tool_loop_e2e.py (``ToolLoopE2E``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import httpx
import openai
import pytest

from tests.conftest import Gateway, start_gateway
from tests.fakes.server import FakeServer, Request
from tests.test_responses_e2e import TEXT_EVENT_ORDER_HEAD, TEXT_EVENT_ORDER_TAIL, async_client, parse_sse, sync_client
from tests.tool_loop_e2e import ToolLoopE2E

DELTAS = ["The", " capital", " of France", " is ", "Paris", " (ünïcødé ✓)", "."]
UPSTREAM_MODEL = "upstream-model-v1"
UPSTREAM_KEY = "sk-native-e2e"
READ_TIMEOUT_S = 0.5  # the fake provider's read timeout; stalls last STALL_S
STALL_S = 2.0


def config_toml(kind: str, base_url: str, key_env: str) -> str:
    return f"""
[[providers]]
name = "upstream"
kind = "{kind}"
base_url = "{base_url}"
api_key_env = "{key_env}"
read_timeout_s = {READ_TIMEOUT_S}

[[models]]
id = "fake-model"
provider = "upstream"
upstream_model = "{UPSTREAM_MODEL}"
owned_by = "fake"
"""


def raw_stream(gateway: Gateway, body: dict[str, Any]) -> bytes:
    """POST a streamed create with plain httpx and return every byte received."""
    with httpx.stream("POST", gateway.base_url + "/responses", json={**body, "stream": True}, timeout=30,
                      headers={"Authorization": f"Bearer {gateway.key}"}) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        return answer.read()


class NativeE2E(ToolLoopE2E):
    kind: str = ""
    fake: ModuleType
    usage: dict[str, int] = {}  # what the fake's default usage becomes in the Response
    length_finish: dict[str, Any] = {}  # text_answer kwargs for a "max tokens" finish
    filter_finish: dict[str, Any] = {}  # text_answer kwargs for a content-filter finish

    def check_request(self, request: Request, prompt: str, instructions: str) -> None:
        """Assert the upstream request (path, key header, body) for a prompt with instructions."""
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def stack(cls, tmp_path_factory):
        """(gateway, fake upstream) for this class, the gateway configured for the fake."""
        key_env = f"ASSISTIV_E2E_{cls.kind.upper()}_KEY"
        with FakeServer(cls.fake.text_answer(DELTAS)) as fake:
            path = tmp_path_factory.mktemp("config") / "gateway.toml"
            path.write_text(config_toml(cls.kind, fake.url, key_env))
            gateway = start_gateway(tmp_path_factory.mktemp("gw"), "--config", str(path),
                                    env={key_env: UPSTREAM_KEY})
            try:
                yield gateway, fake
            finally:
                gateway.stop()

    @pytest.fixture
    def gw(self, stack) -> Gateway:
        """The gateway, with the fake reset to the default text answer."""
        gateway, fake = stack
        fake.handler = self.fake.text_answer(DELTAS)
        fake.requests.clear()
        return gateway

    @pytest.fixture
    def upstream(self, stack) -> FakeServer:
        return stack[1]

    def check_usage(self, usage: Any) -> None:
        assert usage.input_tokens == self.usage["input"]
        assert usage.input_tokens_details.cached_tokens == self.usage["cached"]
        assert usage.output_tokens == self.usage["output"]
        assert usage.output_tokens_details.reasoning_tokens == self.usage["reasoning"]
        assert usage.total_tokens == self.usage["input"] + self.usage["output"]

    def test_create_returns_upstream_text_and_usage(self, gw, upstream):
        """responses.create: the fake's deltas joined, its usage, and a correctly mapped upstream request."""
        response = sync_client(gw).responses.create(model="fake-model", input="Capital of France?",
                                                    instructions="Answer in one sentence.")
        assert response.status == "completed"
        assert response.output_text == "".join(DELTAS)
        self.check_usage(response.usage)
        [request] = upstream.requests
        self.check_request(request, "Capital of France?", "Answer in one sentence.")

    async def test_async_stream_has_documented_order(self, gw):
        """create(stream=True) with AsyncOpenAI: documented event order, one delta per upstream delta."""
        stream = await async_client(gw).responses.create(model="fake-model", input="Stream it", stream=True)
        events = [event async for event in stream]
        types = [e.type for e in events]
        assert types[:4] == TEXT_EVENT_ORDER_HEAD
        assert types[-4:] == TEXT_EVENT_ORDER_TAIL
        assert [e.delta for e in events[4:-4]] == DELTAS
        assert [e.sequence_number for e in events] == list(range(len(events)))
        self.check_usage(events[-1].response.usage)

    def test_stream_helper_final_response(self, gw):
        """responses.stream().get_final_response() has the text and usage, equal to retrieve."""
        client = sync_client(gw)
        with client.responses.stream(model="fake-model", input="helper") as stream:
            final = stream.get_final_response()
        assert final.output_text == "".join(DELTAS)
        self.check_usage(final.usage)
        assert client.responses.retrieve(final.id).model_dump(exclude_none=True) == final.model_dump(exclude_none=True)

    @pytest.mark.parametrize("finish, reason", [("length", "max_output_tokens"), ("filter", "content_filter")])
    def test_upstream_finish_reasons_give_incomplete(self, gw, upstream, finish, reason):
        """The upstream's max-tokens and safety finishes make the response incomplete with that reason."""
        upstream.handler = self.fake.text_answer(DELTAS[:2], **(self.length_finish if finish == "length"
                                                                else self.filter_finish))
        response = sync_client(gw).responses.create(model="fake-model", input="x")
        assert response.status == "incomplete" and response.incomplete_details.reason == reason
        assert response.output_text == "".join(DELTAS[:2])

    def test_upstream_http_error_before_output_is_502(self, gw, upstream):
        """An upstream HTTP error before any output: the SDK gets 502 upstream_error with its message."""
        upstream.handler = self.fake.http_error(500, message="upstream is on fire")
        with pytest.raises(openai.APIStatusError) as caught:
            sync_client(gw).responses.create(model="fake-model", input="x")
        assert caught.value.status_code == 502
        assert caught.value.code == "upstream_error"
        assert "upstream is on fire" in caught.value.message

    def test_upstream_stall_before_output_is_504(self, gw, upstream):
        """An upstream silent past read_timeout_s before any output: 504 upstream_timeout."""
        upstream.handler = self.fake.stall(STALL_S)
        with pytest.raises(openai.APIStatusError) as caught:
            sync_client(gw).responses.create(model="fake-model", input="x")
        assert caught.value.status_code == 504
        assert caught.value.code == "upstream_timeout"

    def test_drop_mid_stream_fails_the_stream_and_replays_exactly(self, gw, upstream):
        """A drop after some deltas: those deltas, then error + response.failed; stored failed; replay exact."""
        upstream.handler = self.fake.drop(DELTAS[:3])
        received = raw_stream(gw, {"model": "fake-model", "input": "break please"})
        events = parse_sse(received)
        assert [e["delta"] for e in events if e["type"] == "response.output_text.delta"] == DELTAS[:3]
        assert [e["type"] for e in events[-2:]] == ["error", "response.failed"]
        assert events[-2]["code"] == "upstream_error"
        response_id = events[0]["response"]["id"]
        stored = sync_client(gw).responses.retrieve(response_id)
        assert stored.status == "failed" and stored.output_text == "".join(DELTAS[:3])
        replayed = gw.cli("replay", "--data-dir", str(gw.data_dir), "stream", response_id).stdout
        assert replayed == received

    def test_replay_stream_equals_received_bytes(self, gw):
        """A completed stream's raw bytes equal `assistiv replay stream`."""
        received = raw_stream(gw, {"model": "fake-model", "input": "byte for byte"})
        events = parse_sse(received)
        assert events[-1]["type"] == "response.completed"
        assert events[-1]["response"]["usage"]["input_tokens"] == self.usage["input"]
        replayed = gw.cli("replay", "--data-dir", str(gw.data_dir), "stream", events[0]["response"]["id"]).stdout
        assert replayed == received

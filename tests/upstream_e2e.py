"""End-to-end checks shared by every real-provider kind: SDK -> gateway -> adapter -> fake upstream.

A test module subclasses ``UpstreamE2E`` (its name starts with ``Test``) and names the
provider kind, its fake module and the upstream request it expects. One fake upstream
and one gateway run per class; each test scripts the fake through ``fake.handler``. The
function-calling loop is in tests/tool_loop_e2e.py (``ToolLoopE2E``).
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any, Iterator

import httpx
import openai
import pytest

from ledger.sqlite import connect
from tests.conftest import Gateway, start_gateway
from tests.fakes.server import FakeServer, Request
from tests.test_responses_e2e import TEXT_EVENT_ORDER_HEAD, TEXT_EVENT_ORDER_TAIL, async_client, parse_sse, sync_client
from tests.tool_loop_e2e import ToolLoopE2E

DELTAS = ["The", " capital", " of France", " is ", "Paris", " (ünïcødé ✓)", "."]
READ_TIMEOUT_S = 1.0  # the fake provider's read timeout; stalls last STALL_S
STALL_S = 3.0
CALLS = [("call_w1", "get_weather", '{"location": "Paris", "unit": "celsius"}'),
         ("call_t2", "get_time", '{"city": "Tokyo"}')]


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
upstream_model = "upstream-model-v1"
owned_by = "fake"
input_usd_per_mtok = "1.00"
output_usd_per_mtok = "2.00"
"""


@contextlib.contextmanager
def funded_gateway(tmp_path_factory, kind: str, base_url: str, key_env: str) -> Iterator[Gateway]:
    """A gateway configured for a fake upstream of ``kind`` at ``base_url``, its platform wallet
    funded (the fake model is priced, so the pre-flight needs money); stopped afterwards."""
    path = tmp_path_factory.mktemp("config") / "gateway.toml"
    path.write_text(config_toml(kind, base_url, key_env))
    gateway = start_gateway(tmp_path_factory.mktemp("gw"), "--config", str(path), env={key_env: "sk-upstream-e2e"})
    try:
        httpx.post(gateway.base_url + f"/platforms/{gateway.platform_id}/wallet/topup", json={"amount": 10},
                   headers={"Authorization": f"Bearer {gateway.key}"}, timeout=30).raise_for_status()
        yield gateway
    finally:
        gateway.stop()


def raw_stream(gateway: Gateway, body: dict[str, Any]) -> bytes:
    """POST a streamed create with plain httpx and return every byte received."""
    with httpx.stream("POST", gateway.base_url + "/responses", json={**body, "stream": True}, timeout=30,
                      headers={"Authorization": f"Bearer {gateway.key}"}) as answer:
        assert answer.status_code == 200
        assert answer.headers["content-type"].startswith("text/event-stream")
        return answer.read()


class UpstreamE2E(ToolLoopE2E):
    kind: str = ""
    fake: ModuleType
    usage: dict[str, int] = {}  # what the fake's default usage becomes in the Response

    def check_request(self, request: Request, prompt: str, instructions: str) -> None:
        """Assert the upstream request the adapter made for a text prompt with instructions."""
        raise NotImplementedError

    @pytest.fixture(scope="class")
    @classmethod
    def stack(cls, tmp_path_factory):
        """(gateway, fake upstream) for this class, the gateway configured for the fake."""
        key_env = "ASSISTIV_E2E_" + cls.kind.upper().replace("-", "_") + "_KEY"
        with FakeServer(cls.fake.text_answer(DELTAS)) as fake:
            with funded_gateway(tmp_path_factory, cls.kind, fake.url + "/v1", key_env) as gateway:
                yield gateway, fake

    @pytest.fixture
    def gw(self, stack):
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
        assert request.headers["authorization"] == "Bearer sk-upstream-e2e"
        self.check_request(request, "Capital of France?", "Answer in one sentence.")

    async def test_async_stream_has_documented_order(self, gw):
        """create(stream=True) with AsyncOpenAI: documented event order, one delta per upstream delta."""
        stream = await async_client(gw).responses.create(model="fake-model", input="Stream it", stream=True)
        events = [event async for event in stream]
        types = [e.type for e in events]
        assert types[:4] == TEXT_EVENT_ORDER_HEAD
        assert types[-4:] == TEXT_EVENT_ORDER_TAIL
        assert types[4:-4] == ["response.output_text.delta"] * len(DELTAS)
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

    def test_parallel_tool_calls_become_function_call_items(self, gw, upstream):
        """Upstream parallel tool calls with split arguments become function_call items, arguments exact."""
        upstream.handler = self.fake.tool_calls_answer(CALLS)
        response = sync_client(gw).responses.create(model="fake-model", input="Weather and time?", tools=[
            {"type": "function", "name": name, "parameters": {"type": "object", "properties": {}}}
            for _, name, _ in CALLS])
        calls = [(item.call_id, item.name, item.arguments) for item in response.output]
        assert calls == CALLS
        assert all(item.type == "function_call" and item.status == "completed" for item in response.output)

    @pytest.mark.parametrize("status", [500, 429])
    def test_upstream_http_error_before_output_is_502(self, gw, upstream, status):
        """An upstream HTTP error before any output: the SDK gets 502 upstream_error with its message."""
        upstream.handler = self.fake.http_error(status, "upstream is on fire")
        with pytest.raises(openai.APIStatusError) as caught:
            sync_client(gw).responses.create(model="fake-model", input="x")
        assert caught.value.status_code == 502
        assert caught.value.code == "upstream_error"
        assert "upstream is on fire" in caught.value.message

    @pytest.mark.parametrize("before_headers", [True, False])
    def test_upstream_stall_is_504(self, gw, upstream, before_headers):
        """An upstream silent past read_timeout_s before any output: 504 upstream_timeout."""
        upstream.handler = self.fake.stall(STALL_S, before_headers=before_headers)
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
        assert "response.completed" not in [e["type"] for e in events]
        response_id = events[0]["response"]["id"]
        stored = sync_client(gw).responses.retrieve(response_id)
        assert stored.status == "failed" and stored.error.code == "upstream_error"
        assert stored.output_text == "".join(DELTAS[:3])
        replayed = gw.cli("replay", "--data-dir", str(gw.data_dir), "stream", response_id).stdout
        assert replayed == received

    @pytest.mark.parametrize("outcome", ["completed", "dropped after output", "failed before output"])
    def test_replay_of_an_unstreamed_response_is_its_json_body(self, gw, upstream, outcome):
        """Not streamed: `assistiv replay stream` prints the one JSON body the client got, byte for byte."""
        if outcome == "dropped after output":
            upstream.handler = self.fake.drop(DELTAS[:3])
        elif outcome == "failed before output":
            upstream.handler = self.fake.http_error(500, "upstream is on fire")
        answer = httpx.post(gw.base_url + "/responses", json={"model": "fake-model", "input": "one body"},
                            headers={"Authorization": f"Bearer {gw.key}"}, timeout=30)
        assert answer.status_code == (502 if outcome == "failed before output" else 200)
        conn = connect(str(gw.data_dir / "ledger.db"), readonly=True)
        try:
            [(stream,)] = conn.execute("SELECT stream FROM events WHERE type = 'response.accepted' "
                                       "ORDER BY position DESC LIMIT 1").fetchall()
        finally:
            conn.close()
        response_id = stream.removeprefix("response-")
        if outcome != "failed before output":
            assert answer.json()["id"] == response_id
        replayed = gw.cli("replay", "--data-dir", str(gw.data_dir), "stream", response_id).stdout
        assert replayed == answer.content

    def test_replay_stream_equals_received_bytes(self, gw):
        """A completed stream's raw bytes equal `assistiv replay stream`."""
        received = raw_stream(gw, {"model": "fake-model", "input": "byte for byte"})
        events = parse_sse(received)
        assert events[-1]["type"] == "response.completed"
        assert events[-1]["response"]["usage"]["input_tokens"] == self.usage["input"]
        replayed = gw.cli("replay", "--data-dir", str(gw.data_dir), "stream", events[0]["response"]["id"]).stdout
        assert replayed == received

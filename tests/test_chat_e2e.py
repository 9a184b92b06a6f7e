"""Chat Completions end to end: the official SDK's chat.completions against a real gateway."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from tests.conftest import start_gateway
from tests.fakes import anthropic, gemini, openai_chat, openai_responses
from tests.fakes.server import FakeServer
from tests.test_responses_e2e import expected_text, sync_client

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"location": {"type": "string"}}}}}


def chat_client(gateway, key=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key or gateway.key, timeout=30, max_retries=0)


def raw_chat(gateway, body: dict) -> bytes:
    with httpx.stream("POST", gateway.base_url + "/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {gateway.key}"}) as answer:
        assert answer.status_code == 200, answer.read()
        return answer.read()


def test_plain_completion(gateway):
    """chat.completions.create answers a chat.completion with usage and finish_reason stop."""
    completion = chat_client(gateway).chat.completions.create(
        model="demo", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Bonjour"}])
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.choices[0].message.content == expected_text("Bonjour")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens


def test_streamed_completion_with_usage_and_exact_replay(gateway):
    """A stream with include_usage ends with finish, usage and [DONE]; replay gives the same bytes."""
    client = chat_client(gateway)
    chunks = list(client.chat.completions.create(model="demo", messages=[{"role": "user", "content": "stream"}],
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == expected_text("stream")
    assert chunks[-2].choices[0].finish_reason == "stop" and chunks[-1].choices == []
    assert chunks[-1].usage.completion_tokens >= 3
    received = raw_chat(gateway, {"model": "demo", "messages": [{"role": "user", "content": "bytes"}],
                                  "stream": True})
    assert received.endswith(b"data: [DONE]\n\n") and b'"usage"' not in received
    completion_id = json.loads(received.split(b"\n\n")[0][len(b"data: "):])["id"]
    replayed = gateway.cli("replay", "--data-dir", str(gateway.data_dir), "stream", completion_id).stdout
    assert replayed == received


def test_tool_call_round_trip(gateway):
    """Tools: the demo model calls get_weather; the tool message brings the final answer."""
    client = chat_client(gateway)
    messages = [{"role": "user", "content": "Madrid"}]
    first = client.chat.completions.create(model="demo", messages=messages, tools=[WEATHER])
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"location": "Madrid"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "31C"}]
    second = client.chat.completions.create(model="demo", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "The tools answered: get_weather returned 31C"
    streamed = list(client.chat.completions.create(model="demo", messages=messages[:1], tools=[WEATHER], stream=True))
    deltas = [c.choices[0].delta.tool_calls for c in streamed if c.choices and c.choices[0].delta.tool_calls]
    assert deltas[0][0].id and deltas[0][0].function.name == "get_weather"
    assert "".join(d[0].function.arguments or "" for d in deltas) == '{"location":"Madrid"}'


@pytest.mark.parametrize("body, status, code, param", [
    ({"tools": [{"type": "mcp", "server_label": "x", "server_url": "https://x"}]}, 422, "unsupported_tool_type",
     "tools[0].type"),
    ({"n": 2}, 400, "unsupported_value", "n"),
    ({"bogus": True}, 400, "unknown_parameter", "bogus"),
    ({"messages": [{"role": "tool", "content": "x"}]}, 400, "missing_required_parameter", "messages[0].tool_call_id"),
    ({"stop": ["a", "b", "c", "d", "e"]}, 400, "invalid_value", "stop"),
])
def test_bad_chat_requests(gateway, body, status, code, param):
    """Bad chat requests get the documented status, code and param."""
    answer = httpx.post(gateway.base_url + "/chat/completions", timeout=30,
                        headers={"Authorization": f"Bearer {gateway.key}"},
                        json={"model": "demo", "messages": [{"role": "user", "content": "x"}], **body})
    assert answer.status_code == status
    assert (answer.json()["error"]["code"], answer.json()["error"]["param"]) == (code, param)


def test_chat_is_logged_as_chat_and_not_a_response(gateway):
    """Logs mark request_type chat.completion; the Responses routes do not serve chat ids."""
    completion = chat_client(gateway).chat.completions.create(model="demo", messages=[{"role": "user", "content": "x"}])
    rows = httpx.get(gateway.base_url + f"/platforms/{gateway.platform_id}/logs", timeout=30,
                     headers={"Authorization": f"Bearer {gateway.key}"}).json()["data"]
    assert [r["request_type"] for r in rows if r["response_id"] == completion.id] == ["chat.completion"]
    with pytest.raises(openai.NotFoundError):
        sync_client(gateway).responses.retrieve(completion.id)


PROVIDERS = {
    "openai-chat": (openai_chat, "/v1"),
    "openai-responses": (openai_responses, "/v1"),
    "anthropic": (anthropic, ""),
    "gemini": (gemini, ""),
}
DELTAS = ["Chat", " through", " every", " provider", "."]


@pytest.fixture(scope="module", params=sorted(PROVIDERS))
def upstream_gateway(request, tmp_path_factory):
    """A gateway whose model "fake-model" is served by a fake upstream of each provider kind."""
    fake_module, suffix = PROVIDERS[request.param]
    with FakeServer(fake_module.text_answer(DELTAS)) as fake:
        config = tmp_path_factory.mktemp("cfg") / "gw.toml"
        config.write_text(f'[[providers]]\nname = "up"\nkind = "{request.param}"\nbase_url = "{fake.url}{suffix}"\n'
                          f'api_key_env = "CHAT_E2E_KEY"\n\n[[models]]\nid = "fake-model"\nprovider = "up"\n'
                          'input_usd_per_mtok = "1"\noutput_usd_per_mtok = "2"\n')
        gateway = start_gateway(tmp_path_factory.mktemp("gw"), "--config", str(config),
                                env={"CHAT_E2E_KEY": "sk-upstream"})
        httpx.post(gateway.base_url + f"/platforms/{gateway.platform_id}/wallet/topup", json={"amount": 5},
                   headers={"Authorization": f"Bearer {gateway.key}"}, timeout=30)
        try:
            yield gateway, fake, fake_module
        finally:
            gateway.stop()


def test_chat_on_each_provider_kind(upstream_gateway):
    """Plain and streamed chat completions carry the upstream's text on every provider kind."""
    gateway, fake, module = upstream_gateway
    fake.handler = module.text_answer(DELTAS)
    client = chat_client(gateway)
    plain = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
    assert plain.choices[0].message.content == "".join(DELTAS) and plain.usage.prompt_tokens > 0
    chunks = list(client.chat.completions.create(model="fake-model", stream=True,
                                                 messages=[{"role": "user", "content": "hi"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(DELTAS)


def test_upstream_drop_ends_chat_stream_with_error_chunk(upstream_gateway):
    """An upstream drop mid-stream: deltas so far, a final error chunk, no [DONE]; emitted usage is billed."""
    gateway, fake, module = upstream_gateway
    fake.handler = module.drop(DELTAS[:2])
    received = raw_chat(gateway, {"model": "fake-model", "messages": [{"role": "user", "content": "x"}],
                                  "stream": True})
    frames = [f for f in received.split(b"\n\n") if f]
    assert b"[DONE]" not in received
    last = json.loads(frames[-1][len(b"data: "):])
    assert set(last) == {"error"} and last["error"]["code"] == "upstream_error"
    assert b"through" in received
    with pytest.raises(openai.APIError):
        list(chat_client(gateway).chat.completions.create(model="fake-model", stream=True,
                                                          messages=[{"role": "user", "content": "x"}]))
    deadline = time.monotonic() + 5
    while True:
        rows = httpx.get(gateway.base_url + f"/platforms/{gateway.platform_id}/logs", timeout=30,
                         headers={"Authorization": f"Bearer {gateway.key}"}).json()["data"]
        interrupted = [r for r in rows if r["status"] == "interrupted"]
        if interrupted or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert interrupted and interrupted[0]["request_type"] == "chat.completion"
    assert interrupted[0]["completion_tokens"] >= 1 and interrupted[0]["billing_status"] == "billed"

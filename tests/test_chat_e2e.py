"""Chat Completions end to end: the official SDK's chat.completions against a real gateway."""

from __future__ import annotations

import json

import httpx
import openai
import pytest

from tests.conftest import start_gateway
from tests.test_responses_e2e import expected_text, sync_client

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"location": {"type": "string"}}}}}


MIN_OUTPUT_TOKENS = 16
CONFIG = f"""
[[providers]]
name = "demo"
kind = "demo"

[[models]]
id = "demo"
provider = "demo"

[[models]]
id = "demo-min"
provider = "demo"
min_output_tokens = {MIN_OUTPUT_TOKENS}
"""


@pytest.fixture(scope="module")
def gateway(tmp_path_factory):
    """One gateway for this module: the demo model, and demo-min with a minimum of output tokens."""
    config = tmp_path_factory.mktemp("cfg") / "chat.toml"
    config.write_text(CONFIG)
    gw = start_gateway(tmp_path_factory.mktemp("gw"), "--config", str(config))
    yield gw
    gw.stop()


def chat_client(gateway, key=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key or gateway.key, timeout=30, max_retries=0)


def replay(gateway, completion_id: str, *extra: str) -> bytes:
    return gateway.cli("replay", "--data-dir", str(gateway.data_dir), "stream", completion_id, *extra).stdout


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
    assert replay(gateway, completion_id) == received


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


@pytest.mark.parametrize("limits, param", [
    ({"max_tokens": MIN_OUTPUT_TOKENS - 1}, "max_tokens"),
    ({"max_completion_tokens": MIN_OUTPUT_TOKENS - 1}, "max_completion_tokens"),
    ({"max_completion_tokens": None, "max_tokens": 1}, "max_tokens"),
    ({"max_completion_tokens": 2, "max_tokens": None}, "max_completion_tokens"),
    ({"max_completion_tokens": 3, "max_tokens": 500}, "max_completion_tokens"),  # it wins, as at OpenAI
])
def test_below_the_minimum_of_output_tokens_is_422(gateway, limits, param):
    """A limit below the model's minimum is 422 integer_below_min_value naming the field used; nothing recorded."""
    position = httpx.get(gateway.url + "/healthz", timeout=30).json()["position"]
    answer = httpx.post(gateway.base_url + "/chat/completions", timeout=30,
                        headers={"Authorization": f"Bearer {gateway.key}"},
                        json={"model": "demo-min", "messages": [{"role": "user", "content": "x"}], **limits})
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert (error["code"], error["param"], error["type"]) == ("integer_below_min_value", param, "invalid_request_error")
    assert f"Invalid '{param}'" in error["message"] and f">= {MIN_OUTPUT_TOKENS}" in error["message"]
    assert httpx.get(gateway.url + "/healthz", timeout=30).json()["position"] == position


def test_at_the_minimum_of_output_tokens_is_answered(gateway):
    """max_completion_tokens equal to the model's minimum (max_tokens null) is answered through the SDK."""
    completion = chat_client(gateway).chat.completions.create(
        model="demo-min", messages=[{"role": "user", "content": "x"}], max_completion_tokens=MIN_OUTPUT_TOKENS,
        extra_body={"max_tokens": None})
    assert completion.choices[0].finish_reason == "stop"


def test_replay_of_an_unstreamed_completion_prints_its_json_body(gateway):
    """`replay stream` of a non-streamed chat completion prints the JSON body the client got; --explain says so."""
    answer = httpx.post(gateway.base_url + "/chat/completions", timeout=30,
                        headers={"Authorization": f"Bearer {gateway.key}"},
                        json={"model": "demo", "messages": [{"role": "user", "content": "one object"}]})
    assert answer.status_code == 200
    completion_id = answer.json()["id"]
    assert replay(gateway, completion_id) == answer.content
    explained = replay(gateway, completion_id, "--explain").decode()
    assert f"sent to the client: one JSON object, HTTP 200 with a chat.completion, {len(answer.content):,} bytes" \
        in explained
    assert "stopped: completed" in explained


def test_explain_counts_chat_chunks(gateway):
    """`replay stream --explain` of a chat stream counts its chat.completion.chunk frames and the [DONE]."""
    received = raw_chat(gateway, {"model": "demo", "messages": [{"role": "user", "content": "count us"}],
                                  "stream": True, "stream_options": {"include_usage": True}})
    frames = [f for f in received.split(b"\n\n") if f]
    chunks = len(frames) - 1  # all but [DONE]: role, deltas, finish, usage
    assert frames[-1] == b"data: [DONE]" and chunks >= 4
    completion_id = json.loads(frames[0][len(b"data: "):])["id"]
    explained = replay(gateway, completion_id, "--explain").decode()
    assert f"{len(received):,} bytes of SSE, {chunks:,} chat.completion.chunk frames, then data: [DONE]" in explained

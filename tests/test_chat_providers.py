"""Chat Completions on every provider kind: the official SDK against a gateway whose model is
served by a loopback fake upstream of each kind (openai-chat, openai-responses, anthropic,
gemini). Text, tools, finish reasons, sampling fields, interruptions, billing and replay."""

from __future__ import annotations

import json
import math
import sqlite3
import time
from decimal import Decimal
from typing import Any, Callable

import httpx
import openai
import pytest

from tests.conftest import start_gateway
from tests.fakes import anthropic, gemini, openai_chat, openai_responses
from tests.fakes.server import FakeServer
from tests.test_chat_e2e import WEATHER, chat_client, raw_chat

PROVIDERS = {
    "openai-chat": (openai_chat, "/v1"),
    "openai-responses": (openai_responses, "/v1"),
    "anthropic": (anthropic, ""),
    "gemini": (gemini, ""),
}
DELTAS = ["Chat", " through", " every", " provider", "."]
INPUT_USD_PER_MTOK, OUTPUT_USD_PER_MTOK = 1, 2  # so a charge in micro-USD is prompt + 2 x completion tokens
ARGS = '{"location": "Madrid"}'

LENGTH = {  # the upstream stops at its token limit, in each provider's words
    "openai-chat": lambda: openai_chat.text_answer(DELTAS, finish="length"),
    "openai-responses": lambda: openai_responses.incomplete(DELTAS),
    "anthropic": lambda: anthropic.text_answer(DELTAS, stop_reason="max_tokens"),
    "gemini": lambda: gemini.text_answer(DELTAS, finish="MAX_TOKENS"),
}
TOOL_CALL = {  # the upstream calls get_weather (Gemini sends no call id: the adapter makes one)
    "openai-chat": lambda: openai_chat.tool_calls_answer([("call_w1", "get_weather", ARGS)]),
    "openai-responses": lambda: openai_responses.tool_calls_answer([("call_w1", "get_weather", ARGS)]),
    "anthropic": lambda: anthropic.tool_calls_answer([("call_w1", "get_weather", ARGS)]),
    "gemini": lambda: gemini.tool_calls_answer([("get_weather", json.loads(ARGS))]),
}

TRUNCATED_TOOL_CALL = {  # the upstream hits its token limit inside a tool call's arguments
    "openai-chat": lambda: openai_chat.tool_calls_answer([("call_w1", "get_weather", ARGS[:9])], finish="length"),
    "openai-responses": lambda: lambda request: openai_responses.Stream().start().tool_calls(
        [("call_w1", "get_weather", ARGS[:9])]).incomplete("max_output_tokens").steps(),
    "anthropic": lambda: lambda request: anthropic.sse(
        anthropic.head() + anthropic.tool_block("call_w1", "get_weather", ARGS[:9], 0) + anthropic.tail("max_tokens")),
    "gemini": lambda: lambda request: gemini.sse([gemini.chunk(
        [{"functionCall": {"name": "get_weather", "args": {}}}], finish="MAX_TOKENS", usage=gemini.USAGE)]),
}


def _tool_results(body: dict) -> list[Any]:
    """The tool results an upstream request carries, in its provider's own form."""
    found: list[Any] = []
    for message in body.get("messages", []):  # openai-chat; anthropic (tool_result blocks in a user turn)
        if message.get("role") == "tool":
            found.append((message["tool_call_id"], message["content"]))
        for block in message.get("content") if isinstance(message.get("content"), list) else []:
            if block.get("type") == "tool_result":
                found.append((block["tool_use_id"], block["content"]))
    for item in body.get("input", []):  # openai-responses
        if item.get("type") == "function_call_output":
            found.append((item["call_id"], item["output"]))
    for content in body.get("contents", []):  # gemini: by function name
        for part in content["parts"]:
            if "functionResponse" in part:
                found.append((part["functionResponse"]["name"], part["functionResponse"]["response"]["output"]))
    return found


SAMPLING: dict[str, Callable[[dict], Any]] = {  # stop, penalties and json_object as each upstream got them
    "openai-chat": lambda b: (b["stop"], b["presence_penalty"], b["frequency_penalty"], b["response_format"]),
    "openai-responses": lambda b: ("stop" in b, "presence_penalty" in b, "frequency_penalty" in b,
                                   b["text"]["format"]),
    "anthropic": lambda b: (b["stop_sequences"], "presence_penalty" in b, "frequency_penalty" in b,
                            "single valid JSON object" in b["system"]),
    "gemini": lambda b: (b["generationConfig"]["stopSequences"], b["generationConfig"]["presencePenalty"],
                         b["generationConfig"]["frequencyPenalty"], b["generationConfig"]["responseMimeType"]),
}
SAMPLING_EXPECTED = {
    "openai-chat": (["END"], 0.5, 0.25, {"type": "json_object"}),
    "openai-responses": (False, False, False, {"type": "json_object"}),  # the Responses API has none of them
    "anthropic": (["END"], False, False, True),  # no penalties; JSON is asked for in the system prompt
    "gemini": (["END"], 0.5, 0.25, "application/json"),
}


@pytest.fixture(scope="module", params=sorted(PROVIDERS))
def upstream_gateway(request, tmp_path_factory):
    """A gateway whose model "fake-model" is served by a fake upstream of each provider kind."""
    fake_module, suffix = PROVIDERS[request.param]
    with FakeServer(fake_module.text_answer(DELTAS)) as fake:
        config = tmp_path_factory.mktemp("cfg") / "gw.toml"
        config.write_text(f'[[providers]]\nname = "up"\nkind = "{request.param}"\nbase_url = "{fake.url}{suffix}"\n'
                          f'api_key_env = "CHAT_E2E_KEY"\n\n[[models]]\nid = "fake-model"\nprovider = "up"\n'
                          f'input_usd_per_mtok = "{INPUT_USD_PER_MTOK}"\n'
                          f'output_usd_per_mtok = "{OUTPUT_USD_PER_MTOK}"\n')
        gateway = start_gateway(tmp_path_factory.mktemp("gw"), "--config", str(config),
                                env={"CHAT_E2E_KEY": "sk-upstream"})
        topup = httpx.post(gateway.base_url + f"/platforms/{gateway.platform_id}/wallet/topup", json={"amount": 5},
                           headers={"Authorization": f"Bearer {gateway.key}"}, timeout=30)
        assert topup.status_code == 201, topup.text
        try:
            yield gateway, fake, fake_module, request.param
        finally:
            gateway.stop()


def log_row(gateway, completion_id: str) -> dict:
    """The log row of ``completion_id`` once its charge is recorded (polls for up to 5 s)."""
    deadline = time.monotonic() + 5
    while True:
        rows = httpx.get(gateway.base_url + f"/platforms/{gateway.platform_id}/logs", params={"limit": 100},
                         headers={"Authorization": f"Bearer {gateway.key}"}, timeout=30).json()["data"]
        mine = [r for r in rows if r["response_id"] == completion_id]
        if mine or time.monotonic() > deadline:
            assert len(mine) == 1, mine
            return mine[0]
        time.sleep(0.05)


def ledger_events(gateway, completion_id: str) -> list[tuple[str, dict]]:
    """(type, data) of every event that names ``completion_id``, in ledger order."""
    conn = sqlite3.connect(f"file:{gateway.data_dir / 'ledger.db'}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT type, data FROM events WHERE stream = ? OR json_extract(data, '$.response_id') = ?"
                            " ORDER BY position", (f"response-{completion_id}", completion_id)).fetchall()
    finally:
        conn.close()
    return [(kind, json.loads(data)) for kind, data in rows]


def replay(gateway, completion_id: str, *extra: str) -> bytes:
    return gateway.cli("replay", "--data-dir", str(gateway.data_dir), "stream", completion_id, *extra).stdout


def first_id(received: bytes) -> str:
    return json.loads(received.split(b"\n\n")[0][len(b"data: "):])["id"]


def test_chat_on_each_provider_kind(upstream_gateway):
    """Plain and streamed chat completions carry the upstream's text on every provider kind."""
    gateway, fake, module, _ = upstream_gateway
    fake.handler = module.text_answer(DELTAS)
    client = chat_client(gateway)
    plain = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}])
    assert plain.choices[0].message.content == "".join(DELTAS) and plain.usage.prompt_tokens > 0
    assert plain.choices[0].finish_reason == "stop"
    chunks = list(client.chat.completions.create(model="fake-model", stream=True,
                                                 messages=[{"role": "user", "content": "hi"}]))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "".join(DELTAS)


def test_token_limit_says_length(upstream_gateway):
    """An answer cut at the upstream's token limit ends with finish_reason "length", plain and streamed."""
    gateway, fake, _, kind = upstream_gateway
    fake.handler = LENGTH[kind]()
    client = chat_client(gateway)
    plain = client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "hi"}],
                                           max_completion_tokens=5)
    assert plain.choices[0].finish_reason == "length" and plain.choices[0].message.content == "".join(DELTAS)
    chunks = list(client.chat.completions.create(model="fake-model", stream=True, max_tokens=5,
                                                 messages=[{"role": "user", "content": "hi"}]))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]


def test_tool_call_cut_by_the_token_limit_says_length(upstream_gateway):
    """A tool call cut short by the token limit says finish_reason "length", not "tool_calls" (partial arguments)."""
    gateway, fake, _, kind = upstream_gateway
    fake.handler = TRUNCATED_TOOL_CALL[kind]()
    client = chat_client(gateway)
    messages = [{"role": "user", "content": "Weather in Madrid?"}]
    plain = client.chat.completions.create(model="fake-model", messages=messages, tools=[WEATHER])
    assert plain.choices[0].finish_reason == "length"
    assert [c.function.name for c in plain.choices[0].message.tool_calls] == ["get_weather"]
    chunks = list(client.chat.completions.create(model="fake-model", messages=messages, tools=[WEATHER], stream=True))
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["length"]


def test_tool_calls_round_trip(upstream_gateway):
    """Tool calls (plain and streamed) reach the SDK; the tool message reaches the upstream in its own form."""
    gateway, fake, module, kind = upstream_gateway
    fake.handler = TOOL_CALL[kind]()
    client = chat_client(gateway)
    messages = [{"role": "user", "content": "Weather in Madrid?"}]
    first = client.chat.completions.create(model="fake-model", messages=messages, tools=[WEATHER])
    assert first.choices[0].finish_reason == "tool_calls"
    [call] = first.choices[0].message.tool_calls
    assert call.id and call.function.name == "get_weather" and json.loads(call.function.arguments) == json.loads(ARGS)
    chunks = list(client.chat.completions.create(model="fake-model", messages=messages, tools=[WEATHER], stream=True))
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    assert deltas[0].id and deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == json.loads(ARGS)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["tool_calls"]
    fake.handler = module.text_answer(["It is 31C in Madrid."])
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "31C"}]
    second = client.chat.completions.create(model="fake-model", messages=messages, tools=[WEATHER])
    assert second.choices[0].message.content == "It is 31C in Madrid." and second.choices[0].finish_reason == "stop"
    by = "get_weather" if kind == "gemini" else call.id
    assert _tool_results(fake.requests[-1].json()) == [(by, "31C")]


def test_sampling_fields_reach_the_upstream_user_and_metadata_the_ledger(upstream_gateway):
    """stop, penalties and json_object reach each upstream in its own form; user and metadata are recorded only."""
    gateway, fake, module, kind = upstream_gateway
    fake.handler = module.text_answer(['{"ok": true}'])
    completion = chat_client(gateway).chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": "JSON please"}], stop="END",
        presence_penalty=0.5, frequency_penalty=0.25, response_format={"type": "json_object"},
        user="end-user-42", metadata={"order": "A-17"})
    assert completion.choices[0].message.content == '{"ok": true}'
    sent = fake.requests[-1].json()
    assert SAMPLING[kind](sent) == SAMPLING_EXPECTED[kind]
    assert "end-user-42" not in json.dumps(sent) and "A-17" not in json.dumps(sent)
    [accepted] = [data for type_, data in ledger_events(gateway, completion.id) if type_ == "response.accepted"]
    assert accepted["params"]["user"] == "end-user-42" and accepted["params"]["metadata"] == {"order": "A-17"}


def test_upstream_drop_ends_chat_stream_with_error_chunk_and_replays_exactly(upstream_gateway):
    """An upstream drop mid-stream: deltas, an error chunk, no [DONE]; billed; replay gives the same bytes."""
    gateway, fake, module, _ = upstream_gateway
    fake.handler = module.drop(DELTAS[:2])
    received = raw_chat(gateway, {"model": "fake-model", "messages": [{"role": "user", "content": "x"}],
                                  "stream": True, "stream_options": {"include_usage": True}})
    frames = [f for f in received.split(b"\n\n") if f]
    assert b"[DONE]" not in received and b"through" in received
    last = json.loads(frames[-1][len(b"data: "):])
    assert set(last) == {"error"} and last["error"]["code"] == "upstream_error"
    completion_id = first_id(received)
    assert replay(gateway, completion_id) == received
    explained = replay(gateway, completion_id, "--explain").decode()
    assert "the client got a final error chunk and no [DONE]" in explained
    assert f"{len(received):,} bytes of SSE, {len(frames) - 1} chat.completion.chunk frames, then an error chunk" \
        in explained
    row = log_row(gateway, completion_id)
    assert row["request_type"] == "chat.completion" and row["status"] == "interrupted"
    assert row["completion_tokens"] >= 1 and row["billing_status"] == "billed"
    with pytest.raises(openai.APIError):
        list(chat_client(gateway).chat.completions.create(model="fake-model", stream=True,
                                                          messages=[{"role": "user", "content": "x"}]))


def test_unstreamed_drop_is_502_billed_once_and_not_retried(upstream_gateway):
    """A non-streamed answer broken mid-way is a 502 upstream_error (no partial 200), billed once, never retried."""
    gateway, fake, module, _ = upstream_gateway
    fake.handler = module.drop(DELTAS[:2])
    calls_before = len(fake.requests)
    client = openai.OpenAI(base_url=gateway.base_url, api_key=gateway.key, timeout=30, max_retries=2)
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="fake-model", messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 502 and failed.value.code == "upstream_error"
    assert failed.value.response.headers["x-should-retry"] == "false"
    assert set(failed.value.body) == {"message", "type", "param", "code"} and failed.value.type == "server_error"
    assert len(fake.requests) == calls_before + 1  # the SDK obeyed x-should-retry: no second, billed run
    completion_id = failed.value.message.split("(")[-1].split(")")[0]
    assert completion_id.startswith("chatcmpl-")
    row = log_row(gateway, completion_id)
    assert row["status"] == "interrupted" and row["billing_status"] == "billed" and row["completion_tokens"] >= 1
    assert f"The {row['completion_tokens']} output tokens" in failed.value.message
    assert [t for t, _ in ledger_events(gateway, completion_id)].count("usage.charged") == 1
    assert replay(gateway, completion_id) == failed.value.response.content  # the JSON body, byte for byte
    explained = replay(gateway, completion_id, "--explain").decode()
    assert "the client got an HTTP error, no partial answer" in explained
    assert f"one JSON object, HTTP 502 with an error, {len(failed.value.response.content):,} bytes" in explained


def test_client_leaving_mid_stream_is_charged_the_emitted_usage(upstream_gateway):
    """A client that leaves a chat stream mid-answer is charged exactly what was emitted; the hold is released."""
    gateway, fake, module, _ = upstream_gateway
    fake.handler = module.stall(3, DELTAS[:3])
    received = b""
    with httpx.stream("POST", gateway.base_url + "/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {gateway.key}"},
                      json={"model": "fake-model", "messages": [{"role": "user", "content": "x"}],
                            "stream": True}) as answer:
        for piece in answer.iter_raw():
            received += piece
            if b" every" in received:
                break
    completion_id = first_id(received)
    row = log_row(gateway, completion_id)
    assert row["status"] == "interrupted" and row["billing_status"] == "billed"
    finished = [d for t, d in ledger_events(gateway, completion_id) if t == "response.finished"]
    assert [(f["status"], f["interruption"]) for f in finished] == [("incomplete", "client_disconnected")]
    emitted = "".join(d["delta"] for t, d in ledger_events(gateway, completion_id) if t == "response.text_delta")
    assert emitted == "".join(DELTAS[:3])
    usage = finished[0]["usage"]
    assert (row["prompt_tokens"], row["completion_tokens"]) == (usage["input_tokens"], usage["output_tokens"])
    assert row["token_count_method"] == "estimated"  # no upstream reported usage before the client left
    assert (row["prompt_tokens"], row["completion_tokens"]) == (math.ceil(len("x") / 4), math.ceil(len(emitted) / 4))
    cost = row["prompt_tokens"] * INPUT_USD_PER_MTOK + row["completion_tokens"] * OUTPUT_USD_PER_MTOK
    assert Decimal(row["estimated_cost_usd"]) * 1_000_000 == cost
    wallet = httpx.get(gateway.base_url + f"/platforms/{gateway.platform_id}/wallet", timeout=30,
                       headers={"Authorization": f"Bearer {gateway.key}"}).json()
    assert wallet["reserved"] == 0

"""The gemini adapter against a fake streamGenerateContent API over real HTTP (httpx, loopback)."""

from __future__ import annotations

import json
import time

import httpx2
import pytest
import trio

from gateway.config import ProviderConfig
from gateway.providers.base import Finish, ModelCall, TextChunk, UsageReport
from gateway.providers.gemini import GeminiProvider
from ledger.events import Usage
from tests.fakes import gemini as fake
from tests.fakes.collect import drain, tail, text, tool_calls
from tests.fakes.server import FakeServer

KEY_ENV = "TEST_GEMINI_KEY"
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": False},
         {"name": "lookup", "description": None, "parameters": None, "strict": False}]


def user(text_: str) -> dict:
    return {"role": "user", "content": [{"type": "input_text", "text": text_}]}


@pytest.fixture
def upstream(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "AIza-test")
    with FakeServer(fake.text_answer(["Hello", ", world"])) as server:
        yield server


async def run(server, call: ModelCall, handler=None, read_timeout_s: float = 5.0):
    """Drive one call through a fresh adapter; returns (events, error)."""
    if handler is not None:
        server.handler = handler
    config = ProviderConfig(name="gem", kind="gemini", base_url=server.url, api_key_env=KEY_ENV,
                            read_timeout_s=read_timeout_s)
    async with httpx2.AsyncClient() as client:
        return await drain(GeminiProvider(config, client), call)


async def sent(server, call: ModelCall) -> dict:
    """The JSON body the adapter posted for ``call``."""
    _, error = await run(server, call)
    assert error is None
    return server.requests[-1].json()


async def test_request_path_key_system_and_generation_config(upstream):
    """POST .../models/{model}:streamGenerateContent?alt=sse with x-goog-api-key; system + generationConfig."""
    call = ModelCall("gemini-2.5-flash",
                     [{"role": "developer", "content": [{"type": "input_text", "text": "No emoji."}]}, user("hi")],
                     instructions="Be brief.", temperature=1.5, top_p=0.8, max_output_tokens=64)
    body = await sent(upstream, call)
    request = upstream.requests[-1]
    assert (request.method, request.path) == ("POST", "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse")
    assert request.headers["x-goog-api-key"] == "AIza-test"
    assert body["systemInstruction"] == {"parts": [{"text": "Be brief.\n\nNo emoji."}]}
    assert body["contents"] == [{"role": "user", "parts": [{"text": "hi"}]}]
    assert body["generationConfig"] == {"temperature": 1.5, "topP": 0.8, "maxOutputTokens": 64}
    assert "tools" not in body and "toolConfig" not in body


@pytest.mark.parametrize("fmt, expected", [
    ({"type": "json_object"}, {"responseMimeType": "application/json"}),
    ({"type": "json_schema", "name": "n", "schema": {"type": "object", "additionalProperties": False}, "strict": True},
     {"responseMimeType": "application/json", "responseJsonSchema": {"type": "object", "additionalProperties": False}}),
])
async def test_json_formats(upstream, fmt, expected):
    """JSON formats set responseMimeType; json_schema passes the schema as responseJsonSchema."""
    body = await sent(upstream, ModelCall("m", [user("x")], text_format=fmt))
    assert body["generationConfig"] == expected
    assert "systemInstruction" not in body


async def test_roles_merge_and_function_round_trip(upstream):
    """assistant -> model with functionCall parts; tool outputs -> functionResponse by looked-up name."""
    messages = [
        user("first"), user("second"),
        {"role": "assistant", "content": [],
         "tool_calls": [{"call_id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
                        {"call_id": "call_2", "name": "lookup", "arguments": ""}]},
        {"role": "tool", "call_id": "call_1", "content": [{"type": "input_text", "text": '{"temp": 18}'}]},
        {"role": "tool", "call_id": "call_2", "content": [{"type": "input_text", "text": "not json"}]},
        user("thanks"),
        {"role": "assistant", "content": [{"type": "output_text", "text": "You're welcome."}]},
    ]
    body = await sent(upstream, ModelCall("m", messages))
    assert body["contents"] == [
        {"role": "user", "parts": [{"text": "first"}, {"text": "second"}]},
        {"role": "model", "parts": [
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
             "thoughtSignature": "skip_thought_signature_validator"},
            {"functionCall": {"name": "lookup", "args": {}}, "thoughtSignature": "skip_thought_signature_validator"}]},
        {"role": "user", "parts": [
            {"functionResponse": {"name": "get_weather", "response": {"temp": 18}}},
            {"functionResponse": {"name": "lookup", "response": {"output": "not json"}}},
            {"text": "thanks"}]},
        {"role": "model", "parts": [{"text": "You're welcome."}]},
    ]


async def test_tool_output_without_its_call_fails_before_upstream(upstream):
    """A tool output whose call_id no assistant turn made: ProviderError, no request sent."""
    call = ModelCall("m", [user("x"), {"role": "tool", "call_id": "call_x", "content": []}])
    events, error = await run(upstream, call)
    assert events == [] and "call_x" in error.message and upstream.requests == []


@pytest.mark.parametrize("choice, expected", [
    ("auto", {"mode": "AUTO"}),
    ("none", {"mode": "NONE"}),
    ("required", {"mode": "ANY"}),
    ({"name": "lookup"}, {"mode": "ANY", "allowedFunctionNames": ["lookup"]}),
    ({"type": "function", "name": "lookup"}, {"mode": "ANY", "allowedFunctionNames": ["lookup"]}),
])
async def test_tools_and_tool_choice(upstream, choice, expected):
    """Tools become functionDeclarations; tool_choice becomes functionCallingConfig."""
    body = await sent(upstream, ModelCall("m", [user("x")], tools=TOOLS, tool_choice=choice))
    assert body["tools"] == [{"functionDeclarations": [
        {"name": "get_weather", "description": "Weather for a city", "parameters": TOOLS[0]["parameters"]},
        {"name": "lookup", "description": ""}]}]
    assert body["toolConfig"] == {"functionCallingConfig": expected}


async def test_images_and_files_become_inline_or_file_data(upstream):
    """Data URLs -> inlineData; URLs -> fileData with a guessed MIME type."""
    content = [{"type": "input_image", "image_url": "data:image/webp;base64,UklGRg==", "detail": "auto"},
               {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "low"},
               {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
               {"type": "input_file", "file_url": "https://example.com/report"}]
    body = await sent(upstream, ModelCall("m", [{"role": "user", "content": content}]))
    assert body["contents"][0]["parts"] == [
        {"inlineData": {"mimeType": "image/webp", "data": "UklGRg=="}},
        {"fileData": {"mimeType": "image/png", "fileUri": "https://example.com/cat.png"}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        {"fileData": {"mimeType": "application/pdf", "fileUri": "https://example.com/report"}}]


async def test_text_streams_across_odd_splits_last_usage_wins(upstream):
    """Text survives odd splits and CRLF framing; thought parts are hidden; the final usage is reported."""
    deltas = ["Hel", "lo, wörld", " — ", "ok\n\nnext"]
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.text_answer(deltas, thought="hmm"))
    assert error is None
    assert [e.text for e in events if isinstance(e, TextChunk)] == deltas
    assert tail(events) == [
        UsageReport(Usage(input_tokens=57, cached_input_tokens=21, output_tokens=18, reasoning_tokens=5)),
        Finish("stop")]


async def test_function_calls_get_unique_ids_and_exact_arguments(upstream):
    """Each functionCall -> ToolCallStart with a fresh id + its JSON args; the same calls again get new ids."""
    calls = [("get_weather", {"city": "Paris"}), ("lookup", {"q": "ünï \"x\"", "n": [1, 2]}),
             ("get_weather", {"city": "Oslo"})]
    events, error = await run(upstream, ModelCall("m", [user("x")], tools=TOOLS),
                              fake.tool_calls_answer(calls, text="Checking."))
    assert error is None and text(events) == "Checking."
    got = tool_calls(events)
    assert [(name, json.loads(args)) for _, name, args in got] == [(n, a) for n, a in calls]
    assert all(cid.startswith("call_") and len(cid) == 5 + 24 for cid, _, _ in got)
    assert len({cid for cid, _, _ in got}) == 3
    again, _ = await run(upstream, ModelCall("m", [user("x")], tools=TOOLS))
    assert [(n, a) for _, n, a in tool_calls(again)] == [(n, a) for _, n, a in got]
    assert not {cid for cid, _, _ in tool_calls(again)} & {cid for cid, _, _ in got}
    assert events[-1] == Finish("tool_calls")


async def test_function_call_ids_from_gemini_are_kept(upstream):
    """A functionCall that carries an ``id`` keeps it as the call id."""
    events, _ = await run(upstream, ModelCall("m", [user("x")]),
                          fake.tool_calls_answer([("lookup", {}), ("lookup", {"a": 1})], ids=["fc_1", "fc_2"]))
    assert tool_calls(events) == [("fc_1", "lookup", "{}"), ("fc_2", "lookup", '{"a":1}')]


@pytest.mark.parametrize("finish, reason", [
    ("STOP", "stop"), ("MAX_TOKENS", "length"), ("SAFETY", "content_filter"), ("RECITATION", "content_filter"),
    ("PROHIBITED_CONTENT", "content_filter"), ("BLOCKLIST", "content_filter"), ("SPII", "content_filter"),
    ("OTHER", "stop"),
])
async def test_finish_reasons(upstream, finish, reason):
    """Gemini finishReason values map to the normalized finish reasons."""
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.text_answer(["a"], finish=finish))
    assert error is None and events[-1] == Finish(reason)


async def test_blocked_prompt_is_content_filter(upstream):
    """promptFeedback.blockReason with no candidates: no text, usage, finish content_filter."""
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.blocked())
    assert error is None
    assert events == [UsageReport(Usage(input_tokens=9)), Finish("content_filter")]


async def test_http_error_carries_upstream_message_and_status(upstream):
    """Google's error JSON becomes ProviderError with its message and the HTTP status."""
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.http_error(400, "API key not valid."))
    assert events == [] and error.status == 400 and "API key not valid." in error.message


async def test_wrong_content_type_is_an_error(upstream):
    """A JSON array body (no alt=sse) is a ProviderError naming the content type."""
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.wrong_content_type())
    assert events == [] and "application/json" in error.message


async def test_malformed_chunk_is_an_error_after_output(upstream):
    """Text before a non-JSON data line is delivered; then ProviderError."""
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.malformed_chunk(["Hel", "lo"]))
    assert text(events) == "Hello" and "malformed" in error.message


async def test_error_object_in_stream(upstream):
    """An ``{"error": ...}`` chunk on a 200 stream becomes ProviderError with its status and message."""
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.in_stream_error("Overloaded!", ["par"]))
    assert text(events) == "par" and "UNAVAILABLE" in error.message and "Overloaded!" in error.message


async def test_drop_mid_stream(upstream):
    """The connection closing mid-stream: deltas so far, then ProviderError (not a timeout)."""
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.drop(["one ", "two"]))
    assert text(events) == "one two" and error is not None and not error.timeout
    assert not any(isinstance(e, (Finish, UsageReport)) for e in events)


async def test_end_without_finish_reason(upstream):
    """A clean end of body without any finishReason is a ProviderError."""
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.cut(["trunc"]))
    assert text(events) == "trunc" and "finish reason" in error.message


async def test_stall_longer_than_read_timeout(upstream):
    """Silence longer than read_timeout_s is ProviderError(timeout=True), quickly."""
    started = time.monotonic()
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.stall(5, ["slow"]), read_timeout_s=0.3)
    assert text(events) == "slow" and error.timeout
    assert time.monotonic() - started < 2


async def test_consumer_leaving_closes_upstream_promptly(upstream):
    """aclose() after the first delta returns at once even though the upstream then stalls."""
    upstream.handler = fake.stall(30, ["first"])
    config = ProviderConfig(name="g", kind="gemini", base_url=upstream.url, api_key_env=KEY_ENV)
    async with httpx2.AsyncClient() as client:
        with trio.fail_after(2):
            stream = GeminiProvider(config, client).stream(ModelCall("m", [user("x")]))
            async for event in stream:
                assert event == TextChunk("first")
                break
            await stream.aclose()

"""The anthropic adapter against a fake Messages API over real HTTP (httpx, loopback)."""

from __future__ import annotations

import json
import time

import httpx2
import pytest
import trio

from gateway.config import ProviderConfig
from gateway.providers.anthropic import DEFAULT_MAX_OUTPUT_TOKENS, AnthropicProvider
from gateway.providers.base import Finish, ModelCall, TextChunk, UsageReport
from ledger.events import Usage
from tests.fakes import anthropic as fake
from tests.fakes.collect import drain, tail, text, tool_calls
from tests.fakes.server import FakeServer

KEY_ENV = "TEST_ANTHROPIC_KEY"
PNG_DATA_URL = "data:image/png;base64,iVBORw0KGgo="
TOOLS = [{"name": "get_weather", "description": "Weather for a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}, "strict": False}]


def user(text_: str) -> dict:
    return {"role": "user", "content": [{"type": "input_text", "text": text_}]}


@pytest.fixture
def upstream(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-ant-test")
    with FakeServer(fake.text_answer(["Hello", ", world", "!"])) as server:
        yield server


async def run(server, call: ModelCall, handler=None, read_timeout_s: float = 5.0):
    """Drive one call through a fresh adapter; returns (events, error)."""
    if handler is not None:
        server.handler = handler
    config = ProviderConfig(name="claude", kind="anthropic", base_url=server.url, api_key_env=KEY_ENV,
                            read_timeout_s=read_timeout_s)
    async with httpx2.AsyncClient() as client:
        return await drain(AnthropicProvider(config, client), call)


async def sent(server, call: ModelCall) -> dict:
    """The JSON body the adapter posted for ``call``."""
    events, error = await run(server, call)
    assert error is None
    return server.requests[-1].json()


async def test_request_path_headers_system_and_default_max_tokens(upstream):
    """POST /v1/messages with key, version, stream=true; instructions+system+developer in ``system``."""
    call = ModelCall("claude-x", [{"role": "system", "content": [{"type": "input_text", "text": "Be brief."}]},
                                  user("hi"),
                                  {"role": "developer", "content": [{"type": "input_text", "text": "No emoji."}]}],
                     instructions="You are a cat.", temperature=1.7, top_p=0.9)
    body = await sent(upstream, call)
    request = upstream.requests[-1]
    assert (request.method, request.path) == ("POST", "/v1/messages")
    assert request.headers["x-api-key"] == "sk-ant-test"
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert body["system"] == "You are a cat.\n\nBe brief.\n\nNo emoji."
    assert body["max_tokens"] == DEFAULT_MAX_OUTPUT_TOKENS == 4096
    assert body["stream"] is True and body["model"] == "claude-x"
    assert body["temperature"] == 1.0 and body["top_p"] == 0.9
    assert body["messages"] == [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]
    assert "tools" not in body and "tool_choice" not in body


async def test_max_output_tokens_and_json_format_instruction(upstream):
    """max_output_tokens becomes max_tokens; json_schema is asked for in the system prompt."""
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    body = await sent(upstream, ModelCall("m", [user("x")], max_output_tokens=77,
                                          text_format={"type": "json_schema", "name": "n", "schema": schema}))
    assert body["max_tokens"] == 77
    assert "JSON" in body["system"] and json.dumps(schema, separators=(",", ":")) in body["system"]


async def test_same_role_turns_merge_and_tool_round_trip_maps(upstream):
    """Consecutive turns merge; tool calls -> tool_use, outputs -> tool_result in one user turn."""
    messages = [
        user("first"), user("second"),
        {"role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}],
         "tool_calls": [{"call_id": "toolu_1", "name": "get_weather", "arguments": '{"city": "Paris"}'},
                        {"call_id": "toolu_2", "name": "get_weather", "arguments": ""}]},
        {"role": "tool", "call_id": "toolu_1", "content": [{"type": "input_text", "text": "18C"}]},
        {"role": "tool", "call_id": "toolu_2", "content": [{"type": "input_text", "text": "20C"}]},
        user("thanks"),
    ]
    body = await sent(upstream, ModelCall("m", messages))
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"] == [{"type": "text", "text": "first"}, {"type": "text", "text": "second"}]
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
        {"type": "tool_use", "id": "toolu_2", "name": "get_weather", "input": {}}]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "toolu_2", "content": "20C"},
        {"type": "text", "text": "thanks"}]
    # No tools in this call, but tool blocks in the history: Anthropic requires tools, so the
    # history's tools are declared (permissive schema) and cannot be called again.
    assert body["tools"] == [{"name": "get_weather", "description": "", "input_schema": {"type": "object"}}]
    assert body["tool_choice"] == {"type": "none"}


async def test_tool_history_without_tools_is_refused_by_the_fake_like_anthropic(upstream):
    """The fake enforces Anthropic's rule (tool blocks need tools), so the adapter's declaration is what passes."""
    messages = [user("x"), {"role": "assistant", "content": [],
                            "tool_calls": [{"call_id": "toolu_1", "name": "lookup", "arguments": "{}"}]},
                {"role": "tool", "call_id": "toolu_1", "content": [{"type": "input_text", "text": "ok"}]}]
    events, error = await run(upstream, ModelCall("m", messages))
    assert error is None and text(events) == "Hello, world!"
    body = upstream.requests[-1].json()
    assert body["tools"] == [{"name": "lookup", "description": "", "input_schema": {"type": "object"}}]
    stripped = {k: v for k, v in body.items() if k not in ("tools", "tool_choice")}
    refused = httpx2.post(upstream.url + "/v1/messages", json=stripped)
    assert refused.status_code == 400
    assert "must define tools" in refused.json()["error"]["message"]


@pytest.mark.parametrize("choice, parallel, expected", [
    ("auto", True, {"type": "auto"}),
    ("required", True, {"type": "any"}),
    ("none", True, {"type": "none"}),
    ({"name": "get_weather"}, True, {"type": "tool", "name": "get_weather"}),
    ({"type": "function", "name": "get_weather"}, True, {"type": "tool", "name": "get_weather"}),
    ("auto", False, {"type": "auto", "disable_parallel_tool_use": True}),
])
async def test_tools_and_tool_choice(upstream, choice, parallel, expected):
    """Function tools become input_schema tools; tool_choice and parallel_tool_calls map."""
    body = await sent(upstream, ModelCall("m", [user("x")], tools=TOOLS, tool_choice=choice,
                                          parallel_tool_calls=parallel))
    assert body["tools"] == [{"name": "get_weather", "description": "Weather for a city",
                              "input_schema": TOOLS[0]["parameters"]}]
    assert body["tool_choice"] == expected


async def test_images_and_files_become_blocks(upstream):
    """Data-URL and URL images, PDF and text files map to image and document blocks."""
    content = [{"type": "input_text", "text": "look"},
               {"type": "input_image", "image_url": PNG_DATA_URL, "detail": "auto"},
               {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "auto"},
               {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
               {"type": "input_file", "file_data": "aGVsbG8=", "filename": "notes.txt"},
               {"type": "input_file", "file_url": "https://example.com/report.pdf"}]
    body = await sent(upstream, ModelCall("m", [{"role": "user", "content": content}]))
    assert body["messages"][0]["content"][1:] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="},
         "title": "a.pdf"},
        {"type": "document", "source": {"type": "text", "media_type": "text/plain", "data": "hello"},
         "title": "notes.txt"},
        {"type": "document", "source": {"type": "url", "url": "https://example.com/report.pdf"}}]


async def test_file_id_fails_before_calling_upstream(upstream):
    """A file_id part cannot be sent to Anthropic: ProviderError, no request made."""
    call = ModelCall("m", [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}])
    events, error = await run(upstream, call)
    assert events == [] and "file_id" in error.message
    assert upstream.requests == []


async def test_text_streams_across_odd_splits_with_usage(upstream):
    """Text deltas survive odd byte splits; usage counts cache reads/writes as input; finish stop."""
    deltas = ["Hel", "lo, wörld", " — ", "ok\n\nnext"]
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.text_answer(deltas))
    assert error is None
    assert [e.text for e in events if isinstance(e, TextChunk)] == deltas
    assert tail(events) == [UsageReport(Usage(input_tokens=57, cached_input_tokens=12, output_tokens=13)),
                            Finish("stop")]


async def test_tool_calls_reassemble_exactly(upstream):
    """Several tool_use blocks after text: ids, names and odd-split arguments come back exactly."""
    calls = [("toolu_a", "get_weather", '{"city": "Paris", "unit": "c"}'),
             ("toolu_b", "lookup", '{"q": "a \\"quoted\\" ünïcode", "n": [1, 2, 3]}'),
             ("toolu_c", "get_weather", '{"city":"Oslo"}')]
    events, error = await run(upstream, ModelCall("m", [user("x")], tools=TOOLS),
                              fake.tool_calls_answer(calls, text="Checking."))
    assert error is None
    assert text(events) == "Checking."
    assert tool_calls(events) == calls
    assert events[-1] == Finish("tool_calls")


@pytest.mark.parametrize("stop_reason, reason", [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"),
])
async def test_finish_reasons(upstream, stop_reason, reason):
    """Anthropic stop reasons map to the normalized finish reasons."""
    events, _ = await run(upstream, ModelCall("m", [user("x")]), fake.text_answer(["a"], stop_reason=stop_reason))
    assert events[-1] == Finish(reason)


async def test_http_error_carries_upstream_message_and_status(upstream):
    """A 529 overloaded_error body becomes ProviderError with Anthropic's message and the status."""
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.http_error(529, message="Overloaded now"))
    assert events == []
    assert error.status == 529 and "Overloaded now" in error.message and not error.timeout


async def test_wrong_content_type_is_an_error(upstream):
    """A JSON body where SSE was expected is a ProviderError naming the content type."""
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.wrong_content_type())
    assert events == [] and "application/json" in error.message


async def test_malformed_chunk_is_an_error_after_output(upstream):
    """Text before a non-JSON data line is delivered; then ProviderError."""
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.malformed_chunk(["Hel", "lo"]))
    assert text(events) == "Hello" and "malformed" in error.message


async def test_in_stream_error_event(upstream):
    """An ``error`` event mid-stream becomes ProviderError with its type and message."""
    events, error = await run(upstream, ModelCall("m", [user("x")]),
                              fake.in_stream_error("Overloaded", deltas_before=["par", "tial"]))
    assert text(events) == "partial"
    assert "overloaded_error" in error.message and "Overloaded" in error.message


async def test_drop_mid_stream(upstream):
    """The connection closing mid-stream: deltas so far, then ProviderError (not a timeout)."""
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.drop(["one ", "two"]))
    assert text(events) == "one two"
    assert error is not None and not error.timeout
    assert not any(isinstance(e, Finish) for e in events)


async def test_end_without_message_stop(upstream):
    """A clean end of body before message_stop is a ProviderError, never a silent finish."""
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.cut(["trunc"]))
    assert text(events) == "trunc" and "message_stop" in error.message


async def test_stall_longer_than_read_timeout(upstream):
    """Silence longer than read_timeout_s is ProviderError(timeout=True), quickly."""
    started = time.monotonic()
    events, error = await run(upstream, ModelCall("m", [user("x")]), fake.stall(5, ["slow"]), read_timeout_s=0.3)
    assert text(events) == "slow" and error.timeout
    assert time.monotonic() - started < 2


async def test_consumer_leaving_closes_upstream_promptly(upstream):
    """aclose() after the first delta returns at once even though the upstream then stalls."""
    upstream.handler = fake.stall(30, ["first"])
    config = ProviderConfig(name="c", kind="anthropic", base_url=upstream.url, api_key_env=KEY_ENV)
    async with httpx2.AsyncClient() as client:
        with trio.fail_after(2):
            stream = AnthropicProvider(config, client).stream(ModelCall("m", [user("x")]))
            async for event in stream:
                assert event == TextChunk("first")
                break
            await stream.aclose()

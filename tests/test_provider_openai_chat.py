"""The openai-chat adapter against a fake Chat Completions server on loopback."""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, Optional

import httpx2
import pytest
import trio

from gateway.config import ProviderConfig
from gateway.providers.base import (
    Finish,
    ModelCall,
    ProviderError,
    TextChunk,
    ToolCallArguments,
    ToolCallStart,
    UsageReport,
)
from gateway.providers.openai_chat import OpenAIChatProvider
from ledger.events import Usage
from tests.fakes import openai_chat as fake
from tests.fakes.server import FakeServer

KEY_ENV = "ASSISTIV_TEST_CHAT_KEY"
DELTAS = ["Bon", "jour", " le\nmonde", " ünïcødé 🎉", " data: [DONE]", "."]
CALLS = [("call_a1", "get_weather", '{"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}'),
         ("call_b2", "get_time", '{"timezone": "Europe/Paris", "note": "a \\"quoted\\" ü"}'),
         ("call_c3", "noop", "{}")]


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "input_text", "text": text}]}


HELLO = ModelCall(model="up-model", messages=[user("hello")])


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-upstream-secret")
    with FakeServer(fake.text_answer(DELTAS)) as srv:
        yield srv


async def run(server: FakeServer, call: ModelCall = HELLO, **config: Any) -> tuple[list[Any], Optional[ProviderError]]:
    """Stream ``call`` through a fresh adapter; the events, and the ProviderError if one ended it."""
    settings = {"api_key_env": KEY_ENV, **config}
    provider_config = ProviderConfig(name="up", kind="openai-chat", base_url=server.url + "/v1", **settings)
    events: list[Any] = []
    async with httpx2.AsyncClient() as http:
        try:
            async for event in OpenAIChatProvider(provider_config, http).stream(call):
                events.append(event)
        except ProviderError as error:
            return events, error
    return events, None


async def test_request_body_maps_every_field(server):
    """Instructions, roles, parts, tools, tool_choice, format and limits land in the chat request."""
    call = ModelCall(
        model="up-model",
        instructions="Be brief.",
        messages=[
            {"role": "developer", "content": [{"type": "input_text", "text": "Use metric units."}]},
            {"role": "user", "content": [
                {"type": "input_text", "text": "What is in this picture and file?"},
                {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "high"},
                {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}]},
            {"role": "assistant", "content": [], "tool_calls": [
                {"call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'}]},
            {"role": "tool", "call_id": "call_1", "content": [{"type": "input_text", "text": '{"temp": 18}'}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "It is 18 C."}]},
            user("Thanks"),
        ],
        temperature=0.2,
        top_p=0.9,
        max_output_tokens=321,
        text_format={"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True},
        tools=[{"name": "get_weather", "description": "Weather now", "strict": True,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        tool_choice={"name": "get_weather"},
        parallel_tool_calls=False,
    )
    await run(server, call)
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/chat/completions")
    assert request.headers["authorization"] == "Bearer sk-upstream-secret"
    assert request.json() == {
        "model": "up-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "system", "content": "Use metric units."},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture and file?"},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}},
                {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}}]},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 18}'},
            {"role": "assistant", "content": "It is 18 C."},
            {"role": "user", "content": "Thanks"},
        ],
        "stream": True,
        "stream_options": {"include_usage": True},
        "temperature": 0.2,
        "top_p": 0.9,
        "max_completion_tokens": 321,
        "response_format": {"type": "json_schema",
                            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True}},
        "tools": [{"type": "function", "function": {
            "name": "get_weather", "description": "Weather now", "strict": True,
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
    }


async def test_minimal_request_has_no_optional_fields(server):
    """No key configured: no Authorization; no tools, limits or format: none of their fields."""
    await run(server, ModelCall(model="m", messages=[user("hi")], text_format={"type": "text"}), api_key_env=None)
    [request] = server.requests
    assert "authorization" not in request.headers
    assert request.json() == {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                              "stream_options": {"include_usage": True}}


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
async def test_string_tool_choice_and_json_object_pass_through(server, choice):
    """String tool_choice values are sent as they are; json_object becomes response_format json_object."""
    tool = {"name": "f", "parameters": {"type": "object", "properties": {}}}
    await run(server, ModelCall(model="m", messages=[user("x")], tools=[tool], tool_choice=choice,
                                text_format={"type": "json_object"}))
    body = server.requests[0].json()
    assert body["tool_choice"] == choice
    assert body["parallel_tool_calls"] is True
    assert body["response_format"] == {"type": "json_object"}
    assert body["tools"] == [{"type": "function", "function": tool}]


async def test_file_by_url_is_refused_before_sending(server):
    """An input_file given only by URL has no chat form: ProviderError, nothing sent."""
    call = ModelCall(model="m", messages=[{"role": "user", "content": [
        {"type": "input_file", "file_url": "https://example.com/a.pdf"}]}])
    events, error = await run(server, call)
    assert error is not None and "file_url" in error.message
    assert events == [] and server.requests == []


async def test_text_stream_split_oddly_gives_deltas_usage_and_stop(server):
    """Odd SSE splits still give every delta exactly, then usage (cached, reasoning) and stop."""
    events, error = await run(server)
    assert error is None
    assert events == [TextChunk(d) for d in DELTAS] + [
        UsageReport(Usage(input_tokens=57, cached_input_tokens=21, output_tokens=13, reasoning_tokens=5)),
        Finish("stop")]


async def test_usage_without_details_and_one_chunk_per_event(server):
    """Usage without the details objects maps to zero cached and reasoning tokens."""
    server.handler = fake.text_answer(["a", "b"], usage={"prompt_tokens": 3, "completion_tokens": 2}, odd=False)
    events, _ = await run(server)
    assert events[-2:] == [UsageReport(Usage(input_tokens=3, output_tokens=2)), Finish("stop")]


@pytest.mark.parametrize("upstream, ours", [("stop", "stop"), ("length", "length"),
                                            ("content_filter", "content_filter"), ("tool_calls", "tool_calls"),
                                            ("function_call", "tool_calls")])
async def test_finish_reasons(server, upstream, ours):
    """Each upstream finish_reason maps to the normalized one (function_call -> tool_calls)."""
    server.handler = fake.text_answer(["x"], finish=upstream)
    events, _ = await run(server)
    assert events[-1] == Finish(ours)


@pytest.mark.parametrize("interleave", [False, True])
async def test_parallel_tool_calls_reassemble_exactly(server, interleave):
    """Several tool calls with arguments split anywhere: one start each, arguments rebuilt exactly."""
    server.handler = fake.tool_calls_answer(CALLS, interleave=interleave)
    events, error = await run(server)
    assert error is None
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert starts == [ToolCallStart(i, cid, name) for i, (cid, name, _) in enumerate(CALLS)]
    for i, (_, _, args) in enumerate(CALLS):
        pieces = [e.delta for e in events if isinstance(e, ToolCallArguments) and e.index == i]
        assert "".join(pieces) == args
        assert len(pieces) == len(fake.cut_pieces(args))
        first_piece = next(k for k, e in enumerate(events) if isinstance(e, ToolCallArguments) and e.index == i)
        assert events.index(starts[i]) < first_piece
    assert events[-1] == Finish("tool_calls")
    assert isinstance(events[-2], UsageReport)


async def test_stop_after_tool_calls_means_tool_calls(server):
    """A server that says "stop" after tool calls (Ollama) still finishes with tool_calls."""
    server.handler = fake.tool_calls_answer(CALLS[:1], finish="stop")
    events, _ = await run(server)
    assert events[-1] == Finish("tool_calls")


@pytest.mark.parametrize("status, message", [(500, "The server had an error while processing your request."),
                                             (429, "Rate limit reached for requests per min.")])
async def test_http_error_carries_upstream_message_and_status(server, status, message):
    """An HTTP error body becomes ProviderError with the upstream's message and status."""
    server.handler = fake.http_error(status, message)
    events, error = await run(server)
    assert events == []
    assert error.status == status and not error.timeout
    assert message in error.message


async def test_wrong_content_type_is_an_error(server):
    """A 200 with text/html instead of an event stream is a ProviderError naming the type."""
    server.handler = fake.wrong_content_type()
    events, error = await run(server)
    assert events == [] and "text/html" in error.message


async def test_malformed_chunk_is_an_error_after_earlier_output(server):
    """A non-JSON chunk ends the stream with ProviderError after the deltas before it."""
    server.handler = fake.malformed_chunk(["Hel", "lo"])
    events, error = await run(server)
    assert events == [TextChunk("Hel"), TextChunk("lo")]
    assert "malformed JSON" in error.message and not error.timeout


async def test_in_stream_error_object_is_an_error(server):
    """An {"error": ...} payload mid-stream is a ProviderError with the upstream message."""
    server.handler = fake.in_stream_error("model overloaded", ["partial"])
    events, error = await run(server)
    assert events == [TextChunk("partial")]
    assert "model overloaded" in error.message


async def test_drop_mid_stream_is_an_error(server):
    """The connection closing mid-stream gives the deltas so far, then a non-timeout ProviderError."""
    server.handler = fake.drop(["one", " two", " three"])
    events, error = await run(server)
    assert events == [TextChunk("one"), TextChunk(" two"), TextChunk(" three")]
    assert error is not None and not error.timeout


async def test_clean_end_without_finish_or_done_is_interrupted(server):
    """A body that ends cleanly with no finish_reason and no [DONE] is a ProviderError."""
    server.handler = fake.cut(["half"])
    events, error = await run(server)
    assert events == [TextChunk("half")]
    assert "interrupted" in error.message


@pytest.mark.parametrize("before_headers, deltas", [(True, []), (False, ["slow"])])
async def test_stall_past_read_timeout_is_a_timeout(server, before_headers, deltas):
    """Silence longer than read_timeout_s (before headers or mid-stream) is ProviderError(timeout=True)."""
    server.handler = fake.stall(3.0, deltas, before_headers=before_headers)
    started = trio.current_time()
    events, error = await run(server, read_timeout_s=0.3)
    assert error is not None and error.timeout
    assert events == [TextChunk(d) for d in deltas]
    assert trio.current_time() - started < 2.0


async def test_consumer_leaving_ends_the_call_promptly(server):
    """aclose() after the first delta returns at once although the upstream is still silent."""
    server.handler = fake.stall(5.0, ["first"])
    config = ProviderConfig(name="up", kind="openai-chat", base_url=server.url + "/v1")
    async with httpx2.AsyncClient() as http:
        with trio.fail_after(2):
            async with aclosing(OpenAIChatProvider(config, http).stream(HELLO)) as events:
                assert await events.__anext__() == TextChunk("first")

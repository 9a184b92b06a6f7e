"""The openai-responses adapter against a fake Responses API server on loopback."""

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
from gateway.providers.openai_responses import OpenAIResponsesProvider
from ledger.events import Usage
from tests.fakes import openai_responses as fake
from tests.fakes.openai_chat import cut_pieces
from tests.fakes.server import FakeServer

KEY_ENV = "ASSISTIV_TEST_RESPONSES_KEY"
DELTAS = ["Bon", "jour", " le\nmonde", " ünïcødé 🎉", "\n\nevent: error", "."]
CALLS = [("call_a1", "get_weather", '{"city": "Paris", "unit": "celsius", "days": [1, 2, 3]}'),
         ("call_b2", "get_time", '{"timezone": "Europe/Paris", "note": "a \\"quoted\\" ü"}'),
         ("call_c3", "noop", "{}")]
FAKE_USAGE = Usage(input_tokens=61, cached_input_tokens=24, output_tokens=17, reasoning_tokens=6)


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
    provider_config = ProviderConfig(name="up", kind="openai-responses", base_url=server.url + "/v1", **settings)
    events: list[Any] = []
    async with httpx2.AsyncClient() as http:
        try:
            async for event in OpenAIResponsesProvider(provider_config, http).stream(call):
                events.append(event)
        except ProviderError as error:
            return events, error
    return events, None


async def test_request_body_maps_every_field(server):
    """Messages, tool calls and results, parts, tools, tool_choice, text.format and limits map to input items."""
    schema_format = {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}
    call = ModelCall(
        model="up-model",
        instructions="Be brief.",
        messages=[
            {"role": "developer", "content": [{"type": "input_text", "text": "Use metric units."}]},
            {"role": "user", "content": [
                {"type": "input_text", "text": "What is in this picture and file?"},
                {"type": "input_image", "image_url": "https://example.com/cat.png", "detail": "high"},
                {"type": "input_file", "file_url": "https://example.com/a.pdf", "filename": "a.pdf"}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}], "tool_calls": [
                {"call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
                {"call_id": "call_2", "name": "get_time", "arguments": "{}"}]},
            {"role": "tool", "call_id": "call_1", "content": [{"type": "input_text", "text": '{"temp": 18}'}]},
            {"role": "tool", "call_id": "call_2", "content": [{"type": "input_text", "text": "12:00"}]},
            {"role": "assistant", "content": [], "tool_calls": [
                {"call_id": "call_3", "name": "noop", "arguments": "{}"}]},
            {"role": "tool", "call_id": "call_3", "content": [{"type": "input_text", "text": "ok"}]},
            user("Thanks"),
        ],
        temperature=0.2,
        top_p=0.9,
        max_output_tokens=321,
        text_format=schema_format,
        tools=[{"name": "get_weather", "description": "Weather now", "strict": True,
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        tool_choice={"type": "function", "name": "get_weather"},
        parallel_tool_calls=False,
    )
    await run(server, call)
    [request] = server.requests
    assert (request.method, request.path) == ("POST", "/v1/responses")
    assert request.headers["authorization"] == "Bearer sk-upstream-secret"
    assert request.json() == {
        "model": "up-model",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "Use metric units."}]},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "What is in this picture and file?"},
                {"type": "input_image", "detail": "high", "image_url": "https://example.com/cat.png"},
                {"type": "input_file", "file_url": "https://example.com/a.pdf", "filename": "a.pdf"}]},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": '{"city":"Paris"}'},
            {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_1", "output": '{"temp": 18}'},
            {"type": "function_call_output", "call_id": "call_2", "output": "12:00"},
            {"type": "function_call", "call_id": "call_3", "name": "noop", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "call_3", "output": "ok"},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Thanks"}]},
        ],
        "stream": True,
        "store": False,
        "instructions": "Be brief.",
        "temperature": 0.2,
        "top_p": 0.9,
        "max_output_tokens": 321,
        "text": {"format": schema_format},
        "tools": [{"type": "function", "name": "get_weather", "description": "Weather now", "strict": True,
                   "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "function", "name": "get_weather"},
        "parallel_tool_calls": False,
    }


async def test_minimal_request_has_no_optional_fields(server):
    """No key configured: no Authorization; plain text format and no tools send none of their fields."""
    await run(server, ModelCall(model="m", messages=[user("hi")], text_format={"type": "text"}), api_key_env=None)
    [request] = server.requests
    assert "authorization" not in request.headers
    assert request.json() == {"model": "m", "stream": True, "store": False, "input": [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]}]}


@pytest.mark.parametrize("choice", ["auto", "none", "required"])
async def test_string_tool_choice_and_json_object_pass_through(server, choice):
    """String tool_choice values are sent as they are, with parallel_tool_calls; json_object as text.format."""
    tool = {"name": "f", "parameters": {"type": "object", "properties": {}}}
    await run(server, ModelCall(model="m", messages=[user("x")], tools=[tool], tool_choice=choice,
                                text_format={"type": "json_object"}))
    body = server.requests[0].json()
    assert (body["tool_choice"], body["parallel_tool_calls"]) == (choice, True)
    assert body["text"] == {"format": {"type": "json_object"}}
    assert body["tools"] == [{"type": "function", **tool}]


async def test_text_stream_split_oddly_gives_deltas_usage_and_stop(server):
    """Odd SSE splits still give every delta exactly, then usage (cached, reasoning) and stop."""
    events, error = await run(server)
    assert error is None
    assert events == [TextChunk(d) for d in DELTAS] + [UsageReport(FAKE_USAGE), Finish("stop")]


@pytest.mark.parametrize("interleave", [False, True])
async def test_parallel_tool_calls_reassemble_exactly(server, interleave):
    """Text then several function calls, arguments split anywhere: starts in order, arguments exact."""
    server.handler = fake.tool_calls_answer(CALLS, interleave=interleave, text=["Checking", "."])
    events, error = await run(server)
    assert error is None
    assert events[:2] == [TextChunk("Checking"), TextChunk(".")]
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert starts == [ToolCallStart(i, cid, name) for i, (cid, name, _) in enumerate(CALLS)]
    for i, (_, _, args) in enumerate(CALLS):
        pieces = [e.delta for e in events if isinstance(e, ToolCallArguments) and e.index == i]
        assert pieces == cut_pieces(args)
    assert events[-2:] == [UsageReport(FAKE_USAGE), Finish("tool_calls")]


async def test_arguments_only_in_item_done_are_still_sent(server):
    """A server that sends no argument deltas: the arguments of output_item.done are emitted once."""
    stream = fake.Stream().start()
    item = {"id": "fc_1", "type": "function_call", "status": "in_progress", "call_id": "call_9", "name": "f",
            "arguments": ""}
    stream.add("response.output_item.added", output_index=0, item=item)
    stream.add("response.output_item.done", output_index=0, item={**item, "arguments": '{"a": 1}'})
    server.handler = lambda request: stream.completed().steps()
    events, _ = await run(server)
    assert events[:2] == [ToolCallStart(0, "call_9", "f"), ToolCallArguments(0, '{"a": 1}')]
    assert events[-1] == Finish("tool_calls")


@pytest.mark.parametrize("reason, ours", [("max_output_tokens", "length"), ("content_filter", "content_filter")])
async def test_incomplete_maps_reason_and_keeps_usage(server, reason, ours):
    """response.incomplete gives usage, then Finish(length) or Finish(content_filter)."""
    server.handler = fake.incomplete(["cut", " short"], reason)
    events, error = await run(server)
    assert error is None
    assert events == [TextChunk("cut"), TextChunk(" short"), UsageReport(FAKE_USAGE), Finish(ours)]


async def test_response_failed_carries_upstream_message(server):
    """response.failed after some output is a ProviderError with the upstream's message."""
    server.handler = fake.failed("The model produced invalid content.", ["par", "tial"])
    events, error = await run(server)
    assert events == [TextChunk("par"), TextChunk("tial")]
    assert "The model produced invalid content." in error.message


async def test_error_event_carries_upstream_message(server):
    """A bare ``error`` event is a ProviderError with its message and code."""
    server.handler = fake.error_event("Rate limit reached mid-stream", "rate_limit_exceeded", ["x"])
    events, error = await run(server)
    assert events == [TextChunk("x")]
    assert "Rate limit reached mid-stream" in error.message and "rate_limit_exceeded" in error.message


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


async def test_malformed_event_is_an_error_after_earlier_output(server):
    """A non-JSON event ends the stream with ProviderError after the deltas before it."""
    server.handler = fake.malformed_event(["Hel", "lo"])
    events, error = await run(server)
    assert events == [TextChunk("Hel"), TextChunk("lo")]
    assert "malformed JSON" in error.message and not error.timeout


async def test_drop_mid_stream_is_an_error(server):
    """The connection closing mid-stream gives the deltas so far, then a non-timeout ProviderError."""
    server.handler = fake.drop(["one", " two", " three"])
    events, error = await run(server)
    assert events == [TextChunk("one"), TextChunk(" two"), TextChunk(" three")]
    assert error is not None and not error.timeout


async def test_clean_end_without_terminal_event_is_interrupted(server):
    """A body that ends cleanly before response.completed is a ProviderError."""
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
    config = ProviderConfig(name="up", kind="openai-responses", base_url=server.url + "/v1")
    async with httpx2.AsyncClient() as http:
        with trio.fail_after(2):
            async with aclosing(OpenAIResponsesProvider(config, http).stream(HELLO)) as events:
                assert await events.__anext__() == TextChunk("first")

"""gateway/providers/http.iter_sse on bodies split into reads at awkward places (httpx MockTransport)."""

from __future__ import annotations

import httpx2
import pytest

from gateway.providers.base import ProviderError
from gateway.providers.http import iter_sse


async def events_of(chunks: list[bytes]) -> list[tuple[str, str]]:
    async def body():
        for chunk in chunks:
            yield chunk

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body())

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:
        async with client.stream("POST", "http://upstream.test/v1/x") as response:
            return [e async for e in iter_sse(response)]


BODY = (b": keep-alive comment\n\nevent: message_start\ndata: {\"a\": 1}\n\n"
        b"data: first line\ndata: second line\n\ndata:no-space\n\nevent: ping\n\ndata: [DONE]\n\n")
EXPECTED = [("message_start", '{"a": 1}'), ("", "first line\nsecond line"), ("", "no-space"), ("", "[DONE]")]


@pytest.mark.parametrize("line_end", [b"\n", b"\r\n", b"\r"])
@pytest.mark.parametrize("piece", [1, 2, 3, 7, 1000])
async def test_events_are_the_same_however_the_body_is_split(line_end, piece):
    body = BODY.replace(b"\n", line_end)
    chunks = [body[i : i + piece] for i in range(0, len(body), piece)]
    assert await events_of(chunks) == EXPECTED


async def test_a_last_event_without_its_blank_line_still_counts():
    assert await events_of([b"data: one\n\ndata: tw", b"o"]) == [("", "one"), ("", "two")]


async def test_invalid_utf8_is_replaced_not_fatal():
    assert await events_of([b"data: caf\xc3", b"\xa9 \xff\n\n"]) == [("", "caf\u00e9 \ufffd")]


async def test_an_event_without_end_larger_than_the_limit_is_a_provider_error(monkeypatch):
    monkeypatch.setattr("gateway.providers.http.SSE_EVENT_BYTES_MAX", 100)
    with pytest.raises(ProviderError, match="larger than 100 bytes"):
        await events_of([b"data: " + b"x" * 60, b"y" * 60])


async def test_a_gzip_encoded_stream_is_decoded():
    import gzip

    body = gzip.compress(b"data: one\n\ndata: two\n\n")

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, headers={"content-type": "text/event-stream", "content-encoding": "gzip"},
                               content=body)

    async with httpx2.AsyncClient(transport=httpx2.MockTransport(handler)) as client:
        async with client.stream("POST", "http://upstream.test/v1/x") as response:
            assert [e async for e in iter_sse(response)] == [("", "one"), ("", "two")]

"""HTTP plumbing every upstream adapter shares: open a streamed call, parse SSE, map failures.

``open_stream`` posts JSON and yields the response once its status and content type are
good; otherwise it raises ProviderError with the upstream's own message (read from a body
of at most ``ERROR_BODY_BYTES_MAX``). ``iter_sse`` yields ``(event, data)`` pairs from a
``text/event-stream`` body, however the bytes were split into chunks. Every httpx failure
becomes a ProviderError (``timeout=True`` for timeouts), so the pipeline sees one kind of
error. Cancellation closes the upstream connection (httpx does this on trio).
"""

from __future__ import annotations

import functools
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Optional

import httpx2
import orjson

from gateway.providers.base import ProviderError

ERROR_BODY_BYTES_MAX = 64 * 1024  # how much of an upstream error body we read
SSE_EVENT_BYTES_MAX = 8 * 1024 * 1024  # one upstream SSE event larger than this is an error
URLS_PARSED_MAX = 256  # upstream endpoint URLs kept parsed


@functools.lru_cache(maxsize=URLS_PARSED_MAX)
def parsed_url(url: str) -> httpx2.URL:
    """The parsed form of an endpoint URL. Endpoints repeat from call to call, and httpx builds a
    request from a string URL in ~110 us against ~40 us from a parsed one (2-vCPU test VM)."""
    return httpx2.URL(url)


def _error_message(status: int, body: bytes) -> str:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body.decode(errors="replace").strip()[:500]
        return f"HTTP {status}" + (f": {text}" if text else "")
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, dict) and error.get("message"):
        return f"HTTP {status}: {error['message']}"
    if isinstance(error, str):
        return f"HTTP {status}: {error}"
    if isinstance(data, dict) and isinstance(data.get("message"), str):
        return f"HTTP {status}: {data['message']}"
    return f"HTTP {status}"


@asynccontextmanager
async def open_stream(
    client: httpx2.AsyncClient,
    url: str,
    payload: dict[str, Any],
    headers: Optional[dict[str, str]] = None,
    expect: str = "text/event-stream",
    timeout: Optional[httpx2.Timeout] = None,
) -> AsyncIterator[httpx2.Response]:
    """POST ``payload`` and yield the streaming response once it looks right."""
    extra = {} if timeout is None else {"timeout": timeout}
    try:
        async with client.stream("POST", parsed_url(url), content=orjson.dumps(payload),
                                 headers={"Content-Type": "application/json", **(headers or {})},
                                 **extra) as response:
            if response.status_code >= 400:
                body = b""
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) >= ERROR_BODY_BYTES_MAX:
                        break
                raise ProviderError(_error_message(response.status_code, body), status=response.status_code)
            content_type = response.headers.get("content-type", "")
            if expect not in content_type:
                raise ProviderError(f"upstream answered with content type {content_type!r}, expected {expect!r}",
                                    status=response.status_code)
            yield response
    except httpx2.TimeoutException as exc:
        raise ProviderError(f"upstream timed out ({type(exc).__name__})", timeout=True) from exc
    except httpx2.HTTPError as exc:
        raise ProviderError(f"upstream connection failed ({type(exc).__name__}: {exc})") from exc


def _sse_event(block: bytes) -> Optional[tuple[str, str]]:
    """``(event, data)`` of one event block (lines without the blank line); None without data."""
    event, data = "", []
    for line in block.split(b"\n"):
        if not line or line[0] == 0x3A:  # a blank line, or a ":" comment
            continue
        field, _, value = line.partition(b":")
        if value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            data.append(value)
        elif field == b"event":
            event = value.decode(errors="replace")
    if not data:
        return None
    return event, b"\n".join(data).decode(errors="replace")


async def iter_sse(response: httpx2.Response) -> AsyncIterator[tuple[str, str]]:
    """``(event, data)`` for each SSE event; ``event`` is "" when the stream names none.

    Works on the body's bytes (after content decoding): line ends ``\r\n``, ``\r`` and ``\n``
    all end a line, also when a ``\r\n`` is split between two reads; an event ends at a blank
    line, or at the end of the body."""
    buffer, pending_cr = b"", False
    encoded = response.headers.get("content-encoding", "identity").lower() not in ("", "identity")
    chunks = response.aiter_bytes() if encoded else response.aiter_raw()  # raw skips a decoder per read
    try:
        async for chunk in chunks:
            if pending_cr and chunk[:1] == b"\n":
                chunk = chunk[1:]  # the \n of a \r\n split between two reads
            pending_cr = chunk[-1:] == b"\r"
            if b"\r" in chunk:
                chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            buffer = buffer + chunk if buffer else chunk
            start = 0
            while True:
                end = buffer.find(b"\n\n", start)
                if end < 0:
                    break
                parsed = _sse_event(buffer[start:end])
                start = end + 2
                if parsed is not None:
                    yield parsed
            buffer = buffer[start:]
            if len(buffer) > SSE_EVENT_BYTES_MAX:
                raise ProviderError(f"upstream SSE event larger than {SSE_EVENT_BYTES_MAX} bytes")
        parsed = _sse_event(buffer)
        if parsed is not None:
            yield parsed
    except httpx2.TimeoutException as exc:
        raise ProviderError(f"upstream timed out mid-stream ({type(exc).__name__})", timeout=True) from exc
    except httpx2.HTTPError as exc:
        raise ProviderError(f"upstream stream broke ({type(exc).__name__}: {exc})") from exc


def json_data(data: str) -> Any:
    """Decode one SSE data payload; malformed JSON is a ProviderError, not a crash."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ProviderError(f"upstream sent malformed JSON in its stream: {data[:200]!r}") from exc

"""A scriptable HTTP/1.1 server on loopback, for fake upstream providers.

It runs trio in a background thread, so sync tests (and a gateway in another process) can
use it. Each request is answered by ``handler(request) -> Script``; a Script is a list of
steps the server performs literally on the socket:

    Status(code, headers)      start the response (chunked transfer encoding)
    Chunk(bytes)               one HTTP chunk, written and flushed on its own
    Sleep(seconds)             stall
    Drop()                     close the connection abruptly (no terminating chunk)
    Body(code, headers, bytes) a complete, non-chunked response

``split_odd(data)`` cuts bytes at awkward places (mid-line, several events per chunk) so
that adapters are tested against real-world framing.
"""

from __future__ import annotations

import json
import threading
from typing import Any, Callable, Optional, Union

import attrs
import trio


@attrs.frozen
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@attrs.frozen
class Status:
    code: int = 200
    headers: dict[str, str] = attrs.field(factory=lambda: {"content-type": "text/event-stream"})


@attrs.frozen
class Chunk:
    data: bytes


@attrs.frozen
class Sleep:
    seconds: float


@attrs.frozen
class Drop:
    pass


@attrs.frozen
class Body:
    code: int
    headers: dict[str, str]
    data: bytes


Step = Union[Status, Chunk, Sleep, Drop, Body]
Handler = Callable[[Request], list[Step]]

REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 404: "Not Found", 429: "Too Many Requests",
           500: "Internal Server Error", 502: "Bad Gateway", 503: "Service Unavailable"}


def split_odd(data: bytes, sizes: tuple[int, ...] = (7, 1, 23, 3, 61, 2, 150)) -> list[bytes]:
    """Cut ``data`` into pieces of cycling odd sizes."""
    pieces, i, k = [], 0, 0
    while i < len(data):
        size = sizes[k % len(sizes)]
        pieces.append(data[i : i + size])
        i += size
        k += 1
    return pieces


def sse_chunks(events: list[bytes], odd: bool = True) -> list[Step]:
    """SSE event bytes as Chunk steps, split at odd places (or one chunk per event)."""
    data = b"".join(events)
    return [Chunk(p) for p in (split_odd(data) if odd else events)]


class FakeServer:
    """Start with ``with FakeServer(handler) as server:``; ``server.url`` is http://127.0.0.1:PORT."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[Request] = []
        self.abandoned = 0  # responses the client stopped reading before their end
        self.port: Optional[int] = None
        self._ready = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._cancel: Optional[trio.CancelScope] = None
        self._token: Optional[trio.lowlevel.TrioToken] = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> "FakeServer":
        self._thread = threading.Thread(target=trio.run, args=(self._main,), daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("fake server did not start")
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._token is not None and self._cancel is not None:
            trio.from_thread.run_sync(self._cancel.cancel, trio_token=self._token)
        if self._thread is not None:
            self._thread.join(10)

    async def _main(self) -> None:
        self._token = trio.lowlevel.current_trio_token()
        with trio.CancelScope() as scope:
            self._cancel = scope
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            self.port = listeners[0].socket.getsockname()[1]
            self._ready.set()
            await trio.serve_listeners(self._serve, listeners)

    async def _serve(self, stream: trio.SocketStream) -> None:
        buffer = b""
        try:
            while True:
                while b"\r\n\r\n" not in buffer:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                head, buffer = buffer.split(b"\r\n\r\n", 1)
                lines = head.decode("latin-1").split("\r\n")
                method, path, _ = lines[0].split(" ", 2)
                headers = {}
                for line in lines[1:]:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip()
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    buffer += data
                body, buffer = buffer[:length], buffer[length:]
                request = Request(method, path, headers, body)
                self.requests.append(request)
                if not await self._perform(stream, self.handler(request)):
                    return
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.abandoned += 1  # the client went away while we were still answering
            return
        finally:
            await stream.aclose()

    async def _perform(self, stream: trio.SocketStream, script: list[Step]) -> bool:
        """Run a script; False when the connection must close afterwards."""
        chunked = False
        for step in script:
            if isinstance(step, Body):
                head = [f"HTTP/1.1 {step.code} {REASONS.get(step.code, 'Status')}",
                        f"content-length: {len(step.data)}"]
                head += [f"{k}: {v}" for k, v in step.headers.items()]
                await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode() + step.data)
            elif isinstance(step, Status):
                head = [f"HTTP/1.1 {step.code} {REASONS.get(step.code, 'Status')}", "transfer-encoding: chunked"]
                head += [f"{k}: {v}" for k, v in step.headers.items()]
                await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode())
                chunked = True
            elif isinstance(step, Chunk):
                if step.data:
                    await stream.send_all(b"%x\r\n%s\r\n" % (len(step.data), step.data))
            elif isinstance(step, Sleep):
                await trio.sleep(step.seconds)
            elif isinstance(step, Drop):
                return False
        if chunked:
            await stream.send_all(b"0\r\n\r\n")
        return True

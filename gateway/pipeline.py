"""One response, from accepted request to terminal event, write-ahead.

``ResponseRun.frames()`` is an async generator of SSE bytes. Each step appends ledger
events (expected stream versions keep the response's stream single-writer), waits until
they are durable, folds them into the run's ResponseView with the one renderer, and only
then yields the rendered bytes. The streaming route sends those bytes as they come; the
non-streaming route drains the generator and answers with the final Response object. Both
are therefore the same function of the same ledger events.

The first ``frames()`` step runs until the provider produced its first event, so an
upstream that fails before any output can still be answered with a plain HTTP 502/504.

Cancellation and disconnects: if the consumer stops (the client left: ``GeneratorExit``
at a ``yield`` or ``Cancelled`` at an ``await``), the ``finally`` block records, shielded
from cancellation, the interruption and the usage emitted so far; ``aclose`` of the
provider's iterator ends the upstream call. No cancel scope is held across a ``yield``.
"""

from __future__ import annotations

import math
from contextlib import aclosing
from typing import Any, AsyncIterator, Awaitable, Callable, Optional, Sequence

import attrs

import trio

from gateway.billing.book import Book, Reservation
from gateway.conversation import model_call
from gateway.errors import ApiError
from gateway.providers.base import (
    Finish,
    Provider,
    ProviderError,
    TextChunk,
    ToolCallArguments,
    ToolCallStart,
    UsageReport,
)
from gateway.request_input import new_id
from gateway.responses_request import CreateRequest
from ledger.errors import ConcurrencyConflict
from ledger.events import (
    ArgumentsDelta,
    ErrorInfo,
    ItemFinished,
    ItemStarted,
    RequestKeyed,
    ResponseAccepted,
    ResponseFinished,
    TextDelta,
    Usage,
)
from ledger.store import EventStore, NewEvent
from projections.responses import response_stream
from projections.wire import CLIENT_DISCONNECTED, FAILED_BEFORE_OUTPUT, UPSTREAM_FAILED, ResponseView

CHARS_PER_TOKEN_ESTIMATE = 4  # documented estimate when the provider reports no usage


ACCEPT_ATTEMPTS_MAX = 20  # reservation retries after losing a race for an account's version
BUFFER_FLUSH_INTERVAL_S = 0.05  # a non-streamed answer's output events reach the ledger at least this often
BUFFER_EVENTS_MAX = 256  # ... or in batches of at most this many events


@attrs.define
class RunBilling:
    """What a run needs to reserve and settle: the book, its reservation, the worst case."""

    book: Book
    reservation: Reservation
    worst_case_micros: int
    catch_up: Callable[[], Awaitable[Any]]


class ResponseExists(Exception):
    """The response id (derived from an Idempotency-Key) is already recorded."""

    def __init__(self, response_id: str) -> None:
        super().__init__(response_id)
        self.response_id = response_id


class UpstreamFailedEarly(Exception):
    """The provider failed before any output; the route may still answer 502/504."""

    def __init__(self, error: ProviderError) -> None:
        super().__init__(error.message)
        self.error = error


class ResponseRun:
    """Runs one response against a provider, recording every step before it is shown."""

    def __init__(
        self,
        store: EventStore,
        provider: Provider,
        request: CreateRequest,
        *,
        model_id: str,
        provider_name: str,
        upstream_model: str,
        platform_id: str,
        end_user_id: Optional[str] = None,
        response_id: Optional[str] = None,
        context: Optional[list[dict[str, Any]]] = None,
        params: Optional[dict[str, Any]] = None,
        billing: Optional["RunBilling"] = None,
        request_sha256: Optional[str] = None,
        view_class: Any = ResponseView,
    ) -> None:
        self.store = store
        self.provider = provider
        self.request = request
        self.response_id = response_id or new_id("resp")
        self.stream = response_stream(self.response_id)
        self.accepted = ResponseAccepted(
            response_id=self.response_id,
            platform_id=platform_id,
            model=model_id,
            provider=provider_name,
            stream=request.stream,
            params=params if params is not None else request.echoed_params(),
            input_items=request.input_items,
            end_user_id=end_user_id,
        )
        self.keyed = RequestKeyed(self.response_id, request_sha256) if request_sha256 else None
        self.billing = billing
        self.upstream_model = upstream_model
        self.context = context or []
        self.view_class = view_class  # the wire renderer: ResponseView, or ChatView for chat completions
        self.view: Any = None
        self._version = 0
        self._usage: Optional[Usage] = None
        self._finish: Optional[str] = None
        self._output_chars = 0
        self._open: list[int] = []  # output indexes of items started and not yet finished
        self._items_started = 0
        self._message_index: Optional[int] = None  # the message item text goes to, while open
        self._tool_indexes: dict[int, int] = {}  # provider's tool-call index -> output index
        self._buffer: list[Any] = []  # output events of a non-streamed answer not yet appended
        self._flushed_at = trio.current_time()
        self.finished = False

    async def _append(self, *events: Any, extra: Sequence[NewEvent] = ()) -> bytes:
        """Append events to this response's stream (plus ``extra`` events on account streams)
        atomically; return the rendered bytes once durable."""
        batch = [
            NewEvent(self.stream, event, f"{self.response_id}.{self._version + i + 1}", self._version + i)
            for i, event in enumerate(events)
        ]
        records = await self.store.append([*batch, *extra])
        self._version += len(batch)
        out = b""
        for recorded in records[: len(batch)]:
            if self.view is None:
                self.view, rendered = self.view_class.start(recorded)
            else:
                rendered = self.view.apply(recorded)
            out += rendered
        return out

    async def _emit(self, *events: Any) -> bytes:
        """Record output events: at once when streaming (their bytes go out right after), or
        batched for a non-streamed answer, which sends nothing until the end: flushed every
        ``BUFFER_FLUSH_INTERVAL_S`` or ``BUFFER_EVENTS_MAX`` events, and always before the answer."""
        if self.request.stream:
            return await self._append(*events)
        self._buffer.extend(events)
        now = trio.current_time()
        if len(self._buffer) >= BUFFER_EVENTS_MAX or now - self._flushed_at >= BUFFER_FLUSH_INTERVAL_S:
            self._flushed_at = now
            return await self._append(*self._take_buffer())
        return b""

    def _take_buffer(self) -> list[Any]:
        events, self._buffer = self._buffer, []
        return events

    async def _accept(self) -> bytes:
        """Record the request with its holds (pre-flight runs here); retry on a lost race."""
        first = [self.accepted] + ([self.keyed] if self.keyed is not None else [])
        if self.billing is None:
            return await self._append(*first)
        book = self.billing.book
        for _ in range(ACCEPT_ATTEMPTS_MAX):
            holds = book.reserve(self.billing.reservation, self.billing.worst_case_micros)
            try:
                return await self._append(*first, extra=holds)
            except ConcurrencyConflict as conflict:
                book.abandon(holds, self.response_id)
                if conflict.stream == self.stream:
                    raise ResponseExists(self.response_id) from conflict
                await self.billing.catch_up()
        raise ApiError(503, "Too much contention on this account; retry the request.", code="busy",
                       type_="server_error")

    def _settle(self, usage: Usage, estimated: bool, status: str, charge: bool = True) -> list[NewEvent]:
        if self.billing is None:
            return []
        return self.billing.book.settle(self.billing.reservation, self.stream, usage, estimated, status, charge)

    async def frames(self) -> AsyncIterator[bytes]:
        """The SSE bytes of this response, each chunk durable before it is yielded."""
        pending = await self._accept()
        try:
            call = model_call(self.request, self.upstream_model, self.context)
            async with aclosing(self.provider.stream(call)) as upstream:
                try:
                    async for event in upstream:
                        out = await self._on_provider_event(event)
                        if out:
                            yield pending + out
                            pending = b""
                except ProviderError as error:
                    if self._items_started == 0 and pending:
                        await self._finish_failed(error, FAILED_BEFORE_OUTPUT)
                        raise UpstreamFailedEarly(error) from error
                    yield pending + await self._finish_failed(error)
                    return
            yield pending + await self._finish_completed()
        finally:
            if not self.finished:
                with trio.CancelScope(shield=True):
                    await self._record_disconnect()

    def _start_item(self, item: dict[str, Any], close_calls: bool) -> list[Any]:
        """Events that finish the open message (and open calls, if ``close_calls``) and start ``item``.

        Function calls stay open until the stream ends or text follows them, because some
        servers interleave the argument pieces of parallel calls.
        """
        if close_calls:
            events: list[Any] = self._close_items("completed")
        elif self._message_index is not None:
            events = [ItemFinished(self.response_id, self._message_index, "completed")]
            self._open.remove(self._message_index)
            self._message_index = None
        else:
            events = []
        index = self._items_started
        self._items_started += 1
        self._open.append(index)
        events.append(ItemStarted(self.response_id, index, item))
        return events

    async def _on_provider_event(self, event: Any) -> bytes:
        if isinstance(event, TextChunk):
            if not event.text:
                return b""
            starts: list[Any] = []
            if self._message_index is None:
                item = {"id": new_id("msg"), "type": "message", "status": "in_progress", "role": "assistant",
                        "content": []}
                starts = self._start_item(item, close_calls=True)
                self._message_index = self._open[-1]
            self._output_chars += len(event.text)
            return await self._emit(*starts, TextDelta(self.response_id, self._message_index, event.text))
        if isinstance(event, ToolCallStart):
            item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress",
                    "call_id": event.call_id, "name": event.name, "arguments": ""}
            starts = self._start_item(item, close_calls=False)
            self._tool_indexes[event.index] = self._open[-1]
            return await self._emit(*starts)
        if isinstance(event, ToolCallArguments):
            index = self._tool_indexes.get(event.index)
            if index is None:
                raise ProviderError(f"upstream sent arguments for unknown tool call {event.index}")
            if not event.delta:
                return b""
            self._output_chars += len(event.delta)
            return await self._emit(ArgumentsDelta(self.response_id, index, event.delta))
        if isinstance(event, UsageReport):
            self._usage = event.usage
        elif isinstance(event, Finish):
            self._finish = event.reason
        return b""

    def _usage_so_far(self) -> tuple[Usage, bool]:
        """Reported usage, or the documented estimate (marked estimated) when none came."""
        if self._usage is not None:
            return self._usage, False
        call = model_call(self.request, self.upstream_model, self.context)
        input_chars = len(call.instructions or "")
        for message in call.messages:
            input_chars += sum(len(p.get("text", "")) for p in message["content"])
            input_chars += sum(len(c["arguments"]) + len(c["name"]) for c in message.get("tool_calls", ()))
        estimate = Usage(input_tokens=math.ceil(input_chars / CHARS_PER_TOKEN_ESTIMATE),
                         output_tokens=math.ceil(self._output_chars / CHARS_PER_TOKEN_ESTIMATE))
        return estimate, True

    def _close_items(self, status: str) -> list[Any]:
        """Events that finish every open item with ``status``."""
        events = [ItemFinished(self.response_id, index, status) for index in self._open]
        self._open = []
        self._message_index = None
        return events

    async def _finish_completed(self) -> bytes:
        usage, estimated = self._usage_so_far()
        if self._finish == "length":
            status, reason = "incomplete", "max_output_tokens"
        elif self._finish == "content_filter":
            status, reason = "incomplete", "content_filter"
        else:
            status, reason = "completed", None
        item_status = "incomplete" if status == "incomplete" else "completed"
        out = await self._append(
            *self._take_buffer(),
            *self._close_items(item_status),
            ResponseFinished(self.response_id, status, usage, estimated, incomplete_reason=reason),
            extra=self._settle(usage, estimated, "success"),
        )
        self.finished = True
        return out

    async def _finish_failed(self, error: ProviderError, interruption: str = UPSTREAM_FAILED) -> bytes:
        usage, estimated = self._usage_so_far()
        code = "upstream_timeout" if error.timeout else "upstream_error"
        before_output = interruption == FAILED_BEFORE_OUTPUT
        out = await self._append(
            *self._take_buffer(),
            *self._close_items("incomplete"),
            ResponseFinished(self.response_id, "failed", usage, estimated, error=ErrorInfo(code, error.message),
                             interruption=interruption),
            extra=self._settle(usage, estimated, "failed" if before_output else "interrupted", not before_output),
        )
        self.finished = True
        return out

    async def _record_disconnect(self) -> None:
        usage, estimated = self._usage_so_far()
        await self._append(
            *self._take_buffer(),
            *self._close_items("incomplete"),
            ResponseFinished(self.response_id, "incomplete", usage, estimated, incomplete_reason=CLIENT_DISCONNECTED,
                             interruption=CLIENT_DISCONNECTED),
            extra=self._settle(usage, estimated, "interrupted"),
        )
        self.finished = True

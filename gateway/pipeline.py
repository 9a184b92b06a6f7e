"""One response, from accepted request to terminal event, write-ahead.

``ResponseRun.frames()`` is an async generator of SSE bytes. Each step appends ledger
events (expected stream versions keep the response's stream single-writer), waits until
they are durable, folds them into the run's ResponseView with the one renderer, and only
then yields the rendered bytes. The streaming route sends those bytes as they come; the
non-streaming route drains the generator and answers with the final Response object. Both
are therefore the same function of the same ledger events.

The first ``frames()`` step runs until the provider produced its first event, so an
upstream that fails before any output can still be answered with a plain HTTP 502/504.

A streamed run reads its provider ahead (gateway/read_ahead.py) and takes the events read
while it waited for the ledger as one batch: one append, then one chunk of their frames. A
non-streamed run renders no frames: it answers with the final view. For ``store: false``
the ledger gets the events with their text withheld (gateway/unstored.py) while the run's
view, and so the client, gets them as they were.

Cancellation and disconnects: if the consumer stops (the client left: ``GeneratorExit``
at a ``yield`` or ``Cancelled`` at an ``await``), the ``finally`` block records, shielded
from cancellation, the interruption and the usage emitted so far; ``aclose`` of the
provider's iterator ends the upstream call. No cancel scope is held across a ``yield``.

Hosted MCP tools (``mcp``, the bookkeeping in gateway/mcp/loop.py): before the first model
call the run records the client's approval responses, lists the tools of servers this
conversation has not listed yet (a listing failure fails the response), and runs the calls
the client approved. Each model call is a turn. MCP calls the model makes become mcp_call
items with streamed arguments (or, needing approval, mcp_approval_request items at the
turn's end). At the end of a turn with MCP calls, the turn is settled and the calls are
recorded as started (with their MCP charges) in one append; they run in one await (their
MCP sessions live inside it, never across a ``yield``); their results are recorded; and
the model is called again, in the same response, until it answers without MCP calls,
calls a client function, or asks for approval. The MCP steps are in gateway/pipeline_mcp.py,
the money in gateway/billing/run.py.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Optional, Sequence

import attrs
import trio

from gateway.billing.estimate import emitted_usage_estimate
from gateway.billing.run import ACCEPT_ATTEMPTS_MAX, RunBilling, busy
from gateway.conversation import model_call
from gateway.errors import ApiError
from gateway.mcp.loop import McpLoop, PendingCall
from gateway.pipeline_mcp import McpSteps
from gateway.providers.base import (
    Finish,
    ModelCall,
    Provider,
    ProviderError,
    TextChunk,
    ToolCallArguments,
    ToolCallStart,
    UsageReport,
)
from gateway.read_ahead import event_batches
from gateway.request_input import new_id
from gateway.responses_request import CreateRequest
from gateway.unstored import withheld
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

BUFFER_FLUSH_INTERVAL_S = 0.05  # a non-streamed answer's output events reach the ledger at least this often
BUFFER_EVENTS_MAX = 256  # ... or in batches of at most this many events


__all__ = ["ResponseExists", "ResponseRun", "RunBilling", "UpstreamFailedEarly"]


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


class ResponseRun(McpSteps):
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
        mcp: Optional[McpLoop] = None,
        read_ahead: Optional[trio.Nursery] = None,
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
        self.mcp = mcp
        self._read_ahead = read_ahead if request.stream else None  # see gateway/read_ahead.py
        self._render = request.stream  # a non-streamed answer is the final view, not frames: render none
        self._turn = 1  # the model call in progress: 1, then 2, 3... in an MCP loop
        self._turn_active = False  # this turn's model call started and its usage is not counted yet
        self._call: Optional[ModelCall] = None
        self._usage_total: Optional[Usage] = None  # counted turns
        self._estimated = False
        self._mcp_open: set[int] = set()  # open mcp_call items (text does not close them)
        self._client_calls = 0  # function_call items of this turn
        self._mcp_acted = False  # MCP calls ran (or were refused) in this response
        self._interleaved_calls = getattr(provider, "interleaves_tool_calls", False)  # see _start_item

    async def _append(self, *events: Any, extra: Sequence[NewEvent] = ()) -> bytes:
        """Append events to this response's stream (plus ``extra`` events on account streams)
        atomically; return the rendered bytes once durable."""
        stored = events if self.request.store else [withheld(event) for event in events]
        batch = [
            NewEvent(self.stream, event, f"{self.response_id}.{self._version + i + 1}", self._version + i)
            for i, event in enumerate(stored)
        ]
        records = await self.store.append([*batch, *extra])
        self._version += len(batch) + sum(1 for new in extra if new.stream == self.stream)  # a turn's usage.charged
        if not self.request.store:  # the client sees the text the ledger does not keep
            records = [attrs.evolve(r, event=event) for r, event in zip(records, events)]
        out = b""
        for recorded in records[: len(batch)]:
            if self.view is None:
                self.view, rendered = self.view_class.start(recorded, render=self._render)
            else:
                rendered = self.view.apply(recorded, render=self._render)
            out += rendered
        return out

    async def _emit(self, *events: Any) -> bytes:
        """Record output events. Streaming: they wait in the buffer until the provider events
        already read are processed, then ``frames`` appends them in one go and sends their bytes
        right after. A non-streamed answer sends nothing until the end: its buffer is flushed every
        ``BUFFER_FLUSH_INTERVAL_S`` or ``BUFFER_EVENTS_MAX`` events, and always before the answer."""
        self._buffer.extend(events)
        if self.request.stream:
            return b""
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
                out = await self._append(*first, extra=holds)
            except ConcurrencyConflict as conflict:
                book.abandon(holds, self.response_id)
                if conflict.stream == self.stream:
                    raise ResponseExists(self.response_id) from conflict
                await self.billing.catch_up()
                continue
            self.billing.holds_open = True
            return out
        raise busy()

    def _count_turn(self) -> Optional[tuple[Usage, bool]]:
        """Add this turn's usage to the response's (once); None when no model call is uncounted."""
        if not self._turn_active:
            return None
        self._turn_active = False
        usage, estimated = self._usage_so_far()
        total = self._usage_total or Usage()
        self._usage_total = Usage(total.input_tokens + usage.input_tokens,
                                  total.cached_input_tokens + usage.cached_input_tokens,
                                  total.output_tokens + usage.output_tokens,
                                  total.reasoning_tokens + usage.reasoning_tokens)
        self._estimated = self._estimated or estimated
        return usage, estimated

    def _settle(self, status: str, charge: bool = True) -> list[NewEvent]:
        """Count the turn's usage; the events that charge it (or release unused holds)."""
        counted = self._count_turn()
        if self.billing is None:
            return []
        if counted is None:
            return self.billing.void(self._turn)
        if not self.billing.holds_open:
            return []
        return self.billing.settle(self.stream, *counted, status, charge, self._turn)

    def _total(self) -> tuple[Usage, bool]:
        return self._usage_total or Usage(), self._estimated

    async def frames(self) -> AsyncIterator[bytes]:
        """The SSE bytes of this response, each chunk durable before it is yielded."""
        pending = await self._accept()
        try:
            approvals: list[PendingCall] = []
            if self.mcp is not None:
                pending += await self._record_approvals()
                servers = self.mcp.servers_to_list()
                if servers:
                    indexes = [self._new_item(self.mcp.listing_item(s)) for s in servers]
                    yield pending + await self._append(*[ItemStarted(self.response_id, i, item) for i, item in indexes])
                    pending = b""
                    listings = await self.mcp.list_servers(servers)
                    yield await self._finish_listings(servers, [i for i, _ in indexes], listings)
                    if self.finished:
                        return
                approved = self.mcp.approved_calls({item["id"] for item in self.request.input_items})
                if approved:
                    yield pending + await self._start_approved(approved)
                    pending = b""
                    out, plans = await self._start_calls(approved, [], turn_end=False)
                    yield out
                    yield await self._finish_calls(plans)
            while True:
                call = self._next_call()
                if self._turn > 1 and self.billing is not None:
                    try:
                        await self.billing.reserve_turn(self.store, call, self._turn)
                    except ApiError as refused:
                        yield await self._finish_refused(refused)
                        return
                self._begin_turn(call)
                async with event_batches(self.provider.stream(call), self._read_ahead) as upstream:
                    try:
                        async for batch in upstream:
                            out = b""
                            for event in batch:
                                out += await self._on_provider_event(event)
                            if self.request.stream and self._buffer:
                                out += await self._append(*self._take_buffer())
                            if out:
                                yield pending + out
                                pending = b""
                    except ProviderError as error:
                        if self._items_started == 0 and (pending or not self._render):  # nothing shown yet
                            await self._finish_failed(error, FAILED_BEFORE_OUTPUT)
                            raise UpstreamFailedEarly(error) from error
                        yield pending + await self._finish_failed(error)
                        return
                calls = self.mcp.take_turn() if self.mcp is not None else []
                approvals = [c for c in calls if c.output_index is None]
                to_run = [c for c in calls if c.output_index is not None]
                if not to_run or self._finish in ("length", "content_filter"):
                    break
                out, plans = await self._start_calls(to_run, approvals, turn_end=True)
                yield pending + out
                pending = b""
                yield await self._finish_calls(plans)
                if approvals or self._client_calls:
                    approvals = []  # recorded with the calls; the client acts next
                    break
                self._turn += 1
            yield pending + await self._finish_completed(approvals)
        finally:
            if not self.finished:
                with trio.CancelScope(shield=True):
                    await self._record_disconnect()

    def _begin_turn(self, call: ModelCall) -> None:
        self._call = call
        self._usage, self._finish, self._output_chars, self._client_calls = None, None, 0, 0
        self._tool_indexes = {}
        self._turn_active = True

    def _next_call(self) -> ModelCall:
        """The model call of the next turn: the conversation, this response's items, the tools.

        Billed without ``max_output_tokens``, the call is sent with the output limit its hold
        covers (``RunBilling.output_tokens_default``): an unbounded answer could outspend it.
        """
        if self.mcp is None:
            call = model_call(self.request, self.upstream_model, self.context)
        else:
            call = model_call(self.request, self.upstream_model, self.context, output=self.view.items,
                              mcp_tools=self.mcp.definitions(), mcp_name=self.mcp.name_of,
                              tool_choice=self._tool_choice())
        if call.max_output_tokens is None and self.billing is not None and self.billing.output_tokens_default:
            call = attrs.evolve(call, max_output_tokens=self.billing.output_tokens_default)
        return call

    def _new_item(self, item: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        index = self._items_started
        self._items_started += 1
        self._open.append(index)
        return index, item

    def _start_item(self, item: dict[str, Any], close_calls: bool) -> list[Any]:
        """Events that finish the open message (and open function calls, if ``close_calls``) and
        start ``item``.

        A function call is closed when the next item starts, as OpenAI streams parallel calls
        (added, deltas, done, then the next), unless the provider says it interleaves the
        argument pieces of parallel calls (``interleaves_tool_calls``: Chat Completions
        servers may, by tool-call index): then calls stay open until the stream ends or text
        follows them. MCP calls stay open until they ran.
        """
        if close_calls:
            events: list[Any] = self._close_items("completed", mcp=False)
        elif self._message_index is not None:
            events = [ItemFinished(self.response_id, self._message_index, "completed")]
            self._open.remove(self._message_index)
            self._message_index = None
        else:
            events = []
        index, _ = self._new_item(item)
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
            mcp_call = self.mcp.start_call(event.index, event.name) if self.mcp is not None else None
            if mcp_call is not None:
                if mcp_call.needs_approval:
                    return b""  # an mcp_approval_request item once its arguments are complete
                starts = self._start_item(mcp_call.item(), close_calls=not self._interleaved_calls)
                mcp_call.output_index = self._open[-1]
                self._mcp_open.add(mcp_call.output_index)
                return await self._emit(*starts)
            item = {"id": new_id("fc"), "type": "function_call", "status": "in_progress",
                    "call_id": event.call_id, "name": event.name, "arguments": ""}
            starts = self._start_item(item, close_calls=not self._interleaved_calls)
            self._tool_indexes[event.index] = self._open[-1]
            self._client_calls += 1
            return await self._emit(*starts)
        if isinstance(event, ToolCallArguments):
            mcp_call = self.mcp.turn.get(event.index) if self.mcp is not None else None
            index = mcp_call.output_index if mcp_call is not None else self._tool_indexes.get(event.index)
            if mcp_call is None and index not in self._open:
                raise ProviderError(f"upstream sent arguments for unknown or finished tool call {event.index}")
            if not event.delta:
                return b""
            self._output_chars += len(event.delta)
            if mcp_call is not None:
                mcp_call.arguments += event.delta
                if index is None:
                    return b""
            return await self._emit(ArgumentsDelta(self.response_id, index, event.delta))
        if isinstance(event, UsageReport):
            self._usage = event.usage
        elif isinstance(event, Finish):
            self._finish = event.reason
        return b""

    def _usage_so_far(self) -> tuple[Usage, bool]:
        """This turn's reported usage, or the documented estimate (marked estimated) when none came."""
        if self._usage is not None:
            return self._usage, False
        call = self._call or model_call(self.request, self.upstream_model, self.context)
        return emitted_usage_estimate(call, self._output_chars), True

    def _close_items(self, status: str, mcp: bool = True) -> list[Any]:
        """Events that finish every open item (but open MCP calls unless ``mcp``) with ``status``."""
        closing = [index for index in self._open if mcp or index not in self._mcp_open]
        self._open = [index for index in self._open if index not in closing]
        self._mcp_open.difference_update(closing)
        if self._message_index in closing:
            self._message_index = None
        return [ItemFinished(self.response_id, index, status) for index in closing]

    async def _finish_completed(self, approvals: Sequence[PendingCall] = ()) -> bytes:
        if self._finish == "length":
            status, reason = "incomplete", "max_output_tokens"
        elif self._finish == "content_filter":
            status, reason = "incomplete", "content_filter"
        else:
            status, reason = "completed", None
        item_status = "incomplete" if status == "incomplete" else "completed"
        money = self._settle("success")
        usage, estimated = self._total()
        out = await self._append(
            *self._take_buffer(),
            *self._close_items(item_status),
            *(self._approval_requests(list(approvals)) if status == "completed" else []),
            ResponseFinished(self.response_id, status, usage, estimated, incomplete_reason=reason),
            extra=money,
        )
        self.finished = True
        return out

    async def _finish_failed(self, error: ProviderError, interruption: str = UPSTREAM_FAILED) -> bytes:
        code = "upstream_timeout" if error.timeout else "upstream_error"
        before_output = interruption == FAILED_BEFORE_OUTPUT
        money = self._settle("failed" if before_output else "interrupted", not before_output)
        usage, estimated = self._total()
        out = await self._append(
            *self._take_buffer(),
            *self._close_items("incomplete"),
            ResponseFinished(self.response_id, "failed", usage, estimated, error=ErrorInfo(code, error.message),
                             interruption=interruption),
            extra=money,
        )
        self.finished = True
        return out

    async def _finish_refused(self, refused: ApiError) -> bytes:
        """The money for a later model call of the loop is not there: the response fails."""
        usage, estimated = self._total()
        out = await self._append(
            *self._take_buffer(),
            *self._close_items("incomplete"),
            ResponseFinished(self.response_id, "failed", usage, estimated,
                             error=ErrorInfo(refused.code or "insufficient_quota", refused.message)),
        )
        self.finished = True
        return out

    async def _record_disconnect(self) -> None:
        money = self._settle("interrupted")
        usage, estimated = self._total()
        await self._append(
            *self._take_buffer(),
            *self._close_items("incomplete"),
            ResponseFinished(self.response_id, "incomplete", usage, estimated, incomplete_reason=CLIENT_DISCONNECTED,
                             interruption=CLIENT_DISCONNECTED),
            extra=money,
        )
        self.finished = True

"""Response history: every response's state, for GET /v1/responses/{id} and replay.

Holds one ResponseView per response, folded without rendering bytes. Reads are scoped by
the caller's platform (and end user for end-user keys): another tenant's response is
simply not found (DESIGN invariant 12).
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import orjson

from ledger.events import RequestKeyed, ResponseAccepted
from ledger.store import Recorded
from projections.wire import ResponseView

RESPONSE_STREAM_PREFIX = "response-"


def response_stream(response_id: str) -> str:
    """The ledger stream that holds one response's events."""
    return RESPONSE_STREAM_PREFIX + response_id


class ResponsesProjection:
    """Response id -> ResponseView, for every response in the ledger, plus thread indexes.

    A conversation's context is found by walking ``previous_response_id`` links from view
    to view (each view keeps only its own input and output), so loading turn N costs
    O(N + items) dictionary lookups, whatever the size of the ledger.
    """

    name = "responses"

    def __init__(self) -> None:
        self.views: dict[str, ResponseView] = {}
        self.threads: dict[tuple[str, str], list[str]] = {}  # (platform_id, thread_id) -> response ids
        self.request_hashes: dict[str, str] = {}  # response id -> body hash, for Idempotency-Key retries

    def apply(self, recorded: Recorded) -> None:
        event = recorded.event
        if isinstance(event, ResponseAccepted):
            view, _ = ResponseView.start(recorded, render=False)
            self.views[event.response_id] = view
            thread_id = view.params.get("thread_id")
            if thread_id and view.params.get("store", True):  # store=false keeps no conversation state
                self.threads.setdefault((event.platform_id, thread_id), []).append(event.response_id)
            return
        if isinstance(event, RequestKeyed):
            self.request_hashes[event.response_id] = event.request_sha256
        response_id = getattr(event, "response_id", None)
        # Only the response's own stream: events elsewhere may name it too (an MCP call's
        # charge is on the wallet stream).
        if response_id is not None and recorded.stream == RESPONSE_STREAM_PREFIX + response_id:
            view = self.views.get(response_id)
            if view is not None:
                view.apply(recorded, render=False)

    def get(self, response_id: str, platform_id: str, end_user_id: Optional[str] = None) -> Optional[ResponseView]:
        """The view if it exists, is not deleted and belongs to the caller; else None."""
        view = self.views.get(response_id)
        if view is None or view.deleted or view.platform_id != platform_id or view.params.get("api"):
            return None  # unknown, deleted, another tenant's, or a chat completion
        if end_user_id is not None and view.end_user_id != end_user_id:
            return None
        return view

    def chain(self, view: ResponseView) -> list[ResponseView]:
        """The turns of the conversation up to and including ``view``, oldest first.

        Deleted turns are included (``deleted`` set), so a caller can refuse to reuse them;
        a parent missing from the ledger ends the walk.
        """
        chain = []
        current: Optional[ResponseView] = view
        seen = set()
        while current is not None and current.response_id not in seen:
            seen.add(current.response_id)
            chain.append(current)
            parent = current.params.get("previous_response_id")
            current = self.views.get(parent) if parent else None
        chain.reverse()
        return chain

    def context_items(self, view: ResponseView) -> list[dict[str, Any]]:
        """Every item of the conversation up to and including ``view``: inputs and outputs, in order."""
        items: list[dict[str, Any]] = []
        for turn in self.chain(view):
            items.extend(turn.accepted.input_items)
            items.extend(turn.items)
        return items

    def thread(self, platform_id: str, thread_id: str, end_user_id: Optional[str] = None) -> list[ResponseView]:
        """The caller's responses in a thread, oldest first (deleted ones left out)."""
        ids = self.threads.get((platform_id, thread_id), [])
        views = [self.views[i] for i in ids]
        return [v for v in views if not v.deleted and (end_user_id is None or v.end_user_id == end_user_id)]

    def fingerprint(self) -> Any:
        digest = hashlib.sha256()
        for response_id in sorted(self.views):
            view = self.views[response_id]
            state = {"object": view.response_object(), "deleted": view.deleted, "version": view.version}
            digest.update(orjson.dumps(state, option=orjson.OPT_SORT_KEYS))
        return {"responses": len(self.views), "sha256": digest.hexdigest()}

"""Response history: every response's state, for GET /v1/responses/{id} and replay.

Holds one ResponseView per response, folded without rendering bytes. Reads are scoped by
the caller's platform (and end user for end-user keys): another tenant's response is
simply not found (DESIGN invariant 12).
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import orjson

from ledger.events import ResponseAccepted
from ledger.store import Recorded
from projections.wire import ResponseView

RESPONSE_STREAM_PREFIX = "response-"


def response_stream(response_id: str) -> str:
    """The ledger stream that holds one response's events."""
    return RESPONSE_STREAM_PREFIX + response_id


class ResponsesProjection:
    """Response id -> ResponseView, for every response in the ledger."""

    name = "responses"

    def __init__(self) -> None:
        self.views: dict[str, ResponseView] = {}

    def apply(self, recorded: Recorded) -> None:
        event = recorded.event
        if isinstance(event, ResponseAccepted):
            self.views[event.response_id], _ = ResponseView.start(recorded, render=False)
            return
        response_id = getattr(event, "response_id", None)
        if response_id is not None:
            view = self.views.get(response_id)
            if view is not None:
                view.apply(recorded, render=False)

    def get(self, response_id: str, platform_id: str, end_user_id: Optional[str] = None) -> Optional[ResponseView]:
        """The view if it exists, is not deleted and belongs to the caller; else None."""
        view = self.views.get(response_id)
        if view is None or view.deleted or view.platform_id != platform_id:
            return None
        if end_user_id is not None and view.end_user_id != end_user_id:
            return None
        return view

    def fingerprint(self) -> Any:
        digest = hashlib.sha256()
        for response_id in sorted(self.views):
            view = self.views[response_id]
            state = {"object": view.response_object(), "deleted": view.deleted, "version": view.version}
            digest.update(orjson.dumps(state, option=orjson.OPT_SORT_KEYS))
        return {"responses": len(self.views), "sha256": digest.hexdigest()}

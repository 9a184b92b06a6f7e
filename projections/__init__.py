"""Deterministic folds over the ledger: response history and wire rendering, tenancy."""

from projections.base import Projection
from projections.responses import ResponsesProjection, response_stream
from projections.runner import ProjectionRunner
from projections.tenancy import TenancyProjection, hash_key
from projections.wire import ResponseView, render_stream, sse_frame, usage_object

__all__ = [
    "Projection",
    "ProjectionRunner",
    "ResponseView",
    "ResponsesProjection",
    "TenancyProjection",
    "hash_key",
    "render_stream",
    "response_stream",
    "sse_frame",
    "usage_object",
]

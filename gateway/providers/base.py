"""The normalized provider interface: one call in, a stream of normalized events out.

An adapter turns a ``ModelCall`` into an async iterator of ``TextChunk``, ``UsageReport``
and ``Finish``; failures raise ``ProviderError`` (``timeout=True`` for timeouts), before
or after output started. Adapters hold no cancel scope across a ``yield``: a consumer may
stop iterating at any point (the client left) and ``aclose()`` ends the upstream call.
"""

from __future__ import annotations

from typing import Any, AsyncIterator, Optional, Protocol, Union

import attrs

from ledger.events import Usage


@attrs.frozen
class ModelCall:
    """What every adapter receives, whatever the provider."""

    model: str  # the upstream model name
    messages: list[dict[str, Any]]  # normalized: {"role", "content": [parts]} in order
    instructions: Optional[str] = None
    temperature: Optional[float] = None
    top_p: Optional[float] = None
    max_output_tokens: Optional[int] = None
    text_format: Optional[dict[str, Any]] = None


@attrs.frozen
class TextChunk:
    text: str


@attrs.frozen
class UsageReport:
    usage: Usage


@attrs.frozen
class Finish:
    reason: str  # stop | length | content_filter


ProviderEvent = Union[TextChunk, UsageReport, Finish]


class ProviderError(Exception):
    """The upstream failed: an HTTP error, a broken stream, a malformed answer, a timeout."""

    def __init__(self, message: str, timeout: bool = False, status: Optional[int] = None) -> None:
        super().__init__(message)
        self.message = message
        self.timeout = timeout
        self.status = status


class Provider(Protocol):
    def stream(self, call: ModelCall) -> AsyncIterator[ProviderEvent]:
        """Start the upstream call and yield its normalized events."""

"""Answering with a run: the first step before any header, then JSON or a write-ahead SSE body.

Shared by /v1/responses and /v1/chat/completions. The first ``frames()`` step (pre-flight,
reservation, the provider's first event) runs before a status is chosen, so a 402/429 or
an upstream failure before any output is still a plain HTTP error. A streamed body is
counted in flight until its generator ends, so shutdown waits for it (bounded).
"""

from __future__ import annotations

from contextlib import aclosing
from typing import Any, Callable, Union

from quart import Response, make_response

from gateway.http import SSE_HEADERS, json_response
from gateway.pipeline import ResponseRun, UpstreamFailedEarly
from gateway.services import Services


def new_run(services: Services, key: Any, model: Any, create: Any, **options: Any) -> ResponseRun:
    """A run of ``create`` on ``model``'s provider for the caller ``key`` (its tenant and end user)."""
    return ResponseRun(
        services.store,
        services.providers[model.provider],
        create,
        model_id=model.id,
        provider_name=model.provider,
        upstream_model=model.upstream_model or model.id,
        platform_id=key.platform_id,
        end_user_id=key.end_user_id,
        read_ahead=services.background,
        **options,
    )


async def answer(services: Services, run: ResponseRun, stream: bool,
                 final: Callable[[Any], Union[dict, Response]]) -> Response:
    """Run ``run``; answer ``final(view)`` (a JSON body, or a whole Response), or stream its frames.

    ResponseExists propagates."""
    services.inflight.enter()
    streaming = False
    frames = run.frames()
    try:
        try:
            first = await frames.__anext__()
        except UpstreamFailedEarly:  # recorded: the view says what to answer (projections.wire.upstream_failure)
            status, body = run.view.client_answer()
            return json_response(body, status)
        if not stream:
            async with aclosing(frames):
                async for _ in frames:
                    pass
            answered = final(run.view)
            return answered if isinstance(answered, Response) else json_response(answered)

        async def body():
            try:
                async with aclosing(frames):
                    yield first
                    async for chunk in frames:
                        yield chunk
            finally:
                services.inflight.exit()

        response = await make_response(body(), 200, SSE_HEADERS)
        response.timeout = None  # Quart's RESPONSE_TIMEOUT would cut long streams
        streaming = True
        return response
    finally:
        if not streaming:
            services.inflight.exit()

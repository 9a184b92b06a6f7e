"""``POST /v1/chat/completions``: OpenAI Chat Completions on the same pipeline as responses.

Same auth, pre-flight, reservation, providers, ledger and settlement as /v1/responses;
only the request mapping (gateway/chat_request.py) and the wire renderer
(projections/chat_wire.py) differ. Chat completions are not stored for later retrieval
by the Responses routes, but every chunk is in the ledger and ``assistiv replay stream
CHATCMPL_ID`` reproduces a chat stream byte for byte. The logs mark them
``request_type: chat.completion``. A non-streamed answer whose upstream failed is a 502/504
in the error shape, even after some output (which is billed): see ChatView.client_answer.
"""

from __future__ import annotations

import uuid

from quart import Response
from quart_trio import QuartTrio

from gateway.chat_request import parse_chat_request
from gateway.errors import ApiError, not_found
from gateway.http import authenticate, json_body, json_response
from gateway.routes.responses import run_billing
from gateway.routes.running import answer, new_run
from gateway.services import Services
from projections.chat_wire import CHAT_API, ChatView

NO_RETRY = {"x-should-retry": "false"}  # honoured by the official OpenAI SDKs' retry logic


def register(app: QuartTrio, services: Services) -> None:
    @app.post("/v1/chat/completions")
    async def create_chat_completion() -> Response:
        key = authenticate(services)
        body = await json_body()
        create, include_usage = parse_chat_request(body)
        model = services.config.model(create.model)
        if model is None:
            raise not_found(f"The model '{create.model}' does not exist or you do not have access to it.",
                            "model_not_found", "model")
        if model.min_output_tokens and create.max_output_tokens is not None \
                and create.max_output_tokens < model.min_output_tokens:
            param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
            raise ApiError(422, f"Invalid '{param}': integer below minimum value. Expected a value >= "
                                f"{model.min_output_tokens}, but got {create.max_output_tokens} instead.",
                           code="integer_below_min_value", param=param)
        params = {"api": CHAT_API, "include_usage": include_usage, "metadata": create.metadata,
                  "store": create.store, "user": create.user}
        run = new_run(services, key, model, create, response_id=f"chatcmpl-{uuid.uuid4().hex}", params=params,
                      view_class=ChatView)
        if services.config.billing.enabled:
            run.billing = run_billing(services, run, model, request_type="chat.completion")
        return await answer(services, run, create.stream, _final)


def _final(view: ChatView) -> Response:
    """The non-streamed answer (see ChatView.client_answer). A failure after output is billed, so
    its 502 says ``x-should-retry: false``: the official SDKs would otherwise re-run (and re-bill)
    it on their own; the caller decides."""
    answered = view.client_answer()
    assert answered is not None, "a drained run has finished, and its client is still here"
    status, body = answered
    return json_response(body, status, NO_RETRY if status != 200 else None)  # orjson, as replay's answer_bytes

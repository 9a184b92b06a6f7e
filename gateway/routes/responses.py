"""Routes of the Responses API and the model list."""

from __future__ import annotations

import hashlib
from typing import Any, Optional

from quart import Response, request
import trio
from quart_trio import QuartTrio

from gateway.billing.book import Reservation
from gateway.billing.estimate import usd_to_micros_floor, worst_case
from gateway.config import ModelConfig
from gateway.conversation import check_call_outputs, model_call
from gateway.errors import ApiError, invalid, not_found
from gateway.http import SSE_HEADERS, authenticate, json_body, json_response
from gateway.mcp.checks import check_approvals, check_servers
from gateway.mcp.client import McpClient
from gateway.mcp.loop import McpLoop
from gateway.mcp.policy import parse_allowlist
from gateway.paging import cursor_page
from gateway.pipeline import ResponseExists, ResponseRun, RunBilling
from gateway.routes.running import answer, new_run
from gateway.responses_request import check_model_rules, parse_create_request
from gateway.services import Services
from ledger.codec import canonical_json
from ledger.events import ResponseDeleted
from ledger.store import NewEvent
from projections.responses import response_stream
from projections.tenancy import KeyInfo
from projections.wire import ResponseView, render_stream, sorted_json

IDEMPOTENT_WAIT_S_MAX = 600  # how long a retry waits for the original request to finish
MODEL_CREATED_AT = 1_735_689_600  # fixed "created" of configured models (2025-01-01), stable across restarts


def register(app: QuartTrio, services: Services) -> None:
    mcp_client = McpClient(parse_allowlist(services.config.mcp.url_allowlist))

    @app.get("/v1/models")
    async def list_models() -> Response:
        authenticate(services)
        data = [_model_object(m) for m in services.config.usable_models()]
        return json_response({"object": "list", "data": data})

    @app.get("/v1/models/<path:model_id>")
    async def get_model(model_id: str) -> Response:
        authenticate(services)
        model = services.config.model(model_id)
        if model is None:
            raise not_found(f"The model '{model_id}' does not exist.", "model_not_found", "model")
        return json_response(_model_object(model))

    @app.post("/v1/responses")
    async def create_response() -> Response:
        key = authenticate(services)
        body = await json_body()
        create = parse_create_request(body)
        model = services.config.model(create.model)
        if model is None:
            raise not_found(f"The model '{create.model}' does not exist or you do not have access to it.",
                            "model_not_found", "model")
        check_model_rules(create, model.min_output_tokens)
        idempotency_key = request.headers.get("Idempotency-Key")
        response_id, request_sha256 = None, None
        if idempotency_key:
            response_id, request_sha256 = keyed_response_id(key, idempotency_key, body)
            if response_id in services.responses.views:
                return await _repeat(services, key, response_id, request_sha256, create.stream)
        parent, thread_id = _conversation_parent(services, key, create)
        context = services.responses.context_items(parent) if parent is not None else []
        check_call_outputs(context, create.input_items)
        check_servers(create.mcp_servers, create.tools, services.config.mcp, mcp_client.allowlist)
        check_approvals(context, create.input_items, create.mcp_servers)
        params = create.echoed_params()
        params["previous_response_id"] = parent.response_id if parent is not None else None
        params["thread_id"] = thread_id
        run = new_run(services, key, model, create, response_id=response_id, context=context, params=params,
                      request_sha256=request_sha256)
        if create.mcp_servers:
            run.mcp = McpLoop(run.response_id, create.mcp_servers, [*context, *create.input_items],
                              services.config.mcp, create.max_tool_calls, mcp_client,
                              [t["name"] for t in create.tools if t["type"] == "function"])
        if services.config.billing.enabled:
            run.billing = run_billing(services, run, model)
        try:
            return await answer(services, run, create.stream, lambda view: view.response_object())
        except ResponseExists:  # the same Idempotency-Key raced us; answer with that response
            return await _repeat(services, key, run.response_id, request_sha256, create.stream)

    @app.get("/v1/responses/<response_id>")
    async def get_response(response_id: str) -> Response:
        key = authenticate(services)
        view = _owned_response(services, key, response_id)
        if request.args.get("stream", "").lower() == "true":
            records = await services.store.read_stream(response_stream(response_id))
            records = [r for r in records if r.position <= view.last_position]
            return Response(render_stream(records), status=200, headers=SSE_HEADERS)
        return json_response(view.response_object())

    @app.delete("/v1/responses/<response_id>")
    async def delete_response(response_id: str) -> Response:
        key = authenticate(services)
        view = _owned_response(services, key, response_id)
        stream = response_stream(response_id)
        await services.store.append(
            [NewEvent(stream, ResponseDeleted(response_id), f"{response_id}.deleted")]
        )
        del view
        return json_response({"id": response_id, "object": "response", "deleted": True})

    @app.post("/v1/responses/<response_id>/cancel")
    async def cancel_response(response_id: str) -> Response:
        key = authenticate(services)
        _owned_response(services, key, response_id)
        raise invalid("Only responses created with background=true can be cancelled, and this gateway runs every "
                      "response in the foreground; close the connection to stop a stream.", "response_id",
                      "not_cancellable")

    @app.get("/v1/responses/<response_id>/input_items")
    async def list_input_items(response_id: str) -> Response:
        key = authenticate(services)
        view = _owned_response(services, key, response_id)
        return json_response(cursor_page(sorted_json(view.accepted.input_items), lambda item: item["id"]))

    @app.get("/v1/threads/<thread_id>/responses")
    async def list_thread(thread_id: str) -> Response:
        key = authenticate(services)
        views = services.responses.thread(key.platform_id, thread_id, key.end_user_id)
        page = cursor_page(views, lambda view: view.response_id, default_order="asc")
        page["data"] = [view.response_object() for view in page["data"]]
        return json_response(page)



def _conversation_parent(services: Services, key: KeyInfo, create) -> tuple[Optional[ResponseView], Optional[str]]:
    """(the response this turn continues, the thread this turn joins).

    The parent is ``previous_response_id`` (it must be stored and finished: completed,
    incomplete or failed), else the latest completed response of ``thread_id``. A
    continuation inherits its parent's thread; naming another thread is a 400. Every turn of
    the parent's conversation must still exist: a deleted one is a 404 naming it, so content
    its owner deleted is never sent to a model again.
    """
    if create.previous_response_id:
        parent = services.responses.get(create.previous_response_id, key.platform_id, key.end_user_id)
        if parent is None:
            raise not_found(f"Previous response with id '{create.previous_response_id}' not found.",
                            "previous_response_not_found", "previous_response_id")
        if not parent.params.get("store", True):
            raise not_found(f"Previous response with id '{create.previous_response_id}' was created with "
                            "store=false, so it cannot be continued; send the earlier items in 'input' instead.",
                            "previous_response_not_found", "previous_response_id")
        if not parent.finished:
            raise invalid(f"Previous response with id '{create.previous_response_id}' is still in progress; "
                          "continue it once it has finished.", "previous_response_id", "previous_response_in_progress")
        parent_thread = parent.params.get("thread_id")
        if create.thread_id and parent_thread and create.thread_id != parent_thread:
            raise invalid(f"thread_id '{create.thread_id}' conflicts with the thread '{parent_thread}' of previous "
                          f"response '{parent.response_id}'; omit thread_id to continue in that thread.",
                          "thread_id", "thread_conflict")
        _check_no_deleted_turn(services, parent, "previous_response_id")
        return parent, create.thread_id or parent_thread
    if create.thread_id:
        completed = [v for v in services.responses.thread(key.platform_id, create.thread_id, key.end_user_id)
                     if v.status == "completed"]
        if not completed:
            return None, create.thread_id
        _check_no_deleted_turn(services, completed[-1], "thread_id")
        return completed[-1], create.thread_id
    return None, None


def _check_no_deleted_turn(services: Services, parent: ResponseView, param: str) -> None:
    """404 previous_response_not_found if an earlier turn of ``parent``'s conversation was deleted."""
    for turn in services.responses.chain(parent):
        if turn.deleted:
            raise not_found(f"Previous response with id '{turn.response_id}' not found: it was deleted, and the "
                            f"conversation of '{parent.response_id}' includes it, so it cannot be continued.",
                            "previous_response_not_found", param)


def keyed_response_id(key: KeyInfo, idempotency_key: str, body: Any) -> tuple[str, str]:
    """(response id, request hash) for a request with an ``Idempotency-Key``.

    The id is derived from the caller and the key, so a retry lands on the same ledger
    stream (and can never touch another tenant's); the hash tells a retry from a reuse.
    """
    owner = f"{key.platform_id}:{key.end_user_id or ''}:{idempotency_key}"
    response_id = "resp_" + hashlib.sha256(owner.encode()).hexdigest()[:32]
    return response_id, hashlib.sha256(canonical_json(body)).hexdigest()


async def _repeat(services: Services, key: KeyInfo, response_id: str, request_sha256: str, stream: bool) -> Response:
    """Answer a retried request with the original response (409 if the body differs)."""
    if services.responses.request_hashes.get(response_id) != request_sha256:
        raise ApiError(409, "This Idempotency-Key was already used with a different request body.",
                       code="idempotency_key_reused")
    view = _owned_response(services, key, response_id)
    with trio.move_on_after(IDEMPOTENT_WAIT_S_MAX):
        while not view.finished:  # the first request is still running: wait for its outcome
            await trio.sleep(0.05)
    if stream:
        records = await services.store.read_stream(response_stream(response_id))
        return Response(render_stream(records), status=200, headers=SSE_HEADERS)
    return json_response(view.response_object())


def run_billing(services: Services, run: ResponseRun, model: ModelConfig,
                request_type: str = "response") -> RunBilling:
    """Reservation details for a run: prices from the price table in force, the worst case."""
    latest = services.prices.latest
    prices = latest.models.get(model.id) if latest is not None else None
    reservation = Reservation(
        reservation_id=run.response_id, platform_id=run.accepted.platform_id, end_user_id=run.accepted.end_user_id,
        model=model.id, provider=model.provider, request_type=request_type, prices=prices,
        price_version_id=latest.version_id if latest else "", price_sha256=latest.sha256 if latest else "",
        hold_micros_max=usd_to_micros_floor(services.config.billing.hold_usd_max))
    call = model_call(run.request, run.upstream_model, run.context)
    return RunBilling(services.book, reservation, worst_case(call, model), services.runner.catch_up,
                      estimate=lambda later: worst_case(later, model), mcp=services.config.mcp,
                      output_tokens_default=model.reserve_output_tokens)


def _owned_response(services: Services, key: KeyInfo, response_id: str):
    view = services.responses.get(response_id, key.platform_id, key.end_user_id)
    if view is None:
        raise not_found(f"Response with id '{response_id}' not found.", "response_not_found")
    if not view.params.get("store", True):  # gateway/unstored.py: its text was never recorded
        raise not_found(f"Response with id '{response_id}' not found: it was created with store=false, so it was "
                        "not stored.", "response_not_found")
    return view


def _model_object(model) -> dict[str, Any]:
    return {"id": model.id, "object": "model", "created": MODEL_CREATED_AT, "owned_by": model.owned_by}


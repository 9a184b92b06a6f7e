"""The quart-trio application: error handling in OpenAI's shape, health, and the route modules.

Handlers stay thin: they authenticate, validate, and hand work to the pipeline or read a
projection. Every error leaves as ``{"error": {...}}`` (CONTRACT), including Quart's own
404/405/413 and any unexpected exception (logged, never echoed with a traceback).
"""

from __future__ import annotations

import logging
from typing import Any

from quart import Response, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from gateway.errors import ApiError
from gateway.http import error_response, json_response
from gateway.routes import billing as billing_routes
from gateway.routes import chat as chat_routes
from gateway.routes import responses as responses_routes
from gateway.routes import tenancy as tenancy_routes
from gateway.services import Services

log = logging.getLogger("assistiv.gateway")


def create_app(services: Services) -> QuartTrio:
    app = QuartTrio("assistiv")
    app.config["RESPONSE_TIMEOUT"] = None  # Quart's 60 s default would cut long streams
    app.config["MAX_CONTENT_LENGTH"] = services.config.server.body_bytes_max
    app.config["BODY_TIMEOUT"] = 60

    @app.before_request
    async def read_body_first() -> None:
        # Read (and cache) the body before any handler can answer early with an error: a
        # response sent while the body is still unread left the keep-alive connection stuck,
        # and the client's next request on it timed out (hypercorn + h11, reproduced).
        if request.method in ("POST", "PUT", "PATCH", "DELETE"):
            await request.get_data()

    @app.errorhandler(ApiError)
    async def on_api_error(error: ApiError) -> Response:
        return error_response(error)

    @app.errorhandler(HTTPException)
    async def on_http_error(error: HTTPException) -> Response:
        status = error.code or 500
        codes = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        message = {413: "Request body too large."}.get(status, error.description or error.name)
        return error_response(ApiError(status, message, code=codes.get(status)))

    @app.errorhandler(Exception)
    async def on_unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(ApiError(500, "The server had an error processing your request.", type_="server_error"))

    @app.get("/healthz")
    async def healthz() -> Response:
        body: dict[str, Any] = {"status": "ok", "position": services.runner.position}
        if request.args.get("projections"):  # for `replay verify --url`: state at exactly this position
            body["projections"] = {p.name: p.fingerprint() for p in services.runner.projections}
        return json_response(body)

    @app.get("/metrics")
    async def metrics() -> Response:
        stats = await services.store.statistics()
        lines = [
            "# TYPE assistiv_ledger_events gauge", f"assistiv_ledger_events {stats['events']}",
            "# TYPE assistiv_ledger_commits_total counter", f"assistiv_ledger_commits_total {stats['commits']}",
            "# TYPE assistiv_ledger_appends_total counter", f"assistiv_ledger_appends_total {stats['appends']}",
            "# TYPE assistiv_projection_position gauge", f"assistiv_projection_position {services.runner.position}",
            "# TYPE assistiv_requests_in_flight gauge", f"assistiv_requests_in_flight {services.inflight.count}",
        ]
        return Response("\n".join(lines) + "\n", content_type="text/plain; version=0.0.4")

    responses_routes.register(app, services)
    tenancy_routes.register(app, services)
    billing_routes.register(app, services)
    chat_routes.register(app, services)
    return app

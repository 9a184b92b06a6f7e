"""Request and response helpers shared by every route module: JSON in and out, auth."""

from __future__ import annotations

import time
from typing import Any, Optional

import orjson
from quart import Response, request

from gateway.errors import ApiError, forbidden, invalid, not_found, unauthorized
from gateway.services import Services
from projections.tenancy import KeyInfo

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


def json_response(body: Any, status: int = 200, headers: Optional[dict[str, str]] = None) -> Response:
    return Response(orjson.dumps(body), status=status, headers=headers, content_type="application/json")


def error_response(error: ApiError) -> Response:
    return json_response(error.body(), error.status, error.headers)


async def json_body() -> Any:
    """The decoded JSON body; 400 when it is not JSON."""
    data = await request.get_data()
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise invalid(f"We could not parse the JSON body of your request: {exc}.") from None


def authenticate(services: Services) -> KeyInfo:
    """The caller's key from ``Authorization: Bearer``; 401 unless known, active and unexpired.

    Answered from the tenancy projection in memory: no store read per request.
    """
    header = request.headers.get("Authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() != "bearer" or not raw.strip():
        raise unauthorized("Missing API key. Send 'Authorization: Bearer <key>'.")
    info = services.tenancy.lookup(raw.strip())
    if info is None:
        raise unauthorized("Incorrect API key provided.")
    if info.revoked:
        raise unauthorized("This API key has been revoked.")
    if info.expires_at is not None and info.expires_at <= time.time():
        raise unauthorized("This API key has expired.")
    if not services.tenancy.key_owner_active(info):
        raise unauthorized("The end user of this API key has been deactivated.")
    return info


def platform_key(services: Services, platform_id: str) -> KeyInfo:
    """A platform key of ``platform_id``: 403 for an end-user key, 404 for another platform's key."""
    key = authenticate(services)
    if key.kind != "platform":
        raise forbidden("This route needs a platform key (sk-plat_...).")
    if key.platform_id != platform_id:
        raise not_found(f"Platform '{platform_id}' not found.")
    return key


def end_user_key(services: Services) -> KeyInfo:
    """An end-user key: 403 for a platform key."""
    key = authenticate(services)
    if key.kind != "end_user":
        raise forbidden("This route needs an end-user key (sk-eu_...).")
    return key

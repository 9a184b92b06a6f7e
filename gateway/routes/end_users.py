"""End users of a platform: create (idempotent on ``external_id``), read, change, deactivate,
their keys and their rate-limit overrides. Platform key of the path's platform only.

DELETE deactivates (the user stays, ``is_active`` false, and their keys answer 401);
PATCH ``is_active: true`` brings them back. A repeated create of a deactivated user's
external id answers that user as it is (still deactivated) with a fresh key. With an
``Idempotency-Key`` header, a retried create (of a user or a key) answers the original key
and status instead of minting another (gateway.idempotency).
"""

from __future__ import annotations

from typing import Optional

from quart import Response, request
from quart_trio import QuartTrio

from gateway import tenancy_commands as commands
from gateway.errors import not_found
from gateway.http import json_response, platform_key
from gateway.idempotency import keyed
from gateway.services import Services
from gateway.tenancy_commands import NewKey
from gateway.tenancy_input import (
    EXTERNAL_ID_CHARS_MAX,
    EndUserPatch,
    object_body,
    parse_end_user_create,
    parse_end_user_patch,
    parse_key_create,
    parse_rate_limits,
    text,
)
from gateway.tenancy_views import end_user_object, key_object, numbered_page, rate_limits_object
from projections.tenancy import EndUser, KeyInfo

BASE = "/v1/platforms/<platform_id>/end-users"


def register(app: QuartTrio, services: Services) -> None:
    tenancy = services.tenancy

    @app.get(BASE)
    async def list_end_users(platform_id: str) -> Response:
        platform_key(services, platform_id)
        external_id = request.args.get("external_id")
        if external_id is not None:
            text(external_id, "external_id", EXTERNAL_ID_CHARS_MAX)
            found = tenancy.end_users_by_external.get((platform_id, external_id))
            users = [tenancy.end_users[found]] if found else []
        else:
            users = [u for u in tenancy.end_users.values() if u.platform_id == platform_id]
        page = numbered_page(users)
        page["data"] = [end_user_object(u) for u in page["data"]]
        return json_response(page)

    @app.post(BASE)
    async def create_end_user(platform_id: str) -> Response:
        platform_key(services, platform_id)
        body = await object_body()
        create = parse_end_user_create(body)
        user, key, created = await commands.create_end_user(services, platform_id, create, keyed(body))
        body = end_user_object(user) | {"api_key": _raw_key_object(key)}
        return json_response(body, 201 if created else 200)

    @app.get(BASE + "/<end_user_id>")
    async def get_end_user(platform_id: str, end_user_id: str) -> Response:
        return json_response(end_user_object(_owned_user(services, platform_id, end_user_id)))

    @app.patch(BASE + "/<end_user_id>")
    async def patch_end_user(platform_id: str, end_user_id: str) -> Response:
        user = _owned_user(services, platform_id, end_user_id)
        patch = parse_end_user_patch(await object_body())
        return json_response(end_user_object(await commands.update_end_user(services, user, patch)))

    @app.delete(BASE + "/<end_user_id>")
    async def deactivate_end_user(platform_id: str, end_user_id: str) -> Response:
        user = _owned_user(services, platform_id, end_user_id)
        deactivate = EndUserPatch(is_active=False)
        return json_response(end_user_object(await commands.update_end_user(services, user, deactivate)))

    @app.post(BASE + "/<end_user_id>/api-keys")
    async def create_end_user_key(platform_id: str, end_user_id: str) -> Response:
        user = _owned_user(services, platform_id, end_user_id)
        body = await object_body()
        expires_at = parse_key_create(body)
        created = await commands.create_end_user_key(services, user, expires_at, keyed(body))
        body = key_object(tenancy.keys_by_id[created.event.key_id]) | {"raw_key": created.raw_key}
        return json_response(body, 201)

    @app.delete(BASE + "/<end_user_id>/api-keys/<key_id>")
    async def revoke_end_user_key(platform_id: str, end_user_id: str, key_id: str) -> Response:
        user = _owned_user(services, platform_id, end_user_id)
        key = owned_key(services, platform_id, key_id, user.end_user_id)
        await commands.revoke_key(services, key)
        return json_response(key_object(key))

    @app.get(BASE + "/<end_user_id>/rate-limits")
    async def get_rate_limits(platform_id: str, end_user_id: str) -> Response:
        user = _owned_user(services, platform_id, end_user_id)
        return json_response(_resolved_limits(services, user))

    @app.put(BASE + "/<end_user_id>/rate-limits")
    async def put_rate_limits(platform_id: str, end_user_id: str) -> Response:
        user = _owned_user(services, platform_id, end_user_id)
        limits = parse_rate_limits(await object_body())
        await commands.set_rate_limits(services, user, limits)
        return json_response(_resolved_limits(services, user))

    @app.delete(BASE + "/<end_user_id>/rate-limits")
    async def clear_rate_limits(platform_id: str, end_user_id: str) -> Response:
        user = _owned_user(services, platform_id, end_user_id)
        await commands.set_rate_limits(services, user, None)
        return json_response(_resolved_limits(services, user))


def owned_key(services: Services, platform_id: str, key_id: str, end_user_id: Optional[str] = None) -> KeyInfo:
    """The platform's key (of ``end_user_id`` when given); another tenant's or an unknown key is 404."""
    key = services.tenancy.keys_by_id.get(key_id)
    if key is None or key.platform_id != platform_id or (end_user_id is not None and key.end_user_id != end_user_id):
        raise not_found(f"API key '{key_id}' not found.", param="key_id")
    return key


def _owned_user(services: Services, platform_id: str, end_user_id: str) -> EndUser:
    """After the platform-key check: the platform's end user, else 404 (another platform's too)."""
    platform_key(services, platform_id)
    user = services.tenancy.end_user(platform_id, end_user_id)
    if user is None:
        raise not_found(f"End user '{end_user_id}' not found.", param="end_user_id")
    return user


def _resolved_limits(services: Services, user: EndUser) -> dict:
    limits, resolution = services.tenancy.rate_limits(user.platform_id, user.end_user_id)
    return rate_limits_object(limits, resolution)


def _raw_key_object(key: NewKey) -> dict:
    return {"id": key.event.key_id, "raw_key": key.raw_key, "key_prefix": key.event.prefix}

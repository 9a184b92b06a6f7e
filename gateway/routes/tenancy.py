"""Tenancy management: the platform, its API keys, and rate limits as an end user sees them.

Management routes need a platform key of the platform in the path (an end-user key: 403;
another platform: 404, so ids leak nothing). Every write is one atomic append
(gateway.tenancy_commands) and answers once the projection has applied it, so a following
read sees it. Key creates honour ``Idempotency-Key`` (gateway.idempotency). The end-user
routes live in gateway.routes.end_users and register from here.
"""

from __future__ import annotations

from quart import Response, request
from quart_trio import QuartTrio

from gateway import tenancy_commands as commands
from gateway.errors import invalid
from gateway.http import end_user_key, json_response, platform_key
from gateway.idempotency import keyed
from gateway.routes import end_users
from gateway.routes.end_users import owned_key
from gateway.services import Services
from gateway.tenancy_input import object_body, parse_key_create, parse_platform_patch
from gateway.tenancy_views import key_object, numbered_page, platform_object, rate_limits_object

KEY_TYPES = ("platform", "end_user")


def register(app: QuartTrio, services: Services) -> None:
    end_users.register(app, services)
    tenancy = services.tenancy

    @app.get("/v1/platforms/<platform_id>")
    async def get_platform(platform_id: str) -> Response:
        platform_key(services, platform_id)
        return json_response(platform_object(tenancy.platforms[platform_id]))

    @app.patch("/v1/platforms/<platform_id>")
    async def patch_platform(platform_id: str) -> Response:
        platform_key(services, platform_id)
        patch = parse_platform_patch(await object_body())
        await commands.update_platform(services, platform_id, patch)
        return json_response(platform_object(tenancy.platforms[platform_id]))

    @app.get("/v1/platforms/<platform_id>/api-keys")
    async def list_keys(platform_id: str) -> Response:
        platform_key(services, platform_id)
        kind = request.args.get("type", "platform")
        if kind not in KEY_TYPES:
            raise invalid("Invalid 'type': expected 'platform' or 'end_user'.", "type", "invalid_value")
        keys = [k for k in tenancy.keys_by_id.values() if k.platform_id == platform_id and k.kind == kind]
        page = numbered_page(keys)
        page["data"] = [key_object(k) for k in page["data"]]
        return json_response(page)

    @app.post("/v1/platforms/<platform_id>/api-keys")
    async def create_key(platform_id: str) -> Response:
        platform_key(services, platform_id)
        body = await object_body()
        expires_at = parse_key_create(body)
        created = await commands.create_platform_key(services, platform_id, expires_at, keyed(body))
        body = key_object(tenancy.keys_by_id[created.event.key_id]) | {"raw_key": created.raw_key}
        return json_response(body, 201)

    @app.delete("/v1/platforms/<platform_id>/api-keys/<key_id>")
    async def revoke_key(platform_id: str, key_id: str) -> Response:
        platform_key(services, platform_id)
        key = owned_key(services, platform_id, key_id)
        await commands.revoke_key(services, key)
        return json_response(key_object(key))

    @app.get("/v1/me/rate-limits")
    async def my_rate_limits() -> Response:
        key = end_user_key(services)
        limits, resolution = tenancy.rate_limits(key.platform_id, key.end_user_id)
        return json_response(rate_limits_object(limits, resolution))


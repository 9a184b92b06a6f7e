"""End to end: tenancy management of the platform and its keys, access rules and paging, on a real gateway."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.tenancy_api import (  # noqa: F401 (alice, other: fixtures)
    HTTP,
    alice,
    assert_error,
    assert_no_raw_key_in_ledger,
    assert_replay_verifies,
    call,
    new_end_user,
    other,
    position,
)


def test_get_and_patch_platform(gateway, other):
    """GET shows the platform; PATCH changes only what it names, null clears, and a following GET sees it."""
    pid, key = other
    got = call(gateway, "GET", f"/v1/platforms/{pid}", key).json()
    assert got["id"] == pid and got["name"] == "other" and got["created_at"].endswith("Z")
    assert got["settings"] == {"default_budget_usd": None,
                               "rate_limits": {"rpm_limit": None, "tpm_limit": None, "rpd_limit": None}}
    patched = call(gateway, "PATCH", f"/v1/platforms/{pid}", key,
                   {"name": "renamed", "settings": {"default_budget_usd": 12.345678, "rate_limits": {"rpm_limit": 600}}})
    assert patched.status_code == 200
    assert patched.json()["settings"]["default_budget_usd"] == 12.345678
    call(gateway, "PATCH", f"/v1/platforms/{pid}", key, {"settings": {"rate_limits": {"tpm_limit": 90000}}})
    got = call(gateway, "GET", f"/v1/platforms/{pid}", key).json()
    assert got["name"] == "renamed"
    assert got["settings"]["rate_limits"] == {"rpm_limit": 600, "tpm_limit": 90000, "rpd_limit": None}
    call(gateway, "PATCH", f"/v1/platforms/{pid}", key, {"settings": {"default_budget_usd": None}})
    assert call(gateway, "GET", f"/v1/platforms/{pid}", key).json()["settings"]["default_budget_usd"] is None


@pytest.mark.parametrize("body, param", [
    ({"settings": {"default_budget_usd": True}}, "settings.default_budget_usd"),
    ({"settings": {"default_budget_usd": "5"}}, "settings.default_budget_usd"),
    ({"settings": {"default_budget_usd": -1}}, "settings.default_budget_usd"),
    ({"settings": {"default_budget_usd": 0}}, "settings.default_budget_usd"),
    ({"settings": {"default_budget_usd": 1.0000001}}, "settings.default_budget_usd"),
    ({"settings": {"rate_limits": {"rpm_limit": 0}}}, "settings.rate_limits.rpm_limit"),
    ({"settings": {"rate_limits": {"tpm_limit": 1.5}}}, "settings.rate_limits.tpm_limit"),
    ({"settings": {"rate_limits": {"burst": 3}}}, "settings.rate_limits.burst"),
    ({"settings": {"markup_percentage": 15}}, "settings.markup_percentage"),
    ({"slug": "x"}, "slug"),
    ({"name": ""}, "name"),
    ({"settings": []}, "settings"),
])
def test_platform_patch_rejects_bad_input(gateway, body, param):
    """A bad PATCH is a 400 naming the field and records nothing."""
    before = position(gateway)
    response = call(gateway, "PATCH", f"/v1/platforms/{gateway.platform_id}", gateway.key, body)
    assert_error(response, 400, param=param)
    assert position(gateway) == before


def test_malformed_json_is_400(gateway):
    """A body that is not JSON is a 400 and records nothing."""
    before = position(gateway)
    response = HTTP.post(f"{gateway.url}/v1/platforms/{gateway.platform_id}/end-users", content=b"{nope",
                         headers={"Authorization": f"Bearer {gateway.key}"})
    assert response.status_code == 400
    assert position(gateway) == before


MANAGEMENT_ROUTES = [
    ("GET", ""), ("PATCH", ""), ("GET", "/api-keys"), ("POST", "/api-keys"), ("DELETE", "/api-keys/{key}"),
    ("GET", "/end-users"), ("POST", "/end-users"), ("GET", "/end-users/{eu}"), ("PATCH", "/end-users/{eu}"),
    ("DELETE", "/end-users/{eu}"), ("POST", "/end-users/{eu}/api-keys"), ("DELETE", "/end-users/{eu}/api-keys/{key}"),
    ("GET", "/end-users/{eu}/rate-limits"), ("PUT", "/end-users/{eu}/rate-limits"),
    ("DELETE", "/end-users/{eu}/rate-limits"),
]


def _path(gateway, pid: str, suffix: str, alice: dict) -> str:
    return f"/v1/platforms/{pid}" + suffix.format(eu=alice["id"], key=alice["api_key"]["id"])


@pytest.mark.parametrize("method, suffix", MANAGEMENT_ROUTES)
def test_end_user_key_gets_403_on_management_routes(gateway, alice, method, suffix):
    """An sk-eu_ key is refused (403 permission_denied) on every management route, recording nothing."""
    before = position(gateway)
    body = {"external_id": "x"} if method in ("POST", "PATCH", "PUT") else None
    response = call(gateway, method, _path(gateway, gateway.platform_id, suffix, alice), alice["api_key"]["raw_key"],
                    body)
    assert_error(response, 403, "permission_denied")
    assert position(gateway) == before


@pytest.mark.parametrize("method, suffix", MANAGEMENT_ROUTES)
def test_another_platform_gets_404(gateway, alice, other, method, suffix):
    """Another platform's key gets 404 for this platform and its objects, under either platform's path."""
    before = position(gateway)
    _, other_key = other
    body = {} if method in ("POST", "PATCH", "PUT") else None
    for pid in (gateway.platform_id, other[0]):
        if pid == other[0] and "{" not in suffix:
            continue  # under its own path, only routes naming this platform's objects are foreign
        assert_error(call(gateway, method, _path(gateway, pid, suffix, alice), other_key, body), 404, "not_found")
    assert position(gateway) == before


def test_me_rate_limits_needs_an_end_user_key(gateway):
    """GET /v1/me/rate-limits with a platform key is 403."""
    assert_error(call(gateway, "GET", "/v1/me/rate-limits", gateway.key), 403, "permission_denied")


def test_platform_keys_create_list_revoke(gateway):
    """A new platform key works at once, is listed without secrets, and stops working once revoked."""
    pid = gateway.platform_id
    created = call(gateway, "POST", f"/v1/platforms/{pid}/api-keys", gateway.key,
                   {"name": "ci", "expires_at": "2099-01-01T00:00:00Z"})
    assert created.status_code == 201
    new = created.json()
    assert new["raw_key"].startswith("sk-plat_") and new["expires_at"] == "2099-01-01T00:00:00Z"
    assert call(gateway, "GET", f"/v1/platforms/{pid}", new["raw_key"]).status_code == 200
    listed = call(gateway, "GET", f"/v1/platforms/{pid}/api-keys", gateway.key).json()
    item = next(k for k in listed["data"] if k["id"] == new["id"])
    assert set(item) == {"id", "platform_id", "end_user_id", "key_prefix", "is_active", "expires_at", "created_at"}
    assert new["raw_key"] not in json.dumps(listed) and new["raw_key"].startswith(item["key_prefix"])
    revoked = call(gateway, "DELETE", f"/v1/platforms/{pid}/api-keys/{new['id']}", gateway.key)
    assert revoked.status_code == 200 and revoked.json()["is_active"] is False
    assert_error(call(gateway, "GET", f"/v1/platforms/{pid}", new["raw_key"]), 401, "invalid_api_key")
    before = position(gateway)
    assert call(gateway, "DELETE", f"/v1/platforms/{pid}/api-keys/{new['id']}", gateway.key).status_code == 200
    assert position(gateway) == before
    assert_error(call(gateway, "DELETE", f"/v1/platforms/{pid}/api-keys/key_nope", gateway.key), 404, "not_found")


def test_key_expiry_answers_401(gateway):
    """A key whose expires_at has passed gets 401."""
    soon = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 2))
    new = call(gateway, "POST", f"/v1/platforms/{gateway.platform_id}/api-keys", gateway.key, {"expires_at": soon})
    assert call(gateway, "GET", "/v1/models", new.json()["raw_key"]).status_code == 200
    time.sleep(2.1)
    assert_error(call(gateway, "GET", "/v1/models", new.json()["raw_key"]), 401, "invalid_api_key")


@pytest.mark.parametrize("body, param", [
    ({"expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"expires_at": "tomorrow"}, "expires_at"),
    ({"expires_at": 4102444800}, "expires_at"),
    ({"name": "n" * 101}, "name"),
    ({"scopes": ["inference"]}, "scopes"),
])
def test_key_create_rejects_bad_input(gateway, alice, body, param):
    """Bad key bodies (platform and end-user keys) are 400 naming the field and record nothing."""
    before = position(gateway)
    for path in ("/api-keys", f"/end-users/{alice['id']}/api-keys"):
        assert_error(call(gateway, "POST", f"/v1/platforms/{gateway.platform_id}{path}", gateway.key, body), 400,
                     param=param)
    assert position(gateway) == before


def test_list_paging_and_bad_paging(gateway, other):
    """Lists page by page/limit in creation order; bad page or limit is a 400 naming it."""
    pid, key = other
    ids = [new_end_user(gateway, f"pager-{i}", pid, key)["id"] for i in range(5)]
    first = call(gateway, "GET", f"/v1/platforms/{pid}/end-users", key, limit=2).json()
    third = call(gateway, "GET", f"/v1/platforms/{pid}/end-users", key, limit=2, page=3).json()
    assert (first["total"], first["page"], first["limit"]) == (5, 1, 2)
    assert [u["id"] for u in first["data"]] == ids[:2] and [u["id"] for u in third["data"]] == ids[4:]
    assert call(gateway, "GET", f"/v1/platforms/{pid}/end-users", key).json()["limit"] == 20
    for params, param in [({"page": 0}, "page"), ({"page": "x"}, "page"), ({"limit": 101}, "limit"),
                          ({"limit": 0}, "limit")]:
        for path in ("/end-users", "/api-keys"):
            assert_error(call(gateway, "GET", f"/v1/platforms/{pid}{path}", key, **params), 400, param=param)
    assert_error(call(gateway, "GET", f"/v1/platforms/{pid}/api-keys", key, type="admin"), 400, "invalid_value", "type")
    end_user_keys = call(gateway, "GET", f"/v1/platforms/{pid}/api-keys", key, type="end_user").json()
    assert end_user_keys["total"] == 5 and all(k["end_user_id"] in ids for k in end_user_keys["data"])


def test_concurrent_platform_patches_lose_nothing(gateway, other):
    """Concurrent PATCHes of different platform fields all take effect (optimistic concurrency, retried)."""
    pid, key = other
    bodies = [{"name": "raced"}, {"settings": {"default_budget_usd": 3}},
              {"settings": {"rate_limits": {"rpm_limit": 7000}}}, {"settings": {"rate_limits": {"tpm_limit": 8000}}},
              {"settings": {"rate_limits": {"rpd_limit": 9000}}}]
    with ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: call(gateway, "PATCH", f"/v1/platforms/{pid}", key, body), bodies))
    assert [a.status_code for a in answers] == [200] * len(bodies)
    got = call(gateway, "GET", f"/v1/platforms/{pid}", key).json()
    assert got["name"] == "raced" and got["settings"] == {
        "default_budget_usd": 3.0, "rate_limits": {"rpm_limit": 7000, "tpm_limit": 8000, "rpd_limit": 9000}}
    call(gateway, "PATCH", f"/v1/platforms/{pid}", key, {"settings": {"default_budget_usd": None}})


def test_raw_keys_never_reach_the_ledger(gateway):
    """No raw key this module created (or was given) appears in the ledger's bytes."""
    assert_no_raw_key_in_ledger(gateway)


def test_replay_verify_url_matches_live_projections(gateway):
    """`replay verify --url` rebuilds every projection (tenancy included) to the live gateway's state."""
    assert_replay_verifies(gateway)

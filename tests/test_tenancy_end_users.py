"""End to end: end users of a platform (create, change, deactivate, keys, rate limits, default budget)."""

from __future__ import annotations

import json
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from ledger.location import LEDGER_FILE_NAME
from tests.tenancy_api import (  # noqa: F401 (alice, other: fixtures)
    alice,
    assert_error,
    assert_no_raw_key_in_ledger,
    assert_replay_verifies,
    call,
    new_end_user,
    new_platform,
    other,
    position,
    respond,
)


def test_end_user_create_is_idempotent_with_fresh_keys(gateway):
    """The same external_id: 201 then 200, one user, two different raw keys that both can call /v1/responses."""
    path = f"/v1/platforms/{gateway.platform_id}/end-users"
    body = {"external_id": "bob@example.com", "display_name": "Bob", "metadata": {"plan": "pro", "seats": 3}}
    first = call(gateway, "POST", path, gateway.key, body)
    again = call(gateway, "POST", path, gateway.key, {"external_id": "bob@example.com"})
    assert (first.status_code, again.status_code) == (201, 200)
    one, two = first.json(), again.json()
    assert one["id"] == two["id"] and two["display_name"] == "Bob" and two["metadata"] == {"plan": "pro", "seats": 3}
    assert set(one["api_key"]) == {"id", "raw_key", "key_prefix"}
    assert one["api_key"]["raw_key"] != two["api_key"]["raw_key"]
    for user in (one, two):
        assert user["api_key"]["raw_key"].startswith("sk-eu_")
        answer = respond(gateway, user["api_key"]["raw_key"])
        assert answer.status_code == 200 and answer.json()["status"] == "completed"


def test_concurrent_creates_of_one_external_id_make_one_user(gateway):
    """Concurrent creates of one external_id: exactly one 201, the rest 200, all the same user, all keys distinct."""
    path = f"/v1/platforms/{gateway.platform_id}/end-users"
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: call(gateway, "POST", path, gateway.key, {"external_id": "racer"}), range(8)))
    assert sorted(a.status_code for a in answers) == [200] * 7 + [201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert len({a.json()["api_key"]["raw_key"] for a in answers}) == 8


@pytest.mark.parametrize("body, param", [
    ({}, "external_id"),
    ({"external_id": ""}, "external_id"),
    ({"external_id": "x" * 256}, "external_id"),
    ({"external_id": 7}, "external_id"),
    ({"external_id": "ok", "display_name": "d" * 101}, "display_name"),
    ({"external_id": "ok", "metadata": ["a"]}, "metadata"),
    ({"external_id": "ok", "email": "a@b.c"}, "email"),
])
def test_end_user_create_rejects_bad_input(gateway, body, param):
    """A bad end-user create is a 400 naming the field and records nothing."""
    before = position(gateway)
    response = call(gateway, "POST", f"/v1/platforms/{gateway.platform_id}/end-users", gateway.key, body)
    assert_error(response, 400, param=param)
    assert position(gateway) == before


def test_end_user_key_can_infer_but_not_manage(gateway, alice):
    """An sk-eu_ key calls /v1/responses and /v1/models, and gets 403 on management routes."""
    key = alice["api_key"]["raw_key"]
    assert respond(gateway, key).status_code == 200
    assert any(m["id"] == "demo" for m in call(gateway, "GET", "/v1/models", key).json()["data"])
    assert_error(call(gateway, "GET", f"/v1/platforms/{gateway.platform_id}/end-users", key), 403, "permission_denied")


def test_end_user_read_patch_deactivate_reactivate(gateway):
    """GET/PATCH/DELETE an end user: a deactivated user's keys get 401 until PATCH is_active=true."""
    user = new_end_user(gateway, "carol")
    path = f"/v1/platforms/{gateway.platform_id}/end-users/{user['id']}"
    key = user["api_key"]["raw_key"]
    got = call(gateway, "GET", path, gateway.key).json()
    assert set(got) == {"id", "platform_id", "external_id", "display_name", "metadata", "is_active", "created_at",
                        "updated_at"}
    patched = call(gateway, "PATCH", path, gateway.key, {"display_name": "Carol", "metadata": {"tier": 2}}).json()
    assert (patched["display_name"], patched["metadata"], patched["is_active"]) == ("Carol", {"tier": 2}, True)
    before = position(gateway)
    assert_error(call(gateway, "PATCH", path, gateway.key, {"is_active": "no"}), 400, param="is_active")
    assert_error(call(gateway, "PATCH", path, gateway.key, {"external_id": "x"}), 400, "unknown_parameter",
                 "external_id")
    assert_error(call(gateway, "GET", f"/v1/platforms/{gateway.platform_id}/end-users/eu_nope", gateway.key), 404)
    assert position(gateway) == before
    deleted = call(gateway, "DELETE", path, gateway.key)
    assert deleted.status_code == 200 and deleted.json()["is_active"] is False
    assert_error(respond(gateway, key), 401, "invalid_api_key")
    assert call(gateway, "GET", path, gateway.key).json()["display_name"] == "Carol"
    assert call(gateway, "PATCH", path, gateway.key, {"is_active": True}).json()["is_active"] is True
    assert respond(gateway, key).status_code == 200


def test_end_user_list_filters_by_external_id(gateway, alice):
    """?external_id= returns just that user (or an empty list) in the list shape."""
    path = f"/v1/platforms/{gateway.platform_id}/end-users"
    found = call(gateway, "GET", path, gateway.key, external_id="alice").json()
    assert [u["id"] for u in found["data"]] == [alice["id"]] and found["total"] == 1
    assert call(gateway, "GET", path, gateway.key, external_id="nobody").json() == {
        "data": [], "total": 0, "page": 1, "limit": 20}


def test_end_user_keys_mint_and_revoke(gateway, alice):
    """Mint an sk-eu_ key for a user; it works, and after DELETE the next request gets 401."""
    base = f"/v1/platforms/{gateway.platform_id}/end-users/{alice['id']}/api-keys"
    minted = call(gateway, "POST", base, gateway.key)
    assert minted.status_code == 201
    new = minted.json()
    assert new["raw_key"].startswith("sk-eu_") and new["end_user_id"] == alice["id"]
    assert respond(gateway, new["raw_key"]).status_code == 200
    dave = new_end_user(gateway, "dave")
    wrong_user = f"/v1/platforms/{gateway.platform_id}/end-users/{dave['id']}/api-keys/{new['id']}"
    assert_error(call(gateway, "DELETE", wrong_user, gateway.key), 404, "not_found")
    assert call(gateway, "DELETE", f"{base}/{new['id']}", gateway.key).json()["is_active"] is False
    assert_error(respond(gateway, new["raw_key"]), 401, "invalid_api_key")
    assert respond(gateway, alice["api_key"]["raw_key"]).status_code == 200


def test_rate_limits_explicit_default_none(gateway, other):
    """Per-user overrides resolve explicit, then platform default once cleared, else none; /v1/me agrees."""
    pid, key = other
    user = new_end_user(gateway, "limited", pid, key)
    path = f"/v1/platforms/{pid}/end-users/{user['id']}/rate-limits"
    mine = user["api_key"]["raw_key"]
    call(gateway, "PATCH", f"/v1/platforms/{pid}", key, {"settings": {"rate_limits": {
        "rpm_limit": None, "tpm_limit": None, "rpd_limit": None}}})
    none = {"rpm_limit": None, "tpm_limit": None, "rpd_limit": None, "resolution": "none"}
    assert call(gateway, "GET", path, key).json() == none
    assert call(gateway, "GET", "/v1/me/rate-limits", mine).json() == none
    put = call(gateway, "PUT", path, key, {"rpm_limit": 1000, "rpd_limit": 50000})
    explicit = {"rpm_limit": 1000, "tpm_limit": None, "rpd_limit": 50000, "resolution": "explicit"}
    assert put.status_code == 200 and put.json() == explicit
    assert call(gateway, "GET", "/v1/me/rate-limits", mine).json() == explicit
    before = position(gateway)
    assert_error(call(gateway, "PUT", path, key, {"rpm_limit": 0}), 400, param="rpm_limit")
    assert_error(call(gateway, "PUT", path, key, {"rps_limit": 5}), 400, "unknown_parameter", "rps_limit")
    assert position(gateway) == before
    call(gateway, "PATCH", f"/v1/platforms/{pid}", key, {"settings": {"rate_limits": {"tpm_limit": 123456}}})
    cleared = call(gateway, "DELETE", path, key).json()
    assert cleared == {"rpm_limit": None, "tpm_limit": 123456, "rpd_limit": None, "resolution": "default"}
    assert call(gateway, "GET", "/v1/me/rate-limits", mine).json() == cleared


def test_default_budget_gives_new_end_users_a_monthly_budget(gateway):
    """With default_budget_usd set, creating an end user records budget.set (monthly, that amount) in the ledger."""
    pid, key = new_platform(gateway, "budgeted")
    call(gateway, "PATCH", f"/v1/platforms/{pid}", key, {"settings": {"default_budget_usd": 2.5}})
    user = new_end_user(gateway, "spender", pid, key)
    new_end_user(gateway, "spender", pid, key)  # a repeat create records no second budget
    with sqlite3.connect(gateway.data_dir / LEDGER_FILE_NAME) as conn:
        rows = conn.execute("SELECT stream, data FROM events WHERE type = 'budget.set'").fetchall()
    budgets = [(stream, json.loads(data)) for stream, data in rows if json.loads(data)["end_user_id"] == user["id"]]
    assert len(budgets) == 1
    stream, budget = budgets[0]
    assert stream == f"budget-{user['id']}" and budget["budget_id"].startswith("bud_")
    assert (budget["platform_id"], budget["max_micros"], budget["period"]) == (pid, 2_500_000, "monthly")
    verify = gateway.cli("replay", "--data-dir", str(gateway.data_dir), "verify", check=False)
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()


def test_raw_keys_never_reach_the_ledger(gateway):
    """No raw key this module created (or was given) appears in the ledger's bytes."""
    assert_no_raw_key_in_ledger(gateway)


def test_replay_verify_url_matches_live_projections(gateway):
    """`replay verify --url` rebuilds every projection (tenancy included) to the live gateway's state."""
    assert_replay_verifies(gateway)

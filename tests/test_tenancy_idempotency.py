"""End to end: Idempotency-Key on the tenancy POSTs that mint keys (platform keys, end users, end-user keys).

A retry with the same key and body answers the original result - the same raw key, after a
restart too - and records nothing; the same key with another body is 409.
"""

from __future__ import annotations

import stat

import attrs

from ledger.location import LEDGER_FILE_NAME
from tests.conftest import start_gateway
from tests.tenancy_api import (  # noqa: F401 (alice, other: fixtures)
    alice,
    assert_error,
    assert_no_raw_key_in_ledger,
    assert_replay_verifies,
    call,
    other,
    position,
    respond,
)


def keyed(key: str) -> dict:
    return {"Idempotency-Key": key}


def test_platform_key_create_retry_returns_the_original_key(gateway):
    """Same Idempotency-Key and body: 201 with the same id and raw key, nothing recorded; the key works."""
    path = f"/v1/platforms/{gateway.platform_id}/api-keys"
    first = call(gateway, "POST", path, gateway.key, {"name": "ci"}, headers=keyed("pk-1"))
    assert first.status_code == 201, first.text
    before = position(gateway)
    again = call(gateway, "POST", path, gateway.key, {"name": "ci"}, headers=keyed("pk-1"))
    assert again.status_code == 201 and again.json() == first.json()
    assert position(gateway) == before
    assert call(gateway, "GET", f"/v1/platforms/{gateway.platform_id}", first.json()["raw_key"]).status_code == 200
    fresh = call(gateway, "POST", path, gateway.key, {"name": "ci"}, headers=keyed("pk-2"))
    assert fresh.json()["raw_key"] != first.json()["raw_key"] and fresh.json()["id"] != first.json()["id"]


def test_platform_key_create_reused_with_another_body_is_409(gateway):
    """The same Idempotency-Key with another body: 409 idempotency_key_reused, nothing recorded."""
    path = f"/v1/platforms/{gateway.platform_id}/api-keys"
    assert call(gateway, "POST", path, gateway.key, {}, headers=keyed("pk-reuse")).status_code == 201
    before = position(gateway)
    for body in ({"expires_at": "2099-01-01T00:00:00Z"}, {"name": "other"}):
        clash = call(gateway, "POST", path, gateway.key, body, headers=keyed("pk-reuse"))
        assert_error(clash, 409, "idempotency_key_reused")
    assert position(gateway) == before


def test_end_user_create_retry_returns_the_original_key_and_status(gateway):
    """An idempotent end-user create answers 201 twice with one raw key; a new key after that is 200 and fresh."""
    path = f"/v1/platforms/{gateway.platform_id}/end-users"
    body = {"external_id": "idem-carol", "display_name": "Carol"}
    first = call(gateway, "POST", path, gateway.key, body, headers=keyed("eu-1"))
    assert first.status_code == 201, first.text
    before = position(gateway)
    again = call(gateway, "POST", path, gateway.key, body, headers=keyed("eu-1"))
    assert again.status_code == 201 and again.json()["api_key"] == first.json()["api_key"]
    assert position(gateway) == before
    assert respond(gateway, first.json()["api_key"]["raw_key"]).status_code == 200
    later = call(gateway, "POST", path, gateway.key, body, headers=keyed("eu-2"))
    assert later.status_code == 200 and later.json()["id"] == first.json()["id"]
    assert later.json()["api_key"]["raw_key"] != first.json()["api_key"]["raw_key"]
    repeat = call(gateway, "POST", path, gateway.key, body, headers=keyed("eu-2"))
    assert repeat.status_code == 200 and repeat.json()["api_key"] == later.json()["api_key"]


def test_end_user_create_reused_with_another_body_is_409(gateway):
    """Another external_id, or another display name, under a used Idempotency-Key: 409, nothing recorded."""
    path = f"/v1/platforms/{gateway.platform_id}/end-users"
    assert call(gateway, "POST", path, gateway.key, {"external_id": "idem-dan"}, headers=keyed("eu-r")).is_success
    before = position(gateway)
    for body in ({"external_id": "idem-erin"}, {"external_id": "idem-dan", "display_name": "Dan"}):
        assert_error(call(gateway, "POST", path, gateway.key, body, headers=keyed("eu-r")), 409,
                     "idempotency_key_reused")
    assert position(gateway) == before
    listed = call(gateway, "GET", path, gateway.key, external_id="idem-erin").json()
    assert listed["total"] == 0  # the rejected create made no user


def test_end_user_key_create_retry_and_reuse(gateway, alice):
    """An end user's extra key: a retry answers the original raw key; another body is 409."""
    path = f"/v1/platforms/{gateway.platform_id}/end-users/{alice['id']}/api-keys"
    first = call(gateway, "POST", path, gateway.key, {}, headers=keyed("euk-1"))
    assert first.status_code == 201, first.text
    before = position(gateway)
    again = call(gateway, "POST", path, gateway.key, {}, headers=keyed("euk-1"))
    assert again.status_code == 201 and again.json() == first.json() and position(gateway) == before
    assert respond(gateway, first.json()["raw_key"]).status_code == 200
    clash = call(gateway, "POST", path, gateway.key, {"expires_at": "2099-01-01T00:00:00Z"}, headers=keyed("euk-1"))
    assert_error(clash, 409, "idempotency_key_reused")


def test_one_idempotency_key_on_two_platforms_makes_two_keys(gateway, other):
    """An Idempotency-Key is scoped to its platform: another platform's same key creates its own key."""
    other_pid, other_key = other
    mine = call(gateway, "POST", f"/v1/platforms/{gateway.platform_id}/api-keys", gateway.key, {},
                headers=keyed("shared"))
    theirs = call(gateway, "POST", f"/v1/platforms/{other_pid}/api-keys", other_key, {}, headers=keyed("shared"))
    assert (mine.status_code, theirs.status_code) == (201, 201)
    assert mine.json()["id"] != theirs.json()["id"] and mine.json()["raw_key"] != theirs.json()["raw_key"]


def test_bad_idempotency_key_is_400_and_records_nothing(gateway):
    """An Idempotency-Key over 255 characters is a 400 naming the header."""
    before = position(gateway)
    answer = call(gateway, "POST", f"/v1/platforms/{gateway.platform_id}/api-keys", gateway.key, {},
                  headers=keyed("k" * 256))
    assert_error(answer, 400, "invalid_value", "Idempotency-Key")
    assert position(gateway) == before


def test_raw_keys_never_reach_the_ledger(gateway):
    """Derived raw keys are recorded as hashes only; the server secret sits next to the ledger, owner-only."""
    assert_no_raw_key_in_ledger(gateway)
    secret = gateway.data_dir / (LEDGER_FILE_NAME + ".key-secret")
    assert len(secret.read_bytes()) == 32 and stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert_replay_verifies(gateway)


def test_retry_after_a_restart_returns_the_same_raw_key(fresh_gateway):
    """The derived raw key survives a restart: the secret file is read back, not made anew."""
    path = f"/v1/platforms/{fresh_gateway.platform_id}/api-keys"
    first = call(fresh_gateway, "POST", path, fresh_gateway.key, {}, headers=keyed("restart-1"))
    assert first.status_code == 201
    assert fresh_gateway.stop() == 0
    again_gw = attrs.evolve(start_gateway(fresh_gateway.data_dir), key=fresh_gateway.key,
                            platform_id=fresh_gateway.platform_id)
    try:
        again = call(again_gw, "POST", path, again_gw.key, {}, headers=keyed("restart-1"))
        assert again.status_code == 201 and again.json() == first.json()
    finally:
        again_gw.stop()

"""Budget writes end to end: Idempotency-Key on create and top-up, bad input recording nothing, money as
JSON numbers on every route, and a budget PATCH that changes nothing."""

from __future__ import annotations

import pytest

from tests.test_billing_e2e import api, gw, head, new_end_user  # noqa: F401 (gw: fixture)


_USERS: list[str] = []


def _user(gw) -> tuple[str, str]:
    """A fresh end user of the module's gateway."""
    _USERS.append(f"bad-input-{len(_USERS)}")
    return new_end_user(gw, _USERS[-1])


def budget_path(gw, euid: str) -> str:
    return f"/platforms/{gw.platform_id}/end-users/{euid}/budget"


def test_budget_create_retry_returns_the_original_budget(gw):
    """A budget create retried with its Idempotency-Key answers 201 with the original; another body is 409."""
    euid, _ = new_end_user(gw, "idem-budget")
    headers = {"Idempotency-Key": "budget-1"}
    first = api(gw, "POST", budget_path(gw, euid), json={"max_usd": 5, "period": "daily"}, headers=headers)
    assert first.status_code == 201, first.text
    position = head(gw)
    again = api(gw, "POST", budget_path(gw, euid), json={"max_usd": 5, "period": "daily"}, headers=headers)
    assert again.status_code == 201 and again.json()["id"] == first.json()["id"]
    assert (again.json()["max_usd"], again.json()["period"]) == (5, "daily") and head(gw) == position
    clash = api(gw, "POST", budget_path(gw, euid), json={"max_usd": 6}, headers=headers)
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "idempotency_key_reused"
    other = api(gw, "POST", budget_path(gw, euid), json={"max_usd": 5}, headers={"Idempotency-Key": "budget-2"})
    assert other.status_code == 409 and other.json()["error"]["code"] == "budget_exists"
    assert api(gw, "POST", budget_path(gw, euid), json={"max_usd": 5}).json()["error"]["code"] == "budget_exists"
    assert head(gw) == position


def test_budget_topup_idempotency_key(gw):
    """A budget top-up retried with its Idempotency-Key adds once; the same key with another amount is 409."""
    euid, _ = new_end_user(gw, "idem-topup")
    api(gw, "POST", budget_path(gw, euid), json={"max_usd": 1})
    headers = {"Idempotency-Key": "btop-1"}
    first = api(gw, "POST", budget_path(gw, euid) + "/topup", json={"amount": 2, "description": "gift"},
                headers=headers)
    again = api(gw, "POST", budget_path(gw, euid) + "/topup", json={"amount": 2, "description": "gift"},
                headers=headers)
    assert first.status_code == again.status_code == 201 and again.json()["max_usd"] == 3
    clash = api(gw, "POST", budget_path(gw, euid) + "/topup", json={"amount": 4}, headers=headers)
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "idempotency_key_reused"
    statement = api(gw, "GET", budget_path(gw, euid) + "/transactions").json()["data"]
    assert [(t["type"], t["amount"]) for t in statement] == [("top_up", 2), ("opening_balance", 1)]


@pytest.mark.parametrize("body, param", [
    ({"max_usd": -1}, "max_usd"), ({"max_usd": 0}, "max_usd"), ({"max_usd": "5"}, "max_usd"),
    ({"max_usd": 1.0000001}, "max_usd"), ({"max_usd": None}, "max_usd"), ({"max_usd": True}, "max_usd"),
    ({"max_usd": 1e12}, "max_usd"), ({}, "max_usd"), ({"max_usd": 5, "period": "weekly"}, "period"),
    ({"max_usd": 5, "auto_replenish": "yes"}, "auto_replenish"), ({"max_usd": 5, "colour": "red"}, "colour"),
    ({"max_usd": 5, "low_balance_threshold": -1}, "low_balance_threshold"),
    ({"max_usd": 5, "replenish_amount": "2"}, "replenish_amount"),
])
def test_budget_create_bad_input_records_nothing(gw, body, param):
    """Each bad budget create is a 400 naming its field, and the ledger does not move."""
    euid, _ = _user(gw)
    position = head(gw)
    answer = api(gw, "POST", budget_path(gw, euid), json=body)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.text
    assert head(gw) == position
    assert api(gw, "GET", budget_path(gw, euid)).status_code == 404


@pytest.mark.parametrize("route, body, param", [
    ("/topup", {"amount": -2}, "amount"), ("/topup", {"amount": "2"}, "amount"), ("/topup", {}, "amount"),
    ("/topup", {"amount": 0.0000001}, "amount"), ("/topup", {"amount": 2, "description": 7}, "description"),
    ("/topup", {"amount": 2, "description": "x" * 501}, "description"), ("/topup", {"amount": 2, "x": 1}, "x"),
    ("", {"max_usd": -3}, "max_usd"), ("", {"period": "yearly"}, "period"), ("", {"is_suspended": 1}, "is_suspended"),
    ("", {"auto_replenish": True, "replenish_amount": None}, "replenish_amount"), ("", {"id": "b"}, "id"),
])
def test_budget_topup_and_patch_bad_input_records_nothing(gw, route, body, param):
    """Bad top-ups and PATCHes are 400s naming the field; the budget and the ledger stay as they were."""
    euid, _ = _user(gw)
    api(gw, "POST", budget_path(gw, euid), json={"max_usd": 5})
    before, position = api(gw, "GET", budget_path(gw, euid)).json(), head(gw)
    answer = api(gw, "PATCH" if route == "" else "POST", budget_path(gw, euid) + route, json=body)
    assert answer.status_code == 400 and answer.json()["error"]["param"] == param, answer.text
    assert head(gw) == position and api(gw, "GET", budget_path(gw, euid)).json() == before


def test_empty_or_unchanged_budget_patch_records_nothing(gw):
    """PATCH {} and a PATCH repeating the current values answer the budget and record nothing."""
    euid, _ = _user(gw)
    created = api(gw, "POST", budget_path(gw, euid), json={"max_usd": 5, "period": "monthly"}).json()
    position = head(gw)
    for body in ({}, {"max_usd": 5}, {"period": "monthly", "is_suspended": False}):
        answer = api(gw, "PATCH", budget_path(gw, euid), json=body)
        assert answer.status_code == 200 and answer.json()["max_usd"] == created["max_usd"]
    assert head(gw) == position
    assert api(gw, "PATCH", budget_path(gw, euid), json={"max_usd": 6}).json()["max_usd"] == 6
    assert head(gw) == position + 1


def test_money_is_a_json_number_on_every_route(gw):
    """Wallet top-up, budget create and default_budget_usd take the same JSON numbers and refuse strings alike."""
    wallet = f"/platforms/{gw.platform_id}/wallet/topup"
    settings = f"/platforms/{gw.platform_id}"
    euid, _ = _user(gw)
    position = head(gw)
    for path, method, make in ((wallet, "POST", lambda v: {"amount": v}),
                               (budget_path(gw, euid), "POST", lambda v: {"max_usd": v}),
                               (settings, "PATCH", lambda v: {"settings": {"default_budget_usd": v}})):
        for bad in ("2.5", "abc", 2.0000001, -1):
            answer = api(gw, method, path, json=make(bad))
            assert answer.status_code == 400, (path, bad)
    assert head(gw) == position
    assert api(gw, "POST", wallet, json={"amount": 0.1}).json()["transaction"]["amount"] == 0.1
    assert api(gw, "POST", budget_path(gw, euid), json={"max_usd": 2.000001}).json()["max_usd"] == 2.000001

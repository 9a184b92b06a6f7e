"""Money end to end: wallet, budgets, pre-flight, reserve then settle, interruptions, idempotency, logs.

The gateway runs with a priced demo model (expensive on purpose, so a few requests move real
money) and a slow priced one for interruption tests.
"""

from __future__ import annotations

import math
import sqlite3
import time
from decimal import Decimal

import httpx
import openai
import pytest
import trio

from tests.conftest import start_gateway
from tests.test_responses_e2e import parse_sse, sync_client

INPUT_PRICE, OUTPUT_PRICE = Decimal("100.00"), Decimal("200.00")  # USD per million tokens
CONFIG = f"""
[[providers]]
name = "demo"
kind = "demo"

[[providers]]
name = "demo-slow"
kind = "demo"
delay_ms = 40

[[models]]
id = "demo"
provider = "demo"

[[models]]
id = "priced"
provider = "demo"
input_usd_per_mtok = "{INPUT_PRICE}"
output_usd_per_mtok = "{OUTPUT_PRICE}"

[[models]]
id = "priced-slow"
provider = "demo-slow"
input_usd_per_mtok = "{INPUT_PRICE}"
output_usd_per_mtok = "{OUTPUT_PRICE}"
"""


@pytest.fixture(scope="module")
def gw(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "billing.toml"
    path.write_text(CONFIG)
    gateway = start_gateway(tmp_path_factory.mktemp("gw"), "--config", str(path))
    answer = api(gateway, "POST", f"/platforms/{gateway.platform_id}/wallet/topup", json={"amount": 50})
    assert answer.status_code == 201, answer.text
    yield gateway
    gateway.stop()


def api(gw, method: str, path: str, key: str | None = None, **kwargs) -> httpx.Response:
    return httpx.request(method, gw.base_url + path, headers={"Authorization": f"Bearer {key or gw.key}",
                                                              **kwargs.pop("headers", {})}, timeout=60, **kwargs)


def new_end_user(gw, external_id: str, platform_id: str | None = None, key: str | None = None) -> tuple[str, str]:
    answer = api(gw, "POST", f"/platforms/{platform_id or gw.platform_id}/end-users", key=key,
                 json={"external_id": external_id})
    assert answer.status_code == 201, answer.text
    return answer.json()["id"], answer.json()["api_key"]["raw_key"]


def head(gw) -> int:
    return httpx.get(gw.url + "/healthz", timeout=30).json()["position"]


def cost_of(usage: dict) -> int:
    """Micro-USD, recomputed independently of the gateway's calculator."""
    return math.ceil(usage["prompt_tokens"] * INPUT_PRICE + usage["completion_tokens"] * OUTPUT_PRICE)


def test_wallet_topup_and_statement(gw):
    """Top-ups move the balance; each transaction carries its balance after; bad amounts are 400s."""
    before = api(gw, "GET", f"/platforms/{gw.platform_id}/wallet").json()["balance"]
    done = api(gw, "POST", f"/platforms/{gw.platform_id}/wallet/topup", json={"amount": 1.25, "description": "t"})
    assert done.status_code == 201 and done.json()["transaction"]["type"] == "top_up"
    assert done.json()["balance"] == pytest.approx(before + 1.25)
    statement = api(gw, "GET", f"/platforms/{gw.platform_id}/wallet/transactions").json()
    assert statement["data"][0]["amount"] == 1.25 and statement["data"][0]["balance_after"] == done.json()["balance"]
    position = head(gw)
    for bad in (-1, 0, "ten", 0.0000001, True, None):
        answer = api(gw, "POST", f"/platforms/{gw.platform_id}/wallet/topup", json={"amount": bad})
        assert answer.status_code == 400 and answer.json()["error"]["param"] == "amount", bad
    assert head(gw) == position  # nothing recorded for rejected requests


def test_wallet_topup_idempotency_key(gw):
    """The same Idempotency-Key tops up once; with another amount it is 409."""
    headers = {"Idempotency-Key": "topup-1"}
    first = api(gw, "POST", f"/platforms/{gw.platform_id}/wallet/topup", json={"amount": 2}, headers=headers)
    again = api(gw, "POST", f"/platforms/{gw.platform_id}/wallet/topup", json={"amount": 2}, headers=headers)
    assert first.json()["transaction"] == again.json()["transaction"]
    assert first.json()["balance"] == again.json()["balance"]
    clash = api(gw, "POST", f"/platforms/{gw.platform_id}/wallet/topup", json={"amount": 3}, headers=headers)
    assert clash.status_code == 409 and clash.json()["error"]["code"] == "idempotency_key_reused"


def test_budget_routes_and_me_budget(gw):
    """Budget create/get/patch/topup/transactions, /v1/me/budget, key kinds and bad input."""
    euid, eu_key = new_end_user(gw, "budget-routes")
    base = f"/platforms/{gw.platform_id}/end-users/{euid}/budget"
    assert api(gw, "GET", "/me/budget", key=eu_key).status_code == 404
    for bad, param in (({"max_usd": -5}, "max_usd"), ({"max_usd": 5, "period": "weekly"}, "period"),
                       ({"max_usd": "abc"}, "max_usd"), ({"max_usd": 1.1234567}, "max_usd"),
                       ({"max_usd": 5, "auto_replenish": True}, "replenish_amount")):
        answer = api(gw, "POST", base, json=bad)
        assert answer.status_code == 400 and answer.json()["error"]["param"] == param, bad
    created = api(gw, "POST", base, json={"max_usd": 5, "period": "monthly", "low_balance_threshold": 1})
    assert created.status_code == 201
    budget = created.json()
    assert (budget["max_usd"], budget["used_usd"], budget["remaining_usd"], budget["period"]) == (5, 0, 5, "monthly")
    assert budget["period_start"].endswith("-01T00:00:00Z")
    assert api(gw, "POST", base, json={"max_usd": 5}).status_code == 409
    assert api(gw, "POST", base + "/topup", json={"amount": 2.5}).json()["max_usd"] == 7.5
    suspended = api(gw, "PATCH", base, json={"is_suspended": True}).json()
    assert suspended["is_suspended"] is True
    mine = api(gw, "GET", "/me/budget", key=eu_key)
    assert mine.status_code == 200 and mine.json()["is_suspended"] is True
    assert api(gw, "GET", "/me/budget").status_code == 403  # platform key on a self-service route
    assert api(gw, "GET", base, key=eu_key).status_code == 403  # end-user key on management
    types = [t["type"] for t in api(gw, "GET", base + "/transactions").json()["data"]]
    assert types == ["suspended", "top_up", "opening_balance"]


def test_preflight_order(gw):
    """A request failing several checks gets the first one's error: rate limit, suspended, exhausted, wallet."""
    euid, eu_key = new_end_user(gw, "preflight")
    base = f"/platforms/{gw.platform_id}/end-users/{euid}"
    api(gw, "POST", base + "/budget", json={"max_usd": 0.000001, "period": "one_time"})
    client = sync_client(gw, key=eu_key)
    assert client.responses.create(model="priced", input="hi", max_output_tokens=16).status == "completed"
    api(gw, "PATCH", base + "/budget", json={"is_suspended": True})
    assert api(gw, "PUT", base + "/rate-limits", json={"rpm_limit": 1}).status_code == 200
    with pytest.raises(openai.RateLimitError) as limited:
        client.responses.create(model="priced", input="hi")
    assert limited.value.code == "rate_limit_exceeded" and int(limited.value.response.headers["retry-after"]) >= 1
    api(gw, "DELETE", base + "/rate-limits")
    with pytest.raises(openai.APIStatusError) as suspended:
        client.responses.create(model="priced", input="hi")
    assert (suspended.value.status_code, suspended.value.code) == (402, "budget_suspended")
    api(gw, "PATCH", base + "/budget", json={"is_suspended": False})
    with pytest.raises(openai.APIStatusError) as exhausted:
        client.responses.create(model="priced", input="hi")
    assert exhausted.value.code == "budget_exhausted"


def test_free_model_passes_empty_wallet_priced_does_not(tmp_path):
    """On a fresh platform with an empty wallet the free demo model works and a priced one is 402."""
    path = tmp_path / "cfg.toml"
    path.write_text(CONFIG)
    gateway = start_gateway(tmp_path / "gw", "--config", str(path))
    try:
        client = sync_client(gateway)
        assert client.responses.create(model="demo", input="free").status == "completed"
        with pytest.raises(openai.APIStatusError) as error:
            client.responses.create(model="priced", input="costs money")
        assert (error.value.status_code, error.value.code) == (402, "wallet_insufficient")
    finally:
        gateway.stop()


def test_charges_follow_usage_and_logs(gw):
    """A completed response is charged usage x price; the log row and both balances agree."""
    euid, eu_key = new_end_user(gw, "charges")
    api(gw, "POST", f"/platforms/{gw.platform_id}/end-users/{euid}/budget", json={"max_usd": 10})
    wallet_before = api(gw, "GET", f"/platforms/{gw.platform_id}/wallet").json()["balance"]
    response = sync_client(gw, key=eu_key).responses.create(model="priced", input="what does this cost?")
    [row] = api(gw, "GET", f"/platforms/{gw.platform_id}/logs", params={"end_user_id": euid}).json()["data"]
    expected = cost_of(row)
    assert row["response_id"] == response.id and row["billing_status"] == "billed"
    assert row["prompt_tokens"] == response.usage.input_tokens and row["token_count_method"] == "reported"
    assert Decimal(row["estimated_cost_usd"]) * 1_000_000 == expected
    budget = api(gw, "GET", f"/platforms/{gw.platform_id}/end-users/{euid}/budget").json()
    assert round(budget["used_usd"] * 1_000_000) == expected and budget["reserved_usd"] == 0
    wallet = api(gw, "GET", f"/platforms/{gw.platform_id}/wallet").json()
    assert round((wallet_before - wallet["balance"]) * 1_000_000) == expected
    usage = api(gw, "GET", f"/platforms/{gw.platform_id}/usage", params={"group_by": "end_user,model"}).json()
    [group] = [g for g in usage["data"] if g["end_user"] == euid]
    assert group["requests"] == 1 and round(group["cost_usd"] * 1_000_000) == expected


def test_idempotent_response_is_charged_once(gw):
    """POST /v1/responses with the same Idempotency-Key returns the original and charges once; 409 on reuse."""
    euid, eu_key = new_end_user(gw, "idem")
    client = sync_client(gw, key=eu_key)
    headers = {"Idempotency-Key": "order-77"}
    first = client.responses.create(model="priced", input="once", extra_headers=headers)
    second = client.responses.create(model="priced", input="once", extra_headers=headers)
    assert first.model_dump() == second.model_dump()
    rows = api(gw, "GET", f"/platforms/{gw.platform_id}/logs", params={"end_user_id": euid}).json()["data"]
    assert len(rows) == 1
    with pytest.raises(openai.ConflictError) as reused:
        client.responses.create(model="priced", input="another body", extra_headers=headers)
    assert reused.value.code == "idempotency_key_reused"


def test_client_disconnect_settles_emitted_usage(gw):
    """A client leaving mid-stream is charged exactly the emitted usage (estimated), hold released."""
    euid, eu_key = new_end_user(gw, "leaver")
    api(gw, "POST", f"/platforms/{gw.platform_id}/end-users/{euid}/budget", json={"max_usd": 10})
    received = b""
    with httpx.stream("POST", gw.base_url + "/responses", headers={"Authorization": f"Bearer {eu_key}"},
                      json={"model": "priced-slow", "input": "talk slowly " * 4, "stream": True}, timeout=30) as s:
        for chunk in s.iter_raw():
            received += chunk
            if received.count(b"output_text.delta") >= 3:
                break
    response_id = parse_sse(received)[0]["response"]["id"]
    deadline = time.monotonic() + 5
    while not (rows := api(gw, "GET", f"/platforms/{gw.platform_id}/logs", params={"end_user_id": euid}).json()["data"]):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    [row] = rows
    assert row["response_id"] == response_id and row["status"] == "interrupted"
    assert row["token_count_method"] == "estimated" and row["completion_tokens"] >= 1
    budget = api(gw, "GET", f"/platforms/{gw.platform_id}/end-users/{euid}/budget").json()
    assert round(budget["used_usd"] * 1_000_000) == cost_of(row) and budget["reserved_usd"] == 0


async def test_concurrent_requests_never_overspend(gw):
    """200 concurrent streams against a budget for ~10 and a wallet for ~20: bounded overshoot, exact charges."""
    import json

    created = json.loads(gw.cli("platform", "create", "--name", "crowd", "--json", "--data-dir",
                                str(gw.data_dir)).stdout)
    pid, key = created["platform_id"], created["api_key"]["raw_key"]
    await trio.sleep(0.3)  # the running server picks up the new platform
    # One request: about 8 input and 14 output tokens -> ~3,600 micro-USD; worst case with max 20 output ~8,000.
    budget_micros, wallet_micros = 36_000, 72_000
    assert api(gw, "POST", f"/platforms/{pid}/wallet/topup", key=key, json={"amount": wallet_micros / 1e6}).is_success
    euid, eu_key = new_end_user(gw, "crowd", pid, key)
    api(gw, "POST", f"/platforms/{pid}/end-users/{euid}/budget", key=key, json={"max_usd": budget_micros / 1e6})
    outcomes: list[int] = []
    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=eu_key, timeout=60, max_retries=0)

    async def one(n: int) -> None:
        for _attempt in range(12):  # like a real client: retry a 402 a few times, then give up
            try:
                stream = await client.responses.create(model="priced", input=f"request {n}", stream=True,
                                                       max_output_tokens=20)
                async for _ in stream:
                    pass
                outcomes.append(200)
                return
            except openai.APIStatusError as error:
                if error.status_code != 402:
                    outcomes.append(error.status_code)
                    return
                await trio.sleep(0.1)
        outcomes.append(402)

    async with trio.open_nursery() as nursery:
        for n in range(200):
            nursery.start_soon(one, n)
    assert set(outcomes) <= {200, 402} and len(outcomes) == 200 and outcomes.count(200) >= 8
    rows = api(gw, "GET", f"/platforms/{pid}/logs", key=key, params={"limit": 100}).json()["data"]
    assert len(rows) == outcomes.count(200)
    charged = sum(cost_of(r) for r in rows)
    assert sum(round(Decimal(r["estimated_cost_usd"]) * 1_000_000) for r in rows) == charged
    worst_case = 8_500
    budget = api(gw, "GET", f"/platforms/{pid}/end-users/{euid}/budget", key=key).json()
    assert round(budget["used_usd"] * 1_000_000) == charged
    assert budget_micros - worst_case <= charged <= budget_micros + worst_case  # spent up to, never past, the bound
    assert budget["reserved_usd"] == 0
    wallet = api(gw, "GET", f"/platforms/{pid}/wallet", key=key).json()
    assert wallet["balance"] >= 0 and round(wallet["balance"] * 1_000_000) == wallet_micros - charged
    assert wallet["reserved"] == 0
    # The ledger file agrees: every hold was released.
    conn = sqlite3.connect(gw.data_dir / "ledger.db")
    placed = conn.execute("SELECT count(*) FROM events WHERE type = 'hold.placed' AND stream = ?",
                          (f"budget-{euid}",)).fetchone()[0]
    released = conn.execute("SELECT count(*) FROM events WHERE type = 'hold.released' AND stream = ?",
                            (f"budget-{euid}",)).fetchone()[0]
    assert placed == released == outcomes.count(200)


def test_replay_verify_after_money_moved(gw):
    """Every projection, money included, rebuilds from position 0 to the live state."""
    done = gw.cli("replay", "--data-dir", str(gw.data_dir), "verify", "--url", gw.url, check=False)
    assert done.returncode == 0, done.stdout.decode()


def test_money_routes_are_tenant_scoped(gw):
    """Another platform's wallet, budgets and logs are 404; end-user keys get 403 on every money route."""
    import json

    other = json.loads(gw.cli("platform", "create", "--name", "other-money", "--json", "--data-dir",
                              str(gw.data_dir)).stdout)
    time.sleep(0.3)
    other_key, other_pid = other["api_key"]["raw_key"], other["platform_id"]
    euid, eu_key = new_end_user(gw, "scoped")
    api(gw, "POST", f"/platforms/{gw.platform_id}/end-users/{euid}/budget", json={"max_usd": 1})
    mine = f"/platforms/{gw.platform_id}"
    for method, path in (("GET", "/wallet"), ("GET", "/wallet/transactions"), ("GET", "/logs"), ("GET", "/usage"),
                         ("GET", f"/end-users/{euid}/budget"), ("GET", f"/end-users/{euid}/budget/transactions")):
        assert api(gw, method, mine + path, key=other_key).status_code == 404, path
        assert api(gw, method, mine + path, key=eu_key).status_code == 403, path
    # The other platform cannot reach our end user through its own platform id either.
    assert api(gw, "GET", f"/platforms/{other_pid}/end-users/{euid}/budget", key=other_key).status_code == 404
    position = head(gw)
    assert api(gw, "POST", mine + "/wallet/topup", key=other_key, json={"amount": 1}).status_code == 404
    assert api(gw, "POST", mine + f"/end-users/{euid}/budget/topup", key=eu_key, json={"amount": 1}).status_code == 403
    assert head(gw) == position

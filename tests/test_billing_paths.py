"""Billing paths end to end that no other module drives: price versions across restarts, tpm_limit, usage by day
within from/to, and a crowd of concurrent requests whose wallet (not budget) runs out first."""

from __future__ import annotations

import datetime as dt
import json
import math
import sqlite3
from decimal import Decimal

import attrs
import httpx
import openai
import pytest
import trio

from tests.conftest import start_gateway
from tests.test_billing_e2e import CONFIG, api, cost_of, gw, new_end_user  # noqa: F401 (gw: fixture)
from tests.test_responses_e2e import sync_client


def price_versions(gateway) -> list[str]:
    conn = sqlite3.connect(gateway.data_dir / "ledger.db")
    return [json.loads(data)["version_id"] for (data,) in
            conn.execute("SELECT data FROM events WHERE type = 'prices.published' ORDER BY position")]


def restarted(gateway, config_path) -> object:
    """The gateway started again on its ledger (it prints no key then: keep the first one's)."""
    again = start_gateway(gateway.data_dir, "--config", str(config_path))
    return attrs.evolve(again, key=gateway.key, platform_id=gateway.platform_id)


def test_price_versions_across_restarts(tmp_path):
    """Same prices at restart record nothing; changed prices record a version; old charges keep theirs."""
    path = tmp_path / "prices.toml"
    path.write_text(CONFIG)
    first = start_gateway(tmp_path / "gw", "--config", str(path))
    try:
        assert api(first, "POST", f"/platforms/{first.platform_id}/wallet/topup", json={"amount": 5}).is_success
        old = sync_client(first).responses.create(model="priced", input="at the old price")
        [v1] = price_versions(first)
    finally:
        assert first.stop() == 0
    same = restarted(first, path)
    try:
        assert price_versions(same) == [v1]
    finally:
        assert same.stop() == 0
    path.write_text(CONFIG.replace('output_usd_per_mtok = "200.00"', 'output_usd_per_mtok = "300.00"', 1))
    changed = restarted(first, path)
    try:
        [_, v2] = price_versions(changed)
        new = sync_client(changed).responses.create(model="priced", input="at the new price")
        rows = {r["response_id"]: r for r in api(changed, "GET", f"/platforms/{changed.platform_id}/logs").json()["data"]}
        assert (rows[old.id]["price_version_id"], rows[new.id]["price_version_id"]) == (v1, v2)
        assert Decimal(rows[old.id]["estimated_cost_usd"]) * 1_000_000 == cost_of(rows[old.id])  # 200 per M, as charged
        new_row = rows[new.id]
        assert Decimal(new_row["estimated_cost_usd"]) * 1_000_000 == math.ceil(
            new_row["prompt_tokens"] * Decimal(100) + new_row["completion_tokens"] * Decimal(300))
        charges = changed.cli("replay", "--data-dir", str(changed.data_dir), "charges", check=False)
        assert charges.returncode == 0, charges.stdout.decode() + charges.stderr.decode()
    finally:
        changed.stop()


def test_tpm_limit_answers_429_with_retry_after(gw):
    """Once an end user's tokens in the last minute reach tpm_limit, the next request is 429 with Retry-After."""
    euid, eu_key = new_end_user(gw, "tpm")
    assert api(gw, "PUT", f"/platforms/{gw.platform_id}/end-users/{euid}/rate-limits",
               json={"tpm_limit": 10}).status_code == 200
    client = sync_client(gw, key=eu_key)
    done = client.responses.create(model="demo", input="a prompt long enough to pass ten tokens at once")
    assert done.usage.total_tokens >= 10
    with pytest.raises(openai.RateLimitError) as limited:
        client.responses.create(model="demo", input="again")
    assert limited.value.code == "rate_limit_exceeded"
    assert 1 <= int(limited.value.response.headers["retry-after"]) <= 60


def test_usage_by_day_within_from_and_to(gw):
    """group_by=day counts today's rows inside [from, to) and none outside; a bad date is 400."""
    euid, eu_key = new_end_user(gw, "by-day")
    sync_client(gw, key=eu_key).responses.create(model="demo", input="count me")
    today = dt.datetime.now(dt.timezone.utc).date()
    tomorrow, yesterday = today + dt.timedelta(days=1), today - dt.timedelta(days=1)
    path = f"/platforms/{gw.platform_id}/usage"
    inside = api(gw, "GET", path, params={"group_by": "day,end_user", "from": today.isoformat(),
                                          "to": tomorrow.isoformat()}).json()
    [mine] = [g for g in inside["data"] if g["end_user"] == euid]
    assert (mine["day"], mine["requests"]) == (today.isoformat(), 1) and inside["group_by"] == ["day", "end_user"]
    for bounds in ({"to": today.isoformat()}, {"from": tomorrow.isoformat()},
                   {"from": yesterday.isoformat(), "to": today.isoformat()}):
        outside = api(gw, "GET", path, params={"group_by": "day,end_user", **bounds}).json()
        assert [g for g in outside["data"] if g["end_user"] == euid] == [], bounds
    bad = api(gw, "GET", path, params={"group_by": "day", "from": "yesterday"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "from"


async def test_concurrent_requests_stop_at_the_wallet(gw):
    """200 concurrent streams, a budget for ~20 and a wallet for ~10: the wallet never goes below zero by more
    than one request's worst case, and every charge is usage x price."""
    created = json.loads(gw.cli("platform", "create", "--name", "wallet-crowd", "--json", "--data-dir",
                                str(gw.data_dir)).stdout)
    pid, key = created["platform_id"], created["api_key"]["raw_key"]
    await trio.sleep(0.3)  # the running server picks up the new platform
    budget_micros, wallet_micros, worst_case = 72_000, 36_000, 8_500  # one request: ~3,600 spent, ~8,000 worst
    assert api(gw, "POST", f"/platforms/{pid}/wallet/topup", key=key, json={"amount": wallet_micros / 1e6}).is_success
    euid, eu_key = new_end_user(gw, "wallet-crowd", pid, key)
    api(gw, "POST", f"/platforms/{pid}/end-users/{euid}/budget", key=key, json={"max_usd": budget_micros / 1e6})
    outcomes: list[tuple[int, str]] = []
    client = openai.AsyncOpenAI(base_url=gw.base_url, api_key=eu_key, timeout=60, max_retries=0)

    async def one(n: int) -> None:
        for _attempt in range(12):  # retry a 402 a few times, then give up
            try:
                stream = await client.responses.create(model="priced", input=f"request {n}", stream=True,
                                                       max_output_tokens=20)
                async for _ in stream:
                    pass
                outcomes.append((200, ""))
                return
            except openai.APIStatusError as error:
                if error.status_code != 402:
                    outcomes.append((error.status_code, error.code or ""))
                    return
                last = error.code or ""
                await trio.sleep(0.1)
        outcomes.append((402, last))

    async with trio.open_nursery() as nursery:
        for n in range(200):
            nursery.start_soon(one, n)
    statuses = [status for status, _ in outcomes]
    assert set(statuses) <= {200, 402} and len(outcomes) == 200 and statuses.count(200) >= 5
    assert {code for status, code in outcomes if status == 402} == {"wallet_insufficient"}  # the budget had room
    rows = api(gw, "GET", f"/platforms/{pid}/logs", key=key, params={"limit": 100}).json()["data"]
    assert len(rows) == statuses.count(200)
    charged = sum(cost_of(r) for r in rows)
    assert sum(round(Decimal(r["estimated_cost_usd"]) * 1_000_000) for r in rows) == charged
    wallet = api(gw, "GET", f"/platforms/{pid}/wallet", key=key).json()
    balance = round(wallet["balance"] * 1_000_000)
    assert balance == wallet_micros - charged and -worst_case <= balance < worst_case
    assert wallet["reserved"] == 0
    budget = api(gw, "GET", f"/platforms/{pid}/end-users/{euid}/budget", key=key).json()
    assert round(budget["used_usd"] * 1_000_000) == charged < budget_micros

"""MCP billing: one log row per model call of the loop, and mcp_usage after the monthly free tier."""

from __future__ import annotations

import math
from decimal import Decimal

import httpx
import pytest

from tests.fakes.mcp_model import script
from tests.mcp_stack import mcp_stack

INPUT_PRICE, OUTPUT_PRICE = Decimal("100.00"), Decimal("200.00")  # USD per million tokens
FREE_CALLS = 1
PRICE_MICROS = 1_000  # $0.001 per MCP call after the free tier
PRICED_MODELS = f"""
[[models]]
id = "mcp-model"
provider = "fake"
input_usd_per_mtok = "{INPUT_PRICE}"
output_usd_per_mtok = "{OUTPUT_PRICE}"
"""


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with mcp_stack(tmp_path_factory, mcp=f"free_calls_per_month = {FREE_CALLS}\nprice_per_call_usd = \"0.001\"\n",
                   models=PRICED_MODELS) as running:
        answer = api(running, "POST", f"/platforms/{running.gateway.platform_id}/wallet/topup", json={"amount": 5})
        assert answer.status_code == 201, answer.text
        yield running


def api(stack, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, stack.gateway.base_url + path, timeout=30,
                         headers={"Authorization": f"Bearer {stack.gateway.key}"}, **kwargs)


def micros(usd: float) -> int:
    return round(Decimal(str(usd)) * 1_000_000)


def test_each_model_call_and_mcp_call_is_logged_and_charged(stack):
    """Two model calls -> two log rows; MCP calls after the free tier are mcp_usage wallet transactions."""
    pid = stack.gateway.platform_id
    before = api(stack, "GET", f"/platforms/{pid}/wallet").json()["balance"]
    client = stack.client()
    first = client.responses.create(model="mcp-model", input=script(("t__add", {"a": 1, "b": 2})),
                                    tools=[stack.tool()])
    second = client.responses.create(model="mcp-model", input=script(("t__add", {"a": 3, "b": 4})),
                                     previous_response_id=first.id, tools=[stack.tool()])
    assert [first.output_text, second.output_text] == ["Tool results: 3", "Tool results: 7"]
    rows = list(reversed(api(stack, "GET", f"/platforms/{pid}/logs").json()["data"]))
    model_rows = [r for r in rows if r["request_type"] == "response"]
    assert [r["response_id"] for r in model_rows] == [first.id, first.id, second.id, second.id]
    assert len({r["id"] for r in model_rows}) == 4
    model_cost = math.ceil(57 * INPUT_PRICE + 13 * OUTPUT_PRICE)
    assert all(micros(float(r["estimated_cost_usd"])) == model_cost and r["billing_status"] == "billed"
               for r in model_rows)
    mcp_rows = [r for r in rows if r["request_type"] == "mcp_tool"]
    assert [(r["response_id"], r["model_id"], r["billing_status"], r["status"]) for r in mcp_rows] == [
        (first.id, "add", "free", "success"), (second.id, "add", "billed", "success")]
    assert micros(float(mcp_rows[1]["estimated_cost_usd"])) == PRICE_MICROS
    txns = api(stack, "GET", f"/platforms/{pid}/wallet/transactions").json()["data"]
    assert [t["type"] for t in txns[:3]] == ["llm_usage", "mcp_usage", "llm_usage"]
    [mcp_txn] = [t for t in txns if t["type"] == "mcp_usage"]
    assert micros(mcp_txn["amount"]) == -PRICE_MICROS and "#2 in" in mcp_txn["description"]
    wallet = api(stack, "GET", f"/platforms/{pid}/wallet").json()
    assert micros(before) - micros(wallet["balance"]) == 4 * model_cost + PRICE_MICROS
    assert wallet["reserved"] == 0
    charges = stack.events(second.id, "mcp.usage_charged")
    assert [(c["call_number"], c["free_calls"], c["cost_micros"]) for c in charges] == [(2, FREE_CALLS, PRICE_MICROS)]
    usage = api(stack, "GET", f"/platforms/{pid}/usage", params={"group_by": "model"}).json()["data"]
    assert {(g["model"], g["requests"], g["mcp_calls"]) for g in usage} == {("mcp-model", 4, 0), ("add", 0, 2)}


def test_replay_verify_after_mcp_money(stack):
    """`replay verify --url` rebuilds the same wallets, logs and responses as the live gateway."""
    done = stack.gateway.cli("replay", "--data-dir", str(stack.gateway.data_dir), "verify", "--url",
                             stack.gateway.url, check=False)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()

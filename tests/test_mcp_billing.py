"""MCP billing: one log row per model call of the loop, and mcp_usage after the monthly free tier.

A call is charged when it starts (with the monthly count, in one append), so a call that then
fails is charged too: the gateway made it, and the server may have acted. Calls refused before
running (a limit, bad arguments, a tool no longer allowed, a wallet that cannot pay) are not.
"""

from __future__ import annotations

import math
from decimal import Decimal

import httpx
import pytest

from gateway.billing.run import RunBilling
from gateway.config import McpConfig, load_config
from ledger.events import WalletCredited
from ledger.memory import MemoryStore
from ledger.store import NewEvent
from projections.money import wallet_stream
from tests.fakes.mcp_model import script
from tests.mcp_stack import mcp_stack
from tests.test_money import Clock, at, make_book, reservation

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


def test_a_failed_call_is_charged_a_refused_one_is_not(stack):
    """A call that runs and fails is counted and charged (a "failed" log row); bad arguments are not run nor charged."""
    pid = stack.gateway.platform_id
    response = stack.client().responses.create(model="mcp-model", tools=[stack.tool()], input=script(
        ("t__fail", {"reason": "charged"})) + "\ncall t__add not-json")
    failed, refused = (o for o in response.output if o.type == "mcp_call")
    assert failed.error.type == "mcp_tool_execution_error" and refused.error.code == -32602
    [charge] = stack.events(response.id, "mcp.usage_charged")
    assert charge["call_item_id"] == failed.id and charge["name"] == "fail"
    rows = [r for r in api(stack, "GET", f"/platforms/{pid}/logs").json()["data"]
            if r["response_id"] == response.id and r["request_type"] == "mcp_tool"]
    assert [(r["model_id"], r["status"]) for r in rows] == [("fail", "failed")]
    assert micros(float(rows[0]["estimated_cost_usd"])) == charge["cost_micros"]


def charges(book, count: int, config: McpConfig, rid: str = "r1") -> tuple[list, list]:
    """The charges (and refusals) of ``count`` MCP calls of response ``rid``, in the book's month."""
    billing = RunBilling(book, reservation(rid, euid=None), 0, catch_up=None, mcp=config)
    return billing.mcp_charges((i, f"mcp_{i}", "srv", "add") for i in range(count))


async def test_defaults_are_1000_free_calls_then_a_tenth_of_a_cent(tmp_path):
    """A config without MCP price lines: 1,000 calls a month free, then 1,000 micro-USD ($0.001) each."""
    path = tmp_path / "gateway.toml"
    path.write_text('[mcp]\nurl_allowlist = ["http://127.0.0.1"]\n')
    config = load_config(path).mcp
    store, clock = MemoryStore(), Clock(at(2026, 5, 5))
    await store.append([NewEvent(wallet_stream("p"), WalletCredited("p", "t", "top_up", 1_000_000))])
    book, _, _ = await make_book(store, clock)
    events, refusals = charges(book, 1_001, config)
    assert refusals == [None] * 1_001
    assert [e.event.cost_micros for e in events] == [0] * 1_000 + [1_000]
    assert (events[-1].event.call_number, events[-1].event.free_calls, events[-1].event.billing_status) == (
        1_001, 1_000, "billed")


async def test_the_count_starts_again_with_each_utc_month(tmp_path):
    """The free tier counts per UTC calendar month: the first call of June is free again."""
    store, clock = MemoryStore(), Clock(at(2026, 5, 31, 23, 59, 59))
    await store.append([NewEvent(wallet_stream("p"), WalletCredited("p", "t", "top_up", 1_000_000))])
    book, money, _ = await make_book(store, clock)
    config = McpConfig(free_calls_per_month=1)
    may, _ = charges(book, 2, config)
    await store.append(may)
    clock.now = at(2026, 6, 1)
    june, _ = charges(book, 1, config, rid="r2")
    await store.append(june)
    assert [(e.event.period, e.event.call_number, e.event.cost_micros) for e in may + june] == [
        ("2026-05", 1, 0), ("2026-05", 2, 1_000), ("2026-06", 1, 0)]
    wallet = money.wallet_view("p")
    assert wallet.mcp_calls == {"2026-05": 2, "2026-06": 1} and wallet.balance_micros == 1_000_000 - 1_000


async def test_a_wallet_that_cannot_pay_refuses_the_call_and_records_nothing(tmp_path):
    """Past the free tier with less than the price in the wallet: a 402 refusal for that call, no charge."""
    store, clock = MemoryStore(), Clock(at(2026, 5, 5))
    await store.append([NewEvent(wallet_stream("p"), WalletCredited("p", "t", "top_up", 999))])
    book, money, _ = await make_book(store, clock)
    events, refusals = charges(book, 2, McpConfig(free_calls_per_month=1))
    assert [e.event.cost_micros for e in events] == [0] and refusals[0] is None
    assert (refusals[1].status, refusals[1].code) == (402, "wallet_insufficient")
    await store.append(events)
    assert money.wallet_view("p").mcp_calls == {"2026-05": 1} and money.wallet_view("p").balance_micros == 999

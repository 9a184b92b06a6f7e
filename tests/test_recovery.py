"""Start-up recovery of requests a killed gateway left in flight (gateway/recovery.py).

Real parts: ``assistiv serve`` subprocesses on one SQLite ledger, a loopback fake Chat
Completions upstream that streams a few deltas and then stalls, the end user's key with a
budget on a priced model, SIGKILL mid-stream, a restart, and ``python -m replay verify``.
"""

from __future__ import annotations

import json
import math
import signal
import sqlite3
import subprocess
import sys
from contextlib import ExitStack
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from gateway.billing.book import Reservation
from gateway.config import Config, ModelConfig, ProviderConfig
from gateway.recovery import recover_at_start
from gateway.services import build_services, publish_prices
from ledger.events import (
    ArgumentsDelta,
    BudgetSet,
    HoldReleased,
    ItemStarted,
    McpCallFinished,
    McpCallStarted,
    ResponseAccepted,
    ResponseFinished,
    TextDelta,
    Usage,
    UsageCharged,
    WalletCredited,
)
from ledger.memory import MemoryStore
from ledger.store import NewEvent
from projections.money import budget_stream, wallet_stream
from tests.conftest import ROOT, Gateway, start_gateway
from tests.fakes import openai_chat
from tests.fakes.server import FakeServer

INPUT_PRICE, OUTPUT_PRICE = Decimal("100.00"), Decimal("200.00")  # USD per million tokens
DELTAS = ["Once upon", " a time", " there was", " a gateway"]
STALL_S = 120  # the upstream goes silent after DELTAS: the request stays in flight until the kill
WALLET_USD, BUDGET_USD = 10, 5


def config(base_url: str, recover: bool) -> str:
    return f"""
[ledger]
recover_in_flight = {str(recover).lower()}

[[providers]]
name = "upstream"
kind = "openai-chat"
base_url = "{base_url}"

[[models]]
id = "priced"
provider = "upstream"
input_usd_per_mtok = "{INPUT_PRICE}"
output_usd_per_mtok = "{OUTPUT_PRICE}"
reserve_output_tokens = 1000
"""


@pytest.fixture
def upstream():
    with FakeServer(openai_chat.stall(STALL_S, DELTAS)) as server:
        yield server


def api(gw: Gateway, method: str, path: str, key: str, **kwargs) -> httpx.Response:
    return httpx.request(method, gw.base_url + path, headers={"Authorization": f"Bearer {key}"}, timeout=30, **kwargs)


def restart(gw: Gateway, config_path: Path) -> Gateway:
    """Start a gateway on the same ledger; it prints no key on a ledger that has a platform."""
    again = start_gateway(gw.data_dir, "--config", str(config_path))
    return Gateway(again.proc, again.url, gw.key, gw.platform_id, gw.data_dir, again.log)


def funded_end_user(gw: Gateway) -> tuple[str, str]:
    """An end user with a budget on a platform with a funded wallet: (id, raw key)."""
    assert api(gw, "POST", f"/platforms/{gw.platform_id}/wallet/topup", gw.key, json={"amount": WALLET_USD}).is_success
    created = api(gw, "POST", f"/platforms/{gw.platform_id}/end-users", gw.key, json={"external_id": "reader"}).json()
    euid = created["id"]
    answer = api(gw, "POST", f"/platforms/{gw.platform_id}/end-users/{euid}/budget", gw.key,
                 json={"max_usd": BUDGET_USD})
    assert answer.is_success, answer.text
    return euid, created["api_key"]["raw_key"]


def open_stream(gw: Gateway, key: str, path: str, body: dict) -> tuple[ExitStack, bytes]:
    """Start a streamed request and read until every delta arrived (so each is durable); leave it
    open (the caller closes the returned stack, after the kill)."""
    stack = ExitStack()
    client = stack.enter_context(httpx.Client(timeout=30))
    response = stack.enter_context(client.stream("POST", gw.base_url + path, json=body,
                                                 headers={"Authorization": f"Bearer {key}"}))
    assert response.status_code == 200, response.read()
    received = b""
    chunks = response.iter_raw()
    stack.callback(chunks.close)  # keeps the iterator alive: closing it would close the connection
    for chunk in chunks:
        received += chunk
        if all(json.dumps(delta).encode() in received for delta in DELTAS):
            break
    return stack, received


def kill_mid_stream(gw: Gateway, euid: str, eu_key: str) -> tuple[str, str, bytes, bytes]:
    """A streamed response and a streamed chat completion, SIGKILLed after all their deltas: their ids
    and the bytes each client received."""
    prompt = "tell me a long story " * 3
    r_client, r_bytes = open_stream(gw, eu_key, "/responses", {"model": "priced", "input": prompt, "stream": True})
    c_client, c_bytes = open_stream(gw, eu_key, "/chat/completions",
                                    {"model": "priced", "stream": True,
                                     "messages": [{"role": "user", "content": prompt}]})
    budget = api(gw, "GET", f"/platforms/{gw.platform_id}/end-users/{euid}/budget", gw.key).json()
    assert budget["reserved_usd"] > 0  # both holds are open while the requests run
    gw.stop(signal.SIGKILL)
    r_client.close()
    c_client.close()
    response_id = json.loads(r_bytes.split(b"data: ", 1)[1].split(b"\n", 1)[0])["response"]["id"]
    chat_id = json.loads(c_bytes.split(b"data: ", 1)[1].split(b"\n", 1)[0])["id"]
    return response_id, chat_id, r_bytes, c_bytes


def ledger_events(gw: Gateway, type_: str) -> list[dict]:
    conn = sqlite3.connect(gw.data_dir / "ledger.db")
    try:
        rows = conn.execute("SELECT stream, data FROM events WHERE type = ? ORDER BY position", (type_,)).fetchall()
    finally:
        conn.close()
    return [{"stream": stream, **json.loads(data)} for stream, data in rows]


def tokens(chars: int) -> int:
    return math.ceil(chars / 4)  # the documented estimate (gateway/billing/estimate.py)


def cost(input_tokens: int, output_tokens: int) -> int:
    """Micro-USD, recomputed independently of the gateway's calculator."""
    return math.ceil(input_tokens * INPUT_PRICE + output_tokens * OUTPUT_PRICE)


def replay_verify(gw: Gateway) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "replay", "--data-dir", str(gw.data_dir), "verify"],
                          capture_output=True, text=True, cwd=ROOT, timeout=120)


def killed_and_restarted(tmp_path, upstream, recover: bool) -> tuple[Gateway, Path, str, str, tuple]:
    """A gateway killed (-9) with a streamed response and chat completion in flight, then started again:
    (gateway, its config, end user id, end-user key, what kill_mid_stream returned)."""
    config_path = tmp_path / "gateway.toml"
    config_path.write_text(config(upstream.url + "/v1", recover=recover))
    gw = start_gateway(tmp_path / "gw", "--config", str(config_path))
    euid, eu_key = funded_end_user(gw)
    killed = kill_mid_stream(gw, euid, eu_key)
    return restart(gw, config_path), config_path, euid, eu_key, killed


def test_killed_gateway_requests_are_finished_billed_and_released_on_restart(tmp_path, upstream):
    """kill -9 mid-stream; a restart fails both with gateway_restarted, bills emitted usage, frees holds; once only."""
    gw, config_path, euid, eu_key, killed = killed_and_restarted(tmp_path, upstream, recover=True)
    response_id, chat_id, response_bytes, chat_bytes = killed
    try:
        assert "Recovered 2 response(s)" in gw.log.read_text()
        response = api(gw, "GET", f"/responses/{response_id}", eu_key).json()
        assert response["status"] == "failed" and response["error"]["code"] == "gateway_restarted"
        [message] = response["output"]
        assert message["status"] == "incomplete" and message["content"][0]["text"] == "".join(DELTAS)
        prompt_tokens, output_tokens = tokens(len("tell me a long story " * 3)), tokens(len("".join(DELTAS)))
        assert response["usage"]["input_tokens"] == prompt_tokens
        assert response["usage"]["output_tokens"] == output_tokens

        rows = api(gw, "GET", f"/platforms/{gw.platform_id}/logs", gw.key, params={"end_user_id": euid}).json()["data"]
        assert sorted(r["response_id"] for r in rows) == sorted([response_id, chat_id])
        for row in rows:
            assert row["status"] == "interrupted" and row["token_count_method"] == "estimated"
            assert (row["prompt_tokens"], row["completion_tokens"]) == (prompt_tokens, output_tokens)
        charged = 2 * cost(prompt_tokens, output_tokens)
        assert sum(round(Decimal(r["estimated_cost_usd"]) * 1_000_000) for r in rows) == charged

        budget = api(gw, "GET", f"/platforms/{gw.platform_id}/end-users/{euid}/budget", gw.key).json()
        assert budget["reserved_usd"] == 0 and round(budget["used_usd"] * 1_000_000) == charged
        assert round(budget["remaining_usd"] * 1_000_000) == BUDGET_USD * 1_000_000 - charged
        wallet = api(gw, "GET", f"/platforms/{gw.platform_id}/wallet", gw.key).json()
        assert wallet["reserved"] == 0 and round(wallet["balance"] * 1_000_000) == WALLET_USD * 1_000_000 - charged
        [started] = ledger_events(gw, "gateway.started")[1:]
        assert started["recovery"] is True and started["recovered"] == [response_id, chat_id]
    finally:
        assert gw.stop() == 0

    verified = replay_verify(gw)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert "open holds:       0" in verified.stdout
    for stream_id, received in ((response_id, response_bytes), (chat_id, chat_bytes)):
        replayed = subprocess.run([sys.executable, "-m", "replay", "--data-dir", str(gw.data_dir), "stream", stream_id],
                                  capture_output=True, cwd=ROOT, timeout=60)
        # What the client got before the crash: the recovery's append (closing items, the terminal
        # event) renders nothing, since the connection died with the process.
        assert replayed.stdout.startswith(received)
        assert b"gateway_restarted" not in replayed.stdout and b"response.failed" not in replayed.stdout

    gw = restart(gw, config_path)
    try:
        assert "Recovered" not in gw.log.read_text()
        finished = [e for e in ledger_events(gw, "response.finished") if e["response_id"] in (response_id, chat_id)]
        assert len(finished) == 2
        assert len(ledger_events(gw, "usage.charged")) == 2 and len(ledger_events(gw, "hold.released")) == 4
        assert ledger_events(gw, "gateway.started")[-1]["recovered"] == []
    finally:
        assert gw.stop() == 0


def test_recovery_switched_off_leaves_in_flight_requests_alone(tmp_path, upstream):
    """With [ledger] recover_in_flight = false a restart finishes nothing: the request stays in flight, held."""
    gw, _, euid, eu_key, (response_id, chat_id, _, _) = killed_and_restarted(tmp_path, upstream, recover=False)
    try:
        assert api(gw, "GET", f"/responses/{response_id}", eu_key).json()["status"] == "in_progress"
        budget = api(gw, "GET", f"/platforms/{gw.platform_id}/end-users/{euid}/budget", gw.key).json()
        assert budget["reserved_usd"] > 0 and budget["used_usd"] == 0
        assert not [e for e in ledger_events(gw, "response.finished") if e["response_id"] in (response_id, chat_id)]
        assert ledger_events(gw, "usage.charged") == []
        started = ledger_events(gw, "gateway.started")
        assert [(e["recovery"], e["recovered"]) for e in started] == [(False, []), (False, [])]
    finally:
        assert gw.stop() == 0


# --- in process: what the kill test cannot reach (MCP calls, store=false, no output) -------------------------

PID, EUID = "plat_r", "eu_r"
PROMPT = "hello recovery!"  # 15 characters: 4 input tokens by the estimate


async def crashed_ledger():
    """Services on a memory ledger with a funded wallet and budget and a priced model."""
    config = Config(providers=(ProviderConfig("demo", "demo"),),
                    models=(ModelConfig("priced", "demo", input_usd_per_mtok=str(INPUT_PRICE),
                                        output_usd_per_mtok=str(OUTPUT_PRICE)),))
    store = MemoryStore()
    services = build_services(config, store)
    await store.append([NewEvent(wallet_stream(PID), WalletCredited(PID, "t1", "top_up", 10_000_000)),
                        NewEvent(budget_stream(EUID), BudgetSet(PID, EUID, "b1", 5_000_000, "one_time"))])
    await services.runner.catch_up()
    await publish_prices(services)
    return services


async def accept(services, rid: str, store: bool = True) -> tuple[Reservation, int]:
    """Record a request with its holds, as ResponseRun._accept does: (its reservation, the stream version)."""
    latest = services.prices.latest
    reservation = Reservation(rid, PID, EUID, "priced", "demo", "response", latest.models["priced"],
                              latest.version_id, latest.sha256)
    items = [{"id": f"msg_{rid}", "type": "message", "role": "user",
              "content": [{"type": "input_text", "text": PROMPT if store else ""}]}]
    accepted = ResponseAccepted(rid, PID, "priced", "demo", True, {"store": store, "instructions": None}, items, EUID)
    holds = services.book.reserve(reservation, 100_000)
    await services.store.append([NewEvent(f"response-{rid}", accepted, f"{rid}.1", 0), *holds])
    await services.runner.catch_up()
    return reservation, 1


async def append(services, rid: str, version: int, *events, extra=()) -> int:
    batch = [NewEvent(f"response-{rid}", e, f"{rid}.{version + i + 1}", version + i) for i, e in enumerate(events)]
    await services.store.append([*batch, *extra])
    await services.runner.catch_up()
    return version + len(batch) + sum(1 for new in extra if new.stream == f"response-{rid}")


async def test_recovery_fails_running_mcp_calls_voids_silent_requests_and_estimates_unstored_ones():
    """A running MCP call fails unbilled, no output is voided, store=false bills a token per delta; holds end."""
    services = await crashed_ledger()
    # An MCP loop: turn 1 streamed an mcp_call, was settled with the call's start; the call was running.
    mcp, version = await accept(services, "resp_mcp")
    call = {"id": "mcp_1", "type": "mcp_call", "status": "in_progress", "server_label": "wiki", "name": "ask",
            "arguments": ""}
    version = await append(services, "resp_mcp", version, ItemStarted("resp_mcp", 0, call),
                           ArgumentsDelta("resp_mcp", 0, '{"q": "x"}'))
    turn1 = services.book.settle(mcp, "response-resp_mcp", Usage(40, 0, 6, 0), False, "success", True, 1)
    await append(services, "resp_mcp", version, McpCallStarted("resp_mcp", 0, "wiki", "ask", '{"q": "x"}'),
                 extra=turn1)
    # Accepted and held, then killed before any output.
    await accept(services, "resp_silent")
    # store=false: three deltas recorded without their text.
    _, version = await accept(services, "resp_unstored", store=False)
    message = {"id": "msg_out", "type": "message", "status": "in_progress", "role": "assistant", "content": []}
    await append(services, "resp_unstored", version, ItemStarted("resp_unstored", 0, message),
                 *[TextDelta("resp_unstored", 0, "") for _ in range(3)])

    assert await recover_at_start(services) == ["resp_mcp", "resp_silent", "resp_unstored"]

    streams = {rid: [r.event for r in await services.store.read_stream(f"response-{rid}")]
               for rid in ("resp_mcp", "resp_silent", "resp_unstored")}
    for rid, recorded in streams.items():
        finished = [e for e in recorded if isinstance(e, ResponseFinished)]
        assert [(f.status, f.error.code, f.interruption) for f in finished] == [
            ("failed", "gateway_restarted", "gateway_restarted")], rid

    mcp_events = streams["resp_mcp"]
    [call_finished] = [e for e in mcp_events if isinstance(e, McpCallFinished)]
    assert call_finished.error["type"] == "mcp_protocol_error" and "restarted" in call_finished.error["message"]
    assert [e for e in mcp_events if isinstance(e, UsageCharged)] == [turn1[0].event]  # no later turn billed
    assert mcp_events[-1].usage == Usage(40, 0, 6, 0) and mcp_events[-1].usage_estimated is False

    [voided] = [e for e in streams["resp_silent"] if isinstance(e, UsageCharged)]
    assert (voided.billing_status, voided.cost_micros, voided.status) == ("voided", 0, "failed")

    [unstored] = [e for e in streams["resp_unstored"] if isinstance(e, UsageCharged)]
    assert unstored.usage == Usage(output_tokens=3) and unstored.token_count_method == "estimated"
    assert unstored.cost_micros == cost(0, 3) and unstored.status == "interrupted"

    releases = [r.event for r in await services.store.read_all(limit=10_000) if isinstance(r.event, HoldReleased)]
    assert sorted((h.reservation_id, h.account, h.outcome) for h in releases) == sorted(
        [(rid, account, outcome) for rid, outcome in (("resp_mcp", "settled"), ("resp_silent", "voided"),
                                                      ("resp_unstored", "settled"))
         for account in ("budget", "wallet")])
    wallet, budget = services.money.wallets[PID], services.money.budget(EUID)
    assert wallet.reserved_micros == budget.reserved_micros == 0 and not wallet.holds and not budget.holds
    assert budget.used_micros == turn1[0].event.cost_micros + unstored.cost_micros

    assert await recover_at_start(services) == []

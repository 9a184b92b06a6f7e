"""One real ledger with money in it, made once per test session by a running gateway, for the replay tests.

A gateway with priced models (demo, a slow demo, and an openai-chat upstream faked on
loopback) records: price versions, two platforms with wallet top-ups, end users with and
without budgets, and responses that complete (streamed and not), are cut short
(max_output_tokens), lose their client mid-stream, lose their upstream mid-stream, fail
before any output, run on a free model, and one chat completion. While the gateway runs,
``replay verify --url`` and the HTTP usage and wallet answers are captured; then it stops
and tests work on copies of its ledger file (``copy_ledger``), never on the original.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Optional

import attrs
import httpx

from tests.conftest import ROOT, start_gateway
from tests.fakes import openai_chat
from tests.fakes.server import Body, Drop, FakeServer, Request, Status, sse_chunks

UPSTREAM_KEY_ENV = "REPLAY_TEST_UPSTREAM_KEY"
CONFIG = """
[[providers]]
name = "demo"
kind = "demo"

[[providers]]
name = "demo-slow"
kind = "demo"
delay_ms = 40

[[providers]]
name = "upstream"
kind = "openai-chat"
base_url = "{base_url}"
api_key_env = "{key_env}"

[[models]]
id = "demo"
provider = "demo"

[[models]]
id = "priced"
provider = "demo"
input_usd_per_mtok = "100.00"
output_usd_per_mtok = "200.00"

[[models]]
id = "priced-slow"
provider = "demo-slow"
input_usd_per_mtok = "100.00"
output_usd_per_mtok = "200.00"

[[models]]
id = "priced-upstream"
provider = "upstream"
upstream_model = "upstream-model-v1"
input_usd_per_mtok = "3.00"
cached_input_usd_per_mtok = "0.30"
output_usd_per_mtok = "15.00"
"""


def upstream_script(request: Request) -> list:
    """The fake upstream: drops after three deltas, fails at once, or answers in full (with cached usage)."""
    if b"please drop" in request.body:
        return [Status()] + sse_chunks(openai_chat.text_events(["one", " two", " three"]), odd=False) + [Drop()]
    if b"please fail" in request.body:
        return [Body(500, {"content-type": "application/json"}, b'{"error": {"message": "boom"}}')]
    return openai_chat.text_answer(["Cached", " answer", "."])(request)


@attrs.define
class MoneyLedger:
    """The finished ledger and what the live gateway said about it."""

    directory: Path  # holds ledger.db (the gateway is stopped)
    platform_id: str
    other_platform_id: str
    budget_user: str  # an end user with a budget
    plain_user: str  # an end user without one
    responses: dict[str, str]  # what happened -> response id
    live_verify: subprocess.CompletedProcess
    http_usage: dict[str, Any]
    http_wallet: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.directory / "ledger.db"


_made: dict[str, MoneyLedger] = {}


def money_ledger(tmp_path_factory) -> MoneyLedger:
    """The session's ledger (made on first use, about 5 s)."""
    if "ledger" not in _made:
        _made["ledger"] = _make(tmp_path_factory)
    return _made["ledger"]


def copy_ledger(ledger: MoneyLedger, directory: Path) -> Path:
    """A consistent copy of the ledger file in ``directory`` (made with SQLite's backup API)."""
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "ledger.db"
    source, copy = sqlite3.connect(ledger.path), sqlite3.connect(target)
    source.backup(copy)
    copy.close()
    source.close()
    return target


def api(gw, method: str, path: str, key: Optional[str] = None, **kwargs) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key or gw.key}", **kwargs.pop("headers", {})}
    return httpx.request(method, gw.base_url + path, headers=headers, timeout=30, **kwargs)


def _respond(gw, key: str, body: dict, leave_after: int = 0) -> str:
    """POST /v1/responses (streamed when ``stream``); ``leave_after`` > 0 hangs up after that many deltas."""
    if not body.get("stream"):
        answer = api(gw, "POST", "/responses", key, json=body)
        assert answer.status_code in (200, 502), answer.text
        return answer.json().get("id", "")
    received = b""
    with httpx.stream("POST", gw.base_url + "/responses", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}"}) as stream:
        for chunk in stream.iter_raw():
            received += chunk
            if leave_after and received.count(b"output_text.delta") >= leave_after:
                break
    first = received.split(b"\n\n")[0].split(b"data: ", 1)[1]
    return json.loads(first)["response"]["id"]


def _make(tmp_path_factory) -> MoneyLedger:
    with FakeServer(upstream_script) as fake:
        config = tmp_path_factory.mktemp("replay-config") / "gateway.toml"
        config.write_text(CONFIG.format(base_url=fake.url, key_env=UPSTREAM_KEY_ENV))
        gw = start_gateway(tmp_path_factory.mktemp("replay-gw"), "--config", str(config),
                           env={UPSTREAM_KEY_ENV: "sk-fake"})
        try:
            return _record(gw)
        finally:
            gw.stop()


def _record(gw) -> MoneyLedger:
    pid = gw.platform_id
    assert api(gw, "POST", f"/platforms/{pid}/wallet/topup", json={"amount": 20}).status_code == 201
    users = {}
    for name in ("budgeted", "plain"):
        created = api(gw, "POST", f"/platforms/{pid}/end-users", json={"external_id": f"replay-{name}"}).json()
        users[name] = (created["id"], created["api_key"]["raw_key"])
    euid, eu_key = users["budgeted"]
    assert api(gw, "POST", f"/platforms/{pid}/end-users/{euid}/budget", json={"max_usd": 5}).status_code == 201
    assert api(gw, "POST", f"/platforms/{pid}/end-users/{euid}/budget/topup", json={"amount": 1}).status_code == 201
    plain_id, plain_key = users["plain"]
    responses = {
        "completed": _respond(gw, eu_key, {"model": "priced", "input": "what does this cost?"}),
        "streamed": _respond(gw, eu_key, {"model": "priced", "input": "stream it please", "stream": True}),
        "cut_short": _respond(gw, eu_key, {"model": "priced", "input": "a long answer " * 8,
                                           "max_output_tokens": 16}),
        "client_left": _respond(gw, eu_key, {"model": "priced-slow", "input": "talk slowly " * 4, "stream": True},
                                leave_after=3),
        "upstream_dropped": _respond(gw, eu_key, {"model": "priced-upstream", "input": "please drop",
                                                  "stream": True}),
        "reported_cached": _respond(gw, eu_key, {"model": "priced-upstream", "input": "cache me", "stream": True}),
        "free": _respond(gw, plain_key, {"model": "demo", "input": "free of charge"}),
        "plain_user": _respond(gw, plain_key, {"model": "priced", "input": "no budget here", "stream": True}),
    }
    failed = api(gw, "POST", "/responses", eu_key, json={"model": "priced-upstream", "input": "please fail"})
    assert failed.status_code >= 500, failed.text
    chat = api(gw, "POST", "/chat/completions", eu_key,
               json={"model": "priced", "messages": [{"role": "user", "content": "chat too"}]})
    assert chat.status_code == 200, chat.text
    responses["chat"] = chat.json()["id"]
    other = json.loads(gw.cli("platform", "create", "--name", "other-tenant", "--json", "--data-dir",
                              str(gw.data_dir)).stdout)
    time.sleep(0.3)  # the running gateway picks up the platform made by another process
    other_key = other["api_key"]["raw_key"]
    assert api(gw, "POST", f"/platforms/{other['platform_id']}/wallet/topup", other_key,
               json={"amount": 3}).status_code == 201
    responses["other_tenant"] = _respond(gw, other_key, {"model": "priced", "input": "someone else"})
    _wait_settled(gw)
    conn = sqlite3.connect(gw.data_dir / "ledger.db")
    responses["failed_before_output"] = conn.execute(
        "SELECT json_extract(data, '$.response_id') FROM events WHERE type = 'response.finished' "
        "AND json_extract(data, '$.interruption') = 'failed_before_output'").fetchone()[0]
    conn.close()
    live = subprocess.run([sys.executable, "-m", "gateway", "replay", "--data-dir", str(gw.data_dir), "verify",
                           "--url", gw.url], capture_output=True, cwd=ROOT, timeout=120)
    usage = api(gw, "GET", f"/platforms/{pid}/usage", params={"group_by": "end_user,model"}).json()
    wallet = api(gw, "GET", f"/platforms/{pid}/wallet").json()
    return MoneyLedger(gw.data_dir, pid, other["platform_id"], euid, plain_id, responses, live, usage, wallet)


def _wait_settled(gw) -> None:
    """Until the disconnected stream's settlement is recorded (the gateway records it after the client left)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        conn = sqlite3.connect(gw.data_dir / "ledger.db")
        accepted, finished = conn.execute(
            "SELECT sum(type = 'response.accepted'), sum(type = 'response.finished') FROM events").fetchone()
        conn.close()
        if accepted == finished:
            return
        time.sleep(0.05)
    raise AssertionError("a response never finished")


def replay(capsys, *argv: str) -> tuple[int, str]:
    """``assistiv replay ARGV`` in this process: (exit status, stdout)."""
    from replay.cli import main

    code = main(list(argv))
    return code, capsys.readouterr().out


def report(capsys, *argv: str) -> tuple[int, str]:
    """``assistiv report ARGV`` in this process: (exit status, stdout)."""
    from replay.report import main

    code = main(list(argv))
    return code, capsys.readouterr().out


def position_of(path: Path, sql_where: str, *args: Any) -> int:
    """The position of the first event matching ``sql_where``."""
    conn = sqlite3.connect(path)
    try:
        return conn.execute(f"SELECT position FROM events WHERE {sql_where} ORDER BY position LIMIT 1",
                            args).fetchone()[0]
    finally:
        conn.close()

"""The overshoot bound end to end (DESIGN invariant 8): every hold is the request's true worst case, or it is
marked capped and alone on its account.

Real parts: ``assistiv serve`` with a loopback fake Chat Completions upstream that writes 50 tokens unless
told a smaller ``max_completion_tokens``, the official openai SDK, and the SQLite ledger file.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time

import httpx
import openai
import pytest

from tests.conftest import start_gateway
from tests.fakes.openai_chat import sse, tail, text_events
from tests.fakes.server import Drop, FakeServer, Sleep, Status, sse_chunks
from tests.test_responses_e2e import sync_client

ANSWER_TOKENS = 50  # what the upstream writes when nobody limits it
RESERVE_TOKENS = 8  # the models' reserve_output_tokens: far below ANSWER_TOKENS
PROMPT_TOKENS = 20
SLOW_S = 2.0  # the pricey model's upstream pauses this long mid-answer
HOLD_MICROS_MAX = 4_000
CUT_DELTAS = 5  # deltas written before the drop or the stall
STALL_S = 10


def upstream_answer(request) -> list:
    """One token per delta, up to the limit the gateway sent; the slow model pauses after its first delta."""
    body = request.json()
    limit = body.get("max_completion_tokens")
    count = ANSWER_TOKENS if limit is None else min(limit, ANSWER_TOKENS)
    usage = {"prompt_tokens": PROMPT_TOKENS, "completion_tokens": count, "total_tokens": PROMPT_TOKENS + count}
    events = text_events([f" w{i}" for i in range(count)])
    end = tail("length" if count < ANSWER_TOKENS else "stop", usage)
    if body["model"] == "slow-model":
        return [Status()] + sse_chunks(events[:2], odd=False) + [Sleep(SLOW_S)] + sse_chunks(events[2:] + end)
    if body["model"] == "drop-model":  # the connection dies mid-answer: no usage is ever reported
        return [Status()] + sse_chunks(events[:1 + CUT_DELTAS], odd=False) + [Drop()]
    if body["model"] == "stall-model":  # goes silent mid-answer, long enough for the client to leave
        return [Status()] + sse_chunks(events[:1 + CUT_DELTAS], odd=False) + [Sleep(STALL_S)] + sse_chunks(end)
    return sse(events + end)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(gateway, upstream) with a cheap and a pricey model, both reserving RESERVE_TOKENS of output."""
    with FakeServer(upstream_answer) as upstream:
        path = tmp_path_factory.mktemp("cfg") / "bounds.toml"
        path.write_text(f"""
[billing]
hold_usd_max = "{HOLD_MICROS_MAX / 1_000_000:.6f}"

[[providers]]
name = "upstream"
kind = "openai-chat"
base_url = "{upstream.url}/v1"

[[models]]
id = "bounded"
provider = "upstream"
upstream_model = "fast-model"
input_usd_per_mtok = "1"
output_usd_per_mtok = "2"
reserve_output_tokens = {RESERVE_TOKENS}

[[models]]
id = "pricey"
provider = "upstream"
upstream_model = "slow-model"
input_usd_per_mtok = "100"
output_usd_per_mtok = "2000"
reserve_output_tokens = {RESERVE_TOKENS}

[[models]]
id = "dropper"
provider = "upstream"
upstream_model = "drop-model"
input_usd_per_mtok = "100"
output_usd_per_mtok = "200"
reserve_output_tokens = {ANSWER_TOKENS}

[[models]]
id = "staller"
provider = "upstream"
upstream_model = "stall-model"
input_usd_per_mtok = "100"
output_usd_per_mtok = "200"
reserve_output_tokens = {ANSWER_TOKENS}
""")
        gateway = start_gateway(tmp_path_factory.mktemp("gw"), "--config", str(path))
        topup = httpx.post(f"{gateway.base_url}/platforms/{gateway.platform_id}/wallet/topup", json={"amount": 10},
                           headers={"Authorization": f"Bearer {gateway.key}"})
        assert topup.status_code == 201, topup.text
        yield gateway, upstream
        gateway.stop()


def hold_of(gateway, response_id: str) -> dict:
    """The wallet hold of ``response_id`` as recorded in the ledger file."""
    conn = sqlite3.connect(gateway.data_dir / "ledger.db")
    [(data,)] = conn.execute("SELECT data FROM events WHERE event_id = ?", (f"{response_id}.hold.wallet",))
    return json.loads(data)


def charge_of(gateway, response_id: str) -> int:
    conn = sqlite3.connect(gateway.data_dir / "ledger.db")
    [(data,)] = conn.execute("SELECT data FROM events WHERE event_id = ?", (f"{response_id}.charge",))
    return json.loads(data)["cost_micros"]


def test_without_max_output_tokens_the_upstream_is_told_the_reserve(setup):
    """No max_output_tokens: the upstream gets the reserve as its limit, the answer stops there, the hold covers it."""
    gateway, upstream = setup
    response = sync_client(gateway).responses.create(model="bounded", input="write a long story")
    assert upstream.requests[-1].json()["max_completion_tokens"] == RESERVE_TOKENS
    assert response.status == "incomplete" and response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == RESERVE_TOKENS and response.max_output_tokens is None
    hold = hold_of(gateway, response.id)
    assert hold["capped"] is False and hold["amount_micros"] >= charge_of(gateway, response.id) > 0


def test_the_request_limit_is_sent_as_it_is(setup):
    """A request's own max_output_tokens reaches the upstream unchanged (the hold covers that many)."""
    gateway, upstream = setup
    response = sync_client(gateway).responses.create(model="bounded", input="short", max_output_tokens=20)
    assert upstream.requests[-1].json()["max_completion_tokens"] == 20 and response.usage.output_tokens == 20
    assert hold_of(gateway, response.id)["capped"] is False


def test_a_hold_cut_at_hold_usd_max_is_capped_and_alone(setup):
    """A worst case above hold_usd_max is held capped; a second such request meanwhile is 402; the charge is real."""
    gateway, _ = setup
    client = sync_client(gateway)
    with httpx.stream("POST", gateway.base_url + "/responses", headers={"Authorization": f"Bearer {gateway.key}"},
                      json={"model": "pricey", "input": "go", "stream": True}, timeout=30) as first:
        lines = first.iter_lines()
        first_id = next(json.loads(line[6:])["response"]["id"] for line in lines if line.startswith("data: "))
        with pytest.raises(openai.APIStatusError) as refused:  # the first is in flight, under-reserved
            client.responses.create(model="pricey", input="me too")
        assert (refused.value.status_code, refused.value.code) == (402, "wallet_insufficient")
        assert "under-reserved" in refused.value.message
        assert client.responses.create(model="bounded", input="cheap").status == "incomplete"  # true worst cases pass
        rest = list(lines)
    assert any("response.completed" in line or "response.incomplete" in line for line in rest)
    hold = hold_of(gateway, first_id)
    assert (hold["capped"], hold["amount_micros"]) == (True, HOLD_MICROS_MAX)
    assert charge_of(gateway, first_id) == PROMPT_TOKENS * 100 + RESERVE_TOKENS * 2000  # above the hold, not clamped
    assert client.responses.create(model="pricey", input="after").status == "incomplete"  # admitted again


def ledger_events(gateway, response_id: str) -> list[tuple[str, dict]]:
    """(type, data) of a response's stream, in order, from the ledger file."""
    conn = sqlite3.connect(gateway.data_dir / "ledger.db")
    rows = conn.execute("SELECT type, data FROM events WHERE stream = ? ORDER BY position",
                        (f"response-{response_id}",))
    return [(kind, json.loads(data)) for kind, data in rows]


def charged(gateway, response_id: str) -> dict:
    """The usage.charged event of a response, once it is recorded."""
    deadline = time.monotonic() + 10
    while not (found := [d for t, d in ledger_events(gateway, response_id) if t == "usage.charged"]):
        assert time.monotonic() < deadline, "the interrupted response was never settled"
        time.sleep(0.05)
    [charge] = found
    return charge


def emitted_text(gateway, response_id: str) -> str:
    return "".join(d["delta"] for t, d in ledger_events(gateway, response_id) if t == "response.text_delta")


def assert_settled_exactly(gateway, response_id: str, emitted: str, prompt: str) -> None:
    """The charge is the documented estimate of exactly the emitted text, and the wallet moved by exactly it."""
    charge = charged(gateway, response_id)
    usage = charge["usage"]
    assert charge["token_count_method"] == "estimated" and charge["status"] == "interrupted"
    assert usage["output_tokens"] == math.ceil(len(emitted) / 4) > 0
    assert usage["input_tokens"] == math.ceil(len(prompt) / 4)
    assert charge["cost_micros"] == usage["input_tokens"] * 100 + usage["output_tokens"] * 200
    conn = sqlite3.connect(gateway.data_dir / "ledger.db")
    releases = [json.loads(d) for (d,) in conn.execute(
        "SELECT data FROM events WHERE type = 'hold.released' AND event_id = ?", (f"{response_id}.release.wallet",))]
    assert [(r["outcome"], r["charged_micros"]) for r in releases] == [("settled", charge["cost_micros"])]


def test_upstream_drop_settles_exactly_the_emitted_usage(setup):
    """The upstream dies after a few deltas: the client got exactly those, and is charged exactly those."""
    gateway, _ = setup
    prompt = "tell me everything"
    events = list(sync_client(gateway).responses.create(model="dropper", input=prompt, stream=True))
    response_id = events[0].response.id
    received = [e.delta for e in events if e.type == "response.output_text.delta"]
    kinds = [e.type for e in events]
    assert kinds[-1] == "response.failed" and "response.completed" not in kinds
    emitted = emitted_text(gateway, response_id)
    assert emitted == "".join(received) == "".join(f" w{i}" for i in range(CUT_DELTAS))
    assert_settled_exactly(gateway, response_id, emitted, prompt)


def test_client_disconnect_settles_exactly_the_emitted_usage(setup):
    """The client leaves while the upstream stalls: the charge is exactly what the ledger shows emitted."""
    gateway, _ = setup
    prompt = "take your time"
    received = b""
    with httpx.stream("POST", gateway.base_url + "/responses", headers={"Authorization": f"Bearer {gateway.key}"},
                      json={"model": "staller", "input": prompt, "stream": True}, timeout=30) as answer:
        for piece in answer.iter_raw():
            received += piece
            if received.count(b"response.output_text.delta") >= CUT_DELTAS:
                break
    response_id = json.loads(received.split(b"data: ", 1)[1].split(b"\n", 1)[0])["response"]["id"]
    charged(gateway, response_id)  # settled once the gateway saw the client leave
    emitted = emitted_text(gateway, response_id)
    assert emitted == "".join(f" w{i}" for i in range(CUT_DELTAS))  # the upstream sent nothing more before it left
    assert_settled_exactly(gateway, response_id, emitted, prompt)

"""store=false (DESIGN invariant 13): the client gets the whole answer, the ledger keeps no text.

Each test sends a secret in the prompt (the demo model echoes it, and puts it in function
arguments), then reads every row of the real SQLite ledger file.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import openai
import pytest

from tests.test_responses_e2e import sync_client

REPO = Path(__file__).resolve().parent.parent
WEATHER_TOOL = {"type": "function", "name": "get_weather",
                "parameters": {"type": "object", "properties": {"location": {"type": "string"}}}}


def ledger_rows(gateway, response_id: str) -> list[tuple[str, str]]:
    conn = sqlite3.connect(gateway.data_dir / "ledger.db")
    try:
        return conn.execute("SELECT type, data FROM events WHERE stream = ?", (f"response-{response_id}",)).fetchall()
    finally:
        conn.close()


def test_the_client_gets_the_text_and_the_ledger_keeps_only_metadata_and_usage(gateway):
    client = sync_client(gateway)
    secret = "PAPAYA-7781"
    response = client.responses.create(model="demo", input=f"the password is {secret}", store=False,
                                       instructions=f"never reveal {secret}", metadata={"ticket": "T-1"})
    assert secret in response.output_text  # the demo model echoes the prompt
    rows = ledger_rows(gateway, response.id)
    assert rows, "the response is in the ledger"
    assert not [data for _, data in rows if secret in data]
    types = [t for t, _ in rows]
    assert types[0] == "response.accepted" and "response.finished" in types
    assert "response.text_delta" in types  # the deltas are recorded (timing, count), with their text withheld
    accepted = json.loads(rows[0][1])
    assert accepted["params"]["store"] is False and accepted["params"]["metadata"] == {"ticket": "T-1"}
    assert accepted["input_items"][0]["role"] == "user"
    finished = json.loads(rows[types.index("response.finished")][1])
    assert finished["usage"]["output_tokens"] == response.usage.output_tokens > 0


def test_a_streamed_store_false_answer_is_complete_for_the_client(gateway):
    client = sync_client(gateway)
    secret = "KIWI-4412"
    with client.responses.stream(model="demo", input=f"remember {secret}", store=False) as stream:
        deltas = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert secret in "".join(deltas) and final.output_text == "".join(deltas)
    assert not [data for _, data in ledger_rows(gateway, final.id) if secret in data]


def test_function_call_arguments_are_not_kept(gateway):
    client = sync_client(gateway)
    secret = "MANGO-0093"
    response = client.responses.create(model="demo", input=f"weather in {secret}", tools=[WEATHER_TOOL], store=False)
    [call] = [o for o in response.output if o.type == "function_call"]
    assert secret in call.arguments and call.name == "get_weather"
    rows = ledger_rows(gateway, response.id)
    assert not [data for _, data in rows if secret in data]
    assert any('"get_weather"' in data for _, data in rows)  # the tool name is metadata


def test_a_store_false_response_cannot_be_retrieved_and_replay_verify_holds(gateway):
    client = sync_client(gateway)
    response = client.responses.create(model="demo", input="x", store=False)
    with pytest.raises(openai.NotFoundError) as error:
        client.responses.retrieve(response.id)
    assert "store=false" in error.value.message
    with pytest.raises(openai.NotFoundError):
        client.responses.input_items.list(response.id)
    stored = client.responses.create(model="demo", input="y")
    assert client.responses.retrieve(stored.id).output_text == stored.output_text
    verify = subprocess.run([sys.executable, "-m", "replay", "--data-dir", str(gateway.data_dir), "verify"],
                            capture_output=True, text=True, cwd=REPO, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_thread_continues_from_its_latest_stored_response(gateway):
    client = sync_client(gateway)
    first = client.responses.create(model="demo", input="alpha", extra_body={"thread_id": "th_unstored"})
    client.responses.create(model="demo", input="beta", store=False, extra_body={"thread_id": "th_unstored"})
    third = client.responses.create(model="demo", input="gamma", extra_body={"thread_id": "th_unstored"})
    assert third.previous_response_id == first.id

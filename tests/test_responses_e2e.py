"""End to end: the official openai SDK and raw HTTP against a real ``assistiv serve``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

from gateway.providers.demo import demo_answer
from gateway.providers.base import ModelCall
from tests.conftest import ROOT, start_gateway

TEXT_EVENT_ORDER_HEAD = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
]
TEXT_EVENT_ORDER_TAIL = [
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def expected_text(prompt: str) -> str:
    call = ModelCall(model="demo", messages=[{"role": "user", "content": [{"type": "input_text", "text": prompt}]}])
    return "".join(demo_answer(call))


def sync_client(gateway, key=None) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url, api_key=key or gateway.key, timeout=30, max_retries=0)


def async_client(gateway, key=None) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=gateway.base_url, api_key=key or gateway.key, timeout=30, max_retries=0)


def parse_sse(raw: bytes) -> list[dict]:
    """Split an SSE body into its JSON payloads, checking that ``event:`` matches ``data.type``."""
    events = []
    for block in raw.decode().split("\n\n"):
        if not block.strip():
            continue
        lines = dict(line.split(": ", 1) for line in block.split("\n"))
        payload = json.loads(lines["data"])
        assert payload["type"] == lines["event"]
        events.append(payload)
    return events


def test_sync_create_returns_completed_response(gateway):
    """responses.create (sync SDK) answers the demo text with usage and a stored id."""
    client = sync_client(gateway)
    response = client.responses.create(model="demo", input="What is the capital of France?")
    assert response.status == "completed"
    assert response.output_text == expected_text("What is the capital of France?")
    assert response.id.startswith("resp_")
    assert response.usage.output_tokens == len(demo_answer(ModelCall("demo", [
        {"role": "user", "content": [{"type": "input_text", "text": "What is the capital of France?"}]}])))
    assert response.usage.total_tokens == response.usage.input_tokens + response.usage.output_tokens
    assert response.output[0].content[0].text == response.output_text
    again = client.responses.retrieve(response.id)
    assert again.model_dump() == response.model_dump()


def test_instructions_are_echoed_and_counted(gateway):
    """``instructions`` is echoed in the Response and counted in input tokens."""
    client = sync_client(gateway)
    plain = client.responses.create(model="demo", input="hello")
    instructed = client.responses.create(model="demo", input="hello", instructions="You are terse." * 4)
    assert instructed.instructions == "You are terse." * 4
    assert plain.instructions is None
    assert instructed.usage.input_tokens > plain.usage.input_tokens


async def test_async_stream_events_in_documented_order(gateway):
    """create(stream=True) with AsyncOpenAI yields the documented event order and sequence numbers."""
    client = async_client(gateway)
    stream = await client.responses.create(model="demo", input="Stream me", stream=True)
    events = [event async for event in stream]
    types = [e.type for e in events]
    assert types[:4] == TEXT_EVENT_ORDER_HEAD
    assert types[-4:] == TEXT_EVENT_ORDER_TAIL
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 3 and set(types[4:-4]) == {"response.output_text.delta"}
    assert [e.sequence_number for e in events] == list(range(len(events)))
    final = events[-1].response
    assert final.status == "completed"
    assert "".join(d.delta for d in deltas) == final.output_text == expected_text("Stream me")
    item_id = events[2].item.id
    assert all(d.item_id == item_id for d in deltas)
    assert final.output[0].id == item_id
    assert {events[0].response.id, final.id} == {final.id}


def test_stream_helper_final_response_matches_retrieve(gateway):
    """responses.stream(...).get_final_response() equals the stored Response."""
    client = sync_client(gateway)
    with client.responses.stream(model="demo", input="helper please") as stream:
        texts = [e.delta for e in stream if e.type == "response.output_text.delta"]
        final = stream.get_final_response()
    assert "".join(texts) == final.output_text == expected_text("helper please")
    # The helper's ParsedResponse adds ``parsed: None`` to text parts; compare without Nones.
    assert client.responses.retrieve(final.id).model_dump(exclude_none=True) == final.model_dump(exclude_none=True)


async def test_raw_stream_bytes_equal_replay_stream(gateway):
    """The bytes a raw HTTP client received equal `assistiv replay stream` and GET ?stream=true."""
    async with httpx.AsyncClient(timeout=30) as http:
        async with http.stream(
            "POST",
            gateway.base_url + "/responses",
            headers={"Authorization": f"Bearer {gateway.key}"},
            json={"model": "demo", "input": "byte for byte", "stream": True, "metadata": {"z": "1", "a": "2"}},
        ) as answer:
            assert answer.headers["content-type"].startswith("text/event-stream")
            received = b"".join([chunk async for chunk in answer.aiter_raw()])
        events = parse_sse(received)
        response_id = events[0]["response"]["id"]
        again = await http.get(gateway.base_url + f"/responses/{response_id}", params={"stream": "true"},
                               headers={"Authorization": f"Bearer {gateway.key}"})
    replayed = gateway.cli("replay", "--data-dir", str(gateway.data_dir), "stream", response_id).stdout
    assert replayed == received
    assert again.content == received
    assert "data: [DONE]" not in received.decode()


def test_non_stream_equals_final_streamed_response(gateway):
    """A non-streamed answer equals the retrieve of a streamed one except ids and times."""
    client = sync_client(gateway)
    plain = client.responses.create(model="demo", input="same either way").model_dump(exclude_none=True)
    with client.responses.stream(model="demo", input="same either way") as stream:
        streamed = stream.get_final_response().model_dump(exclude_none=True)
    for body in (plain, streamed):
        for volatile in ("id", "created_at", "completed_at"):
            body.pop(volatile, None)
        body["output"][0].pop("id")
    assert plain == streamed


def test_max_output_tokens_gives_incomplete(gateway):
    """max_output_tokens below the answer length ends the response as incomplete."""
    client = sync_client(gateway)
    response = client.responses.create(model="demo", input="a long question here", max_output_tokens=3)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.usage.output_tokens == 3
    assert response.output[0].status == "incomplete"


def test_incomplete_stream_ends_with_response_incomplete(gateway):
    """A streamed incomplete answer ends with response.incomplete after the item events."""
    client = sync_client(gateway)
    stream = client.responses.create(model="demo", input="cut me short", max_output_tokens=2, stream=True)
    types = [e.type for e in stream]
    assert types[-4:] == ["response.output_text.done", "response.content_part.done", "response.output_item.done",
                          "response.incomplete"]
    assert types.count("response.output_text.delta") == 2


@pytest.mark.parametrize(
    "body, status, code, param",
    [
        (b'{"model": "demo", "input": ', 400, None, None),
        (b'{"input": "hi"}', 400, "missing_required_parameter", "model"),
        (b'{"model": "demo"}', 400, "missing_required_parameter", "input"),
        (b'{"model": "no-such-model", "input": "hi"}', 404, "model_not_found", "model"),
        (b'{"model": "demo", "input": "hi", "temperature": 3}', 400, "invalid_value", "temperature"),
        (b'{"model": "demo", "input": "hi", "bogus": 1}', 400, "unknown_parameter", "bogus"),
        (b'{"model": "demo", "input": [{"role": "robot", "content": "x"}]}', 400, "invalid_value", "input[0].role"),
        (b'[1, 2]', 400, None, None),
    ],
)
def test_bad_requests_get_openai_shaped_errors(gateway, body, status, code, param):
    """Each bad request gets its status and an error object with all four fields."""
    answer = httpx.post(gateway.base_url + "/responses", content=body, timeout=30,
                        headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"})
    assert answer.status_code == status
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code and error["param"] == param
    assert error["message"]


def test_sdk_raises_typed_errors(gateway):
    """The SDK maps our errors to its exception classes (401, 404, 400)."""
    with pytest.raises(openai.AuthenticationError) as auth:
        sync_client(gateway, key="sk-plat_not-a-real-key").responses.create(model="demo", input="x")
    assert auth.value.code == "invalid_api_key"
    with pytest.raises(openai.NotFoundError) as missing:
        sync_client(gateway).responses.create(model="gpt-nothing", input="x")
    assert missing.value.code == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        sync_client(gateway).responses.retrieve("resp_doesnotexist")
    with pytest.raises(openai.BadRequestError) as bad:
        sync_client(gateway).responses.create(model="demo", input=[])
    assert bad.value.param == "input"


def test_missing_key_is_401(gateway):
    """No Authorization header: 401 invalid_api_key."""
    answer = httpx.post(gateway.base_url + "/responses", json={"model": "demo", "input": "x"}, timeout=30)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "invalid_api_key"


def test_models_listed_in_openai_shape(gateway):
    """GET /v1/models lists the demo models; models.retrieve finds one and 404s another."""
    client = sync_client(gateway)
    ids = [m.id for m in client.models.list()]
    assert "demo" in ids
    assert client.models.retrieve("demo").owned_by == "assistiv"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")


def test_new_platform_key_accepted_by_running_server(gateway):
    """`assistiv platform create --json` on the live ledger gives a key the server accepts within 1 s."""
    created = json.loads(gateway.cli("platform", "create", "--name", "acme", "--json",
                                     "--data-dir", str(gateway.data_dir)).stdout)
    assert created["api_key"]["raw_key"].startswith("sk-plat_")
    assert created["platform_id"].startswith("plat_")
    client = sync_client(gateway, key=created["api_key"]["raw_key"])
    deadline = time.monotonic() + 1.0
    while True:
        try:
            response = client.responses.create(model="demo", input="new tenant")
            break
        except openai.AuthenticationError:
            assert time.monotonic() < deadline, "new key not accepted within one second"
            time.sleep(0.05)
    assert response.status == "completed"
    # Tenancy: the other platform's key cannot see this response, and vice versa.
    with pytest.raises(openai.NotFoundError):
        sync_client(gateway).responses.retrieve(response.id)


def test_delete_hides_response(gateway):
    """DELETE /v1/responses/{id} answers deleted and later reads 404."""
    client = sync_client(gateway)
    response = client.responses.create(model="demo", input="delete me")
    client.responses.delete(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(response.id)
    with pytest.raises(openai.NotFoundError):
        client.responses.delete(response.id)


def test_replay_verify_agrees_with_live_server(gateway):
    """`replay verify --url` rebuilds every projection and matches the running server."""
    sync_client(gateway).responses.create(model="demo", input="for the auditor")
    done = gateway.cli("replay", "--data-dir", str(gateway.data_dir), "verify", "--url", gateway.url, check=False)
    assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()
    assert b"OK" in done.stdout


def test_replay_stream_unknown_response_fails(gateway):
    """`replay stream` of an unknown id exits non-zero with a message."""
    done = gateway.cli("replay", "--data-dir", str(gateway.data_dir), "stream", "resp_missing", check=False)
    assert done.returncode != 0
    assert b"resp_missing" in done.stderr


def test_graceful_shutdown_exits_zero_and_ledger_verifies(fresh_gateway):
    """SIGTERM lets the server drain and exit 0; the ledger then verifies offline."""
    sync_client(fresh_gateway).responses.create(model="demo", input="before shutdown")
    assert fresh_gateway.stop() == 0
    assert b"ledger closed" in fresh_gateway.log.read_bytes()
    done = fresh_gateway.cli("replay", "--data-dir", str(fresh_gateway.data_dir), "verify", check=False)
    assert done.returncode == 0, done.stdout


def test_restart_keeps_responses_and_does_not_recreate_platform(fresh_gateway):
    """After a restart the old key works, old responses are readable, no new default platform."""
    response = sync_client(fresh_gateway).responses.create(model="demo", input="survive restart")
    assert fresh_gateway.stop() == 0
    again = start_gateway(fresh_gateway.data_dir)
    try:
        assert "sk-plat_" not in again.log.read_text()
        again.key = fresh_gateway.key
        assert sync_client(again).responses.retrieve(response.id).output_text == response.output_text
    finally:
        assert again.stop() == 0


def test_replay_stream_command_is_exact_after_restart(fresh_gateway):
    """The recorded stream replays byte for byte from a stopped server's ledger."""
    with httpx.stream("POST", fresh_gateway.base_url + "/responses", timeout=30,
                      headers={"Authorization": f"Bearer {fresh_gateway.key}"},
                      json={"model": "demo", "input": "after the fact", "stream": True}) as answer:
        received = answer.read()
    response_id = parse_sse(received)[0]["response"]["id"]
    assert fresh_gateway.stop() == 0
    replayed = subprocess.run(
        [sys.executable, "-m", "replay", "--data-dir", str(fresh_gateway.data_dir), "stream", response_id],
        capture_output=True, check=True, cwd=ROOT,
    ).stdout
    assert replayed == received


def _read_events_then_leave(gateway, body: dict, events_wanted: int) -> tuple[str, bytes]:
    """Stream a response, read ``events_wanted`` SSE events, then drop the connection."""
    received = b""
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", gateway.base_url + "/responses", json=body,
                         headers={"Authorization": f"Bearer {gateway.key}"}) as answer:
            for chunk in answer.iter_raw():
                received += chunk
                if received.count(b"\n\n") >= events_wanted:
                    break
    return parse_sse(received)[0]["response"]["id"], received


def test_client_disconnect_is_recorded_with_emitted_usage(gateway):
    """A client leaving mid-stream: the response ends incomplete (client_disconnected), usage estimated."""
    long_input = "please answer slowly " * 5
    response_id, received = _read_events_then_leave(
        gateway, {"model": "demo-slow", "input": long_input, "stream": True}, events_wanted=6)
    client = sync_client(gateway)
    deadline = time.monotonic() + 5
    while (response := client.responses.retrieve(response_id)).status == "in_progress":
        assert time.monotonic() < deadline, "disconnect not recorded"
        time.sleep(0.05)
    assert response.status == "incomplete"
    assert response.incomplete_details.reason == "client_disconnected"
    full = expected_text(long_input)
    assert 0 < len(response.output_text) < len(full)
    assert full.startswith(response.output_text)
    assert response.usage.output_tokens >= 1
    replayed = gateway.cli("replay", "--data-dir", str(gateway.data_dir), "stream", response_id).stdout
    assert replayed.startswith(received)
    assert b"response.completed" not in replayed
    # The message was closed only in the append that recorded the disconnect, which no client got.
    assert b"response.output_text.done" not in replayed and b"response.output_item.done" not in replayed


def test_sigterm_lets_in_flight_stream_finish(fresh_gateway):
    """SIGTERM during a slow stream: the stream still completes, then the server exits 0."""
    received = b""
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", fresh_gateway.base_url + "/responses",
                         json={"model": "demo-slow", "input": "finish me please", "stream": True},
                         headers={"Authorization": f"Bearer {fresh_gateway.key}"}) as answer:
            for chunk in answer.iter_raw():
                if not received:
                    fresh_gateway.proc.send_signal(signal.SIGTERM)
                received += chunk
    assert parse_sse(received)[-1]["type"] == "response.completed"
    assert fresh_gateway.proc.wait(timeout=30) == 0


def test_second_signal_stops_waiting_for_in_flight_streams(fresh_gateway):
    """A second SIGINT cuts the graceful wait: the stream ends early, the server exits 0, the ledger verifies."""
    received = b""
    with httpx.Client(timeout=30) as http:
        with http.stream("POST", fresh_gateway.base_url + "/responses",
                         json={"model": "demo-slow", "input": "finish me please", "stream": True},
                         headers={"Authorization": f"Bearer {fresh_gateway.key}"}) as answer:
            try:
                for chunk in answer.iter_raw():
                    if not received:
                        fresh_gateway.proc.send_signal(signal.SIGINT)
                        time.sleep(0.05)
                        fresh_gateway.proc.send_signal(signal.SIGINT)
                    received += chunk
            except httpx.HTTPError:
                pass  # the server closed the connection mid-stream
    assert fresh_gateway.proc.wait(timeout=30) == 0
    assert b"response.completed" not in received
    assert "Traceback" not in fresh_gateway.log.read_text()
    verify = fresh_gateway.cli("replay", "--data-dir", str(fresh_gateway.data_dir), "verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    explained = fresh_gateway.cli("replay", "--data-dir", str(fresh_gateway.data_dir), "stream", "--explain",
                                  parse_sse(received)[0]["response"]["id"]).stdout
    assert b"client" in explained

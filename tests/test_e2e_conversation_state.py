"""Conversation state end to end against a fake upstream that records what it is sent.

The official openai SDK -> a real ``assistiv serve`` -> the openai-chat adapter -> a fake
Chat Completions server on loopback, so every test can assert the exact messages the model
received: threads and previous_response_id chains, which parents can be continued
(in progress, failed, incomplete, deleted), tenancy, and what the ledger file keeps.
"""

from __future__ import annotations

import json
import sqlite3

import httpx
import openai
import pytest

from tests.fakes import openai_chat
from tests.fakes.server import Chunk, FakeServer, Sleep, Status
from tests.tenancy_api import call, new_platform, position
from tests.test_responses_e2e import parse_sse, sync_client
from tests.tool_loop_e2e import WEATHER_TOOL
from tests.upstream_e2e import funded_gateway, raw_stream

KEY_ENV = "ASSISTIV_E2E_CONVERSATION_KEY"
SLOW_DELTAS = 8  # a slow answer's deltas, SLOW_GAP_S apart (each gap below the provider's read timeout)
SLOW_GAP_S = 0.25


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """(gateway, fake Chat Completions upstream), the gateway's wallet funded for the priced model."""
    with FakeServer(openai_chat.text_answer(["ok"])) as fake:
        with funded_gateway(tmp_path_factory, "openai-chat", fake.url + "/v1", KEY_ENV) as gateway:
            yield gateway, fake


@pytest.fixture
def gw(stack):
    gateway, fake = stack
    fake.handler = openai_chat.text_answer(["ok"])
    fake.requests.clear()
    return gateway


@pytest.fixture
def upstream(stack) -> FakeServer:
    return stack[1]


def answer(upstream: FakeServer, text: str) -> None:
    """The fake's next answers are ``text``."""
    upstream.handler = openai_chat.text_answer([text])


def sent_messages(upstream: FakeServer) -> list[dict]:
    """The messages of the last upstream request."""
    return upstream.requests[-1].json()["messages"]


def thread_ids(gw, thread_id: str, key=None) -> list[str]:
    listed = httpx.get(gw.base_url + f"/threads/{thread_id}/responses", params={"limit": 100}, timeout=30,
                       headers={"Authorization": f"Bearer {key or gw.key}"})
    assert listed.status_code == 200
    return [r["id"] for r in listed.json()["data"]]


def test_continuation_inherits_its_parents_thread(gw, upstream):
    """previous_response_id without thread_id: the turn joins the parent's thread; the thread goes on from it."""
    client = sync_client(gw)
    first = client.responses.create(model="fake-model", input="a", extra_body={"thread_id": "th_inherit"})
    second = client.responses.create(model="fake-model", input="b", previous_response_id=first.id)
    assert second.model_extra["thread_id"] == "th_inherit"
    assert client.responses.retrieve(second.id).model_extra["thread_id"] == "th_inherit"
    assert thread_ids(gw, "th_inherit") == [first.id, second.id]
    third = client.responses.create(model="fake-model", input="c", extra_body={"thread_id": "th_inherit"})
    assert third.previous_response_id == second.id
    assert [m["content"] for m in sent_messages(upstream)] == ["a", "ok", "b", "ok", "c"]


def test_conflicting_thread_id_is_400_naming_both_and_records_nothing(gw):
    """previous_response_id in thread A with thread_id B: 400 thread_conflict naming both threads."""
    client = sync_client(gw)
    first = client.responses.create(model="fake-model", input="a", extra_body={"thread_id": "th_one"})
    before = position(gw)
    with pytest.raises(openai.BadRequestError) as conflict:
        client.responses.create(model="fake-model", input="b", previous_response_id=first.id,
                                extra_body={"thread_id": "th_two"})
    assert conflict.value.code == "thread_conflict" and conflict.value.param == "thread_id"
    assert "th_one" in conflict.value.message and "th_two" in conflict.value.message
    assert position(gw) == before
    same = client.responses.create(model="fake-model", input="b", previous_response_id=first.id,
                                   extra_body={"thread_id": "th_one"})
    assert same.previous_response_id == first.id


def test_streaming_parent_is_400_in_progress(gw, upstream):
    """A parent still streaming cannot be continued: 400 previous_response_in_progress; once done it can."""
    chunks = [openai_chat.chunk({"content": f"d{i} "}) for i in range(SLOW_DELTAS)] + openai_chat.tail()
    upstream.handler = lambda request: [Status(), *[s for c in chunks for s in (Chunk(c), Sleep(SLOW_GAP_S))]]
    client = sync_client(gw)
    with client.responses.stream(model="fake-model", input="slow") as stream:
        first = next(iter(stream))
        parent_id = first.response.id
        with pytest.raises(openai.BadRequestError) as busy:
            client.responses.create(model="fake-model", input="next", previous_response_id=parent_id)
        assert busy.value.code == "previous_response_in_progress" and busy.value.param == "previous_response_id"
        final = stream.get_final_response()
    assert final.status == "completed"
    answer(upstream, "ok")
    follow = client.responses.create(model="fake-model", input="next", previous_response_id=parent_id)
    assert follow.status == "completed"


def test_failed_and_incomplete_parents_can_be_continued(gw, upstream):
    """A failed (upstream dropped) and an incomplete (max tokens) parent are continued with their partial output."""
    client = sync_client(gw)
    upstream.handler = openai_chat.drop(["half ", "an answer"])
    events = parse_sse(raw_stream(gw, {"model": "fake-model", "input": "q1"}))
    failed_id = events[0]["response"]["id"]
    assert client.responses.retrieve(failed_id).status == "failed"
    answer(upstream, "recovered")
    after_failed = client.responses.create(model="fake-model", input="go on", previous_response_id=failed_id)
    assert after_failed.status == "completed" and after_failed.previous_response_id == failed_id
    assert sent_messages(upstream) == [{"role": "user", "content": "q1"},
                                       {"role": "assistant", "content": "half an answer"},
                                       {"role": "user", "content": "go on"}]
    upstream.handler = openai_chat.text_answer(["cut sh"], finish="length")
    incomplete = client.responses.create(model="fake-model", input="q2")
    assert incomplete.status == "incomplete"
    answer(upstream, "ort")
    after_incomplete = client.responses.create(model="fake-model", input="continue", previous_response_id=incomplete.id)
    assert after_incomplete.status == "completed"
    assert sent_messages(upstream)[-2:] == [{"role": "assistant", "content": "cut sh"},
                                            {"role": "user", "content": "continue"}]


def test_thread_continues_from_its_latest_completed_response(gw, upstream):
    """Failed and incomplete turns of a thread are listed but skipped: the next turn continues the last completed."""
    client = sync_client(gw)
    answer(upstream, "done")
    completed = client.responses.create(model="fake-model", input="one", extra_body={"thread_id": "th_latest"})
    upstream.handler = openai_chat.drop(["bro"])
    raw_stream(gw, {"model": "fake-model", "input": "two", "thread_id": "th_latest"})
    upstream.handler = openai_chat.text_answer(["trunc"], finish="length")
    incomplete = client.responses.create(model="fake-model", input="three", extra_body={"thread_id": "th_latest"})
    assert incomplete.status == "incomplete"
    answer(upstream, "ok")
    latest = client.responses.create(model="fake-model", input="four", extra_body={"thread_id": "th_latest"})
    assert latest.previous_response_id == completed.id
    assert len(thread_ids(gw, "th_latest")) == 4
    assert sent_messages(upstream) == [{"role": "user", "content": "one"}, {"role": "assistant", "content": "done"},
                                       {"role": "user", "content": "four"}]


def test_deleted_turn_in_a_chain_is_404_naming_it(gw, upstream):
    """Deleting a middle turn: continuing any later turn (by id or thread) is 404 naming the deleted one."""
    client = sync_client(gw)
    first = client.responses.create(model="fake-model", input="secret plan", extra_body={"thread_id": "th_del"})
    middle = client.responses.create(model="fake-model", input="more", extra_body={"thread_id": "th_del"})
    last = client.responses.create(model="fake-model", input="again", extra_body={"thread_id": "th_del"})
    client.responses.delete(first.id)
    before, sent = position(gw), len(upstream.requests)
    with pytest.raises(openai.NotFoundError) as by_id:
        client.responses.create(model="fake-model", input="x", previous_response_id=last.id)
    assert by_id.value.code == "previous_response_not_found" and by_id.value.param == "previous_response_id"
    assert first.id in by_id.value.message and "deleted" in by_id.value.message
    with pytest.raises(openai.NotFoundError) as by_thread:
        client.responses.create(model="fake-model", input="x", extra_body={"thread_id": "th_del"})
    assert by_thread.value.param == "thread_id" and first.id in by_thread.value.message
    assert (position(gw), len(upstream.requests)) == (before, sent)
    assert thread_ids(gw, "th_del") == [middle.id, last.id]


def test_twenty_turns_send_every_earlier_turn_in_order_without_old_instructions(gw, upstream):
    """Turn 20's upstream messages are every earlier input and output in order; turn 0's instructions are gone."""
    client = sync_client(gw)
    previous = None
    for turn in range(20):
        answer(upstream, f"answer {turn}")
        response = client.responses.create(model="fake-model", input=f"turn {turn}", previous_response_id=previous,
                                           instructions="Speak like a pirate." if turn == 0 else None)
        previous = response.id
    assert upstream.requests[0].json()["messages"][0] == {"role": "system", "content": "Speak like a pirate."}
    expected = []
    for turn in range(20):
        expected.append({"role": "user", "content": f"turn {turn}"})
        if turn < 19:
            expected.append({"role": "assistant", "content": f"answer {turn}"})
    assert sent_messages(upstream) == expected


def test_stored_call_and_its_output_are_ledger_events(gw, upstream):
    """The ledger file holds the function call (name, call_id, joined arguments) and the next turn's output."""
    client = sync_client(gw)
    upstream.handler = openai_chat.tool_calls_answer([("call_led1", "get_weather", '{"city": "Lisbon"}')])
    first = client.responses.create(model="fake-model", input="Weather in Lisbon?", tools=[WEATHER_TOOL])
    answer(upstream, "sunny")
    second = client.responses.create(model="fake-model", previous_response_id=first.id, tools=[WEATHER_TOOL],
                                     input=[{"type": "function_call_output", "call_id": "call_led1",
                                             "output": '{"sky": "clear"}'}])
    conn = sqlite3.connect(gw.data_dir / "ledger.db")
    try:
        rows = conn.execute("SELECT stream, type, data FROM events WHERE stream IN (?, ?) ORDER BY position",
                            (f"response-{first.id}", f"response-{second.id}")).fetchall()
    finally:
        conn.close()
    events = [(stream, kind, json.loads(data)) for stream, kind, data in rows]
    [started] = [d["item"] for s, k, d in events if k == "response.item_started"
                 and s == f"response-{first.id}"]
    assert (started["type"], started["name"], started["call_id"]) == ("function_call", "get_weather", "call_led1")
    arguments = "".join(d["delta"] for s, k, d in events if k == "response.arguments_delta")
    assert arguments == '{"city": "Lisbon"}'
    [accepted] = [d for s, k, d in events if k == "response.accepted" and s == f"response-{second.id}"]
    [output] = accepted["input_items"]
    assert (output["type"], output["call_id"], output["output"]) == ("function_call_output", "call_led1",
                                                                     '{"sky": "clear"}')
    assert accepted["params"]["previous_response_id"] == first.id


def test_threads_and_responses_are_invisible_to_another_platform(gw, upstream):
    """Another platform's key: the thread lists nothing, thread_id starts its own thread, the response is 404."""
    client = sync_client(gw)
    mine = client.responses.create(model="fake-model", input="private", extra_body={"thread_id": "th_shared_name"})
    other_pid, other_key = new_platform(gw, "conversation-other")
    assert thread_ids(gw, "th_shared_name", other_key) == []
    other = sync_client(gw, key=other_key)
    httpx.post(gw.base_url + f"/platforms/{other_pid}/wallet/topup", json={"amount": 1}, timeout=30,
               headers={"Authorization": f"Bearer {other_key}"}).raise_for_status()
    theirs = other.responses.create(model="fake-model", input="theirs", extra_body={"thread_id": "th_shared_name"})
    assert theirs.previous_response_id is None
    assert sent_messages(upstream) == [{"role": "user", "content": "theirs"}]
    with pytest.raises(openai.NotFoundError) as foreign:
        other.responses.create(model="fake-model", input="x", previous_response_id=mine.id)
    assert foreign.value.code == "previous_response_not_found"
    assert thread_ids(gw, "th_shared_name") == [mine.id]


def test_end_user_cannot_continue_another_end_users_response(gw, upstream):
    """An end-user key continuing (or listing the thread of) another end user of the same platform: 404 / empty."""
    path = f"/v1/platforms/{gw.platform_id}/end-users"
    alice = call(gw, "POST", path, gw.key, {"external_id": "conv-alice"}).json()["api_key"]["raw_key"]
    bob = call(gw, "POST", path, gw.key, {"external_id": "conv-bob"}).json()["api_key"]["raw_key"]
    hers = sync_client(gw, key=alice).responses.create(model="fake-model", input="alice's",
                                                       extra_body={"thread_id": "th_alice"})
    with pytest.raises(openai.NotFoundError) as foreign:
        sync_client(gw, key=bob).responses.create(model="fake-model", input="x", previous_response_id=hers.id)
    assert foreign.value.code == "previous_response_not_found"
    assert thread_ids(gw, "th_alice", bob) == []
    his = sync_client(gw, key=bob).responses.create(model="fake-model", input="bob's",
                                                    extra_body={"thread_id": "th_alice"})
    assert his.previous_response_id is None
    assert thread_ids(gw, "th_alice", alice) == [hers.id]

"""The streamed events' exact field sets and the request surface's edge rules."""

from __future__ import annotations

import httpx
import openai
import pytest

from tests.conftest import start_gateway
from tests.test_responses_e2e import parse_sse, sync_client

RESPONSE_KEYS = {
    "id", "object", "created_at", "status", "completed_at", "error", "incomplete_details", "instructions",
    "max_output_tokens", "max_tool_calls", "model", "output", "parallel_tool_calls", "previous_response_id",
    "reasoning", "service_tier", "store", "temperature", "text", "tool_choice", "tools", "top_p", "truncation",
    "usage", "user", "metadata", "background", "thread_id",
}
EVENT_FIELDS = {
    "response.created": {"response"},
    "response.in_progress": {"response"},
    "response.output_item.added": {"output_index", "item"},
    "response.content_part.added": {"item_id", "output_index", "content_index", "part"},
    "response.output_text.delta": {"item_id", "output_index", "content_index", "delta", "logprobs"},
    "response.output_text.done": {"item_id", "output_index", "content_index", "text", "logprobs"},
    "response.content_part.done": {"item_id", "output_index", "content_index", "part"},
    "response.output_item.done": {"output_index", "item"},
    "response.completed": {"response"},
    "response.incomplete": {"response"},
}
USAGE_KEYS = {"input_tokens", "input_tokens_details", "output_tokens", "output_tokens_details", "total_tokens"}


def stream_raw(gateway, body: dict) -> list[dict]:
    answer = httpx.post(gateway.base_url + "/responses", json={**body, "stream": True}, timeout=30,
                        headers={"Authorization": f"Bearer {gateway.key}"})
    assert answer.status_code == 200
    return parse_sse(answer.content)


@pytest.mark.parametrize("max_tokens, terminal", [(None, "response.completed"), (2, "response.incomplete")])
def test_every_event_has_exactly_the_documented_fields(gateway, max_tokens, terminal):
    """Each event carries type, sequence_number and exactly its documented fields; ids stay stable."""
    events = stream_raw(gateway, {"model": "demo", "input": "fields please", "max_output_tokens": max_tokens})
    assert events[-1]["type"] == terminal
    response_ids, item_ids = set(), set()
    for n, event in enumerate(events):
        assert set(event) == {"type", "sequence_number"} | EVENT_FIELDS[event["type"]], event["type"]
        assert event["sequence_number"] == n
        if "response" in event:
            assert set(event["response"]) == RESPONSE_KEYS
            response_ids.add(event["response"]["id"])
        if "item" in event:
            item_ids.add(event["item"]["id"])
        if "item_id" in event:
            item_ids.add(event["item_id"])
    assert len(response_ids) == 1 and len(item_ids) == 1
    final = events[-1]["response"]
    assert set(final["usage"]) == USAGE_KEYS
    assert final["usage"]["input_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0}
    assert events[0]["response"]["usage"] is None and events[0]["response"]["output"] == []
    if terminal == "response.incomplete":
        assert final["incomplete_details"] == {"reason": "max_output_tokens"}
        assert final["completed_at"] is None
    else:
        assert final["completed_at"] >= final["created_at"]


def test_metadata_limits(gateway):
    """metadata follows OpenAI's limits: 16 pairs, keys <= 64 chars, string values <= 512 chars."""
    client = sync_client(gateway)
    ok = client.responses.create(model="demo", input="x", metadata={f"k{i}": "v" for i in range(16)})
    assert len(ok.metadata) == 16
    for bad in ({f"k{i}": "v" for i in range(17)}, {"k" * 65: "v"}, {"k": "v" * 513}):
        with pytest.raises(openai.BadRequestError) as error:
            client.responses.create(model="demo", input="x", metadata=bad)
        assert error.value.param.startswith("metadata")


def test_text_format_and_response_format_alias(gateway):
    """text.format is echoed; response_format is accepted as its alias; a bad type names the field."""
    client = sync_client(gateway)
    schema = {"type": "json_schema", "name": "city", "schema": {"type": "object"}, "strict": True}
    assert client.responses.create(model="demo", input="x", text={"format": schema}).text.format.name == "city"
    aliased = client.responses.create(model="demo", input="x", extra_body={"response_format": {"type": "json_object"}})
    assert aliased.text.format.type == "json_object"
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(model="demo", input="x", text={"format": {"type": "yaml"}})
    assert error.value.param == "text.format.type"


def test_structured_input_parts_are_accepted_and_listed(gateway):
    """Messages with image and file parts and assistant output_text replays are stored as given."""
    client = sync_client(gateway)
    response = client.responses.create(model="demo", input=[
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "low"},
            {"type": "input_file", "file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"},
        ]},
        {"role": "assistant", "content": [{"type": "output_text", "text": "A picture."}]},
        {"role": "developer", "content": "Answer again."},
        {"role": "user", "content": "And now?"},
    ])
    assert response.status == "completed"
    items = client.responses.input_items.list(response.id, order="asc").data
    assert [i.role for i in items] == ["system", "user", "assistant", "developer", "user"]
    assert items[1].content[1].type == "input_image" and items[1].content[2].filename == "a.pdf"
    with pytest.raises(openai.BadRequestError) as error:
        client.responses.create(model="demo", input=[{"role": "user", "content": [{"type": "input_image"}]}])
    assert error.value.param == "input[0].content[0]"


def test_ignored_openai_fields_are_accepted(gateway):
    """OpenAI fields we do not act on (reasoning, include, truncation...) do not fail the request."""
    client = sync_client(gateway)
    response = client.responses.create(model="demo", input="x", reasoning={"effort": "low"}, include=[],
                                       truncation="disabled", service_tier="auto", prompt_cache_key="k")
    assert response.status == "completed"


def test_min_output_tokens_rule_is_422(tmp_path):
    """max_output_tokens below a model's configured minimum is 422 integer_below_min_value (the seed's rule)."""
    config = tmp_path / "gw.toml"
    config.write_text('[[providers]]\nname = "demo"\nkind = "demo"\n\n'
                      '[[models]]\nid = "demo-gpt5"\nprovider = "demo"\nmin_output_tokens = 16\n')
    gateway = start_gateway(tmp_path / "gw", "--config", str(config))
    try:
        client = sync_client(gateway)
        with pytest.raises(openai.UnprocessableEntityError) as error:
            client.responses.create(model="demo-gpt5", input="x", max_output_tokens=10)
        assert error.value.code == "integer_below_min_value" and error.value.param == "max_output_tokens"
        assert client.responses.create(model="demo-gpt5", input="x", max_output_tokens=16).status == "completed"
        assert [m.id for m in client.models.list()] == ["demo-gpt5"]
    finally:
        assert gateway.stop() == 0


def test_body_over_limit_is_413(gateway):
    """A body over body_bytes_max gets 413 request_too_large in the error shape."""
    big = b'{"model": "demo", "input": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    answer = httpx.post(gateway.base_url + "/responses", content=big, timeout=30,
                        headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"})
    assert answer.status_code == 413
    assert answer.json()["error"]["code"] == "request_too_large"


def test_unknown_route_is_404_in_error_shape(gateway):
    """Unknown paths answer 404 with the error object, not an HTML page."""
    answer = httpx.get(gateway.base_url + "/nothing-here", timeout=30)
    assert answer.status_code == 404
    assert set(answer.json()["error"]) == {"message", "type", "param", "code"}


def test_cancel_is_400_for_foreground_responses(gateway):
    """POST /v1/responses/{id}/cancel: 400 not_cancellable for our (foreground) responses, 404 for unknown ids."""
    response = sync_client(gateway).responses.create(model="demo", input="x")
    answer = httpx.post(gateway.base_url + f"/responses/{response.id}/cancel", timeout=30,
                        headers={"Authorization": f"Bearer {gateway.key}"})
    assert answer.status_code == 400 and answer.json()["error"]["code"] == "not_cancellable"
    missing = httpx.post(gateway.base_url + "/responses/resp_nope/cancel", timeout=30,
                         headers={"Authorization": f"Bearer {gateway.key}"})
    assert missing.status_code == 404


def test_metrics_in_prometheus_text(gateway):
    """GET /metrics exposes ledger and request gauges in the Prometheus text format."""
    sync_client(gateway).responses.create(model="demo", input="count me")
    text = httpx.get(gateway.url + "/metrics", timeout=30).text
    values = dict(line.split(" ") for line in text.splitlines() if not line.startswith("#"))
    assert int(values["assistiv_ledger_events"]) > 0
    assert int(values["assistiv_projection_position"]) <= int(values["assistiv_ledger_events"])
    assert values["assistiv_requests_in_flight"] == "0"


def test_early_error_leaves_keep_alive_connection_usable(gateway):
    """An error answered before the body was read must not wedge the next request on that connection."""
    for _ in range(3):
        with httpx.Client(timeout=5) as client:  # one keep-alive connection, as SDKs use
            for _ in range(3):
                rejected = client.post(gateway.base_url + "/responses", headers={"Authorization": "Bearer bad"},
                                       json={"model": "demo", "input": "x" * 10_000})
                assert rejected.status_code == 401
                assert client.get(gateway.url + "/healthz").status_code == 200

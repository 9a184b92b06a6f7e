"""gateway/unstored.withheld: what a store=false response records of each event."""

from __future__ import annotations

from ledger.codec import event_to_json
from ledger.events import (
    ArgumentsDelta,
    ItemFinished,
    ItemStarted,
    McpApprovalRequested,
    McpApprovalResponded,
    McpCallFinished,
    McpCallStarted,
    ResponseAccepted,
    TextDelta,
)
from gateway.unstored import withheld

SECRET = "s3cr3t"


def test_no_text_survives_and_structure_does():
    events = [
        ResponseAccepted("resp_1", "plat_1", "demo", "demo", False,
                         {"instructions": SECRET, "store": False, "metadata": {"k": "v"}, "tools": [],
                          "text": {"format": {"type": "text"}}},
                         [{"id": "msg_1", "type": "message", "role": "user",
                           "content": [{"type": "input_text", "text": SECRET},
                                       {"type": "input_image", "image_url": f"data:image/png;base64,{SECRET}"}]},
                          {"id": "fco_1", "type": "function_call_output", "call_id": "c1", "output": SECRET}]),
        TextDelta("resp_1", 0, SECRET),
        ArgumentsDelta("resp_1", 1, SECRET),
        ItemStarted("resp_1", 2, {"id": "mcp_1", "type": "mcp_call", "name": "add", "arguments": SECRET}),
        McpCallStarted("resp_1", 2, "srv", "add", SECRET),
        McpCallFinished("resp_1", 2, 5, output=SECRET, output_chars=6),
        McpCallFinished("resp_1", 3, 5, error={"type": "mcp_tool_execution_error",
                                                "content": [{"type": "text", "text": SECRET}]}),
        McpApprovalRequested("resp_1", 4, "apr_1", "srv", "add", SECRET),
        McpApprovalResponded("resp_1", "apr_1", False, "srv", "add", reason=SECRET),
    ]
    for event in events:
        kept = withheld(event)
        assert type(kept) is type(event)
        assert SECRET.encode() not in event_to_json(kept), event
    accepted = withheld(events[0])
    assert accepted.params["metadata"] == {"k": "v"} and accepted.params["store"] is False
    assert [i["type"] for i in accepted.input_items] == ["message", "function_call_output"]
    assert accepted.input_items[0]["content"][1] == {"type": "input_image", "image_url": ""}
    assert withheld(events[5]).output_chars == 6 and withheld(events[3]).item["name"] == "add"


def test_events_without_text_are_kept_as_they_are():
    finished = ItemFinished("resp_1", 0, "completed")
    assert withheld(finished) is finished

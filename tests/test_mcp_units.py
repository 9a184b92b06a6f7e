"""Units of the MCP support: tool names, approval rules, loop limits, conversation mapping, the renderer."""

from __future__ import annotations

import pytest

from gateway.config import McpConfig
from gateway.conversation import messages_from_items
from gateway.errors import ApiError
from gateway.mcp.client import CallOutcome, CallRequest, Listing, McpClient
from gateway.mcp.loop import McpLoop
from gateway.mcp.names import FUNCTION_NAME, ToolMap, function_name
from gateway.mcp.policy import parse_allowlist
from gateway.mcp.spec import McpServer, parse_mcp_tool
from ledger.events import McpCallFinished, McpToolsListed
from tests.fakes.mcp_server import McpTestServer

TOOLS = [{"name": "add", "description": "Add.", "input_schema": {"type": "object"}, "annotations": {"readOnlyHint": True}},
         {"name": "delete", "description": "Delete.", "input_schema": {"type": "object"}, "annotations": None}]


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def loop_with(config: McpConfig, max_tool_calls=None, clock=None, server: McpServer | None = None) -> McpLoop:
    server = server or McpServer("srv", "https://mcp.example.com/mcp", approval="never")
    history = [{"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "srv", "tools": TOOLS, "error": None}]
    return McpLoop("resp_1", [server], history, config, max_tool_calls, None, [], clock=clock or Clock())


def test_function_names_are_namespaced_valid_and_distinct():
    """label__tool when valid; otherwise (or on a clash) a readable prefix and a hash; always valid names."""
    assert function_name("deepwiki", "ask") == "deepwiki__ask"
    odd = function_name("srv", "files.read/all")
    assert FUNCTION_NAME.match(odd) and odd.startswith("srv__files_read_all_")
    long = function_name("a" * 40, "b" * 40)
    assert FUNCTION_NAME.match(long) and len(long) == 64
    tools = ToolMap(taken=["srv__add"])  # a client function already has that name
    mapped = tools.add("srv", {"name": "add", "input_schema": {}})
    assert mapped.function != "srv__add" and tools.lookup(mapped.function).tool == "add"
    other = tools.add("other", {"name": "add", "input_schema": {}})
    assert other.function == "other__add" and tools.for_pair("other", "add") is other


def test_approval_rules_and_allowed_filters():
    """require_approval objects and allowed_tools filters select tools by name and readOnlyHint."""
    never_add = parse_mcp_tool({"type": "mcp", "server_label": "s", "server_url": "https://x.example/mcp",
                                "require_approval": {"never": {"tool_names": ["add"]}}}, "tools[0]")
    assert not never_add.needs_approval("add") and never_add.needs_approval("delete")
    always_delete = parse_mcp_tool({"type": "mcp", "server_label": "s", "server_url": "https://x.example/mcp",
                                    "require_approval": {"always": {"tool_names": ["delete"]}}}, "tools[0]")
    assert always_delete.needs_approval("delete") and not always_delete.needs_approval("add")
    read_only = parse_mcp_tool({"type": "mcp", "server_label": "s", "server_url": "https://x.example/mcp",
                                "allowed_tools": {"read_only": True}}, "tools[0]")
    assert read_only.allows("add", {"readOnlyHint": True}) and not read_only.allows("delete", None)
    assert read_only.needs_approval("add")  # OpenAI's default is "always"
    with pytest.raises(ApiError) as bad:
        parse_mcp_tool({"type": "mcp", "server_label": "s", "server_url": "https://x.example/mcp",
                        "headers": {"X-Key": "line\nbreak-secret"}}, "tools[3]")
    assert bad.value.param == "tools[3].headers.X-Key" and "break-secret" not in bad.value.message


def test_calls_limit_refuses_later_calls_and_closes_tools():
    """Calls beyond min(max_tool_calls, mcp_calls_max) are refused, and no MCP tools are offered after."""
    loop = loop_with(McpConfig(mcp_calls_max=3), max_tool_calls=2)
    calls = [loop.start_call(i, "srv__add") for i in range(3)]
    for call in calls:
        call.arguments = '{"a": 1}'
    plans = loop.plan(calls)
    assert [p.runs for p in plans] == [True, True, False] and plans[2].limit == "max_tool_calls"
    assert loop.definitions() == [] and loop.closed == "max_tool_calls"


def test_time_budget_refuses_and_bounds_calls():
    """A call's deadline is cut to the time budget left; past the budget calls are refused."""
    clock = Clock()
    loop = loop_with(McpConfig(call_timeout_s=30, time_budget_s=10), clock=clock)
    first = loop.start_call(0, "srv__add")
    clock.now += 8
    [plan] = loop.plan([first])
    assert plan.runs and plan.timeout_s == pytest.approx(2) and plan.budget_bound
    first.output_index = 1
    events = loop.finished_events(plan, CallOutcome(2_000, error={"type": "mcp_protocol_error", "code": -32001,
                                                                  "message": "timed out"}, timed_out=True))
    assert isinstance(events[0], McpCallFinished) and events[0].limit == "time_budget_s"
    assert events[1].limit == "time_budget_s" and loop.closed == "time_budget_s"
    clock.now += 5
    [late] = loop.plan([loop.start_call(1, "srv__add")])
    assert not late.runs and late.limit == "time_budget_s"


def test_tools_per_server_cap_and_allowed_tools_in_listing():
    """A listing keeps only allowed tools, at most tools_per_server_max of them, and records the cap."""
    server = McpServer("srv", "https://mcp.example.com/mcp", allowed=["add", "delete", "more"])
    loop = McpLoop("resp_1", [server], [], McpConfig(tools_per_server_max=1), None, None, [], clock=Clock())
    events = loop.listed_events(0, "srv", Listing(TOOLS + [{"name": "hidden", "input_schema": {}}], 12))
    assert isinstance(events[0], McpToolsListed) and [t["name"] for t in events[0].tools] == ["add"]
    assert events[1].limit == "tools_per_server_max" and events[1].value == 1
    assert [d["name"] for d in loop.definitions()] == ["srv__add"]


def test_mcp_items_become_tool_calls_and_results_for_the_model():
    """Parallel mcp_calls are one assistant message then their results; a refused approval is a result too."""
    items = [
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "go"}]},
        {"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "s", "tools": [], "error": None},
        {"type": "mcp_call", "id": "mcp_1", "status": "completed", "server_label": "s", "name": "add",
         "arguments": "{}", "output": "3", "error": None},
        {"type": "mcp_call", "id": "mcp_2", "status": "failed", "server_label": "s", "name": "fail",
         "arguments": "{}", "output": None, "error": {"type": "http_error", "code": 502, "message": "bad"}},
        {"type": "mcp_approval_request", "id": "mcpr_1", "server_label": "s", "name": "rm", "arguments": "{}"},
        {"type": "mcp_approval_response", "id": "mcpa_1", "approval_request_id": "mcpr_1", "approve": False},
    ]
    messages = messages_from_items(items)
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "tool", "tool"]
    assert [c["name"] for c in messages[1]["tool_calls"]] == ["s__add", "s__fail", "s__rm"]
    assert [m["content"][0]["text"] for m in messages[2:4]] == ["3", "Error (http_error 502): bad"]
    assert "refused" in messages[4]["content"][0]["text"]


async def test_client_error_objects_for_http_and_connection_failures():
    """The SDK client turns an HTTP error status and a refused connection into MCP error objects."""
    client = McpClient(parse_allowlist(["http://127.0.0.1"]))
    with McpTestServer() as server:
        denied = McpServer("d", server.denied_url, authorization="tok-secret-1")
        outcomes = await client.call_tools(denied, [CallRequest("k", "add", {"a": 1, "b": 2}, 5)])
        assert outcomes["k"].error == {"type": "http_error", "code": 401, "message": "The MCP server answered HTTP 401."}
        ok = await client.call_tools(McpServer("t", server.url), [CallRequest("k", "add", {"a": 1, "b": 2}, 5)])
        assert ok["k"].output == "3" and ok["k"].error is None
        port = server.port
    gone = await client.call_tools(McpServer("g", f"http://127.0.0.1:{port}/mcp"), [CallRequest("k", "add", {}, 5)])
    assert gone["k"].error["type"] == "mcp_protocol_error" and gone["k"].error["code"] == -32000


def test_an_approval_runs_only_a_tool_the_request_still_allows():
    """approved_calls refuses (with a reason for the model) a tool outside this request's allowed_tools."""
    server = McpServer("srv", "https://mcp.example.com/mcp", allowed=["add"], approval="always")
    requests = [{"type": "mcp_approval_request", "id": f"mcpr_{name}", "server_label": "srv", "name": name,
                 "arguments": "{}"} for name in ("add", "delete")]
    answers = [{"type": "mcp_approval_response", "id": f"mcpa_{name}", "approval_request_id": f"mcpr_{name}",
                "approve": True} for name in ("add", "delete")]
    history = [{"type": "mcp_list_tools", "id": "mcpl_1", "server_label": "srv", "tools": TOOLS, "error": None},
               *requests, *answers]
    loop = McpLoop("resp_1", [server], history, McpConfig(), None, None, [], clock=Clock())
    add, delete = loop.approved_calls({"mcpa_add", "mcpa_delete"})
    plans = loop.plan([add, delete])
    assert plans[0].runs and add.refusal is None
    assert not plans[1].runs and "'delete'" in plans[1].error["content"][0]["text"]
    assert loop.calls_run == 1  # a refused approval uses none of the calls limit


def test_a_listing_counts_only_for_the_same_url_and_filter():
    """A listing item's id carries the server's listing key: another URL or filter lists again; no key counts."""
    server = McpServer("srv", "https://mcp.example.com/mcp", approval="never")
    item = McpLoop.listing_item(server)
    assert item["id"].startswith("mcpl_") and item["id"].endswith("_" + server.listing_key())
    for other, listed in ((server, True),
                          (McpServer("srv", "https://mcp.example.com/v2/mcp", approval="never"), False),
                          (McpServer("srv", "https://mcp.example.com/mcp", allowed=["add"]), False),
                          (McpServer("srv", "https://mcp.example.com/mcp?key=other-secret"), False)):
        history = [{**item, "tools": TOOLS}]
        loop = McpLoop("resp_1", [other], history, McpConfig(), None, None, [], clock=Clock())
        assert (loop.servers_to_list() == []) is listed, other
    assert McpServer("s", "https://h.example/mcp?key=secret-one").listing_key() == McpServer(
        "s", "https://h.example/mcp?key=secret-two").listing_key()  # the key holds no secret
    unkeyed = McpLoop("resp_1", [McpServer("srv", "https://elsewhere.example/mcp")],
                      [{**item, "id": "mcpl_made_elsewhere", "tools": TOOLS}], McpConfig(), None, None, [],
                      clock=Clock())
    assert unkeyed.servers_to_list() == []


@pytest.mark.parametrize("bad", ["a\rb", "a\nb", "a\x00b", "a\x1bb", "a\x7fb"])
def test_authorization_and_header_values_refuse_control_characters(bad):
    """authorization and header values are one line of text: any control character (but tab) is a 400."""
    base = {"type": "mcp", "server_label": "s", "server_url": "https://x.example/mcp"}
    with pytest.raises(ApiError) as authorization:
        parse_mcp_tool({**base, "authorization": f"tok-{bad}-secret"}, "tools[0]")
    assert authorization.value.param == "tools[0].authorization" and "secret" not in authorization.value.message
    with pytest.raises(ApiError) as header:
        parse_mcp_tool({**base, "headers": {"X-Key": f"v-{bad}-secret"}}, "tools[0]")
    assert header.value.param == "tools[0].headers.X-Key" and "secret" not in header.value.message
    assert parse_mcp_tool({**base, "authorization": "tok\twith-tab"}, "tools[0]").authorization == "tok\twith-tab"

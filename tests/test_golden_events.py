"""Golden encodings: tests/golden/events.jsonl holds one canonical JSON line per event type.

A recorded ledger is forever, so an event's encoding must never change by accident. Each
golden line must decode and re-encode to the very same bytes, and every tag in
ledger.events.TAGS must have a line. Adding an event type: add an instance to SAMPLES and
run ``python tests/test_golden_events.py``, which appends lines for tags the file lacks and
never rewrites an existing line. Changing an existing line is a ledger format change.
"""

from __future__ import annotations

import sys
from pathlib import Path

import orjson
import pytest

from ledger.codec import event_from_json, event_to_json
from ledger.events import (
    TAGS,
    BudgetLowBalance,
    BudgetSet,
    BudgetToppedUp,
    EndUserCreated,
    EndUserUpdated,
    GatewayStarted,
    HoldPlaced,
    HoldReleased,
    PlatformUpdated,
    PricesPublished,
    RateLimitsSet,
    RequestKeyed,
    UsageCharged,
    WalletCredited,
    ApiKeyCreated,
    ApiKeyRevoked,
    ArgumentsDelta,
    ErrorInfo,
    ItemFinished,
    ItemStarted,
    McpApprovalRequested,
    McpApprovalResponded,
    McpCallFinished,
    McpCallStarted,
    McpLimitReached,
    McpToolsListed,
    McpUsageCharged,
    PlatformCreated,
    ResponseAccepted,
    ResponseDeleted,
    ResponseFinished,
    TextDelta,
    Usage,
)

GOLDEN = Path(__file__).parent / "golden" / "events.jsonl"

# Every optional field is set, so the golden line pins its name and encoding too.
SAMPLES = [
    PlatformCreated("plat_01", "Acme Ünïcode ☃"),
    ApiKeyCreated("key_01", "plat_01", "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08", "sk-abc", "eu_7", 1767225600),
    ApiKeyRevoked("key_01", "plat_01"),
    ResponseAccepted(
        "resp_01",
        "plat_01",
        "demo/echo",
        "demo",
        True,
        {"instructions": "Be brief.", "max_output_tokens": 256, "metadata": {"b": "2", "a": "1"}, "tools": []},
        [{"id": "msg_01", "type": "message", "role": "user", "content": [{"type": "input_text", "text": "Hi 👋"}]}],
        "eu_7",
    ),
    ItemStarted("resp_01", 0, {"id": "msg_02", "type": "message", "role": "assistant", "status": "in_progress", "content": []}),
    TextDelta("resp_01", 0, "Hello, \"world\"\n\t€"),
    ArgumentsDelta("resp_01", 1, '{"city": "Par'),
    ItemFinished("resp_01", 0, "incomplete"),
    ResponseFinished(
        "resp_01",
        "incomplete",
        Usage(input_tokens=12, cached_input_tokens=4, output_tokens=7, reasoning_tokens=2),
        usage_estimated=True,
        incomplete_reason="max_output_tokens",
        error=ErrorInfo("upstream_error", "provider hung up"),
        interruption="upstream_failed",
    ),
    ResponseDeleted("resp_01"),
    PlatformUpdated("plat_01", "Acme", 5_000_000, 60, 100_000, 1_000),
    EndUserCreated("eu_7", "plat_01", "user-42", "Ada", {"tier": "gold"}),
    EndUserUpdated("eu_7", "plat_01", "Ada L.", {"tier": "silver"}, False),
    RateLimitsSet("plat_01", "eu_7", 10, 20_000, 500, False),
    PricesPublished("prices_1_abc", "5" * 64, "v1",
                    {"gpt-4o": {"input": "2.50", "cached_input": "1.25", "output": "10.00"}}),
    WalletCredited("plat_01", "txn_01", "top_up", 25_000_000, "first top-up"),
    BudgetSet("plat_01", "eu_7", "bud_01", 10_000_000, "monthly", True, 10_000_000, 1_000_000, False),
    BudgetToppedUp("plat_01", "eu_7", "btxn_01", 2_500_000, "bonus"),
    BudgetLowBalance("plat_01", "eu_7", 900_000),
    HoldPlaced("resp_01", "budget", "plat_01", "eu_7", 43_210, True),
    HoldReleased("resp_01", "budget", "plat_01", "eu_7", "settled", 1_234, "Inference: 19 tokens (gpt-4o)"),
    UsageCharged("resp_01", "plat_01", "eu_7", "gpt-4o", "openai", "response",
                 Usage(input_tokens=12, cached_input_tokens=4, output_tokens=7, reasoning_tokens=2), "reported",
                 "prices_1_abc", "5" * 64, "v1", 100, "success", 321, "billed"),
    RequestKeyed("resp_01", "a" * 64),
    McpToolsListed("resp_01", 0, "deepwiki", [{"name": "ask", "description": "Ask ☃", "input_schema": {
        "type": "object", "properties": {"q": {"type": "string"}}}, "annotations": {"readOnlyHint": True}}], 57,
        "Error retrieving tool list from MCP server 'deepwiki': HTTP 401"),
    McpCallStarted("resp_01", 1, "deepwiki", "ask", '{"q": "x"}', "mcpr_01"),
    McpCallFinished("resp_01", 1, 1234, "the answer…", {"type": "http_error", "code": 502, "message": "bad gateway"},
                    250_000, "output_chars_max"),
    McpApprovalRequested("resp_01", 2, "mcpr_01", "deepwiki", "ask", '{"q": "x"}'),
    McpApprovalResponded("resp_01", "mcpr_01", False, "deepwiki", "ask", "not today"),
    McpLimitReached("resp_01", "max_tool_calls", 3, 4, "the model asked for a 4th MCP call"),
    McpUsageCharged("plat_01", "eu_7", "resp_01", 1, "mcp_01", "deepwiki", "ask", "2026-11", 1001, 1000, 1000, 1000,
                    "billed"),
    GatewayStarted("gw_01", True, ["resp_01", "chatcmpl-02"], 1234),
]


def golden_lines() -> list[bytes]:
    return GOLDEN.read_bytes().splitlines()


def test_golden_file_is_canonical_lines():
    """The golden file is newline-terminated lines, no blank lines, no trailing whitespace."""
    raw = GOLDEN.read_bytes()
    assert raw.endswith(b"\n")
    assert all(line and line == line.strip() for line in golden_lines())


@pytest.mark.parametrize("line", golden_lines() if GOLDEN.exists() else [], ids=lambda line: orjson.loads(line)["type"])
def test_golden_line_decodes_and_reencodes_to_the_same_bytes(line):
    """Each golden line decodes to its event type and re-encodes to exactly the same bytes."""
    event = event_from_json(line)
    assert TAGS[type(event)] == orjson.loads(line)["type"]
    assert event_to_json(event) == line


def test_every_event_type_has_exactly_one_golden_line():
    """Every tag in TAGS has one golden line (add a line when adding an event type), and no line is extra."""
    tags = [orjson.loads(line)["type"] for line in golden_lines()]
    assert sorted(tags) == sorted(TAGS.values())


def test_samples_match_their_golden_lines():
    """The samples this module writes from still encode to the golden lines (and cover every type)."""
    assert {type(s) for s in SAMPLES} == set(TAGS)
    by_tag = {orjson.loads(line)["type"]: line for line in golden_lines()}
    for sample in SAMPLES:
        assert event_to_json(sample) == by_tag[TAGS[type(sample)]]


def add_missing_lines() -> None:
    """Append a golden line for every sample whose tag the file lacks; never rewrite a line."""
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    have = {orjson.loads(line)["type"] for line in golden_lines()} if GOLDEN.exists() else set()
    with GOLDEN.open("ab") as out:
        for sample in SAMPLES:
            if TAGS[type(sample)] not in have:
                out.write(event_to_json(sample) + b"\n")
                print("added", TAGS[type(sample)], file=sys.stderr)


if __name__ == "__main__":
    add_missing_lines()

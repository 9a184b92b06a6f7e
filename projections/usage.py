"""Request logs and usage totals: one row per upstream model call (``usage.charged``) and
one per hosted MCP tool call (``mcp.usage_charged``, request_type ``mcp_tool``; its latency
and status come from the call's ``mcp.call_finished``)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any, Optional

import attrs

from ledger.events import McpCallFinished, McpUsageCharged, ResponseFinished, UsageCharged
from ledger.store import Recorded
from projections import digest


@attrs.define
class LogRow:
    id: str
    platform_id: str
    end_user_id: Optional[str]
    response_id: str
    request_type: str
    provider_id: str
    model_id: str
    prompt_tokens: int
    cached_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    latency_ms: int
    cost_micros: int
    status: str
    token_count_method: str
    billing_status: str
    price_version_id: str
    created_at: int

    def as_json(self, iso) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["total_tokens"] = self.prompt_tokens + self.completion_tokens
        out["estimated_cost_usd"] = str(Decimal(out.pop("cost_micros")) / 1_000_000)
        out["created_at"] = iso(self.created_at)
        return out


class UsageProjection:
    """Log rows per platform, in ledger order."""

    name = "usage"

    def __init__(self) -> None:
        self.rows: dict[str, list[LogRow]] = {}
        self._mcp_rows: dict[str, dict[int, LogRow]] = {}  # response id -> output index -> row, until finished

    def apply(self, recorded: Recorded) -> None:
        event = recorded.event
        if isinstance(event, McpUsageCharged):
            row = LogRow(recorded.event_id, event.platform_id, event.end_user_id, event.response_id, "mcp_tool",
                         f"mcp:{event.server_label}", event.name, 0, 0, 0, 0, 0, event.cost_micros, "running",
                         "none", event.billing_status, "", recorded.recorded_at_s)
            self.rows.setdefault(event.platform_id, []).append(row)
            self._mcp_rows.setdefault(event.response_id, {})[event.output_index] = row
        elif isinstance(event, McpCallFinished):
            row = self._mcp_rows.get(event.response_id, {}).pop(event.output_index, None)
            if row is not None:
                row.latency_ms = event.duration_ms
                row.status = "failed" if event.error is not None else "success"
        elif isinstance(event, ResponseFinished):
            for row in self._mcp_rows.pop(event.response_id, {}).values():
                row.status = "interrupted"  # the response ended while the call ran
        elif isinstance(event, UsageCharged):
            usage = event.usage
            self.rows.setdefault(event.platform_id, []).append(LogRow(
                recorded.event_id, event.platform_id, event.end_user_id, event.response_id, event.request_type,
                event.provider, event.model, usage.input_tokens, usage.cached_input_tokens, usage.output_tokens,
                usage.reasoning_tokens, event.latency_ms, event.cost_micros, event.status,
                event.token_count_method, event.billing_status, event.price_version_id, recorded.recorded_at_s))

    def totals(self, platform_id: str, group_by: list[str], from_s: Optional[int], to_s: Optional[int]) -> list[dict]:
        """Requests, tokens and cost per group (end_user, model, day), in key order."""
        groups: dict[tuple, dict[str, Any]] = {}
        for row in self.rows.get(platform_id, []):
            if (from_s is not None and row.created_at < from_s) or (to_s is not None and row.created_at >= to_s):
                continue
            day = dt.datetime.fromtimestamp(row.created_at, dt.timezone.utc).date().isoformat()
            values = {"end_user": row.end_user_id, "model": row.model_id, "day": day}
            key = tuple(values[g] or "" for g in group_by)
            group = groups.setdefault(key, {**{g: values[g] for g in group_by}, "requests": 0, "mcp_calls": 0,
                                            "prompt_tokens": 0, "completion_tokens": 0, "cost_micros": 0})
            group["mcp_calls" if row.request_type == "mcp_tool" else "requests"] += 1
            group["prompt_tokens"] += row.prompt_tokens
            group["completion_tokens"] += row.completion_tokens
            group["cost_micros"] += row.cost_micros
        return [groups[k] for k in sorted(groups)]

    def fingerprint(self) -> Any:
        """Row counts per platform, and a digest of every field of every log row (ledger order)
        and of the MCP rows still waiting for their call's end (projections.digest)."""
        state = {
            "rows": {pid: digest.rows(rows, LogRow) for pid, rows in self.rows.items()},
            "open_mcp": {rid: sorted(str(index) for index in rows) for rid, rows in self._mcp_rows.items() if rows},
        }
        return {"rows": {pid: len(rows) for pid, rows in sorted(self.rows.items())}, "sha256": digest.sha256(state)}

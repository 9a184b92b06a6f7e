"""The worst case a request may cost, before it runs.

Input is bounded by the UTF-8 size of everything sent (byte-level BPE tokenizers never
produce more tokens than bytes) plus a per-message and per-image allowance; output by
``max_output_tokens``, or the model's ``reserve_output_tokens`` when the request sets none
(an answer longer than that is still charged in full; only the reservation is smaller).
"""

from __future__ import annotations

import math
from decimal import Decimal

import orjson

from gateway.config import ModelConfig
from gateway.providers.base import ModelCall
from ledger.events import Usage
from projections.pricing import worst_case_micros

CHARS_PER_TOKEN_ESTIMATE = 4  # documented estimate when the provider reports no usage

MESSAGE_OVERHEAD_TOKENS = 8  # role markers and separators per message
REQUEST_OVERHEAD_TOKENS = 16
IMAGE_TOKENS_MAX = 6_400  # a high-detail image on the largest tiling


def input_tokens_max(call: ModelCall) -> int:
    """An upper bound of the input tokens of ``call``."""
    total = REQUEST_OVERHEAD_TOKENS + len((call.instructions or "").encode())
    for message in call.messages:
        total += MESSAGE_OVERHEAD_TOKENS
        for part in message["content"]:
            if part.get("type") == "input_image":
                total += IMAGE_TOKENS_MAX
            else:
                total += sum(len(v.encode()) for k, v in part.items() if k != "type" and isinstance(v, str))
        for call_ in message.get("tool_calls", ()):
            total += len(call_["name"].encode()) + len(call_["arguments"].encode()) + MESSAGE_OVERHEAD_TOKENS
    if call.tools:
        total += len(orjson.dumps(call.tools))
    if call.text_format and call.text_format.get("type") == "json_schema":
        total += len(orjson.dumps(call.text_format))
    return total


def worst_case(call: ModelCall, model: ModelConfig, hold_usd_max: str) -> int:
    """The request's worst-case cost in micro-USD, capped at ``hold_usd_max``."""
    output = call.max_output_tokens or model.reserve_output_tokens
    micros = worst_case_micros(input_tokens_max(call), output, model.prices())
    return min(micros, int(Decimal(hold_usd_max) * 1_000_000))


def emitted_usage_estimate(call: ModelCall, output_chars: int) -> Usage:
    """The documented estimate of a model call's usage when the provider reported none (marked
    estimated where recorded): ceil(characters / 4) of the text sent and of the output emitted.

    One formula for an interrupted run (gateway/pipeline.py) and for start-up recovery of a
    run a killed gateway left behind (gateway/recovery.py).
    """
    input_chars = len(call.instructions or "")
    for message in call.messages:
        input_chars += sum(len(p.get("text", "")) for p in message["content"])
        input_chars += sum(len(c["arguments"]) + len(c["name"]) for c in message.get("tool_calls", ()))
    return Usage(input_tokens=math.ceil(input_chars / CHARS_PER_TOKEN_ESTIMATE),
                 output_tokens=math.ceil(output_chars / CHARS_PER_TOKEN_ESTIMATE))

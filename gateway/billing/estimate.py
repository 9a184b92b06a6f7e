"""The worst case a request may cost, before it runs.

Input is bounded by the UTF-8 size of everything sent (byte-level BPE tokenizers never
produce more tokens than bytes) plus a per-message and per-image allowance; output by
``output_tokens_max``: the request's ``max_output_tokens``, or the model's
``reserve_output_tokens`` when the request sets none. The provider is told that same limit
(gateway/pipeline.py), so the answer cannot outgrow what was reserved; a model whose answers
may be longer needs a larger ``reserve_output_tokens`` in its config.

The worst case is not capped here: the book (gateway/billing/book.py) cuts a hold at
``hold_usd_max`` (or at the money available) and then marks it capped, one per account at a
time, which is what bounds the overshoot.
"""

from __future__ import annotations

import functools
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


def output_tokens_max(call: ModelCall, model: ModelConfig) -> int:
    """The output tokens ``call`` may produce, and the limit its provider is told."""
    return call.max_output_tokens or model.reserve_output_tokens


def worst_case(call: ModelCall, model: ModelConfig) -> int:
    """The request's worst-case cost in micro-USD (uncapped: see the module docstring)."""
    return worst_case_micros(input_tokens_max(call), output_tokens_max(call, model), model.prices())


@functools.lru_cache(maxsize=16)
def usd_to_micros_floor(usd: str) -> int:
    """A configured USD limit (``hold_usd_max``) in micro-USD, rounded down."""
    return int(Decimal(usd) * 1_000_000)


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

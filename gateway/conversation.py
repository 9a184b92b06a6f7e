"""From conversation items to the provider's normalized call.

The context of a turn is the earlier turns' items (``previous_response_id`` chain or
thread, from the responses projection) followed by this request's input items. Items map
to normalized messages (gateway/providers/base.py): messages as they are, ``function_call``
items as assistant ``tool_calls`` (merged into the assistant message before them), and
``function_call_output`` items as ``tool`` messages. ``instructions`` are never inherited.
"""

from __future__ import annotations

from typing import Any, Iterable

from gateway.errors import invalid
from gateway.providers.base import ModelCall
from gateway.responses_request import CreateRequest


def messages_from_items(items: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Normalized messages for a sequence of conversation items."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item["type"]
        if kind == "message":
            messages.append({"role": item["role"], "content": item["content"]})
        elif kind == "function_call":
            call = {"call_id": item["call_id"], "name": item["name"], "arguments": item.get("arguments", "")}
            if messages and messages[-1]["role"] == "assistant":
                last = messages[-1]
                messages[-1] = {**last, "tool_calls": [*last.get("tool_calls", []), call]}
            else:
                messages.append({"role": "assistant", "content": [], "tool_calls": [call]})
        elif kind == "function_call_output":
            messages.append({"role": "tool", "call_id": item["call_id"],
                             "content": [{"type": "input_text", "text": item["output"]}]})
    return messages


def check_call_outputs(context: list[dict[str, Any]], input_items: list[dict[str, Any]]) -> None:
    """Every ``function_call_output`` must answer a ``function_call`` of the conversation (else 400)."""
    call_ids = {item["call_id"] for item in context if item["type"] == "function_call"}
    for i, item in enumerate(input_items):
        if item["type"] == "function_call":
            call_ids.add(item["call_id"])
        elif item["type"] == "function_call_output" and item["call_id"] not in call_ids:
            raise invalid(f"No tool call found for function call output with call_id {item['call_id']!r}.",
                          f"input[{i}].call_id", "invalid_value")


def model_call(request: CreateRequest, upstream_model: str, context: list[dict[str, Any]]) -> ModelCall:
    """The normalized provider call for a validated request in its conversation."""
    return ModelCall(
        model=upstream_model,
        messages=messages_from_items([*context, *request.input_items]),
        instructions=request.instructions,
        temperature=request.temperature,
        top_p=request.top_p,
        max_output_tokens=request.max_output_tokens,
        text_format=request.text_format,
        tools=[{k: t[k] for k in ("name", "description", "parameters", "strict")} for t in request.tools],
        tool_choice=request.tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        stop=request.stop,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
    )

"""From conversation items to the provider's normalized call.

The context of a turn is the earlier turns' items (``previous_response_id`` chain or
thread, from the responses projection) followed by this request's input items. Items map
to normalized messages (gateway/providers/base.py): messages as they are, ``function_call``
items as assistant ``tool_calls`` (merged into the assistant message before them), and
``function_call_output`` items as ``tool`` messages. ``instructions`` are never inherited.

MCP items: an ``mcp_call`` is an assistant tool call (its function name from
gateway/mcp/names.py, its id as call id) followed by a ``tool`` message with its output
or error; a refused ``mcp_approval_request`` is the same with a refusal as the result; an
approved or unanswered one, ``mcp_list_tools`` and ``mcp_approval_response`` are not sent.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Optional, Sequence

from gateway.errors import invalid
from gateway.mcp.names import function_name
from gateway.providers.base import ModelCall
from gateway.responses_request import CreateRequest


def _tool_call(messages: list[dict[str, Any]], call: dict[str, Any]) -> None:
    if messages and messages[-1]["role"] == "assistant":
        last = messages[-1]
        messages[-1] = {**last, "tool_calls": [*last.get("tool_calls", []), call]}
    else:
        messages.append({"role": "assistant", "content": [], "tool_calls": [call]})


def _tool_result(call_id: str, text: str) -> dict[str, Any]:
    return {"role": "tool", "call_id": call_id, "content": [{"type": "input_text", "text": text}]}


def mcp_result_text(item: dict[str, Any]) -> str:
    """What the model reads as the result of an mcp_call item."""
    error = item.get("error")
    if error is None:
        return item.get("output") or ""
    if isinstance(error, str):
        return f"Error: {error}"
    if error.get("type") == "mcp_tool_execution_error":
        texts = [c.get("text", "") for c in error.get("content") or [] if isinstance(c, dict)]
        return "Error: " + "\n".join(texts)
    return f"Error ({error.get('type')} {error.get('code')}): {error.get('message')}"


def _mcp_exchange(item: dict[str, Any], answers: dict[str, dict[str, Any]],
                  mcp_name: Callable[[str, str], str]) -> Optional[tuple[dict[str, Any], str]]:
    """(tool call, result text) the model sees for an MCP item, or None for none."""
    if item["type"] == "mcp_call" and item.get("status") != "in_progress":
        result = mcp_result_text(item)
    elif item["type"] == "mcp_approval_request" and item["id"] in answers and not answers[item["id"]]["approve"]:
        reason = answers[item["id"]].get("reason")
        result = "The user refused this tool call; it was not run." + (f" Reason: {reason}" if reason else "")
    else:
        return None
    call = {"call_id": item["id"], "name": mcp_name(item["server_label"], item["name"]),
            "arguments": item.get("arguments", "")}
    return call, result


def messages_from_items(items: Iterable[dict[str, Any]],
                        mcp_name: Callable[[str, str], str] = function_name) -> list[dict[str, Any]]:
    """Normalized messages for a sequence of conversation items (``mcp_name`` names MCP tools).

    Consecutive MCP exchanges become one assistant message with all their calls, then their
    results, as the model made them (in parallel).
    """
    items = list(items)
    answers = {i["approval_request_id"]: i for i in items if i["type"] == "mcp_approval_response"}
    messages: list[dict[str, Any]] = []
    results: list[dict[str, Any]] = []  # results of the MCP calls just added, sent after them
    for item in items:
        kind = item["type"]
        exchange = _mcp_exchange(item, answers, mcp_name) if kind.startswith("mcp_") else None
        if exchange is not None:
            _tool_call(messages, exchange[0])
            results.append(_tool_result(exchange[0]["call_id"], exchange[1]))
            continue
        if kind.startswith("mcp_"):
            continue
        messages.extend(results)
        results = []
        if kind == "message":
            messages.append({"role": item["role"], "content": item["content"]})
        elif kind == "function_call":
            _tool_call(messages, {"call_id": item["call_id"], "name": item["name"],
                                  "arguments": item.get("arguments", "")})
        elif kind == "function_call_output":
            messages.append(_tool_result(item["call_id"], item["output"]))
    return messages + results


def check_call_outputs(context: list[dict[str, Any]], input_items: list[dict[str, Any]]) -> None:
    """Every ``function_call_output`` must answer a ``function_call`` of the conversation (else 400)."""
    call_ids = {item["call_id"] for item in context if item["type"] == "function_call"}
    for i, item in enumerate(input_items):
        if item["type"] == "function_call":
            call_ids.add(item["call_id"])
        elif item["type"] == "function_call_output" and item["call_id"] not in call_ids:
            raise invalid(f"No tool call found for function call output with call_id {item['call_id']!r}.",
                          f"input[{i}].call_id", "invalid_value")


def model_call(request: CreateRequest, upstream_model: str, context: list[dict[str, Any]],
               output: Sequence[dict[str, Any]] = (), mcp_tools: Sequence[dict[str, Any]] = (),
               mcp_name: Callable[[str, str], str] = function_name, tool_choice: Optional[Any] = None) -> ModelCall:
    """The normalized provider call for a validated request in its conversation.

    ``output``: the items this response produced so far (later turns of an MCP loop);
    ``mcp_tools``: MCP tools offered as function definitions; ``tool_choice`` overrides the
    request's (normalized for providers).
    """
    return ModelCall(
        model=upstream_model,
        messages=messages_from_items([*context, *request.input_items, *output], mcp_name),
        instructions=request.instructions,
        temperature=request.temperature,
        top_p=request.top_p,
        max_output_tokens=request.max_output_tokens,
        text_format=request.text_format,
        tools=[{k: t[k] for k in ("name", "description", "parameters", "strict")}
               for t in request.tools if t["type"] == "function"] + list(mcp_tools),
        tool_choice=request.tool_choice if tool_choice is None else tool_choice,
        parallel_tool_calls=request.parallel_tool_calls,
        stop=request.stop,
        presence_penalty=request.presence_penalty,
        frequency_penalty=request.frequency_penalty,
    )

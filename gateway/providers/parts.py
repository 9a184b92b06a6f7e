"""Small conversions the native (non-OpenAI) adapters share: system text, data URLs, tool args.

Pure functions over the normalized message formats of base.py; nothing here does I/O, so
there is nothing to cancel. A request the upstream cannot express (a ``file_id`` part, tool
arguments that are not a JSON object) raises ProviderError before any upstream call.
"""

from __future__ import annotations

import mimetypes
from typing import Any, Optional

import orjson

from gateway.providers.base import ModelCall, ProviderError

TEXT_PART_TYPES = ("input_text", "output_text", "text")


def parse_data_url(url: str) -> Optional[tuple[str, str]]:
    """``(media_type, base64 data)`` of a base64 ``data:`` URL, or None for any other URL."""
    if not url.startswith("data:"):
        return None
    head, sep, data = url[5:].partition(",")
    if not sep or not head.endswith(";base64"):
        raise ProviderError("only base64 data URLs are supported in image and file inputs")
    return head[: -len(";base64")].split(";")[0] or "application/octet-stream", data


def guess_media_type(name: Optional[str], default: str) -> str:
    """The media type a file name or URL suggests, else ``default``."""
    guessed = mimetypes.guess_type(name or "")[0]
    return guessed or default


def file_source(part: dict[str, Any]) -> tuple[str, str, str]:
    """``("base64", media_type, data)`` or ``("url", media_type, url)`` for an ``input_file`` part."""
    if part.get("file_data"):
        parsed = parse_data_url(part["file_data"])
        if parsed is not None:
            return "base64", parsed[0], parsed[1]
        return "base64", guess_media_type(part.get("filename"), "application/pdf"), part["file_data"]
    if part.get("file_url"):
        url = part["file_url"]
        return "url", guess_media_type(part.get("filename") or url, "application/pdf"), url
    raise ProviderError("file_id inputs are not supported by this provider; send file_data or file_url")


def text_of(parts: list[dict[str, Any]]) -> str:
    """The text parts of a content list, concatenated."""
    return "".join(p.get("text", "") for p in parts if p.get("type") in TEXT_PART_TYPES)


def json_format_instruction(text_format: Optional[dict[str, Any]]) -> Optional[str]:
    """A system-prompt sentence asking for JSON output, for providers without a native switch."""
    if not text_format or text_format.get("type") == "text":
        return None
    if text_format.get("type") == "json_schema":
        schema = orjson.dumps(text_format.get("schema") or {}).decode()
        return ("Respond only with a single JSON value that conforms to this JSON Schema, "
                f"without code fences or any other text: {schema}")
    return "Respond only with a single valid JSON object, without code fences or any other text."


def system_text(call: ModelCall, extra: Optional[str] = None) -> Optional[str]:
    """``instructions``, then every system/developer message, then ``extra``, one paragraph each."""
    pieces = [call.instructions] if call.instructions else []
    for message in call.messages:
        if message["role"] in ("system", "developer"):
            text = text_of(message["content"])
            if text:
                pieces.append(text)
    if extra:
        pieces.append(extra)
    return "\n\n".join(pieces) if pieces else None


def arguments_object(arguments: str, call_id: str) -> dict[str, Any]:
    """A tool call's JSON arguments as an object ("" counts as {}); anything else is an error."""
    if not arguments or not arguments.strip():
        return {}
    try:
        value = orjson.loads(arguments)
    except orjson.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise ProviderError(f"the arguments of tool call {call_id!r} are not a JSON object")
    return value

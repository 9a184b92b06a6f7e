"""Upstream provider adapters behind one normalized interface (see base.py)."""

from __future__ import annotations

import importlib
from typing import Optional

import httpx2

from gateway.config import ProviderConfig
from gateway.providers.base import (
    Finish,
    ModelCall,
    Provider,
    ProviderError,
    TextChunk,
    ToolCallArguments,
    ToolCallStart,
    UsageReport,
)
from gateway.providers.demo import DemoProvider

# kind -> (module, class); each class is constructed as Cls(config, http_client)
ADAPTERS = {
    "openai-chat": ("gateway.providers.openai_chat", "OpenAIChatProvider"),
    "openai-responses": ("gateway.providers.openai_responses", "OpenAIResponsesProvider"),
    "anthropic": ("gateway.providers.anthropic", "AnthropicProvider"),
    "gemini": ("gateway.providers.gemini", "GeminiProvider"),
}


def make_provider(config: ProviderConfig, http_client: Optional[httpx2.AsyncClient] = None) -> Provider:
    """The adapter for one configured provider, sharing the one ``http_client``."""
    if config.kind == "demo":
        return DemoProvider(delay_ms=config.delay_ms)
    module_name, class_name = ADAPTERS[config.kind]
    if http_client is None:
        raise ValueError(f"provider {config.name!r} ({config.kind}) needs an HTTP client")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls(config, http_client)


__all__ = [
    "DemoProvider",
    "Finish",
    "ModelCall",
    "Provider",
    "ProviderError",
    "TextChunk",
    "ToolCallArguments",
    "ToolCallStart",
    "UsageReport",
    "make_provider",
]

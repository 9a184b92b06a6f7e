"""Upstream provider adapters behind one normalized interface (see base.py)."""

from gateway.config import ProviderConfig
from gateway.providers.base import Finish, ModelCall, Provider, ProviderError, TextChunk, UsageReport
from gateway.providers.demo import DemoProvider


def make_provider(config: ProviderConfig, http_client=None) -> Provider:
    """The adapter for one configured provider."""
    if config.kind == "demo":
        return DemoProvider(delay_ms=config.delay_ms)
    raise ValueError(f"provider kind {config.kind!r} is not available in this build")


__all__ = ["DemoProvider", "Finish", "ModelCall", "Provider", "ProviderError", "TextChunk", "UsageReport", "make_provider"]

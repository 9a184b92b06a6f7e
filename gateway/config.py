"""Gateway configuration: built-in defaults, optionally replaced by a TOML file (CONTRACT).

The built-in configuration lists the offline ``demo`` provider and its models, so the
gateway starts with no file and no keys. A model is usable when its provider is: a demo
provider always, others when their key variable is set (or no key is needed).
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Optional

import attrs
import cattrs
import httpx2

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_DATA_DIR = ".assistiv"
PROVIDER_KINDS = ("demo", "openai-chat", "openai-responses", "anthropic", "gemini")


@attrs.frozen
class ProviderConfig:
    name: str
    kind: str = attrs.field(validator=attrs.validators.in_(PROVIDER_KINDS))
    base_url: Optional[str] = None
    api_key_env: Optional[str] = None
    delay_ms: int = 0  # demo only: pause before each delta (for tests of slow streams)
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 300.0  # longest silence between two upstream chunks (a slow first token is normal)

    def timeout(self) -> httpx2.Timeout:
        """Per-request timeouts for this provider's calls (pass as ``timeout=`` to httpx)."""
        return httpx2.Timeout(connect=self.connect_timeout_s, read=self.read_timeout_s, write=30.0, pool=10.0)

    def api_key(self) -> Optional[str]:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    @property
    def usable(self) -> bool:
        return self.kind == "demo" or not self.api_key_env or bool(self.api_key())


@attrs.frozen
class ModelConfig:
    id: str
    provider: str
    upstream_model: Optional[str] = None
    owned_by: str = "assistiv"
    input_usd_per_mtok: str = "0"
    output_usd_per_mtok: str = "0"
    cached_input_usd_per_mtok: Optional[str] = None
    min_output_tokens: Optional[int] = None
    reserve_output_tokens: int = 4096  # output tokens reserved when a request sets no max_output_tokens

    def prices(self) -> dict[str, str]:
        """This model's prices as recorded in a price table (decimal strings, USD per million tokens)."""
        table = {"input": self.input_usd_per_mtok, "output": self.output_usd_per_mtok}
        if self.cached_input_usd_per_mtok is not None:
            table["cached_input"] = self.cached_input_usd_per_mtok
        return table


@attrs.frozen
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    body_bytes_max: int = 4 * 1024 * 1024  # request bodies above this get 413
    graceful_timeout_s: float = 10.0  # how long in-flight streams may run on after SIGTERM


@attrs.frozen
class BillingConfig:
    enabled: bool = True  # false: no pre-flight money checks, holds or charges (benchmarks, private use)
    hold_usd_max: str = "25"  # one request never reserves more than this


@attrs.frozen
class McpConfig:
    """Hosted MCP tools: where servers may live, and the limits of one response's tool loop."""

    # Where MCP servers may live besides public https URLs: origins (scheme://host[:port]; no
    # port = any port). An allowlisted origin may be http and may resolve to private addresses.
    url_allowlist: tuple[str, ...] = ()
    mcp_calls_max: int = 20  # MCP tool calls one response may run (ceiling over max_tool_calls)
    servers_max: int = 8  # MCP servers (tools of type mcp) in one request
    tools_per_server_max: int = 64  # tools of one server offered to the model; more are left out
    call_timeout_s: float = 60.0  # one MCP request (connect + list, or one tool call)
    time_budget_s: float = 300.0  # all MCP work of one response, from its start
    output_chars_max: int = 50_000  # tool output fed back to the model (and recorded); the rest is cut
    free_calls_per_month: int = 1_000  # MCP calls per platform per UTC calendar month at no charge
    price_per_call_usd: str = "0.001"  # each MCP call after the free tier


@attrs.frozen
class LedgerConfig:
    """Where the ledger lives, and what start-up does with what a killed process left behind.

    ``recover_in_flight`` (default on): at start-up, after the projections caught up and
    before serving, every response or chat completion that is accepted but not finished is
    ended as failed (``gateway_restarted``), billed for the output it recorded and its holds
    released (gateway/recovery.py): with one gateway per ledger, nothing unfinished at start
    can still be running. Turn it off for replicas that share one store (DESIGN, Scale-out):
    there another replica's live requests are unfinished too, and recovering them would end
    streams that are still running and release holds still in use. Such a deployment needs
    an owner per request (which replica, and whether it is alive) before it can recover.
    """

    url: Optional[str] = None
    recover_in_flight: bool = True


@attrs.frozen
class Config:
    server: ServerConfig = ServerConfig()
    ledger: LedgerConfig = LedgerConfig()
    billing: BillingConfig = BillingConfig()
    mcp: McpConfig = McpConfig()
    providers: tuple[ProviderConfig, ...] = ()
    models: tuple[ModelConfig, ...] = ()

    def provider(self, name: str) -> ProviderConfig:
        for provider in self.providers:
            if provider.name == name:
                return provider
        raise KeyError(name)

    def usable_models(self) -> list[ModelConfig]:
        usable = {p.name for p in self.providers if p.usable}
        return [m for m in self.models if m.provider in usable]

    def model(self, model_id: str) -> Optional[ModelConfig]:
        for model in self.usable_models():
            if model.id == model_id:
                return model
        return None


BUILTIN_PROVIDERS = (
    ProviderConfig(name="demo", kind="demo"),
    ProviderConfig(name="demo-slow", kind="demo", delay_ms=50),
    ProviderConfig(name="openai", kind="openai-responses", base_url="https://api.openai.com/v1",
                   api_key_env="OPENAI_API_KEY"),
    ProviderConfig(name="anthropic", kind="anthropic", base_url="https://api.anthropic.com",
                   api_key_env="ANTHROPIC_API_KEY"),
    ProviderConfig(name="gemini", kind="gemini", base_url="https://generativelanguage.googleapis.com",
                   api_key_env="GEMINI_API_KEY"),
)
# Public list prices (USD per million tokens) as of 2026; listed only when the key variable is set.
BUILTIN_MODELS = (
    ModelConfig(id="demo", provider="demo", owned_by="assistiv"),
    ModelConfig(id="demo-slow", provider="demo-slow", owned_by="assistiv"),
    ModelConfig(id="gpt-4o", provider="openai", upstream_model="gpt-4o", owned_by="openai",
                input_usd_per_mtok="2.50", output_usd_per_mtok="10.00", cached_input_usd_per_mtok="1.25"),
    ModelConfig(id="gpt-5", provider="openai", upstream_model="gpt-5", owned_by="openai",
                input_usd_per_mtok="1.25", output_usd_per_mtok="10.00", cached_input_usd_per_mtok="0.125",
                min_output_tokens=16),
    ModelConfig(id="claude-3-5-sonnet", provider="anthropic", upstream_model="claude-3-5-sonnet-latest",
                owned_by="anthropic", input_usd_per_mtok="3.00", output_usd_per_mtok="15.00",
                cached_input_usd_per_mtok="0.30"),
    ModelConfig(id="gemini-pro", provider="gemini", upstream_model="gemini-2.5-pro", owned_by="google",
                input_usd_per_mtok="1.25", output_usd_per_mtok="10.00", cached_input_usd_per_mtok="0.31"),
)

_converter = cattrs.Converter(forbid_extra_keys=True)


def load_config(path: Optional[str | Path] = None) -> Config:
    """The built-in configuration, or the TOML file at ``path`` (its lists replace the built-in ones)."""
    if path is None:
        return Config(providers=BUILTIN_PROVIDERS, models=BUILTIN_MODELS)
    with open(path, "rb") as f:
        raw = tomllib.load(f)
    try:
        config = _converter.structure(raw, Config)
    except cattrs.BaseValidationError as exc:
        raise ValueError(f"invalid config {path}: " + "; ".join(cattrs.transform_error(exc))) from exc
    if not config.providers:
        config = attrs.evolve(config, providers=BUILTIN_PROVIDERS, models=BUILTIN_MODELS + config.models)
    names = {p.name for p in config.providers}
    for model in config.models:
        if model.provider not in names:
            raise ValueError(f"invalid config {path}: model {model.id!r} names unknown provider {model.provider!r}")
    return config

"""Everything a request handler needs, built once at start-up and shared."""

from __future__ import annotations

from typing import Optional

import attrs
import httpx

from gateway.config import Config
from gateway.inflight import InFlight
from gateway.providers import Provider, make_provider
from ledger.store import EventStore
from projections.responses import ResponsesProjection
from projections.runner import ProjectionRunner
from projections.tenancy import TenancyProjection


@attrs.define
class Services:
    config: Config
    store: EventStore
    runner: ProjectionRunner
    responses: ResponsesProjection
    tenancy: TenancyProjection
    providers: dict[str, Provider]
    http_client: Optional[httpx.AsyncClient] = None
    inflight: InFlight = attrs.Factory(InFlight)


def build_services(config: Config, store: EventStore, http_client: Optional[httpx.AsyncClient] = None) -> Services:
    """Projections, their runner and the provider adapters over one store."""
    responses = ResponsesProjection()
    tenancy = TenancyProjection()
    runner = ProjectionRunner(store, [tenancy, responses])
    providers = {p.name: make_provider(p, http_client) for p in config.providers if p.usable}
    return Services(config, store, runner, responses, tenancy, providers, http_client)

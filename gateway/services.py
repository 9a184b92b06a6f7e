"""Everything a request handler needs, built once at start-up and shared."""

from __future__ import annotations

import time
from typing import Callable, Optional

import attrs
import httpx2
import trio

from gateway.billing.book import Book
from gateway.config import Config
from gateway.inflight import InFlight
from gateway.providers import Provider, make_provider
from ledger.errors import ConcurrencyConflict
from ledger.events import PricesPublished
from ledger.store import EventStore, NewEvent
from projections.catalog import build_all
from projections.money import MoneyProjection
from projections.pricing import CALCULATOR_VERSION, PRICES_STREAM, PricesProjection, table_sha256
from projections.rates import RatesProjection
from projections.responses import ResponsesProjection
from projections.runner import ProjectionRunner
from projections.tenancy import TenancyProjection
from projections.usage import UsageProjection


@attrs.define
class Services:
    config: Config
    store: EventStore
    runner: ProjectionRunner
    responses: ResponsesProjection
    tenancy: TenancyProjection
    money: MoneyProjection
    prices: PricesProjection
    rates: RatesProjection
    usage: UsageProjection
    book: Book
    providers: dict[str, Provider]
    http_client: Optional[httpx2.AsyncClient] = None
    inflight: InFlight = attrs.Factory(InFlight)
    background: Optional[trio.Nursery] = None  # where streamed runs read ahead (gateway/read_ahead.py); set by serve


def build_services(config: Config, store: EventStore, http_client: Optional[httpx2.AsyncClient] = None,
                   clock: Callable[[], float] = time.time) -> Services:
    """Projections, their runner, the book and the provider adapters over one store."""
    projections = build_all()
    responses, tenancy, money = projections["responses"], projections["tenancy"], projections["money"]
    prices, rates = projections["prices"], projections["rates"]
    runner = ProjectionRunner(store, list(projections.values()))
    book = Book(store, money, tenancy, prices, rates, clock)  # subscribes after the runner: sees applied state
    providers = {p.name: make_provider(p, http_client) for p in config.providers if p.usable}
    return Services(config, store, runner, responses, tenancy, money, prices, rates, projections["usage"], book,
                    providers, http_client)


async def publish_prices(services: Services) -> Optional[PricesPublished]:
    """Record the configured prices as a new price-table version if they differ from the latest.

    Returns the new version, or None when the ledger already has these prices.
    """
    models = {model.id: model.prices() for model in services.config.models}
    digest = table_sha256(models)
    for _ in range(3):
        latest = services.prices.latest
        if latest is not None and latest.sha256 == digest:
            return None
        version = PricesPublished(f"prices_{len(services.prices.versions) + 1}_{digest[:12]}", digest,
                                  CALCULATOR_VERSION, models)
        try:
            records = await services.store.append(
                [NewEvent(PRICES_STREAM, version, version.version_id, len(services.prices.versions))])
        except ConcurrencyConflict:  # another process published at the same moment
            await services.runner.catch_up()
            continue
        await services.runner.wait_for(records[-1].position)
        return version
    return None

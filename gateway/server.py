"""``assistiv serve``: open the ledger, catch up the projections, serve HTTP until a signal.

Start-up: the store's writer and the projection runner start in one nursery; on an empty
ledger the ``default`` platform is created and its raw key printed once; requests a killed
process left in flight are finished and settled (gateway/recovery.py, unless ``[ledger]
recover_in_flight = false``) and ``gateway.started`` is recorded; hypercorn (trio worker)
then binds (port 0 = any free port; the bound address is printed).

Shutdown on SIGINT/SIGTERM: hypercorn stops accepting, in-flight streams get up to
``graceful_timeout_s`` to finish (a second signal stops that wait at once; a stream cut
then is recorded as a client that left), then the store's writer drains its queue and closes, the
head anchor (``<ledger>.head``, ledger/head_file.py: rewritten at most once a second while
the gateway appends) names the final head, and the process exits 0.
"""

from __future__ import annotations

import os
import signal
import sys
from functools import partial
from pathlib import Path

import httpx2
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from gateway.app import create_app
from gateway.config import Config
from gateway.platforms import create_platform
from gateway.recovery import recover_at_start
from gateway.services import build_services, publish_prices
from ledger.head_file import AnchorWriter, anchor_path, set_aside_if_broken
from ledger.sqlite import SQLiteStore, connect

HTTP_TIMEOUT = httpx2.Timeout(connect=5.0, read=300.0, write=30.0, pool=10.0)
KEEP_ALIVE_REQUESTS_MAX = 1_000_000  # hypercorn closes a keep-alive connection after 1,000 requests by default
HTTP_LIMITS = httpx2.Limits(max_connections=512, max_keepalive_connections=128)


def say(line: str) -> None:
    print(line, flush=True)


async def serve(config: Config, path: Path, host: str, port: int) -> None:
    """Run the gateway until SIGINT/SIGTERM."""
    store = SQLiteStore(path)
    check_conn = connect(path, readonly=True)
    try:
        rejected = set_aside_if_broken(path, check_conn)
    finally:
        check_conn.close()
    if rejected:
        say(f"WARNING: the ledger does not hold its head anchor: {rejected}")
    anchor = AnchorWriter(anchor_path(path))
    store.subscribe(anchor.observe)
    async with httpx2.AsyncClient(timeout=HTTP_TIMEOUT, limits=HTTP_LIMITS) as http_client:
        services = build_services(config, store, http_client)
        app = create_app(services)
        async with trio.open_nursery() as nursery:
            await nursery.start(store.run)
            await nursery.start(services.runner.run)
            await nursery.start(anchor.run)
            services.background = nursery
            await publish_prices(services)
            if not services.tenancy.platforms:
                created = await create_platform(store, "default", os.environ.get("ASSISTIV_BOOTSTRAP_PLATFORM_KEY"))
                say(f"Created platform 'default' ({created['platform_id']}).")
                say(f"Platform API key (shown once, store it now): {created['api_key']['raw_key']}")
            recovered = await recover_at_start(services)  # before serving: what a killed process left open
            if recovered:
                say(f"Recovered {len(recovered)} response(s) a stopped gateway left in flight (gateway_restarted).")
            stop, hurry = trio.Event(), trio.Event()
            nursery.start_soon(_stop_on_signals, stop, hurry)
            hconfig = HypercornConfig()
            hconfig.bind = [f"{host}:{port}"]
            hconfig.accesslog = None
            hconfig.errorlog = None
            hconfig.graceful_timeout = config.server.graceful_timeout_s
            hconfig.keep_alive_timeout = 75
            hconfig.keep_alive_max_requests = KEEP_ALIVE_REQUESTS_MAX
            async with trio.open_nursery() as http_nursery:
                binds = await http_nursery.start(partial(hypercorn_serve, app, hconfig, shutdown_trigger=stop.wait))
                say(f"Assistiv gateway listening on {binds[0]} (ledger: {path})")
                await stop.wait()
                with trio.move_on_after(config.server.graceful_timeout_s):
                    await _first_of(services.inflight.wait_idle, hurry.wait)
                http_nursery.cancel_scope.cancel()
            with trio.CancelScope(shield=True):
                await store.aclose()
            anchor.close()
            say("Assistiv gateway stopped; ledger closed.")
            nursery.cancel_scope.cancel()


async def _stop_on_signals(stop: trio.Event, hurry: trio.Event) -> None:
    """The first SIGINT/SIGTERM sets ``stop`` (graceful shutdown); a second one sets ``hurry``
    (stop waiting for in-flight streams). The receiver stays open until shutdown cancels this
    task, so a repeated signal never lands as a KeyboardInterrupt while the ledger closes."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            if stop.is_set():
                hurry.set()
            stop.set()


async def _first_of(*waits) -> None:
    """Return when the first of ``waits`` returns (the others are cancelled)."""
    async with trio.open_nursery() as nursery:
        async def one(wait) -> None:
            await wait()
            nursery.cancel_scope.cancel()

        for wait in waits:
            nursery.start_soon(one, wait)


def run_serve(config: Config, path: Path, host: str, port: int) -> int:
    try:
        trio.run(serve, config, path, host, port)
    except KeyboardInterrupt:
        return 130
    sys.stdout.flush()
    return 0

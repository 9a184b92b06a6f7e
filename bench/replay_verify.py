"""``replay verify`` throughput on a ledger of 1M+ events, and ``replay stream`` of a 10,000-delta response.

The ledger is made by the real gateway code paths, in process: gateway.services builds the
projections, their runner and the billing book over a SQLiteStore (group commit, WAL,
synchronous=FULL); platform settings, end users and budgets go through
gateway.tenancy_commands; every response is a gateway.pipeline.ResponseRun on the demo
provider with reserve-then-settle billing (gateway.routes.responses.run_billing), run by
many concurrent producers. Some responses are cut short (max_output_tokens), some lose
their client mid-stream, some have their upstream fail after output. One response streams
10,000 deltas from a custom provider. Then ``python -m replay verify`` and
``python -m replay stream`` run as subprocesses, as an auditor would run them.

    /tmp/venv/bin/python bench/replay_verify.py [--events 1000000] [--producers 64] [--keep DIR]

Generation takes a few minutes for 1M events; ``--keep DIR`` keeps (and reuses) the ledger.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from contextlib import aclosing
from pathlib import Path
from typing import AsyncIterator

import trio

from gateway.config import load_config
from gateway.pipeline import ResponseRun
from gateway.platforms import create_platform
from gateway.providers.base import Finish, ProviderError, TextChunk, UsageReport
from gateway.providers.demo import DemoProvider
from gateway.responses_request import parse_create_request
from gateway.routes.responses import run_billing
from gateway.services import build_services, publish_prices
from gateway.tenancy_commands import create_end_user, update_platform
from gateway.tenancy_input import EndUserCreate, PlatformPatch
from ledger.events import Usage, WalletCredited
from ledger.sqlite import connect, open_sqlite_store
from ledger.store import NewEvent
from projections.money import wallet_stream

ROOT = Path(__file__).resolve().parent.parent
CONFIG = """
[[providers]]
name = "demo"
kind = "demo"

[[models]]
id = "priced"
provider = "demo"
input_usd_per_mtok = "0.15"
output_usd_per_mtok = "0.60"
"""
END_USERS = 40
LONG_DELTAS = 10_000


class LongProvider:
    """Streams ``deltas`` one-word text deltas (a token each, as real models stream), then usage."""

    def __init__(self, deltas: int) -> None:
        self.deltas = deltas

    async def stream(self, call) -> AsyncIterator:
        for i in range(self.deltas):
            yield TextChunk(f" w{i}")
            if i % 16 == 15:
                await trio.sleep(0)  # let other producers in, as network reads would
        yield UsageReport(Usage(input_tokens=5, output_tokens=self.deltas))
        yield Finish("stop")


class DroppingProvider(DemoProvider):
    """The demo answer, but the upstream breaks after three deltas."""

    async def stream(self, call) -> AsyncIterator:
        sent = 0
        async for event in super().stream(call):
            if isinstance(event, TextChunk):
                if sent == 3:
                    raise ProviderError("upstream connection dropped")
                sent += 1
            yield event


async def run_one(services, provider, body: dict, pid: str, euid: str, stop_after: int = 0) -> str:
    """One billed response through ResponseRun; ``stop_after`` > 0 leaves after that many frames."""
    model = services.config.model("priced")
    request = parse_create_request(body)
    run = ResponseRun(services.store, provider, request, model_id="priced", provider_name="demo",
                      upstream_model="priced", platform_id=pid, end_user_id=euid)
    run.billing = run_billing(services, run, model)
    async with aclosing(run.frames()) as frames:
        n = 0
        async for _ in frames:
            n += 1
            if stop_after and n >= stop_after:
                break
    return run.response_id


async def generate(path: Path, events_target: int, producers: int, deltas: int = 0) -> dict:
    config_path = path.parent / "bench.toml"
    config_path.write_text(CONFIG)
    config = load_config(config_path)
    async with open_sqlite_store(path) as store:
        services = build_services(config, store)
        async with trio.open_nursery() as nursery:
            await nursery.start(services.runner.run)
            await publish_prices(services)
            created = await create_platform(store, "bench")
            pid = created["platform_id"]
            await services.runner.wait_for(await store.head())
            await update_platform(services, pid, PlatformPatch(default_budget_micros=1_000_000_000))
            await store.append([NewEvent(wallet_stream(pid), WalletCredited(pid, "txn_bench", "top_up",
                                                                            10_000_000_000_000))])
            users = [(await create_end_user(services, pid, EndUserCreate(f"user-{i}")))[0].end_user_id
                     for i in range(END_USERS)]
            await services.runner.wait_for(await store.head())
            long_id = await run_one(services, LongProvider(LONG_DELTAS), {"model": "priced", "input": "long",
                                                                          "stream": True}, pid, users[0])
            demo = LongProvider(deltas) if deltas else DemoProvider()
            dropping = DroppingProvider()
            counter = iter(range(10**12))
            started = time.perf_counter()

            async def producer(k: int) -> None:
                while await store.head() < events_target:
                    n = next(counter)
                    body = {"model": "priced", "input": f"request {n} from producer {k}", "stream": True}
                    if n % 50 == 7:
                        body["max_output_tokens"] = 4
                    provider = dropping if n % 97 == 5 else demo
                    await run_one(services, provider, body, pid, users[n % END_USERS],
                                  stop_after=3 if n % 89 == 3 else 0)

            async with trio.open_nursery() as workers:
                for k in range(producers):
                    workers.start_soon(producer, k)
            head = await store.head()
            seconds = time.perf_counter() - started
            nursery.cancel_scope.cancel()
    return {"head": head, "long_id": long_id, "generate_s": seconds}


def cpu_jiffies() -> int:
    """CPU time used on the whole machine so far, in clock ticks (/proc/stat), to see other load."""
    with open("/proc/stat") as f:
        fields = f.readline().split()[1:]
    return sum(int(x) for x in fields[:3] + fields[5:8])  # user nice system (skip idle, iowait) irq softirq steal


def timed(command: list[str]) -> dict:
    """Run ``command``: its wall seconds, its (and its workers') CPU seconds, other processes' CPU seconds."""
    before, machine = resource.getrusage(resource.RUSAGE_CHILDREN), cpu_jiffies()
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, cwd=ROOT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    others = (cpu_jiffies() - machine) / os.sysconf("SC_CLK_TCK") - cpu
    return {"wall": wall, "done": done, "cpu": cpu, "others": max(0.0, others)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--producers", type=int, default=64)
    parser.add_argument("--keep", help="directory to keep (and reuse) the ledger in")
    parser.add_argument("--deltas", type=int, default=0,
                        help="deltas per answer from a token-by-token provider (default: the demo model's "
                             "short answers, about 14 deltas)")
    parser.add_argument("--runs", type=int, default=3, help="verify runs per configuration (the best is kept)")
    args = parser.parse_args()
    workdir = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="replay-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "ledger.db"
    info_path = workdir / "long_response_id"
    if not path.exists():
        info = trio.run(generate, path, args.events, args.producers, args.deltas)
        info_path.write_text(info["long_id"])
        print(f"generated {info['head']:,} events in {info['generate_s']:.0f} s "
              f"({info['head'] / info['generate_s']:,.0f} events/s, {args.producers} producers)")
    long_id = info_path.read_text().strip()
    conn = connect(path, readonly=True)
    events = conn.execute("SELECT max(position) FROM events").fetchone()[0]
    responses = conn.execute("SELECT count(*) FROM events WHERE type = 'response.accepted'").fetchone()[0]
    deltas = conn.execute("SELECT count(*) FROM events WHERE type = 'response.text_delta'").fetchone()[0]
    conn.close()
    size_mb = os.path.getsize(path) / 1e6
    replay = [sys.executable, "-m", "replay", "--data-dir", str(workdir)]
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; "
          f"ledger {events:,} events ({deltas / events:.0%} text deltas), {responses:,} responses, {size_mb:.0f} MB")
    ok = True
    for label, extra in (("verify", []), ("verify --jobs 1", ["--jobs", "1"]), ("verify --render", ["--render"])):
        runs = [timed(replay + ["verify", *extra]) for _ in range(args.runs)]
        ok = ok and all(r["done"].returncode == 0 for r in runs)
        best = min(runs, key=lambda r: r["wall"])
        print(f"{label}: exit {best['done'].returncode}, best of {args.runs}: {best['wall']:.1f} s wall = "
              f"{events / best['wall']:,.0f} events/s; {best['cpu']:.1f} CPU-s in its processes "
              f"({events / best['cpu']:,.0f} events per CPU-second); other processes used {best['others']:.1f} "
              f"CPU-s meanwhile; all runs: {', '.join(format(r['wall'], '.1f') for r in runs)} s")
    if not ok:
        print(runs[-1]["done"].stdout.decode()[-3000:])
    streams = [timed(replay + ["stream", long_id]) for _ in range(5)]
    best = min(streams, key=lambda r: r["wall"])
    print(f"stream of the {LONG_DELTAS:,}-delta response: best of 5 {best['wall'] * 1000:.0f} ms wall (process start "
          f"included), {len(best['done'].stdout):,} bytes, exit {best['done'].returncode}")
    started = time.perf_counter()
    rendered = render_in_process(path, long_id)
    print(f"  rendering alone, in process (read, decode, render): {(time.perf_counter() - started) * 1000:.0f} ms, "
          f"{rendered:,} bytes")
    return 0 if ok else 1


def render_in_process(path: Path, response_id: str) -> int:
    from replay.explain import response_records
    from projections.wire import render_stream

    return len(render_stream(response_records(connect(path, readonly=True), response_id)))


if __name__ == "__main__":
    sys.exit(main())

"""Cost of loading a conversation's context for turn N (previous_response_id), vs. ledger size.

Drives the real code paths: responses are run by gateway.pipeline.ResponseRun on the demo
provider into a SQLite ledger (group commit, FULL sync), the responses projection follows
the store, and the measured step is what POST /v1/responses does per turn: find the
parent, check no turn of its chain was deleted (the route's own check), walk the chain
(ResponsesProjection.context_items) and build the provider call
(gateway.conversation.model_call). Measured for N = 1, 10, 100 with 0 and with ~100k
unrelated events in the ledger.

    .venv/bin/python bench/context_load.py [--unrelated-events 100000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import types
from contextlib import aclosing
from pathlib import Path

import trio

from gateway.conversation import model_call
from gateway.providers.demo import DemoProvider
from gateway.pipeline import ResponseRun
from gateway.responses_request import parse_create_request
from gateway.routes.responses import _check_no_deleted_turn
from ledger.sqlite import open_sqlite_store
from projections.responses import ResponsesProjection
from projections.runner import ProjectionRunner

TURNS = (1, 10, 100)
REPEATS = 2000  # context loads timed per measurement


async def run_turn(store, body: dict, context: list, previous: str | None) -> str:
    request = parse_create_request(body)
    params = request.echoed_params()
    params["previous_response_id"] = previous
    run = ResponseRun(store, DemoProvider(), request, model_id="demo", provider_name="demo", upstream_model="demo",
                      platform_id="plat_bench", context=context, params=params)
    async with aclosing(run.frames()) as frames:
        async for _ in frames:
            pass
    return run.response_id


async def build(path: Path, unrelated_events: int) -> tuple[ResponsesProjection, dict[int, str], int]:
    async with open_sqlite_store(path) as store:
        responses = ResponsesProjection()
        runner = ProjectionRunner(store, [responses])
        await runner.catch_up()

        async def filler(worker: int, count: int) -> None:
            for i in range(count):
                await run_turn(store, {"model": "demo", "input": f"unrelated {worker}.{i}"}, [], None)

        per_response = 14  # events one short demo response records (accepted, item, deltas, item done, finish)
        responses_needed = unrelated_events // per_response
        async with trio.open_nursery() as nursery:
            for worker in range(50):
                nursery.start_soon(filler, worker, responses_needed // 50)
        turns: dict[int, str] = {}
        previous = None
        for n in range(1, max(TURNS) + 1):
            context = responses.context_items(responses.views[previous]) if previous else []
            previous = await run_turn(store, {"model": "demo", "input": f"turn {n}"}, context, previous)
            turns[n] = previous
        head = await store.head()
    return responses, turns, head


def measure(responses: ResponsesProjection, response_id: str) -> float:
    request = parse_create_request({"model": "demo", "input": "next turn", "previous_response_id": response_id})
    route_services = types.SimpleNamespace(responses=responses)  # all the route's check reads
    samples = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        parent = responses.get(response_id, "plat_bench")
        _check_no_deleted_turn(route_services, parent, "previous_response_id")
        context = responses.context_items(parent)
        model_call(request, "demo", context)
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--unrelated-events", type=int, default=100_000)
    args = parser.parse_args()
    rows = []
    for unrelated in (0, args.unrelated_events):
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            responses, turns, head = trio.run(build, Path(tmp) / "ledger.db", unrelated)
            built_s = time.perf_counter() - started
            for n in TURNS:
                rows.append((head, n, measure(responses, turns[n]), built_s))
    print(f"python {sys.version.split()[0]}; median of {REPEATS} loads per row\n")
    print("| ledger events | turn N | context load p50 (ms) |")
    print("|---|---|---|")
    for head, n, ms, _ in rows:
        print(f"| {head:,} | {n} | {ms:.3f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

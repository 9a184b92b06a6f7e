"""Acknowledged appends per second through SQLiteStore's group-commit writer.

    python bench/ledger_appends.py [--producers 1,10,100,1000] [--runs 3] [--dir DIR]
    python bench/ledger_appends.py --profile 100     # cProfile of the trio thread at 100 producers

N producers each append one event at a time and await its acknowledgement (the append is
durable: WAL, synchronous=FULL, COMMIT done) before the next, with event ids derived as
``f"{producer}.{n}"`` like the gateway derives them. Next to each row, the same rows
(precomputed: positions, versions, hashes, JSON) go to SQLite with raw ``executemany``
in ``BEGIN IMMEDIATE ... COMMIT`` batches of the size the store's writer actually formed
(its events per commit), same schema, same pragmas, in the same run: the ratio says what
the Python side (queue, sequencing, hashing, wake-ups) costs on top of SQLite itself.
Each row runs ``--runs`` times on a fresh file; the median is reported.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import platform
import pstats
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

import trio

from ledger.chain import GENESIS_HASH
from ledger.events import TextDelta
from ledger.group_commit import GroupCommitter
from ledger.sequencer import Sequencer
from ledger.sqlite import SQLiteStore, connect, create_schema
from ledger.store import NewEvent
from ledger.writer_thread import WriterThread

EVENTS = {1: 4_000, 10: 20_000, 100: 20_000, 1000: 20_000}  # per row, per run
DELTA = "Hello there, how are"  # 20 characters, a typical streamed text delta
TARGETS = {100: 25_000, 1000: 40_000}  # ack'd events/s


def machine_info() -> dict[str, str]:
    model = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "nproc": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "cpu": model,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "trio": trio.__version__,
        "platform": platform.platform(),
    }


def cpu_times() -> list[int]:
    """The aggregate ``cpu`` line of /proc/stat (user nice system idle iowait irq softirq steal ...)."""
    try:
        return [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return []


def steal_percent(before: list[int], after: list[int]) -> str:
    """Share of CPU time the hypervisor took (steal) between two cpu_times() samples."""
    if len(before) < 8 or len(after) < 8:
        return "n/a"
    delta = [a - b for a, b in zip(after, before)]
    return f"{100 * delta[7] / max(1, sum(delta)):.1f}%"


def others_cpu_s(before: list[int], after: list[int], own_s: float) -> str:
    """Busy CPU seconds on the machine between two samples that were not this process's own."""
    if len(before) < 8 or len(after) < 8:
        return "n/a"
    delta = [a - b for a, b in zip(after, before)]
    busy_s = (sum(delta[:8]) - delta[3] - delta[4]) / os.sysconf("SC_CLK_TCK")  # minus idle, iowait
    return f"{max(0.0, busy_s - own_s):.1f} s"


def new_events(producers: int, events: int) -> list[list[NewEvent]]:
    per = events // producers
    return [
        [NewEvent(f"resp_{p}", TextDelta(f"resp_{p}", 0, DELTA), event_id=f"{p}.{n}") for n in range(per)]
        for p in range(producers)
    ]


async def store_run(path: Path, work: list[list[NewEvent]]) -> tuple[float, float, int]:
    """(ack'd events/s, events per commit, events) for one run of the store."""
    store = SQLiteStore(path)
    async with trio.open_nursery() as nursery:
        await nursery.start(store.run)

        async def producer(events: list[NewEvent]) -> None:
            for new in events:
                await store.append([new])

        start = time.perf_counter()
        async with trio.open_nursery() as producers:
            for events in work:
                producers.start_soon(producer, events)
        elapsed = time.perf_counter() - start
        stats = await store.statistics()
        await store.aclose()
    return stats["events"] / elapsed, stats["events_per_commit"], stats["events"]


def sequenced_rows(work: list[list[NewEvent]]) -> list[tuple]:
    """The rows the store would write for ``work`` (interleaved like concurrent producers)."""
    interleaved = [events[n] for n in range(len(work[0])) for events in work]
    seq = Sequencer(0, GENESIS_HASH, lambda stream: 0, {}, time.time_ns() // 1000)
    for new in interleaved:
        seq.place([new])
    return seq.rows


def raw_run(path: Path, rows: list[tuple], batch: int) -> float:
    """Events/s of raw executemany in BEGIN IMMEDIATE ... COMMIT batches of ``batch`` rows."""
    conn = connect(path)
    create_schema(conn)
    insert = "INSERT INTO events (position, stream, version, event_id, type, recorded_at, prev_hash, hash, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(insert, rows[i : i + batch])
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return len(rows) / elapsed


def fresh(directory: Path, name: str) -> Path:
    path = directory / name
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    return path


def bench(producer_counts: list[int], runs: int, directory: Path) -> list[dict]:
    results = []
    for producers in producer_counts:
        work = new_events(producers, EVENTS.get(producers, 20_000))
        rates, per_commit = [], []
        for r in range(runs):
            rate, epc, _ = trio.run(store_run, fresh(directory, f"store-{producers}-{r}.db"), work)
            rates.append(rate)
            per_commit.append(epc)
        batch = max(1, round(statistics.median(per_commit)))
        rows = sequenced_rows(work)
        raw = [raw_run(fresh(directory, f"raw-{producers}-{r}.db"), rows, batch) for r in range(runs)]
        row = {
            "producers": producers,
            "events": len(rows),
            "store": statistics.median(rates),
            "store_runs": rates,
            "events_per_commit": statistics.median(per_commit),
            "raw_batch": batch,
            "raw": statistics.median(raw),
            "raw_runs": raw,
        }
        results.append(row)
        print(
            f"  {producers:>5} producers: {row['store']:>9,.0f} ack'd ev/s "
            f"(runs {', '.join(f'{x:,.0f}' for x in rates)}), {row['events_per_commit']:.1f} ev/commit; "
            f"raw batch {batch}: {row['raw']:,.0f} ev/s",
            file=sys.stderr,
        )
    return results


def table(results: list[dict]) -> str:
    lines = [
        "| Producers | Events/run | Ack'd events/s (median of runs) | Events/commit | Raw executemany events/s (same batch) | Store / raw |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['producers']:,} | {r['events']:,} | {r['store']:,.0f} | {r['events_per_commit']:.1f} "
            f"| {r['raw']:,.0f} (batch {r['raw_batch']}) | {r['store'] / r['raw']:.2f} |"
        )
    return "\n".join(lines)


async def machinery_run(producers: int, events: int) -> float:
    """Appends/s through the GroupCommitter alone: a commit that does nothing in the writer thread."""
    thread = WriterThread("bench writer")
    thread.start()

    async def commit(batches: list) -> list:
        await thread.run_sync(lambda: None)
        return batches

    committer = GroupCommitter(commit, SQLiteStore.events_per_commit_max, SQLiteStore.append_queue_max)
    per = events // producers

    async def producer() -> None:
        for n in range(per):
            await committer.submit([n])

    async with trio.open_nursery() as nursery:
        await nursery.start(committer.run)
        start = time.perf_counter()
        async with trio.open_nursery() as producing:
            for _ in range(producers):
                producing.start_soon(producer)
        elapsed = time.perf_counter() - start
        await committer.aclose()
    await thread.stop()
    return per * producers / elapsed


def profile(producers: int, directory: Path) -> None:
    """Where the time goes: trio machinery alone, the phases of _commit_group, cProfile of the trio thread."""
    events_n = EVENTS.get(producers, 20_000)
    machinery = statistics.median(trio.run(machinery_run, producers, events_n) for _ in range(3))
    print(f"group-commit machinery alone (no-op commit in the writer thread): {1e6 / machinery:.1f} us per append")

    phases: dict[str, float] = {"_commit_group wall": 0.0, "_commit_group thread CPU": 0.0, "Sequencer.place": 0.0}
    sql: dict[str, float] = {}
    original_group, original_place = SQLiteStore._commit_group, Sequencer.place

    class TimedConnection:
        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def execute(self, sql_text: str, *args):
            start = time.perf_counter()
            try:
                return self.conn.execute(sql_text, *args)
            finally:
                key = sql_text.split()[0]
                sql[key] = sql.get(key, 0.0) + time.perf_counter() - start

        def executemany(self, sql_text: str, rows):
            start = time.perf_counter()
            try:
                return self.conn.executemany(sql_text, rows)
            finally:
                sql["executemany"] = sql.get("executemany", 0.0) + time.perf_counter() - start

        def close(self) -> None:
            self.conn.close()

    def timed_group(self, batches):
        if not isinstance(self._wconn, TimedConnection):
            self._wconn = TimedConnection(self._wconn)
        start, cpu = time.perf_counter(), time.thread_time()
        try:
            return original_group(self, batches)
        finally:
            phases["_commit_group wall"] += time.perf_counter() - start
            phases["_commit_group thread CPU"] += time.thread_time() - cpu

    def timed_place(self, batch):
        start = time.perf_counter()
        try:
            return original_place(self, batch)
        finally:
            phases["Sequencer.place"] += time.perf_counter() - start

    SQLiteStore._commit_group, Sequencer.place = timed_group, timed_place
    try:
        work = new_events(producers, events_n)
        start, cpu = time.perf_counter(), time.process_time()
        rate, epc, events = trio.run(store_run, fresh(directory, "phases.db"), work)
        wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    finally:
        SQLiteStore._commit_group, Sequencer.place = original_group, original_place
    print(f"{producers} producers, timed: {rate:,.0f} ev/s, {epc:.1f} ev/commit; per event: wall {wall / events * 1e6:.1f} us, process CPU {cpu / events * 1e6:.1f} us")
    for name, total in list(phases.items()) + [(f"SQL {k}", v) for k, v in sql.items()]:
        print(f"  {name:<28} {total / events * 1e6:6.1f} us per event")

    work, path = new_events(producers, events_n), fresh(directory, "profile.db")
    profiler = cProfile.Profile()
    profiler.enable()
    rate, epc, events = trio.run(store_run, path, work)
    profiler.disable()
    print(f"\ncProfile of the trio thread ({rate:,.0f} ev/s under the profiler):")
    pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--producers", default="1,10,100,1000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=None, help="where the database files go (default: a temp dir)")
    parser.add_argument("--profile", type=int, default=None, metavar="PRODUCERS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ledger-bench-", dir=args.dir) as tmp:
        directory = Path(tmp)
        if args.profile:
            profile(args.profile, directory)
            return
        info = machine_info()
        print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
        print(f"database dir: {directory}; load average at start: {os.getloadavg()[0]:.2f}")
        before, own_before = cpu_times(), time.process_time()
        results = bench([int(x) for x in args.producers.split(",")], args.runs, directory)
        after, own_s = cpu_times(), time.process_time() - own_before
        print(
            f"CPU steal during the run: {steal_percent(before, after)}; CPU time used by other processes "
            f"meanwhile: {others_cpu_s(before, after, own_s)} (this process: {own_s:.1f} s)"
        )
        print()
        print(table(results))
        print()
        for producers, target in TARGETS.items():
            for r in results:
                if r["producers"] == producers:
                    verdict = "met" if r["store"] >= target else "MISSED"
                    print(f"target >= {target:,} ack'd events/s at {producers} producers: {r['store']:,.0f} -> {verdict}")


if __name__ == "__main__":
    main()

"""Gateway overhead: latency and throughput through `assistiv serve` vs. the fast upstream itself.

Uses the shared side-by-side harness pieces in ../shared/bench (fast_upstream.py, loadgen.py):

  direct   loadgen -> fast upstream POST /v1/responses              (the upstream's own ceiling)
  gateway  loadgen -> assistiv POST /v1/responses -> openai-chat adapter -> fast upstream
           (streamed upstream call; every request, delta and terminal event durable in the
            SQLite ledger before its bytes are sent)

Phases: non-stream C=1 (sequential, --seq-requests requests), C=16 and C=64 (--duration s
each); stream C=16, 64 and 100. Pinning as in the shared harness: upstream and gateway on
CPU 0, the load generator on CPU 1. Prints a Markdown table with the added latency
(gateway minus direct at the same phase) and, for streams, durable deltas per second.

    .venv/bin/python bench/gateway_overhead.py [--duration 10] [--seq-requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED_BENCH = Path(os.environ.get("SHARED_BENCH", ROOT.parent / "shared" / "bench"))  # the side-by-side harness
DELTAS_PER_STREAM = 8  # the fast upstream streams 8 content deltas per answer
LONG_DELTAS_PER_STREAM = 256  # bench/long_upstream.py: the same server with answers of this many deltas


def start(cmd: list[str], log: Path, cpus: str, env: dict | None = None) -> subprocess.Popen:
    out = open(log, "wb")
    return subprocess.Popen(["taskset", "-c", cpus, *cmd], stdout=out, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})}, cwd=ROOT)


def wait_for(log: Path, pattern: str, timeout_s: float = 30) -> re.Match:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = re.search(pattern, log.read_text(errors="replace"))
        if match:
            return match
        time.sleep(0.05)
    raise RuntimeError(f"{pattern!r} not seen in {log}:\n{log.read_text(errors='replace')}")


def start_gateway(work: Path, name: str, port: str, config_head: str = "", prices: str = ""):
    """``assistiv serve`` on CPU 0 whose ``bench-model`` streams from the upstream on ``port``.

    Returns (process, base URL, platform key, log path); data in ``work/<name>-data``."""
    config = work / f"{name}.toml"
    config.write_text(
        f'{config_head}[[providers]]\nname = "fast"\nkind = "openai-chat"\nbase_url = "http://127.0.0.1:{port}/v1"\n\n'
        f'[[models]]\nid = "bench-model"\nprovider = "fast"\n{prices}')
    log = work / f"{name}.log"
    proc = start([sys.executable, "-m", "gateway", "serve", "--port", "0", "--data-dir", str(work / f"{name}-data"),
                  "--config", str(config)], log, "0")
    try:
        return proc, wait_for(log, r"listening on (http://\S+)").group(1), wait_for(log, r"(sk-plat_\S+)").group(1), log
    except RuntimeError:
        proc.kill()
        raise


def stop_and_verify(gateway: subprocess.Popen, work: Path, name: str) -> bool:
    """Stop the gateway gracefully, then check its ledger with ``replay verify``."""
    gateway.terminate()
    gateway.wait(30)
    return subprocess.run([sys.executable, "-m", "replay", "--data-dir", str(work / f"{name}-data"), "verify"],
                          capture_output=True, cwd=ROOT).returncode == 0


def cpu_s(pid: int) -> float:
    """User + system CPU seconds the process ``pid`` used so far (/proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loadgen(url: str, key: str, model: str, *args: str) -> dict:
    cmd = ["taskset", "-c", "1", sys.executable, str(SHARED_BENCH / "loadgen.py"), "--url", url, "--key", key,
           "--model", model, "--api", "responses", "--quiet", "--json", "/dev/stdout", *args]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"loadgen failed: {done.stderr}")
    return json.loads(lines[-1])


def phases(url: str, key: str, model: str, args) -> dict[str, dict]:
    results = {}
    loadgen(url, key, model, "-c", "8", "--duration", "2", "--warmup", "0", "--no-check")  # warm up
    results["ns-c1"] = loadgen(url, key, model, "-c", "1", "--requests", str(args.seq_requests),
                               "--warmup-requests", "100")
    for c in (16, 64):
        results[f"ns-c{c}"] = loadgen(url, key, model, "-c", str(c), "--duration", str(args.duration))
    for c in (16, 64, 100):
        results[f"st-c{c}"] = loadgen(url, key, model, "--mode", "stream", "-c", str(c),
                                      "--duration", str(args.duration))
    return results


def billing_cost(port: str, work: Path, args) -> None:
    """C=1 latency with billing on (priced model, end-user key with a budget, funded wallet) vs. off.

    Both gateways run side by side and are measured in alternating rounds (on, off, off, on,
    ...), so a drift of the host's speed - which moves C=1 latency by tens of percent within
    minutes here - falls on both; the result is the median of the rounds' paired differences."""
    import httpx

    gateways, targets, pids = [], {}, {}
    try:
        for billing in (True, False):
            gateway, url, key, log = start_gateway(
                work, f"billing-{billing}", port,
                config_head=f'[billing]\nenabled = {"true" if billing else "false"}\n\n',
                prices='input_usd_per_mtok = "2.50"\noutput_usd_per_mtok = "10.00"\n')
            gateways.append(gateway)
            pids[billing] = gateway.pid
            pid = wait_for(log, r"\((plat_\w+)\)").group(1)
            auth = {"Authorization": f"Bearer {key}"}
            httpx.post(f"{url}/v1/platforms/{pid}/wallet/topup", json={"amount": 1000}, headers=auth).raise_for_status()
            user = httpx.post(f"{url}/v1/platforms/{pid}/end-users", json={"external_id": "bench"}, headers=auth)
            user.raise_for_status()
            euid, eu_key = user.json()["id"], user.json()["api_key"]["raw_key"]
            httpx.post(f"{url}/v1/platforms/{pid}/end-users/{euid}/budget", json={"max_usd": 1000},
                       headers=auth).raise_for_status()
            loadgen(url, eu_key, "bench-model", "-c", "8", "--duration", "2", "--warmup", "0", "--no-check")
            targets[billing] = (url, eu_key)
        rounds = max(1, args.billing_rounds)
        per_round = max(50, args.seq_requests // rounds)
        p50s: dict[bool, list[float]] = {True: [], False: []}
        p99s: dict[bool, list[float]] = {True: [], False: []}
        cpu_ms: dict[bool, list[float]] = {True: [], False: []}  # the gateway's CPU per request
        for i in range(rounds):
            for billing in ((True, False) if i % 2 == 0 else (False, True)):
                url, key = targets[billing]
                before = cpu_s(pids[billing])
                latency = loadgen(url, key, "bench-model", "-c", "1", "--requests", str(per_round),
                                  "--warmup-requests", "50")["latency_ms"]
                cpu_ms[billing].append((cpu_s(pids[billing]) - before) * 1000 / (per_round + 50))
                p50s[billing].append(latency["p50"])
                p99s[billing].append(latency["p99"])
    finally:
        for gateway in gateways:
            gateway.terminate()
            gateway.wait(30)
    on, off = statistics.median(p50s[True]), statistics.median(p50s[False])
    added = statistics.median(a - b for a, b in zip(p50s[True], p50s[False]))
    print(f"\n{rounds} alternating rounds of {per_round} requests at C=1 per side")
    print("\n| billing | p50 ms (median of rounds) | p99 ms (median of rounds) |\n|---|---|---|")
    print(f"| on (auth + pre-flight + holds + settlement) | {on:.3f} | {statistics.median(p99s[True]):.3f} |")
    print(f"| off ([billing] enabled = false) | {off:.3f} | {statistics.median(p99s[False]):.3f} |")
    print(f"| added by billing (median of the paired round differences) | {added:+.3f} | |")
    cpu_added = statistics.median(a - b for a, b in zip(cpu_ms[True], cpu_ms[False]))
    print(f"gateway CPU per request: on {statistics.median(cpu_ms[True]):.3f} ms, off "
          f"{statistics.median(cpu_ms[False]):.3f} ms, added {cpu_added:+.3f} ms (median of paired rounds)")
    print("rounds (on/off p50 ms): " + ", ".join(f"{a:.2f}/{b:.2f}" for a, b in zip(p50s[True], p50s[False])))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--seq-requests", type=int, default=2000)
    parser.add_argument("--billing-only", action="store_true", help="only the billing on/off comparison")
    parser.add_argument("--billing-rounds", type=int, default=8, help="alternating on/off rounds of the billing phase")
    parser.add_argument("--long-duration", type=float, default=30.0,
                        help="seconds per long-stream phase (a stream of 256 deltas takes seconds at 100 streams, "
                             "and only streams that end inside the window count)")
    parser.add_argument("--long-clients", default="1,20,100", help="concurrent streams of the long-stream phases")
    parser.add_argument("--long-only", action="store_true",
                        help=f"only the {LONG_DELTAS_PER_STREAM}-delta stream phases")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="assistiv-bench-"))
    procs = []
    try:
        upstream = start([sys.executable, str(SHARED_BENCH / "fast_upstream.py"), "--port", "0"],
                         work / "upstream.log", "0")
        procs.append(upstream)
        port = wait_for(work / "upstream.log", r"READY (\d+)").group(1)
        if args.billing_only:
            billing_cost(port, work, args)
            return 0
        if args.long_only:
            long_streams(work, args)
            return 0
        gateway, url, key, _ = start_gateway(work, "gateway", port)
        procs.append(gateway)
        direct = phases(f"http://127.0.0.1:{port}", "x", "bench-model", args)
        ours = phases(url, key, "bench-model", args)
        report(direct, ours, stop_and_verify(gateway, work, "gateway"), args)
        long_streams(work, args)
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def long_streams(work: Path, args) -> None:
    """Durable deltas/s with answers of LONG_DELTAS_PER_STREAM deltas, where per-delta cost dominates."""
    upstream = start([sys.executable, str(ROOT / "bench" / "long_upstream.py"), "--deltas",
                      str(LONG_DELTAS_PER_STREAM), "--port", "0"], work / "long-upstream.log", "0",
                     env={"SHARED_BENCH": str(SHARED_BENCH)})
    gateway = None
    try:
        port = wait_for(work / "long-upstream.log", r"READY (\d+)").group(1)
        gateway, url, key, _ = start_gateway(work, "long", port)
        rows, windows = [], []
        for c in [int(n) for n in args.long_clients.split(",")]:
            phase = ["--mode", "stream", "-c", str(c), "--duration", str(args.long_duration), "--warmup", "5"]
            direct = loadgen(f"http://127.0.0.1:{port}", "x", "bench-model", *phase)
            started = time.time()
            ours = loadgen(url, key, "bench-model", *phase)
            # the measured window, well inside the phase (the load generator starts in about a second)
            margin = min(2.0, args.long_duration / 4)
            windows.append((started + 5 + margin, started + 5 + args.long_duration - margin / 2))
            rows.append((c, direct, ours))
        verified = stop_and_verify(gateway, work, "long")
        committed = ledger_delta_rates(work / "long-data" / "ledger.db", windows)
    finally:
        for proc in (gateway, upstream):
            if proc is not None and proc.poll() is None:
                proc.terminate()
                proc.wait(30)
    print(f"\nStreams of {LONG_DELTAS_PER_STREAM} deltas; ledger verified after the run: {verified}\n")
    print("| streams | direct deltas/s | gateway durable deltas/s (ledger) | ratio | gateway deltas/s (completed "
          "streams x 256) | direct TTFB p50 ms | gateway TTFB p50 ms | direct last byte p50 ms | "
          "gateway last byte p50 ms | gateway errors |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for (c, d, g), rate in zip(rows, committed):
        dd, gd = d["rps"] * LONG_DELTAS_PER_STREAM, g["rps"] * LONG_DELTAS_PER_STREAM
        print(f"| {c} | {dd:,.0f} | {rate:,.0f} | {rate / dd:.3f} | {gd:,.0f} | {d['ttfb_ms']['p50']:.1f} | "
              f"{g['ttfb_ms']['p50']:.1f} | {d['latency_ms']['p50']:.1f} | {g['latency_ms']['p50']:.1f} | "
              f"{g.get('errors', 0)} |")


def ledger_delta_rates(path: Path, windows: list[tuple[float, float]]) -> list[float]:
    """Text deltas committed per second in each (start, end) wall-clock window, counted in the ledger itself.

    Counting completed streams is coarse here: 100 streams of 256 deltas finish in waves of
    about 100 every few seconds, so a window holds a whole number of waves. Every delta is
    committed (with its ``recorded_at``) before it is sent, so the ledger counts them exactly."""
    import sqlite3

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        return [conn.execute("SELECT count(*) FROM events WHERE type = 'response.text_delta' AND recorded_at "
                             "BETWEEN ? AND ?", (int(t0 * 1e6), int(t1 * 1e6))).fetchone()[0] / (t1 - t0)
                for t0, t1 in windows]
    finally:
        conn.close()


def report(direct: dict, ours: dict, verified: bool, args) -> None:
    print(f"\nMachine: nproc={os.cpu_count()}, python {sys.version.split()[0]}; duration {args.duration}s per phase; "
          f"ledger verified after the run: {verified}\n")
    print("| phase | direct req/s | gateway req/s | direct p50 ms | gateway p50 ms | +p50 ms | direct p99 ms | "
          "gateway p99 ms | +p99 ms | gateway errors | durable deltas/s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for phase in direct:
        d, g = direct[phase], ours[phase]
        # latency_ms is the full response (non-stream) or time to the last byte (stream)
        d50, g50 = d["latency_ms"]["p50"], g["latency_ms"]["p50"]
        d99, g99 = d["latency_ms"]["p99"], g["latency_ms"]["p99"]
        deltas = f"{g['rps'] * DELTAS_PER_STREAM:,.0f}" if phase.startswith("st") else "-"
        print(f"| {phase} | {d['rps']:,.0f} | {g['rps']:,.0f} | {d50:.3f} | {g50:.3f} | {g50 - d50:+.3f} | "
              f"{d99:.3f} | {g99:.3f} | {g99 - d99:+.3f} | {g.get('errors', 0)} | {deltas} |")


if __name__ == "__main__":
    sys.exit(main())

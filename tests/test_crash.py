"""SIGKILL crash test: a writer killed at a random moment loses no acknowledged append,
never leaves half of one, and leaves a gap-free chain that the next writer continues.

tests/crash_child.py appends multi-event batches from 50 producers and logs each append's
event ids only after ``append`` returned. This test kills it with SIGKILL at a random
moment, TRIALS times on one database file (each child reopens a ledger killed before),
and after every kill checks what the file holds against what was acknowledged.
"""

from __future__ import annotations

import random
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import trio

from ledger.chain import ChainVerifier, verify_rows
from ledger.events import TextDelta
from ledger.sqlite import connect, iter_rows, open_sqlite_store
from ledger.store import NewEvent

CHILD = Path(__file__).with_name("crash_child.py")
REPO = CHILD.parent.parent
TRIALS = 20
KILL_DELAY_S = (0.05, 0.6)  # after the child's first acknowledged append
START_TIMEOUT_S = 15


def chain_row(row: tuple) -> tuple:
    position, stream, version, event_id, _type, recorded_at, prev_hash, hash_, data = row
    return (position, stream, version, event_id, recorded_at, prev_hash, hash_, data.encode())


def run_and_kill(db: Path, ackfile: Path, delay_s: float) -> None:
    """Start a child, wait until it has acknowledged an append, let it run ``delay_s``, SIGKILL it."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(db), str(ackfile)], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        ready, _, _ = select.select([proc.stdout], [], [], START_TIMEOUT_S)
        line = proc.stdout.readline() if ready else b""
        assert line == b"started\n", f"child did not start: {line!r} {proc.stderr.read() if proc.poll() is not None else ''}"
        time.sleep(delay_s)
        assert proc.poll() is None, f"child died before the kill: {proc.stderr.read().decode()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        assert proc.returncode == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        proc.stderr.close()


def acknowledged_ids(ackfile: Path) -> list[str]:
    """Event ids from complete lines of the ack file (a line is one ``write``: whole or absent)."""
    raw = ackfile.read_bytes()
    assert raw.endswith(b"\n"), "a torn ack line: the child's writes are not atomic"
    return raw.decode().split()


def test_sigkill_loses_no_acknowledged_append_and_never_half_of_one(tmp_path):
    """Killed at random moments, the ledger keeps every ack'd append, no partial append, one verifying chain."""
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    db = tmp_path / "ledger.db"
    verifier = ChainVerifier()  # checks the chain incrementally, trial after trial
    present: set[str] = set()
    acked_total = 0
    for trial in range(TRIALS):
        ackfile = tmp_path / f"acks-{trial}.txt"
        delay_s = rng.uniform(*KILL_DELAY_S)
        run_and_kill(db, ackfile, delay_s)
        context = f"seed {seed}, trial {trial}, killed {delay_s:.3f} s after the first ack"

        conn = connect(db)
        try:
            new_rows = list(iter_rows(conn, after=verifier.position))
        finally:
            conn.close()
        for row in new_rows:
            verifier.check(*chain_row(row))  # gap-free positions from 1, and the chain
        assert new_rows, context

        # No append is half visible: an append's events are all there, at consecutive positions.
        by_append: dict[str, list[tuple[int, int, int]]] = {}
        for position, _s, _v, event_id, *_ in new_rows:
            append_id, i, size = event_id.rsplit(".", 2)
            by_append.setdefault(append_id, []).append((position, int(i), int(size)))
        for append_id, parts in by_append.items():
            size = parts[0][2]
            assert [i for _, i, _ in parts] == list(range(size)), f"{context}: append {append_id} is partial: {parts}"
            assert [p for p, _, _ in parts] == list(range(parts[0][0], parts[0][0] + size)), context

        present.update(row[3] for row in new_rows)
        acked = acknowledged_ids(ackfile)
        assert acked, context
        missing = [i for i in acked if i not in present]
        assert not missing, f"{context}: {len(missing)} acknowledged events lost, e.g. {missing[:3]}"
        acked_total += len(acked)

    # Stream versions are gap-free too, and the whole file verifies from scratch.
    conn = connect(db)
    try:
        rows = [chain_row(r) for r in iter_rows(conn)]
    finally:
        conn.close()
    assert len(rows) == verifier.position == len(present)
    verify_rows(rows, expected_head_hash=verifier.hash)
    versions: dict[str, list[int]] = {}
    for _p, stream, version, *_ in rows:
        versions.setdefault(stream, []).append(version)
    assert all(v == list(range(1, len(v) + 1)) for v in versions.values())
    assert acked_total >= TRIALS
    unacked = len(present) - acked_total
    print(f"crash test: {TRIALS} kills, {len(rows)} events, {acked_total} acknowledged, {unacked} committed but unacked")

    async def reopen_and_append() -> None:
        async with open_sqlite_store(db) as store:
            assert await store.head() == len(rows)
            [record] = await store.append([NewEvent("after-crash", TextDelta("r", 0, "still here"))])
            assert (record.position, record.prev_hash) == (len(rows) + 1, verifier.hash)

    trio.run(reopen_and_append)
    conn = connect(db)
    try:
        verify_rows([chain_row(r) for r in iter_rows(conn)])
    finally:
        conn.close()

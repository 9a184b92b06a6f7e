"""The head anchor beside the ledger (ledger/head_file.py): written by the gateway, checked by ``replay verify``.

The writer is driven by a real SQLite store's commits; the start-up check by a real gateway
process restarted on a ledger whose tail was cut while it was stopped.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import trio

from ledger.events import TextDelta
from ledger.head_file import AnchorWriter, anchor_path, read_anchor, rejected_paths
from ledger.sqlite import open_sqlite_store
from ledger.store import NewEvent
from tests.conftest import start_gateway
from tests.replay_ledger import replay


def head_row(path: Path) -> tuple[int, str]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT position, hash FROM events ORDER BY position DESC LIMIT 1").fetchone()
    finally:
        conn.close()


async def test_anchor_follows_commits_at_most_once_per_interval(tmp_path):
    """The first commit is anchored at once, later ones wait out the interval, and close names the last."""
    path = tmp_path / "ledger.db"
    writer = AnchorWriter(anchor_path(path))
    async with open_sqlite_store(path) as store:
        store.subscribe(writer.observe)
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            [first] = await store.append([NewEvent("s", TextDelta("r", 0, "a"))])
            with trio.fail_after(5):
                while read_anchor(writer.path) is None:
                    await trio.sleep(0.01)
            assert (read_anchor(writer.path).position, read_anchor(writer.path).hash) == (1, first.hash)
            await store.append([NewEvent("s", TextDelta("r", i, "b")) for i in range(1, 4)])
            await trio.sleep(0.2)
            assert read_anchor(writer.path).position == 1  # still within its 1 s interval: not rewritten
            with trio.fail_after(5):
                while read_anchor(writer.path).position != 4:
                    await trio.sleep(0.05)
            await store.append([NewEvent("s", TextDelta("r", 4, "c"))])
            nursery.cancel_scope.cancel()
    assert read_anchor(writer.path).position == 4  # the last commit came within the interval
    writer.close()
    anchor = read_anchor(writer.path)
    assert (anchor.position, anchor.hash) == head_row(path)
    assert sorted(p.name for p in tmp_path.iterdir() if ".head" in p.name) == ["ledger.db.head"]  # no temporaries


def test_gateway_sets_a_broken_anchor_aside_at_start(capsys, tmp_path):
    """A tail cut while the gateway was stopped: at its next start the old anchor is kept aside, and verify fails."""
    data_dir = tmp_path / "data"
    ledger = data_dir / "ledger.db"
    gw = start_gateway(data_dir)
    assert gw.stop() == 0
    anchor = json.loads(anchor_path(ledger).read_text())
    assert [anchor["position"], anchor["hash"]] == list(head_row(ledger))  # written at clean shutdown
    conn = sqlite3.connect(ledger)
    conn.execute("DELETE FROM events WHERE position = ?", (anchor["position"],))
    conn.commit()
    conn.close()
    gw = start_gateway(data_dir)
    assert gw.stop() == 0
    log = gw.log.read_text()
    [rejected] = rejected_paths(ledger)
    assert "WARNING: the ledger does not hold its head anchor" in log and str(rejected) in log
    assert json.loads(rejected.read_text()) == anchor  # the evidence is kept as it was
    code, out = replay(capsys, "--data-dir", str(data_dir), "verify")
    assert code == 1 and f"set it aside as {rejected}" in out
    rejected.unlink()  # explained (here: this test cut the tail): the ledger verifies again
    code, out = replay(capsys, "--data-dir", str(data_dir), "verify")
    assert code == 0, out


def test_check_names_each_way_a_ledger_fails_its_anchor():
    """Beyond the head: truncated; a missing or different record at its position: named there; else None."""
    from ledger.head_file import Anchor, check

    anchor = Anchor(5, "ab" * 32, 0)
    hashes = {1: "00" * 32, 5: "ab" * 32}
    assert check(anchor, 5, hashes.get) is None
    assert check(anchor, 9, hashes.get) is None  # the ledger grew since: still holds the anchored record
    assert check(anchor, 3, hashes.get) == (4, "the ledger ends at position 3, but its head anchor recorded "
                                               "position 5: tail truncated (positions 4..5 are gone)")
    assert check(anchor, 5, {5: "cd" * 32}.get)[0] == 5
    assert check(anchor, 5, {}.get) == (5, "record 5, which the head anchor names, is missing")

"""Tampering with a copy of a real ledger (or with a dispute pack) is caught, and the first bad position named.

The ledger is made once per session by a running gateway with money in it
(tests/replay_ledger.py); every test edits its own copy.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest

from ledger.chain import GENESIS_HASH, record_hash
from ledger.head_file import anchor_path
from tests.replay_ledger import copy_ledger, money_ledger, position_of, replay


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    return money_ledger(tmp_path_factory)


@pytest.fixture
def copy(ledger, tmp_path) -> Path:
    return copy_ledger(ledger, tmp_path / "copy")


def verify(capsys, path: Path, *extra: str) -> tuple[int, str]:
    return replay(capsys, "--data-dir", str(path.parent), "verify", *extra)


def run_sql(path: Path, *statements: tuple) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    for statement in statements:
        conn.execute(*statement)
    conn.execute("COMMIT")
    conn.close()


def row(path: Path, position: int) -> tuple:
    conn = sqlite3.connect(path)
    found = conn.execute("SELECT stream, version, event_id, type, recorded_at, prev_hash, hash, data FROM events "
                         "WHERE position = ?", (position,)).fetchone()
    conn.close()
    return found


def rechain(path: Path, start: int) -> None:
    """Recompute every hash from ``start`` on, as a forger with write access would."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("BEGIN")
    previous = conn.execute("SELECT hash FROM events WHERE position = ?", (start - 1,)).fetchone()
    previous = previous[0] if previous else GENESIS_HASH
    rows = conn.execute("SELECT position, stream, version, event_id, recorded_at, data FROM events "
                        "WHERE position >= ? ORDER BY position", (start,)).fetchall()
    for position, stream, version, event_id, recorded_at, data in rows:
        hash_ = record_hash(previous, position, stream, version, event_id, recorded_at, data.encode())
        conn.execute("UPDATE events SET prev_hash = ?, hash = ? WHERE position = ?", (previous, hash_, position))
        previous = hash_
    conn.execute("COMMIT")
    conn.close()


def with_anchor(ledger, copy: Path) -> int:
    """Copy the head anchor the gateway left beside its ledger next to ``copy``; return the position it names."""
    shutil.copy(anchor_path(ledger.path), anchor_path(copy))
    return json.loads(anchor_path(copy).read_text())["position"]


def head_of(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return conn.execute("SELECT max(position) FROM events").fetchone()[0]
    finally:
        conn.close()


def test_untouched_copy_verifies(capsys, copy):
    """The copy alone (no head anchor beside it) verifies, and the summary says its tail cannot be checked."""
    code, out = verify(capsys, copy)
    assert code == 0, out
    assert "OK: the hash chain verifies" in out and "0 differ" in out
    assert "head anchor:      none beside the ledger: truncation of the tail cannot be checked" in out


def test_anchored_copy_verifies(capsys, ledger, copy):
    """The anchor the gateway wrote at clean shutdown names the ledger's last record; verify checks it."""
    position = with_anchor(ledger, copy)
    assert position == head_of(copy)
    code, out = verify(capsys, copy)
    assert code == 0, out
    assert f"head anchor:      position {position:,}, written " in out and "cannot be checked" not in out


def test_truncated_tail_is_caught_by_the_head_anchor(capsys, ledger, copy):
    """The last events deleted: the shorter chain is valid, but the anchor names a position the ledger lost."""
    position = with_anchor(ledger, copy)
    run_sql(copy, ("DELETE FROM events WHERE position > ?", (position - 3,)))
    code, out = verify(capsys, copy)
    assert code == 1 and "hash chain broken" not in out
    assert (f"the ledger ends at position {position - 3}, but its head anchor recorded position {position}: "
            f"tail truncated") in out
    assert f"first bad position: {position - 2}" in out


def test_rewritten_tail_is_caught_by_the_head_anchor(capsys, ledger, copy):
    """The last record's time moved and the chain re-hashed (still valid): the anchor's hash no longer matches."""
    position = with_anchor(ledger, copy)
    run_sql(copy, ("UPDATE events SET recorded_at = recorded_at + 1 WHERE position = ?", (position,)))
    rechain(copy, position)
    code, out = verify(capsys, copy)
    assert code == 1 and "hash chain broken" not in out
    assert f"record {position} has hash" in out and "the ledger was rewritten at or before it" in out
    assert f"first bad position: {position}" in out and out.count("FAILED") == 1


def test_head_option_names_an_anchor_kept_elsewhere(capsys, ledger, copy, tmp_path):
    """--head FILE checks an anchor kept apart from the ledger; a missing or garbled one fails, never passes."""
    kept = tmp_path / "kept.head"
    shutil.copy(anchor_path(ledger.path), kept)
    position = json.loads(kept.read_text())["position"]
    run_sql(copy, ("DELETE FROM events WHERE position = ?", (position,)))
    code, out = verify(capsys, copy, "--head", str(kept))
    assert code == 1 and f"its head anchor recorded position {position}: tail truncated" in out
    code, out = verify(capsys, copy, "--head", str(tmp_path / "absent.head"))
    assert code == 1 and f"no head anchor at {tmp_path / 'absent.head'}" in out
    kept.write_text('{"position": 1, "hash": "not hex"}')
    code, out = verify(capsys, copy, "--head", str(kept))
    assert code == 1 and f"head anchor {kept} is unreadable" in out


def test_one_edited_byte_is_caught_at_its_position(capsys, ledger, copy):
    """One character of a streamed text delta changed: the chain breaks at exactly that position."""
    stream = f"response-{ledger.responses['streamed']}"
    position = position_of(copy, "stream = ? AND type = 'response.text_delta'", stream)
    data = row(copy, position)[7]
    index = data.index('"delta":"') + len('"delta":"') + 1
    edited = data[:index] + ("X" if data[index] != "X" else "Y") + data[index + 1:]
    run_sql(copy, ("UPDATE events SET data = ? WHERE position = ?", (edited, position)))
    code, out = verify(capsys, copy)
    assert code == 1
    assert f"hash chain broken at position {position}: hash does not match" in out
    assert f"first bad position: {position}" in out


def test_edited_charge_is_caught(capsys, ledger, copy):
    """A usage.charged whose cost was edited: the chain breaks there and the charge no longer recomputes."""
    position = position_of(copy, "stream = ? AND type = 'usage.charged'", f"response-{ledger.responses['completed']}")
    data = json.loads(row(copy, position)[7])
    data["cost_micros"] += 1000
    edited = json.dumps(data, separators=(",", ":"), sort_keys=True)
    run_sql(copy, ("UPDATE events SET data = ? WHERE position = ?", (edited, position)))
    code, out = verify(capsys, copy)
    assert code == 1 and f"first bad position: {position}" in out
    assert "charge differs" in out and "recomputed" in out


def test_deleted_event_is_caught(capsys, ledger, copy):
    """A deleted hold.released: position missing (and the hold left open after its response finished)."""
    position = position_of(copy, "type = 'hold.released' AND event_id LIKE ?", f"{ledger.responses['completed']}%")
    run_sql(copy, ("DELETE FROM events WHERE position = ?", (position,)))
    code, out = verify(capsys, copy)
    assert code == 1
    assert f"hash chain broken at position {position}: position {position} is missing" in out
    assert "still open after its response finished" in out
    assert f"first bad position: {position}" in out


def test_reordered_events_are_caught(capsys, ledger, copy):
    """Two adjacent events swapped (their data and ids): caught at the first of the two."""
    first = position_of(copy, "stream = ? AND type = 'response.text_delta'", f"response-{ledger.responses['streamed']}")
    a, b = row(copy, first), row(copy, first + 1)
    columns = "stream = ?, version = ?, event_id = ?, type = ?, recorded_at = ?, prev_hash = ?, hash = ?, data = ?"
    run_sql(copy, ("UPDATE events SET stream = 'x', version = -1, event_id = 'x' WHERE position = ?", (first,)),
            (f"UPDATE events SET {columns} WHERE position = ?", (*a, first + 1)),
            (f"UPDATE events SET {columns} WHERE position = ?", (*b, first)))
    code, out = verify(capsys, copy)
    assert code == 1
    assert f"hash chain broken at position {first}" in out and f"first bad position: {first}" in out


def test_type_column_is_checked_against_the_data(capsys, ledger, copy):
    """The type column is outside the hash: a changed one is caught by decoding, at its position."""
    position = position_of(copy, "type = 'hold.placed'")
    run_sql(copy, ("UPDATE events SET type = 'hold.released' WHERE position = ?", (position,)))
    code, out = verify(capsys, copy)
    assert code == 1 and "the type column says 'hold.released'" in out
    assert f"first bad position: {position}" in out


def test_rewritten_chain_is_caught_by_charges_and_the_export_root(capsys, ledger, copy, tmp_path):
    """A charge and its releases edited and every later hash recomputed: charges and an export's root catch it."""
    code, _ = replay(capsys, "--data-dir", str(copy.parent), "export", "--platform", ledger.platform_id,
                     "--out", str(tmp_path / "pack"))
    assert code == 0
    rid = ledger.responses["completed"]
    charge = position_of(copy, "stream = ? AND type = 'usage.charged'", f"response-{rid}")
    updates = []
    for position in [charge] + [position_of(copy, "event_id = ?", f"{rid}.release.{a}") for a in ("wallet", "budget")]:
        data = json.loads(row(copy, position)[7])
        key = "cost_micros" if "cost_micros" in data else "charged_micros"
        data[key] += 700
        updates.append(("UPDATE events SET data = ? WHERE position = ?",
                        (json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False), position)))
    run_sql(copy, *updates)
    rechain(copy, charge)
    code, out = verify(capsys, copy)
    assert code == 1 and "hash chain broken" not in out
    assert "charge differs" in out and f"first bad position: {charge}" in out
    code, out = verify(capsys, copy, "--against", str(tmp_path / "pack"))
    assert code == 1 and "the ledger was rewritten since the export" in out


def test_truncated_tail_is_caught_against_an_exported_head(capsys, ledger, copy, tmp_path):
    """The last events deleted (no head anchor beside the copy): an export's manifest still catches it."""
    code, _ = replay(capsys, "--data-dir", str(copy.parent), "export", "--platform", ledger.platform_id,
                     "--out", str(tmp_path / "pack"))
    assert code == 0
    head = json.loads((tmp_path / "pack" / "manifest.json").read_text())["ledger_head"]["position"]
    assert verify(capsys, copy, "--against", str(tmp_path / "pack"))[0] == 0
    run_sql(copy, ("DELETE FROM events WHERE position > ?", (head - 3,)))
    code, out = verify(capsys, copy, "--against", str(tmp_path / "pack" / "manifest.json"))
    assert code == 1 and "its tail was truncated" in out
    assert f"first bad position: {head - 2}" in out


def test_truncated_tail_is_caught_by_the_materialised_projections(capsys, ledger, copy):
    """Projections materialised before the tail was cut reach beyond the ledger's head: verify says so."""
    from tests.replay_ledger import report

    assert report(capsys, "--data-dir", str(copy.parent), "wallet", "--platform", ledger.platform_id)[0] == 0
    conn = sqlite3.connect(copy)
    head = conn.execute("SELECT max(position) FROM events").fetchone()[0]
    conn.close()
    run_sql(copy, ("DELETE FROM events WHERE position > ?", (head - 2,)))
    code, out = verify(capsys, copy)
    assert code == 1 and "the ledger lost its tail" in out


def test_edited_materialised_row_is_caught(capsys, ledger, copy):
    """A usage row edited in projections.db differs from the same fold rebuilt from position 0."""
    from tests.replay_ledger import report

    assert report(capsys, "--data-dir", str(copy.parent), "usage", "--platform", ledger.platform_id)[0] == 0
    db = sqlite3.connect(copy.parent / "projections.db")
    position = db.execute("SELECT min(position) FROM usage_rows WHERE cost_micros > 0").fetchone()[0]
    db.execute("UPDATE usage_rows SET cost_micros = cost_micros + 1 WHERE position = ?", (position,))
    db.commit()
    db.close()
    code, out = verify(capsys, copy)
    assert code == 1 and "materialised table usage_rows differs" in out
    assert f"first bad position: {position}" in out


@pytest.fixture(scope="module")
def pack(ledger, tmp_path_factory) -> Path:
    """A dispute pack of the main platform, made from a copy."""
    directory = tmp_path_factory.mktemp("pack-source")
    copy = copy_ledger(ledger, directory)
    out = directory / "pack"
    from replay.cli import main

    assert main(["--data-dir", str(copy.parent), "export", "--platform", ledger.platform_id, "--out", str(out)]) == 0
    return out


def pack_copy(pack: Path, tmp_path: Path) -> Path:
    target = tmp_path / "pack"
    target.mkdir()
    for name in ("events.jsonl", "prices.jsonl", "proofs.jsonl", "manifest.json"):
        (target / name).write_bytes((pack / name).read_bytes())
    return target


def restamp(directory: Path, name: str) -> None:
    """Make the manifest agree with an edited file, as a careful forger would."""
    from replay.pack import file_digest

    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["files"][name] = file_digest((directory / name).read_bytes())
    (directory / "manifest.json").write_text(json.dumps(manifest))


def test_truncated_export_is_caught(capsys, pack, tmp_path):
    """An events file missing its last lines: the file digest, the count and the last position disagree."""
    target = pack_copy(pack, tmp_path)
    lines = (target / "events.jsonl").read_bytes().splitlines(keepends=True)
    (target / "events.jsonl").write_bytes(b"".join(lines[:-3]))
    code, out = replay(capsys, "verify-export", str(target))
    assert code == 1 and "events.jsonl: SHA-256 or line count differs" in out
    assert "manifest events.count" in out and "manifest events.last_position" in out


def test_edited_export_record_is_caught(capsys, pack, tmp_path):
    """One byte of an exported event changed (manifest restamped): that record no longer hashes to its hash."""
    target = pack_copy(pack, tmp_path)
    lines = (target / "events.jsonl").read_bytes().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if b"usage.charged" in line)
    stored = json.loads(lines[index])
    stored["data"] = stored["data"].replace('"cost_micros":', '"cost_micros":1')
    lines[index] = json.dumps(stored).encode() + b"\n"
    (target / "events.jsonl").write_bytes(b"".join(lines))
    restamp(target, "events.jsonl")
    code, out = replay(capsys, "verify-export", str(target))
    assert code == 1
    assert f"the record at position {stored['position']} does not hash to its stored hash" in out


def test_reordered_export_and_bad_proof_are_caught(capsys, pack, tmp_path):
    """Two exported events swapped, and one proof hash flipped: both are named."""
    target = pack_copy(pack, tmp_path)
    lines = (target / "events.jsonl").read_bytes().splitlines(keepends=True)
    lines[3], lines[4] = lines[4], lines[3]
    (target / "events.jsonl").write_bytes(b"".join(lines))
    proofs = (target / "proofs.jsonl").read_bytes().splitlines(keepends=True)
    proof = json.loads(proofs[0])
    proof["path"][0] = ("0" if proof["path"][0][0] != "0" else "1") + proof["path"][0][1:]
    proofs[0] = json.dumps(proof).encode() + b"\n"
    (target / "proofs.jsonl").write_bytes(b"".join(proofs))
    restamp(target, "events.jsonl")
    restamp(target, "proofs.jsonl")
    code, out = replay(capsys, "verify-export", str(target))
    assert code == 1 and "does not follow" in out
    assert f"the inclusion proof of position {proof['position']} does not lead to the Merkle root" in out


def test_export_against_another_root_fails(capsys, pack):
    """--root names the root obtained independently; a pack under another root fails."""
    assert replay(capsys, "verify-export", str(pack))[0] == 0
    code, out = replay(capsys, "verify-export", str(pack), "--root", "ab" * 32)
    assert code == 1 and "is not the root given" in out


def test_event_deleted_from_the_middle_of_an_export_is_caught(capsys, pack, tmp_path):
    """A delta cut out of the pack (its proof too, files restamped): counts and the stream's versions say so."""
    target = pack_copy(pack, tmp_path)
    lines = (target / "events.jsonl").read_bytes().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if i > len(lines) // 3 and b"response.text_delta" in line)
    removed = json.loads(lines[index])
    (target / "events.jsonl").write_bytes(b"".join(lines[:index] + lines[index + 1:]))
    proofs = [p for p in (target / "proofs.jsonl").read_bytes().splitlines(keepends=True)
              if json.loads(p)["position"] != removed["position"]]
    (target / "proofs.jsonl").write_bytes(b"".join(proofs))
    restamp(target, "events.jsonl")
    restamp(target, "proofs.jsonl")
    code, out = replay(capsys, "verify-export", str(target))
    assert code == 1 and "each proven" in out  # every event left is still a proven member of the ledger...
    assert "manifest events.count is" in out and "the pack holds" in out  # ...but the pack is not complete
    assert f"stream {removed['stream']}: the manifest says versions 1.." in out and "'complete': False" in out


def test_charges_lists_a_charge_that_differs(capsys, ledger, copy):
    """One charge's cost edited and the chain re-hashed after it: `charges` exits 1 and lists that difference."""
    rid = ledger.responses["completed"]
    position = position_of(copy, "stream = ? AND type = 'usage.charged'", f"response-{rid}")
    data = json.loads(row(copy, position)[7])
    recorded = data["cost_micros"]
    data["cost_micros"] = recorded + 700
    run_sql(copy, ("UPDATE events SET data = ? WHERE position = ?",
                   (json.dumps(data, separators=(",", ":"), sort_keys=True, ensure_ascii=False), position)))
    rechain(copy, position)
    code, out = replay(capsys, "--data-dir", str(copy.parent), "charges")
    assert code == 1
    assert (f"DIFFERENCE at position {position}: response {rid} ({ledger.platform_id}/{ledger.budget_user}, "
            f"priced): recorded {recorded + 700} micro-USD, recomputed {recorded}") in out
    assert out.count("DIFFERENCE at") == 1
    code, out = replay(capsys, "--data-dir", str(copy.parent), "charges", "--platform", ledger.other_platform_id)
    assert code == 0 and "DIFFERENCE" not in out  # another tenant's charges are not affected

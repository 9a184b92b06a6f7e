"""The auditor and finance tools on a copy of a real ledger with money in it (tests/replay_ledger.py).

verify (in one process and in two, and live with --url), charges, stream --explain, export
and verify-export (one end user's pack proven against the whole ledger's root), the finance
reports in every format against the gateway's own HTTP answers, the materialised file's
incremental update and rebuild, and ``python -m replay`` = ``assistiv replay``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
import trio

from tests.conftest import ROOT
from tests.replay_ledger import copy_ledger, money_ledger, replay, report


@pytest.fixture(scope="module")
def ledger(tmp_path_factory):
    return money_ledger(tmp_path_factory)


@pytest.fixture(scope="module")
def copy(ledger, tmp_path_factory) -> Path:
    """One shared copy for the read-only tests (they only read the ledger)."""
    return copy_ledger(ledger, tmp_path_factory.mktemp("shared-copy"))


def data_dir(path: Path) -> list[str]:
    return ["--data-dir", str(path.parent)]


def cli(*args: str, module: str = "replay", env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, cwd=ROOT, timeout=120,
                          env={**os.environ, **(env or {})})


def sql(path: Path, query: str, *args) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(query, args).fetchall()
    finally:
        conn.close()


def test_live_verify_with_url_passed(ledger):
    """While the gateway ran, `assistiv replay verify --url` matched every live projection at its position."""
    out = ledger.live_verify.stdout.decode()
    assert ledger.live_verify.returncode == 0, out + ledger.live_verify.stderr.decode()
    assert "live position:" in out and "OK:" in out


def test_verify_in_two_processes_says_the_same(copy):
    """--jobs 2 (worker processes) and --jobs 1 print the same summary; piped, stderr stays quiet."""
    one, two = cli(*data_dir(copy), "verify", "--jobs", "1"), cli(*data_dir(copy), "verify", "--jobs", "2")
    assert one.returncode == two.returncode == 0, one.stdout.decode()
    assert one.stdout == two.stdout and one.stderr == two.stderr == b""
    assert b"responses:        11" in one.stdout and b"open holds:       0" in one.stdout


def test_verify_render_produces_every_streams_bytes(capsys, copy):
    """--render folds every stream through the renderer's byte-producing path too, and still verifies."""
    code, out = replay(capsys, *data_dir(copy), "verify", "--render")
    assert code == 0 and "OK:" in out


def test_progress_shows_on_request(copy):
    """With ASSISTIV_PROGRESS=1 (as on a terminal) a progress bar is drawn on stderr and cleared."""
    done = cli(*data_dir(copy), "verify", env={"ASSISTIV_PROGRESS": "1"})
    assert done.returncode == 0 and b"\rverify [" in done.stderr and b"tasks)" in done.stderr


class FakeTerminal(io.StringIO):
    """A text stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_progress_draws_a_bar_on_a_terminal_and_nothing_when_piped(monkeypatch):
    """On a terminal: a bar with percent, time and counts, rewritten in place, cleared at close; piped: silent."""
    from replay.parallel import BAR_CHARS, Progress

    monkeypatch.delenv("ASSISTIV_PROGRESS", raising=False)
    terminal, pipe = FakeTerminal(), io.StringIO()
    bars = [Progress("verify", 20, " tasks", stream=stream) for stream in (terminal, pipe)]
    for bar in bars:
        bar.update(9)
    drawn = terminal.getvalue()
    filled = int(0.45 * BAR_CHARS)
    assert drawn.startswith("\rverify [" + "#" * filled + "." * (BAR_CHARS - filled) + "]  45% 0.")
    assert drawn.endswith(" s (9/20 tasks)")
    bars[0].update(20)
    bars[0]._shown = 0.0  # as if the refresh interval had passed
    bars[0].update(20)
    assert "[" + "#" * BAR_CHARS + "] 100% " in terminal.getvalue()
    for bar in bars:
        bar.close()
    assert terminal.getvalue().endswith("\r" + " " * len(bars[0].line(0.0)) + "\r")
    assert pipe.getvalue() == ""


def test_python_m_replay_is_assistiv_replay(copy, ledger):
    """`python -m replay` and `assistiv replay` / `assistiv report` print the same bytes."""
    assert cli(*data_dir(copy), "verify").stdout == cli("replay", *data_dir(copy), "verify", module="gateway").stdout
    args = ["usage", *data_dir(copy), "--platform", ledger.platform_id, "--format", "json"]
    assert cli("report", *args).stdout == cli("report", *args, module="gateway").stdout


def test_charges_recompute_and_filter(capsys, copy, ledger):
    """Every charge recomputes; --end-user and --platform narrow the set to what the ledger holds."""
    code, out = replay(capsys, *data_dir(copy), "charges")
    assert code == 0 and "OK: every charge follows" in out
    total = sql(copy, "SELECT count(*), sum(json_extract(data, '$.cost_micros')) FROM events "
                      "WHERE type = 'usage.charged'")[0]
    assert f"charges recomputed: {total[0]:,} (all); recorded {total[1]:,} micro-USD, recomputed {total[1]:,}" in out
    mine = sql(copy, "SELECT count(*) FROM events WHERE type = 'usage.charged' AND "
                     "json_extract(data, '$.end_user_id') = ?", ledger.budget_user)[0][0]
    code, out = replay(capsys, *data_dir(copy), "charges", "--end-user", ledger.budget_user, "--all")
    assert code == 0 and f"charges recomputed: {mine:,} (end user {ledger.budget_user})" in out
    assert out.count("ok      position") == mine
    code, out = replay(capsys, *data_dir(copy), "charges", "--platform", ledger.other_platform_id, "--to",
                       "2000-01-01")
    assert code == 0 and "charges recomputed: 0" in out


def test_explain_says_where_and_why_each_stream_stopped(capsys, copy, ledger):
    """--explain: the timeline with offsets, the stop reason, and the billing with its usage source."""
    expected = {
        "streamed": ("stopped: completed", "usage reported by the provider"),
        "client_left": ("stopped: client left after", "usage estimated by the gateway"),
        "upstream_dropped": ("stopped: upstream dropped after 3 deltas", "usage estimated by the gateway"),
        "failed_before_output": ("stopped: failed before output", "billed: 0 micro-USD"),
        "cut_short": ("stopped: incomplete (max_output_tokens)", "usage reported by the provider"),
        "reported_cached": ("stopped: completed", "(21 cached)"),
        "free": ("stopped: completed", "billed: 0 micro-USD (0.000000 USD), free"),
    }
    for name, phrases in expected.items():
        code, out = replay(capsys, *data_dir(copy), "stream", ledger.responses[name], "--explain")
        assert code == 0, name
        for phrase in phrases + ("+0.000000 s", "response.accepted", "recomputed:", "price version prices_"):
            assert phrase in out, (name, phrase, out)
    code, out = replay(capsys, *data_dir(copy), "stream", ledger.responses["client_left"], "--explain")
    assert "hold.placed" in out and "hold.released" in out and "interrupted" in out
    assert replay(capsys, *data_dir(copy), "stream", "resp_missing", "--explain")[0] == 1


def test_stream_bytes_are_unchanged_by_explain(copy, ledger):
    """Without --explain, stream prints the SSE bytes (the dropped stream ends with response.failed)."""
    done = cli(*data_dir(copy), "stream", ledger.responses["upstream_dropped"])
    assert done.returncode == 0 and done.stdout.rstrip().endswith(b"}") and b"event: response.failed" in done.stdout


def reference_root(leaves: list[bytes]) -> bytes:
    """RFC 6962 MTH, written out recursively and independently of replay.merkle."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return hashlib.sha256(b"\x01" + reference_root(leaves[:k]) + reference_root(leaves[k:])).digest()


def test_end_user_pack_is_proven_without_other_tenants(capsys, copy, ledger, tmp_path):
    """One end user's pack: only their events, the root is the whole ledger's, every proof verifies offline."""
    out = tmp_path / "pack"
    code, said = replay(capsys, *data_dir(copy), "export", "--platform", ledger.platform_id, "--end-user",
                        ledger.plain_user, "--out", str(out))
    assert code == 0, said
    rows = [json.loads(line) for line in (out / "events.jsonl").read_text().splitlines()]
    manifest = json.loads((out / "manifest.json").read_text())
    assert rows and all(ledger.other_platform_id not in r["data"] and ledger.budget_user not in r["data"] for r in rows)
    assert {r["stream"] for r in rows if r["stream"].startswith("response-")} == {
        f"response-{ledger.responses['free']}", f"response-{ledger.responses['plain_user']}"}
    hashes = [bytes.fromhex(h) for (h,) in sql(copy, "SELECT hash FROM events ORDER BY position")]
    assert manifest["merkle"]["root"] == reference_root(hashes).hex()
    assert manifest["merkle"]["tree_size"] == len(hashes) == manifest["ledger_head"]["position"]
    assert manifest["totals"]["charges"] == 2 and manifest["price_versions"][0]["version_id"].startswith("prices_")
    code, said = replay(capsys, "verify-export", str(out), "--root", manifest["merkle"]["root"])
    assert code == 0 and "each proven" in said, said
    shutil.copytree(out, tmp_path / "moved")  # a pack checks anywhere, with no ledger around
    assert cli("verify-export", str(tmp_path / "moved")).returncode == 0


def test_platform_pack_with_time_window(capsys, copy, ledger, tmp_path):
    """A platform pack limited to a window that holds nothing is still a valid (empty) pack."""
    code, _ = replay(capsys, *data_dir(copy), "export", "--platform", ledger.platform_id, "--to", "2001-01-01",
                     "--out", str(tmp_path / "empty"))
    assert code == 0
    assert json.loads((tmp_path / "empty" / "manifest.json").read_text())["events"]["count"] == 0
    assert replay(capsys, "verify-export", str(tmp_path / "empty"))[0] == 0
    assert replay(capsys, *data_dir(copy), "export", "--platform", ledger.platform_id, "--out",
                  str(tmp_path / "empty"))[0] == 2  # never into a non-empty directory


def test_report_usage_matches_the_http_route(capsys, copy, ledger):
    """report usage (json) gives the gateway's own /usage groups, with exact USD strings and totals."""
    code, out = report(capsys, *data_dir(copy), "usage", "--platform", ledger.platform_id, "--group-by",
                       "end_user,model", "--format", "json")
    assert code == 0
    body = json.loads(out)
    http = {(g["end_user"], g["model"]): g for g in ledger.http_usage["data"]}
    assert len(body["data"]) == len(http)
    for group in body["data"]:
        live = http[(group["end_user"], group["model"])]
        assert (group["requests"], group["prompt_tokens"], group["completion_tokens"]) == (
            live["requests"], live["prompt_tokens"], live["completion_tokens"])
        assert Decimal(group["cost_usd"]) == Decimal(str(live["cost_usd"])) == Decimal(group["cost_micros"]) / 10**6
    charged = sql(copy, "SELECT sum(json_extract(data, '$.cost_micros')) FROM events WHERE type = 'usage.charged' "
                        "AND json_extract(data, '$.platform_id') = ?", ledger.platform_id)[0][0]
    assert body["total"]["cost_micros"] == charged


def test_report_usage_table_and_csv(capsys, copy, ledger):
    """The table has a header, a rule and a TOTAL line; the CSV parses to the same groups by day."""
    code, table = report(capsys, *data_dir(copy), "usage", "--platform", ledger.platform_id, "--group-by", "day")
    assert code == 0
    lines = table.splitlines()
    assert lines[0] == f"platform_id: {ledger.platform_id}" and any(line.startswith("TOTAL") for line in lines)
    code, text = report(capsys, *data_dir(copy), "usage", "--platform", ledger.platform_id, "--group-by", "day",
                        "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert code == 0 and rows and all(len(r["day"]) == 10 for r in rows)
    assert sum(int(r["requests"]) for r in rows) == sum(g["requests"] for g in ledger.http_usage["data"])
    with pytest.raises(SystemExit):
        report(capsys, *data_dir(copy), "usage", "--platform", ledger.platform_id, "--group-by", "week")


def test_report_wallet_statement_adds_up(capsys, copy, ledger):
    """Opening 0, each transaction, closing = the live wallet balance; a later --from opens at the balance then."""
    code, out = report(capsys, *data_dir(copy), "wallet", "--platform", ledger.platform_id, "--format", "json")
    assert code == 0
    body = json.loads(out)
    assert body["opening_balance_micros"] == 0
    assert body["closing_balance_micros"] == round(Decimal(str(ledger.http_wallet["balance"])) * 10**6)
    assert body["opening_balance_micros"] + sum(t["amount_micros"] for t in body["data"]) == \
        body["closing_balance_micros"]
    assert body["data"][0]["type"] == "top_up" and {t["type"] for t in body["data"][1:]} == {"llm_usage"}
    after = body["data"][1]["created_at"]
    code, out = report(capsys, *data_dir(copy), "wallet", "--platform", ledger.platform_id, "--from", "2001-01-01",
                       "--format", "csv")
    assert code == 0 and out.splitlines()[0].startswith("position,created_at,id,type,amount_micros")
    code, out = report(capsys, *data_dir(copy), "wallet", "--platform", ledger.platform_id)
    assert code == 0 and "closing_balance_usd: " in out and after in out


def test_report_budget(capsys, copy, ledger):
    """The budget's settings and statement: opening, top-up, debits; closing remaining = max - used."""
    code, out = report(capsys, *data_dir(copy), "budget", "--end-user", ledger.budget_user, "--format", "json")
    assert code == 0
    body = json.loads(out)
    assert [t["type"] for t in body["data"][:2]] == ["opening_balance", "top_up"]
    assert Decimal(body["max_usd"]) == 6 and body["closing_remaining_usd"] == str(Decimal("6") - Decimal(
        body["used_usd"]))
    code, out = report(capsys, *data_dir(copy), "budget", "--end-user", ledger.plain_user)
    assert code == 1


def test_materialised_file_updates_incrementally_and_rebuilds(capsys, ledger, tmp_path):
    """Half the ledger folded, then the rest: the same tables as a rebuild; another ledger's file is refused."""
    half = copy_ledger(ledger, tmp_path / "half")
    count = sql(half, "SELECT max(position) FROM events")[0][0]
    conn = sqlite3.connect(half)
    conn.execute("DELETE FROM events WHERE position > ?", (count // 2,))
    conn.commit()
    conn.close()
    assert report(capsys, *data_dir(half), "wallet", "--platform", ledger.platform_id)[0] == 0
    full = copy_ledger(ledger, tmp_path / "full")
    shutil.copy(half.parent / "projections.db", full.parent / "projections.db")
    assert report(capsys, *data_dir(full), "wallet", "--platform", ledger.platform_id)[0] == 0
    tables = ("usage_rows", "wallet_transactions", "budget_transactions", "accounts", "checkpoints")
    incremental = {t: sql(full.parent / "projections.db", f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables}
    code, out = replay(capsys, *data_dir(full), "rebuild")
    assert code == 0 and f"to {count:,}" in out
    rebuilt = {t: sql(full.parent / "projections.db", f"SELECT * FROM {t} ORDER BY 1, 2") for t in tables}
    assert incremental == rebuilt and rebuilt["checkpoints"][0][1] == count
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(half, other / "ledger.db")
    conn = sqlite3.connect(other / "ledger.db")
    conn.execute("UPDATE events SET hash = ? WHERE position = ?", ("0" * 64, count // 2))
    conn.commit()
    conn.close()
    shutil.copy(full.parent / "projections.db", other / "projections.db")
    assert report(capsys, *data_dir(other / "ledger.db"), "usage", "--platform", ledger.platform_id)[0] == 1


def test_materialised_rows_and_checkpoint_commit_together(ledger, tmp_path):
    """A failure between the rows and the checkpoint (a trigger refusing it) leaves neither in the file."""
    from ledger.sqlite import connect
    from replay.materialise import open_db, update

    path = copy_ledger(ledger, tmp_path / "atomic")
    target = tmp_path / "atomic" / "projections.db"
    db = open_db(target)
    db.execute("CREATE TRIGGER refuse BEFORE INSERT ON checkpoints BEGIN SELECT RAISE(ABORT, 'injected'); END")
    db.conn.close()
    conn = connect(path, readonly=True)
    with pytest.raises(sqlite3.IntegrityError, match="injected"):
        update(conn, target)
    counts = {t: sql(target, f"SELECT count(*) FROM {t}")[0][0]
              for t in ("usage_rows", "wallet_transactions", "budget_transactions", "accounts", "checkpoints")}
    assert counts == dict.fromkeys(counts, 0)
    sql(target, "DROP TRIGGER refuse")
    assert update(conn, target) == sql(path, "SELECT max(position) FROM events")[0][0]
    assert sql(target, "SELECT count(*) FROM usage_rows")[0][0] > 0
    conn.close()



async def test_hold_left_open_across_a_recovering_restart_is_a_problem(ledger, tmp_path):
    """An open hold is "in flight" until a gateway.started whose recovery looked past it; then verify fails."""
    from ledger.events import GatewayStarted, HoldPlaced
    from ledger.sqlite import open_sqlite_store
    from ledger.store import NewEvent
    from projections.money import wallet_stream

    path = copy_ledger(ledger, tmp_path / "restarted")
    hold = HoldPlaced("resp_abandoned", "wallet", ledger.platform_id, None, 1_000)
    async with open_sqlite_store(path) as store:
        [placed] = await store.append([NewEvent(wallet_stream(ledger.platform_id), hold)])
        await store.append([NewEvent("gateway", GatewayStarted("gw_replica", False, [], placed.position))])
    one = await trio.to_thread.run_sync(cli, *data_dir(path), "verify")
    assert one.returncode == 0 and "open holds:       1 " in one.stdout.decode()
    async with open_sqlite_store(path) as store:
        [started] = await store.append([NewEvent("gateway", GatewayStarted("gw_next", True, [], placed.position))])
    two = await trio.to_thread.run_sync(cli, *data_dir(path), "verify")
    out = two.stdout.decode()
    assert two.returncode == 1, out
    assert (f"wallet hold of reservation resp_abandoned (placed at {placed.position}) is still open after the "
            f"gateway restarted at position {started.position}") in out
    assert f"first bad position: {started.position}" in out

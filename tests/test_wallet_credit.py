"""``assistiv wallet credit``: the operator's refunds and adjustments, on the ledger of a running gateway."""

from __future__ import annotations

import json
import time

import httpx

from ledger.sqlite import connect


def _api(gw, path: str) -> dict:
    answer = httpx.get(gw.base_url + path, headers={"Authorization": f"Bearer {gw.key}"}, timeout=30)
    answer.raise_for_status()
    return answer.json()


def _credit(gw, *args: str):
    return gw.cli("wallet", "credit", "--data-dir", str(gw.data_dir), "--platform", gw.platform_id, *args,
                  check=False)


def _positions(gw) -> int:
    conn = connect(str(gw.data_dir / "ledger.db"), readonly=True)
    try:
        return conn.execute("SELECT count(*) FROM events").fetchone()[0]
    finally:
        conn.close()


def test_refund_and_adjustment_reach_the_running_gateway_and_verify(fresh_gateway):
    """A refund and a debit adjustment are wallet transactions with their balance after, seen by the live gateway."""
    gw = fresh_gateway
    done = _credit(gw, "--kind", "refund", "--amount", "2.5", "--description", "dispute 17",
                   "--transaction-id", "txn_refund_17", "--json")
    assert done.returncode == 0, done.stderr
    refund = json.loads(done.stdout)
    assert refund["transaction"] == {**refund["transaction"], "id": "txn_refund_17", "type": "refund", "amount": 2.5,
                                     "balance_after": 2.5, "description": "dispute 17"}
    debit = _credit(gw, "--kind", "adjustment", "--amount", "-0.75", "--description", "double top-up", "--json")
    assert debit.returncode == 0, debit.stderr
    assert json.loads(debit.stdout)["balance"] == 1.75
    deadline = time.monotonic() + 5
    while _api(gw, f"/platforms/{gw.platform_id}/wallet")["balance"] != 1.75:
        assert time.monotonic() < deadline, "the running gateway never saw the credits"
        time.sleep(0.1)
    statement = _api(gw, f"/platforms/{gw.platform_id}/wallet/transactions")["data"]
    assert [(t["type"], t["amount"], t["balance_after"]) for t in statement[:2]] == [
        ("adjustment", -0.75, 1.75), ("refund", 2.5, 2.5)]
    assert gw.stop() == 0
    verify = gw.cli("replay", "--data-dir", str(gw.data_dir), "verify", check=False)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_bad_credits_are_refused_and_record_nothing(fresh_gateway):
    """Bad amounts, missing reasons, overdrafts, unknown platforms and a reused id exit 2 with nothing recorded."""
    gw = fresh_gateway
    assert _credit(gw, "--kind", "refund", "--amount", "1", "--description", "x",
                   "--transaction-id", "txn_once").returncode == 0
    before = _positions(gw)
    cases = [
        ("--kind", "refund", "--amount", "-1", "--description", "x"),
        ("--kind", "refund", "--amount", "1.0000001", "--description", "x"),
        ("--kind", "refund", "--amount", "ten", "--description", "x"),
        ("--kind", "adjustment", "--amount", "0", "--description", "x"),
        ("--kind", "refund", "--amount", "1"),  # no description
        ("--kind", "adjustment", "--amount", "-5", "--description", "more than the balance"),
        ("--kind", "refund", "--amount", "2", "--description", "x", "--transaction-id", "txn_once"),
    ]
    for case in cases:
        refused = _credit(gw, *case)
        assert refused.returncode == 2 and b"assistiv wallet credit:" in refused.stderr, case
        assert b"Traceback" not in refused.stderr, case
    unknown = gw.cli("wallet", "credit", "--data-dir", str(gw.data_dir), "--platform", "plat_nope", "--kind",
                     "refund", "--amount", "1", "--description", "x", check=False)
    assert unknown.returncode == 2 and b"no platform" in unknown.stderr
    assert _positions(gw) == before
    again = _credit(gw, "--kind", "refund", "--amount", "1", "--description", "x", "--transaction-id", "txn_once")
    assert again.returncode == 0 and _positions(gw) == before  # the same id and values: the original answer

"""Materialised finance projections: a separate SQLite file (sqlite-utils) that reports query.

Tables (``<ledger dir>/projections.db`` by default):

    usage_rows           the request log: a row per model call (usage.charged) and per hosted MCP
                         tool call, as logged when charged, by (position, n)
    wallet_transactions  each wallet transaction with its balance after, by (position, n)
    budget_transactions  each budget transaction with its remaining after, by (position, n)
    accounts             each wallet and budget's folded state (JSON), to continue the fold
    checkpoints          per projection (usage, money): the ledger position folded so far and
                         that record's hash

The tables are written by the projections' own folds (projections.money, projections.usage)
and each window of events is committed in one transaction together with the checkpoints,
so the file is always the fold of exactly the events up to its checkpoint. ``update``
continues from the checkpoint (after checking the ledger still holds the checkpoint's
record with the same hash: a ledger replaced, rewritten or truncated under it raises
Stale), ``rebuild`` recreates the file from position 0 next to the old one and swaps it in.
It is re-derivable, so it syncs NORMAL, not FULL.

The window's transaction is this module's own ``BEGIN IMMEDIATE``; sqlite-utils 4 nests its
writes inside it as savepoints (3.x committed inside ``insert_all``, splitting rows from
their checkpoint: hence the pin to >= 4.0 and tests/test_replay_tools.py's injected failure).

Cancellation (Ctrl-C): the open window's transaction rolls back; the file keeps the last
committed window and its checkpoint, and the next update continues from there.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Callable, Optional

import cattrs
import orjson
import sqlite_utils

from ledger.errors import LedgerError
from ledger.sqlite import hash_at
from ledger.store import Recorded
from projections.money import Budget, MoneyProjection, Wallet
from projections.usage import UsageProjection
from replay.rows import RESPONSE_ONLY_TAGS, head, record, scan

PROJECTIONS_FILE = "projections.db"
WINDOW_EVENTS = 50_000  # ledger positions folded per committed transaction
NAMES = ("usage", "money")
TABLES = {  # table -> primary key, for comparisons
    "usage_rows": "position, n",
    "wallet_transactions": "position, n",
    "budget_transactions": "position, n",
    "accounts": "key",
}
_state = cattrs.Converter(forbid_extra_keys=True)


class Stale(LedgerError):
    """The materialised file does not belong to this ledger (any more); rebuild it."""


def projections_path(ledger: Path) -> Path:
    return Path(ledger).parent / PROJECTIONS_FILE


def open_db(path: Path) -> sqlite_utils.Database:
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 30000")
    conn.execute("PRAGMA synchronous = NORMAL")
    db = sqlite_utils.Database(conn)
    create_schema(db)
    return db


def create_schema(db: sqlite_utils.Database) -> None:
    db["checkpoints"].create({"name": str, "position": int, "hash": str}, pk="name", if_not_exists=True)
    db["usage_rows"].create({
        "position": int, "n": int, "event_id": str, "platform_id": str, "end_user_id": str, "response_id": str,
        "request_type": str, "provider": str, "model": str, "input_tokens": int, "cached_input_tokens": int,
        "output_tokens": int, "reasoning_tokens": int, "latency_ms": int, "cost_micros": int, "status": str,
        "token_count_method": str, "billing_status": str, "price_version_id": str, "created_at": int, "day": str,
    }, pk=("position", "n"), if_not_exists=True)
    db["usage_rows"].create_index(["platform_id", "created_at"], if_not_exists=True)
    db["usage_rows"].create_index(["end_user_id", "created_at"], if_not_exists=True)
    txn = {"position": int, "n": int, "platform_id": str, "id": str, "type": str, "amount_micros": int,
           "balance_after_micros": int, "created_at": int, "description": str}
    db["wallet_transactions"].create(txn, pk=("position", "n"), if_not_exists=True)
    db["wallet_transactions"].create_index(["platform_id", "position"], if_not_exists=True)
    db["budget_transactions"].create({**txn, "end_user_id": str}, pk=("position", "n"), if_not_exists=True)
    db["budget_transactions"].create_index(["end_user_id", "position"], if_not_exists=True)
    db["accounts"].create({"key": str, "kind": str, "owner": str, "platform_id": str, "position": int,
                           "state": str}, pk="key", if_not_exists=True)


def checkpoint(db: sqlite_utils.Database) -> tuple[int, str]:
    """(position, hash) every materialised projection has reached (0, "" when new)."""
    rows = {name: (pos, h) for name, pos, h in db.execute("SELECT name, position, hash FROM checkpoints")}
    if set(rows) != set(NAMES):
        return (0, "") if not rows else min(rows.values())
    return min(rows.values())


class Materialiser:
    """The money and usage folds, with each step's rows kept until ``flush``."""

    def __init__(self, money: Optional[MoneyProjection] = None) -> None:
        self.money = money or MoneyProjection()
        self.usage = UsageProjection()
        self.rows: dict[str, list[dict]] = {"usage_rows": [], "wallet_transactions": [], "budget_transactions": []}
        self.dirty: dict[str, tuple[str, str, str, object, int]] = {}

    def apply(self, recorded: Recorded) -> None:
        self.usage.apply(recorded)
        platform_id = getattr(recorded.event, "platform_id", None)
        logged = self.usage.rows.get(platform_id) if platform_id else None
        if logged:  # the usage fold logged a call (a model call, or a hosted MCP tool call)
            for n, row in enumerate(logged):
                self.rows["usage_rows"].append({
                    "position": recorded.position, "n": n, "event_id": row.id, "platform_id": row.platform_id,
                    "end_user_id": row.end_user_id, "response_id": row.response_id, "request_type": row.request_type,
                    "provider": row.provider_id, "model": row.model_id, "input_tokens": row.prompt_tokens,
                    "cached_input_tokens": row.cached_tokens, "output_tokens": row.completion_tokens,
                    "reasoning_tokens": row.reasoning_tokens, "latency_ms": row.latency_ms,
                    "cost_micros": row.cost_micros, "status": row.status, "token_count_method": row.token_count_method,
                    "billing_status": row.billing_status, "price_version_id": row.price_version_id,
                    "created_at": row.created_at, "day": _day(row.created_at)})
            logged.clear()  # written out; the fold only appends (later changes to a row are not kept)
        self.money.apply(recorded)
        for account in self._accounts_of(recorded):
            if isinstance(account, Wallet):
                key, table, extra = f"wallet:{account.platform_id}", "wallet_transactions", {}
                self.dirty[key] = ("wallet", account.platform_id, account.platform_id, account, recorded.position)
            else:
                key, table, extra = f"budget:{account.end_user_id}", "budget_transactions", {
                    "end_user_id": account.end_user_id}
                self.dirty[key] = ("budget", account.end_user_id, account.platform_id, account, recorded.position)
            for n, txn in enumerate(account.transactions):
                self.rows[table].append({"position": recorded.position, "n": n, "platform_id": account.platform_id,
                                         "id": txn.id, "type": txn.type, "amount_micros": txn.amount_micros,
                                         "balance_after_micros": txn.balance_after_micros,
                                         "created_at": txn.created_at, "description": txn.description, **extra})
            account.transactions.clear()  # written out; the fold only ever appends

    def _accounts_of(self, recorded: Recorded) -> list:
        """The wallet and budget an event names: any event may change them (kept dirty until flushed)."""
        event = recorded.event
        found = [self.money.wallets.get(getattr(event, "platform_id", None) or "")]
        found.append(self.money.budgets.get(getattr(event, "end_user_id", None) or ""))
        return [a for a in found if a is not None]

    def flush(self, db: sqlite_utils.Database, position: int, hash_: str) -> None:
        """Write the kept rows, the changed accounts and the checkpoints (inside the caller's transaction)."""
        for table, rows in self.rows.items():
            if rows:
                db[table].insert_all(rows, batch_size=500)
            rows.clear()
        accounts = [{"key": key, "kind": kind, "owner": owner, "platform_id": pid, "position": pos,
                     "state": orjson.dumps(_state.unstructure(account), option=orjson.OPT_SORT_KEYS).decode()}
                    for key, (kind, owner, pid, account, pos) in self.dirty.items()]
        if accounts:
            db["accounts"].upsert_all(accounts, pk="key")
        self.dirty.clear()
        db["checkpoints"].upsert_all([{"name": n, "position": position, "hash": hash_} for n in NAMES], pk="name")

    @classmethod
    def load(cls, db: sqlite_utils.Database) -> "Materialiser":
        """Continue the folds from the accounts' stored state."""
        money = MoneyProjection()
        for kind, owner, state in db.execute("SELECT kind, owner, state FROM accounts"):
            if kind == "wallet":
                money.wallets[owner] = _state.structure(orjson.loads(state), Wallet)
            else:
                money.budgets[owner] = _state.structure(orjson.loads(state), Budget)
        return cls(money)


def _day(at_s: int) -> str:
    import datetime as dt

    return dt.datetime.fromtimestamp(at_s, dt.timezone.utc).date().isoformat()


def update(ledger: sqlite3.Connection, path: Path, progress: Optional[Callable[[int, int], None]] = None) -> int:
    """Fold what the ledger recorded after the file's checkpoint into it; return the new checkpoint."""
    db = open_db(path)
    try:
        head_position, _ = head(ledger)
        position, hash_ = checkpoint(db)
        if position > head_position or (position and hash_at(ledger, position) != hash_):
            raise Stale(f"{path} was made from another ledger (or this one was rewritten or truncated before "
                        f"position {position}); run `assistiv replay rebuild`")
        folds = Materialiser.load(db)
        while position < head_position:
            upto = min(position + WINDOW_EVENTS, head_position)
            for row in scan(ledger, position, upto, without=RESPONSE_ONLY_TAGS, blob=True):
                folds.apply(record(row))
            db.execute("BEGIN IMMEDIATE")
            try:
                if checkpoint(db)[0] != position:  # another process got there first: continue from its state
                    db.execute("ROLLBACK")
                    folds, position = Materialiser.load(db), checkpoint(db)[0]
                    continue
                folds.flush(db, upto, hash_at(ledger, upto) or "")
                db.execute("COMMIT")
            except BaseException:
                if db.conn.in_transaction:
                    db.execute("ROLLBACK")
                raise
            position = upto
            if progress is not None:
                progress(position, head_position)
        return position
    finally:
        db.conn.close()


def rebuild(ledger: sqlite3.Connection, path: Path, progress: Optional[Callable[[int, int], None]] = None) -> int:
    """Recreate the file from position 0 (beside the old one, swapped in when complete)."""
    fresh = path.with_name(path.name + ".rebuild")
    for leftover in (fresh, Path(f"{fresh}-journal")):
        leftover.unlink(missing_ok=True)
    position = update(ledger, fresh, progress)
    os.replace(fresh, path)
    return position

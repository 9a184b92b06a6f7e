"""``assistiv report ...``: finance reports from the materialised projections (replay.materialise).

    usage  --platform P [--group-by end_user,model,day] [--from T] [--to T]   requests, tokens, cost
    wallet --platform P [--from T] [--to T]      statement: opening balance, each transaction, closing
    budget --end-user E [--from T] [--to T]      the budget's settings and statement (remaining after each)

Every report first brings the projections file up to the ledger's head (incrementally from
its checkpoint; progress on a terminal), then reads it. ``--format table|csv|json``. Amounts
are exact: integer micro-USD, and USD as decimal strings with 6 places. Usage groups are
summed by the same code as ``GET /v1/platforms/{id}/usage`` (projections.usage). A statement
that does not add up (opening + transactions != closing) is reported and exits 1.
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from decimal import Decimal
from typing import Any, Optional

import orjson

from ledger.location import ledger_path
from ledger.sqlite import connect
from projections.usage import LogRow, UsageProjection
from replay.cli import ledger_options, projections_file, quiet_on_broken_pipe
from replay.materialise import Stale, open_db, update
from replay.parallel import Progress
from replay.timeparse import iso, time_arg

GROUP_BY = ("end_user", "model", "day")


def usd(micros: Optional[int]) -> Optional[str]:
    return None if micros is None else str((Decimal(micros) / 1_000_000).quantize(Decimal("0.000001")))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistiv report", description="Finance reports from the ledger.")
    ledger_options(parser, top=True)
    commands = parser.add_subparsers(dest="report", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_)
        ledger_options(sub, top=False)
        sub.add_argument("--from", dest="from_s", type=time_arg, help="ISO date/time (UTC) or unix seconds")
        sub.add_argument("--to", dest="to_s", type=time_arg, help="exclusive; ISO date/time (UTC) or unix seconds")
        sub.add_argument("--format", choices=("table", "csv", "json"), default="table")
        return sub

    usage = command("usage", "requests, tokens and cost, grouped")
    usage.add_argument("--platform", required=True)
    usage.add_argument("--group-by", default="model", help="comma-separated: end_user, model, day")
    command("wallet", "a platform wallet's statement").add_argument("--platform", required=True)
    budget = command("budget", "an end user's budget and its statement")
    budget.add_argument("--end-user", required=True)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    return quiet_on_broken_pipe(_main, argv)


def _main(argv: Optional[list[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    path = ledger_path(args.data_dir, args.database_url)
    if not path.exists():
        print(f"no ledger at {path}", file=sys.stderr)
        return 2
    target = projections_file(path, args)
    progress = Progress("projections", 0, " events")
    try:
        update(connect(path, readonly=True), target, lambda done, total: progress.update(done, total))
    except Stale as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        progress.close()
    db = open_db(target)
    try:
        if args.report == "usage":
            group_by = [g for g in args.group_by.split(",") if g]
            unknown = [g for g in group_by if g not in GROUP_BY]
            if unknown:
                parser.error(f"--group-by: {', '.join(unknown)} is not one of {', '.join(GROUP_BY)}")
            return usage_report(db, args.platform, group_by, args.from_s, args.to_s, args.format, sys.stdout)
        if args.report == "wallet":
            rows = db.execute("SELECT * FROM wallet_transactions WHERE platform_id = ? ORDER BY position, n",
                              (args.platform,))
            return statement(rows, {"platform_id": args.platform}, args, sys.stdout, "balance")
        state = db.execute("SELECT state FROM accounts WHERE key = ?", (f"budget:{args.end_user}",)).fetchone()
        if state is None:
            print(f"end user {args.end_user} has no budget in this ledger", file=sys.stderr)
            return 1
        budget = orjson.loads(state[0])
        head = {"end_user_id": args.end_user, "platform_id": budget["platform_id"], "budget_id": budget["budget_id"],
                "period": budget["period"], "max_usd": usd(budget["max_micros"]),
                "used_usd": usd(budget["used_micros"]),
                "reserved_usd": usd(budget["reserved_micros"]), "is_suspended": budget["is_suspended"]}
        rows = db.execute("SELECT * FROM budget_transactions WHERE end_user_id = ? ORDER BY position, n",
                          (args.end_user,))
        return statement(rows, head, args, sys.stdout, "remaining")
    finally:
        db.conn.close()


def usage_report(db, platform_id: str, group_by: list[str], from_s: Optional[int], to_s: Optional[int], fmt: str,
                 out) -> int:
    cursor = db.execute(
        "SELECT event_id, platform_id, end_user_id, response_id, request_type, provider, model, input_tokens, "
        "cached_input_tokens, output_tokens, reasoning_tokens, latency_ms, cost_micros, status, token_count_method, "
        "billing_status, price_version_id, created_at FROM usage_rows WHERE platform_id = ? "
        "AND created_at >= ? AND created_at < ? ORDER BY position",
        (platform_id, from_s if from_s is not None else -2**62, to_s if to_s is not None else 2**62))
    usage = UsageProjection()
    usage.rows[platform_id] = [LogRow(*row) for row in cursor]
    groups = usage.totals(platform_id, group_by, from_s, to_s)  # the HTTP /usage route's own grouping
    for group in groups:
        group["cost_usd"] = usd(group["cost_micros"])
    columns = group_by + [c for c in ("requests", "mcp_calls", "prompt_tokens", "completion_tokens", "cost_micros",
                                      "cost_usd") if not groups or c in groups[0]]
    total = {c: sum(g[c] for g in groups) for c in columns if c not in group_by and c != "cost_usd"}
    total["cost_usd"] = usd(total.get("cost_micros", 0))
    meta = {"platform_id": platform_id, "group_by": ",".join(group_by), "from": iso(from_s), "to": iso(to_s)}
    write(out, fmt, columns, groups, meta, total, {group_by[0]: "TOTAL"} if group_by else {})
    return 0


def statement(cursor, head: dict[str, Any], args, out, balance_name: str) -> int:
    """Opening balance, each transaction in [from, to), closing balance; exit 1 if it does not add up."""
    opening, lines, problems = 0, [], []
    for row in cursor:
        txn = dict(zip([d[0] for d in cursor.description], row))
        if args.from_s is not None and txn["created_at"] < args.from_s:
            opening = txn["balance_after_micros"]
            continue
        if args.to_s is not None and txn["created_at"] >= args.to_s:
            break
        lines.append(txn)
    running = opening
    for txn in lines:
        if txn["type"] in ("period_reset", "opening_balance"):
            running = txn["balance_after_micros"]  # a budget period (or the budget) starts from its limit
        else:
            running += txn["amount_micros"]
        if running != txn["balance_after_micros"]:
            problems.append(f"transaction {txn['id']} at position {txn['position']}: {balance_name} after "
                            f"{txn['balance_after_micros']}, the statement adds up to {running}")
            running = txn["balance_after_micros"]
    closing = lines[-1]["balance_after_micros"] if lines else opening
    rows = [{"position": t["position"], "created_at": iso(t["created_at"]), "id": t["id"], "type": t["type"],
             "amount_micros": t["amount_micros"], "amount_usd": usd(t["amount_micros"]),
             f"{balance_name}_after_micros": t["balance_after_micros"],
             f"{balance_name}_after_usd": usd(t["balance_after_micros"]), "description": t["description"] or ""}
            for t in lines]
    columns = ["position", "created_at", "id", "type", "amount_micros", "amount_usd", f"{balance_name}_after_micros",
               f"{balance_name}_after_usd", "description"]
    meta = {**head, "from": iso(args.from_s), "to": iso(args.to_s), f"opening_{balance_name}_micros": opening,
            f"opening_{balance_name}_usd": usd(opening), f"closing_{balance_name}_micros": closing,
            f"closing_{balance_name}_usd": usd(closing), "transactions": len(rows)}
    write(out, args.format, columns, rows, meta)
    for problem in problems:
        print(f"DOES NOT ADD UP: {problem}", file=sys.stderr)
    return 1 if problems else 0


def write(out, fmt: str, columns: list[str], rows: list[dict], meta: dict[str, Any],
          total: Optional[dict] = None, label: Optional[dict] = None) -> None:
    """``rows`` as a table (with ``meta`` above and ``total`` below), CSV (rows only) or JSON (all)."""
    if fmt == "json":
        body = {**meta, "data": [{c: r.get(c) for c in columns} for r in rows]}
        if total is not None:
            body["total"] = total
        out.write(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
        out.write(buffer.getvalue())
        return
    for key, value in meta.items():
        if value not in (None, ""):
            out.write(f"{key}: {value}\n")
    table = [columns] + [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    if total is not None:
        footer = {**total, **(label or {})}
        table.append(["" if footer.get(c) is None else str(footer.get(c)) for c in columns])
    widths = [max(len(line[i]) for line in table) for i in range(len(columns))]
    numeric = [len(table) > 1 and all(_number(line[i]) for line in table[1:]) for i in range(len(columns))]
    out.write("\n")
    for n, line in enumerate(table):
        if total is not None and n == len(table) - 1:
            out.write("  ".join("-" * w for w in widths) + "\n")
        cells = [cell.rjust(w) if num else cell.ljust(w) for cell, w, num in zip(line, widths, numeric)]
        out.write("  ".join(cells).rstrip() + "\n")
        if n == 0:
            out.write("  ".join("-" * w for w in widths) + "\n")


def _number(text: str) -> bool:
    """Right-align a column whose cells are all numbers (or empty, or the TOTAL label)."""
    if text in ("", "TOTAL"):
        return True
    try:
        Decimal(text)
        return True
    except ArithmeticError:
        return False


if __name__ == "__main__":
    sys.exit(main())

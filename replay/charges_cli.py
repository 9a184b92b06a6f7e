"""``replay charges``: recompute every (selected) charge and list each difference.

Reads only the ``prices.published`` and ``usage.charged`` rows, in ledger order, so each
charge meets exactly the price versions recorded before it. Exit status 1 if any charge
differs, 0 otherwise.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ledger.events import PricesPublished, UsageCharged
from ledger.sqlite import connect
from replay.charges import ChargeChecker, Selection
from replay.parallel import Progress, no_gc
from replay.rows import BadRow, head, record, scan, tags
from replay.timeparse import iso


def run_charges(path: Path, args: argparse.Namespace) -> int:
    conn = connect(path, readonly=True)
    upto, _ = head(conn)
    selection = Selection(args.platform, args.end_user, args.from_s, args.to_s)
    checker = ChargeChecker(selection)
    progress = Progress("charges", upto, " events")
    listed = []
    try:
        with no_gc():
            for row in scan(conn, 0, upto, only=tags(PricesPublished, UsageCharged), blob=True):
                try:
                    recorded = record(row)
                except BadRow as bad:
                    print(f"position {bad.position}: {bad.reason}")
                    return 1
                before = len(checker.differences), checker.checked
                checker.apply(recorded)
                if args.all and checker.checked > before[1]:
                    listed.append((recorded, len(checker.differences) > before[0]))
                progress.update(row[0])
    finally:
        progress.close()
    for recorded, differs in listed:
        charge = recorded.event
        print(f"{'DIFFERS' if differs else 'ok     '} position {recorded.position} {iso(recorded.recorded_at_s)} "
              f"{charge.response_id} {charge.platform_id}/{charge.end_user_id or '-'} {charge.model} "
              f"{charge.cost_micros} micro-USD {charge.token_count_method} {charge.price_version_id}")
    for difference in checker.differences:
        print(f"DIFFERENCE at {difference.line()}")
    scope = ", ".join(f"{k} {v}" for k, v in (("platform", args.platform), ("end user", args.end_user),
                                               ("from", iso(args.from_s)), ("to", iso(args.to_s))) if v) or "all"
    print(f"charges recomputed: {checker.checked:,} ({scope}); recorded {checker.recorded_micros:,} micro-USD, "
          f"recomputed {checker.recomputed_micros:,} micro-USD; price versions used: "
          f"{', '.join(sorted(checker.used_versions)) or '-'}")
    if checker.differences:
        print(f"{len(checker.differences):,} charges differ", file=sys.stderr)
        return 1
    print("OK: every charge follows from its recorded usage, price version and calculator.")
    return 0

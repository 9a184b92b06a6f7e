"""``assistiv replay ...`` / ``python -m replay ...``: auditor tools over the ledger file alone.

    verify [--url URL] [--against DIR] [--head FILE] [--jobs N]   chain, head anchor, projections, money, charges
    stream RESPONSE_ID [--explain]                   the exact bytes the client was sent (SSE, or the one JSON
                                                     body of a non-streamed request), or a timeline
    charges [--platform P] [--end-user E] [--from T] [--to T]   recompute every charge; list differences
    export --platform P [--end-user E] [--from T] [--to T] --out DIR   a dispute pack
    verify-export DIR [--root HEX]                   check a dispute pack without the ledger
    rebuild                                          recreate the materialised projections file

Exit status: 0 when everything holds, 1 when a check fails, 2 for bad usage or a missing ledger.
``--data-dir`` / ``--database-url`` may come before or after the command.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import urllib.request
from pathlib import Path
from typing import Callable, Optional

from ledger.location import ledger_path
from ledger.sqlite import connect
from replay.timeparse import time_arg


def ledger_options(parser: argparse.ArgumentParser, top: bool) -> None:
    """--data-dir / --database-url / --projections, on the main parser (with defaults) and on each command."""
    def default(value):
        return value if top else argparse.SUPPRESS

    parser.add_argument("--data-dir", default=default(os.environ.get("ASSISTIV_DATA_DIR", ".assistiv")))
    parser.add_argument("--database-url", default=default(os.environ.get("ASSISTIV_DATABASE_URL")))
    parser.add_argument("--projections", default=default(None),
                        help="the materialised projections file (default: projections.db beside the ledger)")


def selection_options(parser: argparse.ArgumentParser, platform_required: bool = False) -> None:
    parser.add_argument("--platform", required=platform_required)
    parser.add_argument("--end-user")
    parser.add_argument("--from", dest="from_s", type=time_arg, help="ISO date/time (UTC) or unix seconds")
    parser.add_argument("--to", dest="to_s", type=time_arg, help="exclusive; ISO date/time (UTC) or unix seconds")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistiv replay", description="Audit the ledger.")
    ledger_options(parser, top=True)
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_)
        ledger_options(sub, top=False)
        return sub

    verify = command("verify", "check the chain, rebuild every projection, check money and charges")
    verify.add_argument("--url", help="a running gateway whose live projections to compare (http://host:port)")
    verify.add_argument("--against", help="an export (its directory or manifest.json) whose head the ledger must hold")
    verify.add_argument("--head", help="the head anchor the gateway wrote (default: <ledger file>.head)")
    verify.add_argument("--jobs", type=int, help="worker processes (default: one per CPU, up to 4)")
    verify.add_argument("--render", action="store_true", help="also render every stream's SSE bytes (slower)")
    stream = command("stream", "print the bytes of one response as they were sent (SSE, or a JSON body)")
    stream.add_argument("response_id")
    stream.add_argument("--explain", action="store_true", help="a readable timeline instead of the bytes")
    charges = command("charges", "recompute every charge from its recorded usage and price version")
    selection_options(charges)
    charges.add_argument("--all", action="store_true", help="list every charge, not only the differences")
    export = command("export", "write a dispute pack for one platform (or end user)")
    selection_options(export, platform_required=True)
    export.add_argument("--out", required=True)
    check = commands.add_parser("verify-export", help="check a dispute pack offline")
    check.add_argument("directory")
    check.add_argument("--root", help="the Merkle root obtained independently (hex); must match the pack's")
    command("rebuild", "recreate the materialised projections file from position 0")
    return parser


def quiet_on_broken_pipe(run: Callable[[Optional[list[str]]], int], argv: Optional[list[str]]) -> int:
    """Run a command; if the reader (head, less) goes away, stop quietly with status 1."""
    try:
        return run(argv)
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def main(argv: Optional[list[str]] = None) -> int:
    return quiet_on_broken_pipe(_main, argv)


def _main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "verify-export":
        from replay.verify_export import main as verify_export_main

        return verify_export_main(Path(args.directory), args.root)
    path = ledger_path(args.data_dir, args.database_url)
    if not path.exists():
        print(f"no ledger at {path}", file=sys.stderr)
        return 2
    if args.command == "verify":
        return _verify(path, args)
    if args.command == "stream":
        from replay.explain import explain, stream_bytes

        if args.explain:
            return explain(connect(path, readonly=True), args.response_id, sys.stdout)
        return stream_bytes(connect(path, readonly=True), args.response_id)
    if args.command == "charges":
        from replay.charges_cli import run_charges

        return run_charges(path, args)
    if args.command == "export":
        from replay.export import run_export

        return run_export(path, args)
    if args.command == "rebuild":
        return _rebuild(path, args)
    return 2


def projections_file(path: Path, args: argparse.Namespace) -> Path:
    from replay.materialise import projections_path

    return Path(args.projections) if getattr(args, "projections", None) else projections_path(path)


def _verify(path: Path, args: argparse.Namespace) -> int:
    from replay.verify import PROBLEMS_SHOWN_MAX, verify_ledger

    live = against = None
    if args.url:
        with urllib.request.urlopen(args.url.rstrip("/") + "/healthz?projections=1", timeout=30) as answer:
            live = json.loads(answer.read())
    if args.against:
        manifest = Path(args.against)
        manifest = manifest / "manifest.json" if manifest.is_dir() else manifest
        data = json.loads(manifest.read_text())
        against = {"tree_size": data["merkle"]["tree_size"], "root": data["merkle"]["root"],
                   "head_hash": data["ledger_head"]["hash"]}
    report = verify_ledger(path, live, args.jobs, against, projections_file(path, args), args.render,
                           Path(args.head) if args.head else None)
    print(f"events checked:   {report.events:,}")
    print(f"chain head:       {report.head_hash}")
    print(f"platforms:        {report.platforms:,} ({report.wallets:,} wallets, {report.budgets:,} budgets)")
    print(f"responses:        {report.responses:,}")
    print(f"price versions:   {report.price_versions:,}")
    print(f"charges:          {report.charges:,} recomputed, {report.charged_micros:,} micro-USD, "
          f"{len(report.differences):,} differ")
    print(f"open holds:       {len(report.in_flight):,} (their requests are still in flight)")
    if report.anchor is not None:
        written = datetime.datetime.fromtimestamp(report.anchor.written_at / 1e6, datetime.timezone.utc)
        print(f"head anchor:      position {report.anchor.position:,}, written {written:%Y-%m-%d %H:%M:%S} UTC "
              f"({report.anchor_file})")
    elif report.anchor_file is None:
        print("head anchor:      none beside the ledger: truncation of the tail cannot be checked "
              "(--head FILE, or --against an export, checks it up to that point)")
    if report.materialised_position is not None:
        print(f"materialised:     checked up to position {report.materialised_position:,}")
    if report.merkle_root is not None:
        print(f"merkle root:      {report.merkle_root} (of the export's tree size)")
    if live is not None:
        print(f"live position:    {live.get('position')}")
    if report.ok:
        print("OK: the hash chain verifies, every projection rebuilds to the same state, every hold is "
              "settled, voided or in flight, every balance adds up and every charge recomputes.")
        return 0
    problems = report.sorted_problems()
    for position, message in problems[:PROBLEMS_SHOWN_MAX]:
        print(f"FAILED{f' at position {position}' if position is not None else ''}: {message}")
    if len(problems) > PROBLEMS_SHOWN_MAX:
        print(f"... and {len(problems) - PROBLEMS_SHOWN_MAX} more")
    if report.first_bad_position is not None:
        print(f"first bad position: {report.first_bad_position}")
    return 1


def _rebuild(path: Path, args: argparse.Namespace) -> int:
    from replay.materialise import rebuild
    from replay.parallel import Progress

    target = projections_file(path, args)
    conn = connect(path, readonly=True)
    progress = Progress("rebuild", 0, " events")
    try:
        position = rebuild(conn, target, lambda done, total: progress.update(done, total))
    finally:
        progress.close()
    print(f"rebuilt {target} from position 0 to {position:,}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

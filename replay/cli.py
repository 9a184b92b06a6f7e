"""``assistiv replay ...`` / ``python -m replay ...``: auditor tools over the ledger file alone.

    verify [--url URL]       chain + rebuild check (and against a running gateway)
    stream RESPONSE_ID       the exact SSE bytes the client was sent, to stdout
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from typing import Optional

from ledger.location import ledger_path
from ledger.sqlite import connect, row_to_record


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="assistiv replay", description="Audit the ledger.")
    parser.add_argument("--data-dir", default=os.environ.get("ASSISTIV_DATA_DIR", ".assistiv"))
    parser.add_argument("--database-url", default=os.environ.get("ASSISTIV_DATABASE_URL"))
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="check the hash chain and rebuild every projection")
    verify.add_argument("--url", help="a running gateway whose live projections to compare (http://host:port)")
    stream = commands.add_parser("stream", help="print the SSE bytes of one response as they were sent")
    stream.add_argument("response_id")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    path = ledger_path(args.data_dir, args.database_url)
    if not path.exists():
        print(f"no ledger at {path}", file=sys.stderr)
        return 2
    conn = connect(path, readonly=True)
    if args.command == "verify":
        return _verify(conn, args.url)
    if args.command == "stream":
        return _stream(conn, args.response_id)
    return 2


def _verify(conn, url: Optional[str]) -> int:
    from replay.verify import verify_ledger

    live = None
    if url:
        with urllib.request.urlopen(url.rstrip("/") + "/healthz?projections=1", timeout=30) as answer:
            live = json.loads(answer.read())
    report = verify_ledger(conn, live)
    print(f"events checked:   {report.events}")
    print(f"chain head:       {report.head_hash}")
    print(f"platforms:        {report.platforms}")
    print(f"responses:        {report.responses}")
    if live is not None:
        print(f"live position:    {live.get('position')}")
    if report.ok:
        print("OK: the hash chain verifies and every projection rebuilds to the same state.")
        return 0
    for problem in report.problems:
        print(f"MISMATCH: {problem}")
    if report.first_bad_position is not None:
        print(f"first bad position: {report.first_bad_position}")
    return 1


def _stream(conn, response_id: str) -> int:
    from projections.responses import response_stream
    from projections.wire import render_stream

    rows = conn.execute(
        "SELECT position, stream, version, event_id, type, recorded_at, prev_hash, hash, data FROM events "
        "WHERE stream = ? ORDER BY version",
        (response_stream(response_id),),
    ).fetchall()
    if not rows:
        print(f"no response {response_id!r} in this ledger", file=sys.stderr)
        return 1
    sys.stdout.buffer.write(render_stream([row_to_record(r) for r in rows]))
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())

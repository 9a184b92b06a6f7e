"""``replay export``: write a dispute pack (see replay.pack) for one platform or end user.

One pass over the whole ledger in position order: every record's hash is recomputed (an
export never vouches for a broken chain) and collected for the Merkle tree; the tenant's
rows are kept as stored. A response stream belongs to the tenant of its
``response.accepted``. Then the tree over every record hash gives the root and each kept
row's inclusion proof, and the files are written, the manifest last (a pack without a
manifest is unfinished).

Cancellation (Ctrl-C): files already written stay; without manifest.json the directory is
not a pack, and verify-export says so.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from pathlib import Path
from typing import Any

import orjson

from ledger.events import PricesPublished, ResponseAccepted, UsageCharged
from ledger.sqlite import connect
from replay import pack
from replay.chain_check import fast_record_hash
from replay.merkle import Tree
from replay.parallel import Progress, no_gc
from replay.rows import COLUMNS, BadRow, decode, head, record


class ExportFailed(Exception):
    """The ledger cannot vouch for a pack (its chain is broken at ``position``)."""


def collect(conn, selection: pack.Selection, progress: Progress) -> tuple[list[bytes], list[tuple], dict[str, tuple]]:
    """(every record hash in order, the selected rows, price-version rows by id) up to the head."""
    upto, _ = head(conn)
    progress.update(0, upto)
    leaves: list[bytes] = []
    selected: list[tuple] = []
    prices: dict[str, tuple] = {}
    responses: dict[str, bool] = {}  # response stream -> selected
    previous = "0" * 64
    cursor = conn.execute(f"SELECT {', '.join(COLUMNS)}, CAST(data AS BLOB) FROM events WHERE position <= ? "
                          "ORDER BY position", (upto,))
    while batch := cursor.fetchmany(20_000):
        for full in batch:
            row, blob = full[:9], full[9]
            position, stream, version, event_id, type_, recorded_at, prev_hash, hash_ = row[:8]
            if position != len(leaves) + 1 or prev_hash != previous or \
                    fast_record_hash(prev_hash, position, stream, version, event_id, recorded_at, blob) != hash_:
                raise ExportFailed(f"the hash chain is broken at position {len(leaves) + 1}; run `replay verify`")
            previous = hash_
            leaves.append(bytes.fromhex(hash_))
            if stream.startswith("response-"):
                chosen = responses.get(stream)
                if chosen is None:
                    event = decode(position, type_, row[8])
                    chosen = responses[stream] = isinstance(event, ResponseAccepted) and \
                        selection.owns_response(event) and selection.in_time(recorded_at // 1_000_000)
                if chosen:
                    selected.append(row)
            elif type_ == "prices.published":
                event = decode(position, type_, row[8])
                if isinstance(event, PricesPublished):
                    prices.setdefault(event.version_id, row)
            elif selection.in_time(recorded_at // 1_000_000) and \
                    f'"{selection.platform_id}"' in row[8] and selection.owns(decode(position, type_, row[8])):
                selected.append(row)
        progress.update(len(leaves))
    return leaves, selected, prices


def write_pack(out: Path, selection: pack.Selection, leaves: list[bytes], selected: list[tuple],
               price_rows: dict[str, tuple]) -> dict[str, Any]:
    """Build the tree and write the four files; return the manifest."""
    records = [record(r) for r in selected]
    used = sorted({r.event.price_version_id for r in records if isinstance(r.event, UsageCharged)} - {""})
    prices = [price_rows[v] for v in used if v in price_rows]
    prices.sort(key=lambda r: r[0])
    versions = [decode(r[0], r[4], r[8]) for r in prices]
    tree = Tree(leaves)
    size = tree.size

    def lines(rows: list[tuple]) -> bytes:
        return b"".join(orjson.dumps(dict(zip(COLUMNS, r))) + b"\n" for r in rows)

    files = {pack.EVENTS_FILE: lines(selected), pack.PRICES_FILE: lines(prices)}
    proven = sorted(selected + prices, key=lambda r: r[0])
    files[pack.PROOFS_FILE] = b"".join(orjson.dumps({"position": r[0], "path": [p.hex() for p in tree.proof(r[0] - 1)]})
                                       + b"\n" for r in proven)
    manifest = {
        "format": pack.FORMAT,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat().replace("+00:00", "Z"),
        "selection": selection.as_json(),
        "ledger_head": {"position": size, "hash": leaves[-1].hex() if leaves else "0" * 64},
        "merkle": {"tree_size": size, "root": tree.root.hex(),
                   "head_proof": [p.hex() for p in tree.proof(size - 1)] if size else []},
        "spec": pack.SPEC,
        "events": {"count": len(selected), "first_position": selected[0][0] if selected else None,
                   "last_position": selected[-1][0] if selected else None, "by_type": pack.by_type(selected)},
        "totals": pack.totals(records),
        "price_versions": [{"version_id": v.version_id, "position": r[0], "sha256": v.sha256,
                            "calculator_version": v.calculator_version} for v, r in zip(versions, prices)],
        "missing_price_versions": [v for v in used if v not in price_rows],
        "streams": pack.stream_spans(selected),
        "files": {name: pack.file_digest(data) for name, data in files.items()},
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (out / name).write_bytes(data)
    (out / pack.MANIFEST_FILE).write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2) + b"\n")
    return manifest


def run_export(path: Path, args: argparse.Namespace) -> int:
    out = Path(args.out)
    if out.exists() and any(out.iterdir()):
        print(f"{out} is not empty; choose a new directory", file=sys.stderr)
        return 2
    selection = pack.Selection(args.platform, args.end_user, args.from_s, args.to_s)
    conn = connect(path, readonly=True)
    progress = Progress("export", 0, " events")
    try:
        with no_gc():
            leaves, selected, prices = collect(conn, selection, progress)
    except (ExportFailed, BadRow) as exc:
        progress.close()
        print(f"export refused: {exc}", file=sys.stderr)
        return 1
    progress.close()
    manifest = write_pack(out, selection, leaves, selected, prices)
    events = manifest["events"]
    print(f"exported {events['count']:,} events (positions {events['first_position']}..{events['last_position']}) "
          f"and {len(manifest['price_versions'])} price versions to {out}")
    print(f"ledger head: position {manifest['ledger_head']['position']:,}, hash {manifest['ledger_head']['hash']}")
    print(f"merkle root: {manifest['merkle']['root']} (tree size {manifest['merkle']['tree_size']:,})")
    print(f"charged: {manifest['totals']['charged_micros']:,} micro-USD over {manifest['totals']['charges']:,} charges")
    return 0

"""``replay verify-export DIR``: check a dispute pack offline, without the ledger.

1. Files: each one's SHA-256 and line count are the manifest's (a truncated or edited file
   is caught), and the manifest is a pack of this format.
2. Records: each row's chain hash is recomputed from its own fields; rows at consecutive
   positions link (prev_hash); positions only increase and lie inside the tree; each row
   decodes and its type column is its tag.
3. Proofs: every row's hash is proven (RFC 6962 inclusion) against the manifest's Merkle
   root at the manifest's tree size, and so is the head hash; with ``root`` (obtained
   independently) the manifest's root must be that one. A proof shows membership, never
   completeness: an event cut out of the pack leaves every other proof valid. That nothing
   selected is missing rests on 4 and 5 (the manifest's counts, the complete streams) and
   on the manifest being the exporter's (its root checked against one obtained apart).
4. Selection: every event belongs to the selected tenant and time window (a response stream
   only with its ``response.accepted``), and the streams the manifest calls complete have
   every version between their first and last.
5. Counts and totals recomputed from the events equal the manifest's; first and last
   positions too.
6. Charges: each ``usage.charged`` recomputes from its usage with the price version the
   pack includes (proven like the events, its table hashing to its sha256).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Optional

import orjson

from ledger.chain import GENESIS_HASH, record_hash
from ledger.events import ResponseAccepted
from replay import pack
from replay.charges import ChargeChecker
from replay.merkle import leaf_hash, verify_inclusion
from replay.rows import COLUMNS, BadRow, record

PROBLEMS_SHOWN_MAX = 50


def _rows(data: bytes, name: str, problems: list[str]) -> list[tuple]:
    rows = []
    for number, line in enumerate(data.splitlines(), 1):
        try:
            value = orjson.loads(line)
            rows.append(tuple(value[c] for c in COLUMNS))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            problems.append(f"{name} line {number}: not a stored row ({exc})")
    return rows


def check_pack(directory: Path, root: Optional[str] = None) -> tuple[list[str], dict[str, Any]]:
    """(problems, facts) for the pack in ``directory``."""
    problems: list[str] = []
    manifest_path = directory / pack.MANIFEST_FILE
    if not manifest_path.exists():
        return [f"{manifest_path} is missing: not a finished dispute pack"], {}
    manifest = orjson.loads(manifest_path.read_bytes())
    if manifest.get("format") != pack.FORMAT:
        return [f"unknown pack format {manifest.get('format')!r}"], {}
    files: dict[str, bytes] = {}
    for name in (pack.EVENTS_FILE, pack.PRICES_FILE, pack.PROOFS_FILE):
        data = (directory / name).read_bytes() if (directory / name).exists() else b""
        files[name] = data
        if pack.file_digest(data) != manifest["files"].get(name):
            problems.append(f"{name}: SHA-256 or line count differs from the manifest (truncated or edited)")
    events = _rows(files[pack.EVENTS_FILE], pack.EVENTS_FILE, problems)
    prices = _rows(files[pack.PRICES_FILE], pack.PRICES_FILE, problems)
    size, tree_root = manifest["merkle"]["tree_size"], bytes.fromhex(manifest["merkle"]["root"])
    if root is not None and root.lower() != manifest["merkle"]["root"]:
        problems.append(f"the pack's Merkle root {manifest['merkle']['root']} is not the root given ({root})")
    _check_records(events, "events", size, problems)
    _check_records(prices, "prices", size, problems)
    _check_proofs(files[pack.PROOFS_FILE], events + prices, manifest, size, tree_root, problems)
    records = []
    for row in events:
        try:
            records.append(record(row))
        except BadRow as bad:
            problems.append(f"event at position {bad.position}: {bad.reason}")
    _check_selection(records, pack.Selection(**{k: manifest["selection"][k] for k in
                                                ("platform_id", "end_user_id", "from_s", "to_s")}), problems)
    _check_counts(events, records, manifest, problems)
    checker = _check_charges(records, prices, manifest, problems)
    facts = {"events": len(events), "prices": len(prices), "tree_size": size, "root": manifest["merkle"]["root"],
             "head": manifest["ledger_head"], "charges": checker.checked, "charged_micros": checker.recorded_micros,
             "selection": manifest["selection"]}
    return problems, facts


def _check_records(rows: list[tuple], name: str, size: int, problems: list[str]) -> None:
    previous: Optional[tuple] = None
    for row in rows:
        position, stream, version, event_id, _type, recorded_at, prev_hash, hash_, data = row
        if not isinstance(position, int) or not 1 <= position <= size:
            problems.append(f"{name}: position {position!r} is outside the tree of {size}")
            continue
        if previous is not None and position <= previous[0]:
            problems.append(f"{name}: position {position} does not follow {previous[0]} (reordered?)")
        try:
            again = record_hash(prev_hash, position, stream, version, event_id, recorded_at, data.encode())
        except (ValueError, TypeError) as exc:
            again = f"unhashable ({exc})"
        if again != hash_:
            problems.append(f"{name}: the record at position {position} does not hash to its stored hash (edited)")
        if previous is not None and position == previous[0] + 1 and prev_hash != previous[7]:
            problems.append(f"{name}: position {position} does not continue the chain of position {previous[0]}")
        if position == 1 and prev_hash != GENESIS_HASH:
            problems.append(f"{name}: position 1 does not start from the genesis hash")
        previous = row


def _check_proofs(data: bytes, rows: list[tuple], manifest: dict, size: int, root: bytes,
                  problems: list[str]) -> None:
    proofs: dict[int, list[bytes]] = {}
    for line in data.splitlines():
        try:
            value = orjson.loads(line)
            proofs[value["position"]] = [bytes.fromhex(p) for p in value["path"]]
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            problems.append("proofs.jsonl: a line is not a proof")
    for row in rows:
        position, hash_ = row[0], row[7]
        path = proofs.get(position)
        if path is None:
            problems.append(f"no inclusion proof for position {position}")
        elif not verify_inclusion(leaf_hash(bytes.fromhex(hash_)), position - 1, size, path, root):
            problems.append(f"the inclusion proof of position {position} does not lead to the Merkle root")
    head = manifest["ledger_head"]
    head_proof = [bytes.fromhex(p) for p in manifest["merkle"].get("head_proof", [])]
    if head["position"] != size or not verify_inclusion(leaf_hash(bytes.fromhex(head["hash"])), size - 1, size,
                                                        head_proof, root):
        problems.append("the ledger head is not proven to be the last leaf of the Merkle tree")


def _check_selection(records: list, selection: pack.Selection, problems: list[str]) -> None:
    accepted: dict[str, bool] = {}
    for recorded in records:
        event, stream = recorded.event, recorded.stream
        if stream.startswith("response-"):
            if isinstance(event, ResponseAccepted):
                accepted[stream] = selection.owns_response(event) and selection.in_time(recorded.recorded_at_s)
            if not accepted.get(stream):
                problems.append(f"position {recorded.position}: response stream {stream} is not the selected "
                                "tenant's (or its response.accepted is missing or out of the window)")
        elif not (selection.owns(event) and selection.in_time(recorded.recorded_at_s)):
            problems.append(f"position {recorded.position}: not an event of the selected tenant and window")


def _check_counts(events: list[tuple], records: list, manifest: dict, problems: list[str]) -> None:
    stated = manifest["events"]
    found = {"count": len(events), "first_position": events[0][0] if events else None,
             "last_position": events[-1][0] if events else None, "by_type": pack.by_type(events)}
    for key, value in found.items():
        if stated.get(key) != value:
            problems.append(f"manifest events.{key} is {stated.get(key)!r}, the pack holds {value!r}")
    if pack.totals(records) != manifest["totals"]:
        problems.append(f"manifest totals {manifest['totals']} differ from the events' {pack.totals(records)}")
    spans = pack.stream_spans(events)
    for stream, span in manifest.get("streams", {}).items():
        if span.get("complete") and spans.get(stream) != span:
            problems.append(f"stream {stream}: the manifest says versions {span['first_version']}.."
                            f"{span['last_version']} are all here; the pack holds {spans.get(stream)}")


def _check_charges(records: list, prices: list[tuple], manifest: dict, problems: list[str]) -> ChargeChecker:
    checker = ChargeChecker()
    proven_prices = []
    for row in prices:
        try:
            proven_prices.append(record(row))
        except BadRow as bad:
            problems.append(f"price version at position {bad.position}: {bad.reason}")
    stated = {v["version_id"]: v for v in manifest.get("price_versions", [])}
    found = {r.event.version_id for r in proven_prices if hasattr(r.event, "version_id")}
    if set(stated) != found:
        problems.append(f"manifest price versions {sorted(stated)} differ from the pack's {sorted(found)}")
    for recorded in sorted(proven_prices + records, key=lambda r: r.position):  # a version must precede its charges
        checker.apply(recorded)
    for difference in checker.differences:
        problems.append(f"charge differs: {difference.line()}")
    return checker


def main(directory: Path, root: Optional[str] = None) -> int:
    problems, facts = check_pack(directory, root)
    if facts:
        selection = facts["selection"]
        print(f"pack:          {directory} (platform {selection['platform_id']}, end user "
              f"{selection['end_user_id'] or '-'}, {selection['from'] or 'start'} .. {selection['to'] or 'end'})")
        print(f"events:        {facts['events']:,} (+ {facts['prices']} price versions), each proven")
        print(f"ledger head:   position {facts['head']['position']:,}, hash {facts['head']['hash']}")
        print(f"merkle root:   {facts['root']} (tree size {facts['tree_size']:,})")
        print(f"charges:       {facts['charges']:,} recomputed, {facts['charged_micros']:,} micro-USD")
    if not problems:
        print("OK: every record hashes to its stored hash, every inclusion proof leads to the root, the totals "
              "and every charge recompute.")
        if root is None:
            print("Compare the Merkle root with one obtained independently (or pass --root).")
        return 0
    for problem in problems[:PROBLEMS_SHOWN_MAX]:
        print(f"FAILED: {problem}")
    if len(problems) > PROBLEMS_SHOWN_MAX:
        print(f"... and {len(problems) - PROBLEMS_SHOWN_MAX} more")
    return 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))

"""The pieces replay's speed rests on agree with the slow, obvious versions.

RFC 6962 Merkle trees against the published Certificate Transparency vectors and a
recursive reference; the hand-built chain envelope against ledger.chain.record_hash; the
fast decoder against the codec; the hash chain checked in ranges against one sequential
pass; and skipping the response-only events in the non-response folds changes nothing.
"""

from __future__ import annotations

import hashlib
import pickle
import sqlite3

import orjson
import pytest

from ledger.chain import ChainVerifier, record_hash
from ledger.codec import event_from_dict, event_from_json
from ledger.errors import ChainBroken, LedgerError
from ledger.sqlite import connect
from projections.catalog import build_all
from replay import chain_check
from replay.merkle import EMPTY_ROOT, Tree, leaf_hash, root_of, verify_inclusion
from replay.rows import RESPONSE_ONLY, BadRow, decode, record
from tests.conftest import ROOT
from tests.replay_ledger import copy_ledger, money_ledger

# Certificate Transparency's reference data (RFC 6962 test vectors): leaves, MTH of the first n, proofs.
CT_LEAVES = [bytes.fromhex(h) for h in ("", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                        "606162636465666768696a6b6c6d6e6f")]
CT_ROOTS = ["e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328"]
CT_PROOFS = [  # (leaf index, tree size, audit path)
    (0, 8, ["96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4"]),
    (5, 8, ["bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7"]),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (1, 5, ["6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b"]),
]


def reference_path(index: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 6962 section 2.1.1 PATH(m, D[n]), recursively."""
    from tests.test_replay_tools import reference_root

    if len(leaves) <= 1:
        return []
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    if index < k:
        return reference_path(index, leaves[:k]) + [reference_root(leaves[k:])]
    return reference_path(index - k, leaves[k:]) + [reference_root(leaves[:k])]


def test_merkle_matches_the_rfc_6962_vectors():
    """Roots of the first 0..8 CT leaves, streamed and built, and the published audit paths."""
    for n, expected in enumerate(CT_ROOTS):
        assert root_of(CT_LEAVES[:n])[0].hex() == expected == Tree(CT_LEAVES[:n]).root.hex()
    assert EMPTY_ROOT.hex() == CT_ROOTS[0]
    for index, size, path in CT_PROOFS:
        tree = Tree(CT_LEAVES[:size])
        assert [p.hex() for p in tree.proof(index)] == path
        proof = [bytes.fromhex(p) for p in path]
        root = bytes.fromhex(CT_ROOTS[size])
        assert verify_inclusion(leaf_hash(CT_LEAVES[index]), index, size, proof, root)
        assert not verify_inclusion(leaf_hash(CT_LEAVES[index]), index, size, proof, bytes.fromhex(CT_ROOTS[0]))


def test_every_leaf_of_every_small_tree_proves_and_nothing_else_does():
    """Sizes 1..40: each path is the recursive PATH and verifies; a wrong leaf or index fails."""
    for size in range(1, 41):
        leaves = [hashlib.sha256(bytes([size, i])).digest() for i in range(size)]
        tree = Tree(leaves)
        for index in range(size):
            path = tree.proof(index)
            assert path == reference_path(index, leaves)
            assert verify_inclusion(leaf_hash(leaves[index]), index, size, path, tree.root)
            assert not verify_inclusion(leaf_hash(b"forged"), index, size, path, tree.root)
            if size > 1:
                assert not verify_inclusion(leaf_hash(leaves[index]), (index + 1) % size, size, path, tree.root)


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[tuple]:
    ledger = money_ledger(tmp_path_factory)
    path = copy_ledger(ledger, tmp_path_factory.mktemp("units"))
    conn = connect(path, readonly=True)
    found = conn.execute("SELECT position, stream, version, event_id, type, recorded_at, prev_hash, hash, data "
                         "FROM events ORDER BY position").fetchall()
    conn.close()
    return found


def test_fast_record_hash_is_record_hash(rows):
    """On every row of a real ledger, and on awkward strings, the hand-built envelope hashes the same."""
    for position, stream, version, event_id, _, recorded_at, prev_hash, hash_, data in rows:
        args = (prev_hash, position, stream, version, event_id, recorded_at, data.encode())
        assert chain_check.fast_record_hash(*args) == record_hash(*args) == hash_
    for stream, event_id in (('we"ird\\ström 👋', "id\n\t\u2028"), ("", "")):
        args = ("ab" * 32, 7, stream, 3, event_id, -5, b'{"type":"x"}')
        assert chain_check.fast_record_hash(*args) == record_hash(*args)


def test_fast_decoder_is_the_codec(rows):
    """Every ledger row and every golden event decodes to the codec's event; other shapes defer to the codec."""
    for row in rows:
        assert record(row).event == event_from_json(row[8])
    for line in (ROOT / "tests" / "golden" / "events.jsonl").read_text().splitlines():
        value = orjson.loads(line)
        assert decode(1, value["type"], line) == event_from_dict(value)
    odd = {"type": "response.text_delta", "response_id": "r", "output_index": True, "delta": "x"}
    try:
        expected = event_from_dict(dict(odd))
    except (LedgerError, ValueError):
        expected = None
    try:
        found = decode(1, odd["type"], orjson.dumps(odd))
    except BadRow:
        found = None
    assert found == expected
    with pytest.raises(BadRow, match="type column"):
        decode(9, "response.finished", b'{"type":"response.text_delta"}')
    with pytest.raises(BadRow, match="not JSON"):
        decode(9, "response.finished", b"{")


def test_chain_ranges_report_what_one_pass_reports(rows, tmp_path):
    """The chain checked in ranges (of 7 positions) finds the same first break as ChainVerifier."""
    path = tmp_path / "ledger.db"
    source = sqlite3.connect(path)
    source.execute("CREATE TABLE events (position INTEGER PRIMARY KEY, stream TEXT, version INTEGER, event_id TEXT, "
                   "type TEXT, recorded_at INTEGER, prev_hash TEXT, hash TEXT, data TEXT)")
    source.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
    source.commit()
    head = len(rows)
    for tamper in (None, "DELETE FROM events WHERE position = 20", "UPDATE events SET data = data || ' ' "
                   "WHERE position = 33", "UPDATE events SET prev_hash = hash WHERE position = 8"):
        if tamper:
            source.execute(tamper)
            source.commit()
        conn = connect(path, readonly=True)
        results = [chain_check.check_range(conn, a, b) for a, b in chain_check.ranges(head, 7)]
        found, _, head_hash = chain_check.link(results)
        verifier = ChainVerifier()
        expected = None
        try:
            for r in conn.execute("SELECT position, stream, version, event_id, recorded_at, prev_hash, hash, data "
                                  "FROM events ORDER BY position"):
                verifier.check(*r[:7], r[7].encode())
            if verifier.position != head:
                expected = verifier.position + 1
        except ChainBroken as broken:
            expected = broken.position
        assert found == expected, tamper
        if tamper is None:
            assert head_hash == rows[-1][7]
        conn.close()


def test_other_folds_may_skip_response_only_events(rows):
    """Every projection but responses ends in the same state whether or not it sees the response-only events."""
    everything, skipping = build_all(), build_all()
    for row in rows:
        recorded = record(row)
        for name in everything:
            everything[name].apply(recorded)
            if name == "responses" or not isinstance(recorded.event, RESPONSE_ONLY):
                skipping[name].apply(recorded)
    for name in everything:
        assert everything[name].fingerprint() == skipping[name].fingerprint(), name
        assert pickle.dumps(everything[name]) == pickle.dumps(skipping[name]), name


def test_replay_imports_nothing_from_the_gateway():
    """Importing every replay module (in a fresh interpreter) loads no `gateway` module: replay reads the ledger only."""
    import subprocess
    import sys

    from tests.conftest import ROOT

    program = (
        "import importlib, pkgutil, sys, replay\n"
        "names = [m.name for m in pkgutil.iter_modules(replay.__path__, 'replay.')]\n"
        "for name in names: importlib.import_module(name)\n"
        "loaded = sorted(m for m in sys.modules if m == 'gateway' or m.startswith('gateway.'))\n"
        "print(len(names), loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, done.stderr
    count, loaded = done.stdout.split(" ", 1)
    assert int(count) >= 15 and loaded.strip() == "[]"

"""The hash chain: every record's hash covers its predecessor's hash and its own content.

    hash_n = sha256(bytes.fromhex(prev_hash_n) || canonical_json({event, event_id, position,
                                                                  prev_hash, recorded_at,
                                                                  stream, version}))

with ``prev_hash_1 = GENESIS_HASH``. Editing, deleting or reordering any event breaks every
later hash. A truncated tail is caught only against a head hash kept elsewhere (an export's
manifest, a printed checkpoint).
"""

from __future__ import annotations

import hashlib
from typing import Iterable, Optional

import orjson

from ledger.codec import canonical_json
from ledger.errors import ChainBroken

GENESIS_HASH = "0" * 64


def record_hash(
    prev_hash: str, position: int, stream: str, version: int, event_id: str, recorded_at: int, event_json: bytes
) -> str:
    """The chain hash of one record; ``event_json`` is the event's canonical JSON."""
    body = canonical_json(
        {
            "event": orjson.Fragment(event_json),
            "event_id": event_id,
            "position": position,
            "prev_hash": prev_hash,
            "recorded_at": recorded_at,
            "stream": stream,
            "version": version,
        }
    )
    return hashlib.sha256(bytes.fromhex(prev_hash) + body).hexdigest()


class ChainVerifier:
    """Checks rows one at a time, in position order, from position 1 (or from a trusted hash)."""

    def __init__(self, after_position: int = 0, after_hash: str = GENESIS_HASH) -> None:
        self.position = after_position
        self.hash = after_hash

    def check(
        self,
        position: int,
        stream: str,
        version: int,
        event_id: str,
        recorded_at: int,
        prev_hash: str,
        hash_: str,
        event_json: bytes,
    ) -> None:
        """Raise ChainBroken unless this row continues the chain."""
        if position != self.position + 1:
            raise ChainBroken(self.position + 1, f"expected position {self.position + 1}, found {position}")
        if prev_hash != self.hash:
            raise ChainBroken(position, "prev_hash does not match the previous record's hash")
        actual = record_hash(prev_hash, position, stream, version, event_id, recorded_at, event_json)
        if actual != hash_:
            raise ChainBroken(position, "hash does not match the record's content")
        self.position = position
        self.hash = hash_


def verify_rows(rows: Iterable[tuple], expected_head_hash: Optional[str] = None) -> ChainVerifier:
    """Verify (position, stream, version, event_id, recorded_at, prev_hash, hash, event_json) rows."""
    verifier = ChainVerifier()
    for row in rows:
        verifier.check(*row)
    if expected_head_hash is not None and verifier.hash != expected_head_hash:
        raise ChainBroken(verifier.position + 1, "the chain ends before the expected head (truncated?)")
    return verifier

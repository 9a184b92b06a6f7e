"""Platforms and API keys, answering authentication in memory (no store read per request).

Keys are known only by their SHA-256 hash (DESIGN invariant 13). A key's validity at a
given moment (expiry) is decided by the caller with its clock; this fold has none.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import attrs

from ledger.events import ApiKeyCreated, ApiKeyRevoked, PlatformCreated
from ledger.store import Recorded


def hash_key(raw_key: str) -> str:
    """The stored form of a raw API key."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


@attrs.define
class Platform:
    platform_id: str
    name: str
    created_at: int


@attrs.define
class KeyInfo:
    key_id: str
    platform_id: str
    end_user_id: Optional[str]
    prefix: str
    expires_at: Optional[int]
    created_at: int
    revoked: bool = False

    @property
    def kind(self) -> str:
        return "end_user" if self.end_user_id else "platform"


class TenancyProjection:
    """Platforms by id and keys by hash."""

    name = "tenancy"

    def __init__(self) -> None:
        self.platforms: dict[str, Platform] = {}
        self.platforms_by_name: dict[str, str] = {}
        self.keys_by_hash: dict[str, KeyInfo] = {}
        self.keys_by_id: dict[str, KeyInfo] = {}

    def apply(self, recorded: Recorded) -> None:
        event = recorded.event
        if isinstance(event, PlatformCreated):
            self.platforms[event.platform_id] = Platform(event.platform_id, event.name, recorded.recorded_at_s)
            self.platforms_by_name.setdefault(event.name, event.platform_id)
        elif isinstance(event, ApiKeyCreated):
            info = KeyInfo(
                event.key_id,
                event.platform_id,
                event.end_user_id,
                event.prefix,
                event.expires_at,
                recorded.recorded_at_s,
            )
            self.keys_by_hash[event.key_hash] = info
            self.keys_by_id[event.key_id] = info
        elif isinstance(event, ApiKeyRevoked):
            info = self.keys_by_id.get(event.key_id)
            if info is not None and info.platform_id == event.platform_id:
                info.revoked = True

    def lookup(self, raw_key: str) -> Optional[KeyInfo]:
        """The key's record if the raw key is known (revoked or expired included)."""
        return self.keys_by_hash.get(hash_key(raw_key))

    def fingerprint(self) -> Any:
        return {
            "platforms": sorted(attrs.astuple(p) for p in self.platforms.values()),
            "keys": sorted(
                [h, *attrs.astuple(k)] for h, k in self.keys_by_hash.items()
            ),
        }

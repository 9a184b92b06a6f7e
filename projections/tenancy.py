"""Platforms, end users, API keys and rate-limit settings, answering auth in memory.

Keys are known only by their SHA-256 hash (DESIGN invariant 13). A key's validity at a
given moment (expiry) is decided by the caller with its clock; this fold has none.
"""

from __future__ import annotations

import hashlib
from typing import Any, Optional

import attrs

from ledger.events import (
    ApiKeyCreated,
    ApiKeyRevoked,
    EndUserCreated,
    EndUserUpdated,
    PlatformCreated,
    PlatformUpdated,
    RateLimitsSet,
)
from ledger.store import Recorded


def hash_key(raw_key: str) -> str:
    """The stored form of a raw API key."""
    return hashlib.sha256(raw_key.encode()).hexdigest()


@attrs.define
class RateLimits:
    rpm_limit: Optional[int] = None
    tpm_limit: Optional[int] = None
    rpd_limit: Optional[int] = None

    @property
    def empty(self) -> bool:
        return self.rpm_limit is None and self.tpm_limit is None and self.rpd_limit is None


@attrs.define
class Platform:
    platform_id: str
    name: str
    created_at: int
    updated_at: int
    default_budget_micros: Optional[int] = None
    rate_limits: RateLimits = attrs.Factory(RateLimits)


@attrs.define
class EndUser:
    end_user_id: str
    platform_id: str
    external_id: str
    display_name: Optional[str]
    metadata: dict[str, Any]
    created_at: int
    updated_at: int
    is_active: bool = True
    rate_limits: Optional[RateLimits] = None  # explicit overrides, None = platform default


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
    """Platforms, end users (by id and by external id) and keys by hash."""

    name = "tenancy"

    def __init__(self) -> None:
        self.platforms: dict[str, Platform] = {}
        self.end_users: dict[str, EndUser] = {}
        self.end_users_by_external: dict[tuple[str, str], str] = {}
        self.keys_by_hash: dict[str, KeyInfo] = {}
        self.keys_by_id: dict[str, KeyInfo] = {}

    def apply(self, recorded: Recorded) -> None:
        event = recorded.event
        at = recorded.recorded_at_s
        if isinstance(event, PlatformCreated):
            self.platforms[event.platform_id] = Platform(event.platform_id, event.name, at, at)
        elif isinstance(event, PlatformUpdated):
            platform = self.platforms.get(event.platform_id)
            if platform is not None:
                platform.name = event.name
                platform.default_budget_micros = event.default_budget_micros
                platform.rate_limits = RateLimits(event.rpm_limit, event.tpm_limit, event.rpd_limit)
                platform.updated_at = at
        elif isinstance(event, EndUserCreated):
            self.end_users[event.end_user_id] = EndUser(
                event.end_user_id, event.platform_id, event.external_id, event.display_name, dict(event.metadata),
                at, at)
            self.end_users_by_external[(event.platform_id, event.external_id)] = event.end_user_id
        elif isinstance(event, EndUserUpdated):
            user = self.end_users.get(event.end_user_id)
            if user is not None and user.platform_id == event.platform_id:
                user.display_name = event.display_name
                user.metadata = dict(event.metadata)
                user.is_active = event.is_active
                user.updated_at = at
        elif isinstance(event, RateLimitsSet):
            user = self.end_users.get(event.end_user_id)
            if user is not None and user.platform_id == event.platform_id:
                user.rate_limits = None if event.cleared else RateLimits(event.rpm_limit, event.tpm_limit,
                                                                           event.rpd_limit)
        elif isinstance(event, ApiKeyCreated):
            info = KeyInfo(event.key_id, event.platform_id, event.end_user_id, event.prefix, event.expires_at, at)
            self.keys_by_hash[event.key_hash] = info
            self.keys_by_id[event.key_id] = info
        elif isinstance(event, ApiKeyRevoked):
            info = self.keys_by_id.get(event.key_id)
            if info is not None and info.platform_id == event.platform_id:
                info.revoked = True

    def lookup(self, raw_key: str) -> Optional[KeyInfo]:
        """The key's record if the raw key is known (revoked or expired included)."""
        return self.keys_by_hash.get(hash_key(raw_key))

    def key_owner_active(self, key: KeyInfo) -> bool:
        """False when the key's end user was deleted (deactivated)."""
        if key.end_user_id is None:
            return True
        user = self.end_users.get(key.end_user_id)
        return user is not None and user.is_active

    def end_user(self, platform_id: str, end_user_id: str) -> Optional[EndUser]:
        """The platform's end user, or None (another platform's user is not found either)."""
        user = self.end_users.get(end_user_id)
        return user if user is not None and user.platform_id == platform_id else None

    def rate_limits(self, platform_id: str, end_user_id: Optional[str]) -> tuple[RateLimits, str]:
        """The limits in force and their resolution: explicit | default | none."""
        user = self.end_users.get(end_user_id) if end_user_id else None
        if user is not None and user.rate_limits is not None:
            return user.rate_limits, "explicit"
        platform = self.platforms.get(platform_id)
        if platform is not None and not platform.rate_limits.empty:
            return platform.rate_limits, "default"
        return RateLimits(), "none"

    def fingerprint(self) -> Any:
        return {
            "platforms": sorted(attrs.astuple(p) for p in self.platforms.values()),
            "end_users": sorted((u.end_user_id, attrs.asdict(u)) for u in self.end_users.values()),
            "keys": sorted([h, *attrs.astuple(k)] for h, k in self.keys_by_hash.items()),
        }

"""Creating platforms and their keys: the events, and the raw key shown exactly once."""

from __future__ import annotations

import secrets
import uuid
from typing import Any, Optional

from ledger.events import ApiKeyCreated, PlatformCreated
from ledger.store import EventStore, NewEvent
from projections.tenancy import hash_key

PLATFORM_KEY_PREFIX = "sk-plat_"
END_USER_KEY_PREFIX = "sk-eu_"
KEY_PREFIX_CHARS_SHOWN = 12  # how much of a raw key lists may display
MIN_CHOSEN_KEY_CHARS = 32  # a key chosen by the operator must still be hard to guess


def platform_stream(platform_id: str) -> str:
    return f"platform-{platform_id}"


def new_raw_key(prefix: str) -> str:
    return prefix + secrets.token_urlsafe(32)


def key_created(platform_id: str, raw_key: str, end_user_id: Optional[str] = None,
                expires_at: Optional[int] = None) -> ApiKeyCreated:
    """The event that records a key: its hash and display prefix, never the key itself."""
    return ApiKeyCreated(
        key_id=f"key_{uuid.uuid4().hex[:24]}",
        platform_id=platform_id,
        key_hash=hash_key(raw_key),
        prefix=raw_key[:KEY_PREFIX_CHARS_SHOWN],
        end_user_id=end_user_id,
        expires_at=expires_at,
    )


async def create_platform(store: EventStore, name: str, raw_key: Optional[str] = None) -> dict[str, Any]:
    """Record a new platform and its first platform key; return them with the raw key.

    ``raw_key`` lets automation choose the first key (``ASSISTIV_BOOTSTRAP_PLATFORM_KEY``);
    it must look like a platform key and is stored, like every key, only as its hash.
    """
    platform_id = f"plat_{uuid.uuid4().hex[:24]}"
    if raw_key is not None and (not raw_key.startswith(PLATFORM_KEY_PREFIX) or len(raw_key) < MIN_CHOSEN_KEY_CHARS):
        raise ValueError(f"a chosen platform key must start with {PLATFORM_KEY_PREFIX!r} and have at least "
                         f"{MIN_CHOSEN_KEY_CHARS} characters")
    raw_key = raw_key or new_raw_key(PLATFORM_KEY_PREFIX)
    key = key_created(platform_id, raw_key)
    stream = platform_stream(platform_id)
    await store.append(
        [
            NewEvent(stream, PlatformCreated(platform_id, name), expected_version=0),
            NewEvent(stream, key),
        ]
    )
    return {
        "platform_id": platform_id,
        "name": name,
        "api_key": {"id": key.key_id, "raw_key": raw_key, "prefix": key.prefix},
    }

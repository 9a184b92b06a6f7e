"""Tenancy writes: each one atomic append of ledger events, answered once the projection has it.

Streams: a platform's own events and its platform keys on ``platform-<pid>``; an end user's
events, keys and rate-limit overrides on ``end_user-<euid>``; the monthly budget a new end
user gets from the platform's ``default_budget_usd`` on ``budget-<euid>``.

Read-modify-write changes (PATCH of a platform or an end user) state the stream version
they read (optimistic concurrency, DESIGN invariant 6) and retry on a conflict, so two
concurrent PATCHes cannot silently undo each other.

End-user ids are derived from (platform, external_id): two concurrent creates of the same
external id both aim at the one stream with ``expected_version=0``; the loser sees the
conflict and answers as a repeat create (the existing user and a fresh key).

Creates that mint a key (platform keys, end users, end-user keys) honour ``Idempotency-Key``
(gateway.idempotency): the key's id, its event ids and its raw key derive from the header,
so a retry records nothing new and answers the original key (and status); the same header
with another body records a different key hash, which the ledger's original disagrees
with: 409 ``idempotency_key_reused``.
"""

from __future__ import annotations

import hashlib
import uuid
from typing import Callable, Optional, Sequence

import attrs

from gateway.errors import ApiError
from gateway.idempotency import Keyed, derived_raw_key, reused, scoped_id
from gateway.platforms import END_USER_KEY_PREFIX, PLATFORM_KEY_PREFIX, key_created, new_raw_key, platform_stream
from gateway.services import Services
from gateway.tenancy_input import MISSING, EndUserCreate, EndUserPatch, PlatformPatch
from ledger.errors import ConcurrencyConflict, DuplicateEventMismatch
from ledger.events import (
    ApiKeyCreated,
    ApiKeyRevoked,
    BudgetSet,
    EndUserCreated,
    EndUserUpdated,
    Event,
    PlatformUpdated,
    RateLimitsSet,
)
from ledger.store import NewEvent, Recorded, new_event_id
from projections.tenancy import EndUser, KeyInfo

CONFLICT_RETRIES_MAX = 10  # read-modify-write attempts before answering 409
PROJECTION_WAIT_S_MAX = 10  # an in-process append is applied at once; this only bounds a stuck runner
DEFAULT_BUDGET_PERIOD = "monthly"


def end_user_stream(end_user_id: str) -> str:
    return f"end_user-{end_user_id}"


def budget_stream(end_user_id: str) -> str:
    return f"budget-{end_user_id}"


def end_user_id_for(platform_id: str, external_id: str) -> str:
    """The end user's id, derived so that one external id can only ever create one user."""
    digest = hashlib.sha256(f"end_user\0{platform_id}\0{external_id}".encode()).hexdigest()
    return f"eu_{digest[:24]}"


def key_stream(key: KeyInfo) -> str:
    return end_user_stream(key.end_user_id) if key.end_user_id else platform_stream(key.platform_id)


@attrs.frozen
class NewKey:
    """A key just recorded, with the raw key shown to the caller this once."""

    event: ApiKeyCreated
    raw_key: str


async def record(services: Services, batch: Sequence[NewEvent]) -> list[Recorded]:
    """Append ``batch`` atomically and wait until the projections have applied it."""
    records = await services.store.append(batch)
    await services.runner.wait_for(records[-1].position, PROJECTION_WAIT_S_MAX)
    return records


async def record_checked(services: Services, stream: str, build: Callable[[], list[Event]]) -> bool:
    """Read ``stream``'s version, let ``build`` derive events from the projection, append them at that version.

    ``build`` sees a projection that has applied the whole stream; it returns [] when there
    is nothing to change. Returns whether anything was recorded.
    """
    for _ in range(CONFLICT_RETRIES_MAX):
        current = await services.store.read_stream(stream)
        if current:
            await services.runner.wait_for(current[-1].position, PROJECTION_WAIT_S_MAX)
        events = build()
        if not events:
            return False
        version = current[-1].version if current else 0
        batch = [NewEvent(stream, events[0], expected_version=version)] + [NewEvent(stream, e) for e in events[1:]]
        try:
            await record(services, batch)
            return True
        except ConcurrencyConflict as exc:
            if exc.stream != stream:
                raise
    raise ApiError(409, "The object changed concurrently several times; retry the request.", code="conflict")


async def update_platform(services: Services, platform_id: str, patch: PlatformPatch) -> None:
    def build() -> list[Event]:
        platform = services.tenancy.platforms[platform_id]
        limits = attrs.asdict(platform.rate_limits) | patch.rate_limits
        event = PlatformUpdated(
            platform_id,
            platform.name if patch.name is MISSING else patch.name,
            platform.default_budget_micros if patch.default_budget_micros is MISSING else patch.default_budget_micros,
            limits["rpm_limit"], limits["tpm_limit"], limits["rpd_limit"],
        )
        before = (platform.name, platform.default_budget_micros, *attrs.astuple(platform.rate_limits))
        after = (event.name, event.default_budget_micros, event.rpm_limit, event.tpm_limit, event.rpd_limit)
        return [] if after == before else [event]

    await record_checked(services, platform_stream(platform_id), build)


def _new_key(services: Services, prefix: str, scope: str, keyed: Optional[Keyed]) -> tuple[str, Optional[str]]:
    """(raw key, key id): fresh, or derived from the Idempotency-Key and the body (then the id
    also names the key's events, ``<key id>.<part>``)."""
    if keyed is None:
        return new_raw_key(prefix), None
    raw_key = derived_raw_key(services.store, prefix, scope, keyed.key, keyed.request_sha256)
    return raw_key, scoped_id("key_", scope, keyed.key)


def _event_ids(key_id: Optional[str]) -> Callable[[str], str]:
    return (lambda part: f"{key_id}.{part}") if key_id else (lambda part: new_event_id())


def _with_id(event: ApiKeyCreated, key_id: Optional[str]) -> ApiKeyCreated:
    return event if key_id is None else attrs.evolve(event, key_id=key_id)


async def _record_key(services: Services, batch: Sequence[NewEvent], key: ApiKeyCreated) -> Recorded:
    """Append ``batch``; the record of ``key`` (the original one on a retry, 409 when it differs)."""
    try:
        records = await record(services, batch)
    except DuplicateEventMismatch:  # the key's events were recorded by an append of another shape
        raise reused() from None
    [recorded] = [r for r in records if isinstance(r.event, ApiKeyCreated)]
    if recorded.event != key:
        raise reused()
    return recorded


async def create_platform_key(services: Services, platform_id: str, expires_at: Optional[int],
                              keyed: Optional[Keyed] = None) -> NewKey:
    raw_key, key_id = _new_key(services, PLATFORM_KEY_PREFIX, f"{platform_id}:platform_key", keyed)
    event = _with_id(key_created(platform_id, raw_key, expires_at=expires_at), key_id)
    await _record_key(services, [NewEvent(platform_stream(platform_id), event, _event_ids(key_id)("created"))], event)
    return NewKey(event, raw_key)


async def create_end_user_key(services: Services, user: EndUser, expires_at: Optional[int],
                              keyed: Optional[Keyed] = None) -> NewKey:
    scope = f"{user.platform_id}:{user.end_user_id}:end_user_key"
    raw_key, key_id = _new_key(services, END_USER_KEY_PREFIX, scope, keyed)
    event = _with_id(key_created(user.platform_id, raw_key, user.end_user_id, expires_at), key_id)
    await _record_key(services, [NewEvent(end_user_stream(user.end_user_id), event,
                                          _event_ids(key_id)("created"))], event)
    return NewKey(event, raw_key)


async def revoke_key(services: Services, key: KeyInfo) -> None:
    """Revoke once: the event id is derived from the key, so a repeat records nothing new."""
    if key.revoked:
        return
    event = ApiKeyRevoked(key.key_id, key.platform_id)
    await record(services, [NewEvent(key_stream(key), event, event_id=f"{key.key_id}.revoked")])


async def create_end_user(services: Services, platform_id: str, create: EndUserCreate,
                          keyed: Optional[Keyed] = None) -> tuple[EndUser, NewKey, bool]:
    """The end user of ``create.external_id`` (new, or existing) with a fresh key; True when new.

    With an Idempotency-Key, a retry answers the original key, and True when the original
    created the user: its key is then version 2 of the user's stream (after ``end_user.created``).
    """
    end_user_id = end_user_id_for(platform_id, create.external_id)
    stream = end_user_stream(end_user_id)
    raw_key, key_id = _new_key(services, END_USER_KEY_PREFIX, f"{platform_id}:end_user", keyed)
    key = _with_id(key_created(platform_id, raw_key, end_user_id), key_id)
    ids = _event_ids(key_id)
    if services.tenancy.end_user(platform_id, end_user_id) is None:
        batch = [
            NewEvent(stream, EndUserCreated(end_user_id, platform_id, create.external_id, create.display_name,
                                            create.metadata), ids("user"), expected_version=0),
            NewEvent(stream, key, ids("created")),
        ]
        default_micros = services.tenancy.platforms[platform_id].default_budget_micros
        if default_micros:
            budget = BudgetSet(platform_id, end_user_id, f"bud_{uuid.uuid4().hex[:24]}", default_micros,
                               DEFAULT_BUDGET_PERIOD)
            batch.append(NewEvent(budget_stream(end_user_id), budget, ids("budget"), expected_version=0))
        try:
            recorded = await _record_key(services, batch, key)
            return services.tenancy.end_users[end_user_id], NewKey(key, raw_key), recorded.version == 2
        except ConcurrencyConflict as exc:  # a concurrent create (or another process) made this user first
            if exc.stream != stream:
                raise
            current = await services.store.read_stream(stream)
            await services.runner.wait_for(current[-1].position, PROJECTION_WAIT_S_MAX)
    recorded = await _record_key(services, [NewEvent(stream, key, ids("created"))], key)
    return services.tenancy.end_users[end_user_id], NewKey(key, raw_key), recorded.version == 2


async def update_end_user(services: Services, user: EndUser, patch: EndUserPatch) -> EndUser:
    def build() -> list[Event]:
        now = services.tenancy.end_users[user.end_user_id]
        event = EndUserUpdated(
            now.end_user_id,
            now.platform_id,
            now.display_name if patch.display_name is MISSING else patch.display_name,
            now.metadata if patch.metadata is MISSING else patch.metadata,
            now.is_active if patch.is_active is MISSING else patch.is_active,
        )
        same = (event.display_name, event.metadata, event.is_active) == (now.display_name, now.metadata, now.is_active)
        return [] if same else [event]

    await record_checked(services, end_user_stream(user.end_user_id), build)
    return services.tenancy.end_users[user.end_user_id]


async def set_rate_limits(services: Services, user: EndUser, limits: Optional[dict[str, Optional[int]]]) -> None:
    """Record per-user overrides, or (``limits`` None) clear them; clearing none records nothing."""
    if limits is None:
        if user.rate_limits is None:
            return
        event = RateLimitsSet(user.platform_id, user.end_user_id, cleared=True)
    else:
        event = RateLimitsSet(user.platform_id, user.end_user_id, **limits)
    await record(services, [NewEvent(end_user_stream(user.end_user_id), event)])

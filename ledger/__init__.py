"""The append-only ledger: event types, codec, the EventStore protocol and its stores."""

from ledger.chain import GENESIS_HASH, ChainVerifier, record_hash, verify_rows
from ledger.codec import canonical_json, converter, event_from_json, event_to_json
from ledger.errors import (
    ChainBroken,
    ConcurrencyConflict,
    DuplicateEventMismatch,
    LedgerError,
    StoreClosed,
    UnknownEventType,
)
from ledger.memory import MemoryStore
from ledger.sqlite import SQLiteStore, open_sqlite_store
from ledger.store import EventStore, NewEvent, Recorded, new_event_id

__all__ = [
    "GENESIS_HASH",
    "ChainBroken",
    "ChainVerifier",
    "ConcurrencyConflict",
    "DuplicateEventMismatch",
    "EventStore",
    "LedgerError",
    "MemoryStore",
    "NewEvent",
    "Recorded",
    "SQLiteStore",
    "StoreClosed",
    "UnknownEventType",
    "canonical_json",
    "converter",
    "event_from_json",
    "event_to_json",
    "new_event_id",
    "open_sqlite_store",
    "record_hash",
    "verify_rows",
]

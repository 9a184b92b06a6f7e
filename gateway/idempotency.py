"""``Idempotency-Key`` on management POSTs: derived event ids, and raw keys a retry can repeat.

A retried POST with the same key and body must answer the original result (CONTRACT); the
same key with another body is 409 ``idempotency_key_reused``. Writes do this by deriving
their event ids from the key (the ledger returns the original record for an id it has, DESIGN
invariant 5) and comparing what was recorded with what this request would record.

Keys are stored as SHA-256 hashes only (DESIGN invariant 13), so a retry cannot read back
the raw key the first attempt returned. An idempotent key create therefore derives its raw
key: HMAC-SHA256(server secret, scope || request body hash). The same request always yields
the same raw key - after a restart too - while the ledger still holds only its hash, and a
different body yields a different key, hence a different recorded hash, hence the 409. The
server secret is 32 random bytes in a file next to the ledger (``<ledger file>.key-secret``,
mode 0600), created once; whoever reads it can recompute idempotent keys, so it is guarded
like the ledger's own directory. A store without a file (the in-memory store of unit tests)
gets a random secret per process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import weakref
from pathlib import Path
from typing import Any, Optional

import attrs
from quart import request

from gateway.errors import ApiError, invalid
from ledger.codec import canonical_json

SECRET_BYTES = 32
HEADER = "Idempotency-Key"
IDEMPOTENCY_KEY_CHARS_MAX = 255  # longer keys are 400: they are hashed, but a bound keeps logs sane

_secrets: "weakref.WeakKeyDictionary[Any, bytes]" = weakref.WeakKeyDictionary()


def reused() -> ApiError:
    return ApiError(409, "This Idempotency-Key was already used with a different request body.",
                    code="idempotency_key_reused")


def header_key() -> Optional[str]:
    """The request's ``Idempotency-Key`` (None when absent or empty); 400 when too long."""
    key = request.headers.get(HEADER)
    if not key:
        return None
    if len(key) > IDEMPOTENCY_KEY_CHARS_MAX:
        raise invalid(f"Invalid '{HEADER}' header: at most {IDEMPOTENCY_KEY_CHARS_MAX} characters.", HEADER,
                      "invalid_value")
    return key


def scoped_id(prefix: str, scope: str, key: str) -> str:
    """An id derived from (scope, key): one Idempotency-Key can never reach another tenant's objects."""
    return prefix + hashlib.sha256(f"{scope}\0{key}".encode()).hexdigest()[:32]


def body_sha256(body: Any) -> str:
    """The hash of a JSON body, independent of key order and whitespace."""
    return hashlib.sha256(canonical_json(body)).hexdigest()


def secret_for(store: Any) -> bytes:
    """The server secret of ``store``'s ledger (read, or created once next to the ledger file)."""
    found = _secrets.get(store)
    if found is None:
        path = getattr(store, "path", None)
        found = _file_secret(Path(path)) if path is not None else secrets.token_bytes(SECRET_BYTES)
        _secrets[store] = found
    return found


def _file_secret(ledger: Path) -> bytes:
    """Write a candidate to a private temporary file and link it into place; the link fails when
    the secret exists, so two processes starting at once agree on the first one's bytes."""
    path = ledger.with_name(ledger.name + ".key-secret")
    if not path.exists():
        candidate = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, secrets.token_bytes(SECRET_BYTES))
            os.fsync(fd)
        finally:
            os.close(fd)
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    data = path.read_bytes()
    if len(data) != SECRET_BYTES:  # edited or truncated: refuse rather than silently change every derived key
        raise RuntimeError(f"{path} must hold exactly {SECRET_BYTES} bytes; restore it (or delete it: retries "
                           "of earlier idempotent key creates then get 409)")
    return data


def derived_raw_key(store: Any, prefix: str, scope: str, key: str, request_sha256: str) -> str:
    """The raw API key of an idempotent create: same request, same key; the ledger keeps its hash only."""
    mac = hmac.new(secret_for(store), f"raw_key\0{scope}\0{key}\0{request_sha256}".encode(), hashlib.sha256)
    return prefix + base64.urlsafe_b64encode(mac.digest()).rstrip(b"=").decode()


@attrs.frozen
class Keyed:
    """A request's Idempotency-Key with the hash of the body it came with."""

    key: str
    request_sha256: str


def keyed(body: Any) -> Optional[Keyed]:
    """The request's Idempotency-Key and body hash, or None when it sent no key."""
    key = header_key()
    return None if key is None else Keyed(key, body_sha256(body))

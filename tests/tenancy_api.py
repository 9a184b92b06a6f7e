"""Helpers for the tenancy API tests: one HTTP client, error and ledger assertions, fixtures."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from ledger.location import LEDGER_FILE_NAME

RAW_KEYS: dict[str, list[str]] = {}  # gateway url -> every raw key seen, for the secrets-never-recorded check
PLATFORM_VISIBLE_S_MAX = 3  # a CLI-created platform is visible to the server within this
HTTP = httpx.Client(timeout=30)  # one client: a new one per request costs ~50 ms of set-up


def call(gateway, method: str, path: str, key: str, body=None, headers=None, **params) -> httpx.Response:
    headers = {"Authorization": f"Bearer {key}", **(headers or {})}
    content = None if body is None else json.dumps(body)
    response = HTTP.request(method, gateway.url + path, headers=headers, content=content, params=params or None)
    RAW_KEYS.setdefault(gateway.url, []).extend(_raw_keys(response))
    return response


def _raw_keys(response: httpx.Response) -> list[str]:
    if not response.headers.get("content-type", "").startswith("application/json"):
        return []
    body = response.json()
    found = [body.get("raw_key"), (body.get("api_key") or {}).get("raw_key")] if isinstance(body, dict) else []
    return [raw for raw in found if raw]


def position(gateway) -> int:
    return HTTP.get(gateway.url + "/healthz").json()["position"]


def assert_error(response: httpx.Response, status: int, code=None, param=...) -> None:
    """The response is an error of ``status`` (and ``code`` and ``param`` when given) in OpenAI's shape."""
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    if code is not None:
        assert error["code"] == code
    if param is not ...:
        assert error["param"] == param


def new_platform(gateway, name: str) -> tuple[str, str]:
    """Create a platform with the CLI on the gateway's ledger; wait until the server knows its key."""
    out = gateway.cli("platform", "create", "--name", name, "--json", "--data-dir", str(gateway.data_dir))
    created = json.loads(out.stdout)
    pid, key = created["platform_id"], created["api_key"]["raw_key"]
    RAW_KEYS.setdefault(gateway.url, []).append(key)
    deadline = time.monotonic() + PLATFORM_VISIBLE_S_MAX
    while call(gateway, "GET", f"/v1/platforms/{pid}", key).status_code != 200:
        assert time.monotonic() < deadline, "the server did not see the new platform"
        time.sleep(0.05)
    return pid, key


def new_end_user(gateway, external_id: str, pid=None, key=None) -> dict:
    pid, key = pid or gateway.platform_id, key or gateway.key
    response = call(gateway, "POST", f"/v1/platforms/{pid}/end-users", key, {"external_id": external_id})
    assert response.status_code in (200, 201), response.text
    return response.json()


def respond(gateway, key: str) -> httpx.Response:
    return call(gateway, "POST", "/v1/responses", key, {"model": "demo", "input": "hello"})


@pytest.fixture(scope="module")
def other(gateway):
    """A second platform on the same gateway: (platform_id, platform key)."""
    return new_platform(gateway, "other")


@pytest.fixture(scope="module")
def alice(gateway):
    """An end user of the default platform, created once for the module."""
    return new_end_user(gateway, "alice")


def assert_no_raw_key_in_ledger(gateway) -> None:
    """No raw key seen on this gateway appears in its ledger's bytes (WAL included)."""
    raw_keys = RAW_KEYS.get(gateway.url, []) + [gateway.key]
    assert len(raw_keys) > 3
    files = [gateway.data_dir / LEDGER_FILE_NAME, gateway.data_dir / (LEDGER_FILE_NAME + "-wal")]
    data = b"".join(path.read_bytes() for path in files if path.exists())
    assert b"api_key.created" in data  # the key events are there, as hashes
    assert [raw for raw in raw_keys if raw.encode() in data] == []


def assert_replay_verifies(gateway, live: bool = True) -> None:
    """`replay verify` (with ``--url`` when ``live``) passes on the gateway's ledger."""
    args = ["replay", "--data-dir", str(gateway.data_dir), "verify"] + (["--url", gateway.url] if live else [])
    verify = gateway.cli(*args, check=False)
    assert verify.returncode == 0, verify.stdout.decode() + verify.stderr.decode()

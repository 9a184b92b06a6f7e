"""Shared fixtures: a real ``assistiv serve`` process on port 0 with its own ledger."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 30


@attrs.define
class Gateway:
    """A running gateway process and what it printed at start-up."""

    proc: subprocess.Popen
    url: str
    key: str
    platform_id: str
    data_dir: Path
    log: Path

    @property
    def base_url(self) -> str:
        return self.url + "/v1"

    def cli(self, *args: str, check: bool = True, stdin: Optional[bytes] = None) -> subprocess.CompletedProcess:
        """Run ``assistiv ARGS --data-dir <this ledger>`` and capture its output (bytes)."""
        command = [sys.executable, "-m", "gateway", *args]
        return subprocess.run(command, capture_output=True, check=check, cwd=ROOT, timeout=120, input=stdin)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 30) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout_s)


def start_gateway(data_dir: Path, *extra: str, env: Optional[dict] = None) -> Gateway:
    """Start ``assistiv serve --port 0`` and wait for its address and first-start key."""
    data_dir.mkdir(parents=True, exist_ok=True)
    log = data_dir / "server.log"
    out = open(log, "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", "0", "--data-dir", str(data_dir), *extra],
        stdout=out,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    text = ""
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        match = re.search(r"listening on (http://\S+)", text)
        if match:
            key = re.search(r"(sk-plat_\S+)", text)
            platform = re.search(r"\((plat_\w+)\)", text)
            return Gateway(proc, match.group(1), key.group(1) if key else "", platform.group(1) if platform else "",
                           data_dir, log)
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"gateway did not start:\n{text}")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Gateway:
    """One gateway per test module (start-up costs about a second)."""
    gw = start_gateway(tmp_path_factory.mktemp("gateway"))
    yield gw
    gw.stop()


@pytest.fixture
def fresh_gateway(tmp_path) -> Gateway:
    """A gateway of this test's own, for tests that stop or restart it."""
    gw = start_gateway(tmp_path / "gateway")
    yield gw
    if gw.proc.poll() is None:
        gw.proc.kill()
        gw.proc.wait()

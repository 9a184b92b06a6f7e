"""Where a ledger lives, from the CLI's ``--data-dir`` / ``--database-url`` options."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

SQLITE_URL_PREFIX = "sqlite:///"
LEDGER_FILE_NAME = "ledger.db"


def ledger_path(data_dir: str, database_url: Optional[str] = None) -> Path:
    """``sqlite:///PATH`` names the file; otherwise ``<data_dir>/ledger.db``."""
    if database_url:
        if not database_url.startswith(SQLITE_URL_PREFIX):
            raise SystemExit(f"unsupported database URL {database_url!r}: this build supports sqlite:///PATH")
        return Path(database_url[len(SQLITE_URL_PREFIX):])
    return Path(data_dir) / LEDGER_FILE_NAME

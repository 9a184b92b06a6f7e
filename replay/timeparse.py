"""Times on the command line and in reports: ISO-8601 (UTC unless it says otherwise) or unix seconds."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Optional


def time_arg(raw: str) -> int:
    """``2026-01-31``, ``2026-01-31T12:00:00Z`` or ``1767225600`` as unix seconds (argparse type)."""
    text = raw.strip()
    try:
        if text.lstrip("-").isdigit():
            return int(text)
        moment = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{raw!r} is not an ISO-8601 date or time, nor unix seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.timezone.utc)
    return int(moment.timestamp())


def iso(unix_s: Optional[int]) -> Optional[str]:
    """Unix seconds as ``2026-01-31T12:00:00Z``."""
    if unix_s is None:
        return None
    return dt.datetime.fromtimestamp(unix_s, dt.timezone.utc).isoformat().replace("+00:00", "Z")


def day(unix_s: int) -> str:
    """The UTC calendar day of a moment, ``2026-01-31``."""
    return dt.datetime.fromtimestamp(unix_s, dt.timezone.utc).date().isoformat()

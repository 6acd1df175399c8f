"""The one time format of every file we write (metadata.json, index.json, ledgers, bisect records):
ISO 8601 in UTC with a ``Z``, to the second (docs/index-format.md), and its reader."""

from __future__ import annotations

import time
from datetime import UTC, datetime

ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def iso_utc(when: float | datetime | None = None) -> str:
    """``2024-01-01T09:30:00Z`` for a POSIX time, an aware datetime, or now (None)."""
    if isinstance(when, datetime):
        return when.astimezone(UTC).strftime(ISO_FORMAT)
    return time.strftime(ISO_FORMAT, time.gmtime(time.time() if when is None else when))


def parse_iso_utc(text: object) -> datetime | None:
    """The aware datetime of an ``iso_utc`` string, or None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.strptime(text, ISO_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None

"""A durable queue of mails not yet taken by the mail server (blocking file work: call it in a thread).

Buildbot's mail reporter logs a failed delivery and drops the mail; a culprit found after an hour of
bisecting must not be lost because the mail server was down for a minute. Every mail is written here
first (one JSON file per mail, replaced atomically, oldest first by name) and removed only once the
server accepted it, so it also survives a master restart. A mail the server refuses for good (a 5xx
reply) moves to ``failed/`` for a person to look at instead of being retried forever.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from buildbot_kernel.imagetree.atomic import atomic_write, is_temp_name

OUTBOX = "outbox"
FAILED = "failed"
SUFFIX = ".mail.json"


@dataclass
class Entry:
    path: Path
    message: str  # the whole message as text (headers already encoded)
    recipients: list[str]
    attempts: int = 0
    last_error: str = ""
    queued: float = 0.0

    @property
    def name(self) -> str:
        return self.path.name


class Outbox:
    def __init__(self, state_dir: str | os.PathLike):
        self.dir = Path(state_dir) / OUTBOX

    def put(self, message: str, recipients: list[str]) -> Entry:
        self.dir.mkdir(parents=True, exist_ok=True)
        now = time.time()
        path = self.dir / f"{time.time_ns():020d}-{secrets.token_hex(4)}{SUFFIX}"
        entry = Entry(path, message, list(recipients), 0, "", now)
        self._write(entry)
        return entry

    def _write(self, entry: Entry) -> None:
        atomic_write(entry.path, json.dumps({"message": entry.message, "recipients": entry.recipients,
                                             "attempts": entry.attempts, "last_error": entry.last_error,
                                             "queued": entry.queued}, indent=1) + "\n", mode=0o600)

    def pending(self) -> list[Entry]:
        """Queued mails, oldest first; a file that cannot be read is skipped (and left for a person)."""
        try:
            names = sorted(n for n in os.listdir(self.dir) if n.endswith(SUFFIX) and not is_temp_name(n))
        except FileNotFoundError:
            return []
        out = []
        for n in names:
            p = self.dir / n
            try:
                d = json.loads(p.read_text(encoding="utf-8"))
                out.append(Entry(p, str(d["message"]), [str(r) for r in d["recipients"]],
                                 int(d.get("attempts", 0)), str(d.get("last_error", "")),
                                 float(d.get("queued", 0))))
            except (OSError, ValueError, KeyError, TypeError):
                continue
        return out

    def failed_attempt(self, entry: Entry, error: str) -> None:
        entry.attempts += 1
        entry.last_error = error
        if entry.path.exists():
            self._write(entry)

    def delivered(self, entry: Entry) -> None:
        try:
            entry.path.unlink()
        except FileNotFoundError:
            pass

    def refused(self, entry: Entry, error: str) -> Path:
        """The server refused the mail for good: keep it under ``failed/`` with the reason."""
        entry.last_error = error
        self._write(entry)
        target = self.dir / FAILED / entry.name
        target.parent.mkdir(exist_ok=True)
        os.replace(entry.path, target)
        return target

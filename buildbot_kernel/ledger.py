"""What has been built: one JSON line per finished (repository, branch, sha, build config) attempt.

The image tree already says what was *published*; the ledger also remembers what *failed*, so a broken
head is not rebuilt on every master restart or poll (a maintainer forces a rebuild from the UI when they
want one).  Append-only JSON lines with fsync: a crash loses at most the line being written, and a torn
last line is ignored on read.  Appends hold ``<ledger>.lock`` (flock, carried to the server over NFS):
several masters sharing the state directory append to one file, and an O_APPEND write from two NFS
clients is not atomic.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from buildbot_kernel import jsondepth
from buildbot_kernel.gitrepo import path_lock
from buildbot_kernel.utctime import iso_utc

PUBLISHED = "published"
FAILED = "failed"


def _key(repository: str, branch: str, sha: str, build: str) -> tuple:
    return (repository, branch, sha, build)


class BuildLedger:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._cache: dict[tuple, dict] | None = None
        self._stamp = None

    def _load(self) -> dict[tuple, dict]:
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return {}
        if self._cache is not None and stamp == self._stamp:
            return self._cache
        entries: dict[tuple, dict] = {}
        with self.path.open() as f:
            for line in f:
                try:
                    rec = jsondepth.loads(line, "a ledger line")
                    entries[_key(rec["repository"], rec["branch"], rec["sha"], rec["build"])] = rec
                except (ValueError, KeyError, TypeError):
                    continue  # a torn line from a crash, or not a record
        self._cache, self._stamp = entries, stamp
        return entries

    def get(self, repository: str, branch: str, sha: str, build: str) -> dict | None:
        with self._lock:
            return self._load().get(_key(repository, branch, sha, build))

    def record(self, repository: str, branch: str, sha: str, build: str, outcome: str, **extra) -> dict:
        rec = {"repository": repository, "branch": branch, "sha": sha, "build": build,
               "outcome": outcome, "time": iso_utc(), **extra}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, path_lock(self.path):
            with self.path.open("a") as f:
                f.write(json.dumps(rec, sort_keys=True) + "\n")
                f.flush()
                os.fsync(f.fileno())
        return rec

"""The master's own mirror clone of each repository, which the bisect engine asks its git questions.

Kept under ``<state>/bisect-mirrors/<name>.git`` and fetched before each bisect starts (or resumes), so
revisions the maintainer names (a sha pushed a minute ago, a branch, a tag) resolve as on the remote.
A bare ``--mirror`` clone: no work tree to keep in step, every ref of the remote, pruned on fetch.
Blocking (git subprocesses): the Buildbot glue calls it in a thread; one lock per mirror keeps two
bisects of the same repository from fetching into it at once.
"""

from __future__ import annotations

import os
import re
import subprocess
import threading
from pathlib import Path

from buildbot_kernel.bisect.engine import BisectInputError
from buildbot_kernel.bisect.git import _git_env

MIRRORS = "bisect-mirrors"
_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def mirror_path(state_dir: str | os.PathLike, repository: str) -> Path:
    return Path(state_dir) / MIRRORS / (re.sub(r"[^A-Za-z0-9_.-]", "_", repository) + ".git")


def update_mirror(state_dir: str | os.PathLike, repository: str, url: str, timeout: float = 3600) -> Path:
    """Clone or fetch; a remote that cannot be reached is the ``target``'s problem, said with git's words."""
    path = mirror_path(state_dir, repository)
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(str(path), threading.Lock())
    with lock:
        if (path / "HEAD").is_file():
            cmd = ["git", "-C", str(path), "fetch", "--prune", "--quiet", "origin"]
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
            cmd = ["git", "clone", "--mirror", "--quiet", url, str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=_git_env(), timeout=timeout)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
            raise BisectInputError("target", f"cannot fetch {url}: {last}")
        if not (path / "HEAD").is_file():
            os.replace(tmp, path)
    return path

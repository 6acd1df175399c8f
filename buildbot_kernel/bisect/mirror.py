"""The master's own mirror clone of each repository, which the bisect engine asks its git questions.

Kept under ``<state>/bisect-mirrors/<name>.git`` and fetched before each bisect starts (or resumes), so
revisions the maintainer names (a sha pushed a minute ago, a branch, a tag) resolve as on the remote.
A bare ``--mirror`` clone: no work tree to keep in step, every ref of the remote, pruned on fetch.
docs/bisect.md ("The mirror clone") says where it is, how big it gets and who shares it. The git work,
its lock and its progress lines are :func:`buildbot_kernel.gitrepo.update_mirror`'s; this module names
the place and turns a git failure into the bisect's input error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from buildbot_kernel import gitrepo
from buildbot_kernel.bisect.engine import BisectInputError

MIRRORS = "bisect-mirrors"


def mirror_path(state_dir: str | os.PathLike, repository: str) -> Path:
    return Path(state_dir) / MIRRORS / (re.sub(r"[^A-Za-z0-9_.-]", "_", repository) + ".git")


def update_mirror(state_dir: str | os.PathLike, repository: str, url: str,
                  progress: gitrepo.Progress | None = None, timeout: float = 3600) -> Path:
    """Clone or fetch (blocking: call it in a thread); a remote that cannot be reached is the ``target``'s
    problem, said with git's words. ``progress`` gets git's progress lines (a first clone takes a while)."""
    try:
        return gitrepo.update_mirror(mirror_path(state_dir, repository), url, progress, timeout)
    except gitrepo.GitError as e:
        raise BisectInputError("target", f"cannot fetch {url}: {e.reason}") from None

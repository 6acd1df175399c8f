"""The few git questions a bisection asks, answered by the ``git`` program itself.

The engine leans on git for everything that defines a bisection (the candidate set, the distances, the
midpoint it would check out), so that our narrowing is git's narrowing, merges included. Plain
``git`` subprocesses rather than a library: the answers must be exactly what ``git bisect`` computes,
and that is ``rev-list``'s own output.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

# one line of ``git rev-list --bisect-all``: "<sha> (<decorations>, dist=N)" or "<sha> (dist=N)"
_BISECT_ALL_RE = re.compile(r"^(?P<sha>[0-9a-f]{40,64})\b.*\bdist=(?P<dist>\d+)\)\s*$")


class GitError(RuntimeError):
    """git refused a command we expected to work (a broken repository, not bad user input)."""


@dataclass(frozen=True)
class Candidate:
    """A commit that may still be the first bad one; ``dist`` is git's split quality (higher = better):
    min(ancestors in range, non-ancestors in range), as ``rev-list --bisect-all`` prints it."""

    sha: str
    dist: int


@dataclass(frozen=True)
class CommitInfo:
    sha: str
    subject: str
    author: str
    date: str  # committer date, ISO 8601 strict


class Repo:
    """A git repository on disk, asked through ``git -C <path>``."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            ["git", "-C", str(self.path), *args],
            capture_output=True,
            text=True,
            env=_git_env(),
        )
        if check and proc.returncode != 0:
            raise GitError(f"git {' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
        return proc

    def is_repository(self) -> bool:
        if not self.path.is_dir():
            return False
        return self.run("rev-parse", "--git-dir", check=False).returncode == 0

    def resolve(self, rev: str) -> str | None:
        """Full sha of the commit ``rev`` names, or None when it names no commit."""
        if not rev or rev.startswith("-"):
            return None
        proc = self.run("rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}",
                        check=False)
        out = proc.stdout.strip()
        return out if proc.returncode == 0 and out else None

    def is_ancestor(self, ancestor: str, descendant: str) -> bool:
        """True when ``ancestor`` is reachable from ``descendant`` (a commit is its own ancestor)."""
        proc = self.run("merge-base", "--is-ancestor", ancestor, descendant, check=False)
        if proc.returncode not in (0, 1):
            raise GitError(f"git merge-base --is-ancestor failed: {proc.stderr.strip()}")
        return proc.returncode == 0

    def bisect_all(self, bad: str, goods: list[str]) -> list[Candidate]:
        """Every commit reachable from ``bad`` and from no good, best split first (git's own order)."""
        out = self.run("rev-list", "--bisect-all", bad, *[f"^{g}" for g in goods], "--").stdout
        candidates = []
        for line in out.splitlines():
            m = _BISECT_ALL_RE.match(line)
            if not m:
                raise GitError(f"unexpected git rev-list --bisect-all line: {line!r}")
            candidates.append(Candidate(m["sha"], int(m["dist"])))
        return candidates

    def has_bisect_refs(self) -> bool:
        """A ``git bisect`` in progress here (its refs would leak into ``rev-list --bisect``)."""
        return bool(self.run("for-each-ref", "--count=1", "refs/bisect/").stdout.strip())

    def bisect_pick(self, bad: str, goods: list[str]) -> str:
        """The commit ``git bisect`` itself would check out next for this range (no skips).

        ``rev-list --bisect`` stops at the first exactly-halfway commit in walk order, which is how
        ``git bisect`` chooses among equally good splits; ``--bisect-all`` alone sorts ties by sha. It
        also silently adds refs/bisect/* to the range, so callers must not use it while a ``git
        bisect`` is in progress in the same repository (see :meth:`has_bisect_refs`).
        """
        return self.run("rev-list", "--bisect", bad, *[f"^{g}" for g in goods], "--").stdout.strip()

    def commit_info(self, sha: str) -> CommitInfo:
        out = self.run("show", "-s", "--format=%H%x00%s%x00%an <%ae>%x00%cI", sha, "--").stdout
        full, subject, author, date = out.rstrip("\n").split("\x00")
        return CommitInfo(full, subject, author, date)

    def subject(self, sha: str) -> str:
        return self.commit_info(sha).subject


def _git_env() -> dict[str, str]:
    """The caller's environment, minus what would point git at another repository."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_") or k in _KEEP_GIT_VARS}
    env["GIT_TERMINAL_PROMPT"] = "0"
    return env


_KEEP_GIT_VARS = {"GIT_SSH", "GIT_SSH_COMMAND", "GIT_ASKPASS", "GIT_CONFIG_NOSYSTEM", "GIT_CONFIG_GLOBAL"}

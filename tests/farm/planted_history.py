"""A real-kernel history with planted regressions, for the farm's bisect e2e test and its benchmark.

The repository is a ``git clone --shared`` of the prepared linux tree (scripts/prepare-linux-tree), so it
costs no copy of the objects.  Every generated commit appends a line to ``bbk-history.txt``, a file Kbuild
never reads, so each build after the first is a small incremental one; a planted commit also edits
``init/main.c``:

* ``marker``: ``kernel_init`` logs :data:`MARKER` -- the kernel boots, a stage-2 test that greps
  ``dmesg`` sees it (a regression for mode ``test``);
* ``panic``: ``kernel_init`` panics before it starts init -- with ``panic=-1`` the machine resets into
  stage 1 at once (a regression for mode ``boot``).

Author and committer dates are fixed, so the same tree gives the same commit ids on every run: image
names repeat and ccache hits across runs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

MARKER = "bbk: planted regression"
HISTORY_FILE = "bbk-history.txt"
_ANCHOR = "\tdo_sysctl_args();\n"  # in kernel_init(), before init is started (init/main.c of 6.1)
_EDITS = {
    "marker": f'\tpr_info("{MARKER}\\n");\n',
    "panic": '\tpanic("bbk: planted boot regression");\n',
}
_IDENTITY = {"GIT_AUTHOR_NAME": "Fixture Dev", "GIT_AUTHOR_EMAIL": "dev@example.org",
             "GIT_COMMITTER_NAME": "Fixture Dev", "GIT_COMMITTER_EMAIL": "dev@example.org"}
_FIRST_DATE = 1767225600  # 2026-01-01T00:00:00Z; commit i is i hours later


def _git(cwd: Path, *args: str, env: dict | None = None) -> str:
    r = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True,
                       env={**os.environ, **_IDENTITY, **(env or {})})
    if r.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)} in {cwd} failed: {r.stderr.strip()}")
    return r.stdout.strip()


def make_history(upstream: Path, work: Path, branch: str, count: int, plants: dict[int, str]) -> list[str]:
    """Clone ``upstream`` (bare, shared) into ``work`` and commit ``count`` commits on ``branch`` from its
    HEAD; ``plants`` maps a commit number (1..count) to ``marker`` or ``panic``.  Returns the shas of
    commits 0 (the starting point) .. count.  Nothing is pushed: the caller decides what upstream sees."""
    bad = {i: k for i, k in plants.items() if k not in _EDITS or not 1 <= i <= count}
    if bad:
        raise ValueError(f"plants: {bad} (expected 1..{count} -> one of {sorted(_EDITS)})")
    subprocess.run(["git", "clone", "-q", "--shared", str(upstream), str(work)], check=True)
    _git(work, "checkout", "-q", "-B", branch)
    shas = [_git(work, "rev-parse", "HEAD")]
    for i in range(1, count + 1):
        with open(work / HISTORY_FILE, "a") as f:
            f.write(f"change {i}\n")
        paths = [HISTORY_FILE]
        if i in plants:
            main_c = work / "init" / "main.c"
            text = main_c.read_text()
            if _ANCHOR not in text:
                raise RuntimeError(f"{main_c}: no {_ANCHOR.strip()!r} to plant the regression after")
            main_c.write_text(text.replace(_ANCHOR, _ANCHOR + _EDITS[plants[i]], 1))
            paths.append("init/main.c")
        _git(work, "add", *paths)
        stamp = f"@{_FIRST_DATE + 3600 * i} +0000"
        subject = f"init: {plants[i]} change {i}" if i in plants else f"history: change {i}"
        _git(work, "commit", "-q", "-m", subject, env={"GIT_AUTHOR_DATE": stamp, "GIT_COMMITTER_DATE": stamp})
        shas.append(_git(work, "rev-parse", "HEAD"))
    return shas


def push(work: Path, sha: str, branch: str) -> None:
    """Move upstream's ``branch`` to ``sha`` (a fast-forward along the history)."""
    _git(work, "push", "-q", "origin", f"{sha}:refs/heads/{branch}")

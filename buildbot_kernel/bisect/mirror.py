"""The master's mirror clone of each repository: the bisect's git, and the host's one object store.

Kept under ``<state>/bisect-mirrors/<name>.git`` and fetched before each bisect starts (or resumes) and
by the heads builder, so revisions the maintainer names (a sha pushed a minute ago, a branch, a tag)
resolve as on the remote. A bare ``--mirror`` clone: no work tree to keep in step, every ref of the
remote, refs pruned on fetch.

**One copy of the history per host.** The mirror holds the objects; the other repositories on the host
borrow them through git alternates: Buildbot's change poller (:func:`buildbot_kernel.target.poller_dir`, deduplicated by
:func:`share_store` after each fetch) and, through each worker's own store, the workers' checkouts
(the branch build's ``update-tree`` step, :mod:`buildbot_kernel.worker_store`). The direction matters.
Borrowing is only safe from a repository that never deletes an object, because a borrower's commits may
live only in the lender.
The poller's repository is Buildbot's: it fetches and gcs as Buildbot sees fit (default gc prunes
unreachable objects after two weeks, and a force-pushed branch makes old commits unreachable there),
so nothing may borrow from it. The mirror is ours: it is configured never to prune an object
(:func:`buildbot_kernel.gitrepo.keep_objects`), so whatever borrows from it stays whole, and the
borrowers may gc and prune freely (their own objects only). docs/bisect.md ("One copy of the history")
says where things are and how to gc safely. The git work, its lock and its progress lines are
:mod:`buildbot_kernel.gitrepo`'s; this module names the places and turns a git failure into the
bisect's input error.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from buildbot_kernel import gitrepo
from buildbot_kernel.bisect.engine import BisectInputError
from buildbot_kernel.target import poller_dir

MIRRORS = "bisect-mirrors"


def mirror_path(state_dir: str | os.PathLike, repository: str) -> Path:
    return Path(state_dir) / MIRRORS / (re.sub(r"[^A-Za-z0-9_.-]", "_", repository) + ".git")


def update_mirror(state_dir: str | os.PathLike, repository: str, url: str,
                  progress: gitrepo.Progress | None = None, timeout: float = 3600) -> Path:
    """Clone or fetch (blocking: call it in a thread); a remote that cannot be reached is the ``target``'s
    problem, said with git's words. ``progress`` gets git's progress lines (a first clone takes a while).
    Then the poller's repository borrows the mirror's objects (:func:`share_store`); a first clone copies
    what the poller already fetched rather than fetching it again."""
    try:
        return gitrepo.update_mirror(mirror_path(state_dir, repository), url, progress, timeout,
                                     then=lambda _: share_store(state_dir, repository, progress),
                                     seed=poller_dir(state_dir, repository))
    except gitrepo.GitError as e:
        raise BisectInputError("target", f"cannot fetch {url}: {e.reason}") from None


def mirror_to_resume(state_dir: str | os.PathLike, repository: str, url: str,
                     progress: gitrepo.Progress | None = None) -> Path:
    """The mirror for a bisect that resumes: fetched when the remote answers, else as it is, since it
    already holds every commit the bisect started with (a remote down at a master's restart must not
    end the bisect).  Raises the fetch's :class:`BisectInputError` only when there is no mirror."""
    try:
        return update_mirror(state_dir, repository, url, progress)
    except BisectInputError as e:
        mirror = mirror_path(state_dir, repository)
        if not (mirror / "HEAD").is_file():
            raise
        if progress is not None:
            progress(f"{e.message}; resuming with the mirror as it is")
        return mirror


def share_store(state_dir: str | os.PathLike, repository: str, progress: gitrepo.Progress | None = None) -> bool:
    """Let the poller's repository borrow the mirror's objects and drop its own copies (once); True when
    done now. A failure only costs disk space: it is reported, never raised."""
    report = progress or (lambda line: None)
    poller, store = poller_dir(state_dir, repository), mirror_path(state_dir, repository)
    if not (poller / "HEAD").is_file() or not (store / "HEAD").is_file():
        return False
    try:
        done = gitrepo.borrow(poller, store)
    except gitrepo.GitError as e:
        report(f"the change poller's repository {poller} keeps its own copy: {e.reason}")
        return False
    if done:
        report(f"the change poller's repository {poller} now borrows the objects of {store}")
    return done

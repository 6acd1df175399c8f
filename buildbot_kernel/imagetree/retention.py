"""Retention: which images go when the tree keeps the newest K per branch and/or fits a byte budget.

The policy is a pure function over the scan's images so it can be tested (and explained) without a
filesystem.  Rules, in order:
  1. a pinned image (a running bisect uses it) is never deleted, whatever the limits say;
  2. ``keep_per_branch`` K > 0: each branch keeps its K newest images (pinned ones are kept on top),
     newest in the branch's order (its history, as the index lists it) when the caller gives it;
  3. ``max_bytes`` B > 0: while the tree is over B, the oldest image of the whole tree goes, except a
     branch's newest image (its ``latest``), so a budget never empties a branch.  If pins and latest
     images alone exceed B, the plan says so (``over_budget``) instead of breaking a bisect.
Deleting is a rename into ``<root>/.trash/`` (atomic, instantly gone from the tree) and then rmtree.
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from buildbot_kernel.imagetree import reserved
from buildbot_kernel.imagetree.package import TRASH
from buildbot_kernel.imagetree.record import ImageRecord


@dataclass
class Plan:
    delete: list[ImageRecord] = field(default_factory=list)
    kept_bytes: int = 0
    over_budget: bool = False
    failed: dict[str, str] = field(default_factory=dict)  # image path -> why it could not be deleted

    def describe(self) -> str:
        gone = ", ".join(i.path for i in self.delete) or "nothing"
        note = " (still over the byte budget: pinned and latest images are kept)" if self.over_budget else ""
        failed = "".join(f"; could not delete {path}: {why}" for path, why in self.failed.items())
        return f"retention deletes {gone}; {self.kept_bytes} bytes kept{note}{failed}"


def plan(images: Iterable[ImageRecord], keep_per_branch: int = 0, max_bytes: int = 0,
         pinned: Iterable[str] = (), ranks: dict[str, int] | None = None, keep: Iterable[str] = ()) -> Plan:
    """What to delete.  ``images`` newest first (as the scan returns them); ``pinned`` holds image names
    or ``branch/name/`` paths.  ``ranks``: each image path's place in its branch's order (0 = first; by
    default the build date order); ``keep``: paths never deleted for the budget (the ``latest`` images)."""
    if keep_per_branch < 0 or max_bytes < 0:
        raise ValueError("keep_per_branch and max_bytes must be >= 0 (0 = no limit)")
    images = sorted(images, key=lambda i: i.sort_key, reverse=True)
    pins = set(pinned)
    is_pinned = {i.path: (i.name in pins or i.path in pins) for i in images}
    rank: dict[str, int] = {}
    seen: dict[str, int] = {}
    for img in images:
        rank[img.path] = seen.get(img.branch_dir, 0)
        seen[img.branch_dir] = rank[img.path] + 1
    if ranks is not None:
        rank.update((path, r) for path, r in ranks.items() if path in rank)
    keep = set(keep)
    doomed = {i.path for i in images
              if keep_per_branch and rank[i.path] >= keep_per_branch and not is_pinned[i.path]}
    kept = [i for i in images if i.path not in doomed]
    total = sum(i.size for i in kept)
    over = False
    if max_bytes and total > max_bytes:
        for img in reversed(kept):  # oldest first
            if total <= max_bytes:
                break
            if is_pinned[img.path] or rank[img.path] == 0 or img.path in keep:
                continue
            doomed.add(img.path)
            total -= img.size
        over = total > max_bytes
    return Plan([i for i in images if i.path in doomed], total, over)


def move_to_trash(root: str | os.PathLike, rel_path: str) -> Path:
    """Rename ``<root>/<rel_path>`` (``branch/name/``) into ``<root>/.trash/`` (one atomic step out of the
    tree); returns where it went.  The trash name is a short unique id, not the image's path: a branch
    directory's name alone may come near NAME_MAX (the caller logs which image it was).  Both
    directories are opened by descriptor (reserved.py); raises ``reserved.RefusedEntry`` or OSError."""
    branch, name = rel_path.strip("/").split("/")
    trashed = uuid.uuid4().hex
    with reserved.opened(root, branch) as branch_fd, reserved.opened(root, TRASH, create=True) as trash_fd:
        if branch_fd is None:
            raise FileNotFoundError(errno.ENOENT, "the branch directory is gone", os.path.join(root, branch))
        os.rename(name, trashed, src_dir_fd=branch_fd, dst_dir_fd=trash_fd)
    return Path(root) / TRASH / trashed


def remove_trashed(root: str | os.PathLike, names: Iterable[str]) -> None:
    """Remove what :func:`move_to_trash` put in ``.trash`` (by name), walking it by descriptor; nothing
    when ``.trash`` is gone or no longer a real directory (the next start reports it)."""
    with contextlib.suppress(FileNotFoundError, reserved.RefusedEntry), reserved.opened(root, TRASH) as trash_fd:
        for name in names if trash_fd is not None else ():
            reserved.remove_entry(trash_fd, name)


def empty_trash(root: str | os.PathLike) -> list[str]:
    """Remove what earlier deletions left in ``.trash`` (a crash between rename and rmtree), by
    descriptor; raises :class:`reserved.RefusedEntry` when ``.trash`` is not a real directory."""
    return reserved.empty_dir(root, TRASH)

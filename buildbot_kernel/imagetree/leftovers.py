"""What a killed master or a crash leaves in the image tree, removed when the master starts.

Publishing stages an image under ``<root>/.incoming/`` and every generated file is written as a
``.tmp-*`` file first (:mod:`buildbot_kernel.imagetree.atomic`); a process killed in between (or a disk
that filled up) leaves those behind.  Nobody else writes there, and at start-up no build of this master
is running, so everything of that kind is stale: keeping it would only fill the disk.  Every directory
is walked by descriptor, never through a symlink (:mod:`buildbot_kernel.imagetree.reserved`): the tree
is written by others, and a ``.incoming`` that leads elsewhere must not have the master empty that.
"""

from __future__ import annotations

import contextlib
import os
import stat

from buildbot_kernel.imagetree import reserved
from buildbot_kernel.imagetree.atomic import TEMP_PREFIX
from buildbot_kernel.imagetree.modes import DIR_FLAGS, list_dir
from buildbot_kernel.imagetree.package import INCOMING, STATE
from buildbot_kernel.imagetree.retention import empty_trash
from buildbot_kernel.imagetree.scan import subdirs


def clean_at_start(root: str | os.PathLike, leftovers: bool) -> list[str]:
    """Empty the trash and, at the master's start (``leftovers``), remove the leftovers; what to log.
    A reserved directory that is not a real directory is reported and passed over, and the start goes
    on: every operation that needs it refuses it again, naming it (README.md, "Images")."""
    lines = []
    for clean in (empty_trash, clean_leftovers) if leftovers else (empty_trash,):
        try:
            removed = clean(root)
        except reserved.RefusedEntry as e:
            lines.append(f"not cleaned: {e}")
            continue
        if removed:
            lines.append(f"removed {len(removed)} leftovers of an earlier run: {', '.join(removed)}")
    return lines


def clean_leftovers(root: str | os.PathLike) -> list[str]:
    """Remove ``.incoming/*`` and ``.tmp-*`` files up to an image directory deep; the removed paths.
    Raises :class:`reserved.RefusedEntry` when ``.incoming`` or ``.state`` is not a real directory."""
    root = os.fspath(root)
    removed = reserved.empty_dir(root, INCOMING)
    try:
        with reserved.opened(root) as rfd, reserved.opened(root, STATE) as sfd:
            removed += _temp_files(rfd, root)
            if sfd is not None:
                removed += _temp_files(sfd, os.path.join(root, STATE))
            for b in subdirs(rfd):
                removed += _in_subdir(rfd, b, os.path.join(root, b), depth=1)
    except FileNotFoundError:  # no tree yet
        pass
    return removed


def _in_subdir(parent_fd: int, name: str, label: str, depth: int) -> list[str]:
    """The ``.tmp-*`` files of a branch directory (``depth`` 1) and of its image directories; one that
    is gone or swapped for a symlink meanwhile is passed over."""
    try:
        fd = os.open(name, DIR_FLAGS, dir_fd=parent_fd)
    except OSError:
        return []
    try:
        removed = _temp_files(fd, label)
        if depth:
            for sub in subdirs(fd):
                removed += _in_subdir(fd, sub, os.path.join(label, sub), depth - 1)
        return removed
    finally:
        os.close(fd)


def _temp_files(fd: int, label: str) -> list[str]:
    removed = []
    for name, st in list_dir(fd).items():
        if name.startswith(TEMP_PREFIX) and not stat.S_ISDIR(st.st_mode):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(name, dir_fd=fd)
            removed.append(os.path.join(label, name))
    return removed

"""What a killed master or a crash leaves in the image tree, removed when the master starts.

Publishing stages an image under ``<root>/.incoming/`` and every generated file is written as a
``.tmp-*`` file first (:mod:`buildbot_kernel.imagetree.atomic`); a process killed in between (or a disk
that filled up) leaves those behind.  Nobody else writes there, and at start-up no build of this master
is running, so everything of that kind is stale: keeping it would only fill the disk.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from buildbot_kernel.imagetree.atomic import TEMP_PREFIX
from buildbot_kernel.imagetree.package import INCOMING


def clean_leftovers(root: str | os.PathLike) -> list[str]:
    """Remove ``.incoming/*`` and ``.tmp-*`` files up to an image directory deep; the removed paths."""
    root = Path(root)
    removed = []
    incoming = root / INCOMING
    for entry in _entries(incoming):
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(entry.path)
        removed.append(entry.path)
    dirs = [root, root / ".state"]
    for b in _entries(root):
        if not b.name.startswith(".") and b.is_dir(follow_symlinks=False):
            dirs.append(Path(b.path))
            dirs += [Path(i.path) for i in _entries(b.path) if i.is_dir(follow_symlinks=False)]
    for d in dirs:
        for e in _entries(d):
            if e.name.startswith(TEMP_PREFIX) and not e.is_dir(follow_symlinks=False):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(e.path)
                removed.append(e.path)
    return removed


def _entries(d: str | os.PathLike) -> list[os.DirEntry]:
    try:
        with os.scandir(d) as it:
            return list(it)
    except (FileNotFoundError, NotADirectoryError):
        return []

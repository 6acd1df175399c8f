"""The directories of the tree the master writes into or deletes from, opened without following a symlink.

The tree root may be writable by others (docs/serving.md), so ``.incoming``, ``.trash``, ``.state``, a
branch directory or an image's ``tests`` may be a symlink someone put there.  Followed, it would carry
the master's deletions (leftovers, the trash), its state files and locks, a publish's rename and the test
results out of the tree, to wherever it points.  So each is opened one name at a time from the root's
descriptor with ``O_NOFOLLOW | O_DIRECTORY``, and what the master does there is done relative to that
descriptor.  An entry that is not a real directory is refused and left as it is: the master does not
remove or rename what it did not make (an admin wants to see it, and who put it there), so the operation
that needed it fails, saying what is there and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from collections.abc import Iterator

from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.imagetree.modes import DIR_FLAGS, list_dir

ROOT_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC  # the root itself may be an admin's symlink


class RefusedEntry(BuildbotKernelError):
    """A directory the master needs is something else (a symlink, a file); ``str()`` names the path,
    what is there, and the fix; ``summary`` the first two, short enough for a build step's summary."""

    def __init__(self, summary: str, wanted: str, label: str):
        self.summary = summary
        super().__init__(f"{summary}: the master does not follow it (it may lead out of the image tree) and "
                         f"leaves it as it is; remove it (rm {label}) and the master makes the {wanted} again")


def open_subdir(dir_fd: int, name: str, label: str, create: bool = False) -> int | None:
    """``name`` in the directory open at ``dir_fd``, never through a symlink (the caller closes it).
    When absent: made if ``create``, else None.  ``label``: the path, for the refusal's message."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"{name!r} is not one directory name")
    try:
        return _open(dir_fd, name, label)
    except FileNotFoundError:
        if not create:
            return None
    with contextlib.suppress(FileExistsError):  # made meanwhile by another thread or master
        os.mkdir(name, dir_fd=dir_fd)
    return _open(dir_fd, name, label)


def _open(dir_fd: int, name: str, label: str) -> int:
    try:
        return os.open(name, DIR_FLAGS, dir_fd=dir_fd)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise refusal(dir_fd, name, label) from None
        raise


def open_file(dir_fd: int, name: str, label: str, flags: int = os.O_RDWR | os.O_CREAT) -> int:
    """The file ``name`` in the directory open at ``dir_fd`` (a lock file), never through a symlink: made
    (0644) by ``O_CREAT``, a dangling one would make its target wherever it points."""
    try:
        return os.open(name, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dir_fd)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise refusal(dir_fd, name, label, "regular file") from None
        raise


def refusal(dir_fd: int, name: str, label: str, wanted: str = "directory") -> RefusedEntry:
    """Why the entry ``name`` (``label``) of the directory open at ``dir_fd`` is not used."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            what = f"a symbolic link to {os.readlink(name, dir_fd=dir_fd)[:200]!r}"
        else:
            what = "a regular file" if stat.S_ISREG(st.st_mode) else "a special file"
    except OSError:
        what = "something else"
    return RefusedEntry(f"{label} is {what}, not a {wanted}", wanted, label)


@contextlib.contextmanager
def opened(root: str | os.PathLike, *names: str, create: bool = False) -> Iterator[int | None]:
    """The directory ``root/names...``: the root opened as it is named (an admin may make it a symlink),
    each name below it by :func:`open_subdir`; None when one of them is absent.  ``create`` makes the
    root and the last name when absent (not the names between).  Closed on leaving the block."""
    if create:
        os.makedirs(root, exist_ok=True)
    fds = [os.open(root, ROOT_FLAGS)]
    try:
        label = os.fspath(root)
        for k, name in enumerate(names):
            label = os.path.join(label, name)
            fd = open_subdir(fds[-1], name, label, create and k == len(names) - 1)
            if fd is None:
                yield None
                return
            fds.append(fd)
        yield fds[-1]
    finally:
        for fd in fds:
            os.close(fd)


def remove_entry(dir_fd: int, name: str) -> None:
    """Remove ``name`` from the directory open at ``dir_fd``, whatever it is: a directory with all below
    it (``shutil.rmtree`` by descriptors, never through a symlink), anything else (a symlink too) itself."""
    try:
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        shutil.rmtree(name, ignore_errors=True, dir_fd=dir_fd)
    else:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(name, dir_fd=dir_fd)


def empty_dir(root: str | os.PathLike, name: str) -> list[str]:
    """Remove everything in ``root/name`` (a reserved directory: ``.incoming``, ``.trash``); the removed
    paths.  Nothing when it or the root is absent; raises :class:`RefusedEntry` when it is not a real
    directory, before anything is removed."""
    removed = []
    try:
        with opened(root, name) as fd:
            if fd is None:
                return removed
            for entry in list_dir(fd):
                remove_entry(fd, entry)
                removed.append(os.path.join(root, name, entry))
    except FileNotFoundError:  # no tree yet
        pass
    return removed

"""The index writer's lock: one regeneration (or retention run) at a time, in this process and across
every master that shares the tree over NFS.

Inside a process a re-entrant thread lock orders the publish step, the watchdog and retention; the
first holder also takes a POSIX record lock (``fcntl.lockf``) on ``<root>/.state/index.lock``.  NFS
carries those locks to the server (NLM for v3, built into v4), and the kernel drops them when the holder
dies, even by SIGKILL (the NFS server after its lease time when a whole host is gone), so a crashed
master never leaves a stale lock for an admin to remove.  POSIX locks belong to a process, not to a
file descriptor, which is why the thread lock is needed as well.
"""

from __future__ import annotations

import fcntl
import os
import threading
from pathlib import Path

from buildbot_kernel.imagetree import reserved


class TreeLock:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._thread_lock = threading.RLock()
        self._depth = 0  # re-entries by the thread holding it
        self._fd: int | None = None

    def __enter__(self) -> TreeLock:
        self._thread_lock.acquire()
        try:
            if self._depth == 0:
                fd = self._open()
                try:
                    fcntl.lockf(fd, fcntl.LOCK_EX)
                except BaseException:
                    os.close(fd)
                    raise
                self._fd = fd
            self._depth += 1
        except BaseException:
            self._thread_lock.release()
            raise
        return self

    def _open(self) -> int:
        """The lock file, reached without following a symlink (``.state`` lies in a tree others write:
        a symlink there would have the master make and lock a file wherever it points).  Raises
        :class:`reserved.RefusedEntry` for one."""
        directory = self.path.parent
        with reserved.opened(directory.parent, directory.name, create=True) as dir_fd:
            return reserved.open_file(dir_fd, self.path.name, str(self.path))

    def __exit__(self, *exc) -> None:
        self._depth -= 1
        if self._depth == 0:
            fd, self._fd = self._fd, None
            os.close(fd)  # releases the record lock
        self._thread_lock.release()


def try_hold(path: str | os.PathLike) -> int | None:
    """Take the same kind of lock on ``path`` without waiting, for as long as the process keeps the
    returned descriptor open (or dies); None when another process holds it."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        return None
    return fd

"""Atomic file replacement: a reader (HTTP client, NFS client, test farm) never sees half a file.

The temporary file lives in the target's directory (same filesystem, so ``os.replace`` is atomic) and
starts with a dot, so the watchdog observer and the index scan both ignore it.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

TEMP_PREFIX = ".tmp-"
# text pieces are encoded and written this much at a time: small enough that the interpreter lock is
# never held for long, and below glibc's mmap threshold, so the buffers are reused from the heap (at
# 1 MiB each batch was a fresh mmap: 30,000 page faults for the index files of 10,000 images)
_BATCH = 1 << 16


def atomic_write(path: str | os.PathLike, data: bytes | str | Iterable[str], mode: int = 0o644, gid: int = -1,
                 durable: bool = True, dir_fd: int | None = None) -> None:
    """Replace ``path`` with ``data`` in one rename; on any error the old file stays as it was.  ``mode``
    and ``gid`` (-1: unchanged) are set before the rename, so a reader never sees the file unreadable.
    ``durable=False`` skips the fsync, for files regenerated at every start anyway (the index files):
    after a crash such a file may be old or empty until then, never half of a new one to a reader.
    ``data`` may be an iterable of text pieces (an index's lines): they are encoded and written about
    64 KiB at a time, so a 30 MB file never holds the interpreter lock for one long encode.

    ``dir_fd``: ``path`` is a name in that open directory, and everything happens there, whatever its
    path leads to meanwhile (a directory of the tree opened without following a symlink, reserved.py);
    else the target's directory is looked up by its path, symlinks and all."""
    path = Path(path)
    if dir_fd is not None and os.fspath(path) != path.name:
        raise ValueError(f"{path}: with dir_fd, a name in that directory")
    if isinstance(data, str):
        data = [data]
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.",
                               dir=path.parent if dir_fd is None else f"/proc/self/fd/{dir_fd}")
    if dir_fd is not None:
        tmp = os.path.basename(tmp)
    try:
        with os.fdopen(fd, "wb") as f:
            if isinstance(data, bytes):
                f.write(data)
            else:
                _write_pieces(f, data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
            if gid != -1:
                os.fchown(f.fileno(), -1, gid)
            os.fchmod(f.fileno(), mode)
        os.replace(tmp, path, src_dir_fd=dir_fd, dst_dir_fd=dir_fd)
    except BaseException:
        try:
            os.unlink(tmp, dir_fd=dir_fd)
        except FileNotFoundError:
            pass
        raise


def _write_pieces(f, pieces: Iterable[str]) -> None:
    batch: list[str] = []
    size = 0
    for piece in pieces:
        batch.append(piece)
        size += len(piece)
        if size >= _BATCH:
            f.write(_encoded(batch))
            batch, size = [], 0
    if batch:
        f.write(_encoded(batch))


def _encoded(batch: list[str]) -> bytes:
    return batch[0].encode() if len(batch) == 1 else "".join(batch).encode()


def is_temp_name(name: str) -> bool:
    """Hidden names are ours (or rsync's): never listed, never part of a manifest."""
    return name.startswith(".")

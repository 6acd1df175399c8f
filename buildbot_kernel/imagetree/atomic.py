"""Atomic file replacement: a reader (HTTP client, NFS client, test farm) never sees half a file.

The temporary file lives in the target's directory (same filesystem, so ``os.replace`` is atomic) and
starts with a dot, so the watchdog observer and the index scan both ignore it.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

TEMP_PREFIX = ".tmp-"


def atomic_write(path: str | os.PathLike, data: bytes | str, mode: int = 0o644, gid: int = -1,
                 durable: bool = True) -> None:
    """Replace ``path`` with ``data`` in one rename; on any error the old file stays as it was.  ``mode``
    and ``gid`` (-1: unchanged) are set before the rename, so a reader never sees the file unreadable.
    ``durable=False`` skips the fsync, for files regenerated at every start anyway (the index files):
    after a crash such a file may be old or empty until then, never half of a new one to a reader."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode()
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            if durable:
                os.fsync(f.fileno())
        if gid != -1:
            os.chown(tmp, -1, gid)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def is_temp_name(name: str) -> bool:
    """Hidden names are ours (or rsync's): never listed, never part of a manifest."""
    return name.startswith(".")

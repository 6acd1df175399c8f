"""The one sha256 of a file: image manifests, transfer checks, verified downloads and boot files all
hash the same way, in 1 MiB chunks so a big modules tarball never sits in memory."""

from __future__ import annotations

import hashlib
import os

CHUNK = 1 << 20


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's content."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()

"""HTTP details of serving files that do not need Twisted: path checks, Range parsing, content types.

Kept pure so the rules that keep a client inside the tree are tested on their own, one case at a time.
"""

from __future__ import annotations

import mimetypes
import os
import re

# files of an image and of the index whose extension says nothing
_TYPES = {
    "vmlinuz": "application/octet-stream",
    "config": "text/plain; charset=utf-8",
    "System.map": "text/plain; charset=utf-8",
    "SHA256SUMS": "text/plain; charset=utf-8",
    "latest": "text/plain; charset=utf-8",
}
_EXT_TYPES = {
    ".json": "application/json",
    ".html": "text/html; charset=utf-8",
    ".xz": "application/x-xz",
    ".deb": "application/vnd.debian.binary-package",
    ".txt": "text/plain; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
}
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


class Refused(Exception):
    """A request path that leaves the tree or names something hidden; answered as 404."""


def content_type(name: str) -> str:
    if name in _TYPES:
        return _TYPES[name]
    ext = os.path.splitext(name)[1]
    if ext in _EXT_TYPES:
        return _EXT_TYPES[ext]
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    return guessed if guessed and not encoding else "application/octet-stream"


def resolve(root_real: str, segments: list[str]) -> str:
    """The real path for URL path ``segments`` (already percent-decoded), or raise Refused.

    Refused: a segment with ``/``, ``\\`` or NUL in it (an encoded separator or absolute path), a
    hidden segment (``.``, ``..``, ``.incoming``, ``.trash``, temp files), and anything whose real path
    (symlinks followed) is outside ``root_real``.  Empty segments (``a//b``, a trailing ``/``) are
    ignored.
    """
    parts = []
    for s in segments:
        if s == "":
            continue
        if s.startswith(".") or "/" in s or "\\" in s or "\0" in s:
            raise Refused(f"path segment {s!r} is not allowed")
        parts.append(s)
    real = os.path.realpath(os.path.join(root_real, *parts))
    if real != root_real and not real.startswith(root_real + os.sep):
        raise Refused("path leaves the image root")
    return real


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """A single ``bytes=`` range -> (first, last) inclusive; None to send the whole file (no header,
    several ranges, or a header we do not understand, as RFC 9110 allows); "unsatisfiable" for a 416."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    a = int(first)
    if last and int(last) < a:
        return None  # syntactically invalid: ignore the header
    if a >= size:
        return "unsatisfiable"
    return a, min(int(last), size - 1) if last else size - 1

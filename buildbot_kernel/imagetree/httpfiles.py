"""HTTP details of serving files that do not need Twisted: path checks, listings, Range parsing,
conditional requests, content types.

Kept pure so the rules that keep a client inside the tree are tested on their own, one case at a time.
Everything here takes what a client sent as hostile: a bad value means "ignore it" or "refuse it",
never an exception the server did not expect (README, "Images", lists what the server refuses).
"""

from __future__ import annotations

import mimetypes
import os
import re
import stat
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import NamedTuple
from urllib.parse import quote

from buildbot_kernel.errors import BuildbotKernelError

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
_RANGE = re.compile(r"^bytes[ \t]*=[ \t]*(\d*)[ \t]*-[ \t]*(\d*)\Z", re.IGNORECASE)
_ETAG = re.compile(r'(?:W/)?("[^"]*")')
# more digits than any file size needs; a longer number is "bigger than the file" without int() of it
# (int() refuses strings over 4300 digits, and a Range header may be 16 KiB long)
_MAX_DIGITS = 20
_HUGE = 10 ** _MAX_DIGITS


class Refused(BuildbotKernelError):
    """A request path that leaves the tree or names something hidden; answered as 404."""


class Entry(NamedTuple):
    name: str
    is_dir: bool
    size: int | None


def content_type(name: str) -> str:
    if name in _TYPES:
        return _TYPES[name]
    ext = os.path.splitext(name)[1]
    if ext in _EXT_TYPES:
        return _EXT_TYPES[ext]
    guessed, encoding = mimetypes.guess_type(name, strict=False)
    return guessed if guessed and not encoding else "application/octet-stream"


def _inside(root_real: str, real: str) -> bool:
    """``real`` is ``root_real`` or below it, and no directory on the way down is hidden (a symlink
    into ``.incoming`` or ``.state`` is as hidden as the path itself)."""
    if real == root_real:
        return True
    if not real.startswith(root_real + os.sep):
        return False
    return not any(p.startswith(".") for p in real[len(root_real) + 1:].split(os.sep))


def resolve(root_real: str, segments: list[str]) -> str:
    """The real path for URL path ``segments`` (already percent-decoded), or raise Refused.

    Refused: a segment with ``/``, ``\\`` or NUL in it (an encoded separator or absolute path), a
    hidden segment (``.``, ``..``, ``.incoming``, ``.state``, temp files), and anything whose real path
    (symlinks followed) is outside ``root_real`` or passes through a hidden directory.  Empty segments
    (``a//b``, a trailing ``/``) are ignored.
    """
    parts = []
    for s in segments:
        if s == "":
            continue
        if s.startswith(".") or "/" in s or "\\" in s or "\0" in s:
            raise Refused(f"path segment {s!r} is not allowed")
        parts.append(s)
    real = os.path.realpath(os.path.join(root_real, *parts))
    if not _inside(root_real, real):
        raise Refused("path leaves the image root")
    return real


def canonical_location(segments: list[str], directory: bool = True) -> str:
    """The absolute path a redirect sends a client to: one leading ``/`` and every segment
    percent-encoded, so ``//host`` or ``/\\host`` in a request never becomes a Location a browser reads
    as another host."""
    path = "/" + "/".join(quote(s, safe="+~@!$&'()*,;=:") for s in segments if s)
    return path + "/" if directory and path != "/" else path


def list_dir(root_real: str, path: str) -> list[Entry]:
    """The entries of directory ``path`` a listing may show: no hidden names, no names that are not
    UTF-8, nothing whose real path is outside the tree (a symlink out is not even named), only
    directories and regular files.  Sorted by name.  OSError if ``path`` cannot be read."""
    out = []
    with os.scandir(path) as it:
        entries = list(it)
    for e in entries:
        name = e.name
        if name.startswith("."):
            continue
        try:
            name.encode("utf-8")
        except UnicodeEncodeError:
            continue
        real = os.path.realpath(os.path.join(path, name))
        if not _inside(root_real, real):
            continue
        try:
            st = os.stat(real)
        except OSError:  # a broken symlink, or gone since scandir
            continue
        if stat.S_ISDIR(st.st_mode):
            out.append(Entry(name, True, None))
        elif stat.S_ISREG(st.st_mode):
            out.append(Entry(name, False, st.st_size))
    return sorted(out)


def _number(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return _HUGE if len(digits) > _MAX_DIGITS else int(digits)


def parse_range(header: str | None, size: int) -> tuple[int, int] | None | str:
    """A single ``bytes=`` range -> (first, last) inclusive; None to send the whole file (no header,
    several ranges, or a header we do not understand, as RFC 9110 allows); "unsatisfiable" for a 416.
    Numbers of any length are fine: one bigger than the file is just that."""
    if not header:
        return None
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = _number(last)
        if n == 0 or size == 0:
            return "unsatisfiable"
        return max(0, size - n), size - 1
    a = _number(first)
    if last and _number(last) < a:
        return None  # syntactically invalid: ignore the header
    if a >= size:
        return "unsatisfiable"
    return a, min(_number(last), size - 1) if last else size - 1


def _http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        when = parsedate_to_datetime(value.strip())
        if when.tzinfo is None:  # "-0000": HTTP dates are UTC anyway
            when = when.replace(tzinfo=UTC)
        return when.timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def not_modified(etag: str, mtime: float, if_none_match: str | None, if_modified_since: str | None) -> bool:
    """Whether a GET/HEAD is answered 304, in RFC 9110 section 13.2.2's order: when If-None-Match is
    present it alone decides (weak comparison, ``*`` matches) and If-Modified-Since is ignored; an
    If-Modified-Since that is not a valid HTTP-date is ignored too."""
    if if_none_match is not None:
        if if_none_match.strip() == "*":
            return True
        return _ETAG.sub(r"\1", etag) in {m.group(1) for m in _ETAG.finditer(if_none_match)}
    since = _http_date(if_modified_since)
    return since is not None and int(mtime) <= since

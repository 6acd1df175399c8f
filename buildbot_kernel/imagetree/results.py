"""The results of watched tests, kept beside the image they are about (contract: docs/index-format.md).

``<image>/tests/<test>.json`` holds one result, ``<test>.log`` its output.  They live on the image tree
because that is what every master (and the index generator) already shares, over NFS too: each file is
replaced in one rename, so a reader sees the old result or the new one, never half of one, and no lock is
needed.  The directory is not a payload file: image verification and SHA256SUMS ignore it, and retention
deletes it with the image.  The scanner reads the results into the index entries' ``tests`` field.
"""

from __future__ import annotations

import errno
import json
import os
import re
from pathlib import Path

import orjson

from buildbot_kernel.imagetree import reserved
from buildbot_kernel.imagetree.atomic import atomic_write
from buildbot_kernel.imagetree.package import read_bytes

TESTS_DIR = "tests"
RESULTS = ("pass", "fail", "skip", "error")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,49}\Z")
FIELDS = ("result", "date", "machine", "log_url")


def valid_name(name: str) -> bool:
    """A test name usable as a file name (settings check the same rule)."""
    return isinstance(name, str) and bool(_NAME.match(name))


def result_path(image_dir: str | os.PathLike, test: str, suffix: str = ".json") -> Path:
    if not valid_name(test):
        raise ValueError(f"test name {test!r} is not a plain name")
    return Path(image_dir) / TESTS_DIR / f"{test}{suffix}"


def log_url(image_url: str, test: str) -> str:
    """Where the served tree has the test's log (``image_url`` ends in "/")."""
    return f"{image_url}{TESTS_DIR}/{test}.log"


def write_result(image_dir: str | os.PathLike, test: str, result: dict, log_text: str = "",
                 mode: int = 0o644, gid: int = -1) -> None:
    """The log first, then the result that points at it; both atomically (blocking: call in a thread).

    The branch, image and ``tests`` directories are opened by descriptor, never through a symlink, and
    the directory's mode and both files are set and written through it: the tree is written by others,
    and a ``tests`` symlink would have had the master chmod and write wherever it points.  Raises
    ``reserved.RefusedEntry`` for such an entry, FileNotFoundError when the image is gone."""
    if result.get("result") not in RESULTS:
        raise ValueError(f"result {result.get('result')!r}; expected one of {RESULTS}")
    log_name, result_name = result_path("", test, ".log").name, result_path("", test).name
    image_dir = Path(image_dir)
    with reserved.opened(image_dir.parent.parent, image_dir.parent.name, image_dir.name) as image_fd:
        if image_fd is None:
            raise FileNotFoundError(errno.ENOENT, "the image directory is gone", str(image_dir))
        fd = reserved.open_subdir(image_fd, TESTS_DIR, str(image_dir / TESTS_DIR), create=True)
        try:
            if gid != -1:
                os.fchown(fd, -1, gid)
            os.fchmod(fd, 0o755 if mode & 0o004 else 0o750)
            atomic_write(log_name, log_text, mode=mode, gid=gid, dir_fd=fd)
            atomic_write(result_name, json.dumps(result, sort_keys=True) + "\n", mode=mode, gid=gid, dir_fd=fd)
        finally:
            os.close(fd)


def read_results(image_dir: str | os.PathLike) -> dict[str, dict]:
    """``{test: {result, date, machine, log_url, ...}}``; files that do not parse or hold an unknown
    result are left out (an index never lists what it cannot vouch for)."""
    d = os.path.join(image_dir, TESTS_DIR)
    out: dict[str, dict] = {}
    try:
        names = os.listdir(d)
    except OSError:
        return out
    for fname in names:
        test, ext = os.path.splitext(fname)
        if ext != ".json" or not valid_name(test):
            continue
        try:
            # strict: no lone surrogate reaches the index's UTF-8; bounded, never blocked by a FIFO
            doc = orjson.loads(read_bytes(os.path.join(d, fname)))
        except (OSError, ValueError):
            continue
        kept = checked_result(doc)
        if kept is not None:
            out[test] = kept
    return dict(sorted(out.items()))


def checked_result(doc) -> dict | None:
    """A result as the index lists it (its scalar fields), None when it is not one: the rule for a
    result file, and for the results a saved index cache claims."""
    if isinstance(doc, dict) and doc.get("result") in RESULTS:
        return {k: v for k, v in doc.items() if isinstance(v, (str, int, float, bool)) or v is None}
    return None


def checked_results(tests) -> dict[str, dict] | None:
    """``{test: result}`` read back from elsewhere (the index cache), each checked as a result file is;
    None when any is not."""
    if not isinstance(tests, dict):
        return None
    out = {}
    for test, doc in tests.items():
        kept = checked_result(doc)
        if not valid_name(test) or kept is None:
            return None
        out[test] = kept
    return out

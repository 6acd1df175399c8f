"""Find the complete images of a tree, cheaply enough to rescan 10,000 images in well under a second.

A directory counts as an image once its ``metadata.json`` and ``SHA256SUMS`` are both there, parse,
agree with each other, and every listed file has the listed size.  That is the line between "someone is
still copying this in" and "published"; it never hashes payload files (``verify_image_dir`` does that).
Parsed manifests are cached by the (mtime, size, inode) of both manifest files, so a rescan after one new
image reads two small files, not twenty thousand.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.imagetree.package import (
    METADATA,
    SUMS,
    field_problems,
    manifest_problems,
    parse_sums,
    read_metadata,
)
from buildbot_kernel.imagetree.record import ImageRecord
from buildbot_kernel.imagetree.results import read_results, stamp
from buildbot_kernel.naming import safe_branch


class IncompleteImage(BuildbotKernelError, ValueError):
    """Not (yet) a published image; ``str()`` says why (a copy in progress, a broken manifest)."""


def is_hidden(name: str) -> bool:
    """``.incoming``, ``.trash``, ``.state`` and temp files are never branches or images."""
    return name.startswith(".")


def load_image(image_dir: str | os.PathLike, version: tuple = (), with_tests: bool = True) -> ImageRecord:
    """THE reader of an image's metadata.json, with the completeness rule: both manifests parse and agree,
    the fields are valid, the name and branch match the directory, and every payload file metadata lists
    exists with the listed size (stat only, never hashed: ``verify_image_dir`` does that).  Raises
    :class:`IncompleteImage` saying why not."""
    d = os.fspath(image_dir)
    branch_dir, img_dir = os.path.basename(os.path.dirname(d)), os.path.basename(d)
    try:
        meta = read_metadata(d)
        with open(os.path.join(d, SUMS), encoding="utf-8") as f:
            sums = parse_sums(f.read())
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise IncompleteImage(str(e)) from None
    problems = manifest_problems(meta, sums) + field_problems(meta)
    if not problems and meta["name"] != img_dir:
        problems.append(f"metadata name {meta['name']!r} differs from the directory name")
    if not problems and safe_branch(meta["branch"]) != branch_dir:
        problems.append(f"metadata branch {meta['branch']!r} does not belong in {branch_dir!r}/")
    if not problems:
        size_problem = _size_problem(d, meta["files"])
        if size_problem:
            problems.append(size_problem)
    if problems:
        raise IncompleteImage("; ".join(problems))
    tests = read_results(d) if with_tests else {}
    return ImageRecord.from_metadata(branch_dir, img_dir, meta, version, tests)


def is_published(image_dir: str | os.PathLike) -> bool:
    """Is there a complete image at ``image_dir``?"""
    try:
        load_image(image_dir, with_tests=False)
    except IncompleteImage:
        return False
    return True


def branch_images(branch_dir: str | os.PathLike) -> list[ImageRecord]:
    """The complete images of one branch directory (any order); for callers that need one branch now,
    not the whole tree (the heads check)."""
    out = []
    for n in subdirs(Path(branch_dir)):
        try:
            out.append(load_image(os.path.join(branch_dir, n), with_tests=False))
        except IncompleteImage:
            continue
    return out


@dataclass
class _Cached:
    key: tuple
    image: ImageRecord | None
    problem: str


def _stat_key(st: os.stat_result) -> tuple:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class TreeScanner:
    """Scans one tree; keep the instance alive between scans to benefit from the cache."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        self._cache: dict[str, _Cached] = {}
        self.skipped: dict[str, str] = {}  # path -> why it is not listed (last scan)

    def _load(self, branch_dir: str, img_dir: str, key: tuple) -> _Cached:
        try:
            # the last element of key: the tests/ directory's stamp (0: no results yet)
            image = load_image(os.path.join(self.root, branch_dir, img_dir), key, with_tests=bool(key[-1]))
        except IncompleteImage as e:
            return _Cached(key, None, str(e))
        return _Cached(key, image, "")

    def seed(self, branch_dir: str, img_dir: str, metadata: dict, key: tuple, tests: dict | None = None) -> ImageRecord:
        """Remember an image checked by an earlier process (the index's saved cache); the next scan uses
        it only if both manifests and the directory still have exactly this ``key``."""
        image = ImageRecord.from_metadata(branch_dir, img_dir, metadata, tuple(key), tests)
        self._cache[f"{branch_dir}/{img_dir}"] = _Cached(tuple(key), image, "")
        return image

    def cached_images(self) -> list[ImageRecord]:
        return [c.image for c in self._cache.values() if c.image is not None]

    def scan(self) -> list[ImageRecord]:
        """Every complete image, newest first (build date, then commit date, then name)."""
        images: list[ImageRecord] = []
        seen: set[str] = set()
        skipped: dict[str, str] = {}
        join, stat = os.path.join, os.stat
        for b in subdirs(self.root):
            bpath = join(self.root, b)
            for n in subdirs(bpath):
                ipath = join(bpath, n)
                rel = f"{b}/{n}"
                seen.add(rel)
                try:
                    # the directory's own mtime changes when a payload file is added, removed or renamed
                    # the last element: the tests/ directory, rewritten by each test result
                    key = (_stat_key(stat(join(ipath, METADATA))) + _stat_key(stat(join(ipath, SUMS)))
                           + (stat(ipath).st_mtime_ns, stamp(ipath)))
                except OSError:
                    skipped[rel] = f"{METADATA} or {SUMS} not there yet"
                    continue
                cached = self._cache.get(rel)
                if cached is None or cached.key != key or cached.problem:
                    # incomplete directories are rechecked every scan (a copy in progress grows files)
                    cached = self._cache[rel] = self._load(b, n, key)
                if cached.image is None:
                    skipped[rel] = cached.problem
                    continue
                images.append(cached.image)
        for gone in self._cache.keys() - seen:
            del self._cache[gone]
        self.skipped = skipped
        images.sort(key=lambda i: i.sort_key, reverse=True)
        return images


def subdirs(path: str | os.PathLike) -> list[str]:
    """The visible subdirectories of ``path`` (branches of a tree, images of a branch); [] when absent."""
    try:
        with os.scandir(path) as it:
            return [e.name for e in it if not is_hidden(e.name) and e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _size_problem(image_dir: str, files: dict) -> str:
    """A file still being copied in has the wrong size; stat only, never read.  Checked until the image
    is complete, then again only when its manifests or its directory entries change."""
    for fname, info in files.items():
        try:
            size = os.stat(os.path.join(image_dir, fname)).st_size
        except OSError:
            return f"{fname} is missing"
        if size != info["size"]:
            return f"{fname} is {size} bytes, the manifest says {info['size']}"
    return ""

"""Find the complete images of a tree, cheaply enough to rescan 10,000 images in well under a second.

A directory counts as an image once its ``metadata.json`` and ``SHA256SUMS`` are both there, parse,
agree with each other, and every listed file has the listed size.  That is the line between "someone is
still copying this in" and "published"; it never hashes payload files (``verify_image_dir`` does that).
Parsed manifests are cached by the (mtime, size, inode) of both manifest files, so a rescan after one new
image reads two small files, not twenty thousand.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.imagetree.modes import DIR_FLAGS, Modes, list_dir
from buildbot_kernel.imagetree.package import (
    METADATA,
    SUMS,
    manifest_problems,
    parse_sums,
    read_bytes,
    read_metadata,
    value_problems,
)
from buildbot_kernel.imagetree.record import ImageRecord, file_entry_problem
from buildbot_kernel.imagetree.results import TESTS_DIR, checked_results, read_results
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
    try:
        with ImageDir(d) as listed:
            return listed.load(version, with_tests)
    except OSError as e:
        raise IncompleteImage(f"cannot read the directory: {e.strerror}") from None


class ImageDir:
    """One image directory read in one pass: opened once (never through a symlink), listed once with
    each entry's ``lstat``, and its manifests read through that descriptor.  The scan's cache key, the
    size check and the permission contract all use the same listing: a first scan of 10,000 images
    did each of those with its own system calls (about two thirds of the index's time from nothing)."""

    def __init__(self, path: str, parent_fd: int | None = None):
        """``parent_fd``: the branch directory, open (the scan opens each once): the image directory is
        then opened by its name in it, not looked up along the whole path again."""
        self.path = path
        self.fd = os.open(path if parent_fd is None else path.rpartition("/")[2], DIR_FLAGS, dir_fd=parent_fd)
        try:
            self.stat = os.fstat(self.fd)
            self.entries = list_dir(self.fd)
        except BaseException:
            os.close(self.fd)
            raise

    def __enter__(self) -> ImageDir:
        return self

    def __exit__(self, *exc) -> None:
        os.close(self.fd)

    def followed(self, name: str) -> os.stat_result | None:
        """The entry's stat as ``os.stat`` gives it (through a symlink), None when absent."""
        st = self.entries.get(name)
        if st is not None and stat.S_ISLNK(st.st_mode):
            try:
                return os.stat(name, dir_fd=self.fd)
            except OSError:
                return None
        return st

    def _size(self, name: str) -> int:
        st = self.followed(name)
        return st.st_size if st is not None else 1 << 16

    def key(self) -> tuple | None:
        """The scan's cache key (``_key`` computes the same from paths), None while a manifest is
        missing."""
        meta, sums, tests = self.followed(METADATA), self.followed(SUMS), self.followed(TESTS_DIR)
        if meta is None or sums is None:
            return None
        return _stat_key(meta) + _stat_key(sums) + (self.stat.st_mtime_ns, tests.st_mtime_ns if tests else 0)

    def load(self, version: tuple = (), with_tests: bool = True) -> ImageRecord:
        """The image (see :func:`load_image`); raises :class:`IncompleteImage`."""
        d = self.path
        head, _, img_dir = d.rstrip("/").rpartition("/")
        branch_dir = head.rpartition("/")[2]
        try:
            meta = read_metadata(d, self.fd, self._size(METADATA))
            sums = parse_sums(read_bytes(SUMS, self.fd, self._size(SUMS)).decode("utf-8"))
        except OSError as e:
            raise IncompleteImage(f"{SUMS}: cannot read: {e.strerror}") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise IncompleteImage(str(e)) from None
        problems = record_problems(meta, sums, branch_dir, img_dir)
        if not problems:
            size_problem = self._size_problem(meta["files"])
            if size_problem:
                problems.append(size_problem)
        if problems:
            raise IncompleteImage("; ".join(problems))
        tests = read_results(d) if with_tests else {}
        return ImageRecord.from_metadata(branch_dir, img_dir, meta, version, tests)

    def _size_problem(self, files: dict) -> str:
        """A file still being copied in has the wrong size; stat only, never read.  Checked until the
        image is complete, then again only when its manifests or its directory entries change."""
        for fname, info in files.items():
            st = self.followed(fname)
            if st is None:
                return f"{fname} is missing"
            if st.st_size != info["size"]:
                return f"{fname} is {st.st_size} bytes, the manifest says {info['size']}"
        return ""


def record_problems(meta: dict, sums: dict[str, str], branch_dir: str, img_dir: str) -> list[str]:
    """The completeness rule less what needs the files (their sizes): both manifests agree, the fields
    are valid, the name and branch match the directories the image is in."""
    problems = manifest_problems(meta, sums) + value_problems(meta)
    if not problems and meta["name"] != img_dir:
        problems.append(f"metadata name {meta['name']!r} differs from the directory name")
    if not problems and safe_branch(meta["branch"]) != branch_dir:
        problems.append(f"metadata branch {meta['branch']!r} does not belong in {branch_dir!r}/")
    return problems


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


def _claimed_sums(files) -> dict[str, str] | None:
    """The SHA256SUMS that metadata's ``files`` implies, None when it holds what a manifest cannot (the
    rule an index entry's files meet: plain file names, 64-hex digests)."""
    if not isinstance(files, dict) or any(file_entry_problem(n, i) for n, i in files.items()):
        return None
    return {name: info["sha256"] for name, info in files.items()}


def _is_key(key) -> bool:
    """The shape of :func:`_key`: two stat keys and two mtimes, all integers."""
    return isinstance(key, (list, tuple)) and len(key) == 8 and all(type(k) is int for k in key)


def _stat_key(st: os.stat_result) -> tuple:
    return (st.st_mtime_ns, st.st_size, st.st_ino)


class TreeScanner:
    """Scans one tree; keep the instance alive between scans to benefit from the cache.

    With ``modes``, each image directory gets the permission contract (imagetree/modes.py) when it is
    first seen or rewritten, from the listing the scan made anyway, before any index lists it; what could
    not be fixed is in ``mode_problems`` (last scan)."""

    def __init__(self, root: str | os.PathLike, modes: Modes | None = None):
        self.root = Path(root)
        self.modes = modes
        self._cache: dict[str, _Cached] = {}
        self.skipped: dict[str, str] = {}  # path -> why it is not listed (last scan)
        self.mode_problems: list[str] = []

    def _load(self, ipath: str, mode_problems: list[str], parent_fd: int) -> _Cached | None:
        """One pass over a new or changed image directory; None while a manifest is not there yet."""
        try:
            with ImageDir(ipath, parent_fd) as listed:
                key = listed.key()
                if key is None:
                    return None
                try:
                    # the last element of key: the tests/ directory's stamp (0: no results yet)
                    image = listed.load(key, with_tests=bool(key[-1]))
                except IncompleteImage as e:
                    return _Cached(key, None, str(e))
                if self.modes is not None:
                    mode_problems += self.modes.apply_listing(listed.fd, ipath, listed.stat, listed.entries)
                return _Cached(key, image, "")
        except OSError:
            return None  # gone meanwhile, or not readable: like a missing manifest

    def seed(self, branch_dir: str, img_dir: str, metadata, key, tests=None) -> ImageRecord | None:
        """Remember an image an earlier process read (the index's saved cache); the next scan uses it
        only if both manifests and the directory still have exactly this ``key``.

        The cache lies on the tree, so what it claims is checked as a first read checks the manifests
        (:func:`record_problems`, with the SHA256SUMS that ``files`` implies) and the results; the sizes
        are what the key vouches for.  None, and nothing remembered, when a check fails."""
        sums = _claimed_sums(metadata.get("files")) if isinstance(metadata, dict) else None
        results = checked_results({} if tests is None else tests)
        if (sums is None or results is None or not _is_key(key)
                or record_problems(metadata, sums, branch_dir, img_dir)):
            return None
        key = tuple(key)
        image = ImageRecord.from_metadata(branch_dir, img_dir, metadata, key, results)
        self._cache[f"{branch_dir}/{img_dir}"] = _Cached(key, image, "")
        return image

    def cached_images(self) -> list[ImageRecord]:
        return [c.image for c in self._cache.values() if c.image is not None]

    def scan(self) -> list[ImageRecord]:
        """Every complete image, newest first (build date, then commit date, then name)."""
        images: list[ImageRecord] = []
        seen: set[str] = set()
        skipped: dict[str, str] = {}
        mode_problems: list[str] = []
        for b in subdirs(self.root):
            bpath = os.path.join(self.root, b)
            try:
                bfd = os.open(bpath, DIR_FLAGS)  # every lookup below is relative to it: one component each
            except OSError:
                continue  # gone meanwhile, or swapped for a symlink
            try:
                for n in subdirs(bfd):
                    rel = f"{b}/{n}"
                    seen.add(rel)
                    cached = self._cache.get(rel)
                    if cached is not None and not cached.problem:
                        try:
                            unchanged = _key(n, bfd) == cached.key
                        except OSError:
                            unchanged = False
                        if unchanged:
                            images.append(cached.image)
                            continue
                    # new, changed, or incomplete (rechecked every scan: a copy in progress grows files)
                    cached = self._load(f"{bpath}/{n}", mode_problems, bfd)
                    if cached is None:
                        self._cache.pop(rel, None)
                        skipped[rel] = f"{METADATA} or {SUMS} not there yet"
                        continue
                    self._cache[rel] = cached
                    if cached.image is None:
                        skipped[rel] = cached.problem
                        continue
                    images.append(cached.image)
            finally:
                os.close(bfd)
        for gone in self._cache.keys() - seen:
            del self._cache[gone]
        self.skipped = skipped
        self.mode_problems = mode_problems
        images.sort(key=lambda i: i.sort_key, reverse=True)
        return images


def _key(name: str, parent_fd: int) -> tuple:
    """The cache key of an image directory seen before (``name`` in the branch directory open at
    ``parent_fd``): four stats, no listing.  The directory's own mtime changes when a payload file is
    added, removed or renamed; the last element is the tests/ directory, rewritten by each test result.
    ``ImageDir.key`` computes the same from its listing."""
    stat_ = os.stat
    try:
        tests = stat_(f"{name}/{TESTS_DIR}", dir_fd=parent_fd).st_mtime_ns
    except OSError:
        tests = 0
    return (_stat_key(stat_(f"{name}/{METADATA}", dir_fd=parent_fd))
            + _stat_key(stat_(f"{name}/{SUMS}", dir_fd=parent_fd))
            + (stat_(name, dir_fd=parent_fd, follow_symlinks=False).st_mtime_ns, tests))


def subdirs(path: str | os.PathLike | int) -> list[str]:
    """The visible subdirectories of ``path`` (branches of a tree, images of a branch; a path or an open
    directory's descriptor); [] when absent."""
    try:
        with os.scandir(path) as it:
            return [e.name for e in it if not is_hidden(e.name) and e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []

"""One image, whoever found it: the tree scan, an index.json entry, or a bisect's lookup.

An image has two written forms (docs/index-format.md): its ``metadata.json`` in the tree, and its
entry in ``index.json``, which is the metadata with the repository URL moved to ``repository_url``
and ``url``, ``path``, ``on_demand``, ``head`` and ``tests`` added.  :class:`ImageRecord` is the one
in-memory shape of both; ``from_metadata`` / ``from_index_entry`` / ``to_index_entry`` convert, so the
two forms can never drift apart in one reader and not in another.

An index entry comes from outside (an index.json read over HTTP or from a tree people write by hand):
``from_index_entry`` checks every part that names a file, a directory, a commit or a URL before any
caller sees it, and raises :class:`EntryError` saying which entry and why.
"""

from __future__ import annotations

import functools
import re
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any

from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.naming import branch_problem, component_problem, safe_branch

REQUIRED_ENTRY_KEYS = ("name", "sha", "build", "url", "files")
# keys of an index entry that are not metadata.json's (``on_demand`` is both: metadata, and always
# written to the entry as a boolean)
ENTRY_ONLY_KEYS = ("repository_url", "url", "path", "head", "tests")

_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})\Z")
_SHA256 = re.compile(r"^[0-9a-f]{64}\Z")
_URL_SAFE = re.compile(r"^[A-Za-z0-9_.~+-]*\Z")


class EntryError(BuildbotKernelError, ValueError):
    """One index entry that cannot be used; the message names the entry and the reason."""


def image_url(base_url: str, branch_dir: str, name: str) -> str:
    """The image directory's URL under the tree's ``base_url``, ending in ``/``."""
    return f"{base_url.rstrip('/')}/{_quote(branch_dir)}/{_quote(name)}/"


def _quote(component: str) -> str:
    """``quote`` with a fast path: image and branch names are almost always URL-safe as they are."""
    return component if _URL_SAFE.match(component) else urllib.parse.quote(component, safe="+")


def _timestamp(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@dataclass(frozen=True, eq=False)
class ImageRecord:
    """One image.  ``metadata`` is metadata.json as published (the repository's git URL under ``url``);
    ``url`` is the image directory's URL ("" for a tree record before a base URL is given); ``version``
    changes whenever the tree's copy is rewritten (the scan's stat key, () when not from a tree).
    Compared by identity: two scans of one unchanged image give the same object."""

    branch_dir: str  # the branch's directory in the tree (filesystem-safe branch name)
    name: str
    metadata: Mapping[str, Any]
    url: str = ""
    version: tuple = ()
    tests: Mapping[str, Any] = field(default_factory=dict)  # watched tests' results (imagetree/results.py)
    head: bool = False  # the index marks this image as its branch head's (set per regeneration)

    @cached_property
    def path(self) -> str:
        """``<branch dir>/<name>/``, the image's place below the tree root (a key read many times)."""
        return f"{self.branch_dir}/{self.name}/"

    @property
    def sha(self) -> str:
        return self.metadata.get("sha", "")

    @property
    def build(self) -> str:
        return self.metadata.get("build", "")

    @property
    def branch(self) -> str:
        return self.metadata.get("branch", "")

    @property
    def files(self) -> Mapping[str, Mapping[str, Any]]:
        """file name -> {"size": bytes, "sha256": hex}"""
        return self.metadata.get("files", {})

    @property
    def on_demand(self) -> bool:
        return self.metadata.get("on_demand") is True

    @cached_property
    def size(self) -> int:
        """Bytes of all listed files."""
        return sum(f.get("size") or 0 for f in self.files.values())

    @cached_property
    def sort_key(self) -> tuple:
        """Newest first when sorted in reverse: build date, then commit date, then name."""
        return (_timestamp(self.metadata["build_date"]), _timestamp(self.metadata["commit_date"]), self.name)

    @cached_property
    def entry(self) -> dict:
        """The index entry (with this record's ``url``); a fresh dict is cheap to copy for callers that
        change it."""
        return self.to_index_entry()

    def file_url(self, name: str) -> str:
        return self.url + urllib.parse.quote(name, safe="+")

    def to_index_entry(self, base_url: str | None = None) -> dict:
        """The index.json entry; ``base_url``: the tree's URL (else this record's own ``url``)."""
        entry = dict(self.metadata)
        entry["repository_url"] = entry.pop("url", "")
        entry["url"] = self.url if base_url is None else image_url(base_url, self.branch_dir, self.name)
        entry["path"] = self.path
        entry["on_demand"] = self.on_demand
        entry["head"] = self.head
        if self.tests:  # docs/index-format.md, "tests"
            entry["tests"] = dict(self.tests)
        return entry

    @classmethod
    def from_metadata(cls, branch_dir: str, name: str, metadata: Mapping[str, Any], version: tuple = (),
                      tests: Mapping[str, Any] | None = None, url: str = "") -> ImageRecord:
        """An image of the tree; ``metadata`` must already have passed the completeness rule
        (:func:`buildbot_kernel.imagetree.scan.load_image`, the one reader of metadata.json)."""
        return cls(branch_dir, name, metadata, url, tuple(version), dict(tests or {}))

    @classmethod
    def from_index_entry(cls, entry: Any, base_url: str = "", where: str = "index entry") -> ImageRecord:
        """A checked index entry.  ``base_url``: the URL the index was read from; the entry's image must
        lie under its directory (same scheme, host and port; a relative ``url`` resolves against it, and
        an absolute one elsewhere falls back to the entry's ``path``).  Without one (our own index,
        shown as it is) the URL is kept as written; names, files, branch and sha are checked all the
        same.  Raises :class:`EntryError`."""
        label = entry.get("name") if isinstance(entry, dict) else None
        where = where + (f" ({label!r})" if isinstance(label, str) else "")

        def bad(reason: str) -> EntryError:
            return EntryError(f"{where}: {reason}")

        if not isinstance(entry, dict):
            raise bad("is not an object")
        for key in REQUIRED_ENTRY_KEYS:
            if key not in entry:
                raise bad(f"has no {key!r}")
        name, sha, build, branch = entry["name"], entry["sha"], entry["build"], entry.get("branch", "")
        problem = component_problem(name, "name")
        if problem:
            raise bad(problem)
        if not isinstance(sha, str) or not _SHA.match(sha.lower()):
            raise bad(f"sha {sha!r} is not a full commit id (40 hex digits)")
        if not isinstance(build, str) or component_problem(build, "build"):
            raise bad(component_problem(build, "build") or "build is not a string")
        if branch != "":
            problem = branch_problem(branch) or component_problem(safe_branch(branch), "branch directory")
            if problem:
                raise bad(problem)
        files = entry["files"]
        if not isinstance(files, dict) or not files:
            raise bad("files must map file names to {\"size\", \"sha256\"}")
        for fname, info in files.items():
            problem = file_entry_problem(fname, info)
            if problem:
                raise bad(problem)
        url = _image_url(entry, base_url)
        if isinstance(url, EntryError):
            raise bad(str(url))
        path = entry.get("path")
        branch_dir = path.split("/", 1)[0] if isinstance(path, str) and path.count("/") == 2 else ""
        if component_problem(branch_dir, "branch directory"):
            branch_dir = safe_branch(branch) if branch else ""
        metadata = {k: v for k, v in entry.items() if k not in ENTRY_ONLY_KEYS}
        metadata.update(sha=sha.lower(), url=entry.get("repository_url", ""))
        tests = entry.get("tests") if isinstance(entry.get("tests"), dict) else {}
        return cls(branch_dir, name, metadata, url, (), tests, entry.get("head") is True)


def _image_url(entry: dict, base_url: str) -> str | EntryError:
    """The image directory's URL, which must lie under the index's own directory.

    The entry's ``url`` is used when it is there; otherwise (an index read from the NFS tree, or under
    another host name than the server's ``base_url``) the entry's ``path`` below the index is.
    """
    raw = entry["url"]
    if not isinstance(raw, str):
        return EntryError(f"url {raw!r} is not a string")
    if not base_url:  # our own index, or built in-process from our own tree
        return raw if raw.endswith("/") else raw + "/"
    base = _index_dir(base_url)
    url = urllib.parse.urljoin(base, raw)
    if not url.endswith("/"):
        url += "/"
    problem = _outside(url, base)
    if not problem:
        return url
    path = entry.get("path")
    if isinstance(path, str) and path:
        alt = urllib.parse.urljoin(base, urllib.parse.quote(path, safe="/+"))
        if not alt.endswith("/"):
            alt += "/"
        if not _outside(alt, base):
            return alt
    return EntryError(problem)


def file_entry_problem(name, info) -> str:
    """Why ``name: info`` is not one file of an image as an index or a manifest lists it (a plain file
    name; ``{"size": bytes, "sha256": 64 hex digits}``, the size may be left out), or ""."""
    problem = _file_name_problem(name) if isinstance(name, str) else component_problem(name, "file name")
    if problem:
        return problem
    if not (isinstance(info, dict) and isinstance(info.get("sha256"), str) and _SHA256.match(info["sha256"])
            and (info.get("size") is None or (type(info["size"]) is int and info["size"] >= 0))):
        return f"files[{name!r}] must be {{\"size\": bytes, \"sha256\": 64 hex digits}}"
    return ""


@functools.lru_cache(maxsize=1024)
def _file_name_problem(name: str) -> str:  # the same few names in every image
    return component_problem(name, "file name")


@functools.lru_cache(maxsize=64)
def _index_dir(base_url: str) -> str:
    """The directory URL of the index at ``base_url`` (the same for every entry of one index)."""
    return urllib.parse.urljoin(base_url, ".")


@functools.lru_cache(maxsize=64)
def _split(base: str) -> urllib.parse.SplitResult:
    return urllib.parse.urlsplit(base)


def _outside(url: str, base: str) -> str:
    """Why ``url`` is not under ``base`` (a directory URL ending in ``/``), or ""."""
    u, b = urllib.parse.urlsplit(url), _split(base)
    if (u.scheme.lower(), u.netloc.lower()) != (b.scheme.lower(), b.netloc.lower()) \
            or not u.path.startswith(b.path) or u.query or u.fragment:
        return f"url {url!r} is not under the index's base {base!r}"
    for segment in u.path[len(b.path):].rstrip("/").split("/"):
        problem = component_problem(urllib.parse.unquote(segment), "url path segment")
        if problem:
            return f"url {url!r}: {problem}"
    return ""

"""Finding and fetching kernel images through the image server's index.json.

Contract (docs/index-format.md): ``{"schema": 1, "generated": ISO, "images": [entry, ...]}``, newest first,
each entry an image's metadata.json with the repository URL under ``repository_url`` and ``url`` the
image directory's absolute URL ending in ``/``; a file is fetched as ``url + name`` and checked against
``files[name]`` (size, sha256). The index can be read from a path or an http(s)/file URL, so the
shell command works against the server over HTTP or against the NFS tree directly.

The index comes from outside, so every entry is checked before anything is fetched or written (see
docs/bisect.md): the name and every file name are one safe path component, the branch is a name git
accepts, the sha is a full commit id, and every file URL lies under the directory the index was read
from (same scheme, host and port, path below it). An entry that fails is left out with its reason in
``ImageIndex.skipped``; the rest of the index stays usable.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.imagetree.lookup import index_location
from buildbot_kernel.naming import branch_problem, component_problem, safe_branch

INDEX_SCHEMA = 1
_REQUIRED = ("name", "sha", "build", "url", "files")
_CHUNK = 1 << 20
MAX_INDEX_BYTES = 256 << 20  # 10,000 images are about 10 MiB


class _RefuseRedirect(urllib.request.HTTPRedirectHandler):
    """Image files come from under the index's base and nowhere else: a redirect is a failed download."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.URLError(f"redirected ({code}) to {newurl}; image files are only fetched from "
                                    "under the index's base URL")


_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ImageError(BuildbotKernelError, RuntimeError):
    """An index that cannot be read or does not follow the contract, or a download that failed its check."""


class EntryError(ImageError):
    """One index entry that cannot be used; the message names the entry and the reason."""


@dataclass(frozen=True)
class Image:
    name: str
    sha: str
    build: str
    branch: str
    url: str  # directory URL, ends in "/"
    files: dict[str, dict[str, Any]]  # name -> {"size": int, "sha256": hex}
    metadata: dict[str, Any]  # the whole index entry (subject, author, dates, ...)

    def file_url(self, name: str) -> str:
        return self.url + urllib.parse.quote(name, safe="+")


class ImageIndex:
    """The images of one index.json, looked up by (full sha, build config name)."""

    def __init__(self, images: list[Image], source: str = "index", skipped: list[str] | None = None):
        self.source = source
        self.images = images
        self.skipped = list(skipped or [])  # "<where> (<name>): <reason>" per entry left out
        self._by_key: dict[tuple[str, str], Image] = {}
        for image in images:  # newest first: the first entry for a (sha, build) wins
            self._by_key.setdefault((image.sha, image.build), image)

    @classmethod
    def load(cls, source: str | Path) -> ImageIndex:
        """Read index.json from a path or a URL; :class:`ImageError` says what is wrong with it."""
        source = str(source)
        url = _as_url(index_location(source))
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                raw = resp.read(MAX_INDEX_BYTES + 1)
            if len(raw) > MAX_INDEX_BYTES:
                raise ImageError(f"{source} is larger than {MAX_INDEX_BYTES >> 20} MiB; not an index.json")
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise ImageError(f"cannot read {source}: {getattr(e, 'reason', e)}") from None
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise ImageError(f"{source} is not JSON: {e}") from None
        return cls.from_document(doc, base_url=url, source=source)

    @classmethod
    def from_document(cls, doc: Any, base_url: str = "", source: str = "index") -> ImageIndex:
        """``base_url``: where the index was read from; its directory is the only place files may come
        from (relative entry URLs resolve against it).  Without one (an index built in this process from
        the image tree, see :mod:`buildbot_kernel.bisect.tree_images`) the URLs are taken as they are; the
        names, files, branch and sha are checked all the same."""
        if (not isinstance(doc, dict) or doc.get("schema") != INDEX_SCHEMA
                or not isinstance(doc.get("images"), list)):
            raise ImageError(f"{source}: expected {{\"schema\": {INDEX_SCHEMA}, \"images\": [...]}}")
        images, skipped = [], []
        for i, entry in enumerate(doc["images"]):
            try:
                images.append(_image(entry, i, base_url, source))
            except EntryError as e:
                skipped.append(str(e))
        return cls(images, source, skipped)

    def lookup(self, sha: str, build: str) -> Image | None:
        return self._by_key.get((sha, build))

    def builds(self) -> list[str]:
        return sorted({image.build for image in self.images})

    def has_image_for(self, build: str):
        """``has_image`` for the engine: sha -> Image or None, for one build config."""
        return lambda sha: self._by_key.get((sha, build))


def fetch_image(image: Image, dest: str | Path) -> Path:
    """Download every file of ``image`` into ``dest`` and verify size and sha256.

    A file already in ``dest`` with the right checksum is kept (a resumed bisect does not download it
    again). Each download goes to a temporary name and is renamed only once verified, so ``dest`` never
    holds a file that failed its check.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    for name, info in sorted(image.files.items()):
        problem = component_problem(name, "file name")
        if problem:  # entries are checked when the index is read; this guards any other caller
            raise ImageError(f"image {image.name}: {problem}")
        target = dest / name
        want = info.get("sha256")
        if target.is_file() and _sha256_file(target) == want:
            continue
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out:
                try:
                    opener = urllib.request.build_opener(_RefuseRedirect)
                    with opener.open(image.file_url(name), timeout=300) as resp:
                        while chunk := resp.read(_CHUNK):
                            digest.update(chunk)
                            size += len(chunk)
                            if info.get("size") is not None and size > info["size"]:
                                raise ImageError(f"{image.file_url(name)}: more than the {info['size']} "
                                                 "bytes the index says; download stopped")
                            out.write(chunk)
                except (urllib.error.URLError, OSError, ValueError) as e:
                    reason = getattr(e, "reason", e)
                    raise ImageError(f"download of {image.file_url(name)} failed: {reason}") from None
            if info.get("size") is not None and size != info["size"]:
                raise ImageError(f"{image.file_url(name)}: {size} bytes, the index says {info['size']}")
            if digest.hexdigest() != want:
                raise ImageError(f"{image.file_url(name)}: sha256 {digest.hexdigest()}, index says {want}")
            os.replace(tmp, target)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return dest


def _image(entry: Any, i: int, base_url: str, source: str) -> Image:
    label = entry.get("name") if isinstance(entry, dict) else None
    where = f"{source}: images[{i}]" + (f" ({label!r})" if isinstance(label, str) else "")

    def bad(reason: str) -> EntryError:
        return EntryError(f"{where}: {reason}")

    if not isinstance(entry, dict):
        raise bad("is not an object")
    for key in _REQUIRED:
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
        problem = component_problem(fname, "file name")
        if problem:
            raise bad(problem)
        if not (isinstance(info, dict) and isinstance(info.get("sha256"), str) and _SHA256.match(info["sha256"])
                and (info.get("size") is None or (type(info["size"]) is int and info["size"] >= 0))):
            raise bad(f"files[{fname!r}] must be {{\"size\": bytes, \"sha256\": 64 hex digits}}")
    url = _image_url(entry, base_url)
    if isinstance(url, EntryError):
        raise bad(str(url))
    return Image(name=name, sha=sha.lower(), build=build, branch=str(branch), url=url, files=files,
                 metadata=entry)


def _image_url(entry: dict, base_url: str) -> str | EntryError:
    """The image directory's URL, which must lie under the index's own directory.

    The entry's ``url`` is used when it is there; otherwise (an index read from the NFS tree, or under
    another host name than the server's ``base_url``) the entry's ``path`` below the index is.
    """
    raw = entry["url"]
    if not isinstance(raw, str):
        return EntryError(f"url {raw!r} is not a string")
    if not base_url:  # built in-process from our own tree: URLs under the configured base_url
        return raw if raw.endswith("/") else raw + "/"
    base = urllib.parse.urljoin(base_url, ".")
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


def _outside(url: str, base: str) -> str:
    """Why ``url`` is not under ``base`` (a directory URL ending in ``/``), or ""."""
    u, b = urllib.parse.urlsplit(url), urllib.parse.urlsplit(base)
    if (u.scheme.lower(), u.netloc.lower()) != (b.scheme.lower(), b.netloc.lower()) \
            or not u.path.startswith(b.path) or u.query or u.fragment:
        return f"url {url!r} is not under the index's base {base!r}"
    for segment in u.path[len(b.path):].rstrip("/").split("/"):
        problem = component_problem(urllib.parse.unquote(segment), "url path segment")
        if problem:
            return f"url {url!r}: {problem}"
    return ""


def _as_url(source: str) -> str:
    if urllib.parse.urlsplit(source).scheme in ("http", "https", "file"):
        return source
    return Path(source).resolve().as_uri()


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()

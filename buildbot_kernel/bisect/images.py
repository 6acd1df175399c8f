"""Finding and fetching kernel images through the image server's index.json.

Contract (DESIGN section 5): ``{"schema": 1, "generated": ISO, "images": [entry, ...]}``, newest first,
each entry an image's metadata.json with the repository URL under ``repository_url`` and ``url`` the
image directory's absolute URL ending in ``/``; a file is fetched as ``url + name`` and checked against
``files[name]`` (size, sha256). The index can be read from a path or an http(s)/file URL, so the
shell command works against the server over HTTP or against the NFS tree directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

INDEX_SCHEMA = 1
_REQUIRED = ("name", "sha", "build", "url", "files")
_CHUNK = 1 << 20


class ImageError(RuntimeError):
    """An index that cannot be read or does not follow the contract, or a download that failed its check."""


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
        return self.url + name


class ImageIndex:
    """The images of one index.json, looked up by (full sha, build config name)."""

    def __init__(self, images: list[Image], source: str = "index"):
        self.source = source
        self.images = images
        self._by_key: dict[tuple[str, str], Image] = {}
        for image in images:  # newest first: the first entry for a (sha, build) wins
            self._by_key.setdefault((image.sha, image.build), image)

    @classmethod
    def load(cls, source: str | Path) -> ImageIndex:
        """Read index.json from a path or a URL; :class:`ImageError` says what is wrong with it."""
        source = str(source)
        url = _as_url(source)
        try:
            with urllib.request.urlopen(url, timeout=60) as resp:
                raw = resp.read()
        except (urllib.error.URLError, OSError, ValueError) as e:
            raise ImageError(f"cannot read {source}: {getattr(e, 'reason', e)}") from None
        try:
            doc = json.loads(raw)
        except ValueError as e:
            raise ImageError(f"{source} is not JSON: {e}") from None
        return cls.from_document(doc, base_url=url, source=source)

    @classmethod
    def from_document(cls, doc: Any, base_url: str = "", source: str = "index") -> ImageIndex:
        if (not isinstance(doc, dict) or doc.get("schema") != INDEX_SCHEMA
                or not isinstance(doc.get("images"), list)):
            raise ImageError(f"{source}: expected {{\"schema\": {INDEX_SCHEMA}, \"images\": [...]}}")
        images = [_image(entry, i, base_url, source) for i, entry in enumerate(doc["images"])]
        return cls(images, source)

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
        if "/" in name or name in ("", ".", ".."):
            raise ImageError(f"image {image.name}: file name {name!r} is not a plain file name")
        target = dest / name
        want = info.get("sha256")
        if target.is_file() and _sha256_file(target) == want:
            continue
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out:
                try:
                    with urllib.request.urlopen(image.file_url(name), timeout=300) as resp:
                        while chunk := resp.read(_CHUNK):
                            digest.update(chunk)
                            size += len(chunk)
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
    where = f"{source}: images[{i}]"
    if not isinstance(entry, dict):
        raise ImageError(f"{where} is not an object")
    for key in _REQUIRED:
        if key not in entry:
            raise ImageError(f"{where} has no {key!r}")
    files = entry["files"]
    if not isinstance(files, dict) or not all(isinstance(v, dict) and "sha256" in v for v in files.values()):
        raise ImageError(f"{where}.files must map file names to {{\"size\", \"sha256\"}}")
    url = urllib.parse.urljoin(base_url, str(entry["url"])) if base_url else str(entry["url"])
    if not url.endswith("/"):
        url += "/"
    return Image(
        name=str(entry["name"]),
        sha=str(entry["sha"]).lower(),
        build=str(entry["build"]),
        branch=str(entry.get("branch", "")),
        url=url,
        files=files,
        metadata=entry,
    )


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

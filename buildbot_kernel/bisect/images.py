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
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from buildbot_kernel.digest import CHUNK, sha256_file
from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.imagetree.indexfile import IndexUnreadable, parse_index, read_index
from buildbot_kernel.imagetree.record import ImageRecord
from buildbot_kernel.naming import component_problem


class _RefuseRedirect(urllib.request.HTTPRedirectHandler):
    """Image files come from under the index's base and nowhere else: a redirect is a failed download."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        raise urllib.error.URLError(f"redirected ({code}) to {newurl}; image files are only fetched from "
                                    "under the index's base URL")


class ImageError(BuildbotKernelError, RuntimeError):
    """An index that cannot be read or does not follow the contract, or a download that failed its check."""


class ImageIndex:
    """The images of one index.json, looked up by (full sha, build config name)."""

    def __init__(self, images: list[ImageRecord], source: str = "index", skipped: list[str] | None = None):
        self.source = source
        self.images = list(images)
        self.skipped = list(skipped or [])  # "<where> (<name>): <reason>" per entry left out
        self._by_key: dict[tuple[str, str], ImageRecord] = {}
        for image in self.images:  # newest first: the first entry for a (sha, build) wins
            self._by_key.setdefault((image.sha, image.build), image)

    @classmethod
    def load(cls, source: str | Path) -> ImageIndex:
        """Read index.json from a path or a URL (files must come from under it); :class:`ImageError` says
        what is wrong with it."""
        try:
            doc = read_index(source, confine=True)
        except IndexUnreadable as e:
            raise ImageError(str(e)) from None
        return cls(list(doc.images), doc.source, list(doc.skipped))

    @classmethod
    def from_document(cls, doc, base_url: str = "", source: str = "index") -> ImageIndex:
        """``base_url``: where the index was read from; its directory is the only place files may come
        from (relative entry URLs resolve against it).  Without one (an index built in this process from
        the image tree, see :mod:`buildbot_kernel.bisect.tree_images`) the URLs are taken as they are; the
        names, files, branch and sha are checked all the same."""
        try:
            parsed = parse_index(doc, base_url=base_url, source=source)
        except IndexUnreadable as e:
            raise ImageError(str(e)) from None
        return cls(list(parsed.images), source, list(parsed.skipped))

    def lookup(self, sha: str, build: str) -> ImageRecord | None:
        return self._by_key.get((sha, build))

    def builds(self) -> list[str]:
        return sorted({image.build for image in self.images})

    def has_image_for(self, build: str):
        """``has_image`` for the engine: sha -> ImageRecord or None, for one build config."""
        return lambda sha: self._by_key.get((sha, build))


def fetch_image(image: ImageRecord, dest: str | Path) -> Path:
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
        if target.is_file() and sha256_file(target) == want:
            continue
        fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
        try:
            digest, size = hashlib.sha256(), 0
            with os.fdopen(fd, "wb") as out:
                try:
                    opener = urllib.request.build_opener(_RefuseRedirect)
                    with opener.open(image.file_url(name), timeout=300) as resp:
                        while chunk := resp.read(CHUNK):
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

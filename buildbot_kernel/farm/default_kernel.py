"""A machine's default kernel: what it boots when no bisect or test holds it (docs/machine-types.md).

``[[machine]] default_kernel`` is empty (the machine goes back to stage 1: the server answers its next
poll from a candidate with ``REBOOT=1``, and its firmware boots stage 1), an image name of this tree, or
an image directory URL.  A name is looked up in the tree's ``index.json``; a URL is looked up there too and
otherwise its ``metadata.json`` is fetched, so an image served by another tree works as well.  Either way
the result is an index entry with the files' sha256, which the machine checks as for any candidate.
Runs off the reactor (it reads a file or fetches a URL).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.request

from buildbot_kernel import jsondepth
from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.imagetree.indexfile import IndexUnreadable, read_index
from buildbot_kernel.imagetree.record import EntryError, ImageRecord
from buildbot_kernel.settings import http_url_problem

FETCH_TIMEOUT = 30
MAX_METADATA = 1 << 20


class DefaultKernelError(BuildbotKernelError, ValueError):
    """The default kernel cannot be found; the message names the setting and what to write."""


def _tree_images(index_path: str | os.PathLike) -> tuple[ImageRecord, ...]:
    """The checked images of the tree's index (none when it is missing or unreadable: the name is then
    reported as not found)."""
    try:
        return read_index(index_path).images
    except IndexUnreadable:
        return ()


def resolve(machine: str, default: str, index_path: str | os.PathLike) -> dict | None:
    """The index entry of ``default`` (None: stage 1), or DefaultKernelError."""
    default = default.strip()
    if not default:
        return None
    where = f"[[machine]] ({machine!r}).default_kernel"
    is_url = default.startswith(("http://", "https://"))
    url = default if default.endswith("/") else default + "/"
    for image in _tree_images(index_path):
        if (image.url == url) if is_url else (image.name == default):
            return image.entry
    if not is_url:
        raise DefaultKernelError(f"{where}: no image named {default!r} in the image tree ({index_path}); write an "
                                 "image name as index.json lists it, or an image directory URL")
    problem = http_url_problem(url)
    if problem:
        raise DefaultKernelError(f"{where}: {problem}")
    try:
        with urllib.request.urlopen(url + "metadata.json", timeout=FETCH_TIMEOUT) as r:
            raw = r.read(MAX_METADATA + 1)[:MAX_METADATA]
        meta = jsondepth.loads(raw, "it")
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise DefaultKernelError(f"{where}: cannot read {url}metadata.json: {getattr(e, 'reason', e)}") from None
    if not isinstance(meta, dict):
        raise DefaultKernelError(f"{where}: {url}metadata.json is not an image's metadata")
    try:  # another server's metadata is checked as any index entry is (names, sha, files)
        image = ImageRecord.from_index_entry({**meta, "repository_url": meta.get("url", ""), "url": url},
                                             where=f"{url}metadata.json")
    except EntryError as e:
        raise DefaultKernelError(f"{where}: {e}") from None
    return image.entry

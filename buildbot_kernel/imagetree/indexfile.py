"""Reading an index.json (docs/index-format.md), from the tree on disk or from a server, into records.

Every reader of an index (the bisect tool and builder, ``images find/list``, the image server's
``/sha/`` lookup, the dashboard, ``farm-step``) goes through :func:`read_index` or :func:`parse_index`,
so each one accepts the same places (a tree directory, an index file, the tree's base URL or an index
URL), refuses the same malformed files, and leaves out the same hostile entries (each with its reason in
``IndexDoc.skipped``).

The index is written one image per line; :func:`decode` parses it line by line when it has that shape, so
a thread reading the 10 MB index of 10,000 images never holds the interpreter lock for one long parse
(which would stall the master's reactor thread for as long).
"""

from __future__ import annotations

import os
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from buildbot_kernel import jsondepth
from buildbot_kernel.errors import BuildbotKernelError
from buildbot_kernel.imagetree.record import EntryError, ImageRecord

INDEX_SCHEMA = 1
INDEX_JSON = "index.json"
MAX_INDEX_BYTES = 256 << 20  # 10,000 images are about 10 MiB
_IMAGES_OPEN = ', "images": ['


class IndexUnreadable(BuildbotKernelError):
    """The index cannot be read or is not an index.json; ``str()`` is a message for a person."""


@dataclass(frozen=True)
class IndexDoc:
    """One index.json: its images in the index's order, the entries left out and why."""

    source: str
    images: tuple[ImageRecord, ...]
    skipped: tuple[str, ...] = ()  # "<source>: images[<i>] (<name>): <reason>" per entry left out
    generated: str = ""

    def entries(self) -> list[dict]:
        """The checked images as index entries (what the server answers and the CLI prints)."""
        return [r.entry for r in self.images]


def index_location(where: str) -> str:
    """``URL|PATH`` -> the index.json to read: the tree's base URL (``http://host:8011``, with or without
    the ``/``) or a directory means its index.json; a URL or file ending in ``.json`` is read as given."""
    if where.startswith(("http://", "https://")):
        parts = urllib.parse.urlsplit(where)
        if parts.path.endswith(".json"):
            return where
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        return urllib.parse.urlunsplit(parts._replace(path=path + INDEX_JSON))
    if where.startswith("file://"):
        return where
    if os.path.isdir(where):
        return os.path.join(where, INDEX_JSON)
    return where


def read_index(where: str | os.PathLike, *, confine: bool = False, timeout: float = 60) -> IndexDoc:
    """Read and check the index at ``where`` (see :func:`index_location`).

    ``confine``: for a reader that downloads images from it (the bisect) every image must lie under the
    directory the index was read from (a tree on disk gives ``file://`` URLs made from each entry's
    ``path``); without it the entries' URLs are kept as written, for readers that show them.  Raises
    :class:`IndexUnreadable`."""
    source = os.fspath(where)
    loc = index_location(source)
    url = loc if urllib.parse.urlsplit(loc).scheme in ("http", "https", "file") else Path(loc).resolve().as_uri()
    try:
        if url.startswith("file:"):
            with open(urllib.request.url2pathname(urllib.parse.urlsplit(url).path), "rb") as f:
                raw = f.read(MAX_INDEX_BYTES + 1)
        else:
            with urllib.request.urlopen(url, timeout=timeout) as resp:
                raw = resp.read(MAX_INDEX_BYTES + 1)
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise IndexUnreadable(f"cannot read the index {source}: {getattr(e, 'reason', None) or e}") from None
    if len(raw) > MAX_INDEX_BYTES:
        raise IndexUnreadable(f"{source} is larger than {MAX_INDEX_BYTES >> 20} MiB; not an index.json")
    return parse_index(raw, base_url=url if confine else "", source=source)


def parse_index(raw: bytes | str | dict, *, base_url: str = "", source: str = "index") -> IndexDoc:
    """An index document (its bytes, or already parsed) as checked records; ``base_url`` as in
    :meth:`ImageRecord.from_index_entry`.  Raises :class:`IndexUnreadable` for a document that is not an
    index; a bad entry only goes to ``skipped``."""
    if isinstance(raw, dict):
        doc: Any = raw
    else:
        try:
            doc = decode(raw)
        except jsondepth.TooDeep as e:
            raise IndexUnreadable(f"{source} is not an index.json: {e}") from None
        except (ValueError, UnicodeDecodeError) as e:
            raise IndexUnreadable(f"{source} is not JSON: {e}") from None
    if not isinstance(doc, dict) or doc.get("schema") != INDEX_SCHEMA or not isinstance(doc.get("images"), list):
        raise IndexUnreadable(f"{source} is not an index.json: expected {{\"schema\": {INDEX_SCHEMA}, "
                              "\"images\": [...]}} (an object with an 'images' list)")
    images, skipped = [], []
    for i, entry in enumerate(doc["images"]):
        try:
            images.append(ImageRecord.from_index_entry(entry, base_url, f"{source}: images[{i}]"))
        except EntryError as e:
            skipped.append(str(e))
    generated = doc.get("generated") if isinstance(doc.get("generated"), str) else ""
    return IndexDoc(source, tuple(images), tuple(skipped), generated)


def decode(raw: bytes | str) -> Any:
    """``json.loads``, one line at a time when the text has the index's one-image-per-line shape (each line
    then must be one whole JSON value, so the result is what one parse of the whole text gives).  The
    lines go through orjson (half json's time); anything it refuses and json takes (a lone surrogate,
    NaN, a huge integer) sends the whole text to json, so what is accepted does not change.  What nests
    deeper than ``jsondepth.MAX_DEPTH`` raises :class:`~buildbot_kernel.jsondepth.TooDeep`."""
    text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    lines = text.split("\n")
    if len(lines) > 3 and lines[0].endswith(_IMAGES_OPEN) and lines[-2] == "]}" and lines[-1] == "":
        try:
            doc = orjson.loads(lines[0][:-len(_IMAGES_OPEN)] + "}")
            body = lines[1:-2]
            images = [orjson.loads(line[:-1]) for line in body[:-1]] + [orjson.loads(body[-1])]
        except ValueError:
            return jsondepth.loads(text, "it")
        if isinstance(doc, dict) and all(line.endswith(",") for line in body[:-1]):
            jsondepth.check_depth(lines[0], doc, "it")  # each line checked alone: a whole index holds many brackets
            for line, image in zip(body, images, strict=True):
                jsondepth.check_depth(line, image, "it")
            doc["images"] = images
            return doc
    return jsondepth.loads(text, "it")

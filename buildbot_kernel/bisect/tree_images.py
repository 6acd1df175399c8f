"""The images a bisect on the master can test: the image tree on disk, seen as an :class:`ImageIndex`.

The bisect builder runs beside the tree, so it scans ``<root>/<branch>/<name>/metadata.json`` itself
(through the tree scanner, which only counts complete images) instead of fetching index.json over HTTP:
an image published a second ago by an on-demand build is seen at once, without waiting for the index
regeneration. The result is the same :class:`ImageIndex` the shell command reads, built from the same
index entries, so switching to the served index.json is a one-line change here.
"""

from __future__ import annotations

import os

from buildbot_kernel.bisect.images import ImageIndex
from buildbot_kernel.imagetree.indexfile import INDEX_SCHEMA
from buildbot_kernel.imagetree.record import ImageRecord
from buildbot_kernel.imagetree.scan import TreeScanner


class TreeImages:
    """Scans one image tree; keep the instance to reuse the scanner's cache between rescans."""

    def __init__(self, root: str | os.PathLike, base_url: str, repository: str | None = None):
        self.root = str(root)
        self.base_url = base_url
        self.repository = repository
        self._scanner = TreeScanner(root)

    def index(self) -> ImageIndex:
        """A fresh index of the complete images (of ``repository`` when given), newest first."""
        images = [i for i in self._scanner.scan()
                  if self.repository is None or i.metadata.get("repository") == self.repository]
        doc = {"schema": INDEX_SCHEMA, "images": [i.to_index_entry(self.base_url) for i in images]}
        return ImageIndex.from_document(doc, source=f"image tree {self.root}")

    def local_dir(self, image: ImageRecord) -> str:
        """Where ``image``'s files are on the master's disk."""
        return os.path.join(self.root, image.path)

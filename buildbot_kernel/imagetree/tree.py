"""One image tree as the master sees it: publish, retention and index regeneration in the right order.

The master's publish step, the watchdog observer and the embedded server share one ``ImageTree`` so
they share one index cache and one lock.  Everything here blocks (file I/O, hashing); Twisted callers
run it with ``deferToThread``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from pathlib import Path

from buildbot_kernel.imagetree import package, retention
from buildbot_kernel.imagetree.index import Result, TreeIndex
from buildbot_kernel.imagetree.modes import WORLD_READABLE, Modes

log = logging.getLogger(__name__)


class ImageTree:
    """``pins`` is called at each retention run and returns the image names running bisects use;
    ``modes`` is the permission contract every write into the tree keeps (docs/serving.md)."""

    def __init__(self, root: str | os.PathLike, base_url: str, *, keep_per_branch: int = 0,
                 max_bytes: int = 0, pins: Callable[[], Iterable[str]] = frozenset, modes: Modes = WORLD_READABLE):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.modes = modes
        self.index = TreeIndex(self.root, base_url, modes=modes)
        self.index.load_cache()  # a restart does not re-read every manifest (re-validated by stat)
        self.keep_per_branch = keep_per_branch
        self.max_bytes = max_bytes
        self.pins = pins
        self.listeners: list[Callable[[Result], None]] = []  # called after each regeneration

    @classmethod
    def from_settings(cls, settings, pins: Callable[[], Iterable[str]] = frozenset) -> ImageTree:
        from buildbot_kernel.settings import resolve

        images = settings.images
        return cls(resolve(settings, images.root), images.base_url,
                   keep_per_branch=images.keep_per_branch, max_bytes=images.max_bytes, pins=pins,
                   modes=Modes.for_group(images.group))

    def staging_dir(self) -> Path:
        """Where a build assembles its image before ``publish`` (same filesystem as the tree)."""
        return package.staging_dir(self.root)

    def publish(self, staging_dir: str | os.PathLike, branch: str, name: str) -> Path:
        """Verify and rename into place, apply retention, regenerate the index.  Raises
        package.CorruptImage / package.ImageExists (nothing changes in the tree then)."""
        target = package.publish(staging_dir, self.root, branch, name, self.modes)
        self.published(target)
        return target

    def published(self, path: str | os.PathLike | None = None) -> Result:
        """After an image was renamed into the tree (by ``publish`` or a caller using
        ``package.publish`` itself): apply retention, then regenerate the index."""
        self.apply_retention()
        return self.regenerate()

    def regenerate(self) -> Result:
        with self.index.lock:
            result = self.index.regenerate()
        for listener in list(self.listeners):
            listener(result)
        return result

    def save_cache(self) -> None:
        self.index.save_cache()

    def apply_retention(self) -> retention.Plan:
        """Delete what the policy says; the index is rewritten without them before they disappear."""
        with self.index.lock:
            images = self.index.scanner.scan()
            # the branch's order (its history) and its latest, as the index shows them: after a bisect
            # built old commits, those are the old ones, not the head's image
            branches = self.index.ordered(images)
            ranks = {i.path: k for _s, ordered, _l in branches.values() for k, i in enumerate(ordered)}
            latest = {lt.path for _s, _o, lt in branches.values() if lt is not None}
            p = retention.plan(images, self.keep_per_branch, self.max_bytes, self.pins(), ranks=ranks, keep=latest)
            if p.delete:
                self.index.regenerate(exclude={i.path for i in p.delete})
                trashed = [retention.move_to_trash(self.root, i.path) for i in p.delete]
                log.info(p.describe())
            else:
                trashed = []
        if p.over_budget:
            log.warning(p.describe())
        for t in trashed:
            retention.rmtree_quietly(t)
        return p

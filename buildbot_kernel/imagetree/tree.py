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
from buildbot_kernel.imagetree.reserved import RefusedEntry

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
        from buildbot_kernel.settings import tree_root

        images = settings.images
        return cls(tree_root(settings), images.base_url,
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
        ``package.publish`` itself): apply retention, then regenerate the index.  A retention error is
        logged, never raised: the image is published, and the next publish tries retention again."""
        try:
            self.apply_retention()
        except Exception:  # noqa: BLE001 - logged with its traceback; the publish stands
            log.exception("retention after publishing %s failed; the image is published", path or "an image")
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
        """Delete what the policy says; the index is rewritten without them before they disappear.  An
        image that cannot be moved out (a branch directory swapped for a symlink, an I/O error) is
        logged and kept, the others still go, and the index lists it again (``Plan.failed``)."""
        with self.index.lock:
            images = self.index.scanner.scan()
            # the branch's order (its history) and its latest, as the index shows them: after a bisect
            # built old commits, those are the old ones, not the head's image
            branches = self.index.ordered(images)
            ranks = {i.path: k for _s, ordered, _l in branches.values() for k, i in enumerate(ordered)}
            latest = {lt.path for _s, _o, lt in branches.values() if lt is not None}
            p = retention.plan(images, self.keep_per_branch, self.max_bytes, self.pins(), ranks=ranks, keep=latest)
            trashed: dict[str, str] = {}
            if p.delete:
                self.index.regenerate(exclude={i.path for i in p.delete})
                trashed = self._trash(p)
                if p.failed:  # still in the tree: listed again
                    self.index.regenerate(exclude=set(trashed))
                log.info(p.describe())
        if p.over_budget:
            log.warning(p.describe())
        retention.remove_trashed(self.root, trashed.values())
        return p

    def _trash(self, p: retention.Plan) -> dict[str, str]:
        """Move each doomed image into ``.trash``: {image path: its trash name}; ``p.failed`` gets the
        others, each with why."""
        trashed = {}
        for img in p.delete:
            try:
                trashed[img.path] = retention.move_to_trash(self.root, img.path).name
            except (OSError, RefusedEntry) as e:
                p.failed[img.path] = str(e)
                log.warning("retention: cannot delete %s, kept: %s", img.path, e)
                continue
            log.info("retention: %s moved to %s/%s/%s", img.path, self.root, package.TRASH, trashed[img.path])
        return trashed
